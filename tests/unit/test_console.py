"""The quiet console's parts without Ray running: the log router (what goes to the file, what still reaches
the console) and the live view of trials (its lines, counts and estimate of the time left)."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import pytest

from raylm.console import LogRouter, quiet_console
from raylm.tune.progress import TrialProgress, TrialView, clock


def test_router_keeps_lines_until_the_directory_is_known_then_appends_them_to_its_log(tmp_path):
    console = io.StringIO()
    router = LogRouter(echo=(), console=console)
    router.worker_batch({"pid": 7, "actor_name": "run_trial", "lines": ["[raylm] step 1/10: loss 5.0"]})
    path = router.attach(tmp_path / "logs")
    router.worker_batch({"pid": 8, "task_name": "tokenize", "lines": ["DeepSpeed warning", "second"]})
    router.close()
    assert path.read_text().splitlines() == ["(run_trial pid=7) [raylm] step 1/10: loss 5.0",
                                             "(tokenize pid=8) DeepSpeed warning", "(tokenize pid=8) second"]
    assert console.getvalue() == ""


def test_router_shows_tracking_notices_killed_workers_and_asked_for_markers(tmp_path):
    console = io.StringIO()
    router = LogRouter(echo=("[raylm]",), console=console)
    router.attach(tmp_path)
    router.worker_batch({"pid": 3, "actor_name": "TrackingWriter",
                         "lines": ["[tracking] MLflow at http://x is unreachable; 4 records wait", "INFO chatter"]})
    router.worker_batch({"pid": "raylet", "lines": ["1 Workers (tasks / actors) killed due to memory pressure (OOM)",
                                                    "some raylet detail"]})
    router.worker_batch({"pid": 5, "actor_name": "RayTrainWorker", "lines": ["[raylm] step 5/10: loss 4.2"]})
    router.close()
    shown = console.getvalue().splitlines()
    assert shown == ["[tracking] MLflow at http://x is unreachable; 4 records wait",
                     "(raylet) 1 Workers (tasks / actors) killed due to memory pressure (OOM)",
                     "[raylm] step 5/10: loss 4.2"]
    assert len((tmp_path / "ray.log").read_text().splitlines()) == 5  # everything is in the file


def _console_handler() -> tuple[logging.Handler, io.StringIO]:
    """A console handler on Ray's logger, as Ray's own (which holds the stderr of its import time); the logger
    at WARNING, as raylm starts Ray (a test session's Ray may have set it to ERROR)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger("ray").addHandler(handler)
    return handler, stream


@pytest.fixture(autouse=True)
def _ray_logger_at_warning():
    loggers = [logging.getLogger(name) for name in ("ray", "ray.tune")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def test_quiet_console_sends_ray_warnings_to_the_file_and_lets_errors_through(tmp_path):
    handler, stream = _console_handler()
    try:
        with quiet_console() as router:
            router.attach(tmp_path)
            logging.getLogger("ray.tune").warning("a Tune warning")
            logging.getLogger("ray.tune").error("a Tune error \x1b[36mcoloured\x1b[39m")
        logging.getLogger("ray.tune").warning("after it ends, warnings show again")
    finally:
        logging.getLogger("ray").removeHandler(handler)
    shown = stream.getvalue()
    assert "a Tune warning" not in shown
    assert "a Tune error coloured" in shown and "\x1b" not in shown
    assert "after it ends, warnings show again" in shown
    assert "a Tune warning" in (tmp_path / "ray.log").read_text()


def test_verbose_leaves_the_console_as_it_is():
    handler, stream = _console_handler()
    try:
        with quiet_console(verbose=True) as router:
            assert router is None
            logging.getLogger("ray.tune").warning("shown as always")
    finally:
        logging.getLogger("ray").removeHandler(handler)
    assert "shown as always" in stream.getvalue()


def _trial(trial_id: str, label: str, work: float, steps: int, result: dict | None = None):
    return SimpleNamespace(trial_id=trial_id, config={"label": label, "work": work, "steps": steps},
                           last_result=result or {}, local_path="/nowhere")


VIEW = TrialView(label=lambda t: t.config["label"], steps=lambda t: t.config["steps"],
                 work=lambda t: t.config["work"], group=lambda t: "")


def test_progress_prints_one_plain_line_per_finished_trial_with_counts_best_and_time_left():
    out = io.StringIO()
    progress = TrialProgress(VIEW, "val/loss", "min", total=3, out=out, live=False)
    a, b, c = _trial("a", "small", 1.0, 100), _trial("b", "large", 3.0, 100), _trial("c", "mid", 2.0, 100)
    progress.started -= 60  # a minute in
    progress.on_trial_start(0, [a, b], a)
    progress.on_trial_start(0, [a, b], b)
    progress.on_trial_result(0, [a, b], b, {"step": 50})
    a.last_result = {"val/loss": 4.5, "step": 100}
    progress.on_trial_complete(0, [a, b], a)
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("  [1/3] small  val/loss 4.5000  | best: 4.5000 (small) | 1 running, 1 left, 1:00")
    # done: a (1) + half of b (1.5) = 2.5 of 6 units in 60 s, so 3.5 units take ~84 s more
    assert line.endswith("~1:24 left")
    b.last_result = {"val/loss": 4.2, "step": 40}
    progress.on_trial_complete(0, [a, b, c], b)
    assert "best: 4.2000 (large)" in out.getvalue().splitlines()[-1]
    assert "(stopped at step 40 of 100)" in out.getvalue().splitlines()[-1]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_progress_on_a_terminal_redraws_one_status_line_and_clears_it_before_a_result_line():
    out = io.StringIO()
    progress = TrialProgress(VIEW, "val/loss", "min", total=1, out=out, live=True)
    a = _trial("a", "small", 1.0, 10)
    progress.on_trial_start(0, [a], a)
    progress.on_trial_result(0, [a], a, {"step": 5})
    progress.last_redraw -= 5
    progress.on_step_end(0, [a])
    assert out.getvalue().startswith("\r\x1b[Krunning: small 50% | 0 done")
    a.last_result = {"val/loss": 3.0, "step": 10}
    progress.on_trial_complete(0, [a], a)
    assert out.getvalue().endswith("\r\x1b[K  [1/1] small  val/loss 3.0000  | best: 3.0000 (small) | 0 running, "
                                   "0 left, 0:00 elapsed, ~0:00 left\n")


def test_progress_reports_a_failed_trial_with_its_error_and_says_when_it_is_retried():
    out = io.StringIO()
    progress = TrialProgress(VIEW, "val/loss", "min", total=2, out=out, live=False)
    a = _trial("a", "small", 1.0, 10)
    a.get_error = lambda: "Traceback (most recent call last):\n  ...\nUserError: training diverged at step 3"
    progress.on_trial_start(0, [a], a)
    progress.on_trial_recover(0, [a], a)
    progress.on_trial_error(0, [a], a)
    first, second = out.getvalue().splitlines()
    assert first == "  [0/2] small failed; trying it again (Ray's error report is above)"
    assert second.startswith("  [1/2] small FAILED: UserError: training diverged at step 3  | 0 running, 1 left")


def test_clock():
    assert (clock(0), clock(61), clock(3600 + 62)) == ("0:00", "1:01", "1:01:02")
