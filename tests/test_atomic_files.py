"""Whole-or-nothing writes and locked merges: what every rewritten file in ddsearch relies on."""

from __future__ import annotations

import json
import multiprocessing
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from ddsearch.atomic_files import lock_file_for, locked, replacing, write_text_atomic
from ddsearch.nas import truth

MERGES_PER_PROCESS = 40
RACE_WINDOW_S = 0.002


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError), replacing(path) as partial:
        partial.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]
    write_text_atomic(tmp_path / "new" / "deep.json", "made")  # missing folders are created
    assert (tmp_path / "new" / "deep.json").read_text() == "made"


def _merge_unlocked(path: Path, name: str) -> None:
    """The truth table's read-merge-write without its lock (the control)."""
    stored = truth.read_truth_table(path)[1]
    write_text_atomic(path, json.dumps({"key": {"k": 1}, "results": stored | {name: {"acc": 0.5}}}))


def _widen_the_race_window() -> None:
    """Pause between each merge's read and its write (in this forked child only), so the unlocked
    control races on any machine, however the two processes are scheduled; the locked merges get
    the same pause."""
    read = truth.read_truth_table

    def read_then_pause(path: Path):
        found = read(path)
        time.sleep(RACE_WINDOW_S)
        return found

    truth.read_truth_table = read_then_pause


def _merge_many(path: str, tag: str, use_lock: bool, start: Barrier) -> None:
    _widen_the_race_window()
    start.wait(30)  # both processes merge at the same time
    for i in range(MERGES_PER_PROCESS):
        name = f"{tag}-{i}"
        if use_lock:
            truth._write_cache(Path(path), {"k": 1}, {name: {"acc": 0.5}})
        else:
            _merge_unlocked(Path(path), name)


def _run_side_by_side(path: Path, use_lock: bool) -> int:
    context = multiprocessing.get_context("fork")
    start = context.Barrier(2)
    workers = [context.Process(target=_merge_many, args=(str(path), tag, use_lock, start)) for tag in "ab"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    return len(truth.read_truth_table(path)[1])


def test_locked_merges_from_two_processes_keep_every_entry(tmp_path: Path) -> None:
    """Two processes merging into one truth table lose nothing; the same merges unlocked do lose entries."""
    expected = 2 * MERGES_PER_PROCESS
    kept_locked = _run_side_by_side(tmp_path / "locked.json", use_lock=True)
    assert kept_locked == expected
    assert lock_file_for(tmp_path / "locked.json").exists()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    lost_unlocked = [expected - _run_side_by_side(tmp_path / f"unlocked{k}.json", use_lock=False) for k in range(5)]
    assert max(lost_unlocked) > 0, "the control never raced, so this test cannot tell the lock works"


def test_a_second_process_waits_for_the_lock(tmp_path: Path) -> None:
    """A second process waits for the first one's block to end before it enters its own."""
    lock = tmp_path / ".x.lock"
    log = tmp_path / "log"
    context = multiprocessing.get_context("fork")
    ready = context.Event()

    def hold() -> None:
        with locked(lock):
            ready.set()
            with log.open("a") as out:
                out.write("first-in\n")
            time.sleep(0.5)
            with log.open("a") as out:
                out.write("first-out\n")

    holder = context.Process(target=hold)
    holder.start()
    assert ready.wait(30)
    with locked(lock):
        with log.open("a") as out:
            out.write("second-in\n")
    holder.join(30)
    assert log.read_text().split() == ["first-in", "first-out", "second-in"]
