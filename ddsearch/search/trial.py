"""The Ray Tune trainable: one trial = one distillation with evaluation, recorded in MLflow.

The real data arrive through the object store (``tune.with_parameters`` puts them once; each
node fetches them once), never reloaded per trial. The trial knows no method: it builds
``study.with_params(config)`` and calls :func:`ddsearch.runner.run_distillation` with an
observer that logs to the trial's MLflow child run and, at every evaluation point, reports
``val_acc`` to Tune with a checkpoint (distiller state + MLflow run id). A retried or resumed
trial restores that state and keeps writing the same MLflow run.

Every MLflow write of a trial goes through its :class:`~ddsearch.tracking.outbox.Outbox`: when
the tracking server is away the trial keeps training, its writes queue (and travel in its
checkpoints), and they are sent in order once the server is back; the trial fails only after
``tracking.outage_s`` without a server.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddsearch.config import Study
from ddsearch.data import RealData
from ddsearch.events import EvalPoint, RunOutcome
from ddsearch.runner import DivergedError, run_distillation, with_resolved_precision
from ddsearch.study_data import resolve_device
from ddsearch.search.notes import trial_note
from ddsearch.search.space import FAILED_KEY, FINAL_KEY, OPTUNA_NUMBER_KEY
from ddsearch.tracking import outbox as tracking_outbox
from ddsearch.tracking.run_logger import RunLogger
from ddsearch.tracking.store import NOTE_TAG, client, get_run_record
from ddsearch.tracking.study_runs import TAG_NODE, TAG_OPTUNA, TAG_RESUMED_FROM, TAG_STUDY, StudyRuns

STATE_FILE = "distiller.safetensors"
META_FILE = "trial.json"
OUTBOX_DIR = "outbox"


@dataclass(frozen=True)
class TrialSetup:
    """Everything a trial needs besides its config and the data (small; pickled per trial)."""

    study: Study
    tracking_uri: str  # what trials log to: the study's tracking server, or a remote server
    experiment_id: str
    parent_run_id: str


def _node() -> dict[str, str]:
    import ray

    try:
        node_id = ray.get_runtime_context().get_node_id()
        ip = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - outside Ray (unit tests)
        node_id, ip = "local", "127.0.0.1"
    # one low-key tag ("<ip> <node id>"): where the latest attempt ran
    return {TAG_NODE: f"{ip} {node_id}"}


class TuneObserver:
    """Runner observer for a trial: MLflow child run + Tune reports and checkpoints."""

    def __init__(self, logger: RunLogger, uri: str, study: Study, report: Any, already_final: bool,
                 outbox: tracking_outbox.Outbox | None = None) -> None:
        self.logger = logger
        self.outbox = outbox  # its pending writes travel in each checkpoint
        self.uri = uri
        self.study = study
        self.report = report  # ray.tune.report (injected, so the observer is testable without Ray)
        self.already_final = already_final
        self.last: EvalPoint | None = None

    def metrics(self, val_acc: float, test_acc: float, iteration: int, distill_seconds: float, final: bool) -> dict[str, Any]:
        return {
            "val_acc": float(val_acc),
            "test_acc": float(test_acc),
            "iteration": int(iteration),
            "distill_seconds": float(distill_seconds),
            "ipc": int(self.study.method.ipc),
            FINAL_KEY: int(final),
            FAILED_KEY: 0,
            "mlflow_run_id": self.logger.run_id,
        }

    # ---- Observer protocol ----------------------------------------------------------------
    def on_losses(self, iteration: int, losses: list[float]) -> None:
        self.logger.on_losses(iteration, losses)

    def on_start(self, synset: Any) -> None:
        self.logger.on_start(synset)

    def on_eval(self, point: EvalPoint, state: dict[str, Any]) -> None:
        from ray import tune

        from ddsearch.checkpoint import save_state

        self.last = point
        self.logger.on_eval(point, state)
        self.logger.log_metrics({"iteration": point.iteration}, step=point.iteration)
        self.logger.log_synset(point.synset)  # latest set, so a trial stopped early still has one
        with tempfile.TemporaryDirectory(prefix="ddsearch-ckpt-", dir=trial_scratch()) as tmp:
            save_state(state, Path(tmp) / STATE_FILE)
            # the evaluation travels too: a resume from the last iteration's checkpoint evaluates nothing new
            meta = {"mlflow_run_id": self.logger.run_id, "iteration": point.iteration,
                    "val_acc": float(point.val_acc), "test_acc": float(point.test_acc)}
            (Path(tmp) / META_FILE).write_text(json.dumps(meta))
            if self.outbox is not None and self.outbox.pending:
                self.outbox.save(Path(tmp) / OUTBOX_DIR)
            metrics = self.metrics(point.val_acc, point.test_acc, point.iteration, point.distill_seconds, final=False)
            self.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    def on_final(self, outcome: RunOutcome) -> None:
        if not self.already_final:  # a resumed trial whose final table was logged already
            self.logger.on_final(outcome)


def trial_scratch() -> str | None:
    """Where a trial's scratch folders go: its Tune working directory (inside Ray's session folder),
    not the system temp folder, which a trial whose process is killed (a killed driver, a lost node)
    would litter, as its ``finally`` never runs. ``None`` (the temp folder) when Tune was told to
    keep the launch directory (``RAY_CHDIR_TO_TRIAL_DIR=0``): that must stay clean."""
    return None if os.environ.get("RAY_CHDIR_TO_TRIAL_DIR") == "0" else os.getcwd()


def load_checkpoint(outbox: tracking_outbox.Outbox | None = None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(distiller state, meta) from Tune's checkpoint of this trial, or (None, {}); the writes it
    still had queued go back into ``outbox``."""
    from ray import tune

    from ddsearch.checkpoint import load_state

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, {}
    with checkpoint.as_directory() as folder:
        state = load_state(Path(folder) / STATE_FILE)
        meta = json.loads((Path(folder) / META_FILE).read_text())
        if outbox is not None:
            meta["queued_writes"] = outbox.restore(Path(folder) / OUTBOX_DIR)
    return state, meta


def run_trial(config: dict[str, Any], data: RealData, setup: TrialSetup) -> None:
    """The Tune function trainable (``tune.with_parameters(run_trial, data=..., setup=...)``)."""
    from ray import tune

    searched = {k: v for k, v in config.items() if k in setup.study.search}
    optuna_number = config.get(OPTUNA_NUMBER_KEY)
    device = resolve_device(setup.study.device)
    study = with_resolved_precision(setup.study.with_params(searched), device)
    if data.device != device:
        data = data.to(device)

    trial_id = tune.get_context().get_trial_id()
    uri = setup.tracking_uri
    tracking_outbox.use_quick_client()  # the outbox retries; a dead server must not stall a request for minutes
    outbox = tracking_outbox.Outbox(client(uri), "", tempfile.mkdtemp(prefix="ddsearch-outbox-", dir=trial_scratch()),
                                    setup.study.tracking.outage_s, uri)
    try:
        _run_trial(data, setup, searched, optuna_number, study, trial_id, uri, outbox)
    finally:
        outbox.close()


def _reachable(call: Any, outbox: tracking_outbox.Outbox) -> Any:
    """What a trial cannot queue (its run id, reads): retried while the server is away."""
    return tracking_outbox.call_until_reachable(call, outbox.outage_s, outbox.where)


def _run_trial(data: RealData, setup: TrialSetup, searched: dict[str, Any], optuna_number: Any, study: Study,
               trial_id: str, uri: str, outbox: tracking_outbox.Outbox) -> None:
    from ray import tune

    resume_state, meta = load_checkpoint(outbox)
    name = f"trial-{optuna_number:03d}" if isinstance(optuna_number, int) else f"trial-{trial_id}"
    # No tracking URI tag: a study's server is temporary, so it would point at nothing later.
    tags = {
        TAG_STUDY: study.name,
        TAG_OPTUNA: optuna_number,
        TAG_RESUMED_FROM: int(resume_state["iteration"]) if resume_state else 0,
        NOTE_TAG: trial_note(name, study.name, searched, "Running."),
        **_node(),
    }
    run_id = _reachable(lambda: StudyRuns(uri, setup.experiment_id, setup.parent_run_id).open_trial(
        trial_id, meta.get("mlflow_run_id"), name, tags), outbox)
    outbox.run_id = run_id
    # Every later write of the run is queued, and sent at once while the server answers.
    runs = StudyRuns(uri, setup.experiment_id, setup.parent_run_id, mlflow_client=outbox)
    logger = RunLogger(run_id, uri)
    logger.client = outbox
    record = _reachable(lambda: get_run_record(uri, run_id), outbox)
    already_final = record is not None and "final_val_acc" in record["metrics"]
    if resume_state is not None:
        _reachable(outbox.skip_logged_steps, outbox)
    if resume_state is None:
        # Only the searched settings: the fixed ones are the parent's params (and config.json has
        # them all). MLflow prints a run's params above its image card; 30 identical ones hid it.
        _reachable(lambda: logger.log_params({f"method.{k}": v for k, v in searched.items()}), outbox)
        logger.log_json(study.model_dump(mode="json"), "config.json")

    observer = TuneObserver(logger, uri, study, tune.report, already_final, outbox)
    try:
        outcome = run_distillation(study, data, observer=observer, resume_state=resume_state, progress=False)
    except DivergedError as err:
        # A diverged trial fails for good (a retry would diverge again): record it and end the
        # trial normally, so the study goes on and no retry is spent on it.
        if err.last_good is not None:
            logger.log_synset(err.last_good, "last_good_synset.safetensors")
        runs.set_note(run_id, trial_note(name, study.name, searched, f"Failed: diverged at iteration {err.iteration}."))
        runs.fail(run_id, str(err), outcome="diverged")
        outbox.drain()
        last = observer.last
        tune.report({
            "val_acc": math.nan, "test_acc": math.nan, "iteration": int(err.iteration),
            "distill_seconds": float(last.distill_seconds) if last else 0.0, "ipc": int(study.method.ipc),
            FINAL_KEY: 0, FAILED_KEY: 1, "failure": str(err)[:500], "mlflow_run_id": run_id,
        })
        return
    except SystemExit:
        # Tune stopped the trial (ASHA, time budget): its report call exits the trial's thread.
        # The driver's callback closes the run as stopped early; what is queued goes first.
        _drain_quietly(outbox, min(outbox.outage_s, 60.0))
        raise
    except BaseException as err:
        # Tune retries the trial from its last checkpoint (FailureConfig.max_failures); the retry
        # reopens this run. Record why this attempt ended.
        runs.fail(run_id, f"{type(err).__name__}: {err}"[:5000])
        _drain_quietly(outbox, 0.0 if isinstance(err, tracking_outbox.TrackingOutageError) else 10.0)
        raise

    # val_acc/test_acc keep one meaning everywhere: the checkpoint evaluation, here at the last
    # iteration (the objective Optuna is told). The final evaluation travels as final_*.
    val, test = last_evaluation(outcome.evals, meta)
    first = outcome.table[0] if outcome.table else None
    note = f"Finished: val_acc {val:.4f} at iteration {study.method.iterations}"
    if first is not None:
        note += f", final_val_acc {first.val_mean:.4f}, final_test_acc {first.test_mean:.4f} ({first.arch})"
    runs.finish(run_id, outcome="finished", note=trial_note(name, study.name, searched, note + "."))
    outbox.drain()  # everything is on the server before Tune hears the trial ended
    final = observer.metrics(val, test, study.method.iterations, outcome.distill_seconds, final=True)
    # what this attempt delivered: the load test counts the store's rows against it
    final |= {"mlflow_metric_values": outbox.metrics_delivered, "tracking_outages": outbox.outages}
    if first is not None:
        final |= {"final_val_acc": float(first.val_mean), "final_test_acc": float(first.test_mean)}
    tune.report(final | {"eval_seconds": float(outcome.eval_seconds)})


def last_evaluation(evals: list[EvalPoint], meta: dict[str, Any]) -> tuple[float, float]:
    """(val_acc, test_acc) at the trial's last iteration: this attempt's last evaluation, or, when
    it resumed from the last iteration's checkpoint and so evaluated nothing, the checkpoint's."""
    if evals:
        return float(evals[-1].val_acc), float(evals[-1].test_acc)
    return float(meta.get("val_acc", math.nan)), float(meta.get("test_acc", math.nan))


def _drain_quietly(outbox: tracking_outbox.Outbox, limit_s: float) -> None:
    """Best effort on the way out of a failed or stopped attempt (the retry resends from its checkpoint)."""
    try:
        outbox.drain(limit_s)
    except Exception as err:  # noqa: BLE001 - the attempt's own error (or stop) is what matters
        import sys

        print(f"ddsearch: warning: {outbox.pending} tracking write(s) not sent: {err}", file=sys.stderr)
