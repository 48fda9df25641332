#!/usr/bin/env bash
# Stops the istiod that tests/istiod/up.sh started in STATE_DIR (the argument,
# else $MESHMIRROR_KUBE_STATE, else $HOME/.cache/meshmirror-kube/run), by the
# pid in STATE_DIR/istiod.pid and only if that pid still runs pilot-discovery.
# SIGTERM first (istiod drains for up to 10 s), SIGKILL after 15 s. Leaves
# the log; removes istiod.env. Safe to run when nothing runs.
set -euo pipefail
state=${1:-${MESHMIRROR_KUBE_STATE:-$HOME/.cache/meshmirror-kube/run}}
say() { echo "tests/istiod/down.sh: $*" >&2; }
[ -d "$state" ] || { say "nothing to stop: no $state"; exit 0; }

ours() { # PID: does PID still run pilot-discovery?
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [ "$(basename "${exe% (deleted)}")" = pilot-discovery ]
}
pidfile=$state/istiod.pid
stopped=no
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile")
  if [ -n "$pid" ] && ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 75); do
      ours "$pid" || break
      sleep 0.2
    done
    if ours "$pid"; then
      say "pilot-discovery (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
    stopped=yes
  fi
  rm -f "$pidfile"
fi
rm -f "$state/istiod.env"
if [ $stopped = yes ]; then
  say "stopped istiod ($state)"
else
  say "istiod was not running ($state)"
fi
