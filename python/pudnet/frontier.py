"""The accuracy-vs-seconds frontier: every way of getting a ConvNet for a group, scored on the evaluator's
groups, with the wall time each takes to produce its parameters.

Methods (on each group of :class:`pudnet.evaluate.Evaluator`): the pretrained network and PudNet's forward
pass, each refined by 0, 1, 3, 10, 30 steps (:func:`pudnet.model.refine.refine` with the loaded PudNet's
refinement settings, only the step count varied); Adam and GC from scratch on the group's labelled images for
1, 5, 30 epochs; ProtoNet; random init. All are scored by :func:`pudnet.evaluate.accuracy_with` (centroids of
the labelled images, BatchNorm statistics from the group's dataset). A method's seconds are the wall time to
produce its parameters (prediction + refinement, or training), not the scoring pass; fixed weights cost ~0 s.

Each finished group is appended to ``groups.jsonl`` in the output folder next to ``settings.json``; a rerun
with the same settings continues from there, one with other settings is refused. :func:`pareto_front` and
:func:`speed_up_needed` are pure functions of the summarised points.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .baselines import load_baselines, scratch_baselines
from .checkpoint import atomic_write_text
from .evaluate import Evaluator, accuracy_with, mean_ci
from .model.pudnet import PudNet
from .model.refine import refine
from .report import checkpoint_sha256, machine
from .targets.base import Params

DEFAULT_STEPS = (0, 1, 3, 10, 30)
DEFAULT_EPOCHS = (1, 5, 30)
REFERENCE_STEPS = 10  # issue 12: the forward pass is judged against pretrained + this many refinement steps
OPTIMISERS = ("adam", "gc")
TIME_FLOOR_S = 1e-4  # times below this count (and are drawn) as this: fixed weights cost nothing measurable
SETTINGS, ROWS = "settings.json", "groups.jsonl"
FORMAT = "pudnet-frontier-v1"


class SettingsMismatch(ValueError):
    """The output folder holds a run with other settings (or something that is not a frontier run)."""


# --- points, the Pareto set and the speed-up (pure) ---------------------------------------------------------

@dataclass(frozen=True)
class Point:
    accuracy: float  # mean top-1, %
    seconds: float  # median seconds per group


def dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as accurate and at least as fast as ``b``, and strictly better in one."""
    return (a.accuracy >= b.accuracy and a.seconds <= b.seconds
            and (a.accuracy > b.accuracy or a.seconds < b.seconds))


def pareto_front(points: dict[str, Point]) -> list[str]:
    """The names of the points no other point dominates, fastest first (identical points are all kept)."""
    front = [name for name, p in points.items() if not any(dominates(q, p) for q in points.values())]
    return sorted(front, key=lambda name: (points[name].seconds, -points[name].accuracy, name))


def cheapest_at_least_as_accurate(points: dict[str, Point], reference: str, candidates: list[str]) -> str | None:
    """Of ``candidates`` (other than ``reference``), the fastest whose accuracy is ≥ the reference's (the more
    accurate one among equally fast); None if none reaches it."""
    goal = points[reference].accuracy
    matching = [n for n in candidates if n != reference and points[n].accuracy >= goal]
    return min(matching, key=lambda n: (points[n].seconds, -points[n].accuracy, n), default=None)


def speed_up_needed(points: dict[str, Point], reference: str, candidates: list[str]) -> tuple[str, float] | None:
    """(the cheapest candidate that matches the reference's accuracy, its seconds / the reference's): the
    factor by which it would have to get faster to match the reference's time too (< 1: it already is)."""
    name = cheapest_at_least_as_accurate(points, reference, candidates)
    if name is None:
        return None
    base = points[reference].seconds
    return name, (points[name].seconds / base if base > 0 else math.inf)


# --- method names -------------------------------------------------------------------------------------------

def pudnet_method(steps: int) -> str:
    return "pudnet_forward" if steps == 0 else f"pudnet_{steps}steps"


def pretrained_method(steps: int) -> str:
    return "pretrained" if steps == 0 else f"pretrained_{steps}steps"


def scratch_method(optimiser: str, epochs: int) -> str:
    return f"scratch_{optimiser}_{epochs}ep_10perclass"  # = ScratchConfig(epochs, optimiser, "support").name


def method_names(steps: list[int], epochs: list[int]) -> list[str]:
    return ([pudnet_method(k) for k in steps] + [pretrained_method(k) for k in steps]
            + [scratch_method(o, e) for o in OPTIMISERS for e in epochs] + ["protonet", "random_init"])


def is_pudnet(name: str) -> bool:
    return name.startswith("pudnet")


def labels_of(name: str) -> tuple[str, str]:
    """(the table's label, the plot's short label) of a method name."""
    if name == "pudnet_forward":
        return "PudNet, forward pass only", "PudNet"
    if name == "pretrained":
        return "pretrained + centroids", "pretrained"
    if m := re.fullmatch(r"(pudnet|pretrained)_(\d+)steps", name):
        who = "PudNet" if m[1] == "pudnet" else "pretrained"
        return f"{who} + {m[2]} refinement step{'s' * (m[2] != '1')}", f"{who}+{m[2]}"
    if m := re.fullmatch(r"scratch_(adam|gc)_(\d+)ep_10perclass", name):
        who = {"adam": "Adam", "gc": "GC"}[m[1]]
        return f"{who} from scratch, {m[2]} epoch{'s' * (m[2] != '1')} (10 labelled/class)", f"{who} {m[2]}ep"
    return {"protonet": ("ProtoNet + centroids", "ProtoNet"),
            "random_init": ("random init + centroids", "random")}.get(name, (name, name))


# --- running the groups -------------------------------------------------------------------------------------

def timed(make: Callable[[], Params], device: torch.device) -> tuple[Params, float]:
    """``make()`` and its wall seconds (CUDA work waited for)."""
    synchronise = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    synchronise(device)
    started = time.perf_counter()
    params = make()
    synchronise(device)
    return params, time.perf_counter() - started


class FrontierMethods:
    """Produces and scores every method's parameters for one group of ``evaluator``."""

    def __init__(self, net: PudNet, evaluator: Evaluator, steps: list[int], epochs: list[int],
                 weights_dir: str | os.PathLike | None = None):
        self.net, self.evaluator, self.steps, self.target = net, evaluator, steps, net.target
        fixed = load_baselines(net.target, weights_dir=weights_dir, optional=("protonet",))
        self.pretrained = evaluator.on_device(fixed["pretrained"]())
        self.protonet = evaluator.on_device(fixed["protonet"]()) if "protonet" in fixed else None
        self.scratch = scratch_baselines(net.target, tuple(epochs), labelled=("support",), optimisers=OPTIMISERS,
                                         precision=evaluator.config.precision)
        self.names = [n for n in method_names(steps, epochs) if n != "protonet" or self.protonet is not None]

    def refined(self, params: Params, tasks, steps: int, step_sizes: Tensor | None = None
                ) -> tuple[Params, float]:
        """``params`` refined ``steps`` steps as the PudNet refines (at ``step_sizes`` per tensor, else its
        ``refine_lr``), and the seconds it took."""
        if steps == 0:
            return params, 0.0
        refinement = replace(self.net.config.refinement, steps=steps)
        return timed(lambda: refine(self.target, params, tasks.sketch[0], tasks.sketch_labels[0], refinement,
                                    step_sizes=step_sizes), self.evaluator.device)

    def candidates(self, g: int, tasks, random_params: Params, random_s: float):
        """(method, a thunk making (params, seconds)) for every method, in :attr:`names` order."""
        device, precision = self.evaluator.device, self.evaluator.config.precision
        labels = tasks.sketch_labels[0] if self.net.config.uses_labels else None
        forward = {}  # made once, by the first PudNet method; the others refine it and add its seconds

        def pudnet(k: int):
            if not forward:
                forward["params"], forward["s"] = timed(
                    lambda: self.net.predict_weights(tasks.sketch[0], labels, precision), device)
            params, s = self.refined(forward["params"], tasks, k, self.net.refine_step_sizes())
            return params, forward["s"] + s

        def pretrained(k: int):
            params, fetch_s = timed(lambda: self.pretrained, device)
            params, s = self.refined(params, tasks, k)
            return params, fetch_s + s

        def scratch(baseline):
            baseline.calls = g  # its seed is a function of the group, not of how many groups this process ran
            return timed(lambda: baseline(tasks), device)

        for k in self.steps:
            yield pudnet_method(k), lambda k=k: pudnet(k)
        for k in self.steps:
            yield pretrained_method(k), lambda k=k: pretrained(k)
        for name, baseline in self.scratch.items():
            yield name, lambda baseline=baseline: scratch(baseline)
        if self.protonet is not None:
            yield "protonet", lambda: timed(lambda: self.protonet, device)
        yield "random_init", lambda: (random_params, random_s)

    @torch.no_grad()
    def group(self, g: int, random_params: Params, random_s: float, bar=None) -> dict:
        """One row of ``groups.jsonl``: group ``g``'s accuracy (0–1) and seconds per method."""
        tasks, scores, seconds = self.evaluator.task(g), {}, {}
        with self.evaluator.scoring():
            for name, make in self.candidates(g, tasks, random_params, random_s):
                if bar is not None:
                    bar.set_postfix_str(name, refresh=True)
                params, seconds[name] = make()
                scores[name] = accuracy_with(self.target, self.evaluator.on_device(params), tasks, 0)
        return {"group": g, "scores": scores, "seconds": seconds}


# --- the output folder: settings, rows, resume --------------------------------------------------------------

def run_settings(net: PudNet, evaluator: Evaluator, steps: list[int], epochs: list[int], checkpoint: str,
                 domain: str) -> dict:
    """Everything a group's row depends on (the number of groups is not: a rerun with more continues)."""
    eval_config = {k: v for k, v in vars(evaluator.config).items() if k != "groups"}
    return {
        "checkpoint": checkpoint, "checkpoint_sha256": checkpoint_sha256(checkpoint), "domain": domain,
        "steps": steps, "epochs": epochs, "refinement": vars(net.config.refinement) | {"steps": None},
        "eval_config": eval_config, "device": str(evaluator.device), "threads": torch.get_num_threads(),
    }


def differences(found: dict, wanted: dict, prefix: str = "") -> list[str]:
    """One 'key: old in the folder, new now' per differing setting (nested keys as a.b)."""
    lines = []
    for key in sorted(set(found) | set(wanted)):
        a, b = found.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: {a!r} in the folder, {b!r} now")
    return lines


def open_folder(out: Path, settings: dict, names: list[str] | None = None) -> dict[int, dict]:
    """The finished rows of ``out`` (after checking its settings equal ``settings``), or {} for a new run;
    ``names``: the run's methods (default: every method of its steps and epochs)."""
    out.mkdir(parents=True, exist_ok=True)
    settings, settings_file = json.loads(json.dumps(settings)), out / SETTINGS  # compared as JSON reads back
    if not settings_file.exists():
        if any(out.iterdir()):
            raise SettingsMismatch(f"{out} is not empty and holds no frontier run ({SETTINGS} is missing); "
                                   "give an empty or new --frontier-out")
        atomic_write_text(settings_file, json.dumps(settings, indent=1) + "\n")
        return {}
    found = json.loads(settings_file.read_text())
    if found != settings:
        raise SettingsMismatch(f"{out} holds a frontier run with other settings ("
                               + "; ".join(differences(found, settings))
                               + "): rerun with those settings to continue it, or give an empty or new --frontier-out")
    return read_rows(out / ROWS, names or method_names(settings["steps"], settings["epochs"]))


def read_rows(path: Path, names: list[str]) -> dict[int, dict]:
    """The rows of ``groups.jsonl`` by group; a last line cut short by a crash is dropped (and the file
    rewritten without it)."""
    if not path.exists():
        return {}
    lines = path.read_text().splitlines()
    rows: dict[int, dict] = {}
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows.values()))
                break
            raise ValueError(f"{path}, line {i + 1}: not JSON; remove the line to continue") from None
        if set(row.get("scores", {})) != set(names) or set(row.get("seconds", {})) != set(names):
            raise ValueError(f"{path}, line {i + 1}: the methods of group {row.get('group')} are not this run's")
        rows[int(row["group"])] = row
    return rows


def append_row(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --- the run ------------------------------------------------------------------------------------------------

def pudnet_point(net: PudNet) -> str:
    """The loaded checkpoint's own default: forward only, or forward + its refinement steps."""
    return pudnet_method(net.config.refine_steps)


def normalised_steps(net: PudNet, steps) -> list[int]:
    """``steps`` with 0 (forward only / plain pretrained) and the checkpoint's own step count added."""
    return sorted(set(steps) | {0, net.config.refine_steps})


def run_frontier(net: PudNet, evaluator: Evaluator, out: str | os.PathLike, steps=DEFAULT_STEPS,
                 epochs=DEFAULT_EPOCHS, checkpoint: str = "fashion-convnet3", domain: str = "fashion",
                 progress: bool = True, weights_dir: str | os.PathLike | None = None) -> dict:
    """Score every method on ``evaluator``'s groups (continuing from ``out``), write ``frontier.json``,
    ``frontier.md`` and (with matplotlib) ``frontier.png`` into ``out``; returns the JSON's content.
    ``weights_dir``: the pretrained (and, if there, ProtoNet) baseline files of the target (default: the
    shipped ones, ConvNet-3)."""
    out, steps, epochs = Path(out), normalised_steps(net, steps), sorted(set(epochs))
    settings = run_settings(net, evaluator, steps, epochs, checkpoint, domain)
    if weights_dir is not None:  # the rows depend on these files too (the shipped ones come with the commit)
        settings["baseline_files"] = {path.name: checkpoint_sha256(path)
                                      for path in sorted(Path(weights_dir).glob(f"*-{net.target.name}.safetensors"))}
    methods = FrontierMethods(net, evaluator, steps, epochs, weights_dir)
    rows = open_folder(out, settings, methods.names)
    generator = torch.Generator().manual_seed(evaluator.config.seed)  # random init drawn as Evaluator.run does
    todo = [g for g in range(evaluator.config.groups) if g not in rows]
    with tqdm(total=evaluator.config.groups, initial=evaluator.config.groups - len(todo), desc="frontier groups",
              disable=not progress) as bar:
        for g in range(evaluator.config.groups):
            random_params, random_s = timed(lambda: net.target.random_params(generator), torch.device("cpu"))
            if g in rows:
                continue
            rows[g] = methods.group(g, random_params, random_s, bar)
            append_row(out / ROWS, rows[g])
            bar.update()
    result = summarise([rows[g] for g in range(evaluator.config.groups)], methods.names, pudnet_point(net))
    result |= {"settings": settings, "eval_config": vars(evaluator.config).copy(), **provenance()}
    write_outputs(out, result)
    return result


def provenance() -> dict:
    return {"machine": machine(), "threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "argv": sys.argv}


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def summarise(rows: list[dict], names: list[str], reference: str, floor: float = TIME_FLOOR_S) -> dict:
    """Per method: mean ± 95% CI top-1 (%), median seconds, per-group scores and seconds, the paired
    difference to ``reference``; the Pareto frontier and the speed-up an alternative would need."""
    methods, points = {}, {}
    for name in names:
        scores = [row["scores"][name] for row in rows]
        seconds = [row["seconds"][name] for row in rows]
        mean, ci = mean_ci([100 * s for s in scores])
        diff_mean, diff_ci = mean_ci([100 * (a - row["scores"][reference]) for a, row in zip(scores, rows)])
        median = statistics.median(seconds)
        label, short = labels_of(name)
        methods[name] = {
            "label": label, "short": short, "accuracy": {"mean": mean, "ci95": finite_or_none(ci)},
            "median_s": median, "mean_s": statistics.fmean(seconds), "plotted_s": max(median, floor),
            "minus_pudnet": None if name == reference else {"mean": diff_mean, "ci95": finite_or_none(diff_ci)},
            "scores": scores, "seconds": seconds,
        }
        points[name] = Point(mean, max(median, floor))
    front = pareto_front(points)
    for name in names:
        methods[name]["on_frontier"] = name in front
    alternatives = [n for n in names if not is_pudnet(n)]
    speed = speed_up_needed(points, reference, alternatives)
    return {
        "format": FORMAT, "groups": len(rows), "pudnet_point": reference, "methods": methods, "frontier": front,
        "pudnet_on_frontier": reference in front, "time_floor_s": floor,
        "pudnet_dominated_by": [n for n in names if dominates(points[n], points[reference])],
        "speed_up": None if speed is None else {
            "alternative": speed[0], "alternative_s": points[speed[0]].seconds,
            "pudnet_s": points[reference].seconds, "needed": speed[1]},
    }


# --- outputs ------------------------------------------------------------------------------------------------

def markdown_table(result: dict) -> str:
    lines = ["| method | top-1 % ± 95% CI | median s / group | method − PudNet (paired) | on frontier |",
             "|---|---|---|---|---|"]
    for name, m in result["methods"].items():
        label = f"**{m['label']}** (PudNet's point)" if name == result["pudnet_point"] else m["label"]
        acc = m["accuracy"]
        diff = m["minus_pudnet"]
        lines.append(f"| {label} | {acc['mean']:.2f} ± {_ci(acc['ci95'])} | {m['median_s']:.4g} | "
                     + ("–" if diff is None else f"{diff['mean']:+.2f} ± {_ci(diff['ci95'])}")
                     + f" | {'yes' if m['on_frontier'] else ''} |")
    return "\n".join(lines)


def groups_text(n: int) -> str:
    return f"{n} group{'s' * (n != 1)}"


def threads_text(n: int) -> str:
    return f"{n} thread{'s' * (n != 1)}"


def _ci(x: float | None) -> str:
    return "nan" if x is None else f"{x:.2f}"


def verdict(result: dict) -> str:
    """The speed-up line and the on-frontier line."""
    point = result["methods"][result["pudnet_point"]]
    speed = result["speed_up"]
    floor = result["time_floor_s"]
    if speed is None:
        first = f"No alternative reaches PudNet's {point['accuracy']['mean']:.2f}% ({point['label']})."
    else:
        alt = result["methods"][speed["alternative"]]
        first = (f"Cheapest alternative at least as accurate as PudNet's {point['accuracy']['mean']:.2f}% "
                 f"({point['label']}): {alt['label']}, {alt['accuracy']['mean']:.2f}% "
                 f"in {speed['alternative_s']:.4g} s "
                 f"vs PudNet's {speed['pudnet_s']:.4g} s — "
                 + (f"it would need a {speed['needed']:.3g}x speed-up to match PudNet's time."
                    if speed["needed"] > 1 else
                    f"already as fast or faster ({speed['needed']:.3g}x PudNet's time)."))
    dominating = ", ".join(result["methods"][n]["label"] for n in result["pudnet_dominated_by"])
    second = ("PudNet's point lies on the Pareto frontier." if result["pudnet_on_frontier"]
              else f"PudNet's point is not on the Pareto frontier: dominated by {dominating} (at least as accurate "
                   "and as fast, better in one).")
    return f"{first}\n{second}\n(times below {floor:g} s count as {floor:g} s; seconds exclude scoring.)"


def paired_difference(result: dict, a: str, b: str) -> tuple[float, float | None]:
    """Mean and 95% CI half-width of method ``a`` − method ``b`` over the groups, in top-1 points."""
    scores = result["methods"]
    mean, ci = mean_ci([100 * (x - y) for x, y in zip(scores[a]["scores"], scores[b]["scores"])])
    return mean, finite_or_none(ci)


def summary_entries(result: dict, command: str, variant: str | None = None) -> dict[str, dict]:
    """The headline figures of a frontier for benchmarks/results/summary.json (issue 12's criteria): PudNet's
    forward pass against pretrained + the checkpoint's refinement (accuracy, paired difference, time), and
    PudNet's point against the cheapest alternative at least as accurate. Keys ``frontier.DOMAIN.*`` for the
    shipped checkpoint, ``frontier.DOMAIN.VARIANT.*`` for another one."""
    from .report import figure

    settings, methods = result["settings"], result["methods"]
    refined = pretrained_method(REFERENCE_STEPS if REFERENCE_STEPS in settings["steps"] else max(settings["steps"]))
    prefix = f"frontier.{settings['domain']}" + (f".{variant}" if variant else "")
    extra = dict(groups=result["groups"], checkpoint=settings["checkpoint"], threads=result["threads"])
    forward, alternative = methods["pudnet_forward"], methods[refined]
    diff, ci = paired_difference(result, "pudnet_forward", refined)
    entries = {f"{prefix}.forward_only_vs_{refined}": figure(
        forward["accuracy"]["mean"], f"top-1 %, PudNet forward pass only ({result['groups']} groups; paired "
        f"difference {diff:+.2f} ± {_ci(ci)}; {forward['median_s']:.4g} s vs {alternative['median_s']:.4g} s)",
        alternative["label"], alternative["accuracy"]["mean"], command,
        paired_difference=diff, paired_ci95=ci, seconds=forward["median_s"], vs_seconds=alternative["median_s"],
        **extra)}
    point, speed = methods[result["pudnet_point"]], result["speed_up"]
    if speed is not None:
        rival = methods[speed["alternative"]]
        entries[f"{prefix}.pudnet_point_seconds_vs_cheapest_as_accurate"] = figure(
            speed["pudnet_s"], f"median s per group, {point['label']} ({point['accuracy']['mean']:.2f}%); "
            f"on the Pareto frontier: {result['pudnet_on_frontier']}", f"{rival['label']} "
            f"({rival['accuracy']['mean']:.2f}%)", speed["alternative_s"], command,
            pudnet_on_frontier=result["pudnet_on_frontier"], dominated_by=result["pudnet_dominated_by"], **extra)
    return entries


def write_outputs(out: Path, result: dict) -> Path | None:
    """frontier.json, frontier.md and frontier.png (None when matplotlib is missing)."""
    atomic_write_text(out / "frontier.json", json.dumps(result, indent=1, allow_nan=False) + "\n")
    header = (f"# Accuracy vs seconds, {result['settings']['domain']}, {groups_text(result['groups'])}\n\n"
              f"Checkpoint `{result['settings']['checkpoint']}`; {result['machine']}, "
              f"{threads_text(result['threads'])}; {result['date']}.\n\n")
    atomic_write_text(out / "frontier.md", header + markdown_table(result) + "\n\n" + verdict(result) + "\n")
    png = plot(result, out / "frontier.png")
    if png is None:
        (out / "frontier.png").unlink(missing_ok=True)  # not a stale plot of other rows
    return png


FAMILY_COLOURS = {"pudnet": "tab:red", "pretrained": "tab:blue", "scratch_adam": "tab:green",
                  "scratch_gc": "tab:olive", "protonet": "tab:purple", "random_init": "tab:gray"}


def family(name: str) -> str:
    return next(f for f in FAMILY_COLOURS if name.startswith(f))


def plot(result: dict, path: Path) -> Path | None:
    """Accuracy against median seconds (log x), the Pareto frontier as a step line, PudNet's points in red
    (its own point a star). Returns None, writing nothing, when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    methods, floor = result["methods"], result["time_floor_s"]
    fig, ax = plt.subplots(figsize=(9, 6))
    for name, m in methods.items():
        own = name == result["pudnet_point"]
        ax.errorbar(m["plotted_s"], m["accuracy"]["mean"], yerr=m["accuracy"]["ci95"] or 0,
                    fmt="*" if own else "o", color=FAMILY_COLOURS[family(name)],
                    markersize=16 if own else (9 if is_pudnet(name) else 6),
                    markeredgecolor="black" if is_pudnet(name) else "none", capsize=2, zorder=3)
        ax.annotate(m["short"], (m["plotted_s"], m["accuracy"]["mean"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8, fontweight="bold" if is_pudnet(name) else "normal")
    front = [methods[n] for n in result["frontier"]]
    xs = [m["plotted_s"] for m in front]
    ys = [m["accuracy"]["mean"] for m in front]
    right = max(m["plotted_s"] for m in methods.values()) * 2
    ax.step(xs + [right], ys + [ys[-1]], where="post", color="black", linewidth=1, alpha=0.6,
            label="Pareto frontier", zorder=2)
    ax.set_xscale("log")
    ax.set_xlabel("median seconds per group to produce the parameters (log)")
    ax.set_ylabel("top-1 % (mean ± 95% CI)")
    ax.set_title(f"Accuracy vs seconds: {result['settings']['domain']}, {groups_text(result['groups'])}, "
                 f"checkpoint {result['settings']['checkpoint']}")
    ax.legend(loc="lower right")
    ax.grid(True, which="both", alpha=0.3)
    clipped = [m["short"] for m in methods.values() if m["median_s"] < floor]
    fig.text(0.01, 0.01, (f"Times below {floor:g} s ({', '.join(clipped)}: fixed weights) are drawn at {floor:g} s. "
             if clipped else "") + "Seconds exclude the scoring pass. Red: PudNet (star: the checkpoint's own point). "
             f"{result['machine']}, {threads_text(result['threads'])}.", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
