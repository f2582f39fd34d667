#!/usr/bin/env bash
# The README's main job: sets up what the local backend needs (bubblewrap), builds devami, and
# replays the first-image tutorial on the embedded local backend in a scratch folder (a copy of
# blueprints/), without pauses.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
fail() { echo "error: $*" >&2; exit 1; }
command -v cargo >/dev/null || fail "cargo is missing: install the Rust toolchain (https://rustup.rs)"
command -v python3 >/dev/null || fail "python3 is missing: the example analysis is a Python script"
if ! command -v bwrap >/dev/null; then
  echo "installing bubblewrap (the local backend's sandbox)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq bubblewrap >/dev/null; else sudo apt-get install -y -qq bubblewrap >/dev/null; fi
fi
cargo build --release --locked --manifest-path "$repo/Cargo.toml"
work="$(mktemp -d)"
echo "working in $work (a copy of blueprints/; the local backend keeps its images under \$DEVAMI_HOME)"
cp -r "$repo/blueprints" "$work/blueprints"
cd "$work"
export DEVAMI_HOME="${DEVAMI_HOME:-$work/devami-home}"
"$repo/target/release/devami" tutorial --auto "$repo/docs/tutorials/first-image.md"
