"""Cloud ingest: MQTT traffic → rows → rules → receipts (asyncio + gmqtt + psycopg).

:mod:`.worker` (MQTT side), :mod:`.batcher`, :mod:`.intake` and :mod:`.fastpath`
(decoding), :mod:`.writer` (the transaction), :mod:`.shards` (several writers) and
:mod:`.acklane` (acks on a writer of their own),
:mod:`.receipts` (committed seq per cabinet) and :mod:`.cursors` (where it is kept),
:mod:`.presence`, :mod:`.deadletter`, :mod:`.metrics`; :func:`run_ingest` wires them.
"""

from .app import run_ingest
from .deadletter import Reason
from .metrics import IngestMetrics
from .worker import IngestSettings, IngestWorker
from .writer import Writer, WriterSettings

__all__ = [
    "IngestMetrics",
    "IngestSettings",
    "IngestWorker",
    "Reason",
    "Writer",
    "WriterSettings",
    "run_ingest",
]
