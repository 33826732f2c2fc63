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

if k8sctl reconcile --help >/dev/null 2>&1; then
  step "applying the demo K8ssandraCluster in the control plane and reconciling it"
  HERE=$(cd "$(dirname "$0")" && pwd)
  k8sctl reconcile demo --kubeconfig "$KC/k8ssandra-0.yaml" --apply-file "$HERE/k8ssandracluster-demo.yaml" \
    --wait --timeout 60 --demo-mark-ready
  step "running reconcile again changes nothing"
  k8sctl reconcile demo --kubeconfig "$KC/k8ssandra-0.yaml"
  step "CassandraDatacenters found in each cluster"
  k8sctl sandbox datacenters --dir "$DIR/sandbox"
fi
