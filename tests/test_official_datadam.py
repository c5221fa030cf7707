"""The harness that runs the authors' DataDAM script beside ours (benchmarks/official_datadam.py).

The real clone cannot be fetched in CI, so a stand-in ``main_DataDAM.py`` exercises what the
harness promises: the script runs unchanged on a machine without a GPU, seeded, and is timed
from its own log format.
"""

from __future__ import annotations

import textwrap

import pytest

from conftest import import_benchmark

# What the authors' script does that the harness must survive or read: an unconditional
# net.cuda(), unseeded draws, and a log line every 10th iteration with a 1-second time stamp.
STAND_IN = textwrap.dedent("""
    import sys, time
    import numpy as np
    import torch
    net = torch.nn.Linear(2, 2).cuda()
    print("draws", float(torch.rand(())), float(np.random.rand()), "args", " ".join(sys.argv[1:]), flush=True)
    for it in (0, 10, 20, 30):
        stamp = time.strftime("%Y-%m-%d %H:%M:", time.localtime(0)) + "%02d" % (it // 5)
        print("[%s] iter = %05d, loss = %.4f" % (stamp, it, 10.0 / (it + 1)), flush=True)
    if "--fail" in sys.argv:
        raise SystemExit(3)
""")


@pytest.fixture()
def clone(tmp_path):
    folder = tmp_path / "DataDAM"
    folder.mkdir()
    (folder / "main_DataDAM.py").write_text(STAND_IN)
    return folder


def test_runs_unchanged_without_a_gpu_seeded_and_timed_from_its_log(clone, tmp_path) -> None:
    official = import_benchmark("official_datadam")
    first = official.run_official(clone, ["--ipc", "10"], tmp_path, seed=3)
    again = official.run_official(clone, ["--ipc", "10"], tmp_path, seed=3)
    other = official.run_official(clone, ["--ipc", "10"], tmp_path, seed=4)
    draws = [next(line for line in run.lines if line.startswith("draws")) for run in (first, again, other)]
    assert draws[0] == draws[1] != draws[2]
    assert draws[0].endswith("args --ipc 10")
    logged = first.iterations()
    assert sorted(logged) == [0, 10, 20, 30]
    assert logged[30][1] == pytest.approx(10 / 31, abs=1e-4)
    # Stamps 2 s apart every 10 iterations: 0.2 s per iteration, whichever span is timed.
    assert first.seconds_per_iteration(10, 30) == pytest.approx(0.2)
    assert first.seconds_per_iteration(0, 20) == pytest.approx(0.2)


def test_a_failing_script_or_a_wrong_folder_ends_in_one_clear_line(clone, tmp_path) -> None:
    official = import_benchmark("official_datadam")
    with pytest.raises(SystemExit) as failed:
        official.run_official(clone, ["--fail"], tmp_path)
    assert "failed (exit 3)" in str(failed.value) and "pip install kornia einops" in str(failed.value)
    with pytest.raises(SystemExit) as wrong:
        official.check_clone(tmp_path)
    assert str(wrong.value).startswith(f"error: {tmp_path} has no main_DataDAM.py")
    assert official.check_clone(clone) == clone.resolve()
