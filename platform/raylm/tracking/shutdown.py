"""A stopped job ends its MLflow runs as KILLED before it exits.

``ray job stop`` sends SIGTERM to the job's driver and its child processes, then SIGKILL a few
seconds later (``RAY_JOB_STOP_WAIT_TIME_S``, 3 s by default). Python's default SIGTERM action
exits at once, skipping every ``finally``; the tracking writer dies with the driver and the runs
would stay RUNNING forever. :func:`end_runs_on_sigterm` installs a handler that first asks each
tracking writer of this driver to end its open runs as KILLED (one actor call per writer, well
inside the grace period), then raises :class:`KeyboardInterrupt`, so the usual Ctrl-C clean-up
(Tune's graceful stop, the training driver's own KILLED path) runs if there is time left.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from raylm.tracking.writer import end_open_runs

STOPPED_MESSAGE = "the job was stopped (SIGTERM, e.g. `ray job stop`)"


@contextmanager
def end_runs_on_sigterm():
    """Within this block, SIGTERM ends the open runs as KILLED, then interrupts the driver."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM exits at once
        print(f"raylm: {STOPPED_MESSAGE}; ending open runs as KILLED", flush=True)
        end_open_runs("KILLED", STOPPED_MESSAGE)
        raise KeyboardInterrupt(STOPPED_MESSAGE)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
