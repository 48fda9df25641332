#!/usr/bin/env bash
# The test command of the README: installs the cloud emulators the tests use
# (when missing), then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

scripts/install-test-tools.sh

exec cargo nextest run --workspace --no-fail-fast "$@"
