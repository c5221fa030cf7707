"""The ``ddsearch`` command.

Every user-facing problem is a :class:`DDSearchError`, printed as one line with a non-zero exit
code; ``--debug`` shows the traceback instead. Heavy imports happen inside the handlers so that
``--help`` is instant.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ddsearch.errors import DDSearchError

EXIT_USER_ERROR = 2


# ---- shared helpers -----------------------------------------------------------------------

def _int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number >= ``minimum`` (epochs, repeats, batch sizes, counts)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (learning rates, split sizes); NaN and inf are refused."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {value}")
    return value


def _print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    if columns:
        frame = frame[[c for c in columns if c in frame.columns]]
    with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200):
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def _load_data(name: str, root: str | None, image_size: int | None, val_size: float, device: str):
    from ddsearch.data import load_dataset
    from ddsearch.study_data import resolve_device

    return load_dataset(name, root=root, image_size=image_size, val_size=val_size, device=resolve_device(device))


def _add_study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", help="study YAML file (see studies/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a study key, e.g. --set method.ipc=10 (repeatable)")
    _add_precision_arg(parser, default=None, what="the study's precision key")


def _add_precision_arg(parser: argparse.ArgumentParser, default: str | None, what: str) -> None:
    parser.add_argument("--precision", default=default, choices=["auto", "fp32", "bf16"],
                        help=f"network compute precision (default: {what}); auto: bf16 where the hardware runs it fast")


def _study_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` overrides plus ``--precision``, which is the study key ``precision``."""
    precision = getattr(args, "precision", None)
    return [*args.overrides, *([f"precision={precision}"] if precision else [])]


# ---- commands -----------------------------------------------------------------------------

def cmd_datasets(args: argparse.Namespace) -> int:
    from ddsearch.data import describe_datasets

    _print_table(describe_datasets())
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ddsearch.models import list_models

    print("\n".join(list_models()))
    print("generic: ConvNet-d{depth}-w{width}-{act}-{norm}-{pool}, e.g. ConvNet-d4-w64-leakyrelu-batchnorm-maxpool")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ddsearch.evaluate import TrainSettings, evaluate_synset
    from ddsearch.augment import DSA, resolve_strategy
    from ddsearch.synset import SynsetHeader, SyntheticSet, check_image_size

    header = SynsetHeader.read(args.synset)
    dataset = args.dataset or header.dataset
    if not dataset:
        raise DDSearchError(f"{args.synset} does not name its dataset; pass --dataset")
    image_size = check_image_size(header, dataset, args.image_size)
    if args.dsa:
        DSA(args.dsa)  # a misspelt strategy fails before the data are loaded
    data = _load_data(dataset, args.data_root, image_size, args.val_size, args.device)
    synset = SyntheticSet.load(args.synset, expect=data)
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, dsa_strategy=resolve_strategy(args.dsa or None, data.name),
                             precision=args.precision)
    rows = []
    for arch in args.arch:
        result = evaluate_synset(synset, data, arch, settings, repeats=args.repeats, seed=args.seed,
                                 use_learned_lr=not args.ignore_learned_lr, progress=True)
        rows.append(result.summary())
    _print_table(rows)
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from ddsearch.augment import default_strategy
    from ddsearch.evaluate import TrainSettings, train_on_real
    from ddsearch.paths import check_output_file

    if args.json:
        check_output_file(args.json, "--json file")  # before the training, not after it
    data = _load_data(args.dataset, args.data_root, args.image_size, args.val_size, args.device)
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                             dsa_strategy="none" if args.no_dsa else default_strategy(data.name), precision=args.precision)
    rows = []
    for arch in args.arch:
        result = train_on_real(data, arch, settings, repeats=args.repeats, seed=args.seed, progress=True)
        rows.append(result.summary() | {"dataset": data.name, "train_images": int(data.train_x.shape[0])})
    _print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from ddsearch.distill import distill_command

    return distill_command(args.study, _study_overrides(args), args.tracking_uri, quiet=args.quiet)


def cmd_schema(args: argparse.Namespace) -> int:
    from ddsearch.config import study_schema

    print(study_schema())
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from ddsearch.search.tune import tune_command

    args.overrides = _study_overrides(args)
    return tune_command(args)


def cmd_report(args: argparse.Namespace) -> int:
    from ddsearch.search.report import report_command

    return report_command(args)


def cmd_ui(args: argparse.Namespace) -> int:
    from ddsearch.search.report import ui_command

    return ui_command(args)


def cmd_scores(args: argparse.Namespace) -> int:
    from ddsearch.commands.pad_cache import scores_command

    return scores_command(args.study, _study_overrides(args))


def cmd_experts(args: argparse.Namespace) -> int:
    from ddsearch.commands.pad_cache import experts_command

    return experts_command(args.study, _study_overrides(args))


def cmd_nas(args: argparse.Namespace) -> int:
    from ddsearch.nas import nas_command

    return nas_command(args)


# ---- parser -------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (like every other error), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"ddsearch: error: {self.prog.removeprefix('ddsearch').strip() or 'usage'}: "
                                   f"{message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ddsearch",
        description="Experiment-tracked hyperparameter search for dataset distillation (DataDAM, PAD).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def data_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-root", default=None, help="data folder (default: $DDSEARCH_DATA or ~/.cache/ddsearch/data)")
        p.add_argument("--image-size", type=_positive_int, default=None, help="resize images to this size")
        p.add_argument("--val-size", type=_positive_float, default=0.1, help="validation split: fraction (<1) or count")
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--repeats", type=_positive_int, default=1, help="independent trainings; mean ± std is reported")
        _add_precision_arg(p, default="auto", what="auto")

    add("datasets", cmd_datasets, "list the data sets ddsearch can load")
    add("models", cmd_models, "list the architectures get_network knows")

    p = add("evaluate", cmd_evaluate, "train architectures from scratch on a synset file and report val/test accuracy")
    p.add_argument("--synset", required=True, help="a .safetensors synset written by ddsearch")
    p.add_argument("--arch", nargs="+", default=["ConvNet"], help="one or more architectures")
    p.add_argument("--dataset", default=None, help="defaults to the dataset recorded in the synset")
    p.add_argument("--epochs", type=_positive_int, default=1000)
    p.add_argument("--lr", type=_positive_float, default=0.01, help="used unless the synset carries a learned lr")
    p.add_argument("--ignore-learned-lr", action="store_true")
    p.add_argument("--dsa", default=None, help="DSA strategy (default: by dataset; 'none' to disable)")
    data_args(p)

    p = add("baseline", cmd_baseline, "train on the full real training set: the accuracy ceiling and its time")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--arch", nargs="+", default=["ConvNet"])
    p.add_argument("--epochs", type=_positive_int, default=20)
    p.add_argument("--lr", type=_positive_float, default=0.01)
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--no-dsa", action="store_true", help="train without augmentation")
    p.add_argument("--json", default=None, help="also write the result rows to this JSON file")
    data_args(p)

    p = add("distill", cmd_distill, "run one distillation with fixed settings (no Ray) and log it to MLflow")
    _add_study_args(p)
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: $MLFLOW_TRACKING_URI or ./mlruns)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = add("tune", cmd_tune, "search a study's hyperparameters on Ray Tune + Optuna, tracked in MLflow")
    _add_study_args(p)
    p.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted study; completed trials are kept")
    p.add_argument("--dry-run", action="store_true", help="validate study, data, tracking and cluster; print the plan")
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (overrides the study's tracking.uri)")

    p = add("report", cmd_report, "print a study's leaderboard from MLflow")
    p.add_argument("study", help="study name or YAML file")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--top", type=_positive_int, default=20)
    p.add_argument("--html", nargs="?", const="-", default=None, metavar="FILE",
                   help="also write the study report page (default FILE: <study>-report.html)")

    p = add("ui", cmd_ui, "start the MLflow UI on the local store (localhost only by default)")
    p.add_argument("--host", default="127.0.0.1", help="bind address; 0.0.0.0 exposes it to the network")
    p.add_argument("--port", type=_port, default=5000)
    p.add_argument("--tracking-uri", default=None)

    add("schema", cmd_schema, "print the JSON Schema of study files (for editor validation and completion)")

    p = add("scores", cmd_scores, "compute (and cache) PAD's per-sample difficulty scores for a study")
    _add_study_args(p)
    p = add("experts", cmd_experts, "train (and cache) PAD's expert trajectories for a study ahead of time")
    _add_study_args(p)

    p = add("nas", cmd_nas, "rank architectures on a distilled proxy set; compare with full-data training")
    from ddsearch.nas.settings import NASSettings as _NAS  # the protocol's defaults live there (no torch)

    proxy = p.add_argument_group("proxy set (exactly one)")
    proxy.add_argument("--synset", default=None, help="a synset file, or runs:/<run_id>/synset.safetensors")
    proxy.add_argument("--from-study", default=None, metavar="NAME", help="the synset of this study's best trial")
    proxy.add_argument("--study-experiment", default=None, help="MLflow experiment of the study (default: search all)")
    space = p.add_argument_group("candidates")
    space.add_argument("--space", default="seed22", help="seed22, grid, or a comma-separated list of architectures")
    space.add_argument("--k", type=_non_negative_int, default=20, help="candidates drawn from the grid (0: all 720)")
    protocol = p.add_argument_group("protocol")  # NASSettings validates these (its defaults live there)
    protocol.add_argument("--epochs", type=int, default=_NAS.epochs, help="training epochs on the proxy and the control")
    protocol.add_argument("--seeds", type=int, default=_NAS.seeds, help="trainings per candidate (mean val accuracy)")
    protocol.add_argument("--lr", type=float, default=_NAS.lr, help="SGD lr (a learned lr in the proxy wins)")
    protocol.add_argument("--ignore-learned-lr", action="store_true")
    protocol.add_argument("--batch-size", type=int, default=_NAS.batch_size)
    protocol.add_argument("--dsa", default=_NAS.dsa_strategy, help="DSA strategy; auto: by dataset; none: off")
    protocol.add_argument("--no-control", action="store_true", help="skip the random real subset of the same size")
    protocol.add_argument("--truth-epochs", type=int, default=_NAS.truth_epochs,
                          help="real-data epochs for the ground truth (0: no ground truth)")
    protocol.add_argument("--truth-seeds", type=int, default=_NAS.truth_seeds)
    protocol.add_argument("--truth-train-size", type=int, default=_NAS.truth_train_size,
                          help="real training images for the ground truth (0: the whole training split)")
    protocol.add_argument("--truth-batch-size", type=int, default=_NAS.truth_batch_size)
    protocol.add_argument("--top-k", type=int, default=_NAS.top_k, help="k of the top-k overlap")
    protocol.add_argument("--seed", type=int, default=_NAS.seed, help="network inits, control subset, grid draw")
    protocol.add_argument("--cache-dir", default=None, help="ground-truth cache (default: $DDSEARCH_CACHE or ~/.cache/ddsearch)")
    protocol.add_argument("--no-cache", action="store_true", help="retrain the ground truth; do not write the cache")
    run = p.add_argument_group("running")
    run.add_argument("--parallel", action="store_true", help="train candidates as Ray tasks")
    run.add_argument("--cpus-per-task", type=_positive_float, default=1.0)
    run.add_argument("--gpus-per-task", type=float, default=None, help="fraction of a GPU per task (default 0.25 with CUDA)")
    run.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    run.add_argument("--dataset", default=None, help="defaults to the dataset recorded in the synset")
    run.add_argument("--data-root", default=None)
    run.add_argument("--image-size", type=_positive_int, default=None, help="resize the real data (default: native size)")
    run.add_argument("--val-size", type=_positive_float, default=0.1, help="validation split: fraction (<1) or count")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    _add_precision_arg(run, default="auto", what="auto")
    run.add_argument("--tracking-uri", default=None, help="MLflow URI (default: $MLFLOW_TRACKING_URI or ./mlruns)")
    run.add_argument("--experiment", default="nas", help="MLflow experiment of the NAS run")
    run.add_argument("--json", default=None, help="also write the full result to this JSON file")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _silence_stdout() -> None:
    """After a closed pipe or a full disk, point stdout at /dev/null so the exit flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:2000]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # a usage error exits 2 with one line (_Parser.error)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USER_ERROR
    debug = args.debug or os.environ.get("DDSEARCH_DEBUG") == "1"
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()
        return code
    except DDSearchError as err:
        if debug:
            raise
        print(f"ddsearch: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # `ddsearch schema | head -1`: the reader has what it wanted; no traceback, no error.
        _silence_stdout()
        return 0
    except OSError as err:
        # The environment refused a read or write (permissions, a full disk, a read-only folder):
        # one line, like any other bad input; the specific checks catch most of these earlier.
        if debug:
            raise
        if err.errno in (errno.ENOSPC, errno.EIO) and err.filename is None:
            _silence_stdout()
        where = f" ({err.filename})" if err.filename else ""
        print(f"ddsearch: error: {err.strerror or _one_line(err)}{where}; check the path, its permissions "
              f"and free space", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("ddsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
