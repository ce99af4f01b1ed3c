"""Recorded figures: every headline number goes into ``benchmarks/results/summary.json`` through
:func:`merge_summary` / :func:`record_figure`, never by hand, and by the process that measured it.

:func:`merge_summary` stamps every entry it writes with its provenance (:func:`provenance`):

- ``started``: when the measuring process started (UTC, from ``/proc/self/stat``; where that cannot be read,
  when this module was imported), or what a long run passes as ``started=``;
- ``recorded``: when the entry was written (UTC);
- ``git_commit`` / ``git_dirty``: ``git rev-parse HEAD`` and whether ``git status --porcelain`` lists any change
  outside ``benchmarks/results/`` (the recorded figures themselves do not make the code dirty), in the checkout
  this package was imported from; both ``None`` with ``git_error`` saying why where it is not a git checkout;
- ``argv``: ``sys.argv`` of the measuring process, exactly; ``machine``: :func:`machine`;
- ``checkpoint_sha256``: where the entry names a ``checkpoint`` (a shipped name or a file; or ``checkpoint=``
  given to :func:`merge_summary`), the sha256 of that file.

``command`` stays what the caller says (a readable command line); ``argv`` is the exact one.
"""

from __future__ import annotations

import datetime
import fcntl
import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from .checkpoint import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]  # the checkout (python/pudnet/report.py) when installed editable
SUMMARY = ROOT / "benchmarks" / "results" / "summary.json"
RESULTS_DIR = "benchmarks/results"  # changes under it do not count as a dirty tree
PROVENANCE_FIELDS = ("started", "recorded", "git_commit", "git_dirty", "argv", "machine")
_IMPORTED = datetime.datetime.now(datetime.timezone.utc)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def process_started() -> str:
    """When this process started, UTC ISO (``/proc/self/stat`` + boot time; else when this module was imported)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        when = datetime.datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), datetime.timezone.utc)
    except (OSError, ValueError, IndexError, StopIteration):
        when = _IMPORTED
    return when.isoformat(timespec="seconds")


def machine() -> str:
    """One line naming this machine: CPU model, logical CPUs, memory, torch version, GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    text = f"{cpu}, {os.cpu_count()} logical CPUs, {memory:.0f} GiB RAM"
    try:
        import torch

        text += f", torch {torch.__version__}"
        if torch.cuda.is_available():
            text = f"{torch.cuda.get_device_name(0)}; {text}"
    except ImportError:
        pass
    return text


def git_state(root: str | os.PathLike = ROOT) -> dict:
    """``{git_commit, git_dirty}`` of the checkout at ``root``; both ``None`` plus ``git_error`` where ``root``
    is not the top of a git checkout (an installed wheel, no git)."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        top = git("rev-parse", "--show-toplevel")
        if Path(top).resolve() != Path(root).resolve():
            raise ValueError(f"{root} is not the top of a git checkout (inside {top})")
        commit = git("rev-parse", "HEAD")
        changes = git("status", "--porcelain", "--", ".", f":(exclude){RESULTS_DIR}")
    except FileNotFoundError:
        return {"git_commit": None, "git_dirty": None, "git_error": "git is not installed"}
    except subprocess.CalledProcessError as e:
        return {"git_commit": None, "git_dirty": None,
                "git_error": f"not a git checkout: {root} ({(e.stderr or '').strip()[:200]})"}
    except (ValueError, OSError, subprocess.TimeoutExpired) as e:
        return {"git_commit": None, "git_dirty": None, "git_error": str(e)[:300]}
    return {"git_commit": commit, "git_dirty": bool(changes)}


@functools.lru_cache(maxsize=None)
def _git_state_once(root: str) -> tuple:
    return tuple(git_state(root).items())


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@functools.lru_cache(maxsize=None)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return _file_sha256(Path(path))


def checkpoint_sha256(checkpoint: str | os.PathLike) -> str:
    """The sha256 of a checkpoint: a shipped name (``pudnet.pretrained``) or a file."""
    from .pretrained import path_of

    path = Path(path_of(str(checkpoint))).resolve()
    stat = path.stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


def _checkpoint_name(checkpoint: str | os.PathLike) -> str:
    """A shipped name as it is; a file relative to the checkout where it lies inside it."""
    text = str(checkpoint)
    path = Path(text)
    if path.suffix != ".safetensors" and not path.exists():
        return text
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path.resolve())


def checkpoint_fields(checkpoint: str | os.PathLike) -> dict:
    """``{checkpoint, checkpoint_sha256}`` (``None`` plus ``checkpoint_error`` where the file cannot be read)."""
    try:
        return {"checkpoint": _checkpoint_name(checkpoint), "checkpoint_sha256": checkpoint_sha256(checkpoint)}
    except (OSError, ValueError) as e:
        return {"checkpoint": str(checkpoint), "checkpoint_sha256": None,
                "checkpoint_error": f"{type(e).__name__}: {e}"[:300]}


def provenance(checkpoint: str | os.PathLike | None = None, started: str | None = None) -> dict:
    """The fields :func:`merge_summary` adds to every entry (see the module docstring)."""
    out = {"started": started or process_started(), "recorded": utc_now(), **dict(_git_state_once(str(ROOT))),
           "argv": list(sys.argv), "machine": machine()}
    return out | (checkpoint_fields(checkpoint) if checkpoint is not None else {})


def stamped(entries: dict[str, dict], checkpoint: str | os.PathLike | None = None,
            started: str | None = None) -> dict[str, dict]:
    """``entries`` with their provenance: an entry's own ``checkpoint`` (else ``checkpoint``) is hashed. Stamps
    the entries carry already are replaced (``date``, the stamp of entries written before, is dropped)."""
    common = provenance(None, started)
    out = {}
    for name, entry in entries.items():
        entry = {k: v for k, v in entry.items() if k != "date"}
        own = entry.pop("checkpoint", None)
        entry.update(common)
        if own is not None or checkpoint is not None:
            entry.update(checkpoint_fields(own if own is not None else checkpoint))
        out[name] = entry
    return out


def merge_summary(entries: dict[str, dict], path: str | os.PathLike = SUMMARY, *,
                  checkpoint: str | os.PathLike | None = None, started: str | None = None) -> dict[str, dict]:
    """Merge ``entries``, stamped with their provenance (:func:`stamped`), into the JSON object at ``path``
    under a file lock, atomically (others keep theirs); returns the entries as written."""
    entries = stamped(entries, checkpoint, started)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"pudnet-summary-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
        data.update(entries)
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return entries


def figure(value: float, unit: str, vs: str, vs_value: float, command: str, **extra) -> dict:
    """One summary entry with its ratio (``checkpoint=`` among ``extra``: the checkpoint it measured);
    :func:`merge_summary` adds the provenance."""
    return {"value": value, "unit": unit, "vs": vs, "vs_value": vs_value,
            "ratio": value / vs_value if vs_value else None, "command": command, **extra}


def record_figure(name: str, value: float, unit: str, vs: str, vs_value: float, command: str,
                  path: str | os.PathLike = SUMMARY, **extra) -> dict:
    return merge_summary({name: figure(value, unit, vs, vs_value, command, **extra)}, path)[name]


# ------------------------------------------------------------------------------------- evaluation figures

EVAL_PREFIX = {"fashion": "fashion_unseen", "mnist": "mnist_cross_domain"}
LATENCY_TARGET_MS = 10.0  # the weights-only latency target of ConvNet-3 (pudnet.bench)


def eval_entries(result: dict, command: str, prefix: str = "fashion_unseen", **extra) -> dict:
    """The summary entries of one ``pudnet eval`` result (``Evaluator.run``): PudNet against every other
    method, own vs foreign sketch, the weight spreads, the median prediction time."""
    acc, groups = result["accuracy"], result["groups"]
    entries = {}
    for name in acc:
        if name == "pudnet":
            continue
        entries[f"{prefix}.pudnet_vs_{name}"] = figure(
            acc["pudnet"]["mean"], f"top-1 % ({prefix}), {groups} groups "
            f"(±{acc['pudnet']['ci95']:.2f} vs ±{acc[name]['ci95']:.2f} 95% CI)",
            name, acc[name]["mean"], command, **extra)
    diff = result["own_minus_foreign"]
    entries[f"{prefix}.own_minus_foreign_sketch"] = figure(
        diff["mean"], f"paired top-1 points, own sketch − foreign-class sketch (±{diff['ci95']:.2f} 95% CI)",
        "zero (sketch ignored)", 0.0, command, **extra)
    spread = result["weight_spread"]
    entries[f"{prefix}.weight_spread_between_vs_within"] = figure(
        spread["between"], "relative spread of predicted weights between evaluated and foreign-class datasets",
        "within the evaluated datasets", spread["within_unseen"], command, **extra)
    if "function_between" in spread:
        entries[f"{prefix}.function_spread_between_vs_within"] = figure(
            spread["function_between"], "relative spread of predicted weights without the rescalings the "
            "network ignores (Target.canonical), between evaluated and foreign-class datasets",
            "within the evaluated datasets", spread["function_within_unseen"], command, **extra)
    entries[f"{prefix}.median_prediction_ms"] = figure(
        1000 * result["median_prediction_s"], "ms per prediction (weights, their refinement when the checkpoint "
        "refines, and the dataset's BatchNorm statistics)",
        "weights-only latency target", LATENCY_TARGET_MS, command, **extra)
    return entries
