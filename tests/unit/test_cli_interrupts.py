"""Interrupts at the CLI's edge: one `error: interrupted` line and exit 130, never a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ctrl_c_during_start_up_is_one_line_and_130(tmp_path):
    """SIGINT while k8sctl's modules are still being imported (here: as typer is), as the console
    script starts it (`from k8sctl.cli import main; main()`)."""
    code = ("import os, signal, sys, importlib.abc\n"
            "class Stop(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'typer':\n"
            "            os.kill(os.getpid(), signal.SIGINT)\n"
            "        return None\n"
            "sys.meta_path.insert(0, Stop())\n"
            "sys.argv = ['k8sctl', 'clientconfig', 'list']\n"
            "from k8sctl.cli import main\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 130 and r.stderr.strip() == "error: interrupted", (r.returncode, r.stderr)

