"""Which storage engine the database offers: plain PostgreSQL or TimescaleDB.

The same schema works on all three; the full (TSL) edition adds continuous
aggregates, compression and retention policies, the others use the project's
own rollups and retention job.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

import psycopg

__all__ = ["Edition", "detect_edition", "report_edition"]

logger = logging.getLogger(__name__)


class Edition(StrEnum):
    POSTGRESQL = "postgresql"
    TIMESCALEDB_APACHE = "timescaledb-apache"
    TIMESCALEDB_TSL = "timescaledb-tsl"

    @property
    def has_timescaledb(self) -> bool:
        return self is not Edition.POSTGRESQL

    @property
    def has_tsl_features(self) -> bool:
        """Continuous aggregates, compression and retention policies."""
        return self is Edition.TIMESCALEDB_TSL

    @property
    def uses(self) -> str:
        """What the project uses on this edition (said at start-up)."""
        if self is Edition.TIMESCALEDB_TSL:
            return (
                "hypertables, time_bucket, continuous aggregates, compression and"
                " retention policies"
            )
        if self is Edition.TIMESCALEDB_APACHE:
            return "hypertables, time_bucket, the project's rollups and retention job"
        return "plain tables, date_bin, the project's rollups and retention job"


def detect_edition(conn: psycopg.Connection[Any]) -> Edition:
    """Look at the connected database (the extension must be created in it)."""
    row = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    if row is None:
        return Edition.POSTGRESQL
    license_row = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
    license_name = license_row[0] if license_row else None
    if license_name == "timescale":
        return Edition.TIMESCALEDB_TSL
    return Edition.TIMESCALEDB_APACHE


def report_edition(conn: psycopg.Connection[Any]) -> Edition:
    """Detect the edition and log what will be used: call once at start-up."""
    edition = detect_edition(conn)
    logger.info("storage edition: %s, using %s", edition.value, edition.uses)
    return edition
