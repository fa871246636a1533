"""Private PostgreSQL clusters for the tests, started with scripts/pg-cluster.sh."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from smartlocker.embedded.pg_cluster import start_cluster, stop_cluster

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"

__all__ = ["PgCluster", "timescaledb_prefix"]


def timescaledb_prefix() -> Path:
    """The cached TimescaleDB build (built on first use, < 1 min)."""
    given = os.environ.get("SMARTLOCKER_TIMESCALEDB_PREFIX")
    if given:
        return Path(given)
    out = subprocess.run(
        [str(SCRIPTS / "build-timescaledb.sh")], check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


class PgCluster:
    """A throw-away cluster: plain PostgreSQL, or with TimescaleDB preloaded."""

    def __init__(self, flavor: str, port: int | None = None) -> None:
        self.flavor = flavor
        #: None until the first start chooses it; from then on a restart keeps it.
        self._port = port
        self._base = Path(tempfile.mkdtemp(prefix=f"slpg-{flavor}-", dir="/tmp"))
        self._base.chmod(0o711)  # the server runs as `postgres` when we are root
        self.datadir = self._base / "data"
        self._prefix = timescaledb_prefix() if flavor == "timescaledb" else None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the cluster has not started yet")
        return self._port

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        """Start the server; on its first start on another free port if its own was
        taken meanwhile (:func:`~smartlocker.embedded.pg_cluster.start_cluster`)."""
        self._port, _ = start_cluster(
            SCRIPTS / "pg-cluster.sh",
            self.datadir,
            port=self._port,
            timescaledb=self._prefix,
        )

    def stop(self) -> None:
        stop_cluster(SCRIPTS / "pg-cluster.sh", self.datadir)

    def restart(self) -> None:
        self.stop()
        self.start()

    def create_database(self) -> str:
        """A fresh database (with the extension on the TimescaleDB flavor); its URL."""
        name = f"smartlocker_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if self.flavor == "timescaledb":
            with psycopg.connect(self.url(name), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self._base, ignore_errors=True)
