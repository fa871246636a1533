"""``smartlocker cloud workers``: background workers (notifications, webhooks)."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import click

from smartlocker.cloud.notify import NotificationWorker, RetryPolicy, channels_from_env

__all__ = ["workers"]

logger = logging.getLogger(__name__)


@click.command()
@click.option(
    "--database-url", envvar="SMARTLOCKER_DATABASE_URL", required=True, help="postgresql://…"
)
@click.option("--poll", default=1.0, show_default=True, help="Seconds between empty polls.")
@click.option("--lease", default=60.0, show_default=True, help="Seconds a claimed message is ours.")
@click.option("--first-retry", default=5.0, show_default=True, help="First backoff, seconds.")
@click.option("--max-attempts", default=10, show_default=True)
def workers(
    database_url: str, poll: float, lease: float, first_retry: float, max_attempts: int
) -> None:
    """Deliver queued notifications and operator webhooks until SIGTERM/Ctrl-C."""
    try:
        channels = channels_from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    worker = NotificationWorker(
        database_url,
        channels,
        policy=RetryPolicy(first_delay_s=first_retry, max_attempts=max_attempts),
        lease_s=lease,
        poll_s=poll,
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %s: stopping after the current message", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logger.info("notification worker started with channels: %s", ", ".join(sorted(channels)))
    worker.run()
