"""Does PAD's matching improve its own starting set? Variants from one start, one evaluator.

PAD's MNIST IPC 10 rows stay under the herding control at the iterations this machine allows, and
a PAD run that starts from herding's picks ends below them. This asks where the loss comes from:
one PAD distiller is built once (experts from the cache), its starting set is evaluated, and each
variant then runs from that same state (images, labels, learned lr, momenta, random stream) for
the same iterations and is evaluated with the same evaluator. A variant is any PAD setting,
e.g. ``lr_img=10`` or ``selection=loss;alpha=0.5``.

    python benchmarks/pad_from_start.py --init herding --iterations 100 \\
        --variant lr_img=100 --variant lr_img=10 --variant "selection=loss;alpha=0.5" \\
        --set method.num_experts=2 --set method.expert_train_epochs=14 ...
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from tqdm import tqdm

from common import RESULTS, data_root, device_info, write_results
from ddsearch.augment import default_strategy
from ddsearch.config import apply_overrides, load_study
from ddsearch.errors import DDSearchError
from ddsearch.evaluate import TrainSettings, evaluate_synset, two_std
from ddsearch.methods.pad.matching import PAD
from ddsearch.methods.pad.settings import PADSettings
from ddsearch.study_data import load_study_data

STUDY = Path(__file__).resolve().parents[1] / "studies" / "mnist_pad.yaml"


def variant_settings(text: str, base: PADSettings) -> PADSettings:
    """``base`` with ``"k=v;k=v"`` applied as study overrides are (YAML values), validated as a study's are."""
    raw = apply_overrides(base.model_dump(), [item for item in text.split(";") if item])
    try:
        return PADSettings.model_validate(raw)
    except ValidationError as err:
        problem = err.errors()[0]
        raise DDSearchError(f"--variant {text!r}: {'.'.join(map(str, problem['loc']))}: {problem['msg']}") from None


def run_variant(distiller: PAD, state: dict[str, Any], base: PADSettings, text: str, iterations: int) -> dict[str, Any]:
    """Restore ``state`` (images, labels, lr, momenta, random stream), apply the variant, run; the run's figures."""
    distiller.load_state_dict(copy.deepcopy(state))
    distiller.settings = variant_settings(text, base)
    distiller._check_experts(distiller.settings)  # a variant must stay inside the epochs the experts trained
    losses, start = [], time.perf_counter()
    for _ in tqdm(range(iterations), desc=text, unit="it"):
        losses.append(distiller.step())
    seconds = time.perf_counter() - start
    drift = float((distiller.images.detach() - state["images"]).norm() / state["images"].norm())
    curve = torch.stack(losses).float().view(4, -1).mean(1).tolist() if iterations % 4 == 0 else []
    return {"variant": text, "iterations": iterations, "seconds": seconds, "loss_quarters": curve,
            "syn_lr": distiller.learned_lr(), "image_drift": drift}


def evaluate(distiller: PAD, data, train: TrainSettings, repeats: int) -> dict[str, Any]:
    result = evaluate_synset(distiller.synset(), data, "ConvNet", train, repeats=repeats, seed=0, use_learned_lr=False)
    return result.summary() | {"test_accs": result.test_acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--init", default="herding", choices=["real", "herding"])
    parser.add_argument("--variant", action="append", default=[], help="KEY=VALUE[;KEY=VALUE] PAD settings")
    parser.add_argument("--set", action="append", default=[], help="study override for every variant")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--name", default="pad_from_start_cpu")
    args = parser.parse_args()

    overrides = [f"dataset.root={data_root()}", "device=cpu", f"method.init={args.init}",
                 f"method.iterations={args.iterations}", *args.set]
    study = load_study(STUDY, overrides)
    data = load_study_data(study, device=torch.device("cpu"))
    train = TrainSettings(epochs=args.epochs, dsa_strategy=default_strategy(data.name))
    start = time.perf_counter()
    distiller = PAD(study.method, data, seed=study.seed, progress=True, precision=study.precision)
    setup = time.perf_counter() - start
    state = copy.deepcopy(distiller.state_dict())
    base = distiller.settings
    rows = [{"variant": "starting set", "iterations": 0, **evaluate(distiller, data, train, args.repeats)}]
    print(f"starting set: test {100 * rows[0]['test_acc_mean']:.2f}")
    for text in args.variant:
        rows.append(run_variant(distiller, state, base, text, args.iterations) | evaluate(distiller, data, train, args.repeats))
        print(f"{text}: test {100 * rows[-1]['test_acc_mean']:.2f}")

    payload = {"device": device_info(torch.device("cpu")), "init": args.init, "setup_seconds": setup,
               "settings": base.model_dump(mode="json"), "evaluator": f"ConvNet + DSA, {args.repeats} x {args.epochs} epochs",
               "rows": rows}
    write_results(args.name, payload, markdown(payload))


def markdown(p: dict[str, Any]) -> str:
    first = p["rows"][0]
    lines = [
        f"# PAD from one starting set ({p['init']} start), MNIST IPC {p['settings']['ipc']}",
        "",
        f"Device: {p['device']['device_name']}, torch {p['device']['torch']}, {p['device']['date']}. "
        f"Evaluator: {p['evaluator']} at lr 0.01 (reduced, for ranking variants), test accuracy.",
        f"Every variant starts from the same state and random stream. Base settings: {json.dumps(p['settings'])}",
        "",
        "| variant | iterations | test % | val % | vs start (pts) | > 2 std? | learned lr | image drift | loss by quarter | s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in p["rows"]:
        cells = ["–"] * 6
        if r is not first:
            gap = 100 * (r["test_acc_mean"] - first["test_acc_mean"])
            bar = 100 * two_std(r["test_acc_std"], first["test_acc_std"])
            quarters = " → ".join(f"{v:.3f}" for v in r["loss_quarters"]) or "–"
            cells = [f"{gap:+.2f}", f"{'yes' if abs(gap) > bar else 'no'} ({bar:.2f})", f"{r['syn_lr']:.4f}",
                     f"{r['image_drift']:.3f}", quarters, f"{r['seconds']:.0f}"]
        lines.append(f"| {r['variant']} | {r['iterations']} | {100 * r['test_acc_mean']:.2f} ± "
                     f"{100 * r['test_acc_std']:.2f} | {100 * r['val_acc_mean']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "*image drift*: ‖images − start‖ / ‖start‖ after the run. *learned lr*: PAD's student lr, "
              f"which starts at {p['settings']['lr_teacher']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    RESULTS.mkdir(exist_ok=True)
    main()
