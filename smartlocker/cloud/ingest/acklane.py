"""The ack lane: commands' acks committed by a writer of their own, behind no event.

An API request may be waiting for an ack (``?wait=``: the NOTIFY of the command's
outcome wakes it). On the normal path an ack waits for its batch (the batching
delay) and for the writer of its cabinet, which may be busy committing that
cabinet's events: a COPY, the rules, a commit. So the worker hands acks
(``lockers/+/acks``) to this writer at once, with its own thread and database
connection, and each PUBACK still goes out only after its ack committed.

One transaction per batch of acks, in pipeline mode, in two round trips when
the acks succeed (five or six on the normal path): ``BEGIN`` and each command's
``UPDATE … RETURNING`` (which, for an ``opened`` ack, also says whether its
compartment has alerts a success clears) in the first; ``last_seen``, dead
letters and ``COMMIT`` in the second. What the results call for is done between
the two, at the cost it has on the normal path: the clearing of such alerts where
some are open, the webhook notification of a cleared alert, the alert of a failed
command. (Looking up a cabinet, once a minute, costs two more.) Presence is
touched last and without waiting (``SKIP LOCKED``): an events transaction of
the same cabinet holds its presence rows until it commits (and is touching
them itself, at nearly the same time), and a lane that held presence rows while
waiting for an alert row could deadlock with it. Refused acks (malformed,
another cabinet's, unknown cabinet) are dead letters with their reason, in the
same transaction, as on the normal path.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Sequence
from typing import Any

from . import presence
from .deadletter import write_dead_letters
from .intake import Inbound, Sorted, sort_batch
from .writer import Outcome, Writer

__all__ = ["AckLane"]

logger = logging.getLogger(__name__)


class AckLane(Writer):
    """A :class:`Writer` for acks only: fewer round trips, no wait for presence rows.

    Anything else that reaches it (a payload of another kind on an acks topic
    decodes to a dead letter, so nothing should) goes the normal writer's way.
    """

    #: BEGIN and COMMIT go inside the pipeline (see :meth:`_commit`).
    AUTOCOMMIT = True

    def _next(self, timeout: float) -> tuple[list[Inbound], Sorted | None] | None:
        """The acks queued while the last transaction ran, all in one batch.

        Each read from the socket is submitted at once, so under load acks queue
        up one by one behind the transaction in progress: one transaction for all
        of them, not one each.
        """
        first = super()._next(timeout)
        if first is None:
            return None
        batch, sorted_ = first
        while True:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                self._queue.put(None)  # stop, after this batch
                break
            if sorted_ is not None:
                batch, sorted_ = list(batch), None  # decoded again, as one
            batch += more[0]
        return batch, sorted_

    def _commit(self, batch: Sequence[Inbound], sorted_: Sorted | None = None) -> Outcome:
        if sorted_ is None:
            sorted_ = sort_batch(batch, self.topics)
        if sorted_.events or sorted_.telemetry or sorted_.statuses or sorted_.reported:
            return super()._commit(batch, sorted_)
        started = time.perf_counter()
        conn = self._connection()
        now = self.clock()
        outcome = Outcome(items=batch)
        effects: list[Any] = []
        # BEGIN and COMMIT by hand on an autocommit connection: in pipeline mode
        # ``conn.transaction()`` (or psycopg's implicit BEGIN) waits for its BEGIN,
        # and before its COMMIT for the statements queued, two more round trips.
        # Here BEGIN goes with the acks' statements, whose results the rules read
        # all at once (one round trip), and COMMIT with the last ones, in the
        # pipeline's Sync at its end; an error anywhere rolls back.
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                self._refuse_unknown(conn, sorted_)
                acks = sorted(sorted_.acks, key=lambda a: a.cabinet)
                if acks:
                    effects.append(self.rules.on_lane_acks(conn, acks, now))
                    due = self._due_touches({a.cabinet for a in acks}, now)
                    presence.touch_nowait(conn, due, now)
                write_dead_letters(conn, sorted_.dead)
                conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        outcome.dead = len(sorted_.dead)
        outcome.committed_at = time.time()
        self._account(sorted_, outcome, time.perf_counter() - started)
        self._deliver(conn, effects)
        return outcome
