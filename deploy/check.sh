#!/usr/bin/env bash
# Checks deploy/ against the code; CI runs it (.ci/run).
#
#   deploy/check.sh PATH/TO/meshmirror            check, exit non-zero on any problem
#   deploy/check.sh PATH/TO/meshmirror --update   rewrite the generated files instead
#
# Generated files: deploy/crd.yaml and its copies deploy/base/crd.yaml (kustomize
# loads no file outside a kustomization's folder) and the Helm chart's
# deploy/helm/meshmirror/crds/ (Helm installs CRDs from there, untemplated)
# from `meshmirror crd`; deploy/install.yaml from `kubectl kustomize
# deploy/base`; the chart's files/prometheusrule.yaml, a copy of
# deploy/observability/prometheusrule.yaml (a chart reads no file outside its
# folder). The chart's renders are compared with deploy/install.yaml and the
# overlays by tests/helm.rs.
# Validation: every Kubernetes object (the base, each overlay, the examples,
# the observability files) by deploy/validate-kinds.py, which prints what
# validated each kind and fails on a kind nothing validates: built-in kinds
# with kubernetes-validate --strict against the oldest and newest Kubernetes
# we support, ScalingGroupMirror against the CRD's schema, PrometheusRule with
# `promtool check rules`, ServiceMonitor against its fields and the Service it
# selects. The namespace-scoped overlay (deploy/overlays/namespaced) by
# deploy/check-namespaced.py: no ClusterRoleBinding grants WorkloadEntry
# writes; `--namespace` lists namespace names, none twice; each listed
# namespace has a Role with the base ClusterRole's rules, bound to the
# ServiceAccount, and no unlisted namespace but the install's own (the
# leader-election Lease) has a Role or RoleBinding; every `--allowed-groups`
# rule names a listed namespace. Then, through cargo unless --no-cargo is
# given: the
# ScalingGroupMirror examples on an API server serving the CRD (CEL rules too)
# and the alerts and the dashboard against the metrics the binary exports
# (tests/deploy.rs); the cloud permission examples against the calls the
# providers make (tests/cloud_permissions.rs).
#
# Needs: kubectl (with kustomize), python3 with kubernetes-validate (PyPI,
# version pinned in scripts/install-test-tools.sh), promtool (Debian package
# `prometheus`), cargo unless --no-cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes versions the manifests must be valid for (k8s-openapi's
# `earliest` and `latest`).
K8S_VERSIONS=(1.33.0 1.37.0)

usage() {
  echo "usage: deploy/check.sh PATH/TO/meshmirror [--update] [--no-cargo]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
bin=$1
shift
update=false
cargo_tests=true
for arg in "$@"; do
  case $arg in
    --update) update=true ;;
    --no-cargo) cargo_tests=false ;;
    *) usage ;;
  esac
done
[ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
for tool in kubectl kubernetes-validate python3; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool (see scripts/install-test-tools.sh)" >&2; exit 2; }
done
command -v promtool >/dev/null \
  || { echo "missing tool: promtool, which checks the PrometheusRule (apt-get install prometheus; see scripts/install-test-tools.sh)" >&2; exit 2; }
python3 -c 'import kubernetes_validate' 2>/dev/null \
  || { echo "python3 cannot import kubernetes_validate (pip install it for this python3; see scripts/install-test-tools.sh)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
fail() {
  echo "FAIL: $*" >&2
  failed=1
}

# Compares a generated file with the checked-in one (or rewrites it).
generated() {
  local want=$1 path=$2 how=$3
  if $update; then
    if ! cmp -s "$want" "$path"; then
      cp "$want" "$path"
      echo "updated $path"
    fi
  elif ! diff -u "$path" "$want" >"$tmp/diff"; then
    head -40 "$tmp/diff" >&2
    fail "$path differs from $how; run: deploy/check.sh $bin --update"
  fi
}

echo "-- generated files"
"$bin" crd >"$tmp/crd.yaml"
generated "$tmp/crd.yaml" deploy/crd.yaml "\`meshmirror crd\`"
generated "$tmp/crd.yaml" deploy/base/crd.yaml "\`meshmirror crd\`"
generated "$tmp/crd.yaml" deploy/helm/meshmirror/crds/scalinggroupmirrors.meshmirror.io.yaml "\`meshmirror crd\`"
generated deploy/observability/prometheusrule.yaml deploy/helm/meshmirror/files/prometheusrule.yaml \
  deploy/observability/prometheusrule.yaml
kubectl kustomize deploy/base >"$tmp/install.yaml"
generated "$tmp/install.yaml" deploy/install.yaml "\`kubectl kustomize deploy/base\`"

echo "-- rendering the overlays"
# LABEL=FILE: the label names the object's origin in validate-kinds.py's report.
manifests=(deploy/install.yaml)
for overlay in deploy/overlays/*/; do
  name=$(basename "$overlay")
  if kubectl kustomize "$overlay" >"$tmp/overlay-$name.yaml"; then
    manifests+=("deploy/overlays/$name=$tmp/overlay-$name.yaml")
  else
    fail "kubectl kustomize $overlay"
  fi
done
# Example files that are Kubernetes objects (sim-cloud.yaml and cloud policy
# files are not).
while IFS= read -r -d '' file; do
  if grep -q '^kind:' "$file"; then
    manifests+=("$file")
  fi
done < <(find deploy/examples deploy/observability -name '*.yaml' -print0 | sort -z)

echo "-- every object validated (${#manifests[@]} files; Kubernetes ${K8S_VERSIONS[*]})"
k8s_args=()
for version in "${K8S_VERSIONS[@]}"; do k8s_args+=(-k "$version"); done
python3 deploy/validate-kinds.py --crd deploy/crd.yaml "${k8s_args[@]}" "${manifests[@]}" \
  || fail "deploy/validate-kinds.py"

echo "-- the namespace-scoped install grants nothing cluster-wide (deploy/check-namespaced.py)"
if [ -s "$tmp/overlay-namespaced.yaml" ]; then
  python3 deploy/check-namespaced.py --base "$tmp/install.yaml" \
    "deploy/overlays/namespaced=$tmp/overlay-namespaced.yaml" \
    || fail "deploy/check-namespaced.py"
else
  fail "deploy/overlays/namespaced is missing or did not render"
fi

echo "-- dashboards parse as JSON"
while IFS= read -r -d '' file; do
  python3 -m json.tool "$file" >/dev/null || fail "$file is not valid JSON"
done < <(find deploy/observability -name '*.json' -print0)

if $cargo_tests; then
  echo "-- examples on an API server with the CRD, alerts and dashboard against the metrics (tests/deploy.rs),"
  echo "   cloud permissions against the providers' calls (tests/cloud_permissions.rs)"
  cargo test --quiet -p meshmirror --test deploy --test cloud_permissions \
    || fail "tests/deploy.rs or tests/cloud_permissions.rs"
fi

if [ "$failed" -ne 0 ]; then
  echo "deploy/check.sh: problems found" >&2
  exit 1
fi
if $update; then echo "deploy/check.sh: generated files are up to date"; else echo "deploy/check.sh: ok"; fi
