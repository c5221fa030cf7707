"""``ddsearch ui [--port 5000]``: the MLflow UI on the local store, bound to 127.0.0.1 (no torch)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ddsearch.commands._args import add_command, port as port_number
from ddsearch.errors import DDSearchError


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "ui", run, "start the MLflow UI on the local store (localhost only by default)")
    p.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 exposes it to the network")
    p.add_argument("--port", type=port_number, default=5000)
    p.add_argument("--tracking-uri", default=None)


def run(args: argparse.Namespace) -> int:
    """``mlflow server`` on the local store, bound to 127.0.0.1 unless told otherwise."""
    from ddsearch.tracking import server, store

    uri = store.resolve_tracking_uri(getattr(args, "tracking_uri", None))
    host, port = args.host, int(args.port)
    if uri.startswith(("http://", "https://")):
        print(f"the tracking store is a server already; open {uri} in a browser")
        return 0
    store.check_reachable(uri)  # an unsupported scheme is one line, not a server traceback
    if not server.is_loopback(host):
        print(f"ddsearch: warning: binding {host} exposes the MLflow UI (and the ability to change runs) to the "
              f"network without authentication; use the default 127.0.0.1 unless you mean it (MLflow may also "
              f"need MLFLOW_SERVER_ALLOWED_HOSTS for remote browsers)", file=sys.stderr)
    server.check_port_free(host, port)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    print(f"MLflow UI on {base} for {uri} (Ctrl+C stops it)", flush=True)
    # MLflow 3 opens experiments on its GenAI views; these addresses open each one's runs table
    for name, exp_id in store.experiment_ids(uri)[-20:]:
        print(f"  {name}: {base}/#/experiments/{exp_id}/runs?workflowType=machine_learning", flush=True)
    code = server.serve_ui(uri, host, port)
    if code == 130:
        print("MLflow UI stopped", file=sys.stderr)
        return 0
    if code != 0:
        raise DDSearchError(f"the MLflow UI server exited with code {code} (its messages are above)")
    return 0
