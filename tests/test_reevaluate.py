"""Which trials ``ddsearch reevaluate`` trains again, and its one-line errors (the end-to-end run is
in test_mlflow_views.py, on that module's study)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from conftest import assert_one_line_error, run_cli, tiny_study_yaml


def _board(rows: list[tuple]) -> pd.DataFrame:
    names = ["run", "optuna_trial", "outcome", "val_acc", "final_val_acc", "run_id"]
    return pd.DataFrame([dict(zip(names, row)) for row in rows])


def test_default_is_trial_0_even_if_stopped_and_best_ranks_on_the_final_evaluation() -> None:
    from ddsearch.search.reevaluate import choose_trials

    board = _board([
        ("trial-000", 0, "stopped_early", 0.80, math.nan, "a"),
        ("trial-001", 1, "finished", 0.95, 0.90, "b"),   # best checkpoint val, weaker final
        ("trial-002", 2, "finished", 0.93, 0.92, "c"),   # the best on the final evaluation
        ("trial-003", 3, "failed", 0.99, math.nan, "d"),
    ])
    default, best = choose_trials(board)
    assert (default.role, default.run_id, default.outcome) == ("default", "a", "stopped_early")
    assert (best.role, best.run_id, best.chosen_by, best.score) == ("best", "c", "final_val_acc", 0.92)
    only_best = choose_trials(board.assign(final_val_acc=math.nan), roles=("best",))
    assert [(p.role, p.run_id, p.chosen_by) for p in only_best] == [("best", "b", "val_acc")]


def test_no_usable_trial_or_an_unknown_role_is_a_clear_error() -> None:
    from ddsearch.errors import DDSearchError
    from ddsearch.search.reevaluate import choose_trials

    failed_default = _board([("trial-000", 0, "failed", 0.5, math.nan, "a"), ("trial-001", 1, "finished", 0.9, 0.9, "b")])
    with pytest.raises(DDSearchError, match="trial 0"):
        choose_trials(failed_default)
    assert choose_trials(failed_default, roles=("best",))[0].run_id == "b"
    with pytest.raises(DDSearchError, match="unknown trial role"):
        choose_trials(failed_default, roles=("worst",))


def test_a_study_never_run_gets_one_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "never.yaml"
    path.write_text(tiny_study_yaml("never"))
    code, _, err = run_cli(capsys, "reevaluate", str(path))
    assert_one_line_error(code, err, "never")
