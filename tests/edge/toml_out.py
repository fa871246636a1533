"""Write a cabinet config dict as TOML (the simulators' writer, as the demo writes it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smartlocker.simulators._toml import dumps

__all__ = ["dumps", "write"]


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(dumps(data))
    return path
