#!/usr/bin/env bash
# Checks deploy/ against the code; CI runs it (.ci/run).
#
#   deploy/check.sh PATH/TO/meshmirror            check, exit non-zero on any problem
#   deploy/check.sh PATH/TO/meshmirror --update   rewrite the generated files instead
#
# Generated files: deploy/crd.yaml and its copy deploy/base/crd.yaml (kustomize
# loads no file outside a kustomization's folder) from `meshmirror crd`, and
# deploy/install.yaml from `kubectl kustomize deploy/base`.
# Validation: every Kubernetes manifest (the base, each overlay, the examples)
# with kubernetes-validate --strict against the oldest and newest Kubernetes
# we support; the ScalingGroupMirror examples against the CRD's schema, the
# alerts and the dashboard against the metrics the binary exports
# (tests/deploy.rs, run here through cargo unless --no-cargo is given).
#
# Needs: kubectl (with kustomize), kubernetes-validate (PyPI, version pinned in
# scripts/install-test-tools.sh), python3, cargo unless --no-cargo.
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
kubectl kustomize deploy/base >"$tmp/install.yaml"
generated "$tmp/install.yaml" deploy/install.yaml "\`kubectl kustomize deploy/base\`"

echo "-- rendering the overlays"
manifests=(deploy/install.yaml)
for overlay in deploy/overlays/*/; do
  name=$(basename "$overlay")
  if kubectl kustomize "$overlay" >"$tmp/overlay-$name.yaml"; then
    manifests+=("$tmp/overlay-$name.yaml")
  else
    fail "kubectl kustomize $overlay"
  fi
done
# Example files that are Kubernetes objects (sim-cloud.yaml and cloud policy
# files are not); custom kinds only warn here and are checked by tests/deploy.rs.
while IFS= read -r -d '' file; do
  if grep -q '^kind:' "$file"; then
    manifests+=("$file")
  fi
done < <(find deploy/examples deploy/observability -name '*.yaml' -print0 | sort -z)

echo "-- kubernetes-validate --strict (${K8S_VERSIONS[*]}) on ${#manifests[@]} files"
for version in "${K8S_VERSIONS[@]}"; do
  if ! kubernetes-validate --strict --quiet --no-warn -k "$version" "${manifests[@]}"; then
    fail "kubernetes-validate against $version"
  fi
done

echo "-- dashboards parse as JSON"
while IFS= read -r -d '' file; do
  python3 -m json.tool "$file" >/dev/null || fail "$file is not valid JSON"
done < <(find deploy/observability -name '*.json' -print0)

if $cargo_tests; then
  echo "-- examples against the CRD, alerts and dashboard against the metrics (tests/deploy.rs)"
  cargo test --quiet -p meshmirror --test deploy || fail "tests/deploy.rs"
fi

if [ "$failed" -ne 0 ]; then
  echo "deploy/check.sh: problems found" >&2
  exit 1
fi
if $update; then echo "deploy/check.sh: generated files are up to date"; else echo "deploy/check.sh: ok"; fi
