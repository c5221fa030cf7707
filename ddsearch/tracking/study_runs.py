"""A study's runs: the one owner of run lifecycles and of the ``ddsearch.*`` tag vocabulary.

A study has a parent run (kind ``study``) with one child run per trial (kind ``trial``, linked
by ``mlflow.parentRunId``); ``ddsearch distill`` and ``ddsearch nas`` write single runs of their
own kinds. :class:`StudyRuns` opens, reopens and closes them through one client, so that every
rule about which run is RUNNING, KILLED or FAILED, and why, is written once, here. Callers get
run ids and plain records (:func:`ddsearch.tracking.store.run_record`), never MLflow objects.
"""

from __future__ import annotations

import time
from typing import Any

from ddsearch.tracking.store import (
    NOTE_TAG,
    client,
    delete_tag,
    describe_experiment,
    experiment_id,
    get_run_or_none,
    log_metrics,
    quote,
    run_record,
    search_all,
    set_status,
    set_tags,
)

# ---- the tag vocabulary: every ddsearch.* tag name, and the run kinds ------------------------
STUDY_KIND = "study"
TRIAL_KIND = "trial"
DISTILL_KIND = "distill"
NAS_KIND = "nas"
PARENT_TAG = "mlflow.parentRunId"
TAG_KIND = "ddsearch.kind"
TAG_STUDY = "ddsearch.study"
# trial runs
TAG_TRIAL_ID = "ddsearch.trial_id"
TAG_OPTUNA = "ddsearch.optuna_number"
TAG_ATTEMPTS = "ddsearch.attempts"
TAG_NODE = "ddsearch.node"
TAG_NODE_IP = "ddsearch.node_ip"  # written by older versions; read only
TAG_RESUMED_FROM = "ddsearch.resumed_from_iteration"
TAG_PREVIOUS_FAILURE = "ddsearch.previous_failure"
TAG_STOPPED = "ddsearch.stopped"
TAG_LOST = "ddsearch.lost"
# how a run ended
TAG_FAILURE = "ddsearch.failure"
TAG_OUTCOME = "ddsearch.outcome"
TAG_INTERRUPTED = "ddsearch.interrupted"
# why a resumed study KILLs the trial runs its dead driver left RUNNING (see ``open_parent``)
DRIVER_STOPPED = "the study's driver stopped"
# parent runs
TAG_STATE_DIR = "ddsearch.state_dir"
TAG_SUPERSEDED = "ddsearch.superseded"
TAG_RESUMES = "ddsearch.resumes"
TAG_FINALIZED = "ddsearch.finalized"
TAG_BEST_RUN_ID = "ddsearch.best_run_id"
TAG_BEST_TRIAL = "ddsearch.best_trial"
# NAS runs
TAG_PROXY = "ddsearch.proxy"
TAG_PROXY_RUN = "ddsearch.proxy_run"
TAG_DATASET = "ddsearch.dataset"
TAG_PROTOCOL = "ddsearch.protocol"  # how protocol_* metrics were measured (ddsearch reevaluate)


def _swept_by_resume(tags: dict[str, str]) -> bool:
    """Whether a resumed study's sweep (not Ctrl+C, not a failure) is what marked this run interrupted."""
    return tags.get(TAG_INTERRUPTED) == DRIVER_STOPPED


class StudyRuns:
    """The runs of one study (or one single run) in one experiment, through one client."""

    def __init__(self, uri: str, experiment_id: str, parent_id: str | None = None, mlflow_client: Any = None) -> None:
        self.uri = uri
        self.experiment_id = experiment_id
        self.parent_id = parent_id
        # A trial passes its outbox (ddsearch.tracking.outbox), so its tags and status queue too.
        self.client = mlflow_client or client(uri)

    @classmethod
    def in_experiment(cls, uri: str, experiment_name: str, parent_id: str | None = None) -> "StudyRuns":
        """The experiment by name, created if needed (local stores keep artifacts in mlruns/artifacts)."""
        return cls(uri, experiment_id(experiment_name, uri), parent_id)

    # ---- any run ---------------------------------------------------------------------------
    def create_run(self, run_name: str, kind: str, tags: dict[str, Any] | None = None) -> str:
        """A new run of ``kind`` (study, trial, distill, nas) in this experiment."""
        tags = {TAG_KIND: kind} | {k: str(v) for k, v in (tags or {}).items()}
        return self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        set_tags(self.uri, run_id, tags, self.client)

    def set_note(self, run_id: str, text: str) -> None:
        """The run's one-line description in the MLflow UI."""
        self.set_tags(run_id, {NOTE_TAG: text})

    def fail(self, run_id: str, reason: str, status: str = "FAILED", outcome: str | None = "failed") -> None:
        """End a run as FAILED (or KILLED) with its reason; ``outcome=None`` leaves the outcome unset."""
        self.set_tags(run_id, {TAG_FAILURE: reason} | ({TAG_OUTCOME: outcome} if outcome else {}))
        set_status(self.uri, run_id, status, self.client)

    def fail_after(self, run_id: str, err: BaseException) -> None:
        """A run that an exception ended: KILLED for Ctrl+C, else FAILED, with the error as its reason."""
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        self.fail(run_id, f"{type(err).__name__}: {err}", status, outcome=None)

    def finish(self, run_id: str, outcome: str | None = None, note: str | None = None,
               stopped: str | None = None) -> None:
        """End a run as FINISHED; a trial says how (finished, or stopped early and why)."""
        tags: dict[str, Any] = {}
        if outcome:
            tags[TAG_OUTCOME] = outcome
        if stopped:
            tags[TAG_STOPPED] = stopped
        if note:
            tags[NOTE_TAG] = note
        if tags:
            self.set_tags(run_id, tags)
        set_status(self.uri, run_id, "FINISHED", self.client)

    def record_protocol(self, run_id: str, metrics: dict[str, float], protocol: str) -> None:
        """A re-evaluation of a finished run's set: its ``protocol_*`` metrics and how they were measured."""
        log_metrics(self.uri, run_id, metrics, mlflow_client=self.client)
        self.set_tags(run_id, {TAG_PROTOCOL: protocol})

    # ---- the parent run --------------------------------------------------------------------
    def create_parent(self, study_name: str, tags: dict[str, Any] | None = None) -> str:
        self.parent_id = self.create_run(study_name, STUDY_KIND, {TAG_STUDY: study_name} | (tags or {}))
        return self.parent_id

    def open_parent(self, study_name: str, previous_id: str | None, restored: bool, description: str,
                    state_dir: str) -> bool:
        """Make the study's parent run current; True when a new one was created.

        A resumed study (``restored``) reopens its previous parent run and closes the trial runs
        its dead driver left RUNNING; a fresh start marks the previous one superseded.
        """
        parent = get_run_or_none(self.uri, previous_id, self.client) if previous_id else None
        if parent is not None and not restored:
            self.set_tags(parent.info.run_id, {TAG_SUPERSEDED: "a fresh start of the study replaced this run"})
            if parent.info.status == "RUNNING":
                set_status(self.uri, parent.info.run_id, "KILLED", self.client)
            parent = None
        describe_experiment(self.uri, self.experiment_id, description)
        if parent is None:
            self.create_parent(study_name, {
                TAG_STATE_DIR: state_dir,
                NOTE_TAG: f"Study {study_name}: running. Its trials are the nested runs below it.",
            })
            return True
        self.parent_id = parent.info.run_id
        set_status(self.uri, self.parent_id, "RUNNING", self.client)
        for tag in (TAG_INTERRUPTED, TAG_FAILURE, TAG_OUTCOME):
            if tag in parent.data.tags:
                delete_tag(self.uri, self.parent_id, tag, self.client)
        self.set_tags(self.parent_id, {TAG_RESUMES: int(parent.data.tags.get(TAG_RESUMES, "0")) + 1})
        # their trials died with the driver; a resumed trial reopens its run
        self.close_running(DRIVER_STOPPED)
        return False

    def interrupt_parent(self, why: str) -> None:
        """The study stopped with trials unfinished: KILLED, saying how to finish it."""
        self.set_tags(self.parent_id, {TAG_INTERRUPTED: why})
        set_status(self.uri, self.parent_id, "KILLED", self.client)

    def mark_best(self, run_id: str, run_name: str) -> None:
        self.set_tags(self.parent_id, {TAG_BEST_RUN_ID: run_id, TAG_BEST_TRIAL: run_name})

    def finish_parent(self, note: str) -> None:
        """The study's end: its note, when it was finalised, FINISHED."""
        self.set_note(self.parent_id, note)
        self.set_tags(self.parent_id, {TAG_FINALIZED: time.strftime("%Y-%m-%d %H:%M:%S")})
        set_status(self.uri, self.parent_id, "FINISHED", self.client)

    # ---- trial runs ------------------------------------------------------------------------
    def _children(self) -> list:
        """Every trial run of the study (all statuses), oldest first, as MLflow runs."""
        query = f"tags.`{PARENT_TAG}` = {quote(self.parent_id)}"
        return search_all(self.client, [self.experiment_id], query, order_by=["attributes.start_time ASC"])

    def trial_records(self) -> list[dict[str, Any]]:
        """Every trial run of the study as plain records, oldest first."""
        return [run_record(r) for r in self._children()]

    def _find_trial(self, trial_id: str):
        query = f"tags.`{PARENT_TAG}` = {quote(self.parent_id)} and tags.`{TAG_TRIAL_ID}` = {quote(trial_id)}"
        found = self.client.search_runs([self.experiment_id], filter_string=query, max_results=10,
                                        order_by=["attributes.start_time ASC"])
        return found[0] if found else None

    def open_trial(self, trial_id: str, run_id: str | None, run_name: str, tags: dict[str, Any]) -> str:
        """The trial's child run: the one from its checkpoint, else the one tagged with its trial id,
        else a new one. A retried or resumed trial so keeps writing its own run (no duplicates)."""
        run = get_run_or_none(self.uri, run_id, self.client) if run_id else None
        if run is None:
            run = self._find_trial(trial_id)
        if run is None:
            run = self.client.create_run(
                self.experiment_id, run_name=run_name,
                tags={PARENT_TAG: self.parent_id, TAG_KIND: TRIAL_KIND, TAG_TRIAL_ID: trial_id},
            )
        run_id = run.info.run_id
        attempts = int(run.data.tags.get(TAG_ATTEMPTS, "0")) + 1
        if run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        previous = run.data.tags.get(TAG_FAILURE)
        if previous:  # a retry: keep the reason of the attempt before, clear the current failure
            tags = tags | {TAG_PREVIOUS_FAILURE: previous}
            delete_tag(self.uri, run_id, TAG_FAILURE, self.client)
        for key in (TAG_OUTCOME, TAG_INTERRUPTED):
            if key in run.data.tags:
                delete_tag(self.uri, run_id, key, self.client)
        self.set_tags(run_id, tags | {TAG_ATTEMPTS: attempts})
        return run_id

    def unclosed_trial(self, trial_id: str, run_id: str | None = None) -> dict[str, Any] | None:
        """The trial's run as a record (by run id, else by trial id) while nothing has ended it; else None.

        That is RUNNING, or KILLED only by a resume's sweep: Tune may have ended the trial before its
        driver died (the time budget cut it, or the callback was about to close it), and then Tune
        does not run it again, so its end is still to be written.
        """
        run = get_run_or_none(self.uri, run_id, self.client) if run_id else None
        if run is None:
            run = self._find_trial(trial_id)
        if run is None:
            return None
        swept = run.info.status == "KILLED" and _swept_by_resume(run.data.tags)
        return run_record(run) if run.info.status == "RUNNING" or swept else None

    def clear_sweep(self, record: dict[str, Any]) -> None:
        """Before a run from ``unclosed_trial`` is closed for real: drop a resume sweep's 'interrupted' tag."""
        if _swept_by_resume(record["tags"]):
            delete_tag(self.uri, record["run_id"], TAG_INTERRUPTED, self.client)

    def note_retry(self, trial_id: str, reason: str) -> None:
        """Tune retries the trial (e.g. its node died): why the attempt before ended, on the run it keeps."""
        run = self._find_trial(trial_id)
        if run is not None:
            self.set_tags(run.info.run_id, {TAG_PREVIOUS_FAILURE: reason})

    def close_running(self, reason: str, outcome: str | None = None) -> int:
        """KILL every trial run still RUNNING, saying why; how many there were."""
        closed = 0
        for child in self._children():
            if child.info.status == "RUNNING":
                self.set_tags(child.info.run_id, ({TAG_OUTCOME: outcome} if outcome else {})
                              | {TAG_INTERRUPTED: reason[:1000]})
                set_status(self.uri, child.info.run_id, "KILLED", self.client)
                closed += 1
        return closed

    def mark_lost(self, known_trial_ids: set[str]) -> None:
        """Close and mark the trial runs whose Tune trial is unknown to the saved experiment.

        Tune had not saved such a trial when its driver was killed, and the resumed study drew
        a new sample in its place; the run stays, for the record.
        """
        for child in self._children():
            if child.data.tags.get(TAG_TRIAL_ID) in known_trial_ids or child.data.tags.get(TAG_OUTCOME) == "lost":
                continue
            self.set_tags(child.info.run_id, {
                TAG_OUTCOME: "lost",
                TAG_LOST: "the driver stopped before Tune saved this trial; a resumed study replaced it",
            })
            if child.info.status == "RUNNING":
                set_status(self.uri, child.info.run_id, "KILLED", self.client)
