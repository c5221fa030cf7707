"""``ddsearch baseline --dataset D --arch A``: full-data accuracy and time, the ceiling a synset aims at."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ddsearch.commands._args import add_command, add_data_args, load_data, positive_float, positive_int, print_table


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "baseline", run,
                    "train on the full real training set: the accuracy ceiling and its time")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--arch", nargs="+", default=["ConvNet"])
    p.add_argument("--epochs", type=positive_int, default=20)
    p.add_argument("--lr", type=positive_float, default=0.01)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--no-dsa", action="store_true", help="train without augmentation")
    p.add_argument("--json", default=None, help="also write the result rows to this JSON file")
    add_data_args(p)


def run(args: argparse.Namespace) -> int:
    from ddsearch.augment import default_strategy
    from ddsearch.evaluate import TrainSettings, train_on_real
    from ddsearch.paths import check_output_file

    if args.json:
        check_output_file(args.json, "--json file")  # before the training, not after it
    data = load_data(args.dataset, args.data_root, args.image_size, args.val_size, args.device)
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                             dsa_strategy="none" if args.no_dsa else default_strategy(data.name), precision=args.precision)
    rows = []
    for arch in args.arch:
        result = train_on_real(data, arch, settings, repeats=args.repeats, seed=args.seed, progress=True)
        rows.append(result.summary() | {"dataset": data.name, "train_images": int(data.train_x.shape[0])})
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0
