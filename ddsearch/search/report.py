"""``ddsearch report STUDY`` (the leaderboard, from MLflow) and ``ddsearch ui`` (the MLflow UI)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ddsearch.errors import DDSearchError
from ddsearch.search.leaderboard import finished, leaderboard, outcome_counts, print_leaderboard  # noqa: F401
from ddsearch.search.notes import column_legend
from ddsearch.search.state import recorded_parent
from ddsearch.tracking import server, store
from ddsearch.tracking.lookup import find_study_runs


def _locate(args: Any) -> tuple[str, str, str, str | None]:
    """(tracking URI, study name, experiment name, parent run id or None) for a name or a YAML."""
    target = str(args.study)
    uri_arg = getattr(args, "tracking_uri", None)
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        from ddsearch.config import load_study

        study = load_study(target)
        uri = store.resolve_tracking_uri(uri_arg or study.tracking.uri, create=False)
        parent = recorded_parent(study.resolved_state_dir(), uri)
        return uri, study.name, study.tracking.experiment or study.name, parent
    return store.resolve_tracking_uri(uri_arg, create=False), target, target, None


def report_command(args: Any) -> int:
    uri, name, experiment_name, parent_id = _locate(args)
    store.check_reachable(uri)
    store.check_store_exists(uri)
    runs = find_study_runs(uri, experiment_name, name)
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
    counts = outcome_counts(board)
    print(f"trials: {len(board)}" + "".join(f", {n} {what.replace('_', ' ')}" for what, n in counts.items()))
    for key in keys:
        print(f"  search.{key}: {parent['params'][f'search.{key}']}")
    print_leaderboard(board, top=getattr(args, "top", 20))
    legend = column_legend(parent["params"])
    for column in ("val_acc", "final_val_acc"):
        print(f"  {column}: {legend[column]}")
    done = finished(board)
    if len(done):
        best = done.iloc[0]
        print(f"best: {best['run']} val_acc {best['val_acc']:.4f} test_acc {best['test_acc']:.4f} "
              f"(run {best['run_id']}, Ray trial {best['ray_trial_id']})")
    html = getattr(args, "html", None)
    if html:
        from ddsearch.search.report_page import study_report

        page = study_report(uri, parent["experiment_id"], parent["run_id"])
        path = Path(html if html != "-" else f"{name}-report.html")
        path.write_text(page, encoding="utf-8")
        print(f"report page: {path.resolve()} ({len(page.encode()) / 1024:.0f} KiB)")
    return 0


def ui_command(args: Any) -> int:
    """``mlflow server`` on the local store, bound to 127.0.0.1 unless told otherwise."""
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
