"""reconcile's text report prints data as it is: rich markup in data is escaped (no cluster)."""
from __future__ import annotations

from k8sctl.cli import reconcile as cli_reconcile

IPV6 = "https://[fd00::5]:6443"


def report(**row) -> dict:
    base = {"context": "kind-k8ssandra-1", "namespace": "k8ssandra-operator", "name": "dc1", "action": "error",
            "ready": None, "cassandraOperatorProgress": None, "configSource": "inline"}
    return {"k8ssandraCluster": "demo[1]", "namespace": "k8ssandra-operator", "dryRun": False, "failed": True,
            "brokenClientConfigs": [], "configSources": {"[bold]ctx": {"source": "secret", "reason": "auto: [red]x[/]"}},
            "datacenters": [{**base, **row}]}


def test_data_in_brackets_prints_as_itself(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    cli_reconcile._text(report(context=IPV6, error=f"cannot reach the API server of context 'c' at {IPV6}: refused",
                               cassandraOperatorProgress="[Updating]",
                               configSecret={"name": "s", "keys": ["config"], "action": "[created]"},
                               drift=["metadata.labels.[x]", "spec.size"]))
    out = capsys.readouterr().out
    assert f"│ {IPV6} " in out  # the table cell
    assert f"dc1: cannot reach the API server of context 'c' at {IPV6}: refused" in out
    assert "[Updating]" in out and "K8ssandraCluster k8ssandra-operator/demo[1]" in out
    assert "config source in [bold]ctx: secret (auto: [red]x[/])" in out
    assert "dc1: config Secret k8ssandra-operator/s (key config) [created]" in out
    assert "dc1: fields k8sctl owns were changed out of band, restored: metadata.labels.[x], spec.size" in out
    assert "https://:6443" not in out
