"""The JaxPM 0.1.6 peer of the jpm-core benchmarks: its own virtual environment, built on demand.

`shared/peers/setup_jaxpm.sh` installs JaxPM from PyPI into `.peers/jaxpm`; the benchmarks run the
peer's scripts with that interpreter on the CPU, without the parent's `XLA_FLAGS`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "peers"
PEER_VENV = ROOT / ".peers" / "jaxpm"


def peer_python() -> Path | None:
    """The peer venv's interpreter, building the venv first if needed; `None` without the setup
    script (then the benchmarks run without the peer)."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        setup = SHARED / "setup_jaxpm.sh"
        if not setup.exists():
            return None
        subprocess.run(["bash", str(setup), str(PEER_VENV)], check=True)
    return python


def peer_env() -> dict:
    """The environment of a peer process: CPU only, no fake-device flags."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    return env
