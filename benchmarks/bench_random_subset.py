"""The random-selection control: a random real subset evaluated with the papers' protocol.

The Dataset Condensation papers report about 95% for a random MNIST subset at IPC 10 with
ConvNet (1000 epochs). This measures ours with the same evaluator every distiller uses.

    python benchmarks/bench_random_subset.py [--ipc 10] [--epochs 1000] [--repeats 2]
"""

from __future__ import annotations

import argparse

import torch

from common import data_root, device_info, write_results
from ddsearch.augment import default_strategy
from ddsearch.data import load_dataset
from ddsearch.evaluate import TrainSettings, evaluate_synset
from ddsearch.synset import SyntheticSet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--arch", default="ConvNet")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--subsets", type=int, default=1, help="independent random subsets")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    data = load_dataset(args.dataset, root=data_root(), val_size=5000, device=device)
    settings = TrainSettings(epochs=args.epochs, dsa_strategy=default_strategy(data.name))
    vals, tests, seconds = [], [], 0.0
    for subset_seed in range(args.subsets):
        x, y = data.subset(args.ipc, torch.Generator().manual_seed(subset_seed))
        synset = SyntheticSet(images=x, labels=y, num_classes=data.num_classes, dataset=data.name)
        result = evaluate_synset(synset, data, args.arch, settings, repeats=args.repeats, seed=subset_seed, progress=True)
        vals += result.val_acc
        tests += result.test_acc
        seconds += result.train_seconds
    info = device_info(device)
    t = torch.tensor(tests)
    v = torch.tensor(vals)
    record = {
        "method": "random", "dataset": args.dataset, "ipc": args.ipc, "arch": args.arch,
        "test_acc_mean": float(t.mean()), "test_acc_std": float(t.std(unbiased=False)),
        "val_acc_mean": float(v.mean()), "repeats": len(tests), "subsets": args.subsets, "epochs": args.epochs,
        "dsa": settings.dsa_strategy, "lr": settings.lr, "batch_size": settings.batch_size,
        "train_seconds": seconds, "device": info["device_name"], "published_random_ipc10": 0.951,
        **{f"env_{k}": v for k, v in info.items()},
    }
    md = "\n".join([
        f"# Random real subset, {args.dataset} IPC {args.ipc} ({info['device_name']})",
        "",
        f"{args.arch}, {args.epochs} epochs, DSA `{settings.dsa_strategy}`, SGD lr {settings.lr} (x0.1 at half), "
        f"{len(tests)} trainings over {args.subsets} subset(s); validation split 5000 images; torch {info['torch']}, {info['date']}.",
        "",
        "| method | ipc | test acc | val acc | published (DC papers) |",
        "| --- | --- | --- | --- | --- |",
        f"| random | {args.ipc} | {100 * record['test_acc_mean']:.2f} ± {100 * record['test_acc_std']:.2f} | "
        f"{100 * record['val_acc_mean']:.2f} | 95.1 ± 0.9 (IPC 10) |",
    ])
    write_results(f"random_subset_{args.dataset}_ipc{args.ipc}", [record], md)


if __name__ == "__main__":
    main()
