#!/usr/bin/env bash
# Example CI job: register data-plane clusters with the K8ssandra control plane and
# push a K8ssandraCluster's datacenters, failing the job on any error.
#
# Inputs (CI secrets/variables; kubeconfig files are written by the CI system, 0600):
#   CONTROL_PLANE_KUBECONFIG  kubeconfig of the cluster running k8ssandra-operator
#   DATA_PLANE_KUBECONFIG     kubeconfig with one context per data-plane cluster
#   DATA_PLANE_CONTEXTS       space-separated context names to register
#   DATA_PLANE_SERVER_<n>     optional: server URL the operator's pods reach for context n
#   K8SSANDRA_CLUSTER         name of the K8ssandraCluster to reconcile
#
# Exit codes of k8sctl: 0 done, 1 cluster/network failure, 2 bad input. Output with
# -o json never contains a token.
set -euo pipefail

changed=false
n=0
for ctx in $DATA_PLANE_CONTEXTS; do
  n=$((n + 1))
  server_var="DATA_PLANE_SERVER_$n"
  server_flag=()
  if [ -n "${!server_var:-}" ]; then server_flag=(--server "${!server_var}"); fi
  out=$(k8sctl create-clientconfig \
          --src-kubeconfig "$DATA_PLANE_KUBECONFIG" --src-context "$ctx" \
          --dest-kubeconfig "$CONTROL_PLANE_KUBECONFIG" \
          "${server_flag[@]}" -o json)
  echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); r=d["registrations"][0]; print(r["k8sContext"], [o["action"] for o in r["objects"]])'
  if echo "$out" | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["restartsOperator"] else 1)'; then
    changed=true
  fi
done

if [ "$changed" = true ]; then
  # The operator restarts itself on ClientConfig changes (it exits; its Deployment starts it again).
  echo "ClientConfigs changed: k8ssandra-operator restarts itself to load them"
fi

# One reconcile pass, waiting for each new datacenter to become Ready before the next (a job
# cancelled while it waits resumes waiting on its next run). The default --config-source auto
# writes each cluster's config inline where its CassandraDatacenter CRD accepts it and through a
# Secret (spec.configSecret) where it does not; a schema refusal fails before any write (exit 1).
k8sctl reconcile "$K8SSANDRA_CLUSTER" --kubeconfig "$CONTROL_PLANE_KUBECONFIG" --wait --timeout 1800 -o json > reconcile.json
python3 - <<'PY'
import json
d = json.load(open("reconcile.json"))
for dc in d["datacenters"]:
    secret = f' (Secret {dc["configSecret"]["name"]}: {dc["configSecret"]["action"]})' if dc.get("configSecret") else ""
    print(f'{dc["context"] or "(control plane)"}/{dc["name"]}: {dc["action"]} ready={dc["ready"]} '
          f'config={dc["configSource"]}{secret}')
PY
