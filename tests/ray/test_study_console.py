"""The quiet console of ``raylm study``: piped (not a terminal), it prints plain lines only: the grid reused,
one line for the run it trained, the summary, and where Ray's output went; Ray's tables, worker step lines
and DeepSpeed's warnings are in the study's ``logs/ray.log``, not on the console."""

from __future__ import annotations

import re
import shutil

import yaml

from raylm.cli import main


def _moved_study(tiny_study, tmp_path, **changes):
    """The shared tiny study copied (shards, record, store) under ``tmp_path``, with ``changes`` to its file."""
    source, _, _ = tiny_study
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    text = (copy / "study.yaml").read_text().replace(str(source), str(copy))
    data = {**yaml.safe_load(text), **changes}
    path = copy / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return copy, path


def test_a_piped_study_prints_plain_progress_and_summary_lines(tiny_study, tmp_path, capfd):
    # another target: the grid is found finished in the copied record, one verification run trains
    copy, path = _moved_study(tiny_study, tmp_path, targets=[3.0e9])
    capfd.readouterr()
    assert main(["study", "--config", str(path)]) == 0
    out, err = capfd.readouterr()
    text = out + err
    lines = text.splitlines()
    assert len(lines) <= 40, text
    assert "\x1b" not in text and "\r" not in text, "control characters on a piped console"

    assert "9 already finished (reused), 0 to train" in out
    finished = [line for line in lines if re.match(r"\s+\[1/1\] verify-C3e\+09-N\S+\s+val/loss \d\.\d{4} ", line)]
    assert len(finished) == 1, text
    assert "0 running, 0 left" in finished[0] and "elapsed" in finished[0]
    for expected in ("best N=", "recommended (", "train it: raylm train --config ", "verification: N=",
                     "MLflow parent run: "):
        assert expected in out, expected

    # what the console left out is in the study's log file, whose path it printed once
    (log_path,) = re.findall(r"worker output: (\S+ray\.log)", out)
    logged = open(log_path, encoding="utf-8").read()
    assert log_path.startswith(str(copy / "studies"))
    assert "[raylm] step" in logged and "[raylm] step" not in text
    for noise in ("Trial status", "Configuration for experiment", "Setting accelerator to CPU", "Token authentication"):
        assert noise not in text, noise
