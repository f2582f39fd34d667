#!/usr/bin/env bash
# The whole test suite, from a fresh machine: checks the toolchain, installs what the tests
# need (bubblewrap from Debian; awscli into .venv from PyPI), then runs every test.
# This is the README's test command; CI calls it through .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "error: $*" >&2; exit 1; }
command -v cargo >/dev/null || fail "cargo is missing: install the Rust toolchain (https://rustup.rs)"
command -v git >/dev/null || fail "git is missing: apt-get install git"
command -v python3 >/dev/null || fail "python3 is missing: install Python 3 with pip"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v bwrap >/dev/null; then
  echo "== installing bubblewrap (the local backend's sandbox)"
  as_root apt-get install -y -qq bubblewrap >/dev/null || { as_root apt-get update -qq && as_root apt-get install -y -qq bubblewrap >/dev/null; }
fi
command -v bwrap >/dev/null || fail "bubblewrap could not be installed"

if ! { [ -x .venv/bin/aws ] && [ -x .venv/bin/moto_server ] && .venv/bin/python -c "import boto3" 2>/dev/null; }; then
  echo "== installing awscli into .venv (used inside test jobs)"
  python3 -m venv .venv || fail "python3 -m venv failed: install python3-venv"
  .venv/bin/pip install --quiet --disable-pip-version-check 'awscli>=1.36,<2' 'boto3>=1.35' 'moto[server]==5.2.5' || fail "pip could not install awscli"
fi
.venv/bin/aws --version >/dev/null || fail "awscli in .venv does not run"

echo "== formatting"
cargo fmt --check || fail "cargo fmt --check found unformatted code: run cargo fmt"

echo "== tests"
cargo test --locked --all-targets
