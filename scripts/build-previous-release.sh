#!/usr/bin/env bash
# Builds meshmirror as of the previous release (the commit in
# tests/upgrade/previous-release) for the upgrade test, once: the binary lands
# in $MESHMIRROR_TOOLS/meshmirror-release-<commit>/meshmirror, whose path is
# the last line printed. A build without the cloud SDKs (--no-default-features:
# the upgrade test mirrors a simulated cloud, `run --sim-file`), in its own
# target directory under $HOME/.cache so that it never replaces the current
# build's binaries: about 3 minutes cold on 2 cores, 0 s once built.
#   scripts/build-previous-release.sh          build (once), print the path
#   scripts/build-previous-release.sh --check  print the path if built, else fail
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

die() { echo "build-previous-release: error: $*" >&2; exit 1; }
commit=$(grep -v '^#' tests/upgrade/previous-release | grep -m1 -E '^[0-9a-f]{40}$') \
  || die "tests/upgrade/previous-release names no commit (40 hex digits)"
out=$MESHMIRROR_TOOLS/meshmirror-release-$commit
if [ -x "$out/meshmirror" ]; then
  echo "$out/meshmirror"
  exit 0
fi
if [ "${1:-}" = --check ]; then
  die "the previous release ($commit) is not built: run scripts/build-previous-release.sh (or scripts/install-test-tools.sh)"
fi
# A shallow clone lacks it: fetch that one commit from where the clone came from.
git cat-file -e "$commit^{commit}" 2>/dev/null \
  || git fetch --quiet --depth 1 origin "$commit" \
  || die "commit $commit is not in this clone and 'git fetch origin $commit' failed; fetch main's history (git fetch --unshallow)"
git cat-file -e "$commit^{commit}" 2>/dev/null || die "commit $commit is still missing after fetching it"

src=$(mktemp -d "${TMPDIR:-/tmp}/meshmirror-release.XXXXXX")
trap 'rm -rf "$src"' EXIT
git archive "$commit" | tar -x -C "$src"
echo "building meshmirror at $commit (the previous release) into $out, once" >&2
started=$(date +%s)
(cd "$src" && cargo build --quiet --locked --bin meshmirror --no-default-features \
  --target-dir "$HOME/.cache/meshmirror-target-previous-release") \
  || die "cargo build of $commit failed (see above)"
mkdir -p "$out"
cp "$HOME/.cache/meshmirror-target-previous-release/debug/meshmirror" "$out/meshmirror.tmp"
mv "$out/meshmirror.tmp" "$out/meshmirror"
echo "built the previous release in $(( $(date +%s) - started )) s" >&2
echo "$out/meshmirror"
