#!/usr/bin/env bash
# Starts a real, local Kubernetes control plane on 127.0.0.1: etcd,
# kube-apiserver and kube-controller-manager (built by tests/kube/build.sh),
# then installs Istio's CRDs (tests/kube/istio-crds.yaml) and meshmirror's
# (deploy/crd.yaml) and waits until they are Established.
#
#   tests/kube/up.sh [STATE_DIR]        start (a fresh cluster: anything this
#                                       state dir ran before is stopped and its
#                                       data wiped first)
#   tests/kube/up.sh down [STATE_DIR]   stop (the same as tests/kube/down.sh)
#
# STATE_DIR: the argument, else $MESHMIRROR_KUBE_STATE, else
# $HOME/.cache/meshmirror-kube/run. It gets pki/, etcd/, logs/, <name>.pid,
# admin.kubeconfig and env (shell variables: KUBECONFIG, MESHMIRROR_KUBE_SERVER,
# the ports). The binaries come from $MESHMIRROR_KUBE_BIN when set, else from
# build.sh (a no-op once built). The last line on stdout is the path of the
# admin kubeconfig (user kubernetes-admin, group system:masters).
#
# Needs: openssl, curl, kubectl. Ports are free ones picked at random in
# 20000-32000 (below Linux's ephemeral range); set MESHMIRROR_KUBE_APISERVER_PORT
# to fix the API server's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [ "${1:-}" = down ]; then
  shift
  exec "$here/down.sh" "$@"
fi

state=${1:-${MESHMIRROR_KUBE_STATE:-$HOME/.cache/meshmirror-kube/run}}
t0=$(date +%s.%N)
say() { echo "tests/kube/up.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

for tool in openssl curl kubectl; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not on PATH; install it (Debian packages: openssl, curl, kubectl)"
done

if [ -n "${MESHMIRROR_KUBE_BIN:-}" ]; then
  bin=$MESHMIRROR_KUBE_BIN
else
  bin=$("$here/build.sh" | tail -n 1) || die "tests/kube/build.sh failed (see above)"
fi
for b in etcd kube-apiserver kube-controller-manager; do
  [ -x "$bin/$b" ] || die "$bin/$b is missing; run tests/kube/build.sh"
done

# A fresh start: stop what this state dir ran, wipe what it wrote.
mkdir -p "$state"
state=$(cd "$state" && pwd)
"$here/down.sh" "$state" >/dev/null
rm -rf "$state/pki" "$state/etcd" "$state/logs" "$state/flexvolume" "$state/kubectl-cache" "$state/env" "$state"/*.kubeconfig "$state"/*.pid
mkdir -p "$state/pki" "$state/etcd" "$state/logs"
chmod 700 "$state/pki" "$state/etcd"

started=()
fail() {
  say "error: $*"
  local n
  for n in "${started[@]}"; do
    say "last lines of $state/logs/$n.log:"
    tail -n 15 "$state/logs/$n.log" | sed 's/^/    /' >&2 || true
  done
  "$here/down.sh" "$state" >&2 || true
  exit 1
}

# --- ports -------------------------------------------------------------------
taken=" "
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    case "$taken" in *" $p "*) continue ;; esac
    # Nothing answers there (a refused connection means nothing listens).
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      taken="$taken$p "
      echo "$p"
      return 0
    fi
  done
  die "no free port found on 127.0.0.1"
}
etcd_port=$(free_port); taken="$taken$etcd_port "
peer_port=$(free_port); taken="$taken$peer_port "
api_port=${MESHMIRROR_KUBE_APISERVER_PORT:-$(free_port)}; taken="$taken$api_port "
kcm_port=$(free_port)
server="https://127.0.0.1:$api_port"

# --- certificates and keys, as kubeadm makes them: the cluster CA (serving and
# client certificates) and the front-proxy CA (the aggregation layer) --------
pki=$state/pki
ossl() { openssl "$@" 2>>"$state/logs/openssl.log" >/dev/null || die "openssl $1 failed (see $state/logs/openssl.log)"; }
new_ca() { # NAME COMMON_NAME
  ossl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout "$pki/$1.key" -out "$pki/$1.crt" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,digitalSignature,keyCertSign,cRLSign"
}
new_ca ca meshmirror-test-kubernetes-ca
new_ca front-proxy-ca meshmirror-test-front-proxy-ca
# issue NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES [CA]]
issue() {
  local name=$1 subj=$2 eku=$3 san=${4:-} ca=${5:-ca}
  local ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$eku"
  [ -z "$san" ] || ext="$ext
subjectAltName=$san"
  printf '%s\n' "$ext" >"$pki/$name.ext"
  ossl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -out "$pki/$name.csr" -subj "$subj"
  ossl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days 3650 -out "$pki/$name.crt" -extfile "$pki/$name.ext"
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}
service_cidr=10.96.0.0/12
issue apiserver "/CN=kube-apiserver" serverAuth \
  "IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
issue kube-controller-manager-serving "/CN=kube-controller-manager" serverAuth "IP:127.0.0.1,DNS:localhost"
issue admin "/O=system:masters/CN=kubernetes-admin" clientAuth
issue kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
issue front-proxy-client "/CN=front-proxy-client" clientAuth "" front-proxy-ca
# The service-account token signing key pair.
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key"
ossl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

b64() { base64 -w0 <"$1"; }
kubeconfig() { # FILE USER CERT_NAME
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: meshmirror-test
  cluster:
    server: $server
    certificate-authority-data: $(b64 "$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$pki/$3.crt")
    client-key-data: $(b64 "$pki/$3.key")
contexts:
- name: $2@meshmirror-test
  context:
    cluster: meshmirror-test
    user: $2
current-context: $2@meshmirror-test
EOF
  chmod 600 "$1"
}
admin_kc=$state/admin.kubeconfig
kubeconfig "$admin_kc" kubernetes-admin admin
kubeconfig "$state/kube-controller-manager.kubeconfig" system:kube-controller-manager kube-controller-manager

# --- processes ---------------------------------------------------------------
launch() { # NAME ARGS... (the binary is $bin/NAME)
  local name=$1
  shift
  if command -v setsid >/dev/null 2>&1; then
    setsid "$bin/$name" "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
  else
    "$bin/$name" "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
  fi
  echo $! >"$state/$name.pid"
  started+=("$name")
}
alive() { kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }
# wait_for WHAT SECONDS PROCESS COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
  local what=$1 secs=$2 proc=$3
  shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    alive "$proc" || fail "$proc exited while waiting for $what"
    [ $SECONDS -lt $deadline ] || fail "$what: not within ${secs} s"
    sleep 0.2
  done
}

# etcd: plain HTTP, loopback only (the API server is its only client).
# --unsafe-no-fsync: the data is thrown away with the state dir, and fsync on a
# shared disk is what makes a test etcd slow.
launch etcd \
  --name=meshmirror-test \
  --data-dir="$state/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" \
  --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$peer_port" \
  --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
  --initial-cluster="meshmirror-test=http://127.0.0.1:$peer_port" \
  --initial-cluster-state=new \
  --unsafe-no-fsync=true \
  --log-level=warn
wait_for "etcd /health" 30 etcd curl -fsS "http://127.0.0.1:$etcd_port/health"

# kube-apiserver: secure serving on 127.0.0.1 only, client certificates from the
# cluster CA, RBAC and Node authorization, the default admission plugins (which
# include NamespaceLifecycle, ServiceAccount, PodSecurity, ResourceQuota, the
# admission webhooks and policies) plus NodeRestriction, as kubeadm enables it.
launch kube-apiserver \
  --etcd-servers="http://127.0.0.1:$etcd_port" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$api_port" \
  --tls-cert-file="$pki/apiserver.crt" \
  --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$pki/front-proxy-client.crt" \
  --proxy-client-key-file="$pki/front-proxy-client.key" \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true \
  --service-cluster-ip-range="$service_cidr" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" \
  --service-account-signing-key-file="$pki/sa.key" \
  --endpoint-reconciler-type=none
# /readyz as the admin; RBAC's bootstrap roles and the priority-and-fairness
# configuration are among its checks.
curl_admin() { curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$@"; }
wait_for "kube-apiserver /readyz" 90 kube-apiserver curl_admin "$server/readyz"
say "kube-apiserver ready on $server after $(elapsed) s"

launch kube-controller-manager \
  --kubeconfig="$state/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$state/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$state/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$kcm_port" \
  --tls-cert-file="$pki/kube-controller-manager-serving.crt" \
  --tls-private-key-file="$pki/kube-controller-manager-serving.key" \
  --client-ca-file="$pki/ca.crt" \
  --controllers='*' \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$pki/sa.key" \
  --root-ca-file="$pki/ca.crt" \
  --cluster-signing-cert-file="$pki/ca.crt" \
  --cluster-signing-key-file="$pki/ca.key" \
  --flex-volume-plugin-dir="$state/flexvolume" \
  --leader-elect=false

cat >"$state/env" <<EOF
export KUBECONFIG=$admin_kc
export MESHMIRROR_KUBE_SERVER=$server
export MESHMIRROR_KUBE_STATE=$state
export MESHMIRROR_KUBE_ETCD=http://127.0.0.1:$etcd_port
export MESHMIRROR_KUBE_CONTROLLER_MANAGER=https://127.0.0.1:$kcm_port
EOF

k() { kubectl --kubeconfig "$admin_kc" --cache-dir "$state/kubectl-cache" "$@"; }
k apply --server-side --field-manager=meshmirror-test-kit \
  -f "$here/istio-crds.yaml" -f "$repo/deploy/crd.yaml" >"$state/logs/crds.log" 2>&1 \
  || { cat "$state/logs/crds.log" >&2; fail "kubectl apply of the CRDs failed"; }
k wait --for=condition=Established --timeout=60s \
  -f "$here/istio-crds.yaml" -f "$repo/deploy/crd.yaml" >>"$state/logs/crds.log" 2>&1 \
  || { cat "$state/logs/crds.log" >&2; fail "the CRDs did not become Established within 60 s"; }
say "$(k get crd -o name | wc -l) CRDs Established after $(elapsed) s"

# The controller manager is up when it serves /healthz and its service-account
# controller has made the default namespace's ServiceAccount (pods need it).
wait_for "kube-controller-manager /healthz" 60 kube-controller-manager \
  curl -fsS --cacert "$pki/ca.crt" "https://127.0.0.1:$kcm_port/healthz"
wait_for "ServiceAccount default/default" 60 kube-controller-manager k -n default get serviceaccount default

for n in etcd kube-apiserver kube-controller-manager; do
  alive "$n" || fail "$n exited"
done
say "control plane up in $(elapsed) s: etcd http://127.0.0.1:$etcd_port, kube-apiserver $server, kube-controller-manager https://127.0.0.1:$kcm_port; logs in $state/logs, variables in $state/env; stop with tests/kube/down.sh $state"
echo "$admin_kc"
