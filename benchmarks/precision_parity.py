"""Accuracy parity of bf16 and fp32: the same seed and budget, MNIST IPC 10 DataDAM and the evaluator.

Three rows, each a 1000-epoch ConvNet evaluator with DSA, ``--repeats`` trainings, test accuracy:
- fp32 distillation, fp32 evaluator (the reference);
- bf16 distillation, bf16 evaluator (end to end in bf16);
- fp32 distillation, bf16 evaluator (the evaluator alone).
The differences of the means are what the fast path costs in accuracy.

    python benchmarks/precision_parity.py [--iterations 400] [--batch-real 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from common import data_root, device_info, write_results
from ddsearch.augment import default_strategy
from ddsearch.methods.datadam import DataDAMSettings
from ddsearch.data import load_dataset
from ddsearch.evaluate import TrainSettings, evaluate_synset
from ddsearch.methods import create_distiller


def distill(data, settings: DataDAMSettings, precision: str, seed: int = 0):
    """The distilled set and the seconds its iterations took."""
    distiller = create_distiller(settings, data, seed=seed, precision=precision)
    start = time.perf_counter()
    for _ in range(settings.iterations):
        distiller.step()
    return distiller.synset(), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--batch-real", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cpu")
    data = load_dataset("mnist", root=data_root(), val_size=5000, device=device, download=False)
    settings = DataDAMSettings(ipc=10, iterations=args.iterations, arch="ConvNetBN", batch_real=args.batch_real)
    synsets = {p: distill(data, settings, p) for p in ("fp32", "bf16")}
    rows = []
    for distill_precision, eval_precision in (("fp32", "fp32"), ("bf16", "bf16"), ("fp32", "bf16")):
        synset, distill_seconds = synsets[distill_precision]
        protocol = TrainSettings(epochs=args.epochs, dsa_strategy=default_strategy("mnist"), precision=eval_precision)
        result = evaluate_synset(synset, data, "ConvNet", protocol, repeats=args.repeats, seed=0, progress=True)
        rows.append({
            "distill_precision": distill_precision, "eval_precision": eval_precision,
            "test_acc": result.test_acc, "test_acc_mean": result.test_mean, "test_acc_std": result.test_std,
            "val_acc_mean": result.val_mean, "distill_seconds": distill_seconds, "eval_seconds": result.train_seconds,
        })
        print(rows[-1], flush=True)
    reference = rows[0]["test_acc_mean"]
    for row in rows:
        row["diff_points_vs_fp32"] = 100 * (row["test_acc_mean"] - reference)
    info = device_info(device)
    payload = {"benchmark": "precision_parity", "dataset": "mnist", "ipc": 10, "iterations": args.iterations,
               "batch_real": args.batch_real, "epochs": args.epochs, "repeats": args.repeats, "rows": rows, **info}
    md = "\n".join([
        f"# bf16 vs fp32 accuracy parity ({info['device_name']})",
        "",
        f"MNIST IPC 10, DataDAM (ConvNetBN, {args.iterations} iterations, batch_real {args.batch_real}/class, seed 0), "
        f"evaluated with ConvNet + DSA for {args.epochs} epochs, {args.repeats} trainings each; torch {info['torch']}, {info['date']}.",
        "",
        "| distillation | evaluator | test acc (%) | vs fp32/fp32 (points) | distill s | eval s |",
        "| --- | --- | --- | --- | --- | --- |",
        *[f"| {r['distill_precision']} | {r['eval_precision']} | {100 * r['test_acc_mean']:.2f} ± {100 * r['test_acc_std']:.2f} | "
          f"{r['diff_points_vs_fp32']:+.2f} | {r['distill_seconds']:.0f} | {r['eval_seconds']:.0f} |" for r in rows],
        "",
        "Accuracy is the point here; for speed figures see `precision_cpu.md` (seconds here depend on what else ran).",
    ])
    write_results("precision_parity_cpu", payload, md)


if __name__ == "__main__":
    main()
