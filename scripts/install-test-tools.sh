#!/usr/bin/env bash
# Installs the emulators the integration tests start (idempotent): moto's
# server for AWS, Azurite for Azure Storage queues. The GCE and ARM mocks and
# the Kubernetes API server are the project's own (crate meshmirror-testkit).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

MOTO_VERSION=5.2.1
AZURITE_VERSION=3.35.0
KUBERNETES_VALIDATE_VERSION=1.37.0

if ! python3 -c "import moto, sys; sys.exit(0 if moto.__version__ == '$MOTO_VERSION' else 1)" 2>/dev/null \
    || ! command -v moto_server >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
if ! command -v kubernetes-validate >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
if [ ! -x "$MESHMIRROR_TOOLS/node_modules/.bin/azurite" ]; then
  (cd "$MESHMIRROR_TOOLS" && npm install --silent --no-audit --no-fund "azurite@$AZURITE_VERSION" >/dev/null)
fi
