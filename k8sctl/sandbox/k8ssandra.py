"""Former name of `crds_and_identity` (kept while branches that use it are merged; import that instead)."""
from k8sctl.sandbox.crds_and_identity import *  # noqa: F401,F403
from k8sctl.sandbox.crds_and_identity import install as prepare  # noqa: F401
from k8sctl.sandbox.crds_and_identity import install_all as prepare_all  # noqa: F401
