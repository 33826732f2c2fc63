#!/usr/bin/env bash
# The whole multi-cluster story on one machine, no Docker, no kind:
# 4 real Kubernetes control planes; cluster 0 is the K8ssandra control plane,
# clusters 1..3 are data planes registered to it with create-clientconfig.
set -euo pipefail
DIR=${DEMO_DIR:-$(mktemp -d -t k8sctl-demo-XXXX)}
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
# The artifacts hold tokens: remove them with the clusters unless DEMO_DIR was chosen.
trap 'step "tearing down"; k8sctl sandbox down --dir "$DIR/sandbox"; [ -n "${DEMO_DIR:-}" ] || rm -rf "$DIR"' EXIT

step "starting 4 clusters, prepared as if k8ssandra-operator were installed"
k8sctl sandbox up --clusters 4 --k8ssandra --dir "$DIR/sandbox"
KC="$DIR/sandbox/kubeconfigs"

for i in 1 2 3; do
  step "registering kind-k8ssandra-$i with the control plane (kind-k8ssandra-0)"
  k8sctl create-clientconfig \
    --src-kubeconfig "$KC/k8ssandra-$i.yaml" \
    --dest-kubeconfig "$KC/k8ssandra-0.yaml" \
    --in-cluster-kubeconfig "$KC/updated/k8ssandra-$i.yaml" \
    --output-dir "$DIR/clientconfigs"
done

step "running it again changes nothing"
k8sctl create-clientconfig --src-kubeconfig "$KC/k8ssandra-1.yaml" --dest-kubeconfig "$KC/k8ssandra-0.yaml" \
  --in-cluster-kubeconfig "$KC/updated/k8ssandra-1.yaml" --output-dir "$DIR/clientconfigs" -o json \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); print("changed:", d["changed"], [o["action"] for o in d["registrations"][0]["objects"]])'

step "artifacts (credential files are 0600)"
ls -l "$DIR/clientconfigs"

HERE=$(cd "$(dirname "$0")" && pwd)
step "applying the demo K8ssandraCluster (dc1..dc3 in kind-k8ssandra-1..3) in the control plane"
k8sctl sandbox apply --dir "$DIR/sandbox" --context kind-k8ssandra-0 -f "$HERE/k8ssandracluster-demo.yaml"

# Like the operator, reconcile creates one new datacenter per pass and only once the
# earlier ones are Ready. No cass-operator runs in the sandbox, so `sandbox mark-ready`
# stands in for it between passes (it sets the Ready condition cass-operator would).
for pass in 1 2 3; do
  step "reconcile pass $pass"
  k8sctl reconcile demo --kubeconfig "$KC/k8ssandra-0.yaml"
  step "standing in for cass-operator: marking the new datacenter Ready"
  k8sctl sandbox mark-ready --dir "$DIR/sandbox"
done

step "reconcile again: every datacenter unchanged, nothing written"
k8sctl reconcile demo --kubeconfig "$KC/k8ssandra-0.yaml"

step "CassandraDatacenters found in each cluster"
k8sctl sandbox datacenters --dir "$DIR/sandbox"
