"""The study's own record: appended evaluations and endings, read back as points; a line cut short by a
killed driver is skipped; a later report of the same step wins."""

from __future__ import annotations

from raylm.study.record import RECORD_FILE, StudyRecord


def test_the_record_reads_back_what_was_written(tmp_path):
    record = StudyRecord(tmp_path)
    record.add_eval("k1", "C1e8-N10K", 5, {"val/loss": 3.0})
    record.add_eval("k1", "C1e8-N10K", 10, {"val/loss": 2.5})
    record.add_eval("k2", "C1e8-N20K", 5, {"val/loss": 3.1})
    record.add_end("k1", "C1e8-N10K", "FINISHED")
    with open(tmp_path / RECORD_FILE, "a") as handle:
        handle.write('{"key": "k2", "label": "C1e8-N20K", "st')  # the driver was killed mid-line
    points = StudyRecord(tmp_path).points()
    assert points["k1"].curve() == [(5, 3.0), (10, 2.5)]
    assert points["k1"].final(10) == 2.5 and points["k1"].final(20) is None
    assert points["k2"].status is None and points["k2"].final(5) is None  # never ended: not finished


def test_a_point_continued_from_a_checkpoint_reports_its_steps_again(tmp_path):
    record = StudyRecord(tmp_path)
    record.add_eval("k", "p", 4, {"val/loss": 3.0})
    record.add_end("k", "p", "FAILED", "worker died")
    record.add_eval("k", "p", 4, {"val/loss": 3.0})
    record.add_eval("k", "p", 8, {"val/loss": 2.0})
    record.add_end("k", "p", "FINISHED")
    point = StudyRecord(tmp_path).points()["k"]
    assert point.curve() == [(4, 3.0), (8, 2.0)] and point.final(8) == 2.0 and point.error is None
