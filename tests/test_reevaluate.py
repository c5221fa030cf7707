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


def test_a_trial_beats_a_control_only_by_more_than_twice_the_std_of_the_gap_at_its_own_ipc() -> None:
    from ddsearch.search.reevaluate import _with_leads

    rows = [  # role, outcome, ipc, test mean, test std
        ("default", "finished", 10, 0.970, 0.001),
        ("best", "finished", 10, 0.962, 0.003),
        ("other", "finished", 50, 0.990, 0.001),     # no control at its IPC
        ("herding", "control", 10, 0.964, 0.001),
    ]
    table = pd.DataFrame([dict(zip(["role", "outcome", "ipc", "protocol_test_acc", "protocol_test_acc_std"], r))
                          for r in rows])
    table = _with_leads(table).set_index("role")
    assert table.loc["default", "over_herding"] == pytest.approx(0.006)
    assert table.loc["default", "over_herding_two_std"] == pytest.approx(2 * math.hypot(0.001, 0.001))
    assert table.loc["default", "beats_herding"] is True
    assert table.loc["best", "over_herding"] == pytest.approx(-0.002)
    assert table.loc["best", "beats_herding"] is False
    assert math.isnan(table.loc["other", "over_herding"]) and table.loc["other", "beats_herding"] is None
    assert math.isnan(table.loc["herding", "over_herding"])
    # a lead inside the bar does not count: 0.964 + 0.002 against 2 * hypot(0.001, 0.001) = 0.0028
    close = _with_leads(table.reset_index().assign(protocol_test_acc=[0.966, 0.962, 0.99, 0.964]))
    assert not close.set_index("role").loc["default", "beats_herding"]


def test_an_unknown_control_is_one_line_before_anything_runs(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "never.yaml"
    path.write_text(tiny_study_yaml("never"))
    code, _, err = run_cli(capsys, "reevaluate", str(path), "--controls", "herding,median")
    assert_one_line_error(code, err, "unknown control(s) median")
