"""``report.html``: a study at a glance, one self-contained page.

The parent run gets it at the end of a study and ``ddsearch report STUDY --html`` writes it
locally. No scripts and nothing fetched: images are PNG data URIs, curves are inline SVG, so
MLflow's artifact viewer (a sandboxed frame) and a browser without network both render it.
It holds the leaderboard, the val/test curves of every trial on shared axes, each trial's final
grid side by side, Optuna's importance plot (and Pareto front for two objectives), the best
trial's cross-architecture table and, after ``ddsearch reevaluate``, the papers'-protocol figures of
the defaults and the best beside the real-image controls.
"""

from __future__ import annotations

import base64
import html
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from ddsearch.tracking.store import download_artifact, get_run_record, list_artifact_paths, metric_history
from ddsearch.tracking.study_runs import TAG_STUDY
from ddsearch.search.leaderboard import FINISHED, leaderboard
from ddsearch.search.leaderboard import PROTOCOL_COLUMNS
from ddsearch.search.notes import column_legend, reevaluation_rows

DEFAULT_UI = "http://127.0.0.1:5000/"  # where `ddsearch ui` serves the MLflow UI
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:20px;color:#222;max-width:1400px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#555;font-size:13px} table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f4f6f8;position:sticky;top:0} td.l,th.l{text-align:left}
tr.unranked td{color:#777;background:#fafafa} .legend{font-size:12px;color:#444;margin:6px 0 0 0;padding-left:18px}
.grids{display:flex;flex-wrap:wrap;gap:14px} figure{margin:0;border:1px solid #ddd;padding:6px;background:#fff}
figure img{max-width:420px;max-height:380px;image-rendering:pixelated;display:block} figcaption{font-size:12px;color:#333;margin-top:4px}
.plots img{max-width:640px;border:1px solid #ddd} .curves{display:flex;flex-wrap:wrap;gap:18px}
.key{font-size:12px;display:flex;flex-wrap:wrap;gap:4px 14px;margin:6px 0}
.sw{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ---- pieces -------------------------------------------------------------------------------------

def leaderboard_html(board: pd.DataFrame, keys: list[str], ui_url: str, legend: dict[str, str]) -> str:
    """The leaderboard, each run name linking to its run in the MLflow UI."""
    cols = ["rank", "run", "val_acc", "test_acc", *keys, "final_val_acc", "final_test_acc", *PROTOCOL_COLUMNS,
            "outcome", "iteration",
            "distill_s", "ray_trial_id", "note"]
    cols = [c for c in cols if c in board.columns]
    head = "".join(f'<th class="{"l" if c in ("run", "outcome", "note") else ""}" title="{_e(legend.get(c, ""))}">'
                   f"{_e(c)}</th>" for c in cols)
    rows = []
    for _, row in board.iterrows():
        cells = []
        for c in cols:
            value = row[c]
            if c == "rank":
                text = "" if pd.isna(value) else str(int(value))
            elif c == "run":
                text = f'<a href="{_e(ui_url + row["link"])}">{_e(value)}</a>'
                cells.append(f'<td class="l">{text}</td>')
                continue
            else:
                text = _e(_fmt(value))
            cells.append(f'<td class="{"l" if c in ("outcome", "note") else ""}">{text}</td>')
        ranked = row["outcome"] == FINISHED
        rows.append(f'<tr class="{"" if ranked else "unranked"}" data-run="{_e(row["run"])}">{"".join(cells)}</tr>')
    items = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in legend.items() if k in cols)
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f'<ul class="legend">{items}</ul>')


def reevaluation_html(table: pd.DataFrame) -> str:
    """The re-evaluated trials and controls: test mean ± std, and each trial's lead over each control."""
    rows = reevaluation_rows(table)
    head = list(rows[0])
    left = {"role", "run", "chosen by", "protocol"}
    header = "".join(f'<th class="{"l" if h in left else ""}">{_e(h)}</th>' for h in head)
    body = "".join("<tr>" + "".join(f'<td class="{"l" if h in left else ""}">{_e(row[h])}</td>' for h in head) + "</tr>"
                   for row in rows)
    return (f'<table class="reevaluation"><tr>{header}</tr>{body}</table>'
            '<div class="sub">Test accuracy in %, mean ± std over the protocol\'s trainings. A trial beats a '
            "control when its lead is larger than twice the std of the difference.</div>")


def curves_svg(series: dict[str, list[tuple[int, float]]], colors: dict[str, str], dashed: set[str], title: str,
               x_range: tuple[float, float], y_range: tuple[float, float], width: int = 560, height: int = 330) -> str:
    """One inline-SVG line chart; every chart of the page gets the same ranges (shared axes)."""
    left, right, top, bottom = 56, 12, 26, 40
    pw, ph = width - left - right, height - top - bottom
    (x0, x1), (y0, y1) = x_range, y_range
    sx = lambda x: left + (x - x0) / ((x1 - x0) or 1) * pw  # noqa: E731
    sy = lambda y: top + ph - (y - y0) / ((y1 - y0) or 1) * ph  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{_e(title)}"><rect width="100%" height="100%" fill="#fff"/>',
             f'<text x="{left}" y="16" font-size="13" font-weight="600">{_e(title)}</text>']
    for i in range(6):
        y = y0 + (y1 - y0) * i / 5
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>'
                     f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" font-size="11" text-anchor="end">{y:.2f}</text>')
    ticks = sorted({x for pts in series.values() for x, _ in pts}) or [x0, x1]
    for x in ticks:
        parts.append(f'<text x="{sx(x):.1f}" y="{top + ph + 16}" font-size="11" text-anchor="middle">{x}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 6}" font-size="12" text-anchor="middle">distillation iteration'
                 f'</text><rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    for name, pts in series.items():
        if not pts:
            continue
        color = colors.get(name, "#333")
        dash = ' stroke-dasharray="5,4"' if name in dashed else ""
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}>'
                     f"<title>{_e(name)}</title></polyline>")
        parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"><title>{_e(name)}: '
                  f"{y:.4f} at {x}</title></circle>" for x, y in pts]
    parts.append("</svg>")
    return "".join(parts)


def _range(values: list[float], pad: float = 0.02) -> tuple[float, float]:
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    return max(0.0, lo - pad), min(1.0, hi + pad) if hi <= 1.0 else hi + pad


# ---- the page -----------------------------------------------------------------------------------

def render(study: str, summary: str, board: pd.DataFrame, keys: list[str], legend: dict[str, str],
           curves: dict[str, dict[str, list[tuple[int, float]]]], grids: dict[str, tuple[bytes, str]],
           plots: dict[str, bytes], cross_arch: pd.DataFrame | None, best: str | None, ui_url: str = DEFAULT_UI,
           reevaluation: pd.DataFrame | None = None) -> str:
    """The page from plain data (no MLflow here): what :func:`study_report` gathers."""
    names = list(board["run"]) if len(board) else []
    colors = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    dashed = set(board.loc[board["outcome"] != FINISHED, "run"]) if len(board) else set()
    all_pts = [p for metric in curves.values() for pts in metric.values() for p in pts]
    x_range = (min((x for x, _ in all_pts), default=0), max((x for x, _ in all_pts), default=1))
    y_range = _range([y for _, y in all_pts])
    body = [f"<h1>Study {_e(study)}</h1>", f'<div class="sub">{_e(summary)}</div>', "<h2>Leaderboard</h2>",
            leaderboard_html(board, keys, ui_url, legend) if len(board) else "<p>No trials recorded.</p>"]
    if reevaluation is not None and len(reevaluation):
        body += ["<h2>The papers' protocol, against real images (<code>ddsearch reevaluate</code>)</h2>",
                 reevaluation_html(reevaluation)]
    body.append("<h2>Validation and test accuracy of every trial</h2>")
    body.append('<div class="sub">Checkpoint evaluation at each evaluation point; both charts share their axes. '
                "Dashed: stopped early or did not finish.</div>")
    key = "".join(f'<span><span class="sw" style="background:{colors[n]}"></span>{_e(n)}'
                  f'{" (stopped early)" if n in dashed else ""}</span>' for n in names)
    body.append(f'<div class="key">{key}</div><div class="curves">')
    for metric, title in (("val_acc", "val_acc (validation)"), ("test_acc", "test_acc (test)")):
        body.append(curves_svg({n: curves.get(metric, {}).get(n, []) for n in names}, colors, dashed, title,
                               x_range, y_range))
    body.append("</div><h2>Final synthetic sets</h2>")
    body.append('<div class="sub">Each trial\'s last grid: the finished set, or where an early-stopped trial was.</div>'
                '<div class="grids">')
    for name in names:
        if name in grids:
            png, caption = grids[name]
            body.append(f'<figure data-run="{_e(name)}"><img alt="{_e(name)} grid" src="{_data_uri(png)}">'
                        f"<figcaption><b>{_e(name)}</b> · {_e(caption)}</figcaption></figure>")
    body.append("</div>")
    if plots:
        body.append('<h2>Search</h2><div class="plots">')
        for name, png in plots.items():
            body.append(f'<figure><img alt="{_e(name)}" src="{_data_uri(png)}"><figcaption>{_e(name)}</figcaption>'
                        "</figure>")
        body.append("</div>")
    if cross_arch is not None and len(cross_arch):
        body.append(f"<h2>Cross-architecture table of the best trial ({_e(best)})</h2>")
        body.append(cross_arch.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>ddsearch study {_e(study)}</title><style>{_CSS}</style></head><body>"
            + "".join(body) + "</body></html>")


def _read_artifact(uri: str, run_id: str, path: str, tmp: Path) -> bytes | None:
    try:
        return download_artifact(uri, run_id, path, tmp).read_bytes()
    except Exception:  # noqa: BLE001 - missing artifact: the page leaves that piece out
        return None


def _last_grid(uri: str, run_id: str, tmp: Path) -> tuple[bytes, str] | None:
    try:
        names = list_artifact_paths(uri, run_id, "grids")
    except Exception:  # noqa: BLE001
        return None
    if "grids/final.png" in names:
        png = _read_artifact(uri, run_id, "grids/final.png", tmp)
        return (png, "final set") if png else None
    steps = sorted(n for n in names if n.startswith("grids/step_"))
    if not steps:
        return None
    png = _read_artifact(uri, run_id, steps[-1], tmp)
    step = int(Path(steps[-1]).stem.removeprefix("step_"))
    return (png, f"at iteration {step} (stopped there)") if png else None


def _table(raw: bytes | None) -> pd.DataFrame | None:
    """An MLflow table artifact (``log_table``'s JSON), or None where the run has none."""
    if not raw:
        return None
    table = json.loads(raw)
    return pd.DataFrame(table["data"], columns=table["columns"])


def reevaluation_table(uri: str, parent_run_id: str) -> pd.DataFrame | None:
    """The parent run's ``reevaluation.json`` (``ddsearch reevaluate``), or None before any re-evaluation."""
    with tempfile.TemporaryDirectory(prefix="ddsearch-report-") as folder:
        return _table(_read_artifact(uri, parent_run_id, "reevaluation.json", Path(folder)))


def study_report(uri: str, experiment: str, parent_run_id: str, ui_url: str = DEFAULT_UI) -> str:
    """Gather a study from MLflow and render its page."""
    parent = get_run_record(uri, parent_run_id)
    params = parent["params"] if parent else {}
    keys = sorted(k.removeprefix("search.") for k in params if k.startswith("search."))
    objective = params.get("objective", "val_acc").split(",")
    board = leaderboard(uri, experiment, parent_run_id, keys, objective)
    legend = column_legend(params)
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {"val_acc": {}, "test_acc": {}}
    grids: dict[str, tuple[bytes, str]] = {}
    plots: dict[str, bytes] = {}
    cross_arch, best = None, None
    reevaluation = reevaluation_table(uri, parent_run_id)
    with tempfile.TemporaryDirectory(prefix="ddsearch-report-") as folder:
        tmp = Path(folder)
        for i, row in board.iterrows():
            for metric in curves:
                curves[metric][row["run"]] = metric_history(uri, row["run_id"], metric)
            grid = _last_grid(uri, row["run_id"], tmp / str(i))
            if grid:
                grids[row["run"]] = grid
        for name in ("param_importances", "pareto_front"):
            png = _read_artifact(uri, parent_run_id, f"plots/{name}.png", tmp / "plots")
            if png:
                plots[name] = png
        done = board[board["outcome"] == FINISHED] if len(board) else board
        if len(done):
            best = str(done.iloc[0]["run"])
            cross_arch = _table(_read_artifact(uri, done.iloc[0]["run_id"], "cross_arch.json", tmp / "best"))
    counts = board["outcome"].value_counts().to_dict() if len(board) else {}
    summary = (f"{len(board)} trials: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
               + (f". Best: {best}." if best else ".") + f" Objective (val_acc): {legend['val_acc'].removeprefix('the objective: ')}.")
    study = parent["tags"].get(TAG_STUDY, parent["run_name"]) if parent else parent_run_id
    return render(study, summary, board, keys, legend, curves, grids, plots, cross_arch, best, ui_url, reevaluation)
