# Shell helpers for the set-up scripts (tests/run.sh, tests/base-image.sh, examples/quickstart.sh):
# sourced, never run. Every failure is one `error:` line on stderr and exit status 1.

fail() { echo "error: $*" >&2; exit 1; }

# Runs a command as root (directly, or through sudo).
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    fail "not root and sudo is missing: cannot run $*"
  fi
}

# Installs Debian packages, refreshing the package lists once if the first attempt fails.
apt_install() {
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null ||
    { as_root apt-get update -qq >/dev/null &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

# `need_tools WHY TOOL...`: installs the Debian package of each missing command (the package and
# the command share the name), then checks that every one is there.
need_tools() {
  local why=$1 tool missing=()
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]} ($why)" >&2
    apt_install "${missing[@]}" || fail "apt-get could not install ${missing[*]}"
  fi
  for tool in "$@"; do
    command -v "$tool" >/dev/null || fail "$tool is missing after apt-get install $tool"
  done
}
