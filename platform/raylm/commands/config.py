"""``raylm config show|schema``: inspect the resolved config and its JSON schema."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="show a resolved config or the config schema")
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    show = actions.add_parser(
        "show",
        help="print the resolved config as YAML",
        description="Load FILE (or the defaults), apply --section.key VALUE overrides, validate, print YAML.",
        epilog="example: raylm config show jobs/configs/gpt_tiny.yaml --train.lr 1e-3",
    )
    show.add_argument("file", nargs="?", help="YAML config file (defaults only when omitted)")
    show.set_defaults(func=_show, accepts_overrides=True)

    schema = actions.add_parser("schema", help="print the JSON schema of the config (for editor completion)")
    schema.set_defaults(func=_schema)


def _show(args: argparse.Namespace) -> int:
    from raylm.config_load import load_config, parse_override_args, to_yaml

    config = load_config(args.file, parse_override_args(args.overrides))
    print(to_yaml(config), end="")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from raylm.config import RunConfig

    print(json.dumps(RunConfig.model_json_schema(), indent=2))
    return 0
