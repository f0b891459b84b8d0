"""A stopped job ends its MLflow runs as KILLED before it exits.

``ray job stop`` sends SIGTERM to the job's driver and its child processes, then SIGKILL a few
seconds later (``RAY_JOB_STOP_WAIT_TIME_S``, 3 s by default). ``ray.init`` makes SIGTERM exit
the driver at once; the tracking writer dies with the driver and the runs would stay RUNNING
forever. While a driver holds a tracking writer (:func:`raylm.tracking.writer.start_writer`),
SIGTERM first asks each of its writers to end the open runs as KILLED (one actor call per
writer, well inside the grace period), then does what the handler before it did (Ray's: exit).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable

STOPPED_MESSAGE = "the job was stopped (SIGTERM, e.g. `ray job stop`)"

_previous: list = []  # the handler that was in place before ours, while ours is installed
_on_stop: list[Callable[[str, str], object]] = []  # what ends the open runs: (status, error) -> ...


def install_sigterm_handler(end_runs: Callable[[str, str], object]) -> None:
    """Install the handler that calls ``end_runs("KILLED", message)`` on SIGTERM (idempotent; main thread only)."""
    if _previous or threading.current_thread() is not threading.main_thread():
        return
    _on_stop[:] = [end_runs]
    _previous.append(signal.signal(signal.SIGTERM, _on_sigterm))


def remove_sigterm_handler() -> None:
    if _previous and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _previous.pop())


def _on_sigterm(signum, frame) -> None:
    previous = _previous[0] if _previous else signal.SIG_DFL
    end_runs = _on_stop[0] if _on_stop else None
    remove_sigterm_handler()
    print(f"raylm: {STOPPED_MESSAGE}; ending the open runs as KILLED", file=sys.stderr, flush=True)
    if end_runs is not None:
        end_runs("KILLED", STOPPED_MESSAGE)
    if callable(previous):
        previous(signum, frame)
    raise SystemExit(128 + signum)
