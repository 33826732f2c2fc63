#!/usr/bin/env python3
"""Write sandbox/k8sctl_sandbox/gomod/kubernetes-<minor>/{go.mod,go.sum} for one Kubernetes release.

Usage: hack/kubernetes-gomod.py v1.34.4

The module builds kube-apiserver and kube-controller-manager of that release from the Go
module proxy. k8s.io/kubernetes requires its staging modules at v0.0.0, which the proxy
does not serve: each one its go.mod requires at v0.0.0 is replaced by v0.<minor>.<patch>.
The `go` and `godebug` lines are the release's own (they set runtime defaults). Then
`go mod tidy` resolves and pins every dependency (it downloads modules; it builds nothing).
"""
import json
import re
import subprocess
import sys
from pathlib import Path

GOMOD = Path(__file__).resolve().parent.parent / "k8sctl" / "sandbox" / "gomod"


def main(version: str) -> None:
    m = re.fullmatch(r"v1\.(\d+)\.(\d+)", version)
    if not m:
        sys.exit(f"{version!r} is not a Kubernetes release like v1.34.4")
    minor, patch = m.groups()
    info = json.loads(subprocess.run(["go", "list", "-m", "-json", f"k8s.io/kubernetes@{version}"],
                                     check=True, capture_output=True, text=True).stdout)
    upstream = Path(info["GoMod"]).read_text()
    go_line = re.search(r"^go (\S+)$", upstream, re.M).group(1)
    godebug = re.search(r"^godebug (\S+)$", upstream, re.M)
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+) v0\.0\.0$", upstream, re.M)))
    out = GOMOD / f"kubernetes-1.{minor}"
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "// Builds kube-apiserver and kube-controller-manager from the Go module proxy.",
        "// k8s.io/kubernetes requires its staging modules at v0.0.0, which the proxy does",
        "// not serve, so each one is replaced by its published v0.<minor>.<patch>.",
        f"// Written by hack/kubernetes-gomod.py {version}, then go mod tidy.",
        "module k8sctl.invalid/controlplane/kubernetes",
        "",
        f"go {go_line}",
        "",
        *([f"godebug {godebug.group(1)}", ""] if godebug else []),
        f"require k8s.io/kubernetes {version}",
        "",
        "tool (",
        "\tk8s.io/kubernetes/cmd/kube-apiserver",
        "\tk8s.io/kubernetes/cmd/kube-controller-manager",
        ")",
        "",
        "replace (",
        *[f"\t{mod} => {mod} v0.{minor}.{patch}" for mod in staging],
        ")",
        "",
    ]
    (out / "go.mod").write_text("\n".join(lines))
    (out / "go.sum").write_text("")
    subprocess.run(["go", "mod", "tidy"], cwd=out, check=True)
    print(f"{out}: {len(staging)} staging modules replaced")


if __name__ == "__main__":
    main(sys.argv[1])
