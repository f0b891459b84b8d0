"""The quiet console of ``raylm study``, ``raylm sweep`` and ``raylm train``.

While it is on, what Ray streams to the driver from its workers (Ray Tune, Ray Train, DeepSpeed and the
training loop's own step lines) and Ray's driver-side logging go to one log file in the run's directory,
``logs/ray.log``; the console keeps the command's own lines: progress, one line per finished trial, the
summary. Some worker lines still reach the console because a user must see them: the tracking writer's
``[tracking]`` notices (data waiting for a store that is down), the raylet's reports of killed workers,
and whatever the command asks for (``raylm train`` keeps its ``[raylm]`` step lines). Ray errors at level
ERROR and above still reach the console in full. ``--verbose`` leaves Ray's streaming as it is.

Ray forwards worker output through ``ray._private.ray_logging.global_worker_stdstream_dispatcher``, whose
``ray_print_logs`` handler (added by ``ray.init``) prints it; the quiet console swaps that handler for its
own and puts it back when it ends.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

LOG_NAME = "ray.log"
ECHOED = ("[tracking]",)  # worker lines that always reach the console
RAYLET_ECHOED = ("killed", "Killed", "error", "Error", "OOM", "memory")  # raylet lines about lost workers
TUNE_OUTPUT = "RAY_AIR_NEW_OUTPUT"  # 0: Tune's legacy reporter, silent at verbose=0 (the new one prints a banner)
RAY_HANDLER = "ray_print_logs"
OUR_HANDLER = "raylm_console"
PENDING_LIMIT = 20_000  # lines kept in memory until the run's directory is known


class LogRouter:
    """Collects Ray's output while the console is quiet: in memory until :meth:`attach` names the run's
    directory, then in ``DIR/logs/ray.log`` (appended, so a rerun's output follows the first run's)."""

    def __init__(self, echo: tuple[str, ...], console: TextIO):
        self.echo, self.console = ECHOED + tuple(echo), console
        self.pending: list[str] = []
        self.file: TextIO | None = None
        self.path: Path | None = None
        self.lock = threading.Lock()

    def attach(self, directory: Path) -> Path:
        with self.lock:
            if self.file is None:
                directory.mkdir(parents=True, exist_ok=True)
                self.path = directory / LOG_NAME
                self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open until close()
                self.file.writelines(self.pending)
                self.file.flush()
                self.pending = []
            return self.path

    def write(self, line: str) -> None:
        with self.lock:
            if self.file is not None:
                self.file.write(line + "\n")
                self.file.flush()
            elif len(self.pending) < PENDING_LIMIT:
                self.pending.append(line + "\n")

    def worker_batch(self, data: dict) -> None:
        """One batch of a worker's stdout or stderr, as Ray's log monitor publishes it."""
        pid = data.get("pid")
        name = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({name} pid={pid})" if pid not in ("raylet", "autoscaler") else f"({pid})"
        lines = data.get("lines", [])
        if pid == "autoscaler":  # its periodic status tables stay out, as Ray's own printer leaves them out
            from ray._private.worker import filter_autoscaler_events

            lines = list(filter_autoscaler_events(lines))
        for line in lines:
            self.write(f"{prefix} {line}")
            if self._echoed(pid, line):
                print(f"{prefix} {line}" if pid in ("raylet", "autoscaler") else line, file=self.console, flush=True)

    def _echoed(self, pid, line: str) -> bool:
        if pid == "raylet":
            return any(word in line for word in RAYLET_ECHOED)
        return any(marker in line for marker in self.echo)

    def close(self) -> None:
        with self.lock:
            if self.file is not None:
                self.file.close()
                self.file = None


class _ToRouter(logging.Handler):
    def __init__(self, router: LogRouter):
        super().__init__(logging.DEBUG)
        self.router = router
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.router.write(self.format(record))
        except Exception:  # noqa: BLE001 - logging never breaks the run
            self.handleError(record)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _ErrorsOnly(logging.Filter):
    """Only records at ERROR and above reach the console, in full, without the colour codes Ray puts into
    its task errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return False
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = ANSI.sub("", record.exc_text)
        if isinstance(record.msg, str):
            record.msg = ANSI.sub("", record.msg)
        return True


_ACTIVE: LogRouter | None = None
_SWAPPED = False


def is_quiet() -> bool:
    """Whether a quiet console is on in this process (Tune's own tables are then off too)."""
    return _ACTIVE is not None


def attach_logs(directory: Path, log=None) -> Path | None:
    """Send the quiet console's log to ``directory/ray.log`` from now on (earlier lines included) and say so
    once through ``log``; its path, or None when the console is not quiet."""
    if _ACTIVE is None:
        return None
    path = _ACTIVE.attach(Path(directory))
    if log is not None:
        log(f"Ray, Tune, Train, DeepSpeed and worker output: {path} (--verbose shows it here)")
    return path


def route_ray_output() -> None:
    """Take over Ray's forwarding of worker output when a quiet console is on; called once Ray is
    initialised (``ray.init`` adds the handler that prints worker lines)."""
    global _SWAPPED
    if _ACTIVE is None or _SWAPPED:
        return
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    names = [name for name, _ in dispatcher.handlers]
    if RAY_HANDLER in names:
        dispatcher.remove_handler(RAY_HANDLER)
        _SWAPPED = True
    dispatcher.add_handler(OUR_HANDLER, _ACTIVE.worker_batch)


def _restore_ray_output() -> None:
    """Remove the console's handler; give Ray back its own when Ray is still up (``ray.shutdown`` removes it)."""
    global _SWAPPED
    from ray._private import worker
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    import ray

    dispatcher.remove_handler(OUR_HANDLER)
    if _SWAPPED and ray.is_initialized():
        ignore_prefix = worker._should_ignore_worker_log_prefix(worker.global_worker)
        dispatcher.add_handler(RAY_HANDLER, functools.partial(worker.print_to_stdstream, ignore_prefix=ignore_prefix))
    _SWAPPED = False


def _ray_loggers() -> list[logging.Logger]:
    names = [n for n in logging.root.manager.loggerDict if n == "ray" or n.startswith("ray.")]
    return [logging.getLogger(n) for n in names]


@contextmanager
def quiet_console(verbose: bool = False, echo: tuple[str, ...] = ()) -> Iterator[LogRouter | None]:
    """Quiet the console for the duration (unless ``verbose``): Ray's worker output and its driver-side logs
    below ERROR go to the router (later ``DIR/logs/ray.log``), Python warnings too; ``echo``: markers of
    worker lines the console still shows."""
    global _ACTIVE
    if verbose or _ACTIVE is not None:
        yield _ACTIVE
        return
    import ray  # noqa: F401 - Ray's loggers and their console handlers exist once it is imported

    router = LogRouter(echo, sys.stderr)
    to_router, errors_only = _ToRouter(router), _ErrorsOnly()
    root = logging.getLogger("ray")
    root.addHandler(to_router)
    filtered = [(logger, h) for logger in _ray_loggers() for h in logger.handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                and h is not to_router]
    for _, handler in filtered:
        handler.addFilter(errors_only)
    shown = warnings.showwarning
    warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: router.write(
        f"{category.__name__}: {message} ({filename}:{lineno})")
    tune_output = os.environ.get(TUNE_OUTPUT)
    os.environ[TUNE_OUTPUT] = "0"
    _ACTIVE = router
    try:
        if ray.is_initialized():
            route_ray_output()
        yield router
    finally:
        _ACTIVE = None
        _restore_ray_output()
        warnings.showwarning = shown
        if tune_output is None:
            os.environ.pop(TUNE_OUTPUT, None)
        else:
            os.environ[TUNE_OUTPUT] = tune_output
        for _, handler in filtered:
            handler.removeFilter(errors_only)
        root.removeHandler(to_router)
        router.close()
