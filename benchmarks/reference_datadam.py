"""Side by side with the authors' DataDAM code: one MNIST budget, both sets through one evaluator.

Our DataDAM misses the published MNIST figures by 0.4-0.5 points at the budgets this machine
allows. This asks whether that is the implementation or the budget: the authors' released code
(github.com/DataDistillation/DataDAM, which you clone; none of it is copied here) and ours distill
MNIST with the same settings and iterations, then the same 1000-epoch ConvNet + DSA evaluator
trains on each set. Where the two agree, the gap is the budget.

The reference runs as released, in fp32 (see ``official_datadam.py``). Its saved set is read with
``torch.load(weights_only=True)``: tensors only, no pickled code.

    git clone https://github.com/DataDistillation/DataDAM /tmp/DataDAM && pip install kornia einops
    python benchmarks/reference_datadam.py --reference /tmp/DataDAM [--iterations 1000] [--batch-real 64]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from common import data_root, device_info, write_results
from official_datadam import check_clone, run_official
from precision_parity import distill
from ddsearch.augment import default_strategy
from ddsearch.data import load_dataset
from ddsearch.evaluate import TrainSettings, evaluate_synset, two_std
from ddsearch.methods.datadam import DataDAMSettings
from ddsearch.synset import SyntheticSet


def run_reference(clone: Path, args: argparse.Namespace, workdir: Path) -> dict:
    """Distil with the authors' script; return its set, wall time and per-iteration time from its log."""
    save = workdir / "out"
    run = run_official(clone, [
        "--dataset", "MNIST", "--model", "ConvNet", "--ipc", str(args.ipc), "--Iteration", str(args.iterations),
        "--batch_real", str(args.batch_real), "--lr_img", str(args.lr_img), "--task_balance", str(args.lambda_mmd),
        "--dsa_strategy", args.strategy, "--init", "real", "--data_path", data_root(), "--save_path", str(save),
        # Its own evaluation is skipped in effect (one 1-epoch training): ours evaluates both sets alike.
        "--eval_mode", "X", "--num_eval", "1", "--epoch_eval_train", "0",
    ], workdir, seed=args.seed, echo_every=100)
    saved = torch.load(save / f"res_DataDAM_MNIST_ConvNet_{args.ipc}ipc_.pt", weights_only=True)
    images, labels = saved["data"][-1]
    return {"images": images.float(), "labels": labels.long(), "wall_seconds": run.wall_seconds,
            "seconds_per_iteration": run.distill_seconds_per_iteration(args.iterations),
            "final_loss": run.final_loss(), "precision": "fp32"}


def run_ours(data, settings: DataDAMSettings, seed: int) -> dict:
    synset, seconds = distill(data, settings, "auto", seed)
    return {"images": synset.images, "labels": synset.labels, "wall_seconds": seconds,
            "seconds_per_iteration": seconds / settings.iterations, "precision": synset.config["precision"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, type=Path, help="a clone of DataDistillation/DataDAM")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--batch-real", type=int, default=64, help="real images per class per iteration (the reference's default)")
    parser.add_argument("--lr-img", type=float, default=1.0)
    parser.add_argument("--lambda-mmd", type=float, default=0.01, help="the reference's --task_balance")
    parser.add_argument("--arch", default="ConvNetBN",
                        help="our network; the reference's --model ConvNet is built with batch norm by its get_network")
    parser.add_argument("--strategy", default=default_strategy("mnist"), help="DSA strategy, both sides")
    parser.add_argument("--also-defaults", action="store_true", help="add a row for our study defaults (p 4, ConvNetBN)")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    clone = check_clone(args.reference)
    device = torch.device("cpu")
    data = load_dataset("mnist", root=data_root(), val_size=5000, device=device, download=False)
    # The reference's choices: p = 1 (get_attention(param=1, exp=1)) and its "ConvNet", which its get_network
    # builds with batch norm (our ConvNetBN), unlike DC's instance-norm ConvNet.
    same = DataDAMSettings(ipc=args.ipc, iterations=args.iterations, arch=args.arch, batch_real=args.batch_real,
                           p=1.0, lambda_mmd=args.lambda_mmd, lr_img=args.lr_img, dsa_strategy=args.strategy)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ddsearch-reference-") as workdir:
        rows["reference (authors' code)"] = run_reference(clone, args, Path(workdir))
    rows["ddsearch, the reference's settings"] = run_ours(data, same, args.seed)
    if args.also_defaults:
        defaults = same.model_copy(update={"arch": DataDAMSettings().arch, "p": DataDAMSettings().p})
        rows["ddsearch, its defaults (p 4, ConvNetBN)"] = run_ours(data, defaults, args.seed)
    protocol = TrainSettings(epochs=args.epochs, dsa_strategy=default_strategy("mnist"))
    for label, row in rows.items():
        synset = SyntheticSet(images=row.pop("images"), labels=row.pop("labels"), num_classes=10, dataset="mnist")
        result = evaluate_synset(synset, data, "ConvNet", protocol, repeats=args.repeats, seed=args.seed, progress=True)
        row.update(test_acc=result.test_acc, test_acc_mean=result.test_mean, test_acc_std=result.test_std,
                   val_acc_mean=result.val_mean, eval_seconds=result.train_seconds)
        print(label, {k: v for k, v in row.items() if k != "test_acc"}, flush=True)
    report(args, rows, device_info(device))


def report(args: argparse.Namespace, rows: dict[str, dict], info: dict) -> None:
    reference, ours = list(rows.values())[:2]
    gap = 100 * (ours["test_acc_mean"] - reference["test_acc_mean"])
    spread = 100 * two_std(ours["test_acc_std"], reference["test_acc_std"])
    verdict = ("the two agree within 2 std: at one budget ours distils as well as the authors' code, so what it "
               "misses the published figures by is not an implementation gap"
               if abs(gap) <= spread else
               "ours is higher by more than 2 std" if gap > 0 else "**ours is lower by more than 2 std**")
    speed = reference["seconds_per_iteration"] / ours["seconds_per_iteration"]
    payload = {
        "benchmark": "reference_datadam", "dataset": "mnist", "ipc": args.ipc, "iterations": args.iterations,
        "batch_real": args.batch_real, "lr_img": args.lr_img, "lambda_mmd": args.lambda_mmd, "p": 1.0,
        "arch": args.arch, "dsa_strategy": args.strategy, "epochs": args.epochs, "repeats": args.repeats,
        "seed": args.seed,
        "reference": "github.com/DataDistillation/DataDAM main_DataDAM.py",
        "rows": rows, "gap_points": gap, "two_std_points": spread, "speed_ratio": speed, **info,
    }
    md = "\n".join([
        f"# DataDAM against the authors' code, MNIST IPC {args.ipc} ({info['device_name']})",
        "",
        f"- Both distil with: {args.iterations} iterations, batch_real {args.batch_real} per class, "
        f"lr_img {args.lr_img}, momentum 0.5, λ_mmd {args.lambda_mmd}, p 1, real init, "
        f"DSA `{args.strategy}`, seed {args.seed}.",
        "- The reference distils on its `ConvNet`, which its `get_network` builds with **batch** norm; ours on "
        + (f"`{args.arch}`, the same network." if args.arch == "ConvNetBN" else
           f"`{args.arch}` (instance norm, DC's ConvNet): the one setting that differed."),
        "- The reference trains on all 60,000 training images; ours on 55,000 (5,000 are held out for validation).",
        f"- One evaluator for every set: ConvNet + DSA, {args.epochs} epochs, SGD lr 0.01 (×0.1 at half), "
        f"{args.repeats} trainings; test accuracy on the 10,000 test images.",
        f"- torch {info['torch']}, {info['date']}.",
        "",
        "| distiller | precision | test acc (%) | val acc (%) | s / iteration | distill s |",
        "| --- | --- | --- | --- | --- | --- |",
        *[f"| {label} | {r['precision']} | {100 * r['test_acc_mean']:.2f} ± {100 * r['test_acc_std']:.2f} | "
          f"{100 * r['val_acc_mean']:.2f} | {r['seconds_per_iteration']:.2f} | {r['wall_seconds']:.0f} |"
          for label, r in rows.items()],
        "",
        f"Ours minus the reference: {gap:+.2f} points (2 std of the difference: {spread:.2f}): {verdict}.",
        f"Distillation speed, the second row against the reference: ours is {speed:.1f}× the reference's "
        "iterations per second "
        "(ours runs in its automatic precision, the reference in fp32; the reference's wall time also loads "
        "the data set and runs its own one-epoch check).",
    ])
    write_results("reference_datadam_cpu", payload, md)


if __name__ == "__main__":
    main()
