"""``smartlocker demo``: the whole system on this machine, with people at work."""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

import click

__all__ = ["demo"]

logger = logging.getLogger(__name__)


@click.command()
@click.option(
    "--database-url",
    envvar="SMARTLOCKER_DATABASE_URL",
    help="Use this PostgreSQL (default: an embedded server in the work dir).",
)
@click.option(
    "--api-port",
    type=int,
    default=8080,
    show_default=True,
    help="The API listens on 127.0.0.1:PORT (0: any free port).",
)
@click.option(
    "--broker",
    "broker_kind",
    type=click.Choice(["auto", "mosquitto", "python"]),
    default="auto",
    show_default=True,
    help="MQTT broker: the system's mosquitto, the in-process Python broker, or "
    "auto (mosquitto if installed, else python).",
)
@click.option("--cabinets", default=3, show_default=True, help="Virtual cabinets to run.")
@click.option(
    "--day", "day_s", default=300.0, show_default=True, help="Real seconds one simulated day lasts."
)
@click.option("--parcels-per-day", default=40, show_default=True)
@click.option("--duration", default=0.0, help="Stop after this many seconds (0: Ctrl-C).")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    help="Keep logs and state here (default: a fresh temporary directory).",
)
def demo(
    database_url: str | None,
    api_port: int,
    broker_kind: str,
    cabinets: int,
    day_s: float,
    parcels_per_day: int,
    duration: float,
    workdir: Path | None,
) -> None:
    """Broker, database, cloud, virtual cabinets and couriers/recipients, all local."""
    from smartlocker.simulators.api_client import ApiProblem
    from smartlocker.simulators.scenario import Scenario, ScenarioConfig
    from smartlocker.simulators.stack import Stack, StackError

    # The people's progress lines tell the story; the components' INFO chatter would bury them.
    for noisy in ("smartlocker.edge_agent", "smartlocker.simulators", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    work = workdir or Path(tempfile.mkdtemp(prefix="smartlocker-demo-"))
    stack = Stack(
        work, database_url=database_url, api_port=api_port or None, broker_kind=broker_kind
    )
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    click.echo(f"starting the demo in {work} …")
    try:
        stack.start()
        stack.provision("demo", "Demo station", cabinets)
    except (StackError, ApiProblem) as exc:
        raise click.ClickException(f"the demo did not start: {exc}") from exc
    assert stack.api is not None
    assert stack.inbox is not None
    url = stack.api.base_url
    click.echo(f"""
smartlocker demo is running.

  dashboard:  {url}/dashboard/   (sign in with the admin key below)
  API:        {url}/api/v1   (OpenAPI: {url}/api/v1/openapi.json)
  broker:     {stack.broker_description}
  admin key:  {stack.admin_key}
  kiosks:     {", ".join(c.kiosk_url for c in stack.cabinets)}
  logs:       {work}

Try:
  export KEY={stack.admin_key}
  curl -s -H "Authorization: Bearer $KEY" {url}/api/v1/parcels?site=demo
  curl -s -H "Authorization: Bearer $KEY" {url}/api/v1/cabinets/demo-01
  curl -s -H "Authorization: Bearer $KEY" "{url}/api/v1/events?site=demo&limit=5"

Couriers and recipients are at work (one day = {day_s:.0f} s). Ctrl-C stops everything.
""")
    scenario = Scenario(
        ScenarioConfig(
            site="demo",
            day_s=day_s,
            # The whole plan is drawn up front: enough days for the run (or 100 days,
            # over eight hours at the default pace, until Ctrl-C).
            days=duration / day_s if duration else 100,
            parcels_per_day=parcels_per_day,
            settle_s=0,
        ),
        stack.api,
        {c.id: c.kiosk_url for c in stack.cabinets},
        stack.inbox,
        on_progress=lambda line: click.echo(f"  {time.strftime('%H:%M:%S')} {line}"),
    )
    runner = threading.Thread(target=scenario.run, name="scenario", daemon=True)
    runner.start()
    try:
        stop.wait(duration or None)
    finally:
        click.echo("stopping …")
        scenario.stop()
        runner.join(30)
        summary = scenario.summary
        stack.wait_drained(15)  # the cabinets' outboxes into the database, before counting
        summary.events_produced = stack.events_produced()
        summary.events_stored = stack.events_stored()
        stack.stop()
    for line in summary.lines():
        click.echo(f"  {line}")
