"""Our evaluator against the released one: one distilled set, trained by both, under each protocol.

Every accuracy ddsearch reports comes from its own evaluator (``ddsearch.evaluate``). This asks
whether that evaluator is the papers' one: the released DataDAM code's ``evaluate_synset``
(github.com/DataDistillation/DataDAM, which you clone; none of it is copied here) and ours train on
the same set with the same network and DSA strategy, and both score the same 10,000 test images.

Two protocols are compared, plus ddsearch's default for context:

- the DSA-family evaluator: ConvNet with instance norm (their ``ConvNetIN``), DSA with flip;
- DataDAM's own: its ``get_network('ConvNet')`` builds the ConvNet with **batch** norm (our
  ``ConvNetBN``), DSA with flip;
- ddsearch's reproduction evaluator: ConvNet (instance norm), DSA without flip for digits.

    git clone https://github.com/DataDistillation/DataDAM /tmp/DataDAM && pip install kornia einops
    python benchmarks/reference_evaluator.py --reference /tmp/DataDAM --set ~/.cache/ddsearch/reproduce/X.safetensors
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from common import data_root, device_info, write_results
from official_datadam import check_clone, evaluate_official
from ddsearch.augment import FULL_STRATEGY, default_strategy
from ddsearch.data import RealData, load_dataset
from ddsearch.evaluate import EvalResult, TrainSettings, evaluate_synset, two_std
from ddsearch.synset import SyntheticSet

# short name -> (label, our network, their network name or None where only ours runs, DSA strategy)
PROTOCOLS: dict[str, tuple[str, str, str | None, str]] = {
    "dsa": ("DSA-family: ConvNet (instance norm), DSA with flip", "ConvNet", "ConvNetIN", FULL_STRATEGY),
    "bn": ("DataDAM's release: ConvNet with batch norm, DSA with flip", "ConvNetBN", "ConvNet", FULL_STRATEGY),
    "ours": ("ddsearch's reproduction: ConvNet (instance norm), DSA without flip", "ConvNet", None,
             default_strategy("mnist")),
}


def handover(synset: SyntheticSet, data: RealData, path: Path) -> Path:
    """The set and the test split as one safetensors file for the released evaluator (no pickles)."""
    save_file({"images": synset.images.float().contiguous(), "labels": synset.labels.long().contiguous(),
               "num_classes": torch.tensor(synset.num_classes), "test_x": data.test_x.float().contiguous(),
               "test_y": data.test_y.long().contiguous()}, str(path))
    return path


def side(result: EvalResult) -> dict[str, object]:
    """One evaluator's row: its network, precision and test accuracies (the evaluator's own statistics)."""
    return {"arch": result.arch, "precision": result.precision, "test_acc": result.test_acc,
            "test_acc_mean": result.test_mean, "test_acc_std": result.test_std}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, type=Path, help="a clone of DataDistillation/DataDAM")
    parser.add_argument("--set", required=True, type=Path, help="a distilled MNIST set (.safetensors)")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS),
                        help=f"comma-separated, from {', '.join(PROTOCOLS)} (a training at IPC 10 takes minutes)")
    parser.add_argument("--name", default="reference_evaluator_cpu")
    args = parser.parse_args()
    chosen = [p.strip() for p in args.protocols.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PROTOCOLS))
    if unknown or not chosen:
        parser.error(f"--protocols: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(PROTOCOLS)}")
    clone = check_clone(args.reference)
    device = torch.device("cpu")
    data = load_dataset("mnist", root=data_root(), val_size=5000, device=device, download=False)
    synset = SyntheticSet.load(args.set, expect=data)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ddsearch-evaluator-") as workdir:
        tensors = handover(synset, data, Path(workdir) / "set.safetensors")
        for label, ours, theirs, strategy in (PROTOCOLS[p] for p in chosen):
            settings = TrainSettings(epochs=args.epochs, dsa_strategy=strategy)
            result = evaluate_synset(synset, data, ours, settings, repeats=args.repeats, seed=0, progress=True)
            row = {"ours": side(result), "strategy": strategy}
            if theirs is not None:
                accs = evaluate_official(clone, tensors, theirs, strategy, args.epochs, args.repeats, Path(workdir))
                row["theirs"] = side(EvalResult(arch=theirs, test_acc=accs, epochs=args.epochs, precision="fp32"))
            rows[label] = row
            print(label, row, flush=True)
    report(args, synset, rows, device_info(device))


def report(args: argparse.Namespace, synset: SyntheticSet, rows: dict[str, dict], info: dict) -> None:
    def pct(side: dict) -> str:
        return f"{100 * side['test_acc_mean']:.2f} ± {100 * side['test_acc_std']:.2f}"

    table = []
    for label, row in rows.items():
        ours, theirs = row["ours"], row.get("theirs")
        if theirs is None:
            table.append(f"| {label} | – | {pct(ours)} | – | – |")
            continue
        gap = 100 * (ours["test_acc_mean"] - theirs["test_acc_mean"])
        bar = 100 * two_std(ours["test_acc_std"], theirs["test_acc_std"])
        row.update(gap_points=gap, two_std_points=bar, agree=abs(gap) <= bar)
        table.append(f"| {label} | {pct(theirs)} | {pct(ours)} | {gap:+.2f} ({bar:.2f}) | "
                     f"{'yes' if abs(gap) <= bar else '**no**'} |")
    payload = {"benchmark": "reference_evaluator", "dataset": "mnist", "set": args.set.name,
               "ipc": synset.images.shape[0] // synset.num_classes, "set_method": synset.method,
               "epochs": args.epochs, "repeats": args.repeats,
               "reference": "github.com/DataDistillation/DataDAM utils.evaluate_synset", "rows": rows, **info}
    md = "\n".join([
        f"# Our evaluator against the released one, MNIST IPC {payload['ipc']} ({info['device_name']})",
        "",
        f"- One set, `{args.set.name}` ({synset.method or 'distilled'}), trained {args.repeats} times by each "
        f"evaluator for {args.epochs} epochs (SGD lr 0.01, momentum 0.9, weight decay 5e-4, ×0.1 at half, "
        "batch 256); test accuracy on the 10,000 test images.",
        "- The released evaluator is DataDAM's `utils.evaluate_synset`, run unchanged from a clone in fp32; "
        "ours runs in its automatic precision.",
        f"- torch {info['torch']}, {info['date']}.",
        "",
        "| protocol | released evaluator (%) | ddsearch (%) | ours − released (2 std) | agree |",
        "| --- | --- | --- | --- | --- |",
        *table,
    ])
    write_results(args.name, payload, md)


if __name__ == "__main__":
    main()
