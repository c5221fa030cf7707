"""``ddsearch evaluate --synset FILE --arch A [B ...]``: train architectures from scratch on a distilled set."""

from __future__ import annotations

import argparse
from typing import Any

from ddsearch.commands._args import add_command, add_data_args, load_data, positive_float, positive_int, print_table
from ddsearch.errors import DDSearchError


def add_parser(subparsers: Any) -> None:
    p = add_command(subparsers, "evaluate", run,
                    "train architectures from scratch on a synset file and report val/test accuracy")
    p.add_argument("--synset", required=True, help="a .safetensors synset written by ddsearch")
    p.add_argument("--arch", nargs="+", default=["ConvNet"], help="one or more architectures")
    p.add_argument("--dataset", default=None, help="defaults to the dataset recorded in the synset")
    p.add_argument("--epochs", type=positive_int, default=1000)
    p.add_argument("--lr", type=positive_float, default=0.01, help="used unless the synset carries a learned lr")
    p.add_argument("--ignore-learned-lr", action="store_true")
    p.add_argument("--dsa", default=None, help="DSA strategy (default: by dataset; 'none' to disable)")
    add_data_args(p)


def run(args: argparse.Namespace) -> int:
    from ddsearch.augment import DSA, resolve_strategy
    from ddsearch.evaluate import TrainSettings, evaluate_synset
    from ddsearch.synset import SynsetHeader, SyntheticSet, check_image_size

    header = SynsetHeader.read(args.synset)
    dataset = args.dataset or header.dataset
    if not dataset:
        raise DDSearchError(f"{args.synset} does not name its dataset; pass --dataset")
    image_size = check_image_size(header, dataset, args.image_size)
    if args.dsa:
        DSA(args.dsa)  # a misspelt strategy fails before the data are loaded
    data = load_data(dataset, args.data_root, image_size, args.val_size, args.device)
    synset = SyntheticSet.load(args.synset, expect=data)
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, dsa_strategy=resolve_strategy(args.dsa or None, data.name),
                             precision=args.precision)
    rows = []
    for arch in args.arch:
        result = evaluate_synset(synset, data, arch, settings, repeats=args.repeats, seed=args.seed,
                                 use_learned_lr=not args.ignore_learned_lr, progress=True)
        rows.append(result.summary())
    print_table(rows)
    return 0
