"""`ddsearch nas`: rank metrics against hand-computed rankings, spaces, the ground-truth cache,
the study lookup, the end-to-end command on digits, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_cli
from ddsearch.errors import DDSearchError
from ddsearch.models import list_models
from ddsearch.nas import (
    SEED22,
    NASSettings,
    Parallel,
    SpearmanGap,
    agreement,
    control_set,
    grid_space,
    ground_truth,
    kendall,
    ranks,
    resolve_space,
    score_candidates,
    spearman,
    spearman_gap,
    split_runnable,
    top_k,
    top_k_overlap,
)
from ddsearch.nas.report import gap_line
from ddsearch.synset import SyntheticSet

# Small, fast candidates for 8x8 digits (widths 4-8), and one that cannot run there.
SMALL = ["ConvNet-d1-w8-relu-instancenorm-avgpool", "ConvNet-d2-w8-relu-batchnorm-maxpool",
         "ConvNet-d2-w4-sigmoid-none-avgpool"]
TOO_DEEP = "ConvNetD5"





def subset_synset(data, ipc: int, seed: int = 1, method: str = "random") -> SyntheticSet:
    x, y = data.subset(ipc, torch.Generator().manual_seed(seed))
    return SyntheticSet(images=x, labels=y, num_classes=data.num_classes, dataset=data.name, method=method)


# ---- metrics, by hand ---------------------------------------------------------------------------

def test_reversed_ranking_is_minus_one_with_full_regret() -> None:
    names = list("abcde")
    a = agreement(names, [1, 2, 3, 4, 5], [5, 4, 3, 2, 1], k=2)
    assert a.spearman == pytest.approx(-1.0) and a.kendall == pytest.approx(-1.0)
    assert a.top_pick == "e" and a.top_pick_true_acc == 1 and a.true_best == "a" and a.regret == 4
    assert a.top_k_overlap == 0.0 and a.n == 5
    same = agreement(names, [0.1, 0.2, 0.3, 0.4, 0.5], [1, 2, 3, 4, 5], k=2)
    assert same.spearman == pytest.approx(1.0) and same.kendall == pytest.approx(1.0)
    assert same.regret == 0 and same.top_k_overlap == 1.0


def test_ties_hand_computed() -> None:
    proxy = [0.9, 0.8, 0.8, 0.5]
    truth = [0.7, 0.9, 0.6, 0.6]
    # Average ranks (1 = best): proxy [1, 2.5, 2.5, 4], truth [2, 1, 3.5, 3.5].
    np.testing.assert_allclose(ranks(proxy), [1, 2.5, 2.5, 4])
    np.testing.assert_allclose(ranks(truth), [2, 1, 3.5, 3.5])
    # Pearson of the ranks: deviations [-1.5, 0, 0, 1.5] and [-0.5, -1.5, 1, 1] -> 2.25 / 4.5.
    assert spearman(proxy, truth) == pytest.approx(0.5)
    # Pairs: 3 concordant, 1 discordant, 1 tied in proxy, 1 tied in truth -> tau-b 2 / sqrt(5 * 5).
    assert kendall(proxy, truth) == pytest.approx(0.4)
    # Proxy top pick is candidate 0 (true 0.7); the true best is 0.9 -> regret 0.2.
    a = agreement(list("abcd"), proxy, truth, k=2)
    assert (a.top_pick, a.true_best) == ("a", "b") and a.regret == pytest.approx(0.2)
    # Proxy top-2 = [a, b] (the 0.8 tie goes to the first listed); true 2nd best is 0.7: both in.
    assert top_k(proxy, 2) == [0, 1] and top_k_overlap(proxy, truth, 2) == 1.0
    assert top_k_overlap(proxy, truth, 1) == 0.0  # a is not the true best
    assert top_k_overlap(proxy, truth, 3) == 1.0  # 3rd best true is 0.6, tied: c and d both count


def test_failed_candidates_are_left_out_and_degenerate_cases_are_nan() -> None:
    a = agreement(["a", "b", "c", "d"], [0.3, float("nan"), 0.2, 0.1], [0.9, 0.1, 0.5, 0.4], k=2)
    assert a.n == 3 and a.spearman == pytest.approx(1.0) and a.regret == 0
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(kendall([1], [2]))
    assert "proxy.spearman" not in agreement(["a"], [1.0], [1.0]).metrics("proxy")  # NaN is not logged


def test_spearman_gap_separates_a_faithful_proxy_from_a_shuffled_control_but_not_from_itself() -> None:
    truth = np.linspace(0.90, 0.99, 12)
    shuffled = np.random.default_rng(3).permutation(truth)
    faithful = truth - 0.1  # same order, other scale
    control_rho = spearman(shuffled, truth)
    gap = spearman_gap(faithful, shuffled, truth, resamples=500)
    assert gap.gap == pytest.approx(1.0 - control_rho) and gap.low > 0 and gap.decided
    assert gap.low <= gap.gap <= gap.high
    mirrored = spearman_gap(shuffled, faithful, truth, resamples=500)  # same seed: the same resamples
    assert mirrored.gap == pytest.approx(-gap.gap) and mirrored.high == pytest.approx(-gap.low)
    assert gap.verdict("?") == "the proxy ranks better" and mirrored.verdict("?") == "the control ranks better"
    assert SpearmanGap.from_dict(json.loads(json.dumps(gap.as_dict()))) == gap  # a benchmark's JSON reads back
    same = spearman_gap(faithful, faithful, truth, resamples=200)
    assert same.gap == 0 and same.low == 0 and same.high == 0 and not same.decided
    # Two noisy proxies a few candidates apart: the interval straddles 0, it is not a verdict.
    noisy = truth + np.random.default_rng(4).normal(0, 0.02, 12)
    close = spearman_gap(noisy, truth + np.random.default_rng(5).normal(0, 0.02, 12), truth, resamples=500)
    assert close.low < 0 < close.high and not close.decided and close.verdict("undecided") == "undecided"
    few = spearman_gap([1, 2, 3], [3, 2, 1], [1, 2, 3])
    assert few.gap == pytest.approx(2.0) and math.isnan(few.low) and few.resamples == 0  # too few for an interval
    assert few.ranked and "too few candidates" in gap_line(few)
    flat = spearman_gap(np.full(12, 0.5), shuffled, truth)  # a proxy that scores every candidate alike
    assert not flat.ranked and flat.resamples == 0 and "nan" not in gap_line(flat) and "alike" in gap_line(flat)
    assert "nan" not in gap_line(gap) and "the proxy ranks better" in gap_line(gap)
    with pytest.raises(ValueError):
        spearman_gap([1, 2, 3], [1, 2], [1, 2, 3])


# ---- spaces ---------------------------------------------------------------------------------------

def test_spaces() -> None:
    assert len(SEED22) == 22 and set(SEED22) <= set(list_models())
    grid = grid_space()
    assert len(grid) == len(set(grid)) == 720
    sample = resolve_space("grid", k=20, seed=3)
    assert len(sample) == 20 and set(sample) <= set(grid)
    assert sample == resolve_space("grid", k=20, seed=3) != resolve_space("grid", k=20, seed=4)
    assert resolve_space(" ConvNetBN , LeNet ") == ["ConvNetBN", "LeNet"]
    with pytest.raises(DDSearchError, match="unknown architecture 'ConvNetBM'; did you mean .*'ConvNetBN'"):
        resolve_space("ConvNetBM")
    with pytest.raises(DDSearchError, match="twice"):
        resolve_space("ConvNetBN,ConvNetBN")
    with pytest.raises(DDSearchError, match="did you mean 'seed22'"):
        resolve_space("Seed22")


def test_candidate_too_deep_is_skipped_with_reason(digits) -> None:
    runnable, skipped = split_runnable(["ConvNetD3", TOO_DEEP, "ConvNet-d4-w8-relu-none-none"],
                                       digits.channels, digits.num_classes, digits.image_size)
    assert runnable == ["ConvNetD3", "ConvNet-d4-w8-relu-none-none"]  # no pooling: any depth fits
    assert [s.arch for s in skipped] == [TOO_DEEP] and "too deep for 8x8" in skipped[0].reason


# ---- control and ground truth -----------------------------------------------------------------------

def test_control_matches_the_proxy_per_class_with_real_images(digits) -> None:
    proxy = subset_synset(digits, 3)
    proxy.labels = torch.nn.functional.one_hot(proxy.labels, 10).float()  # soft labels: counted by argmax
    control = control_set(digits, proxy, seed=5)
    assert torch.equal(torch.bincount(control.labels, minlength=10), torch.full((10,), 3))
    flat = digits.train_x.flatten(1)
    for image, label in zip(control.images, control.labels):
        match = (flat == image.flatten()).all(dim=1)
        assert match.any() and (digits.train_y[match] == label).all()


def test_ground_truth_is_cached_by_data_and_schedule(digits, tmp_path) -> None:
    settings = NASSettings(truth_epochs=1, truth_train_size=300, dsa_strategy="none")
    first = ground_truth(SMALL[:1], digits, settings, cache_dir=tmp_path, progress=False)
    assert not first[0].cached and first[0].error is None and len(first[0].acc) == 1
    again = ground_truth(SMALL[:2], digits, settings, cache_dir=tmp_path, progress=False)
    assert again[0].cached and again[0].acc == first[0].acc and again[0].seconds == first[0].seconds
    assert not again[1].cached  # a new candidate is trained and added
    other = ground_truth(SMALL[:1], digits, NASSettings(truth_epochs=1, truth_train_size=200, dsa_strategy="none"),
                         cache_dir=tmp_path, progress=False)
    assert not other[0].cached  # another schedule is another key
    assert len(list((tmp_path / "nas" / "truth").glob("digits-*.json"))) == 2


def test_ground_truth_in_a_named_file_is_extended_and_guarded(digits, tmp_path) -> None:
    table = tmp_path / "results" / "truth.json"
    settings = NASSettings(truth_epochs=1, truth_train_size=300, dsa_strategy="none")
    first = ground_truth(SMALL[:1], digits, settings, cache_file=table, progress=False, entry_note={"speed": 7})
    entry = json.loads(table.read_text())["results"][SMALL[0]]
    assert entry["acc"] == first[0].acc and entry["threads"] >= 1 and entry["host"] and entry["date"]
    assert entry["speed"] == 7
    both = ground_truth(SMALL[:2], digits, settings, cache_file=table, progress=False)
    assert both[0].cached and not both[1].cached
    assert set(json.loads(table.read_text())["results"]) == set(SMALL[:2])
    assert not (tmp_path / "nas").exists()  # the named file is the cache: nothing under a cache folder
    with pytest.raises(DDSearchError, match="another schedule"):
        ground_truth(SMALL[:1], digits, NASSettings(truth_epochs=2, truth_train_size=300, dsa_strategy="none"),
                     cache_file=table, progress=False)
    assert set(json.loads(table.read_text())["results"]) == set(SMALL[:2])  # the table is left as it was


# ---- the command, end to end on digits ------------------------------------------------------------

def test_nas_end_to_end_on_digits(digits, tmp_path, capsys) -> None:
    from mlflow import MlflowClient

    proxy = subset_synset(digits, 2).save(tmp_path / "proxy.safetensors")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = tmp_path / "nas.json"
    code, out, err = run_cli(
        capsys, "nas", "--synset", str(proxy), "--space", ",".join([*SMALL, TOO_DEEP]), "--epochs", "4",
        "--seeds", "2", "--truth-epochs", "1", "--truth-train-size", "500", "--top-k", "2",
        "--tracking-uri", uri, "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--quiet",
        "--json", str(summary),
    )
    assert code == 0, err
    assert f"skipped {TOO_DEEP}: {TOO_DEEP} is too deep" in out and "Spearman" in out

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("nas").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["ddsearch.kind"] == "nas"
    metrics = run.data.metrics
    for key in ("proxy.spearman", "proxy.kendall", "proxy.regret", "proxy.top_k_overlap", "control.spearman",
                "control.regret", "proxy.seconds", "control.seconds", "truth.seconds", "time_ratio"):
        assert key in metrics, key
    assert metrics["candidates"] == 3 and metrics["skipped"] == 1 and -1 <= metrics["proxy.spearman"] <= 1
    gap = metrics["proxy.spearman"] - metrics["control.spearman"]
    assert metrics["proxy_vs_control.spearman_gap"] == pytest.approx(gap)
    assert "proxy_vs_control.low" not in metrics  # 3 candidates: no interval, and the summary says why
    assert "proxy - control Spearman" in out and "too few candidates for an interval" in out
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"nas_ranking.json", "nas_scatter.png", "nas_summary.json"} <= artifacts
    png = Path(client.download_artifacts(run.info.run_id, "nas_scatter.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = json.loads(Path(client.download_artifacts(run.info.run_id, "nas_ranking.json", str(tmp_path))).read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    by_arch = {r["arch"]: r for r in rows}
    assert set(by_arch) == {*SMALL, TOO_DEEP}
    assert by_arch[TOO_DEEP]["status"] == "skipped" and "too deep" in by_arch[TOO_DEEP]["reason"]
    for arch in SMALL:
        row = by_arch[arch]
        assert row["status"] == "ok" and 0 <= row["proxy_acc"] <= 1 and 0 <= row["true_acc"] <= 1
        assert 0 <= row["control_acc"] <= 1
    assert sorted(by_arch[a]["proxy_rank"] for a in SMALL) == pytest.approx(sorted(ranks([by_arch[a]["proxy_acc"] for a in SMALL])))

    result = json.loads(summary.read_text())
    assert result["proxy_agreement"]["n"] == 3 and len(result["proxy"]["scores"][0]["acc"]) == 2


# ---- the proxy from a study's best trial ----------------------------------------------------------

def test_from_study_picks_the_best_finished_trial(digits, tmp_path, capsys) -> None:
    from ddsearch.tracking import lookup, store
    from ddsearch.tracking import study_runs as tracking
    from ddsearch.tracking.run_logger import RunLogger

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    runs = tracking.StudyRuns.in_experiment(uri, "quick")
    experiment = runs.experiment_id
    parent = runs.create_parent("quick")
    client = store.client(uri)

    def trial(name: str, score: float | None, method: str | None, failed: bool = False) -> str:
        run = client.create_run(experiment, run_name=name, tags={tracking.PARENT_TAG: parent,
                                                                tracking.TAG_KIND: tracking.TRIAL_KIND})
        run_id = run.info.run_id
        if score is not None:
            client.log_metric(run_id, "final_val_acc", score)
        if method is not None:
            logger = RunLogger(run_id, uri)
            logger.log_synset(subset_synset(digits, 1, method=method))
        if failed:
            runs.fail(run_id, "diverged")
        else:
            client.set_terminated(run_id)
        return run_id

    trial("ok", 0.50, "second")
    best = trial("best", 0.70, "best")
    trial("no-synset", 0.90, None)  # better score, but nothing to use
    trial("failed", 0.95, "failed", failed=True)
    stopped = client.create_run(experiment, run_name="stopped", tags={tracking.PARENT_TAG: parent,
                                                                     tracking.TAG_KIND: tracking.TRIAL_KIND})
    client.log_metric(stopped.info.run_id, "val_acc", 0.99)  # early-stopped: no final score, so ranked after
    RunLogger(stopped.info.run_id, uri).log_synset(subset_synset(digits, 1, method="stopped"))
    found = lookup.best_study_trial(uri, "quick")
    assert found["run_id"] == best and found["score"] == pytest.approx(0.70) and found["metric"] == "final_val_acc"

    with pytest.raises(DDSearchError, match="no study named 'quik'.*known studies: quick"):
        lookup.best_study_trial(uri, "quik")
    with pytest.raises(DDSearchError, match="no MLflow run"):
        lookup.download_run_artifact(uri, "runs:/0123456789abcdef/synset.safetensors", tmp_path)

    code, out, err = run_cli(capsys, "nas", "--from-study", "quick", "--space", SMALL[0], "--epochs", "1",
                             "--seeds", "1", "--no-control", "--tracking-uri", uri, "--device", "cpu", "--quiet")
    assert code == 0, err
    assert "best trial best (final_val_acc 0.7000)" in out
    (nas_run,) = client.search_runs([store.experiment_id("nas", uri)])
    assert nas_run.data.tags["ddsearch.proxy_run"] == best and nas_run.data.tags["ddsearch.study"] == "quick"
    assert nas_run.data.params["proxy_method"] == "best"


# ---- bad input ------------------------------------------------------------------------------------

def test_proxy_of_another_dataset_or_shape_is_refused(digits, tmp_path, capsys) -> None:
    db = tmp_path / "mlflow.db"
    common = ["--space", SMALL[0], "--tracking-uri", f"sqlite:///{db}", "--device", "cpu", "--quiet"]
    mnist = SyntheticSet(images=torch.zeros(10, 1, 28, 28), labels=torch.arange(10), num_classes=10, dataset="mnist")
    code, _, err = run_cli(capsys, "nas", "--synset", str(mnist.save(tmp_path / "m.safetensors")), "--dataset",
                           "digits", *common)
    assert_one_line_error(code, err, "distilled from 'mnist', not 'digits'")
    wrong = SyntheticSet(images=torch.zeros(10, 1, 16, 16), labels=torch.arange(10), num_classes=10, dataset="digits")
    code, _, err = run_cli(capsys, "nas", "--synset", str(wrong.save(tmp_path / "w.safetensors")), *common)
    assert_one_line_error(code, err, "shape (1, 16, 16)", "(1, 8, 8)")
    code, _, err = run_cli(capsys, "nas", "--synset", str(tmp_path / "w.safetensors"), "--dsa", "colr_crop", *common)
    assert_one_line_error(code, err, "shape")  # the proxy is checked first
    digits_ok = SyntheticSet(images=torch.zeros(10, 1, 8, 8), labels=torch.arange(10), num_classes=10, dataset="digits")
    code, _, err = run_cli(capsys, "nas", "--synset", str(digits_ok.save(tmp_path / "ok.safetensors")), "--dsa",
                           "colr_crop", *common)
    assert_one_line_error(code, err, "unknown DSA augmentation family 'colr'")
    assert not db.exists()  # refused before any MLflow run was created

    code, _, err = run_cli(capsys, "nas", *common)
    assert_one_line_error(code, err, "exactly one of --synset")
    code, _, err = run_cli(capsys, "nas", "--synset", "runs:/abc", *common)
    assert_one_line_error(code, err, "bad MLflow source")
    code, _, err = run_cli(capsys, "nas", "--synset", str(tmp_path / "m.safetensors"), "--space", "ConvNetXYZ,MLP")
    assert_one_line_error(code, err, "unknown architecture 'ConvNetXYZ'")
    code, _, err = run_cli(capsys, "nas", "--synset", str(tmp_path / "m.safetensors"), "--seeds", "0")
    assert_one_line_error(code, err, "seeds must be at least 1")


# ---- Ray fan-out (tiny) -----------------------------------------------------------------------------

@pytest.mark.slow
def test_candidates_as_ray_tasks(digits) -> None:
    """Starts a local Ray with 2 CPUs (about 8 s on an idle 2-core machine, a minute on a busy one)."""
    pytest.importorskip("ray")
    from ddsearch.evaluate import TrainSettings

    x, y = digits.subset(2, torch.Generator().manual_seed(0))
    settings = TrainSettings(epochs=2, dsa_strategy="none")
    scores = score_candidates(SMALL[:2], x, y, digits, settings, seeds=1, parallel=Parallel(max_cpus=2),
                              progress=False)
    assert [s.arch for s in scores] == SMALL[:2]
    assert all(s.error is None and len(s.acc) == 1 and 0 <= s.acc[0] <= 1 for s in scores)


# ---- the benchmark's verdicts and report ------------------------------------------------------------

def test_nas_benchmark_judges_against_the_control_and_the_measured_speed_up() -> None:
    from conftest import import_benchmark

    bench = import_benchmark("bench_nas")
    names = ["ConvNetD1", "ConvNetW32", "ConvNetNN"]
    truth = [0.99, 0.98, 0.90]

    def row(label: str, proxy: list[float], search_s: float) -> dict:
        return {"proxy": label, **agreement(names, proxy, truth, k=2).as_dict(), "proxy_seconds": search_s,
                "distill_seconds": 100.0, "truth_seconds": 6000.0, "time_ratio_measured": 6000.0 / search_s,
                "time_ratio_with_distillation": 6000.0 / (search_s + 100.0)}

    rows = [row("DataDAM", [0.9, 0.8, 0.3], 60.0), row("PAD", [0.9, 0.8, 0.3], 200.0),
            row("random control", [0.8, 0.9, 0.3], 60.0)]
    bench.judge(rows)
    assert [r["target_met"] for r in rows] == [True, False, False]  # PAD's 30x misses the 50x bar
    rows[2] = row("random control", [0.9, 0.8, 0.3], 60.0)  # a control as good as the proxy
    bench.judge(rows)
    assert not rows[0]["target_met"]
    payload = {"device": "CPU (test)", "settings": NASSettings(truth_epochs=10, truth_seeds=2).__dict__,
               "candidates": names, "truth_file": "nas_truth_mnist.json", "truth_train_images": 55000,
               "proxies": {"datadam": {"arch": "ConvNet", "iterations": 1000, "batch_real": 256,
                                       "distill_seconds": 100.0}, "pad": {"error": "not attempted"}},
               "results": rows, "env": {"torch": "2", "date": "2026-12-04"}, "reference_step_ms": 410.0,
               "per_candidate": [{"arch": n, "true_acc": t, "true_std": 0.001, "truth_seconds": 2000.0,
                                  "truth_reference_step_ms": ms, **{r["proxy"]: 0.5 for r in rows}}
                                 for n, t, ms in zip(names, truth, (450.0, None, 600.0))]}
    md = "\n".join(bench.report(payload))
    assert "| DataDAM | +1.000 | +1.000 | 1.00 |" in md and "| 100x | 38x |" in md
    assert "6,000 s of training in all" in md and "PAD proxy: **not measured**: not attempted" in md
    assert md.count("**not met**") == 2  # DataDAM (control as good) and PAD
    assert "30x ≥ 50x less search time as measured: no" in md and "ρ above the control's +1.000: no" in md
    assert "410 ms during the proxy searches, 450–600 ms during the truth's sittings" in md
    readme = bench.readme_lines(payload)
    assert readme[0].startswith("Ground truth: 3 seed22 candidates x 10 epochs x 2 seeds")
    assert sum(line.startswith("| ") for line in readme) == 2 + len(rows)
    bench.add_gaps(payload)  # every proxy scored 0.5: no order to compare, so no interval
    gaps = [r["vs_control"] for r in rows if r["proxy"] != "random control"]
    assert len(gaps) == 2 and all(math.isnan(g["low"]) and g["resamples"] == 0 for g in gaps)
    readme = "\n".join(bench.readme_lines(payload))
    assert "- DataDAM: no ρ gap to the control: the proxy or the control scores every candidate alike" in readme
    assert "nan" not in readme
