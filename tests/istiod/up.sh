#!/usr/bin/env bash
# Starts Istio's control plane, `pilot-discovery discovery` (istiod, built by
# tests/istiod/build.sh), against the control plane that tests/kube/up.sh
# started in the same STATE_DIR, with every listener on 127.0.0.1.
#
#   tests/istiod/up.sh [STATE_DIR]   start (istiod of this state dir, if one
#                                     runs, is stopped first)
#
# STATE_DIR: the argument, else $MESHMIRROR_KUBE_STATE, else
# $HOME/.cache/meshmirror-kube/run (tests/kube/up.sh's default). It must hold
# admin.kubeconfig (a running API server). istiod gets:
#   STATE_DIR/istiod/        its working directory (it looks for ./etc/cacerts
#                            and ./var/lib/istio relative to it; none exist,
#                            so it makes its own CA and has no injector)
#   STATE_DIR/istiod/mesh.yaml  the mesh config (tests/istiod/mesh.yaml)
#   STATE_DIR/istiod.pid     its pid
#   STATE_DIR/logs/istiod.log
#   STATE_DIR/istiod.env     shell variables (ISTIOD_XDS, ISTIOD_HTTP, ...)
# The last line on stdout is the path of istiod.env.
#
# The binaries come from $MESHMIRROR_ISTIOD_BIN when set, else from build.sh
# (a no-op once built). Needs curl and kubectl. Ports are free ones picked at
# random in 20000-32000, like tests/kube/up.sh. Stop with tests/istiod/down.sh
# (tests/kube/down.sh stops it too).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
state=${1:-${MESHMIRROR_KUBE_STATE:-$HOME/.cache/meshmirror-kube/run}}
t0=$(date +%s.%N)
say() { echo "tests/istiod/up.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

for tool in curl kubectl; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not on PATH; install it (Debian packages: curl, kubectl)"
done
[ -d "$state" ] || die "no state dir $state: start the API server first with tests/kube/up.sh $state"
state=$(cd "$state" && pwd)
kubeconfig=$state/admin.kubeconfig
[ -f "$kubeconfig" ] || die "$kubeconfig is missing: start the API server first with tests/kube/up.sh $state"

if [ -n "${MESHMIRROR_ISTIOD_BIN:-}" ]; then
  bin=$MESHMIRROR_ISTIOD_BIN
else
  bin=$("$here/build.sh" | tail -n 1) || die "tests/istiod/build.sh failed (see above)"
fi
[ -x "$bin/pilot-discovery" ] || die "$bin/pilot-discovery is missing; run tests/istiod/build.sh"

"$here/down.sh" "$state" >/dev/null 2>&1
work=$state/istiod
rm -rf "$work" "$state/istiod.env" "$state/istiod.pid"
mkdir -p "$work" "$state/logs"
log=$state/logs/istiod.log

k() { kubectl --kubeconfig "$kubeconfig" --cache-dir "$state/kubectl-cache" "$@"; }
k get --raw /readyz >/dev/null 2>&1 || die "the API server of $kubeconfig does not answer /readyz; is tests/kube/up.sh $state running?"
# istiod's namespace, with apply -f (a JSON/YAML body; see the field notes).
k apply -f "$here/istio-system.yaml" >"$state/logs/istiod-setup.log" 2>&1 \
  || { cat "$state/logs/istiod-setup.log" >&2; die "kubectl apply -f $here/istio-system.yaml failed"; }

# --- ports -------------------------------------------------------------------
taken=" "
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    case "$taken" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  die "no free port found on 127.0.0.1"
}
http_port=$(free_port); taken="$taken$http_port "
grpc_port=$(free_port); taken="$taken$grpc_port "
secure_grpc_port=$(free_port); taken="$taken$secure_grpc_port "
https_port=$(free_port); taken="$taken$https_port "
monitoring_port=$(free_port); taken="$taken$monitoring_port "

sed "s/@ISTIOD_SECURE_GRPC_PORT@/$secure_grpc_port/g" "$here/mesh.yaml" >"$work/mesh.yaml"

# --- istiod ------------------------------------------------------------------
# Flags: as the istiod chart runs it (manifests/charts/istio-control/
# istio-discovery/templates/deployment.yaml) but on 127.0.0.1 and with files
# of the state dir. The meshNetworks file does not exist, so istiod reads
# ConfigMap istio-system/istio (key meshNetworks) when there is one.
# Env: what the chart sets from the pod (POD_NAME, POD_NAMESPACE,
# SERVICE_ACCOUNT, REVISION, CLUSTER_ID), plus:
#  - PILOT_CERT_PROVIDER=istiod: its own self-signed CA (Secret
#    istio-ca-secret, made at first start) signs its serving certificate;
#  - INJECTION_WEBHOOK_CONFIG_NAME= and VALIDATION_WEBHOOK_CONFIG_NAME=
#    (empty): no webhook configurations exist here, so none is patched;
#  - ENABLE_LEADER_ELECTION=false: one istiod per state dir, so it runs its
#    controllers at once instead of waiting for a lease;
#  - PILOT_ENABLE_ANALYSIS=false (the chart's default);
#  - GOMAXPROCS: the machine's cores (the chart sets the CPU limit).
# Everything else is istiod's default (unhealthy endpoints are not sent,
# debounce 100 ms, ...).
cd "$work"
launch=(env
  KUBECONFIG="$kubeconfig"
  POD_NAME=istiod-local
  POD_NAMESPACE=istio-system
  SERVICE_ACCOUNT=istiod
  REVISION=default
  CLUSTER_ID=Kubernetes
  PILOT_CERT_PROVIDER=istiod
  INJECTION_WEBHOOK_CONFIG_NAME=
  VALIDATION_WEBHOOK_CONFIG_NAME=
  ENABLE_LEADER_ELECTION=false
  PILOT_ENABLE_ANALYSIS=false
  GOMAXPROCS="$(nproc 2>/dev/null || echo 2)"
  "$bin/pilot-discovery" discovery
  --kubeconfig="$kubeconfig"
  --meshConfig="$work/mesh.yaml"
  --networksConfig="$work/meshNetworks.yaml"
  --domain=cluster.local
  --httpAddr="127.0.0.1:$http_port"
  --grpcAddr="127.0.0.1:$grpc_port"
  --secureGRPCAddr="127.0.0.1:$secure_grpc_port"
  --httpsAddr="127.0.0.1:$https_port"
  --monitoringAddr="127.0.0.1:$monitoring_port"
  --keepaliveMaxServerConnectionAge=30m
  --log_output_level=default:info)
if command -v setsid >/dev/null 2>&1; then
  setsid "${launch[@]}" >"$log" 2>&1 </dev/null &
else
  "${launch[@]}" >"$log" 2>&1 </dev/null &
fi
pid=$!
echo "$pid" >"$state/istiod.pid"
cd - >/dev/null

fail() {
  say "error: $*"
  say "last lines of $log:"
  tail -n 25 "$log" | sed 's/^/    /' >&2 || true
  "$here/down.sh" "$state" >&2 || true
  exit 1
}
# /ready answers 200 once istiod has its mesh config, its caches have synced
# with the API server and the xDS server has started.
deadline=$((SECONDS + 120))
until curl -fsS -o /dev/null "http://127.0.0.1:$http_port/ready" 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || fail "pilot-discovery exited while starting"
  [ $SECONDS -lt $deadline ] || fail "istiod was not ready (/ready on 127.0.0.1:$http_port) within 120 s"
  sleep 0.2
done

cat >"$state/istiod.env" <<EOF
export ISTIOD_XDS=127.0.0.1:$grpc_port
export ISTIOD_SECURE_XDS=127.0.0.1:$secure_grpc_port
export ISTIOD_HTTP=127.0.0.1:$http_port
export ISTIOD_WEBHOOK=127.0.0.1:$https_port
export ISTIOD_MONITORING=127.0.0.1:$monitoring_port
export ISTIOD_PID=$pid
export ISTIOD_BIN=$bin
EOF
say "istiod ready in $(elapsed) s: plaintext xDS 127.0.0.1:$grpc_port, debug http://127.0.0.1:$http_port (/ready, /debug/...), monitoring http://127.0.0.1:$monitoring_port; log $log; variables in $state/istiod.env; stop with tests/istiod/down.sh $state"
echo "$state/istiod.env"
