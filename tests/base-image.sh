#!/usr/bin/env bash
# Prints, as the last line of stdout, the path of a cached Debian 12 (bookworm) root-filesystem
# tarball: the base image that the tests and the quickstart import into the container engine.
# Builds it with mmdebstrap from Debian's archive when it is missing (about a minute; mmdebstrap
# is installed with apt-get if needed). Progress goes to stderr.
#
# Cache folder: $DEVAMI_CACHE, else $XDG_CACHE_HOME/devami, else ~/.cache/devami. The file name
# carries a short hash of the suite, variant and package list, so changing the list rebuilds.
set -euo pipefail

# shellcheck source=setup.sh
. "$(dirname "$0")/setup.sh"

suite=bookworm
variant=minbase
packages=ca-certificates,sudo,procps,python3,python3-pip,git
# The AWS CLI and boto3 from PyPI: Debian 12's own (awscli 2.9, boto3 1.26) predate
# AWS_ENDPOINT_URL, which points them at the local backend's S3 endpoint.
pip_packages="awscli>=1.36,<2 boto3>=1.35"

if [ -n "${DEVAMI_CACHE:-}" ]; then
  cache="$DEVAMI_CACHE"
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
  cache="$XDG_CACHE_HOME/devami"
elif [ -n "${HOME:-}" ]; then
  cache="$HOME/.cache/devami"
else
  fail "no cache folder: set DEVAMI_CACHE (or HOME)"
fi
key="$(printf '%s\n' "$suite" "$variant" "$packages" "$pip_packages" | sha256sum | cut -c1-12)"
name="debian-$suite-$variant-$key"
out="$cache/$name.tar"

if [ -s "$out" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache" || fail "cannot create the cache folder $cache"

# One build at a time per package list: a second caller waits, then finds the tarball.
if command -v flock >/dev/null; then
  exec 9>"$cache/.$name.lock" || fail "cannot create the lock file in $cache"
  if ! flock -n 9; then
    echo "== waiting for another build of $out" >&2
    flock 9 || fail "cannot lock $cache/.$name.lock"
  fi
  if [ -s "$out" ]; then
    echo "$out"
    exit 0
  fi
  # Holding the lock, any partial file of this name was left by a killed build.
  rm -f "$cache/.$name.partial."*
fi

need_tools "builds the Debian base image" mmdebstrap

# Build under a temporary name in the same folder, then rename: the final name only ever holds a
# complete tarball, even if the build is killed.
tmp="$cache/.$name.partial.$$.tar"
trap 'exit 130' INT
trap 'exit 143' TERM
echo "== building the Debian $suite base image ($packages) into $out (a few minutes)" >&2
# The wheels are fetched here, with this machine's pip and its trust settings (a proxy's CA the
# new root filesystem does not know), then installed inside without network.
wheels="$cache/.$name.wheels.$$"
trap 'rm -f "$tmp"; rm -rf "$wheels"' EXIT
# shellcheck disable=SC2086 # one requirement per word
python3 -m pip download --quiet --dest "$wheels" --only-binary=:all: --implementation cp \
  --python-version 3.11 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 $pip_packages >&2 ||
  fail "pip could not download $pip_packages (is PyPI reachable?)"
# shellcheck disable=SC2016 # $1 is the hook's argument, expanded by mmdebstrap's shell
mmdebstrap --variant="$variant" --include="$packages" --format=tar \
  --customize-hook='mkdir -p "$1/tmp/wheels"' \
  --customize-hook="sync-in $wheels /tmp/wheels" \
  --customize-hook="chroot \"\$1\" python3 -m pip install --quiet --no-index --find-links /tmp/wheels --break-system-packages $(printf "'%s' " $pip_packages)" \
  --customize-hook='rm -rf "$1/tmp/wheels"' \
  "$suite" "$tmp" >&2 ||
  fail "mmdebstrap could not build the $suite root filesystem (is Debian's archive reachable?)"
[ -s "$tmp" ] || fail "mmdebstrap left no tarball at $tmp"
tar -tf "$tmp" ./etc/debian_version >/dev/null 2>&1 ||
  fail "the tarball built by mmdebstrap has no ./etc/debian_version: not a Debian root filesystem"
mv -f "$tmp" "$out" || fail "cannot move $tmp to $out"
# Older builds (another package list) are of no further use.
find "$cache" -maxdepth 1 -name "debian-$suite-$variant-*.tar" ! -name "$name.tar" -delete 2>/dev/null || true
echo "== base image ready: $out" >&2
echo "$out"
