"""``raylm ui``: the MLflow UI of the runs' tracking store, on 127.0.0.1 with one worker."""

from __future__ import annotations

import argparse

EPILOG = """\
The store is --backend-store-uri, else tracking.tracking_uri of the config (FILE and --tracking.*
overrides), else $MLFLOW_TRACKING_URI, else ./mlflow.db: the store `raylm train` and `make demo`
write to by default. Artifacts of a SQLite store are served from mlartifacts/ beside it.

The server listens on 127.0.0.1 only. Another --host (0.0.0.0, a LAN address) is refused unless
--app-name basic-auth turns on MLflow's authentication (the mlflow[auth] extra, with
MLFLOW_FLASK_SERVER_SECRET_KEY and MLFLOW_AUTH_ADMIN_PASSWORD set). See docs/tracking.md.

examples:
  raylm ui                                   # make ui: ./mlflow.db on http://127.0.0.1:5000
  raylm ui --port 5001 --tracking.tracking_uri sqlite:///runs/mlflow.db
  raylm ui --backend-store-uri postgresql://mlflow:PASSWORD@127.0.0.1:5432/mlflow \\
           --artifacts-destination s3://my-bucket/mlflow     # a team tracking server"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ui", help="the MLflow UI of the tracking store (127.0.0.1:5000)",
        description="Start `mlflow server` on the runs' tracking store with one worker and no job runner "
                    "(it is up in seconds), print its address and a link to the experiment's runs, and "
                    "serve until Ctrl-C.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", nargs="?", help="YAML config whose tracking section names the store (optional)")
    parser.add_argument("--backend-store-uri", metavar="URI",
                        help="the store to serve (sqlite:///ABS/PATH.db, postgresql://...); overrides the config")
    parser.add_argument("--artifacts-destination", metavar="URI",
                        help="where artifacts go (s3://bucket/prefix); default: mlartifacts/ beside a SQLite "
                             "store, else ./mlartifacts")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1); any other needs --app-name basic-auth")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (default 1)")
    parser.add_argument("--app-name", choices=["basic-auth"], default=None,
                        help="basic-auth: MLflow's username/password authentication (needs mlflow[auth])")
    parser.add_argument("--allowed-hosts", metavar="HOSTS",
                        help="Host headers the server accepts when exposed (MLflow's --allowed-hosts)")
    parser.set_defaults(func=_ui, accepts_overrides=True)


def _ui(args: argparse.Namespace) -> int:
    import signal
    import sys

    from raylm.errors import UserError
    from raylm.tracking.ui_server import ServerProcess, check_exposure, start_ui

    check_exposure(args.host, args.app_name)  # before anything else: a refusal costs nothing
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a port number (1-65535)")
    if args.workers < 1:
        raise UserError(f"--workers {args.workers} must be at least 1")
    store, experiment = _store(args)
    if store.startswith(("http://", "https://")):
        print(f"the tracking store is already an MLflow server: open {store.rstrip('/')}\n"
              "(pass --backend-store-uri to serve a database instead)")
        return 0
    extra = ("--allowed-hosts", args.allowed_hosts) if args.allowed_hosts else ()
    server = start_ui(store, port=args.port, host=args.host, artifacts=args.artifacts_destination,
                      app_name=args.app_name, workers=args.workers, process=ServerProcess(extra_args=extra))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill` of this command stops the server too
    try:
        print(f"MLflow UI: {server.url}   (store: {store}; Ctrl-C stops it)", flush=True)
        link = _experiment_link(server.url, experiment)
        if link:
            print(f"  experiment {experiment!r}: {link}", flush=True)
        return_code = server.wait()
        print(f"mlflow server exited with status {return_code}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def _store(args: argparse.Namespace) -> tuple[str, str]:
    """The store to serve and the experiment runs go to, from the arguments and the config."""
    from raylm.config import resolved_tracking_uri
    from raylm.config_load import load_config, parse_override_args

    cfg = load_config(args.file, parse_override_args(args.overrides))
    # a relative SQLite path means the same file here as for `raylm train` run here
    uri = resolved_tracking_uri(args.backend_store_uri) if args.backend_store_uri else cfg.tracking.tracking_uri
    return uri, cfg.tracking.experiment


def _experiment_link(url: str, experiment: str) -> str | None:
    """The runs view of the config's experiment, when the store has it."""
    try:
        from mlflow.tracking import MlflowClient

        from raylm.tracking.links import runs_link

        found = MlflowClient(tracking_uri=url).get_experiment_by_name(experiment)
        return runs_link(url, found.experiment_id) if found else None
    except Exception:  # noqa: BLE001 - a link is a convenience; the UI is up either way
        return None
