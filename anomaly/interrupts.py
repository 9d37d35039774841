"""Ctrl-C held back while a write to the tracking store must finish whole.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when Ctrl-C
arrives. Inside a tracking store's transaction (MLflow on SQLite) that can leave the
connection holding the database's write lock; the run's final status then waits out
the lock and is lost, so an interrupted run stays RUNNING in the MLflow UI instead of
KILLED (seen once under load in the interrupted-training test: 69 s instead of 19).
Inside :func:`deferred_ctrl_c` a Ctrl-C is remembered and raised when the block ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def deferred_ctrl_c() -> Iterator[None]:
    """Run the block to its end, then handle a Ctrl-C that arrived during it.

    The handler in place before the block (Python's own, which raises
    ``KeyboardInterrupt``, or a training's) is called once the block is left, with the
    first signal received; a second Ctrl-C during the block is handed to it at once.
    Outside the main thread, or where Ctrl-C is ignored or left to the system, the block
    runs as it is: there is nothing to hold back.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):
        yield
        return
    pending: list[tuple[int, FrameType | None]] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        if pending:
            # Pressed again: whoever insists gets the interrupt now, write or not (a long
            # upload to a slow server must not make Ctrl-C useless).
            pending.clear()  # handled here, not again as the block ends
            signal.signal(signal.SIGINT, previous)
            previous(signum, frame)
            return
        pending.append((signum, frame))

    signal.signal(signal.SIGINT, remember)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            previous(*pending[0])
