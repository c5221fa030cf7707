"""Where an evaluator epoch's time goes: torch.profiler's share per operator.

The papers' protocol trains 5 evaluators × 1000 epochs per row; at MNIST IPC 50 that is about
66 minutes on this project's 2-core CPU, the largest cost left in the reproduction table. This
profiles the same training step as ``ddsearch.evaluate.train_epoch`` (DSA, ConvNet, SGD) on a
random real subset, so speed work targets the operators that take the time.

    python benchmarks/bench_evaluator_ops.py [--ipc 50] [--epochs 3] [--precision auto]
"""

from __future__ import annotations

import argparse
import os

import torch
from torch.profiler import ProfilerActivity, profile

from common import data_root, device_info, write_results
from ddsearch.augment import DSA, default_strategy
from ddsearch.data import load_dataset
from ddsearch.evaluate import TrainSettings, sgd_with_step_decay, build_network, train_epoch
from ddsearch.precision import resolve_precision

TOP_OPS = 12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=3, help="profiled epochs, after one warm-up epoch")
    parser.add_argument("--arch", default="ConvNet")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    data = load_dataset("mnist", root=data_root(), val_size=5000, device=device)
    x, y = data.subset(args.ipc, torch.Generator().manual_seed(0))
    settings = TrainSettings(dsa_strategy=default_strategy("mnist"), precision=args.precision)
    precision = resolve_precision(settings.precision, device)
    net = build_network(args.arch, data, seed=0, device=device)
    optimizer, _ = sgd_with_step_decay(net.parameters(), settings)
    dsa, generator, rows = DSA(settings.dsa_strategy), torch.Generator().manual_seed(0), torch.arange(x.shape[0])

    def epoch() -> None:
        train_epoch(net, optimizer, x, y, rows, settings.batch_size, dsa, generator, precision)

    epoch()  # warm-up: first-call allocations and kernel selection
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.epochs):
            epoch()
    events = [e for e in prof.key_averages() if e.self_device_time_total or e.self_cpu_time_total]
    time_of = (lambda e: e.self_device_time_total) if device.type == "cuda" else (lambda e: e.self_cpu_time_total)
    total_us = sum(time_of(e) for e in events)
    top = sorted(events, key=time_of, reverse=True)[:TOP_OPS]
    ops = [{"op": e.key, "calls": e.count, "self_ms_per_epoch": time_of(e) / 1e3 / args.epochs,
            "share": time_of(e) / total_us} for e in top]
    info = device_info(device) | {"precision": precision, "load_average_1min": os.getloadavg()[0]}
    epoch_s = total_us / 1e6 / args.epochs
    payload = {"benchmark": "evaluator_ops", "ipc": args.ipc, "images": int(x.shape[0]), "arch": args.arch,
               "epochs_profiled": args.epochs, "epoch_seconds": epoch_s, "ops": ops, **info}
    md = "\n".join([
        f"# Evaluator epoch by operator ({info['device_name']})",
        "",
        f"MNIST IPC {args.ipc} random subset ({x.shape[0]} images), {args.arch}, batch {settings.batch_size}, "
        f"DSA, SGD, precision {precision}; self time summed over {args.epochs} profiled epochs after a warm-up; "
        f"torch {info['torch']}, {info['date']}, 1-minute load average {info['load_average_1min']:.1f} "
        f"({info['cores']} cores). Profiled epoch: {epoch_s:.2f} s, so 1000 epochs ≈ {epoch_s * 1000 / 60:.0f} min "
        "(the profiler adds a little).",
        "",
        "| operator | calls | self ms per epoch | share |",
        "| --- | --- | --- | --- |",
        *[f"| `{o['op']}` | {o['calls']} | {o['self_ms_per_epoch']:.1f} | {o['share']:.1%} |" for o in ops],
    ])
    write_results(f"evaluator_ops_ipc{args.ipc}_{'gpu' if device.type == 'cuda' else 'cpu'}", payload, md)


if __name__ == "__main__":
    main()
