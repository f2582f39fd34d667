#!/usr/bin/env bash
# The whole test suite, from a fresh machine: checks the toolchain, installs what the tests
# need, then runs every test. This is the README's test command; CI calls it through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "error: $*" >&2; exit 1; }
command -v cargo >/dev/null || fail "cargo is missing: install the Rust toolchain (https://rustup.rs)"
command -v git >/dev/null || fail "git is missing: apt-get install git"

echo "== formatting"
cargo fmt --check || fail "cargo fmt --check found unformatted code: run cargo fmt"

echo "== tests"
cargo test --locked --all-targets
