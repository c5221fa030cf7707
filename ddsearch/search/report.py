"""``ddsearch report STUDY`` (the leaderboard, from MLflow) and ``ddsearch ui`` (the MLflow UI)."""

from __future__ import annotations

import errno
import ipaddress
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ddsearch import tracking
from ddsearch.errors import DDSearchError
from ddsearch.search.guard import run_guarded


def _number(value: Any) -> Any:
    if value is None:
        return None
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        return value
    return int(as_float) if as_float.is_integer() and "." not in str(value) and "e" not in str(value).lower() else as_float


def leaderboard(uri: str, experiment: str, parent_run_id: str, keys: list[str] | None = None,
                metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per trial run, best validation accuracy first.

    ``val_acc``/``test_acc`` are the final cross-architecture table's first evaluator for trials
    that finished, else the last checkpoint evaluation (``final`` is False then).
    """
    runs = [tracking.run_record(r) for r in tracking.child_runs(uri, experiment, parent_run_id)]
    if keys is None:
        parent = tracking.get_run_or_none(uri, parent_run_id)
        keys = sorted(k.removeprefix("search.") for k in (parent.data.params if parent else {}) if k.startswith("search."))
    rows = []
    for run in runs:
        m, p, t = run["metrics"], run["params"], run["tags"]
        final = "final_val_acc" in m
        rows.append({
            "trial_id": t.get(tracking.TAG_TRIAL_ID, ""),
            "optuna_trial": _number(t.get(tracking.TAG_OPTUNA)),
            "status": run["status"],
            "outcome": t.get(tracking.TAG_OUTCOME, "running" if run["status"] == "RUNNING" else ""),
            "val_acc": m.get("final_val_acc", m.get("val_acc", math.nan)),
            "test_acc": m.get("final_test_acc", m.get("test_acc", math.nan)),
            **{k: _number(p.get(f"method.{k}")) for k in keys},
            "iteration": int(m["iteration"]) if "iteration" in m else None,
            "distill_s": m.get("distill_seconds_total", m.get("distill_seconds", math.nan)),
            "eval_s": m.get("eval_seconds_total", m.get("eval_seconds", math.nan)),
            "final": final,
            "attempts": _number(t.get(tracking.TAG_ATTEMPTS, 1)),
            "node": t.get("ddsearch.node_ip", ""),
            "run_id": run["run_id"],
            "note": t.get(tracking.TAG_FAILURE, t.get("ddsearch.stopped", ""))[:120],
        })
    columns = ["trial_id", "optuna_trial", "status", "outcome", "val_acc", "test_acc", *keys, "iteration",
               "distill_s", "eval_s", "final", "attempts", "node", "run_id", "note"]
    board = pd.DataFrame(rows, columns=columns)
    if len(board):
        board["_rank_key"] = board["val_acc"].fillna(-1.0)
        board = board.sort_values(["final", "_rank_key"], ascending=[False, False]).drop(columns="_rank_key")
        board.insert(0, "rank", range(1, len(board) + 1))
        if metrics and len(metrics) > 1 and metrics[1] in ("distill_seconds", "ipc"):
            board["pareto"] = _pareto(board, "distill_s" if metrics[1] == "distill_seconds" else "ipc")
    return board.reset_index(drop=True)


def _pareto(board: pd.DataFrame, cost: str) -> list[bool]:
    """Finished trials no other finished trial beats on val_acc (max) and ``cost`` (min)."""
    done = board[board["final"]]
    flags = []
    for _, row in board.iterrows():
        if not row["final"]:
            flags.append(False)
            continue
        dominated = ((done["val_acc"] >= row["val_acc"]) & (done[cost] <= row[cost])
                     & ((done["val_acc"] > row["val_acc"]) | (done[cost] < row[cost]))).any()
        flags.append(not bool(dominated))
    return flags


def print_leaderboard(board: pd.DataFrame, top: int = 20) -> None:
    if not len(board):
        print("no trials recorded yet")
        return
    shown = board.head(top).drop(columns=["run_id", "final"], errors="ignore")
    with pd.option_context("display.max_rows", 500, "display.max_columns", 60, "display.width", 250,
                           "display.max_colwidth", 60):
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if len(board) > top:
        print(f"... {len(board) - top} more (use --top)")


def _locate(args: Any) -> tuple[str, str, str, str | None]:
    """(tracking URI, study name, experiment name, parent run id or None) for a name or a YAML."""
    target = str(args.study)
    uri_arg = getattr(args, "tracking_uri", None)
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        from ddsearch.config import load_study

        study = load_study(target)
        uri = tracking.resolve_tracking_uri(uri_arg or study.tracking.uri, create=False)
        meta_path = study.resolved_state_dir() / "tracking.json"
        parent = None
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("store_uri") == uri:
                parent = meta.get("parent_run_id")
        return uri, study.name, study.tracking.experiment or study.name, parent
    return tracking.resolve_tracking_uri(uri_arg, create=False), target, target, None


def report_command(args: Any) -> int:
    uri, name, experiment_name, parent_id = _locate(args)
    tracking.check_reachable(uri)
    tracking.check_store_exists(uri)
    runs = tracking.find_study_runs(uri, experiment_name, name)
    if parent_id is not None:
        runs = [r for r in runs if r["run_id"] == parent_id] or runs
    if not runs:
        raise DDSearchError(f"no study '{name}' in experiment '{experiment_name}' at {uri}; "
                            f"run `ddsearch tune` first or pass --tracking-uri")
    parent = runs[0]
    keys = sorted(k.removeprefix("search.") for k in parent["params"] if k.startswith("search."))
    objective = parent["params"].get("objective", "val_acc").split(",")
    board = leaderboard(uri, parent["experiment_id"], parent["run_id"], keys, objective)
    print(f"study '{name}'  parent run {parent['run_id']}  status {parent['status']}  in {uri}")
    outcomes = board["outcome"].replace("", "unknown").value_counts() if len(board) else {}
    print(f"trials: {len(board)}" + "".join(f", {count} {what.replace('_', ' ')}" for what, count in dict(outcomes).items()))
    for key in keys:
        print(f"  search.{key}: {parent['params'][f'search.{key}']}")
    print_leaderboard(board, top=getattr(args, "top", 20))
    if len(board) and board["final"].any():
        best = board[board["final"]].iloc[0]
        print(f"best: trial {best['trial_id']} val_acc {best['val_acc']:.4f} test_acc {best['test_acc']:.4f} "
              f"(run {best['run_id']})")
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ui_command(args: Any) -> int:
    """``mlflow server`` on the local store, bound to 127.0.0.1 unless told otherwise."""
    uri = tracking.resolve_tracking_uri(getattr(args, "tracking_uri", None))
    host, port = args.host, int(args.port)
    if uri.startswith(("http://", "https://")):
        print(f"the tracking store is a server already; open {uri} in a browser")
        return 0
    tracking.check_reachable(uri)  # an unsupported scheme is one line, not a server traceback
    paths = tracking.sqlite_store_paths(uri)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port),
           "--workers", "1"]  # one browser, one worker: fewer processes to start and to stop
    if paths is not None:
        paths[1].mkdir(parents=True, exist_ok=True)
        cmd += ["--default-artifact-root", paths[1].as_uri(), "--no-serve-artifacts"]
    if not _is_loopback(host):
        print(f"ddsearch: warning: binding {host} exposes the MLflow UI (and the ability to change runs) to the "
              f"network without authentication; use the default 127.0.0.1 unless you mean it (MLflow may also "
              f"need MLFLOW_SERVER_ALLOWED_HOSTS for remote browsers)", file=sys.stderr)
    check_port_free(host, port)
    print(f"MLflow UI on http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port} for {uri} (Ctrl+C stops it)",
          flush=True)
    # Under the guard, the server stops with this command however it ends (Ctrl+C, SIGTERM, kill).
    code = run_guarded(cmd)
    if code == 130:
        print("MLflow UI stopped", file=sys.stderr)
        return 0
    if code != 0:
        raise DDSearchError(f"the MLflow UI server exited with code {code} (its messages are above)")
    return 0


def check_port_free(host: str, port: int) -> None:
    """One line, before anything starts, when the UI's address cannot be bound."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise DDSearchError(f"--host {host!r} is not an address of this machine ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            sock.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise DDSearchError(f"port {port} on {host} is already in use; pick another with --port") from None
            raise DDSearchError(f"cannot listen on {host}:{port} ({err.strerror}); pick another --host/--port") from None
