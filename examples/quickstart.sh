#!/usr/bin/env bash
# The README's main job: builds devami and replays the getting-started tutorial on the embedded
# local backend, in a scratch folder, without pauses.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
command -v cargo >/dev/null || { echo "error: cargo is missing: install the Rust toolchain (https://rustup.rs)" >&2; exit 1; }
cargo build --release --locked --manifest-path "$repo/Cargo.toml"
work="$(mktemp -d)"
echo "working in $work"
cd "$work"
"$repo/target/release/devami" tutorial --auto "$repo/docs/tutorials/getting-started.md"
