#!/usr/bin/env bash
# The README's main job: sets up what the local backend needs (the container engine: podman with
# runc and catatonit; mmdebstrap for the Debian base image), builds devami, imports the cached
# Debian 12 base image (tests/base-image.sh) as `ubuntu18`, and replays the first-image tutorial
# on the embedded local backend in a scratch folder (a copy of blueprints/), without pauses.
# devami starts a Podman API service itself when no engine socket answers.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=../tests/setup.sh
. "$repo/tests/setup.sh"
command -v cargo >/dev/null || fail "cargo is missing: install the Rust toolchain (https://rustup.rs)"
command -v python3 >/dev/null || fail "python3 is missing: the example analysis is a Python script"

need_tools "the local backend's container engine and base image builder" podman runc catatonit mmdebstrap

rootfs="$(bash "$repo/tests/base-image.sh")" || fail "tests/base-image.sh could not provide the Debian base image"
rootfs="${rootfs##*$'\n'}"
[ -s "$rootfs" ] || fail "tests/base-image.sh printed '$rootfs', which is not a tarball"

cargo build --release --locked --manifest-path "$repo/Cargo.toml"
work="$(mktemp -d)"
echo "working in $work (a copy of blueprints/; the local backend keeps its images under \$DEVAMI_HOME)"
cp -r "$repo/blueprints" "$work/blueprints"
cd "$work"
export DEVAMI_HOME="${DEVAMI_HOME:-$work/devami-home}"
"$repo/target/release/devami" -c "import_image $rootfs --as ubuntu18"
"$repo/target/release/devami" tutorial --auto "$repo/docs/tutorials/first-image.md"
