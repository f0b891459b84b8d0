"""``raylm tracking replay DIR``: deliver the tracking records that runs left waiting on disk."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  raylm tracking replay runs/tracking-outbox
  raylm tracking replay runs/tracking-outbox --wait 60
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tracking", help="deliver tracking records that waited on disk while the store was down",
        description="Records that the tracking store did not take while a run was going (server down or "
                    "restarting) wait in the run's outbox (tracking.outbox_dir, default runs/tracking-outbox). "
                    "`replay` delivers them in order, each once, and removes what was delivered.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    replay = actions.add_parser("replay", help="deliver every outbox under DIR")
    replay.add_argument("directory", metavar="DIR", help="an outbox directory (or a file in it)")
    replay.add_argument("--wait", type=float, default=0.0, metavar="S",
                        help="keep retrying a store that does not answer for up to S seconds per run (default 0)")
    replay.set_defaults(func=_replay)


def _replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from raylm.errors import UserError
    from raylm.tracking.replay import replay

    if not Path(args.directory).exists():
        raise UserError(f"{args.directory} does not exist; give the outbox directory (tracking.outbox_dir, "
                        "default runs/tracking-outbox)")
    results = replay(args.directory, args.wait)
    if not results:
        print(f"nothing waits in {args.directory}")
        return 0
    for r in results:
        done = r.waiting_before - r.waiting_after
        state = "all delivered" if not r.waiting_after else f"{r.waiting_after} still wait (the store did not answer)"
        print(f"run {r.run_id} at {r.uri}: {done} of {r.waiting_before} records delivered; {state}")
    return 1 if any(r.waiting_after for r in results) else 0
