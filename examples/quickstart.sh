#!/usr/bin/env bash
# The README's main job: sets up what the local backend needs (the container engine: podman with
# runc and catatonit; mmdebstrap for the Debian base image), builds devami, imports the cached
# Debian 12 base image (tests/base-image.sh) as `ubuntu22`, and replays the first-image tutorial
# on the embedded local backend in a scratch folder (a copy of blueprints/), without pauses.
# devami starts a Podman API service itself when no engine socket answers.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
fail() { echo "error: $*" >&2; exit 1; }
command -v cargo >/dev/null || fail "cargo is missing: install the Rust toolchain (https://rustup.rs)"
command -v python3 >/dev/null || fail "python3 is missing: the example analysis is a Python script"

as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    fail "not root and sudo is missing: cannot run $*"
  fi
}
# Debian package = the command it provides.
tools=(podman runc catatonit mmdebstrap)
missing=()
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]} (the local backend's container engine and base image builder)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
    { as_root apt-get update -qq >/dev/null &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
    fail "apt-get could not install ${missing[*]}"
fi
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || fail "$tool is missing after apt-get install $tool"
done

rootfs="$(bash "$repo/tests/base-image.sh")" || fail "tests/base-image.sh could not provide the Debian base image"
rootfs="${rootfs##*$'\n'}"
[ -s "$rootfs" ] || fail "tests/base-image.sh printed '$rootfs', which is not a tarball"

cargo build --release --locked --manifest-path "$repo/Cargo.toml"
work="$(mktemp -d)"
echo "working in $work (a copy of blueprints/; the local backend keeps its images under \$DEVAMI_HOME)"
cp -r "$repo/blueprints" "$work/blueprints"
cd "$work"
export DEVAMI_HOME="${DEVAMI_HOME:-$work/devami-home}"
"$repo/target/release/devami" import_image "$rootfs" --as ubuntu18
"$repo/target/release/devami" tutorial --auto "$repo/docs/tutorials/first-image.md"
