#!/usr/bin/env bash
# The test command README.md gives: sets up what the tests need, then runs every test.
# Services (PostgreSQL, an S3-compatible server, brokers) are started by the tests themselves
# on free loopback ports and stopped after; set OTA_TEST_DATABASE_URL to use an existing
# PostgreSQL instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-deps.sh
# Live cross-checks against the Python reference implementations.
export OTA_CHECK_MMH3=1
cargo test --workspace --locked "$@"
