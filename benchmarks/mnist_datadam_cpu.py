"""A reduced-budget DataDAM distillation of MNIST at IPC 10 that a 2-core CPU can afford.

Not the paper's budget (that needs a GPU: see studies/mnist_datadam.yaml and issue #8); it shows
where a short CPU run lands against the random-subset control under the same 1000-epoch evaluator.

    python benchmarks/mnist_datadam_cpu.py [--iterations 400] [--batch-real 64]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--batch-real", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_dataset("mnist", root=data_root(), val_size=5000, device=device)
    settings = DataDAMSettings(ipc=10, iterations=args.iterations, arch="ConvNetBN", batch_real=args.batch_real)
    distiller = create_distiller(settings, data, seed=0)
    start = time.perf_counter()
    for _ in range(args.iterations):
        distiller.step()
    distill_seconds = time.perf_counter() - start
    protocol = TrainSettings(epochs=args.epochs, dsa_strategy=default_strategy("mnist"))
    result = evaluate_synset(distiller.synset(), data, "ConvNet", protocol, repeats=args.repeats, progress=True)
    info = device_info(device)
    record = {
        "method": "datadam", "dataset": "mnist", "ipc": 10, "arch": "ConvNet",
        "test_acc_mean": result.test_mean, "test_acc_std": result.test_std, "val_acc_mean": result.val_mean,
        "repeats": result.repeats, "epochs": args.epochs, "device": info["device_name"],
        "distill_iterations": args.iterations, "batch_real": args.batch_real, "lr_img": settings.lr_img,
        "lambda_mmd": settings.lambda_mmd, "p": settings.p, "distill_arch": settings.arch, "init": settings.init,
        "distill_seconds": distill_seconds, "eval_seconds": result.train_seconds,
        "note": "reduced CPU budget; the paper distils for 20000 iterations with batch_real 256",
    }
    md = "\n".join([
        f"# DataDAM, MNIST IPC 10, reduced CPU budget ({info['device_name']})",
        "",
        f"{args.iterations} iterations (paper: 20,000), batch_real {args.batch_real}/class (paper: 256), ConvNetBN, "
        f"lr_img {settings.lr_img}, λ_mmd {settings.lambda_mmd}, p {settings.p}, real init; distilled in {distill_seconds:.0f} s. "
        f"Evaluated with ConvNet, DSA, {args.epochs} epochs, {result.repeats} training(s); torch {info['torch']}, {info['date']}.",
        "",
        "| method | test acc | val acc |",
        "| --- | --- | --- |",
        f"| DataDAM (reduced) | {100 * result.test_mean:.2f} ± {100 * result.test_std:.2f} | {100 * result.val_mean:.2f} |",
        "",
        "Compare: random real subset under the same evaluator, `random_subset_mnist_ipc10.md`.",
    ])
    write_results("mnist_datadam_cpu", [record], md)


if __name__ == "__main__":
    main()
