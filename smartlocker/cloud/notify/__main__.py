"""``python -m smartlocker.cloud.notify``: the same as ``smartlocker cloud workers``."""

import logging

from smartlocker.cli.workers_cmd import workers

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
workers()
