"""k8sctl-sandbox: real local Kubernetes control planes (and the real k8ssandra-operator) for trying
and testing k8sctl. It uses k8sctl's modules; k8sctl never imports it."""

__version__ = "0.1.0"
