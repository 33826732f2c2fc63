"""Locate or build the control-plane binaries (etcd, kube-apiserver, kube-controller-manager).

Order: `KUBEBUILDER_ASSETS` (the envtest convention) for whatever it holds, then
the build cache (`<cache>/controlplane/<versions>/`), then a build from the Go
modules shipped in `k8sctl/sandbox/gomod/` through the Go module proxy.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from k8sctl.errors import SandboxError
from k8sctl.sandbox import interrupts

GOMOD_DIR = Path(__file__).parent / "gomod"
NAMES = ("etcd", "kube-apiserver", "kube-controller-manager")


def _required_version(module_dir: Path, module: str) -> str:
    text = (module_dir / "go.mod").read_text()
    # `require X v1` or a line inside a `require (...)` block (go mod tidy writes either).
    m = re.search(rf"^(?:require)?\s*{re.escape(module)} (v\S+)(?:\s*//.*)?$", text, re.M)
    if not m:
        raise SandboxError(f"{module_dir / 'go.mod'} does not require {module}; the package is damaged")
    return m.group(1)


KUBERNETES_VERSION = _required_version(GOMOD_DIR / "kubernetes", "k8s.io/kubernetes")
ETCD_VERSION = _required_version(GOMOD_DIR / "etcd", "go.etcd.io/etcd/server/v3")


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the three control-plane programs, and where each came from."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    sources: dict[str, str]

    def as_dict(self) -> dict[str, str]:
        return {
            "etcd": str(self.etcd),
            "kube-apiserver": str(self.kube_apiserver),
            "kube-controller-manager": str(self.kube_controller_manager),
        }


def default_cache_root(env: Mapping[str, str] | None = None) -> Path:
    variables = os.environ if env is None else env
    base = variables.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "k8sctl" / "controlplane"


def cache_dir(cache_root: Path) -> Path:
    return cache_root / f"kubernetes-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}"


def _executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def locate(cache_root: Path, assets_dir: str | None) -> tuple[dict[str, Path], dict[str, str], list[str]]:
    """Return the binaries found so far, where each came from, and the names still missing."""
    found: dict[str, Path] = {}
    sources: dict[str, str] = {}
    if assets_dir:
        for name in NAMES:
            p = Path(assets_dir) / name
            if _executable(p):
                found[name] = p.resolve()
                sources[name] = "KUBEBUILDER_ASSETS"
    for name in NAMES:
        p = cache_dir(cache_root) / name
        if name not in found and _executable(p):
            found[name] = p
            sources[name] = "cache"
    missing = [n for n in NAMES if n not in found]
    return found, sources, missing


def _version_ldflags(version: str) -> str:
    m = re.match(r"v(\d+)\.(\d+)\.", version)
    major, minor = (m.group(1), m.group(2)) if m else ("1", "0")
    flags = []
    # Without these /version reports v0.0.0-master, which clients would show.
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X '{pkg}.gitVersion={version}'",
            f"-X '{pkg}.gitMajor={major}'",
            f"-X '{pkg}.gitMinor={minor}'",
            f"-X '{pkg}.gitTreeState=clean'",
        ]
    return " ".join(flags)


def _go_build(module: str, packages: list[str], output: str, work: Path,
              extra_args: list[str], log: Path, progress: Callable[[str], None]) -> None:
    src = work / module
    src.mkdir(parents=True, exist_ok=True)
    for f in ("go.mod", "go.sum"):
        shutil.copy2(GOMOD_DIR / module / f, src / f)
    env = dict(os.environ, CGO_ENABLED="0")
    cmd = ["go", "build", "-trimpath", *extra_args, "-o", output, *packages]
    with open(log, "ab") as logf:
        logf.write(("$ " + " ".join(cmd) + "\n").encode())
        logf.flush()
        # Its own process group, so that go and its compilers stop together on any way out.
        with interrupts.deferred():
            proc = subprocess.Popen(cmd, cwd=src, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        try:
            rc = proc.wait()
        except BaseException:
            with interrupts.deferred(reraise=False, notice=interrupts.CLEANUP_NOTICE):
                interrupts.stop_group(proc)
            raise
    if rc != 0:
        raise SandboxError(f"building {module} binaries failed (go build exit {rc}); read {log}")


def build(cache_root: Path, progress: Callable[[str], None] = lambda s: None) -> Path:
    """Build all three binaries into the cache (once; a lock serializes parallel callers)."""
    if shutil.which("go") is None:
        raise SandboxError(
            "Go is not installed: install Go >= 1.26 to build the control plane, "
            "or set KUBEBUILDER_ASSETS to a folder holding etcd, kube-apiserver and kube-controller-manager"
        )
    target = cache_dir(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    with open(cache_root / ".build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another k8sctl that is building the same binaries into {target}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if all(_executable(target / n) for n in NAMES):
            return target
        log = cache_root / "build.log"
        log.write_text("")
        progress(f"first run: building the control plane from Go modules into {target} "
                 f"(about 7 minutes on 2 cores, once); log: {log}")
        # Build into a temporary folder and rename at the end, so an interrupted
        # build never leaves a half-written cache behind.
        with tempfile.TemporaryDirectory(dir=cache_root, prefix=".build-") as tmp:
            work, out = Path(tmp) / "src", Path(tmp) / "bin"
            out.mkdir()
            progress(f"go build etcd {ETCD_VERSION} (step 1 of 2)")
            _go_build("etcd", ["go.etcd.io/etcd/server/v3"], str(out / "etcd"), work, ["-ldflags", "-s -w"], log, progress)
            progress(f"go build kube-apiserver and kube-controller-manager {KUBERNETES_VERSION} (step 2 of 2)")
            _go_build(
                "kubernetes",
                ["k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kube-controller-manager"],
                str(out) + "/", work,
                ["-tags=selinux,notest", "-ldflags", f"-s -w {_version_ldflags(KUBERNETES_VERSION)}"],
                log, progress,
            )
            missing = [n for n in NAMES if not _executable(out / n)]
            if missing:
                raise SandboxError(f"go build did not produce {', '.join(missing)}; read {log}")
            if target.exists():
                shutil.rmtree(target)
            out.rename(target)
            progress(f"built {', '.join(NAMES)} ({disk_usage(target) // 2**20} MB) into {target}")
    return target


def ensure(cache_root: Path | None = None, assets_dir: str | None = None,
           progress: Callable[[str], None] = lambda s: None, allow_build: bool = True) -> Binaries:
    """Find every binary, building the missing ones when allowed."""
    cache_root = cache_root or default_cache_root()
    found, sources, missing = locate(cache_root, assets_dir)
    if missing:
        if not allow_build:
            raise SandboxError(
                f"control-plane binaries missing: {', '.join(missing)}; run 'k8sctl sandbox binaries' to build them"
            )
        target = build(cache_root, progress)
        for n in missing:
            found[n] = target / n
            sources[n] = "built"
    return Binaries(found["etcd"], found["kube-apiserver"], found["kube-controller-manager"], sources)


def disk_usage(path: Path) -> int:
    """Bytes used by a file, or by every file below a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0
