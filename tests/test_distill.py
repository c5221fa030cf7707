"""`ddsearch distill` records everything the MLflow UI needs; checked with MlflowClient."""

from __future__ import annotations

import re

from mlflow import MlflowClient

from conftest import REPO_ROOT, TINY_CONV, TINY_CONV_BN
from ddsearch.cli import main
from ddsearch.synset import SyntheticSet


def list_all(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(list_all(client, run_id, item.path) if item.is_dir else [item.path])
    return found


def test_distill_run_holds_everything(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    overrides = [
        "method.ipc=2", "method.iterations=6", f"method.arch={TINY_CONV_BN}", "method.batch_real=8",
        "evaluation.eval_every=3", "evaluation.log_every=2", f"evaluation.arch={TINY_CONV}",
        "evaluation.epochs=3", "evaluation.final_epochs=3", "evaluation.final_repeats=1",
        f"evaluators=[{TINY_CONV}, MLP]",
    ]
    argv = ["distill", str(REPO_ROOT / "studies" / "digits_datadam.yaml"), "--quiet"]
    for item in overrides:
        argv += ["--set", item]
    assert main(argv) == 0
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()  # the default local store lives under mlruns/

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("digits_datadam")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["method.lr_img"] == "1.0" and run.data.params["method.ipc"] == "2"

    loss = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in loss) == [1, 2, 3, 4, 5, 6]
    for key in ("val_acc", "test_acc"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [3, 6]
    assert {"final_val_acc.MLP", f"final_test_acc.{TINY_CONV}", "distill_seconds_total"} <= run.data.metrics.keys()

    artifacts = list_all(client, run.info.run_id)
    assert "synset.safetensors" in artifacts and "config.json" in artifacts and "cross_arch.json" in artifacts
    grids = [a for a in artifacts if a.startswith("images/synset_grid") and a.endswith(".png")]
    steps = {int(re.search(r"step\D(\d+)", a).group(1)) for a in grids}
    assert steps == {0, 3, 6}, grids  # the starting set, then one grid per evaluation point, with its step
    assert {"grids/step_000000.png", "grids/step_000006.png", "grids/final.png"} <= set(artifacts)

    local = client.download_artifacts(run.info.run_id, "synset.safetensors", str(tmp_path))
    synset = SyntheticSet.load(local)
    assert synset.images.shape == (20, 1, 8, 8) and synset.dataset == "digits" and synset.method == "datadam"
