"""``sampler.storage``: an Optuna RDB URL instead of the state folder's file, checked up front."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli, tiny_study_yaml
from ddsearch.errors import DDSearchError
from ddsearch.search import storage


@pytest.mark.parametrize("url, needle", [
    ("optuna.db", "not a database URL"),
    ("redis://127.0.0.1:6379/0", "unsupported database 'redis'"),
    ("postgresql://me:secret@127.0.0.1:5432/optuna", "PGPASSWORD"),
    ("postgresql://me@127.0.0.1:5432", "names no database"),
])
def test_bad_storage_urls_are_one_clear_line(url: str, needle: str) -> None:
    with pytest.raises(DDSearchError, match="sampler.storage") as err:
        storage.check_url(url)
    assert needle in str(err.value) and "secret" not in str(err.value)


def test_good_urls_pass_and_the_default_is_the_state_file(tmp_path: Path) -> None:
    for url in (None, "", "postgresql://ddsearch@127.0.0.1:5432/optuna", f"sqlite:///{tmp_path}/o.db"):
        storage.check_url(url)
    default = tmp_path / "optuna.db"
    assert storage.location(None, default) == default
    assert storage.location("postgresql://u@h/db", default) == "postgresql://u@h/db"
    assert storage.describe(default) == str(default)


def test_dry_run_names_an_unreachable_storage_database(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(tiny_study_yaml("s"))
    code, _, err = run_cli(capsys, "tune", "s.yaml", "--dry-run", "--set",
                           "sampler.storage=postgresql://nobody@127.0.0.1:1/optuna")
    assert_one_line_error(code, err, "sampler.storage", "unreachable")
    code, _, err = run_cli(capsys, "tune", "s.yaml", "--dry-run", "--set", "sampler.storage=mongodb://x/y")
    assert_one_line_error(code, err, "sampler.storage", "unsupported database")


def test_a_sqlite_url_is_a_working_storage(tmp_path: Path) -> None:
    """The URL path of the code (not the default file) end to end for Optuna: create, clear, reconcile."""
    import optuna

    from ddsearch.search.space import reconcile_optuna

    url = f"sqlite:///{tmp_path}/elsewhere.db"
    study = optuna.create_study(study_name="s", storage=storage.rdb(url))
    trial = study.ask()
    trial.set_user_attr("tune_trial_id", "gone")
    assert reconcile_optuna(url, "s", {}) == 1
    assert optuna.load_study(study_name="s", storage=url).trials[0].state.name == "FAIL"
    storage.clear(url, "s")
    with pytest.raises(KeyError):
        optuna.load_study(study_name="s", storage=url)


def test_reconcile_completes_a_trial_that_ended_before_optuna_was_told(tmp_path: Path) -> None:
    """A trial Tune saved as finished (the driver died before the tell) is COMPLETE with its value;
    one Tune ended midway (the time budget) is PRUNED, at its last value if it has one; an errored
    or failed one is FAIL."""
    import optuna

    from ddsearch.search.space import reconcile_optuna

    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=storage.rdb(url), direction="maximize")
    for tune_id in ("ended", "midway", "cut_at_once", "errored", "failed", "no_objective"):
        study.ask().set_user_attr("tune_trial_id", tune_id)
    last = {"ended": {"final": True, "val_acc": 0.9, "iteration": 40},
            "midway": {"val_acc": 0.5, "iteration": 20},
            "errored": {"val_acc": 0.6, "iteration": 20},
            "failed": {"final": True, "failed": True, "val_acc": 0.1},
            "no_objective": {"final": True, "val_acc": float("nan"), "iteration": 40}}
    statuses = {"ended": "TERMINATED", "midway": "TERMINATED", "cut_at_once": "TERMINATED", "errored": "ERROR",
                "failed": "TERMINATED", "no_objective": "TERMINATED"}
    assert reconcile_optuna(url, "s", statuses, last, ["val_acc"]) == 6
    trials = {t.user_attrs["tune_trial_id"]: t for t in optuna.load_study(study_name="s", storage=url).trials}
    assert trials["ended"].state.name == "COMPLETE" and trials["ended"].value == pytest.approx(0.9)
    assert trials["midway"].state.name == "PRUNED" and trials["midway"].value == pytest.approx(0.5)
    assert trials["midway"].intermediate_values == {20: pytest.approx(0.5)}
    assert "time budget" in trials["midway"].user_attrs["ddsearch_reason"]
    assert trials["cut_at_once"].state.name == "PRUNED" and trials["cut_at_once"].value is None
    assert "before it reported a result" in trials["cut_at_once"].user_attrs["ddsearch_reason"]
    assert trials["errored"].state.name == "FAIL" and trials["failed"].state.name == "FAIL"
    assert trials["no_objective"].state.name == "FAIL"  # finished, not cut: no value to prune at
    assert "without a finite objective" in trials["no_objective"].user_attrs["ddsearch_reason"]
    assert reconcile_optuna(url, "s", statuses, last, ["val_acc"]) == 0  # nothing left open
