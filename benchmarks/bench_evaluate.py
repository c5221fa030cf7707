"""Evaluator throughput: repeats trained one by one, in worker processes, or stacked under vmap.

MNIST IPC 10 (a random real subset stands in for a distilled set), ConvNet, DSA; all variants
in one run, interleaved round by round so that other load on the machine hits each alike, and
reported as ratios to the one-by-one variant.

    python benchmarks/bench_evaluate.py [--repeats 2] [--epochs 200] [--rounds 2] [--variants sequential,processes]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from common import data_root, device_info, sync, write_results
from ddsearch.augment import default_strategy
from ddsearch.data import load_dataset
from ddsearch.evaluate import TrainSettings, evaluate_synset
from ddsearch.precision import resolve_precision
from ddsearch.synset import SyntheticSet

VARIANTS = {  # name -> TrainSettings fields
    "sequential": {"batch_repeats": False, "workers": 1},
    "processes": {"batch_repeats": False, "workers": os.cpu_count() or 1},
    "vmap-stacked": {"batch_repeats": True, "workers": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="times each variant runs, interleaved")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--arch", default="ConvNet")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--variants", default="sequential,processes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--name", default="evaluate_repeats", help="results file stem (the device kind is appended)")
    args = parser.parse_args()
    device = torch.device(args.device)
    variants = args.variants.split(",")
    data = load_dataset("mnist", root=data_root(), val_size=5000, device=device)
    x, y = data.subset(args.ipc, torch.Generator().manual_seed(0))
    synset = SyntheticSet(images=x, labels=y, num_classes=10, dataset="mnist")
    load_before = os.getloadavg()[0]
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    accuracy: dict[str, float] = {}
    for _ in range(args.rounds):
        for variant in variants:
            settings = TrainSettings(epochs=args.epochs, dsa_strategy=default_strategy("mnist"),
                                     precision=args.precision, **VARIANTS[variant])
            sync(device)
            start = time.perf_counter()
            result = evaluate_synset(synset, data, args.arch, settings, repeats=args.repeats, test=False)
            sync(device)
            seconds[variant].append(time.perf_counter() - start)
            accuracy[variant] = result.val_mean
    base = statistics.median(seconds[variants[0]])
    rows = [{"variant": v, "seconds_median": statistics.median(s), "seconds": s, "val_acc_mean": accuracy[v],
             "speedup": base / statistics.median(s), **VARIANTS[v]} for v, s in seconds.items()]
    info = device_info(device) | {"precision": resolve_precision(args.precision, device), "load_average_1min_before": load_before,
                                  "load_average_1min_after": os.getloadavg()[0]}
    payload = {"benchmark": "evaluate_repeats", "repeats": args.repeats, "epochs": args.epochs, "ipc": args.ipc,
               "arch": args.arch, "rounds": args.rounds, "rows": rows, **info}
    md = "\n".join([
        f"# Evaluator repeats: one by one, in processes, or stacked ({info['device_name']})",
        "",
        f"MNIST IPC {args.ipc} random subset, {args.arch}, {args.repeats} repeats × {args.epochs} epochs with DSA "
        f"(training plus validation scoring), precision {info['precision']}, median of {args.rounds} interleaved rounds; "
        f"torch {info['torch']}, {info['date']}. 1-minute load average {load_before:.1f} before and "
        f"{info['load_average_1min_after']:.1f} after ({info['cores']} cores: above that, other work shared them).",
        "",
        "| variant | seconds (median) | per repeat × 1000 epochs | speed vs one by one | val acc (mean) |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {r['variant']} | {r['seconds_median']:.1f} | {r['seconds_median'] / args.repeats * 1000 / args.epochs:.0f} s | "
          f"**{r['speedup']:.2f}x** | {r['val_acc_mean']:.4f} |" for r in rows],
        "",
        "By default ddsearch trains repeats one by one in-process on CPUs (`TrainSettings.workers`, "
        "`reproduce.py --workers` opt in to processes) and stacks them under vmap only on GPUs.",
    ])
    write_results(f"{args.name}_{'gpu' if device.type == 'cuda' else 'cpu'}", payload, md)


if __name__ == "__main__":
    main()
