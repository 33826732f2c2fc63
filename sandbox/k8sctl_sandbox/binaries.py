"""Locate or build the control-plane binaries (etcd, kube-apiserver, kube-controller-manager).

Order: `KUBEBUILDER_ASSETS` (the envtest convention) for whatever it holds, then
the build cache (`<cache>/controlplane/kubernetes-<version>_etcd-<version>/`, one folder
per Kubernetes version, side by side), then a build from the Go modules shipped in
`sandbox/k8sctl_sandbox/gomod/` (`kubernetes-<minor>/` per supported minor, `etcd/`) through
the Go module proxy.
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

from k8sctl import interrupts
from k8sctl.errors import SandboxError, UsageError

GOMOD_DIR = Path(__file__).parent / "gomod"
NAMES = ("etcd", "kube-apiserver", "kube-controller-manager")


def _required_version(module_dir: Path, module: str) -> str:
    text = (module_dir / "go.mod").read_text()
    # `require X v1` or a line inside a `require (...)` block (go mod tidy writes either).
    m = re.search(rf"^(?:require)?\s*{re.escape(module)} (v\S+)(?:\s*//.*)?$", text, re.M)
    if not m:
        raise SandboxError(f"{module_dir / 'go.mod'} does not require {module}; the package is damaged")
    return m.group(1)


def _kubernetes_releases() -> dict[str, str]:
    """Supported minor -> the release built for it, from gomod/kubernetes-<minor>/go.mod."""
    found = {}
    for d in GOMOD_DIR.glob("kubernetes-1.*"):
        found[d.name.removeprefix("kubernetes-")] = _required_version(d, "k8s.io/kubernetes")
    return dict(sorted(found.items(), key=lambda kv: tuple(int(x) for x in kv[0].split("."))))


KUBERNETES_RELEASES = _kubernetes_releases()   # {"1.34": "v1.34.4", ...}
DEFAULT_KUBERNETES_MINOR = "1.37"
KUBERNETES_VERSION = KUBERNETES_RELEASES[DEFAULT_KUBERNETES_MINOR]  # the default release
ETCD_VERSION = _required_version(GOMOD_DIR / "etcd", "go.etcd.io/etcd/server/v3")


def kubernetes_release(minor: str | None) -> str:
    """The release built for `minor` ('1.34', ...; None: the default), e.g. 'v1.34.4'."""
    if minor is None:
        return KUBERNETES_VERSION
    text = minor.strip().removeprefix("v")
    m = re.fullmatch(r"(1\.\d+)(\.\d+)?", text)
    release = KUBERNETES_RELEASES.get(m.group(1)) if m else None
    if m is None or release is None or (m.group(2) and f"v{text}" != release):  # a patch must be the one built
        raise UsageError(f"--kubernetes-version {minor!r} is not one of {', '.join(KUBERNETES_RELEASES)} "
                         f"(the releases built: {', '.join(KUBERNETES_RELEASES.values())})")
    return release


def _minor(release: str) -> str:
    return ".".join(release.lstrip("v").split(".")[:2])


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the three control-plane programs, and where each came from."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    sources: dict[str, str]
    kubernetes_version: str | None = None  # the release asked for; None: whatever was found (default or assets)

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


def cache_dir(cache_root: Path, kubernetes_version: str = KUBERNETES_VERSION) -> Path:
    return cache_root / f"kubernetes-{kubernetes_version}_etcd-{ETCD_VERSION}"


def cached_releases(cache_root: Path | None = None) -> list[str]:
    """The Kubernetes releases whose binaries are all in the cache."""
    root = cache_root or default_cache_root()
    return [r for r in KUBERNETES_RELEASES.values() if all(_executable(cache_dir(root, r) / n) for n in NAMES)]


def _executable(p: Path) -> bool:
    return p.is_file() and os.access(p, os.X_OK)


def _reported_version(binary: Path) -> str | None:
    """What `<binary> --version` says, e.g. 'v1.37.2' ('Kubernetes v1.37.2')."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"\bv\d+\.\d+\.\d+\S*", out)
    return m.group(0) if m else None


def locate(cache_root: Path, assets_dir: str | None,
           kubernetes_version: str | None = None) -> tuple[dict[str, Path], dict[str, str], list[str]]:
    """Return the binaries found so far, where each came from, and the names still missing.

    With a `kubernetes_version` asked for, KUBEBUILDER_ASSETS' Kubernetes binaries count only
    if they report that minor; without, they are used as they are (the envtest convention)."""
    found: dict[str, Path] = {}
    sources: dict[str, str] = {}
    if assets_dir:
        for name in NAMES:
            p = Path(assets_dir) / name
            if not _executable(p):
                continue
            if kubernetes_version and name != "etcd":
                reported = _reported_version(p)
                if reported is None or _minor(reported) != _minor(kubernetes_version):
                    continue
            found[name] = p.resolve()
            sources[name] = "KUBEBUILDER_ASSETS"
    for name in NAMES:
        p = cache_dir(cache_root, kubernetes_version or KUBERNETES_VERSION) / name
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
        rc = interrupts.run_in_own_group(cmd, src, env, logf)
    if rc != 0:
        raise SandboxError(f"building {module} binaries failed (go build exit {rc}); read {log}")


def _cached_etcd(cache_root: Path) -> Path | None:
    """An etcd of ETCD_VERSION already built beside another Kubernetes version."""
    return next((p for p in sorted(cache_root.glob(f"kubernetes-*_etcd-{ETCD_VERSION}/etcd")) if _executable(p)), None)


def build_once(target: Path, complete: Callable[[Path], bool], build: Callable[[Path, Path, Path], None],
               progress: Callable[[str], None], waiting: str) -> bool:
    """Build the cache folder `target` once; True if this call built it, False if it was there.

    `complete(folder)` says whether a folder holds the whole build. Parallel callers (threads or
    processes) are serialized by `<target's parent>/.build.lock` (`waiting` is said when another
    holds it) and the check is repeated once the lock is taken. `build(work, out, log)` fills
    the empty folder `out`, with `work` (not yet created) for sources and `log`
    (`<parent>/build.log`, emptied) for its output; both live in a temporary folder that is
    renamed to `target` only when `build` returned and `complete(out)` holds, so a failed or
    interrupted build leaves no half-written cache behind."""
    root = target.parent
    if complete(target):
        return False
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(waiting)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if complete(target):
            return False
        log = root / "build.log"
        log.write_text("")
        with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as tmp:
            work, out = Path(tmp) / "src", Path(tmp) / "bin"
            out.mkdir()
            build(work, out, log)
            if not complete(out):
                raise SandboxError(f"the build did not produce everything {target.name} needs; read {log}")
            if target.exists():
                shutil.rmtree(target)
            out.rename(target)
    return True


def build(cache_root: Path, progress: Callable[[str], None] = lambda s: None,
          kubernetes_version: str = KUBERNETES_VERSION) -> Path:
    """Build all three binaries of `kubernetes_version` into the cache (once; a lock serializes
    parallel callers). An etcd already built for another version is copied, not rebuilt."""
    gomod = GOMOD_DIR / f"kubernetes-{_minor(kubernetes_version)}"
    if not (gomod / "go.mod").is_file() or _required_version(gomod, "k8s.io/kubernetes") != kubernetes_version:
        raise UsageError(f"Kubernetes {kubernetes_version} is not one k8sctl builds: "
                         f"{', '.join(KUBERNETES_RELEASES.values())}")
    if shutil.which("go") is None:
        raise SandboxError(
            "Go is not installed: install Go >= 1.26 to build the control plane, "
            "or set KUBEBUILDER_ASSETS to a folder holding etcd, kube-apiserver and kube-controller-manager"
        )
    target = cache_dir(cache_root, kubernetes_version)

    def go_build(work: Path, out: Path, log: Path) -> None:
        progress(f"first run: building the control plane from Go modules into {target} "
                 f"(about 7 minutes on 2 cores, once); log: {log}")
        etcd = _cached_etcd(cache_root)
        if etcd is not None:
            progress(f"etcd {ETCD_VERSION}: copied from {etcd.parent.name} (step 1 of 2)")
            shutil.copy2(etcd, out / "etcd")
        else:
            progress(f"go build etcd {ETCD_VERSION} (step 1 of 2)")
            _go_build("etcd", ["go.etcd.io/etcd/server/v3"], str(out / "etcd"), work, ["-ldflags", "-s -w"], log,
                      progress)
        progress(f"go build kube-apiserver and kube-controller-manager {kubernetes_version} (step 2 of 2)")
        _go_build(
            gomod.name,
            ["k8s.io/kubernetes/cmd/kube-apiserver", "k8s.io/kubernetes/cmd/kube-controller-manager"],
            str(out) + "/", work,
            ["-tags=selinux,notest", "-ldflags", f"-s -w {_version_ldflags(kubernetes_version)}"],
            log, progress,
        )
        missing = [n for n in NAMES if not _executable(out / n)]
        if missing:
            raise SandboxError(f"go build did not produce {', '.join(missing)}; read {log}")

    if build_once(target, lambda d: all(_executable(d / n) for n in NAMES), go_build, progress,
                  waiting=f"waiting for another k8sctl that is building the same binaries into {target}"):
        progress(f"built {', '.join(NAMES)} ({disk_usage(target) // 2**20} MB) into {target}")
    return target


def ensure(cache_root: Path | None = None, assets_dir: str | None = None,
           progress: Callable[[str], None] = lambda s: None, allow_build: bool = True,
           kubernetes_version: str | None = None) -> Binaries:
    """Find every binary (of `kubernetes_version`, e.g. 'v1.34.4'; None: the default release or
    what KUBEBUILDER_ASSETS holds), building the missing ones when allowed."""
    cache_root = cache_root or default_cache_root()
    found, sources, missing = locate(cache_root, assets_dir, kubernetes_version)
    if missing:
        if not allow_build:
            flag = f" --kubernetes-version {_minor(kubernetes_version)}" if kubernetes_version else ""
            raise SandboxError(
                f"control-plane binaries missing: {', '.join(missing)}; run 'k8sctl sandbox binaries{flag}' to build them"
            )
        target = build(cache_root, progress, kubernetes_version or KUBERNETES_VERSION)
        for n in missing:
            found[n] = target / n
            sources[n] = "built"
    return Binaries(found["etcd"], found["kube-apiserver"], found["kube-controller-manager"], sources, kubernetes_version)


def disk_usage(path: Path) -> int:
    """Bytes used by a file, or by every file below a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0
