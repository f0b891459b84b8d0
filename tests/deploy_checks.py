"""Checks shared by the deployment tests (cluster.yaml, deploy/kuberay/, docs/cluster.md).

:func:`check_job_command` takes a job command as a deployment or a document writes it
(``python jobs/scaling_study.py --config ...``) and does what the job would do up to the point
where work starts: the script exists, its arguments parse with the ``raylm`` command's own parser,
the config file exists and loads, and its parallel plan holds. Nothing runs and Ray never starts.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def pinned_version(package: str) -> str:
    """The version constraints.txt pins for ``package``."""
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package.lower():
            return version.strip()
    raise AssertionError(f"constraints.txt pins no {package}")


def pinned_python() -> str:
    """The Python version constraints.txt was frozen with, from its header ("Python 3.11")."""
    match = re.search(r"Python (\d+\.\d+)", (REPO_ROOT / "constraints.txt").read_text().splitlines()[0])
    assert match, "constraints.txt's first line names no Python version"
    return match.group(1)


def dockerfile_workdir() -> str:
    """Where deploy/Dockerfile puts the project inside the image."""
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", (REPO_ROOT / "deploy" / "Dockerfile").read_text(), re.M)
    assert workdirs, "deploy/Dockerfile sets no WORKDIR"
    return workdirs[-1].rstrip("/")


@dataclass
class JobCheck:
    """What a checked job command would run: its subcommand and where it writes."""

    subcommand: str
    config_path: Path
    output_dirs: list[str]    # the run's output_dir, and the sweep's or study's own directory
    shards_dir: str


def check_job_command(argv: list[str], image_root: str | None = None) -> JobCheck:
    """Check ``argv`` (``["python", "jobs/X.py", ...]``); paths under ``image_root`` (the project's
    directory inside the image) stand for the same paths in this repository. Raises AssertionError
    with the reason when the command would not start."""
    from raylm.cli import build_parser, split_overrides
    from raylm.config_load import parse_override_args
    from raylm.errors import UserError

    def local(path: str) -> str:
        if image_root and path.startswith(image_root + "/"):
            return str(REPO_ROOT / path[len(image_root) + 1:])
        return path

    assert argv and Path(argv[0]).name in ("python", "python3"), f"not a python command: {shlex.join(argv)}"
    assert len(argv) > 1, "no job script"
    script = Path(local(argv[1]))
    script = script if script.is_absolute() else REPO_ROOT / script
    assert script.is_file(), f"job script {argv[1]} is not in the repository"
    assert script.parent == REPO_ROOT / "jobs", f"{argv[1]} is not a job entrypoint under jobs/"
    called = re.search(r'main\(\["([\w-]+)"', script.read_text())
    assert called, f"{argv[1]} does not call raylm's main with a subcommand"
    subcommand = called.group(1)

    rest, overrides = split_overrides([subcommand, *(local(a) for a in argv[2:])])
    try:
        args, extra = build_parser().parse_known_args(rest)
    except SystemExit as exc:  # argparse's own error (printed to stderr) on an unknown choice or option
        raise AssertionError(f"{shlex.join(argv)}: the raylm parser rejects the arguments") from exc
    assert args.command == subcommand
    extra += overrides
    assert not extra or getattr(args, "accepts_overrides", False), f"unrecognized arguments: {extra}"
    path = getattr(args, "file", None) or getattr(args, "config", None)
    assert path, f"{shlex.join(argv)} names no config file"
    config_path = Path(path) if Path(path).is_absolute() else REPO_ROOT / path
    assert config_path.is_file(), f"config file {path} is not in the repository"
    try:
        return _load(subcommand, config_path, parse_override_args(extra))
    except UserError as exc:
        raise AssertionError(f"{shlex.join(argv)}: {exc}") from exc


def _load(subcommand: str, config_path: Path, overrides) -> JobCheck:
    from raylm.config import RunConfig
    from raylm.parallel.plan import make_plan

    if subcommand == "study":
        from raylm.study.config import load_study
        from raylm.study.grid import build_grid, point_run

        study = load_study(config_path, overrides)
        first = RunConfig.from_dict(point_run(study, build_grid(study)[0]))
        make_plan(first)
        return JobCheck(subcommand, config_path, [first.output_dir, study.config.output_dir], first.data.shards_dir)
    if subcommand == "sweep":
        from raylm.tune.sweep_config import load_sweep

        sweep = load_sweep(config_path, overrides)
        base = sweep.base_config
        make_plan(base)
        return JobCheck(subcommand, config_path, [base.output_dir, sweep.config.output_dir], base.data.shards_dir)
    if subcommand == "train":
        from raylm.config_load import load_config

        cfg = load_config(config_path, overrides)
        make_plan(cfg)
        return JobCheck(subcommand, config_path, [cfg.output_dir], cfg.data.shards_dir)
    raise AssertionError(f"no check for the '{subcommand}' job")


def job_commands(text: str) -> list[list[str]]:
    """Every ``python .../jobs/X.py ...`` command in ``text`` (Markdown or YAML comments), with
    backslash-continued lines joined and comment markers dropped."""
    joined = re.sub(r"\\\n[ \t]*#?[ \t]*", " ", text)
    commands = []
    for match in re.finditer(r"\bpython3?\s+(\S*jobs/\w+\.py)([^\n`#]*)", joined):
        commands.append(["python", match.group(1), *shlex.split(match.group(2))])
    return commands


def under(path: str, mount: str) -> bool:
    return path == mount or path.startswith(mount.rstrip("/") + "/")
