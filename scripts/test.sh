#!/usr/bin/env bash
# The test command of the README: installs what the tests use (when missing),
# runs every test of the workspace on the test kit's API server, then the
# suites that talk to Kubernetes again on one real control plane shared by
# the run (kube-apiserver, etcd, kube-controller-manager: tests/kube/), where
# the first test of tests/istiod.rs also starts istiod (tests/istiod/).
#
#   scripts/test.sh [NEXTEST ARGS...]    both backends
#   MESHMIRROR_KUBE=fake scripts/test.sh  the test kit's server only
#   MESHMIRROR_KUBE=real scripts/test.sh  the real control plane only
#
# Extra arguments go to both `cargo nextest run`s (a filter, say).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

# The suites run on the real backend too; the others do not talk to
# Kubernetes (cli, golden, cloud_permissions) or start their own control
# plane (real_kube). istiod, istiod_networks, istioctl and istiod_bench run
# only there: the fake pass leaves them out (they would fail, saying they
# need the real backend; istiod_networks starts a control plane and istiod
# of its own, as one gateway would change what the shared istiod sends every
# other test, and runs once, here). istiod_bench holds only benchmarks (ignored tests): built here,
# run by hand with --run-ignored only (docs/benchmarks.md).
REAL_SUITES=(controller mesh aws gcp azure ha leader security faults documented_claims deploy upgrade helm istiod istiod_networks istioctl istiod_bench)
REAL_ONLY='(binary_id(meshmirror::istiod) | binary_id(meshmirror::istiod_networks) | binary_id(meshmirror::istioctl) | binary_id(meshmirror::istiod_bench))'

backends=${MESHMIRROR_KUBE:-fake,real}
for backend in ${backends//,/ }; do
  case $backend in
    fake|real) ;;
    *) echo "scripts/test.sh: MESHMIRROR_KUBE=$MESHMIRROR_KUBE: use fake, real or fake,real" >&2; exit 2 ;;
  esac
done

scripts/install-test-tools.sh

status=0

if [[ ,$backends, == *,fake,* ]]; then
  echo "== tests on the test kit's API server" >&2
  # An -E among the extra arguments is ORed with this one (nextest's rule
  # for several filtersets): give a name filter instead to narrow the run.
  MESHMIRROR_KUBE=fake cargo nextest run --workspace --no-fail-fast -E "not $REAL_ONLY" "$@" || status=$?
fi

if [[ ,$backends, == *,real,* ]]; then
  echo "== tests on a real control plane" >&2
  state=$(mktemp -d "${TMPDIR:-/tmp}/meshmirror-kube-shared.XXXXXX")
  # istiod first (tests/kube/down.sh stops it too), then the control plane.
  trap 'tests/istiod/down.sh "$state" >/dev/null 2>&1 || true; tests/kube/down.sh "$state" >/dev/null 2>&1 || true; rm -rf "$state"' EXIT
  started=$(date +%s)
  tests/kube/up.sh "$state" >/dev/null
  echo "control plane up in $(( $(date +%s) - started )) s ($state)" >&2
  args=()
  for suite in "${REAL_SUITES[@]}"; do args+=(--test "$suite"); done
  MESHMIRROR_KUBE=real MESHMIRROR_KUBE_SHARED=$state \
    cargo nextest run -p meshmirror "${args[@]}" --no-fail-fast --no-tests=warn "$@" || status=$?
fi

exit "$status"
