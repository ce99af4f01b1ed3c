"""``python -m pudnet.baselines``: train the pretrained/ProtoNet baselines, print a weight file's record,
or score baselines on the evaluation protocol's groups."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..hardware import PRECISIONS


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def _words(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pudnet.baselines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train the pretrained or ProtoNet baseline on the training classes",
                           description="Train a baseline of the target on Fashion-MNIST's training classes "
                           "(model selection on the held-out last 10% of their training images only) and "
                           "write its weights as safetensors.")
    train.add_argument("name", choices=["pretrained", "protonet"])
    train.add_argument("--out", required=True, help="safetensors file to write")
    train.add_argument("--target", default="convnet3", choices=["convnet3", "resnet18", "resnet34"],
                       help="architecture (one channel, 28 px; default convnet3, width 64)")
    train.add_argument("--epochs", type=int, help="pretrained: epochs over the training images (default 3)")
    train.add_argument("--batch-size", type=int, help="pretrained: images per step (default 128)")
    train.add_argument("--steps", type=int, help="protonet: training episodes (default 600)")
    train.add_argument("--distance", choices=["cosine", "euclidean"], help="protonet: training logits")
    train.add_argument("--val-every", type=int, help="protonet: episodes between validations (default 100)")
    train.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    train.add_argument("--seed", type=int, help="seed (default 0)")
    train.add_argument("--val-groups", type=int, help="validation groups (default 40)")
    train.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="compute dtype (default auto: bf16 where the CPU runs it natively, else fp32)")
    train.add_argument("--data", help="folder holding the Fashion-MNIST IDX files (default: the apt package)")
    train.add_argument("--half", action="store_true", help="store the weights as float16 (half the file)")
    train.add_argument("--threads", type=int, help="torch threads")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    info = sub.add_parser("info", help="print the record stored in a baseline weight file")
    info.add_argument("file")

    ev = sub.add_parser("eval", help="score random-init, the shipped baselines and scratch training on the "
                        "evaluation protocol's groups of unseen classes",
                        description="Accuracy ± 95% CI of random-init, pretrained, ProtoNet and from-scratch "
                        "training on the same groups as `pudnet eval`, with seconds per group.")
    ev.add_argument("--groups", type=int, default=100)
    ev.add_argument("--seed", type=int, default=20241, help="evaluation seed (that of `pudnet eval`)")
    ev.add_argument("--weights-dir", help="folder of <name>-<target>.safetensors (default: shipped)")
    ev.add_argument("--no-trained", action="store_true", help="leave out pretrained and ProtoNet")
    ev.add_argument("--extra", action="append", default=[], metavar="NAME=FILE",
                    help="also score the baseline weight file FILE under NAME (repeatable)")
    ev.add_argument("--scratch-epochs", type=_ints, default=(1, 5), help="comma list, e.g. 1,5,30; '' for none")
    ev.add_argument("--scratch-labelled", type=_words, default=("support", "all"),
                    help="support (the protocol's 10 labelled/class) and/or all (every group image labelled)")
    ev.add_argument("--scratch-optimisers", type=_words, default=("adam",), help="adam and/or gc")
    ev.add_argument("--scratch-lr", type=float, default=1e-3)
    ev.add_argument("--scratch-batch-size", type=int, default=32)
    ev.add_argument("--data", help="folder holding the Fashion-MNIST IDX files (default: the apt package)")
    ev.add_argument("--threads", type=int)
    ev.add_argument("--json", help="write the full result (per-group scores and seconds) here")
    ev.add_argument("--quiet", action="store_true")
    return parser


def _target(name: str):
    from ..targets import make_target
    from .common import default_target

    return default_target() if name == "convnet3" else make_target(name, in_channels=1, image_size=28)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch

    from . import (
        FixedBaseline, default_target, evaluate_baselines, format_baselines, load_baseline, load_baselines,
        scratch_baselines, train_baseline,
    )
    from .common import command_line

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if args.command == "info":
        _, metadata = load_baseline(args.file)
        for key, value in metadata.items():
            print(f"{key}: {value}")
        return 0

    from ..data import datasets

    if args.command == "train":
        options = ("epochs", "batch_size", "steps", "distance", "val_every", "lr", "seed", "val_groups")
        overrides = {name: getattr(args, name) for name in options if getattr(args, name) is not None}
        overrides["precision"] = args.precision
        only = {"pretrained": {"steps", "distance", "val_every"}, "protonet": {"epochs", "batch_size"}}
        wrong = sorted(only[args.name] & set(overrides))
        if wrong:
            parser.error(f"{', '.join('--' + w.replace('_', '-') for w in wrong)} do(es) not apply to {args.name}")
        _, info = train_baseline(
            args.name, args.out, target=_target(args.target),
            store=datasets.fashion_mnist("train", args.data), progress=not args.quiet,
            command=command_line(), half=args.half, **overrides,
        )
        print(f"{args.name}: validation top-1 {100 * info['val_acc']:.2f}% (training classes, held-out "
              f"images), {info['wall_s']} s -> {args.out}")
        return 0

    from ..evaluate import EvalConfig

    baselines = {} if args.no_trained else load_baselines(weights_dir=args.weights_dir)
    for item in args.extra:
        name, _, path = item.partition("=")
        params, metadata = load_baseline(path, default_target())
        baselines[name] = FixedBaseline(name, params, metadata)
    baselines.update(scratch_baselines(
        epochs=args.scratch_epochs, labelled=args.scratch_labelled, optimisers=args.scratch_optimisers,
        lr=args.scratch_lr, batch_size=args.scratch_batch_size,
    ))
    config = EvalConfig(groups=args.groups, seed=args.seed)
    result = evaluate_baselines(
        baselines, config, datasets.fashion_mnist("train", args.data), datasets.fashion_mnist("test", args.data),
        progress=not args.quiet,
    )
    result["command"] = command_line()
    result["threads"] = torch.get_num_threads()
    print(format_baselines(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
