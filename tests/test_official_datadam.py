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


# What the released utils.py offers the evaluator harness, reduced to its interface: get_network
# names a model, evaluate_synset trains on .cuda() and logs one "Evaluate_NN: ... test acc" line.
STAND_IN_UTILS = textwrap.dedent("""
    import torch
    class ParamDiffAug:
        prob_flip = 0.5
    class TensorDataset(torch.utils.data.Dataset):
        def __init__(self, images, labels):
            self.images, self.labels = images, labels
        def __getitem__(self, i):
            return self.images[i], self.labels[i]
        def __len__(self):
            return self.images.shape[0]
    def get_network(model, channel, num_classes, im_size):
        net = torch.nn.Linear(channel * im_size[0] * im_size[1], num_classes).cuda()
        net.named = model
        return net
    def evaluate_synset(it_eval, net, images_train, labels_train, testloader, args):
        net = net.cuda()
        # the accuracy encodes what reached it: the set's labels, model, strategy, epochs, test split and repeat
        passed = (net.named, args.dsa_strategy, args.dsa, args.epoch_eval_train, len(testloader.dataset))
        acc = float(labels_train.float().mean()) / 10 + it_eval / 100
        acc += 0.0 if passed == ("ConvNetIN", "crop_flip", True, 7, 30) else 0.5
        print("2026 Evaluate_%02d: epoch = %04d train loss = 1.0 train acc = 1.0, test acc = %.4f"
              % (it_eval, args.epoch_eval_train, acc), flush=True)
        return net, 1.0, acc
""")


def test_the_released_evaluator_runs_on_a_handed_over_set_and_is_read_from_its_log(tmp_path) -> None:
    from safetensors.torch import save_file
    import torch

    official = import_benchmark("official_datadam")
    clone = tmp_path / "DataDAM"
    clone.mkdir()
    (clone / "utils.py").write_text(STAND_IN_UTILS)
    labels = torch.arange(10).repeat(2)
    tensors = tmp_path / "set.safetensors"
    save_file({"images": torch.rand(20, 1, 28, 28), "labels": labels, "num_classes": torch.tensor(10),
               "test_x": torch.rand(30, 1, 28, 28), "test_y": torch.zeros(30, dtype=torch.long)}, str(tensors))
    accs = official.evaluate_official(clone, tensors, "ConvNetIN", "crop_flip", epochs=7, repeats=3, workdir=tmp_path)
    assert accs == pytest.approx([0.45, 0.46, 0.47])  # mean label 4.5 / 10, plus the repeat index / 100
    with pytest.raises(SystemExit) as short:  # a log with fewer results than trainings is an error, not a mean
        (clone / "utils.py").write_text(STAND_IN_UTILS.replace('print("2026 Evaluate', 'print("2026 Skipped'))
        official.evaluate_official(clone, tensors, "ConvNetIN", "crop_flip", epochs=7, repeats=3, workdir=tmp_path)
    assert "logged 0 results, expected 3" in str(short.value)
