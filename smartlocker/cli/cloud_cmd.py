"""``smartlocker cloud``: the cloud services (``ingest`` here; ``api`` and ``workers``
in their own modules)."""

from __future__ import annotations

import logging
import socket
import time
from datetime import timedelta
from typing import Any

import click

__all__ = ["cloud"]

logger = logging.getLogger(__name__)


@click.group()
def cloud() -> None:
    """Cloud services."""


@cloud.command("ingest")
@click.option(
    "--mqtt-url",
    envvar="SMARTLOCKER_MQTT_URL",
    required=True,
    help="mqtt:// or mqtts://user:pass@host:port (env SMARTLOCKER_MQTT_URL)",
)
@click.option(
    "--database-url",
    envvar="SMARTLOCKER_DATABASE_URL",
    required=True,
    help="postgresql://… (env SMARTLOCKER_DATABASE_URL)",
)
@click.option(
    "--signing-key",
    envvar="SMARTLOCKER_SIGNING_KEY",
    type=click.Path(exists=True, dir_okay=False),
    help="The cloud's Ed25519 PEM key, to sign desired states (env SMARTLOCKER_SIGNING_KEY)",
)
@click.option(
    "--client-id",
    envvar="SMARTLOCKER_INGEST_CLIENT_ID",
    default=lambda: f"ingest-{socket.gethostname()}",
    show_default="ingest-HOSTNAME",
    help="MQTT client id: keep it stable per worker so its session (and what it "
    "had not acknowledged) survives a restart",
)
@click.option(
    "--share-group",
    default="ingest",
    show_default=True,
    help="Shared-subscription group the workers split the stream in",
)
@click.option("--prefix", default="lockers", show_default=True, help="Topic prefix")
@click.option("--batch-max", default=5000, show_default=True, help="Messages per batch at most")
@click.option(
    "--batch-delay", default=0.02, show_default=True, help="Seconds a batch waits at most"
)
@click.option(
    "--writers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Database writers (threads, one connection each), each for its share of the cabinets",
)
@click.option(
    "--ack-lane/--no-ack-lane",
    default=True,
    show_default=True,
    envvar="SMARTLOCKER_INGEST_ACK_LANE",
    help="Commit acks on a writer of their own (one more connection), behind no events",
)
@click.option(
    "--heartbeat-timeout",
    default=90.0,
    show_default=True,
    help="Seconds of silence after which a cabinet is offline",
)
@click.option(
    "--flap-grace",
    default=15.0,
    show_default=True,
    help="Seconds a last will waits for a reconnect before the cabinet is offline",
)
@click.option(
    "--clock-skew-limit",
    default=20.0,
    show_default=True,
    help="Seconds a cabinet's clock may be off before its `fault` alert",
)
@click.option(
    "--metrics-port",
    type=int,
    envvar="SMARTLOCKER_INGEST_METRICS_PORT",
    help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics",
)
@click.option(
    "--storage-only",
    is_flag=True,
    hidden=True,
    help="Store and receipt without the business rules (benchmarks, tests)",
)
def ingest_cmd(
    mqtt_url: str,
    database_url: str,
    signing_key: str | None,
    client_id: str,
    share_group: str,
    prefix: str,
    batch_max: int,
    batch_delay: float,
    writers: int,
    ack_lane: bool,
    heartbeat_timeout: float,
    flap_grace: float,
    clock_skew_limit: float,
    metrics_port: int | None,
    storage_only: bool,
) -> None:
    """Turn cabinet traffic into rows, state changes and receipts (run one per worker)."""
    import psycopg

    from smartlocker.cloud.db import detect_edition
    from smartlocker.cloud.ingest import IngestSettings, WriterSettings, run_ingest
    from smartlocker.cloud.ingest.presence import PresencePolicy
    from smartlocker.cloud.ingest.seam import NoRules

    try:
        settings = IngestSettings(
            mqtt_url=mqtt_url,
            client_id=client_id,
            prefix=prefix,
            share_group=share_group,
            batch_max=batch_max,
            batch_delay=batch_delay,
        )
        from smartlocker.cloud.ingest.worker import BrokerAddress

        BrokerAddress.parse(mqtt_url)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    writer_settings = WriterSettings(
        database_url,
        writers=writers,
        ack_lane=ack_lane,
        policy=PresencePolicy(
            heartbeat_timeout=timedelta(seconds=heartbeat_timeout),
            flap_grace=timedelta(seconds=flap_grace),
        ),
    )
    # The database may be restarting while we start: wait for it a while.
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(database_url, connect_timeout=10) as conn:
                edition = detect_edition(conn)
            break
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise click.ClickException(f"database error: {exc}") from exc
            logger.warning("database not available yet (%s); retrying", exc)
            time.sleep(1)
        except psycopg.Error as exc:
            raise click.ClickException(f"database error: {exc}") from exc
    logger.info("storage edition: %s", edition.value)
    rules: Any
    deliver_factory: Any = None
    if storage_only:
        rules = NoRules()
    else:
        rules, deliver_factory = _real_rules(signing_key, clock_skew_limit)
    run_ingest(
        settings,
        writer_settings,
        rules,
        deliver_factory=deliver_factory,
        metrics_port=metrics_port,
    )


def _real_rules(signing_key: str | None, clock_skew_limit: float) -> tuple[Any, Any]:
    """The business rules and the downlink (``smartlocker.cloud.reactions``/``downlink``)."""
    from smartlocker.cloud.errors import ConfigError
    from smartlocker.cloud.ingest.seam import downlink_factory, load_rules
    from smartlocker.cloud.keys import load_keys
    from smartlocker.cloud.rules.clock import ClockPolicy

    try:
        keys = load_keys(signing_key)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    clock = ClockPolicy(limit=timedelta(seconds=clock_skew_limit))
    return load_rules(keys, clock=clock), downlink_factory(keys)


def _register_others() -> None:
    """``smartlocker cloud api`` and ``cloud workers`` live in their own modules."""
    from .cloud_api_cmd import api
    from .workers_cmd import workers

    cloud.add_command(api)
    cloud.add_command(workers)


_register_others()
