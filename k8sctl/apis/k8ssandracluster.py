"""k8ssandra-operator's K8ssandraCluster API (k8ssandra.io/v1alpha1): its one home.

What reconcile reads of it (the spec) is read in `k8sctl.datacenters`; here are its names and
version. Pure: no IO.
"""
from __future__ import annotations

from k8sctl.kube import Resource

GROUP = "k8ssandra.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "K8ssandraCluster"
RESOURCE = Resource(GROUP, VERSION, "k8ssandraclusters", KIND)
