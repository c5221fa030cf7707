"""Running the authors' DataDAM code (github.com/DataDistillation/DataDAM) from a user's clone.

None of its code is copied here. It runs as released, with two changes made from outside it: on a
machine without a GPU its unconditional ``net.cuda()`` becomes a no-op, and torch and numpy are
seeded. It needs ``kornia`` and ``einops`` beside ddsearch's own dependencies. Besides the whole
script, its evaluator (``utils.evaluate_synset``) can train on a set handed over as safetensors.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from official_code import NO_GPU_PRELUDE, OfficialRun, check_clone as _check_clone, run_launcher

# argv: [clone, seed, the script's own arguments...]
_LAUNCHER = NO_GPU_PRELUDE + """
import runpy, sys
import numpy
folder, seed = sys.argv[1], int(sys.argv[2])
torch.manual_seed(seed)
numpy.random.seed(seed)
sys.path.insert(0, folder)
sys.argv = [folder + "/main_DataDAM.py"] + sys.argv[3:]
runpy.run_path(folder + "/main_DataDAM.py", run_name="__main__")
"""


def check_clone(folder: Path) -> Path:
    """The clone's absolute path; one clear line and exit where it is not a DataDAM clone."""
    return _check_clone(folder, ("main_DataDAM.py",), "https://github.com/DataDistillation/DataDAM")


def run_official(clone: Path, arguments: list[str], workdir: Path, seed: int = 0, echo_every: int = 0) -> OfficialRun:
    """Run ``main_DataDAM.py`` with ``arguments`` in ``workdir``; echo every ``echo_every``-th logged iteration."""
    return run_launcher(_LAUNCHER, [str(clone), str(seed), *arguments], workdir, "official DataDAM",
                        "it needs kornia and einops (pip install kornia einops)", echo_every)


# argv: [clone, tensors.safetensors, their model name, DSA strategy, epochs, repeats]. Their evaluator
# trains as released (SGD, lr 0.01, x0.1 after half, DSA per sample) and logs one line per training.
_EVAL_LAUNCHER = NO_GPU_PRELUDE + """
import sys, types
from safetensors.torch import load_file
folder, tensors, model, strategy, epochs, repeats = sys.argv[1:7]
sys.path.insert(0, folder)
from utils import ParamDiffAug, TensorDataset, evaluate_synset, get_network
t = load_file(tensors)
args = types.SimpleNamespace(lr_net=0.01, epoch_eval_train=int(epochs), batch_train=256, dsa=strategy != "none",
                             dsa_strategy=strategy, dsa_param=ParamDiffAug(), dc_aug_param=None,
                             device="cuda" if torch.cuda.is_available() else "cpu")
test = torch.utils.data.DataLoader(TensorDataset(t["test_x"], t["test_y"]), batch_size=256, shuffle=False)
for repeat in range(int(repeats)):
    net = get_network(model, t["images"].shape[1], int(t["num_classes"]), tuple(t["images"].shape[2:]))
    evaluate_synset(repeat, net, t["images"], t["labels"], test, args)
"""
_EVAL_LINE = re.compile(r"Evaluate_(\d+): .*test acc = ([\d.]+)")


def evaluate_official(clone: Path, tensors: Path, model: str, strategy: str, epochs: int, repeats: int,
                      workdir: Path) -> list[float]:
    """Test accuracies of ``repeats`` trainings by the released ``evaluate_synset`` on the set in ``tensors``
    (a safetensors file of images, labels, num_classes, test_x and test_y); ``model`` is their network name."""
    run = run_launcher(_EVAL_LAUNCHER, [str(clone), str(tensors), model, strategy, str(epochs), str(repeats)],
                       workdir, "official DataDAM evaluator", "it needs kornia and einops (pip install kornia einops)")
    found = [m for m in map(_EVAL_LINE.search, run.lines) if m]
    if len(found) != repeats:
        sys.exit(f"error: the official DataDAM evaluator logged {len(found)} results, expected {repeats}")
    return [float(m[2]) for m in found]
