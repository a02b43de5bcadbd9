#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and passes every test of the project:
# formatting, clippy with warnings denied, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
