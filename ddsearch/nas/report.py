"""What a NAS search shows: the printed summary, the scatter plot, and its MLflow run."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from ddsearch.nas.metrics import UNRANKED, SpearmanGap
from ddsearch.nas.ranking import NASOutcome

TABLE_ARTIFACT = "nas_ranking.json"
SCATTER_ARTIFACT = "nas_scatter.png"
SUMMARY_ARTIFACT = "nas_summary.json"


def short_name(arch: str) -> str:
    """'ConvNetBN' -> 'BN', 'ConvNet-d2-w8-relu-none-avgpool' -> 'd2-w8-relu-none-avgpool' (plot labels)."""
    return arch.removeprefix("ConvNet-").removeprefix("ConvNet") or arch


def print_table(outcome: NASOutcome) -> None:
    """The ranking (best proxy accuracy first); skipped and failed candidates listed below it."""
    import pandas as pd

    table = outcome.table()
    ranked = table[table["status"] == "ok"].drop(columns=["status", "reason"])
    with pd.option_context("display.max_rows", 1000, "display.width", 220):
        print(ranked.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    for row in table[table["status"] != "ok"].itertuples():
        print(f"{row.status} {row.arch}: {row.reason}")


def scatter_figure(outcome: NASOutcome):
    """Proxy (and control) accuracy against true accuracy, one point per candidate."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.2), dpi=110)
    ax = fig.add_subplot()
    if outcome.truth is None:
        raise ValueError("a scatter plot needs the ground truth")
    truth = [100 * v for v in outcome.truth.means]
    series = [("proxy", outcome.proxy, outcome.proxy_agreement, "tab:blue", "o")]
    if outcome.control is not None:
        series.append(("random control", outcome.control, outcome.control_agreement, "tab:orange", "^"))
    for label, ranking, agree, color, marker in series:
        ys = [100 * v for v in ranking.means]
        rho = f" (ρ={agree.spearman:.2f}, τ={agree.kendall:.2f})" if agree is not None else ""
        ax.scatter(truth, ys, c=color, marker=marker, label=label + rho, alpha=0.8)
    for arch, t, p in zip(outcome.candidates, truth, outcome.proxy.means):
        ax.annotate(short_name(arch), (t, 100 * p), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("true accuracy on real val (%), full-data training")
    ax.set_ylabel("accuracy on real val (%), trained on the small set")
    ax.set_title(f"NAS proxy vs ground truth, {len(outcome.candidates)} candidates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def summary_lines(outcome: NASOutcome) -> list[str]:
    lines = [f"{len(outcome.candidates)} candidates ranked, {len(outcome.skipped)} skipped"]
    p = outcome.proxy
    lines.append(f"proxy search: {p.compute_seconds:.1f}s of training ({p.wall_seconds:.1f}s wall)")
    if outcome.control is not None:
        c = outcome.control
        lines.append(f"control search: {c.compute_seconds:.1f}s of training ({c.wall_seconds:.1f}s wall)")
    if outcome.truth is not None:
        t = outcome.truth
        cached = f", {t.cached} from cache" if t.cached else ""
        lines.append(f"full-data search: {t.compute_seconds:.1f}s of training ({t.wall_seconds:.1f}s wall{cached}); "
                     f"time ratio {outcome.time_ratio:.1f}x")
    for name, agree in (("proxy", outcome.proxy_agreement), ("control", outcome.control_agreement)):
        if agree is not None:
            lines.append(
                f"{name:>7}: Spearman {agree.spearman:+.3f}  Kendall {agree.kendall:+.3f}  top-{agree.k} overlap "
                f"{agree.top_k_overlap:.2f}  pick {agree.top_pick} (true {100 * agree.top_pick_true_acc:.2f}%)  "
                f"regret {100 * agree.regret:.2f} pts vs {agree.true_best}"
            )
    if outcome.proxy_vs_control is not None:
        lines.append(gap_line(outcome.proxy_vs_control))
    return lines


def gap_line(gap: SpearmanGap) -> str:
    """Whether the proxy ranks better than the random control, in words a reader can act on."""
    if not gap.ranked:
        return f"proxy - control Spearman: none ({UNRANKED})"
    if not gap.resamples:
        return f"proxy - control Spearman: {gap.gap:+.3f} (too few candidates for an interval)"
    verdict = gap.verdict("the candidates cannot tell proxy and control apart")
    return (f"proxy - control Spearman: {gap.gap:+.3f} ({100 * gap.level:.0f}% paired bootstrap over candidates: "
            f"{gap.low:+.3f} to {gap.high:+.3f}); {verdict}")


def log_outcome(outcome: NASOutcome, uri: str, run_id: str, params: dict[str, Any]) -> None:
    """Params, the ranking table, the metrics, the summary JSON and (with a truth) the scatter plot."""
    from ddsearch.tracking import store

    store.log_params(uri, run_id, params | {f"nas.{k}": v for k, v in asdict(outcome.settings).items()})
    store.log_table(uri, run_id, outcome.table(), TABLE_ARTIFACT)
    store.log_metrics(uri, run_id, outcome.metrics())
    store.log_text(uri, run_id, json.dumps(outcome.summary(), indent=2, default=str), SUMMARY_ARTIFACT)
    if outcome.truth is not None:
        store.log_figure(uri, run_id, scatter_figure(outcome), SCATTER_ARTIFACT)
