#!/usr/bin/env bash
# Installs what the tests need on a fresh machine (idempotent), then checks
# that every tool runs, failing with the tool's name when one does not:
#   cargo-nextest (the test runner), cargo-deny (licences, bans and sources
#   of the dependencies, deny.toml), moto's server (AWS), Azurite (Azure
#   Storage queues), kubernetes-validate and promtool (deploy/check.sh), and
#   the real control plane from tests/kube (tests/real_kube.rs, and every
#   suite on the real backend), istiod and istioctl from tests/istiod
#   (tests/istiod.rs), helm v4 (tests/helm.rs, the chart), and meshmirror as
#   of the previous release (tests/upgrade.rs).
# The Cloud CLI with its Pub/Sub emulator, Java and kubectl come with the
# machine's image; they are checked, not installed. The GCE and ARM mocks and
# the fake Kubernetes API server are the project's own (crate meshmirror-testkit).
# Tools land under $HOME/.cache (scripts/env.sh), so a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

NEXTEST_VERSION=0.9.151
CARGO_DENY_VERSION=0.20.2
MOTO_VERSION=5.2.1
AZURITE_VERSION=3.35.0
KUBERNETES_VALIDATE_VERSION=1.37.0

# Both cargo tools are built unoptimised (--debug): on a fresh machine that
# halves their build, and neither's speed matters here (nextest only starts
# test binaries; cargo-deny reads one lock file).
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest $NEXTEST_VERSION into $MESHMIRROR_TOOLS/cargo (a few minutes, once)"
  cargo install --quiet --locked --debug --root "$MESHMIRROR_TOOLS/cargo" "cargo-nextest@$NEXTEST_VERSION"
fi
# Its own temporary target directory, not the shared one: a cold build takes
# about 9 minutes on 2 cores, and the shared one's lock would hold back every
# other build meanwhile.
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
  echo "installing cargo-deny $CARGO_DENY_VERSION into $MESHMIRROR_TOOLS/cargo (about 9 minutes, once)"
  env -u CARGO_TARGET_DIR cargo install --quiet --locked --debug --root "$MESHMIRROR_TOOLS/cargo" "cargo-deny@$CARGO_DENY_VERSION"
fi
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
if ! command -v promtool >/dev/null; then
  # Debian's prometheus package; its service is not wanted here.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  if command -v systemctl >/dev/null; then systemctl stop prometheus 2>/dev/null || true; fi
fi
for tool in openssl curl; do
  if ! command -v "$tool" >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool" >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool" >/dev/null; }
  fi
done
# The real control plane (tests/kube, tests/real_kube.rs): kube-apiserver,
# kube-controller-manager and etcd built from their Go modules once (about 15
# minutes cold on 2 cores; then a stamp makes this a no-op). build.sh fails,
# naming the fix, when go or the Go module proxy is missing.
KUBE_BIN=$(tests/kube/build.sh | tail -n 1)
# istiod (pilot-discovery) and istioctl from the Go module istio.io/istio,
# pinned in tests/istiod/go.mod, for tests/istiod.rs: about 10 minutes cold
# on 2 cores (istioctl is 76 s of it), then a no-op.
ISTIOD_BIN=$(tests/istiod/build.sh | tail -n 1)
# helm v4 (pinned in the script) from its Go module helm.sh/helm/v4, for the
# chart's tests (tests/helm.rs): about 5 minutes cold on 2 cores, then a no-op.
HELM_BIN=$(deploy/helm/build-helm.sh | tail -n 1)
# The upgrade test's starting point: meshmirror as of the previous release
# (tests/upgrade/previous-release), built once (about 3 minutes cold).
PREVIOUS_RELEASE=$(scripts/build-previous-release.sh | tail -n 1)

# Every tool must run, not merely exist: a test that needs a broken tool fails
# (meshmirror_testkit::tools), and this says which one before the suite starts.
broken=()
check() {
  local what=$1 how=$2
  shift 2
  if ! "$@" >/dev/null 2>&1; then
    broken+=("$what does not run ('$*' failed); install: $how")
  fi
}
check cargo-nextest "cargo install --locked cargo-nextest@$NEXTEST_VERSION" cargo nextest --version
check cargo-deny "cargo install --locked cargo-deny@$CARGO_DENY_VERSION" cargo deny --version
check moto_server "pip install 'moto[server]==$MOTO_VERSION'" moto_server --help
check azurite-queue "npm install azurite@$AZURITE_VERSION (in $MESHMIRROR_TOOLS)" azurite-queue --version
check kubernetes-validate "pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" python3 -c 'import kubernetes_validate'
check promtool "apt-get install prometheus" promtool --version
check kubectl "the Debian package kubectl" kubectl version --client
check gcloud "the Debian package google-cloud-cli" gcloud version
check "the Pub/Sub emulator" "the Debian package google-cloud-cli-pubsub-emulator" \
  env CLOUDSDK_CORE_DISABLE_PROMPTS=1 gcloud beta emulators pubsub --help
check java "the Debian package openjdk-17-jre-headless" java -version
check kube-apiserver "tests/kube/build.sh" "$KUBE_BIN/kube-apiserver" --version
check kube-controller-manager "tests/kube/build.sh" "$KUBE_BIN/kube-controller-manager" --version
check etcd "tests/kube/build.sh" "$KUBE_BIN/etcd" --version
check pilot-discovery "tests/istiod/build.sh" "$ISTIOD_BIN/pilot-discovery" version
check istioctl "tests/istiod/build.sh" "$ISTIOD_BIN/istioctl" version --remote=false
check helm "deploy/helm/build-helm.sh" "$HELM_BIN" version --short
check "the previous release" "scripts/build-previous-release.sh" "$PREVIOUS_RELEASE" --version
check openssl "the Debian package openssl" openssl version
check curl "the Debian package curl" curl --version
if [ ${#broken[@]} -gt 0 ]; then
  printf 'install-test-tools: %s\n' "${broken[@]}" >&2
  exit 1
fi
echo "install-test-tools: cargo-nextest, cargo-deny, moto_server, azurite-queue, kubernetes-validate, promtool, kubectl, gcloud with the Pub/Sub emulator, java, kube-apiserver, kube-controller-manager, etcd, pilot-discovery, istioctl, helm, the previous release, openssl and curl all run"
