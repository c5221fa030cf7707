"""Where does flip in the evaluator cost an MNIST set its accuracy? Per class, for distilled and real sets.

The released DataDAM evaluator trains with DSA's full strategy, flip included; ddsearch leaves flip
out for digits. On the same IPC 1 sets, flip cost a DataDAM set 2.3 points but herding's real
images only 0.6 and a random subset nothing (``reproduce_cpu.md``). This trains each set with and
without flip (same seeds as ``ddsearch.evaluate``) and asks, per class, where the loss lands, and
whether the networks trained without flip already call a mirrored set image another class: when
they do, flip training shows the evaluator that image under a label its mirror contradicts.

    python benchmarks/flip_probe.py --set ~/.cache/ddsearch/reproduce/mnist-datadam-ipc1-X.safetensors
"""

from __future__ import annotations

import argparse
import functools
from statistics import fmean
from pathlib import Path

import torch

from common import RESULTS, data_root, device_info, write_results
from ddsearch.augment import FULL_STRATEGY, default_strategy
from ddsearch.coreset import control_set, embedding_network
from ddsearch.config import load_study
from ddsearch.data import RealData
from ddsearch.evaluate import TrainSettings, build_network, predict, train_network
from ddsearch.precision import resolve_precision
from ddsearch.study_data import load_study_data
from ddsearch.synset import SyntheticSet

STRATEGIES = {"no flip (ddsearch)": default_strategy("mnist"), "with flip (released DataDAM)": FULL_STRATEGY}


def mirrored(x: torch.Tensor) -> torch.Tensor:
    return torch.flip(x, dims=[-1])


def probe(synset: SyntheticSet, data: RealData, strategy: str, epochs: int, repeats: int) -> dict[str, object]:
    """Train ``repeats`` ConvNets on the set; per-class test recall, mirrored-test accuracy, mirror agreement."""
    settings = TrainSettings(epochs=epochs, dsa_strategy=strategy)
    precision = resolve_precision(settings.precision, data.train_x.device)  # what evaluate_synset scores in
    per_class, test, mirror_test, agreement = [], [], [], []
    for r in range(repeats):
        net = build_network("ConvNet", data, r, data.train_x.device)  # seed 0 * 1000 + r, as evaluate_synset
        train_network(net, synset.images, synset.labels, settings, r, progress=True, desc=f"{synset.method} {r + 1}")
        net.eval()
        with torch.no_grad():
            pred = predict(net, data.test_x, precision=precision).argmax(1)
            pred_mirror = predict(net, mirrored(data.test_x), precision=precision).argmax(1)
            own_mirror = predict(net, mirrored(synset.images), precision=precision).argmax(1)
        hard = synset.labels if synset.labels.dim() == 1 else synset.labels.argmax(1)
        hits = torch.bincount(data.test_y[pred == data.test_y], minlength=data.num_classes)
        per_class.append((hits / torch.bincount(data.test_y, minlength=data.num_classes)).tolist())
        test.append(float((pred == data.test_y).float().mean()))
        mirror_test.append(float((pred_mirror == data.test_y).float().mean()))
        agreement.append(float((own_mirror == hard).float().mean()))
    return {"test_acc": test, "test_acc_mean": fmean(test), "mirrored_test_acc_mean": fmean(mirror_test),
            "mirror_agreement_mean": fmean(agreement),
            "class_recall_mean": torch.tensor(per_class, dtype=torch.float64).mean(0).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", type=Path, required=True, help="a distilled MNIST set (repeatable)")
    parser.add_argument("--controls", default="herding,random")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="flip_probe_cpu")
    args = parser.parse_args()
    device = torch.device("cpu")
    # the reproduction's data (its split decides which training images the controls can pick)
    study_file = RESULTS.parents[1] / "studies" / "mnist_datadam.yaml"
    study = load_study(study_file, [f"dataset.root={data_root()}", "device=cpu"])
    data = load_study_data(study, device=device)
    sets = {path.name: SyntheticSet.load(path, expect=data) for path in args.set}
    ipc = next(iter(sets.values())).ipc
    embedder = functools.cache(lambda: embedding_network(data, "ConvNet", epochs=2, seed=0))  # as reproduce.py
    for control in (c for c in args.controls.split(",") if c):
        sets[control] = control_set(data, ipc, control, embedder, seed=0)
    rows = {name: {label: probe(synset, data, strategy, args.epochs, args.repeats)
                   for label, strategy in STRATEGIES.items()} for name, synset in sets.items()}
    methods = {name: synset.method or "distilled" for name, synset in sets.items()}
    report(args, ipc, methods, rows, device_info(device))


def report(args: argparse.Namespace, ipc: int, methods: dict[str, str], rows: dict, info: dict) -> None:
    no_flip, flip = STRATEGIES
    names = {name: method if name == method else f"{method} (`{name}`)" for name, method in methods.items()}
    summary = ["| set | test, no flip | test, with flip | change | mirrored test (no flip → flip) | "
               "mirror agreement, no-flip nets |", "| --- | --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        a, b = row[no_flip], row[flip]
        summary.append(f"| {names[name]} | {100 * a['test_acc_mean']:.2f} | "
                       f"{100 * b['test_acc_mean']:.2f} | "
                       f"{100 * (b['test_acc_mean'] - a['test_acc_mean']):+.2f} | "
                       f"{100 * a['mirrored_test_acc_mean']:.2f} → {100 * b['mirrored_test_acc_mean']:.2f} | "
                       f"{100 * a['mirror_agreement_mean']:.0f}% |")
    classes = range(len(next(iter(rows.values()))[no_flip]["class_recall_mean"]))
    per_class = ["| set | " + " | ".join(f"{c}" for c in classes) + " |", "| --- |" + " --- |" * len(classes)]
    for name, row in rows.items():
        deltas = [100 * (f - n) for n, f in zip(row[no_flip]["class_recall_mean"], row[flip]["class_recall_mean"])]
        per_class.append(f"| {names[name]} | " + " | ".join(f"{d:+.1f}" for d in deltas) + " |")
    payload = {"benchmark": "flip_probe", "dataset": "mnist", "ipc": ipc, "epochs": args.epochs,
               "repeats": args.repeats, "strategies": STRATEGIES, "methods": methods, "rows": rows, **info}
    md = "\n".join([
        f"# Where flip in the evaluator costs accuracy, MNIST IPC {ipc} ({info['device_name']})",
        "",
        f"- Each set trains a ConvNet (instance norm) {args.repeats} times for {args.epochs} epochs with and "
        "without flip (DSA otherwise the same); test accuracy in %, means over the trainings.",
        "- *mirrored test*: the same networks on the left-right mirrored test images. *mirror agreement*: "
        "how often the networks trained without flip give a mirrored set image its own label; where they do "
        "not, training with flip shows the evaluator that image under a label its mirror contradicts.",
        f"- torch {info['torch']}, {info['date']}.",
        "",
        *summary,
        "",
        "Change in test recall per class (points), with flip minus without:",
        "",
        *per_class,
    ])
    write_results(args.name, payload, md)


if __name__ == "__main__":
    main()
