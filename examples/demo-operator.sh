#!/usr/bin/env bash
# The real k8ssandra-operator and k8sctl side by side on the sandbox: cluster 0 runs the
# operator (built from its source by `sandbox up --operator`), clusters 1..3 are data planes
# registered with create-clientconfig. No cass-operator runs: `sandbox mark-ready` stands in.
set -euo pipefail
DIR=${DEMO_DIR:-$(mktemp -d -t k8sctl-demo-operator-XXXX)}
HERE=$(cd "$(dirname "$0")" && pwd)
SB="$DIR/sandbox"
KC="$SB/kubeconfigs"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
restarts() { k8sctl sandbox status --dir "$SB" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["operator"]["restarts"])'; }
# Every ClientConfig change restarts the operator: wait until it serves again.
serving() { python3 -c 'import sys; from pathlib import Path; from k8sctl_sandbox import operator
operator.wait_ready(Path(sys.argv[1]).resolve(), timeout=60)' "$SB"; }
trap 'step "tearing down"; k8sctl sandbox down --dir "$SB"; [ -n "${DEMO_DIR:-}" ] || rm -rf "$DIR"' EXIT

step "starting 4 clusters and the real operator on kind-k8ssandra-0"
k8sctl sandbox up --clusters 4 --operator --dir "$SB"
k8sctl sandbox status --dir "$SB" | tail -1

register() {
  k8sctl create-clientconfig --src-kubeconfig "$KC/k8ssandra-$1.yaml" --dest-kubeconfig "$KC/k8ssandra-0.yaml" \
    --in-cluster-kubeconfig "$KC/updated/k8ssandra-$1.yaml" --output-dir "$DIR/clientconfigs" -o json \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print("  " + ", ".join(o["kind"] + " " + o["action"] for o in d["registrations"][0]["objects"]))'
}
for i in 1 2 3; do
  step "registering kind-k8ssandra-$i: the operator restarts to load it"
  register "$i"
  sleep 2; serving
  echo "  operator restarts so far: $(restarts)"
done

step "registering kind-k8ssandra-1 again with the same input: nothing written, no restart"
register 1
sleep 3; serving
echo "  operator restarts so far: $(restarts)"
k8sctl sandbox logs operator-supervisor --dir "$SB"

step "applying the demo K8ssandraCluster on the control plane (checked by the operator's webhook)"
k8sctl sandbox apply --dir "$SB" --context kind-k8ssandra-0 -f "$HERE/k8ssandracluster-demo.yaml"
for _ in $(seq 100); do
  k8sctl sandbox datacenters --dir "$SB" -o json | grep -q '"dc1"' && break
  sleep 0.2
done
step "the operator created dc1 in kind-k8ssandra-1"
k8sctl sandbox datacenters --dir "$SB"

step "standing in for cass-operator: marking dc1 Ready"
k8sctl sandbox mark-ready --dir "$SB"
sleep 3
step "the operator went on, and stops where it needs Cassandra pods (none run here)"
k8sctl sandbox logs operator --dir "$SB" | grep -o '"error": "no pods in READY state[^"]*"' | tail -1

step "side by side: what k8sctl reconcile would do with the operator's dc1 and what it made beside it (dry run)"
# k8sctl builds the same fields (tests/integration/test_fidelity.py): the operator's dc1, its metrics
# agent ConfigMap and its superuser Secret are unchanged for k8sctl; dc2 would be created next.
k8sctl reconcile demo --kubeconfig "$KC/k8ssandra-0.yaml" --dry-run -o json > "$DIR/reconcile-dry-run.json"
python3 - "$DIR/reconcile-dry-run.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["datacenters"]:
    agent = r["metricsAgentConfigMap"]["action"] or "written with it"
    print(f"  {r['name']}: {r['action']}; metrics agent ConfigMap {agent}")
copies = d["superuserSecret"]["copies"]
print("  superuser Secret: " + ", ".join(f"{c['context'] or '(control plane)'} {c['action']}" for c in copies))
PY

step "operator status"
k8sctl sandbox status --dir "$SB" | tail -1
