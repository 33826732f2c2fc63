"""One module per Kubernetes API k8sctl reads or writes: its names, versions and status rules."""
