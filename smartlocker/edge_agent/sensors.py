"""Temperatures read from files (the SoC's thermal zone, 1-Wire sensors)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

__all__ = ["read_temperature"]

logger = logging.getLogger(__name__)

_W1_RE = re.compile(r"t=(-?\d+)")


def read_temperature(path: Path) -> float | None:
    """°C from ``path``: a w1 ``t=millidegrees`` line, millidegrees, or degrees.

    None if the file cannot be read or parsed (a missing sensor is not an error).
    """
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    match = _W1_RE.search(text)
    if match:
        if "NO" in text.splitlines()[0]:  # w1_slave: CRC check failed
            return None
        return int(match.group(1)) / 1000.0
    try:
        value = float(text)
    except ValueError:
        logger.debug("unreadable temperature in %s: %r", path, text[:40])
        return None
    return value / 1000.0 if abs(value) > 200 else value
