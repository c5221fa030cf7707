"""Running the authors' PAD code (github.com/NUS-HPC-AI-Lab/PAD, ``distill/PAD.py``) from a user's clone.

None of its code is copied here, and its files are not edited. What a CPU-only machine and our data
need is supplied from outside the script, by a launcher:

- ``utils.utils_baseline.get_dataset`` has no MNIST branch: it is replaced, before the script
  imports it, by one that serves the train/test tensors this harness wrote (ours: the same split
  our experts trained on);
- ``distill/PAD.py`` reads ``loss_threshold_low``, which ``utils/cfg.py`` never defines: the
  launcher adds it to the config before the YAML is merged (the YAML's value below 1 turns on the
  released code's loss-ranked parameter selection: the ``loss_ratio`` share of best-matched entries
  leaves the loss), and makes ``lr_img``'s default a float so that a float learning rate merges;
- wandb runs disabled (``WANDB_MODE=disabled``): the script rebuilds its arguments from wandb's config;
- without a GPU, ``Tensor.cuda``/``Module.cuda`` become no-ops (its save path calls ``.cuda()``),
  and ``parall_eva: true`` keeps its evaluation on ``args.device`` instead of ``cuda:0``;
- DSA's crop returns a channels-last view (for one channel it also counts as contiguous); on the
  CPU the convolution and group norm keep that layout (CUDA's group norm does not) and the
  ConvNet's ``out.view`` then fails, so ``DiffAugment``'s output is copied to the standard layout
  (the same values and gradients);
- the starting images and labels are recorded when the script builds their optimisers (it saves
  only later iterations).

Our cached experts are handed over as ``replay_buffer_0.pt``, the MTT buffer layout the script loads
(a list of experts, each a list of per-epoch parameter lists). It needs ``kornia``, ``yacs`` and
``wandb`` beside ddsearch's own dependencies.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from safetensors.torch import load_file, save_file

from official_code import NO_GPU_PRELUDE, OfficialRun, check_clone as _check_clone, run_launcher
from ddsearch.methods.pad.settings import PADSettings

# argv: [clone, workdir]
_LAUNCHER = NO_GPU_PRELUDE + """
import runpy, sys
from safetensors.torch import load_file, save_file
clone, workdir = sys.argv[1], sys.argv[2]
sys.path.insert(0, clone)
import utils.utils_baseline as baseline
from utils.cfg import CFG
CFG.loss_threshold_low = 1.0  # read by distill/PAD.py, never defined; the YAML sets it
CFG.lr_img = float(CFG.lr_img)  # an int default, which a YAML float would not merge into
data = load_file(workdir + "/data.safetensors")

def get_dataset(dataset, data_path, batch_size=1, subset=None, args=None, baseline=False):
    train = torch.utils.data.TensorDataset(data["train_x"], data["train_y"])
    test = torch.utils.data.TensorDataset(data["test_x"], data["test_y"])
    classes = list(range(int(data["train_y"].max()) + 1))
    identity = {c: c for c in classes}
    return (data["train_x"].shape[1], tuple(data["train_x"].shape[2:]), len(classes), [str(c) for c in classes],
            data["mean"].tolist(), data["std"].tolist(), train, test,
            torch.utils.data.DataLoader(test, batch_size=256), None, identity, identity)

baseline.get_dataset = get_dataset
augment = baseline.DiffAugment
baseline.DiffAugment = lambda *args, **kwargs: augment(*args, **kwargs).clone(
    memory_format=torch.contiguous_format)
start = {}
sgd_init = torch.optim.SGD.__init__

def recording_init(self, params, *args, **kwargs):
    params = list(params)
    if len(params) == 1 and torch.is_tensor(params[0]) and params[0].dim() in (2, 4):
        start.setdefault("images" if params[0].dim() == 4 else "labels", params[0].detach().clone())
        if len(start) == 2:
            save_file(start, workdir + "/start.safetensors")
    sgd_init(self, params, *args, **kwargs)

torch.optim.SGD.__init__ = recording_init
sys.argv = [clone + "/distill/PAD.py", "--cfg", workdir + "/config.yaml"]
runpy.run_path(clone + "/distill/PAD.py", run_name="__main__")
"""
RUN_NAME = "reference"


def check_clone(folder: Path) -> Path:
    """The clone's absolute path; one clear line and exit where it is not a PAD clone."""
    return _check_clone(folder, ("distill/PAD.py", "utils/cfg.py"), "https://github.com/NUS-HPC-AI-Lab/PAD")


def write_buffer(trajectories: list[torch.Tensor], unflatten: Callable[[torch.Tensor], dict[str, torch.Tensor]],
                 folder: Path) -> Path:
    """Experts ``[epochs + 1, P]`` as the MTT buffer ``replay_buffer_0.pt``: experts > epochs > parameter tensors."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = [[[t.float().clone() for t in unflatten(epoch).values()] for epoch in traj] for traj in trajectories]
    path = folder / "replay_buffer_0.pt"
    torch.save(buffer, path)
    return path


def write_data(workdir: Path, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
               test_y: torch.Tensor, mean: list[float], std: list[float]) -> None:
    """The normalised tensors the launcher's ``get_dataset`` serves."""
    save_file({"train_x": train_x.float().contiguous(), "train_y": train_y.long().contiguous(),
               "test_x": test_x.float().contiguous(), "test_y": test_y.long().contiguous(),
               "mean": torch.tensor(mean), "std": torch.tensor(std)}, str(workdir / "data.safetensors"))


def config_for(settings: PADSettings, iterations: int, dsa_strategy: str, buffer_path: Path,
               num_classes: int = 10) -> dict[str, Any]:
    """The script's config for our PAD ``settings`` (its one evaluation, a 1-epoch check, at the end only)."""
    if settings.selection != "loss" and settings.alpha > 0:
        sys.exit("error: the released distill/PAD.py only ranks parameters by their loss; "
                 "compare it with selection=loss (or alpha=0)")
    return {
        "dataset": "MNIST", "model": "ConvNet", "ipc": settings.ipc, "Iteration": iterations, "name": RUN_NAME,
        "lr_img": settings.lr_img, "lr_lr": settings.lr_lr, "lr_y": settings.lr_y, "Momentum_y": settings.momentum_y,
        "lr_teacher": settings.lr_teacher, "syn_steps": settings.syn_steps, "expert_epochs": settings.expert_epochs,
        "batch_syn": settings.batch_syn or num_classes * settings.ipc, "min_start_epoch": settings.min_start_epoch,
        # DATM's sequential generation: the bound grows from current_max_start_epoch to max_start_epoch.
        "Sequential_Generation": True, "current_max_start_epoch": settings.max_start_epoch,
        "max_start_epoch": settings.max_start_epoch_final or settings.max_start_epoch,
        "expansion_end_epoch": settings.expansion_iterations or iterations,
        "threshold": settings.skip_threshold or 1e9, "loss_ratio": settings.alpha,
        "loss_threshold_low": 0.0 if settings.selection == "loss" else 1.0,
        "zca": False, "dsa": True, "dsa_strategy": dsa_strategy, "pix_init": "samples_predicted_correctly",
        "buffer_path": str(buffer_path), "data_path": str(buffer_path), "load_all": False,
        "eval_it": iterations, "skip_first_eva": True, "num_eval": 1, "epoch_eval_train": 0, "batch_train": 256,
        "parall_eva": True, "project": "ddsearch-reference",
    }


def run_official(clone: Path, config: dict[str, Any], workdir: Path,
                 echo_every: int = 0) -> tuple[OfficialRun, dict[str, torch.Tensor]]:
    """Run ``distill/PAD.py`` with ``config`` in ``workdir`` (which holds data.safetensors); its start and end sets."""
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    run = run_launcher(_LAUNCHER, [str(clone), str(workdir)], workdir,
                       "official PAD", "it needs kornia, yacs and wandb (pip install kornia yacs wandb)",
                       echo_every, env={"WANDB_MODE": "disabled", "WANDB_SILENT": "true"})
    saved = workdir / "logged_files" / config["dataset"] / str(config["ipc"]) / config["model"] / RUN_NAME / "Normal"
    it = config["Iteration"]
    sets = {f"start_{k}": v for k, v in load_file(workdir / "start.safetensors").items()}
    for kind in ("images", "labels", "lr"):
        sets[f"end_{kind}"] = torch.load(saved / f"{kind}_{it}.pt", weights_only=True)
    return run, sets
