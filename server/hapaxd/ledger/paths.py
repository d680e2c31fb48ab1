"""Where the usage ledger lives when the config names no path: usage.db in the state directory,
$HAPAX_STATE_DIR, else $XDG_STATE_HOME/hapax, else ~/.local/state/hapax."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def ledger_path(configured: str, environ: Mapping[str, str] | None = None) -> Path:
    """`configured` (ledger.path), or usage.db in the state directory."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ if environ is None else environ
    if env.get("HAPAX_STATE_DIR"):
        base = Path(env["HAPAX_STATE_DIR"])
    elif env.get("XDG_STATE_HOME"):
        base = Path(env["XDG_STATE_HOME"]) / "hapax"
    else:
        base = Path.home() / ".local" / "state" / "hapax"
    return base.expanduser() / "usage.db"
