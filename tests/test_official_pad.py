"""The harness that runs the authors' PAD script beside ours (benchmarks/official_pad.py).

The real clone cannot be fetched in CI, so a stand-in clone does what the released
``distill/PAD.py`` does that the harness must supply or survive: it imports ``get_dataset`` and
``DiffAugment`` from ``utils.utils_baseline`` (which has no MNIST), reads ``loss_threshold_low``
that ``utils/cfg.py`` never defines, calls ``.cuda()`` on its save path, builds one optimiser per
learnable, and saves only its final set under ``logged_files``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from conftest import import_benchmark
from ddsearch.methods.pad.flat import ParamLayout
from ddsearch.methods.pad.settings import PADSettings
from ddsearch.models import seeded_network

CFG = "from types import SimpleNamespace\nCFG = SimpleNamespace(lr_img=1000)\n"
BASELINE = textwrap.dedent("""
    def get_dataset(*args, **kwargs):
        raise SystemExit("the released get_dataset has no MNIST branch")

    def DiffAugment(x, strategy="", seed=-1, param=None):
        return x.permute(0, 2, 3, 1).permute(0, 3, 1, 2)  # a channels-last view, as DSA's crop returns
""")
PAD_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import torch, yaml
    from utils.utils_baseline import get_dataset, DiffAugment
    from utils.cfg import CFG
    args = yaml.safe_load(open(sys.argv[2]))
    assert os.environ["WANDB_MODE"] == "disabled"
    assert isinstance(CFG.lr_img, float) and CFG.loss_threshold_low == 1.0  # defined: the YAML can set it
    assert args["loss_threshold_low"] == 0.0  # loss-ranked selection on
    channel, im_size, num_classes, _, mean, std, train, test, testloader, _, class_map, _ = get_dataset("MNIST", "")
    assert (channel, im_size, num_classes, len(train)) == (1, (6, 6), 3, 12) and class_map[2] == 2
    assert next(iter(testloader))[0].shape == (9, 1, 6, 6)
    augmented = DiffAugment(torch.zeros(2, 1, 6, 6))
    assert augmented.stride() == (36, 36, 6, 1), augmented.stride()
    images = torch.stack([train[i][0] for i in range(num_classes * args["ipc"])]).requires_grad_(True)
    labels = torch.randn(len(images), num_classes, requires_grad=True)
    lr = torch.tensor(args["lr_teacher"], requires_grad=True)
    opt_img, opt_lr, opt_y = (torch.optim.SGD([t], lr=1.0) for t in (images, lr, labels))
    for it in range(args["Iteration"] + 1):
        stamp = time.strftime("[%Y-%m-%d %H:%M:", time.localtime(0)) + "%02d]" % (it // 5)
        print("%s iter = %04d, loss = %.4f" % (stamp, it, 1.0 / (it + 1)), flush=True)
        if it == args["Iteration"]:
            folder = os.path.join("logged_files", args["dataset"], str(args["ipc"]), args["model"], args["name"], "Normal")
            os.makedirs(folder)
            torch.save(images.cuda().detach(), os.path.join(folder, "images_%d.pt" % it))
            torch.save(labels.detach(), os.path.join(folder, "labels_%d.pt" % it))
            torch.save(lr.detach(), os.path.join(folder, "lr_%d.pt" % it))
        with torch.no_grad():
            images += 1.0
            labels *= 2.0
""")


@pytest.fixture()
def clone(tmp_path: Path) -> Path:
    folder = tmp_path / "PAD"
    (folder / "distill").mkdir(parents=True)
    (folder / "utils").mkdir()
    (folder / "utils" / "cfg.py").write_text(CFG)
    (folder / "utils" / "utils_baseline.py").write_text(BASELINE)
    (folder / "distill" / "PAD.py").write_text(PAD_SCRIPT)
    return folder


def test_the_script_runs_unchanged_on_our_data_and_its_start_and_end_come_back(clone: Path, tmp_path: Path) -> None:
    official = import_benchmark("official_pad")
    workdir = tmp_path / "work"
    workdir.mkdir()
    x = torch.arange(12 * 36, dtype=torch.float32).view(12, 1, 6, 6)
    y = torch.arange(12) % 3
    official.write_data(workdir, x, y, x[:9].clone(), y[:9].clone(), [0.5], [0.25])
    settings = PADSettings(ipc=2, selection="loss", alpha=0.5, expert_train_epochs=14, max_start_epoch=4,
                           max_start_epoch_final=10, lr_img=100.0)
    config = official.config_for(settings, 30, "color_crop", tmp_path / "buffer")
    run, sets = official.run_official(clone, config, workdir)
    # The start is the tensors the optimisers were built with; the end is what the script saved.
    assert torch.equal(sets["start_images"], x[:6])
    assert sets["start_labels"].shape == (6, 3)
    assert torch.equal(sets["end_images"], x[:6] + 30)
    assert torch.allclose(sets["end_labels"], sets["start_labels"] * 2 ** 30)
    assert float(sets["end_lr"]) == pytest.approx(settings.lr_teacher)
    assert run.seconds_per_iteration(10, 30) == pytest.approx(0.2)
    # Timed from 10 up to the last line before the final one (which waits for the script's own evaluation):
    # the stand-in logs every iteration, stamped it // 5 seconds.
    assert run.distill_seconds_per_iteration(30) == pytest.approx((29 // 5 - 10 // 5) / 19)
    assert run.final_loss() == pytest.approx(1 / 31, abs=1e-4)


def test_the_config_carries_our_settings_in_the_scripts_terms() -> None:
    official = import_benchmark("official_pad")
    settings = PADSettings(ipc=10, selection="loss", alpha=0.5, expert_train_epochs=14, max_start_epoch=4,
                           max_start_epoch_final=10, expansion_iterations=2000, syn_steps=20, batch_syn=50,
                           skip_threshold=None)
    config = official.config_for(settings, 200, "color_crop_cutout_scale_rotate", Path("/b"))
    # DATM's sequential generation: the bound grows from current_max_start_epoch to max_start_epoch.
    assert (config["current_max_start_epoch"], config["max_start_epoch"], config["expansion_end_epoch"]) == (4, 10, 2000)
    assert (config["loss_ratio"], config["syn_steps"], config["batch_syn"], config["Iteration"]) == (0.5, 20, 50, 200)
    assert config["threshold"] > 1e6  # no skip threshold: never skip
    assert config["loss_threshold_low"] < 1  # the released code's switch for loss-ranked selection
    assert config["eval_it"] == 200 and config["skip_first_eva"] and config["parall_eva"]
    with pytest.raises(SystemExit, match="only ranks parameters by their loss"):
        official.config_for(settings.model_copy(update={"selection": "depth"}), 200, "color", Path("/b"))


def test_experts_become_the_mtt_buffer_layout_parameter_for_parameter(tmp_path: Path) -> None:
    official = import_benchmark("official_pad")
    net = seeded_network("ConvNet", 1, 10, 28, 0)
    layout = ParamLayout.of(net)
    trajectories = [torch.randn(3, layout.total) for _ in range(2)]
    path = official.write_buffer(trajectories, layout.unflatten, tmp_path / "MNIST" / "ConvNet")
    buffer = torch.load(path, weights_only=True)
    assert len(buffer) == 2 and all(len(expert) == 3 for expert in buffer)
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert [tuple(t.shape) for t in buffer[1][2]] == shapes
    # Their ReparamModule flattens the module's parameters in order: that must give our flat vector back.
    assert torch.equal(torch.cat([t.reshape(-1) for t in buffer[1][2]]), trajectories[1][2])


def test_a_folder_that_is_not_a_pad_clone_ends_in_one_clear_line(clone: Path, tmp_path: Path) -> None:
    official = import_benchmark("official_pad")
    with pytest.raises(SystemExit) as wrong:
        official.check_clone(tmp_path)
    assert str(wrong.value).startswith(f"error: {tmp_path} has no distill/PAD.py")
    assert official.check_clone(clone) == clone.resolve()
