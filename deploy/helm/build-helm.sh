#!/usr/bin/env bash
# Builds helm (v4, pinned below) from its Go module helm.sh/helm/v4, once, into
#   $MESHMIRROR_TOOLS/helm-<version>/bin/helm
# (MESHMIRROR_TOOLS defaults to $HOME/.cache/meshmirror-tools), for the chart's
# tests (tests/helm.rs). A stamp holding the version and build flags makes a
# second run a no-op; changing either builds again.
# Modules and the Go build cache are shared with tests/kube/build.sh under
# $MESHMIRROR_TOOLS/go (MESHMIRROR_GOCACHE overrides the build cache: an
# empty one measures a cold build).
#
#   deploy/helm/build-helm.sh           build when missing; last stdout line: the binary
#   deploy/helm/build-helm.sh --check   build nothing; fail when missing or stale
#
# Fails (exit 1) naming the fix when go is missing or the Go module proxy
# cannot be reached; it never skips silently.
set -euo pipefail
MESHMIRROR_TOOLS=${MESHMIRROR_TOOLS:-$HOME/.cache/meshmirror-tools}

# Helm v4, the current major release. v4.3.x
# requires Go 1.26 and the k8s.io modules at v0.37.2, the same release as the
# control plane of tests/kube.
HELM_VERSION=v4.3.2

say() { echo "deploy/helm/build-helm.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# The version `helm version` reports, set as helm's own Makefile does.
ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
prefix="$MESHMIRROR_TOOLS/helm-$HELM_VERSION"
bin="$prefix/bin/helm"
stamp="$prefix/.built"
want="helm.sh/helm/v4@$HELM_VERSION CGO_ENABLED=0 -trimpath -ldflags=$ldflags"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$bin" ]; then
  say "helm $HELM_VERSION already built: $bin"
  echo "$bin"
  exit 0
fi
if [ "${1:-}" = --check ]; then
  die "helm $HELM_VERSION is not built in $prefix (or is out of date); run scripts/install-test-tools.sh (or $0; about 5 minutes cold on 2 cores)"
fi

command -v go >/dev/null 2>&1 \
  || die "'go' is not on PATH; install Go >= 1.26 (the Debian package golang-go, or /usr/local/go/bin on PATH), then run $0 again"

export GOMODCACHE="$MESHMIRROR_TOOLS/go/mod"
export GOCACHE="${MESHMIRROR_GOCACHE:-$MESHMIRROR_TOOLS/go/build}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
# As helm's Makefile builds it: a static binary.
export CGO_ENABLED=0
mkdir -p "$GOMODCACHE" "$GOCACHE" "$prefix"

say "go: $(go version)"
if ! out=$(go mod download helm.sh/helm/v4@"$HELM_VERSION" 2>&1); then
  echo "$out" | tail -n 20 >&2
  die "cannot reach the Go module proxy (GOPROXY=$(go env GOPROXY)): 'go mod download helm.sh/helm/v4@$HELM_VERSION' failed (output above); check the network or GOPROXY, then run $0 again"
fi

tmp="$prefix/bin.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
say "building helm $HELM_VERSION (a cold build takes about 5 minutes on 2 cores)"
start=$SECONDS
# `go install module@version` builds with helm's own go.mod and go.sum,
# outside any module of ours.
GOBIN="$tmp" go install -buildvcs=false -trimpath -ldflags="$ldflags" \
  "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" || die "go install helm.sh/helm/v4/cmd/helm@$HELM_VERSION failed (output above)"
[ -x "$tmp/helm" ] || die "go install did not produce helm"
"$tmp/helm" version --short >/dev/null || die "the built helm does not run"
rm -f "$stamp"
rm -rf "$prefix/bin"
mv "$tmp" "$prefix/bin"
trap - EXIT
echo "$want" >"$stamp"
say "built helm $HELM_VERSION in $((SECONDS - start)) s: $bin"
echo "$bin"
