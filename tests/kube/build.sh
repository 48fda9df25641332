#!/usr/bin/env bash
# Builds the real kube-apiserver and kube-controller-manager (k8s.io/kubernetes)
# and etcd (go.etcd.io/etcd/server/v3) from this Go module (tests/kube/go.mod),
# once, into
#   $MESHMIRROR_TOOLS/kube-<k8s version>-etcd-<etcd version>/bin/
# (MESHMIRROR_TOOLS defaults to $HOME/.cache/meshmirror-tools). A stamp file
# written after a successful build, holding a hash of this script, go.mod,
# go.sum and the module's .go files, makes a second run a no-op; a change to
# any of them builds again (about 20 s when the Go build cache is warm).
# Downloaded modules and the build cache live under $MESHMIRROR_TOOLS/go.
#
# With --check it builds nothing and fails when the build is missing or stale.
# The last line on stdout is the bin directory. Everything else goes to stderr.
# Fails (exit 1) with the fix named when go is missing or the Go module proxy
# cannot be reached; it never skips silently.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
MESHMIRROR_TOOLS=${MESHMIRROR_TOOLS:-$HOME/.cache/meshmirror-tools}

say() { echo "tests/kube/build.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

# Versions come from go.mod itself, so they cannot drift from what is built.
mod_version() {
  local v
  v=$(awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
  [ -n "$v" ] || die "$1 is not required in $here/go.mod"
  echo "$v"
}
k8s_version=$(mod_version k8s.io/kubernetes)
etcd_version=$(mod_version go.etcd.io/etcd/server/v3)
prefix="$MESHMIRROR_TOOLS/kube-${k8s_version}-etcd-${etcd_version}"
bin="$prefix/bin"
stamp="$prefix/.built"
binaries=(kube-apiserver kube-controller-manager etcd)

fingerprint() {
  (cd "$here" && cat build.sh go.mod go.sum $(find . -name '*.go' | LC_ALL=C sort)) | sha256sum | cut -d' ' -f1
}
want="$(fingerprint) build.sh+go.mod+go.sum+*.go"

have_all() {
  local b
  for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || return 1; done
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && have_all; then
  say "kube-apiserver, kube-controller-manager $k8s_version and etcd $etcd_version already built in $bin"
  echo "$bin"
  exit 0
fi
# --check: only say whether they are built (tests use it; they never build).
if [ "${1:-}" = --check ]; then
  die "kube-apiserver, kube-controller-manager $k8s_version and etcd $etcd_version are not built in $bin (or are out of date); run scripts/install-test-tools.sh (or $0; about 15 minutes cold on 2 cores)"
fi

command -v go >/dev/null 2>&1 \
  || die "'go' is not on PATH; install Go >= $(awk '$1 == "go" { print $2; exit }' "$here/go.mod") (the Debian package golang-go, or /usr/local/go/bin on PATH), then run $0 again"

export GOMODCACHE="$MESHMIRROR_TOOLS/go/mod"
export GOCACHE="$MESHMIRROR_TOOLS/go/build"
# A machine whose own Go is older than go.mod's must not fetch a toolchain
# behind our back; an explicit GOTOOLCHAIN from the caller still wins.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
mkdir -p "$GOMODCACHE" "$GOCACHE" "$prefix"

say "go: $(go version)"
say "downloading modules into $GOMODCACHE (nothing to fetch when cached)"
if ! out=$(cd "$here" && go mod download 2>&1); then
  echo "$out" | tail -n 20 >&2
  die "cannot reach the Go module proxy (GOPROXY=$(go env GOPROXY)): 'go mod download' in $here failed (output above); check the network or GOPROXY, then run $0 again"
fi

# The ldflags set the version that kube-apiserver reports (/version, kubectl
# version) the way Kubernetes' own build does; without them it says v0.0.0-master.
major=${k8s_version#v}; major=${major%%.*}
minor=${k8s_version#v*.}; minor=${minor%%.*}
vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$k8s_version -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"

tmp="$prefix/bin.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
say "building kube-apiserver, kube-controller-manager $k8s_version and etcd $etcd_version (a cold build takes several minutes on 2 cores)"
start=$SECONDS
(cd "$here" && go build -mod=readonly -buildvcs=false -trimpath -ldflags="$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  ./cmd/etcd) || die "go build failed in $here (output above)"
for b in "${binaries[@]}"; do
  [ -x "$tmp/$b" ] || die "go build did not produce $b"
done
rm -f "$stamp"
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "$want" >"$stamp"
say "built in $((SECONDS - start)) s: $(cd "$bin" && ls | tr '\n' ' ')"
echo "$bin"
