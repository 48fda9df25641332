#!/usr/bin/env bash
# Builds Istio's control plane, pilot-discovery (istiod), and istioctl from the
# Go module istio.io/istio at the pseudo-version pinned in this directory's
# go.mod (tests/istiod/go.mod: `tool` lines, go.sum committed), once, into
#   $MESHMIRROR_TOOLS/istiod-<pseudo-version>/bin/
# (MESHMIRROR_TOOLS defaults to $HOME/.cache/meshmirror-tools). A stamp file
# written after a successful build, holding a hash of this script, go.mod and
# go.sum, makes a second run a no-op; a change to any of them builds again.
# Modules and the Go build cache are shared with tests/kube/build.sh under
# $MESHMIRROR_TOOLS/go (MESHMIRROR_GOCACHE overrides the build cache: an
# empty one measures a cold build).
#
#   tests/istiod/build.sh           build when missing; last stdout line: the bin directory
#   tests/istiod/build.sh --check   build nothing; fail when missing or stale
#
# Fails (exit 1) naming the fix when go is missing or the Go module proxy
# cannot be reached; it never skips silently.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
MESHMIRROR_TOOLS=${MESHMIRROR_TOOLS:-$HOME/.cache/meshmirror-tools}

say() { echo "tests/istiod/build.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# The version comes from go.mod itself, so it cannot drift from what is built.
istio_version=$(awk '$1 == "istio.io/istio" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
[ -n "$istio_version" ] || die "istio.io/istio is not required in $here/go.mod"
# v0.0.0-20260827124520-eed52ebb66ad: the commit is the last part.
commit=${istio_version##*-}
prefix="$MESHMIRROR_TOOLS/istiod-$istio_version"
bin="$prefix/bin"
stamp="$prefix/.built"
binaries=(pilot-discovery istioctl)

# What `version` reports. Istio's release build sets these from git
# (common/scripts/report_build_info.sh); a dev build of the 1.31 branch says
# 1.31-alpha.<commit>. Without them every field says "unknown".
vpkg=istio.io/istio/pkg/version
ldflags="-s -w -X $vpkg.buildVersion=1.31-alpha.$commit -X $vpkg.buildGitRevision=$commit -X $vpkg.buildStatus=Clean -X $vpkg.buildTag=$istio_version -X $vpkg.buildHub=localhost -X $vpkg.buildOS=linux -X $vpkg.buildArch=$(go env GOARCH 2>/dev/null || echo amd64)"
# Istio's own build tags for its binaries (Makefile.core.mk, STANDARD_TAGS).
tags=vtprotobuf,disable_pgv

fingerprint() {
  (cd "$here" && cat build.sh go.mod go.sum) | sha256sum | cut -d' ' -f1
}
want="$(fingerprint) build.sh+go.mod+go.sum"

have_all() {
  local b
  for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || return 1; done
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && have_all; then
  say "pilot-discovery and istioctl of istio.io/istio@$istio_version already built in $bin"
  echo "$bin"
  exit 0
fi
# --check: only say whether they are built (tests use it; they never build).
if [ "${1:-}" = --check ]; then
  die "pilot-discovery and istioctl of istio.io/istio@$istio_version are not built in $bin (or are out of date); run scripts/install-test-tools.sh (or $0; about 10 minutes cold on 2 cores)"
fi

command -v go >/dev/null 2>&1 \
  || die "'go' is not on PATH; install Go >= $(awk '$1 == "go" { print $2; exit }' "$here/go.mod") (the Debian package golang-go, or /usr/local/go/bin on PATH), then run $0 again"

export GOMODCACHE="$MESHMIRROR_TOOLS/go/mod"
export GOCACHE="${MESHMIRROR_GOCACHE:-$MESHMIRROR_TOOLS/go/build}"
# A machine whose own Go is older than go.mod's must not fetch a toolchain
# behind our back; an explicit GOTOOLCHAIN from the caller still wins.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
# As Istio builds them (common/scripts/gobuild.sh): static binaries.
export CGO_ENABLED=0
mkdir -p "$GOMODCACHE" "$GOCACHE" "$prefix"

say "go: $(go version)"
say "downloading modules into $GOMODCACHE (nothing to fetch when cached)"
if ! out=$(cd "$here" && go mod download 2>&1); then
  echo "$out" | tail -n 20 >&2
  die "cannot reach the Go module proxy (GOPROXY=$(go env GOPROXY)): 'go mod download' in $here failed (output above); check the network or GOPROXY, then run $0 again"
fi

tmp="$prefix/bin.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
# One program at a time, so the log says what each costs (istioctl shares
# most packages with pilot-discovery).
for b in "${binaries[@]}"; do
  case $b in
    pilot-discovery) pkg=istio.io/istio/pilot/cmd/pilot-discovery; probe=(version) ;;
    istioctl) pkg=istio.io/istio/istioctl/cmd/istioctl; probe=(version --remote=false) ;;
  esac
  say "building $b of istio.io/istio@$istio_version (a cold build takes several minutes on 2 cores)"
  start=$SECONDS
  (cd "$here" && go build -mod=readonly -buildvcs=false -trimpath -tags="$tags" -ldflags="$ldflags" -o "$tmp/$b" "$pkg") \
    || die "go build $pkg failed in $here (output above)"
  [ -x "$tmp/$b" ] || die "go build did not produce $b"
  "$tmp/$b" "${probe[@]}" >/dev/null 2>&1 || die "the built $b does not run ('$tmp/$b ${probe[*]}' failed)"
  say "built $b in $((SECONDS - start)) s"
done
rm -f "$stamp"
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "$want" >"$stamp"
say "built: $(cd "$bin" && ls | tr '\n' ' ')in $bin"
echo "$bin"
