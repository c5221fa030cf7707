"""The Observer that records one distillation run in MLflow: params, curves, grids, the synset.

Used by ``ddsearch distill`` and by every Tune trial; it hears the run engine through
:mod:`ddsearch.events`, so it needs neither the engine nor torch to be imported.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ddsearch.events import EvalPoint, RunOutcome
from ddsearch.tracking.store import client, log_metrics, log_params

if TYPE_CHECKING:
    from ddsearch.synset import SyntheticSet


class RunLogger:
    """Records one distillation run (a CLI run or a tune trial's child run) in MLflow.

    Implements the :class:`ddsearch.events.Observer` protocol.
    """

    def __init__(self, run_id: str, uri: str | None = None, grid_per_class: int = 50) -> None:
        self.run_id = run_id
        self.uri = uri
        self.client = client(uri)
        self.grid_per_class = grid_per_class

    def log_params(self, params: dict[str, Any]) -> None:
        log_params(self.uri, self.run_id, params, self.client)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        log_metrics(self.uri, self.run_id, metrics, step, self.client)

    def log_json(self, payload: Any, artifact_file: str) -> None:
        self.client.log_text(self.run_id, json.dumps(payload, indent=2, default=str), artifact_file)

    def log_synset(self, synset: SyntheticSet, name: str = "synset.safetensors") -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = synset.save(Path(tmp) / name)
            self.client.log_artifact(self.run_id, str(path))

    # ---- Observer protocol ------------------------------------------------------------------
    def on_losses(self, iteration: int, losses: list[float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        first = iteration - len(losses) + 1
        batch = [Metric("loss", v, now, first + i) for i, v in enumerate(losses)]
        self.client.log_batch(self.run_id, metrics=batch)

    def on_eval(self, point: EvalPoint, state: dict[str, Any]) -> None:
        self.log_metrics(
            {
                "val_acc": point.val_acc,
                "test_acc": point.test_acc,
                "distill_seconds": point.distill_seconds,
                "eval_seconds": point.eval_seconds,
            },
            step=point.iteration,
        )
        self.log_grid(point.synset, point.iteration)

    def on_start(self, synset: SyntheticSet) -> None:
        """The starting set (real images for ``init: real``) at step 0: the image card's default view."""
        self.log_grid(synset, 0)

    def log_grid(self, synset: SyntheticSet, step: int | None, title: str = "") -> None:
        """A labelled grid on the image card's step slider and under a stable name.

        ``grids/step_000120.png`` sorts by step and lines up across runs on the compare page;
        ``step=None`` writes ``grids/final.png`` only.
        """
        from ddsearch.gridview import labelled_grid

        label = title or ("start (step 0)" if step == 0 else f"step {step}" if step is not None else "final")
        grid = labelled_grid(synset, title=label, max_per_class=self.grid_per_class)
        if step is not None:
            self.client.log_image(self.run_id, grid, key="synset_grid", step=step)
        name = f"grids/step_{step:06d}.png" if step is not None else "grids/final.png"
        self.client.log_image(self.run_id, grid, artifact_file=name)

    def on_final(self, outcome: RunOutcome) -> None:
        """The final set, its grid and the final evaluation.

        Single-point metrics are logged at step 0, so MLflow draws them as bar charts that
        compare across runs (as for a study's ``best_*``), not as one dot on a step axis.
        """
        self.log_synset(outcome.synset)
        self.log_grid(outcome.synset, None, title=f"final (iteration {outcome.evals[-1].iteration})" if outcome.evals else "final")
        metrics = {"distill_seconds_total": outcome.distill_seconds, "eval_seconds_total": outcome.eval_seconds}
        for row in outcome.table:
            metrics[f"final_val_acc.{row.arch}"] = row.val_mean
            metrics[f"final_test_acc.{row.arch}"] = row.test_mean
        if outcome.table:
            first = outcome.table[0]
            metrics["final_val_acc"] = first.val_mean
            metrics["final_test_acc"] = first.test_mean
            table = pd.DataFrame([row.summary() for row in outcome.table])
            self.client.log_table(self.run_id, table, "cross_arch.json")
        self.log_metrics(metrics, step=0)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
