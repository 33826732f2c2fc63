"""Former grab bag, split by what each piece does (kept while branches that import it are merged):
`sandbox.manifests` (apply), `sandbox.cassandradatacenters` (list, mark Ready)."""
from k8sctl.sandbox.cassandradatacenters import list_datacenters, mark_ready, ready_status  # noqa: F401 (from apis)
from k8sctl.sandbox.manifests import apply_file  # noqa: F401
