"""Evaluator throughput: independent repeats trained one by one vs stacked under vmap.

MNIST IPC 10 (a random real subset stands in for a distilled set), ConvNet, DSA, a short
schedule; both variants in one run, reported as a ratio.

    python benchmarks/bench_evaluate.py [--repeats 4] [--epochs 20] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from common import data_root, device_info, sync, write_results
from ddsearch.augment import default_strategy
from ddsearch.data import load_dataset
from ddsearch.evaluate import TrainSettings, evaluate_synset
from ddsearch.synset import SyntheticSet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    data = load_dataset("mnist", root=data_root(), val_size=5000, device=device)
    x, y = data.subset(args.ipc, torch.Generator().manual_seed(0))
    synset = SyntheticSet(images=x, labels=y, num_classes=10, dataset="mnist")
    rows = []
    for batched in (False, True):
        settings = TrainSettings(epochs=args.epochs, dsa_strategy=default_strategy("mnist"), batch_repeats=batched)
        sync(device)
        start = time.perf_counter()
        result = evaluate_synset(synset, data, "ConvNet", settings, repeats=args.repeats, test=False)
        sync(device)
        seconds = time.perf_counter() - start
        rows.append({"variant": "vmap-stacked" if batched else "sequential", "seconds": seconds,
                     "val_acc_mean": result.val_mean})
    ratio = rows[0]["seconds"] / rows[1]["seconds"]
    info = device_info(device)
    payload = {"benchmark": "evaluate_repeats", "repeats": args.repeats, "epochs": args.epochs, "ipc": args.ipc,
               "arch": "ConvNet", "speedup_stacked": ratio, "rows": rows, **info}
    md = "\n".join([
        f"# Evaluator repeats: sequential vs vmap-stacked ({info['device_name']})",
        "",
        f"MNIST IPC {args.ipc} random subset, ConvNet, {args.repeats} repeats x {args.epochs} epochs with DSA "
        f"(training plus validation scoring); torch {info['torch']}, {info['date']}.",
        "",
        "| variant | seconds | val acc (mean) |",
        "| --- | --- | --- |",
        *[f"| {r['variant']} | {r['seconds']:.1f} | {r['val_acc_mean']:.4f} |" for r in rows],
        "",
        f"Stacked is **{ratio:.2f}x** the speed of sequential; by default ddsearch stacks repeats only on GPUs.",
    ])
    write_results(f"evaluate_repeats_{'gpu' if device.type == 'cuda' else 'cpu'}", payload, md)


if __name__ == "__main__":
    main()
