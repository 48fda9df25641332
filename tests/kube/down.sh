#!/usr/bin/env bash
# Stops the control plane that tests/kube/up.sh started in STATE_DIR (the
# argument, else $MESHMIRROR_KUBE_STATE, else $HOME/.cache/meshmirror-kube/run):
# istiod if tests/istiod/up.sh started one there, then
# kube-controller-manager, then kube-apiserver, then etcd, each by the pid in
# its pid file and only if that pid still runs that program. SIGTERM first,
# SIGKILL after 15 s. Leaves the state dir (logs, data) for a look afterwards;
# up.sh wipes it on its next start. Safe to run when nothing runs.
set -euo pipefail
state=${1:-${MESHMIRROR_KUBE_STATE:-$HOME/.cache/meshmirror-kube/run}}
say() { echo "tests/kube/down.sh: $*" >&2; }
[ -d "$state" ] || { say "nothing to stop: no $state"; exit 0; }

ours() { # PID NAME: does PID still run the program NAME?
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [ "$(basename "${exe% (deleted)}")" = "$2" ]
}
# istiod (tests/istiod/up.sh) is a client of this API server: stop it first.
if [ -f "$state/istiod.pid" ]; then
  "$(dirname "$0")/../istiod/down.sh" "$state" || true
fi
stopped=()
for name in kube-controller-manager kube-apiserver etcd; do
  pidfile=$state/$name.pid
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && ours "$pid" "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 75); do
      ours "$pid" "$name" || break
      sleep 0.2
    done
    if ours "$pid" "$name"; then
      say "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
    stopped+=("$name")
  fi
  rm -f "$pidfile"
done
if [ ${#stopped[@]} -gt 0 ]; then
  say "stopped ${stopped[*]} ($state)"
else
  say "nothing was running ($state)"
fi
