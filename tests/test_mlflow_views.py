"""What a new user reads in MLflow about a study (issue 17), on one tiny study run once.

Through the MLflow API: each metric name means one thing everywhere, every trial carries the
objective, grids start at step 0 under stable names, the leaderboard's columns, run names and
links, notes and tags, and ``report.html``. Then in a real headless Chromium (Playwright driving
Debian's ``chromium``) against ``ddsearch ui``: the runs table lists the trials under the study,
the image card's default view shows an image, and report.html renders in the artifact viewer.
Set ``DDSEARCH_SCREENSHOTS=docs`` to refresh the README's screenshots.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from conftest import TINY_CONV, TINY_CONV_BN

NAME = "views"
EVAL_EVERY = 2
ITERATIONS = 6
# Trial 0 runs the study's own settings (ipc 1, the weakest); later trials draw ipc up to 3, so
# ASHA (rung at iteration 2) lets most finish and stops the weak ones: both kinds of trial.
STUDY = {
    "name": NAME,
    "device": "cpu",
    "dataset": {"name": "digits"},
    "method": {"name": "datadam", "ipc": 1, "iterations": ITERATIONS, "arch": TINY_CONV_BN, "batch_real": 16},
    "evaluation": {"arch": TINY_CONV, "eval_every": EVAL_EVERY, "log_every": EVAL_EVERY, "epochs": 30,
                   "final_epochs": 30, "final_repeats": 1},
    "evaluators": [TINY_CONV, "MLP"],
    "search": {"ipc": {"type": "int", "low": 1, "high": 3},
               "lambda_mmd": {"type": "float", "low": 0.001, "high": 0.1, "log": True}},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "budget": {"num_samples": 4, "max_concurrent": 2, "max_failures": 0},
    "resources": {"cpu": 1},
}


def _env() -> dict[str, str]:
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> SimpleNamespace:
    """One tiny study, run once for every test here (about a minute on 2 cores)."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("views")
    path = folder / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    done = subprocess.run([sys.executable, "-m", "ddsearch.cli", "tune", str(path)], cwd=folder, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    (parent,) = [r for r in runs if r.data.tags.get("ddsearch.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == STUDY["budget"]["num_samples"]

    def text(run_id: str, artifact: str) -> str:
        return Path(client.download_artifacts(run_id, artifact, str(folder / "dl" / run_id))).read_text()

    board = list(_csv(text(parent.info.run_id, "leaderboard.csv")))
    return SimpleNamespace(folder=folder, path=path, client=client, experiment=experiment, parent=parent,
                           children=children, by_name={c.info.run_name: c for c in children}, board=board, text=text,
                           server_log=(folder / ".ddsearch" / NAME / "mlflow-server.log"))


def _csv(text: str) -> list[dict[str, str]]:
    import csv

    return list(csv.DictReader(io.StringIO(text)))


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return found


def _finished(run) -> bool:
    return run.data.tags.get("ddsearch.outcome") == "finished"


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# ---- through the MLflow API ----------------------------------------------------------------------

def test_each_metric_name_means_one_thing_everywhere(study: SimpleNamespace) -> None:
    """val_acc is the checkpoint evaluation in the runs, the leaderboard, best_config.json, the parent
    and Optuna; final_* is the final evaluation; early-stopped trials are not ranked among the rest."""
    import optuna

    client = study.client
    finished = [c for c in study.children if _finished(c)]
    stopped = [c for c in study.children if c.data.tags.get("ddsearch.outcome") == "stopped_early"]
    assert finished and len(finished) + len(stopped) == len(study.children)
    rows = {row["run"]: row for row in study.board}
    for run in study.children:
        history = _history(client, run.info.run_id, "val_acc")
        steps = [s for s, _ in history]
        assert steps == list(range(EVAL_EVERY, steps[-1] + 1, EVAL_EVERY)), steps  # one point per evaluation
        assert run.data.metrics["val_acc"] == history[-1][1]  # the latest is the last evaluation
        row = rows[run.info.run_name]
        assert float(row["val_acc"]) == pytest.approx(run.data.metrics["val_acc"])
        assert float(row["test_acc"]) == pytest.approx(run.data.metrics["test_acc"])
        if _finished(run):
            assert steps[-1] == ITERATIONS and row["rank"] != ""
            cross = json.loads(study.text(run.info.run_id, "cross_arch.json"))
            first = dict(zip(cross["columns"], cross["data"][0]))
            assert run.data.metrics["final_val_acc"] == pytest.approx(first["val_acc_mean"])
            assert float(row["final_val_acc"]) == pytest.approx(first["val_acc_mean"])
        else:
            assert steps[-1] < ITERATIONS and row["rank"] == "" and row["final_val_acc"] == ""
            assert not any(k.startswith("final_") for k in run.data.metrics)
    ranked = [r for r in study.board if r["rank"]]
    assert [int(r["rank"]) for r in ranked] == list(range(1, len(finished) + 1))
    assert study.board[: len(ranked)] == ranked  # ranked rows first, in val_acc order
    assert [float(r["val_acc"]) for r in ranked] == sorted((float(r["val_acc"]) for r in ranked), reverse=True)

    best = study.by_name[ranked[0]["run"]]
    config = json.loads(study.text(study.parent.info.run_id, "best/best_config.json"))
    assert config["val_acc"] == pytest.approx(best.data.metrics["val_acc"])
    assert config["final_val_acc"] == pytest.approx(best.data.metrics["final_val_acc"])
    parent = study.parent.data.metrics
    assert parent["best_val_acc"] == pytest.approx(best.data.metrics["val_acc"])
    assert parent["best_final_val_acc"] == pytest.approx(best.data.metrics["final_val_acc"])
    legend = json.loads(study.text(study.parent.info.run_id, "leaderboard_columns.json"))
    assert "checkpoint evaluation" in legend["val_acc"] and "final evaluation" in legend["final_val_acc"]
    assert f"{STUDY['evaluation']['epochs']} epochs" in legend["val_acc"]

    ot = optuna.load_study(study_name=NAME, storage=f"sqlite:///{study.folder}/.ddsearch/{NAME}/optuna.db")
    for trial in ot.get_trials(deepcopy=False):
        run = study.by_name[f"trial-{trial.number:03d}"]
        # Optuna's intermediate steps are the runs' steps (iterations), its values the runs' val_acc
        assert sorted(trial.intermediate_values.items()) == pytest.approx(_history(client, run.info.run_id, "val_acc"))
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert _finished(run) and trial.values[0] == pytest.approx(run.data.metrics["val_acc"])
        else:
            assert trial.state == optuna.trial.TrialState.PRUNED and not _finished(run)


def test_every_trial_has_the_objective_and_comparable_single_points(study: SimpleNamespace) -> None:
    """MLflow draws a metric a run lacks above the best in parallel coordinates: every trial has
    the objective; only final_* (finished trials) may be missing. Single points sit at step 0."""
    client = study.client
    keys = [set(c.data.metrics) for c in study.children]
    shared = set.intersection(*keys)
    assert {"val_acc", "test_acc", "loss", "iteration"} <= shared
    assert all(k.startswith("final_") or k.endswith("_total") for k in set.union(*keys) - shared)
    for run in study.children:
        if _finished(run):
            for key in ("final_val_acc", "final_test_acc", "distill_seconds_total", "eval_seconds_total"):
                assert [s for s, _ in _history(client, run.info.run_id, key)] == [0], key
    parent = study.parent.data.metrics
    counts = {}
    for run in study.children:
        outcome = run.data.tags["ddsearch.outcome"]
        counts[outcome] = counts.get(outcome, 0) + 1
    assert parent["trials"] == len(study.children)
    assert parent["trials_finished"] == counts.get("finished", 0)
    assert parent.get("trials_stopped_early", 0) == counts.get("stopped_early", 0)
    for run in study.children:
        if run.data.tags["ddsearch.outcome"] == "stopped_early":  # no time budget: the scheduler did it
            assert "by the ASHA scheduler" in run.data.tags["ddsearch.stopped"]
            assert "time budget" not in run.data.tags["ddsearch.stopped"]


def test_grids_start_at_step_0_and_have_stable_names(study: SimpleNamespace) -> None:
    from PIL import Image

    client = study.client
    for run in study.children:
        names = _artifacts(client, run.info.run_id)
        steps = [s for s, _ in _history(client, run.info.run_id, "val_acc")]
        grids = sorted(n for n in names if n.startswith("grids/step_"))
        assert grids == [f"grids/step_{s:06d}.png" for s in [0, *steps]]
        assert ("grids/final.png" in names) == _finished(run)
        # the image card's slider: one image per step, starting at 0 (the real images)
        slider = {int(m.group(1)) for n in names if (m := re.match(r"images/synset_grid\+step\+(\d+)\+", n))}
        assert slider == {0, *steps}
        image = Image.open(client.download_artifacts(run.info.run_id, "grids/step_000000.png",
                                                     str(study.folder / "dl" / run.info.run_id)))
        assert max(image.size) >= 512, image.size  # legible at its native size


def test_one_name_per_trial_leaderboard_columns_and_links(study: SimpleNamespace) -> None:
    board, parent = study.board, study.parent
    keys = sorted(STUDY["search"])
    assert list(board[0])[: 4 + len(keys)] == ["rank", "run", "val_acc", "test_acc", *keys]
    for row in board:
        run = study.by_name[row["run"]]
        assert row["run"] == f"trial-{int(run.data.tags['ddsearch.optuna_number']):03d}"
        assert row["ray_trial_id"] == run.data.tags["ddsearch.trial_id"]
        assert row["link"] == f"#/experiments/{study.experiment.experiment_id}/runs/{run.info.run_id}"
        for key in keys:
            assert float(row[key]) == pytest.approx(float(run.data.params[f"method.{key}"]))
    best = board[0]["run"]
    assert parent.data.tags["ddsearch.best_trial"] == best
    assert parent.data.tags["ddsearch.best_run_id"] == study.by_name[best].info.run_id
    assert json.loads(study.text(parent.info.run_id, "best/best_config.json"))["run_name"] == best


def test_tags_and_descriptions(study: SimpleNamespace) -> None:
    note = "mlflow.note.content"
    description = study.experiment.tags[note]
    for word in ("datadam", "digits", "maximise val_acc", "4 trials, 2 at a time"):
        assert word in description, word
    assert "trials" in study.parent.data.tags[note] and "report.html" in study.parent.data.tags[note]
    for run in study.children:
        tags = run.data.tags
        assert tags[note].startswith(f"{run.info.run_name} of study {NAME}: ")
        assert "Running" not in tags[note]  # replaced by how the trial ended
        assert "\n" not in tags[note]
        assert not {"ddsearch.tracking_uri", "ddsearch.node_ip", "ddsearch.node_id"} & set(tags)
        assert len(tags["ddsearch.node"].split()) == 2  # "<ip> <node id>", one low-key tag
        assert set(run.data.params) == {f"method.{k}" for k in STUDY["search"]}  # fixed settings: on the parent
    assert "POST /api/2.0/mlflow/runs/log-batch" in study.server_log.read_text()  # trials logged over HTTP


def test_report_page_holds_every_trial_and_is_self_contained(study: SimpleNamespace, monkeypatch, capsys) -> None:
    from ddsearch.cli import main

    page = study.text(study.parent.info.run_id, "report.html")
    assert len(page.encode()) < 2_000_000
    for run in study.children:
        assert f'data-run="{run.info.run_name}"' in page  # a leaderboard row, and a grid, per trial
        assert f'<figure data-run="{run.info.run_name}">' in page
    assert page.count("<svg") == 2 and page.count("<polyline") >= 2 * len(study.children) - 2
    assert "param_importances" in page or sum(_finished(c) for c in study.children) < 2
    assert "Cross-architecture table of the best trial" in page and "MLP" in page
    assert "<script" not in page.lower() and not re.search(r"""(src|href)=["']?//""", page)
    assert not re.search(r"""src=["']?https?:""", page)  # nothing fetched: images are data URIs

    monkeypatch.chdir(study.folder)
    out = study.folder / "local.html"
    assert main(["report", str(study.path), "--html", str(out)]) == 0
    assert f"report page: {out}" in capsys.readouterr().out
    assert out.read_text() == page  # the same page as the parent run's


def test_stop_reasons_name_the_time_budget_or_the_scheduler() -> None:
    from ddsearch.search.notes import stop_reason

    assert "by the ASHA scheduler" in stop_reason(40, elapsed_s=30.0, time_budget_s=None, scheduler="asha")
    assert "by the ASHA scheduler" in stop_reason(40, elapsed_s=30.0, time_budget_s=600.0, scheduler="asha")
    budget = stop_reason(40, elapsed_s=600.5, time_budget_s=600.0, scheduler="asha")
    assert "time budget (600s)" in budget and "ASHA" not in budget


def test_grid_says_how_many_images_were_left_out() -> None:
    import numpy as np
    import torch

    from ddsearch.gridview import grid_caption, labelled_grid
    from ddsearch.synset import SyntheticSet

    full = SyntheticSet(torch.rand(30, 1, 8, 8), torch.arange(3).repeat(10), 3, class_names=["a", "b", "c"])
    shown = labelled_grid(full, max_per_class=4)  # 10 per class, 4 shown
    everything = labelled_grid(full)
    assert max(shown.shape[:2]) >= 512 and max(everything.shape[:2]) >= 512
    assert shown.dtype == np.uint8 and shown.shape[2] == 3
    assert grid_caption([10, 10, 10], 4, "step 40") == "step 40 · showing 4 of 10 images per class (18 left out)"
    assert grid_caption([10, 10, 10], 50) == "3 classes x 10 images"


# ---- in a real browser ---------------------------------------------------------------------------

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ui(study: SimpleNamespace):
    """`ddsearch ui` on the study's store, on a free loopback port; its process group is stopped at the end."""
    port = _free_port()
    log = open(study.folder / "ui.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ddsearch.cli", "ui", "--port", str(port)], cwd=study.folder,
                            env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (study.folder / "ui.log").read_text()[-2000:]
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "the MLflow UI did not start"
                time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _shot(page: Any, name: str) -> None:
    folder = os.environ.get("DDSEARCH_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name))


def _expand_study(page: Any, expect: Any, parent_href: str, trial: str) -> None:
    """Show the trials nested under the study's run (the UI remembers whether it was open)."""
    expect(page.locator(f"a[href='{parent_href}']").first).to_be_visible()
    page.wait_for_timeout(1000)
    if not page.get_by_role("link", name=trial, exact=True).is_visible():
        page.locator("button[data-component-id$='runnamecellrenderer.tsx_46']").first.click()


@pytest.mark.slow
def test_the_mlflow_ui_in_a_real_browser(study: SimpleNamespace, ui: str) -> None:
    executable = _chromium()
    if executable is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it with apt-get)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=90_000)  # the UI is slow to draw on a busy 2-core machine
    exp, parent = study.experiment.experiment_id, study.parent.info.run_id
    trial = sorted(study.by_name)[0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            # the first visit of a new user, less MLflow's assistant panel that covers a third of the page
            context.add_init_script("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                                    "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true')")
            page = context.new_page()
            page.set_default_timeout(60_000)

            # the runs table: the study's parent run, its trials nested under it
            page.goto(f"{ui}/#/experiments/{exp}/runs?workflowType=machine_learning")
            expect(page.get_by_text("ddsearch study").first).to_be_visible()  # the experiment description
            _expand_study(page, expect, f"#/experiments/{exp}/runs/{parent}", trial)
            for name in study.by_name:
                expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
            _shot(page, "ui_runs.png")

            # the image card's default view (step 0) shows an image
            page.goto(f"{ui}/#/experiments/{exp}/runs?workflowType=machine_learning&compareRunsMode=CHART")
            _expand_study(page, expect, f"#/experiments/{exp}/runs/{parent}", trial)
            page.get_by_placeholder("Search metric charts").fill("synset_grid")
            image = page.locator("img[src*='synset_grid']").first
            expect(image).to_be_visible()
            assert "step%2B0%2B" in image.get_attribute("src")
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            assert page.get_by_text("No image logged").count() == 0
            _shot(page, "ui_image_card.png")

            # report.html in the artifact viewer
            page.goto(f"{ui}/#/experiments/{exp}/runs/{parent}/artifacts/report.html?workflowType=machine_learning")
            frame = page.frame_locator("iframe.mlflow-html-iframe")
            expect(frame.get_by_role("heading", name="Leaderboard")).to_be_visible()
            for name in study.by_name:
                expect(frame.locator(f'tr[data-run="{name}"]')).to_be_visible()
            grids = frame.locator("figure[data-run] img")
            assert grids.count() == len(study.children)
            assert all(grids.nth(i).evaluate("img => img.naturalWidth > 0") for i in range(grids.count()))
            _shot(page, "ui_report.png")
        finally:
            browser.close()


# ---- after the views: `ddsearch reevaluate` adds to this study ------------------------------------
def test_reevaluate_trains_the_defaults_and_the_best_again_and_logs_them(study: SimpleNamespace) -> None:
    """Trial 0 and the best finished trial (by final_val_acc) get protocol_* metrics; nobody else does.
    The controls are trained the same way at those sets' IPCs, and each trial's lead over them is logged."""
    done = subprocess.run([sys.executable, "-m", "ddsearch.cli", "reevaluate", str(study.path), "--epochs", "30",
                           "--repeats", "2", "--controls", "herding,random"], cwd=study.folder, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client, parent_id = study.client, study.parent.info.run_id
    runs = {r.info.run_name: client.get_run(r.info.run_id) for r in study.children}
    default = next(r for r in runs.values() if r.data.tags["ddsearch.optuna_number"] == "0")
    finished = [r for r in runs.values() if _finished(r)]
    best = max(finished, key=lambda r: r.data.metrics["final_val_acc"])
    chosen = {default.info.run_id, best.info.run_id}
    for run in runs.values():
        assert ("protocol_test_acc" in run.data.metrics) == (run.info.run_id in chosen), run.info.run_name
    for run in (default, best):
        metrics = run.data.metrics
        # at least twice chance (0.1): the tiny study's sets vary with Ray's scheduling, and one CI
        # run landed at 0.299 against an earlier bound of 0.3
        assert 0.2 < metrics["protocol_test_acc"] <= 1.0
        assert metrics["protocol_test_acc_std"] >= 0.0
        assert run.data.tags["ddsearch.protocol"].startswith(f"{TINY_CONV}, 2 x 30 epochs")
    parent = client.get_run(parent_id).data.metrics
    assert parent["default_protocol_test_acc"] == pytest.approx(default.data.metrics["protocol_test_acc"])
    assert parent["best_protocol_test_acc"] == pytest.approx(best.data.metrics["protocol_test_acc"])
    assert parent["protocol_test_gain"] == pytest.approx(parent["best_protocol_test_acc"] - parent["default_protocol_test_acc"])
    board = _csv(study.text(parent_id, "leaderboard.csv"))
    filled = {row["run"] for row in board if row.get("protocol_test_acc")}
    assert filled == {default.info.run_name, best.info.run_name}
    raw = json.loads(study.text(parent_id, "reevaluation.json"))
    table = {(row["role"], row["ipc"]): row for row in (dict(zip(raw["columns"], r)) for r in raw["data"])}
    assert "default" in done.stdout and "best" in done.stdout and "over herding" in done.stdout
    assert "<th" in (page := study.text(parent_id, "report.html")) and ">protocol_test_acc</th>" in page
    ipcs = {"default": table[("default", 1)]["ipc"], "best": next(r["ipc"] for k, r in table.items() if k[0] == "best")}
    assert ipcs["default"] == 1  # trial 0 runs the study's own ipc
    for control in ("herding", "random"):
        for role, run in (("default", default), ("best", best)):
            reference = table[(control, ipcs[role])]
            assert reference["outcome"] == "control" and reference["run_id"] is None
            assert 0.1 < reference["protocol_test_acc"] <= 1.0  # a real-image set trains above chance
            lead = run.data.metrics["protocol_test_acc"] - reference["protocol_test_acc"]
            assert parent[f"{role}_over_{control}"] == pytest.approx(lead)
            measured = parent[f"{control}_ipc{ipcs[role]}_protocol_test_acc"]
            assert measured == pytest.approx(reference["protocol_test_acc"])
            row = next(r for k, r in table.items() if k[0] == role)
            assert row["beats_" + control] == (lead > row[f"over_{control}_two_std"])
    assert "against real images" in page and "random: 1 real images per class" in page


def test_reevaluate_again_reuses_what_it_measured_unless_asked_to_retrain(study: SimpleNamespace) -> None:
    """A second call under the same protocol adds a control without training the trials again."""
    client, parent_id = study.client, study.parent.info.run_id
    before = {r.info.run_id: client.get_run(r.info.run_id).data.metrics.get("protocol_test_acc")
              for r in study.children}
    done = subprocess.run([sys.executable, "-m", "ddsearch.cli", "reevaluate", str(study.path), "--epochs", "30",
                           "--repeats", "2", "--controls", "kcenter"], cwd=study.folder, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("already measured as") >= 1
    after = {r.info.run_id: client.get_run(r.info.run_id).data.metrics.get("protocol_test_acc")
             for r in study.children}
    assert after == before
    history = [m.value for run_id, acc in before.items() if acc is not None
               for m in client.get_metric_history(run_id, "protocol_test_acc")]
    assert len(history) == sum(acc is not None for acc in before.values())  # logged once each, not twice
    assert "kcenter_ipc1_protocol_test_acc" in client.get_run(parent_id).data.metrics
    raw = json.loads(study.text(parent_id, "reevaluation.json"))  # replaced, not appended to by MLflow
    rows = [dict(zip(raw["columns"], r)) for r in raw["data"]]
    assert sorted(r["role"] for r in rows if r["role"] in ("default", "best")) == ["best", "default"]
    assert {r["role"] for r in rows if r["outcome"] == "control"} == {"herding", "random", "kcenter"}  # kept
    default_row = next(r for r in rows if r["role"] == "default")
    assert all(default_row[f"over_{c}"] is not None for c in ("herding", "random", "kcenter"))
    shown = subprocess.run([sys.executable, "-m", "ddsearch.cli", "report", str(study.path)], cwd=study.folder,
                           env=_env(), capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "against real images" in shown.stdout and "over kcenter" in shown.stdout and "beat" in shown.stdout
