"""`k8sctl reconcile`."""


def register(app) -> None:
    pass
