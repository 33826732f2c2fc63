"""k8sctl: ClientConfig and multi-cluster tooling for K8ssandra."""

__version__ = "0.1.0"
