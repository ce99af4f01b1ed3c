"""Recorded figures: every headline number goes into ``benchmarks/results/summary.json`` through
:func:`merge_summary` / :func:`record_figure`, never by hand."""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path

SUMMARY = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "summary.json"


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


def merge_summary(entries: dict[str, dict], path: str | os.PathLike = SUMMARY) -> None:
    """Merge ``entries`` into the JSON object at ``path`` under a file lock, atomically (others keep theirs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"pudnet-summary-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
        data.update(entries)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)


def figure(value: float, unit: str, vs: str, vs_value: float, command: str, **extra) -> dict:
    """One summary entry, with its ratio, today's date and this machine."""
    return {
        "value": value, "unit": unit, "vs": vs, "vs_value": vs_value,
        "ratio": value / vs_value if vs_value else None, "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), **extra,
    }


def record_figure(name: str, value: float, unit: str, vs: str, vs_value: float, command: str,
                  path: str | os.PathLike = SUMMARY, **extra) -> dict:
    entry = figure(value, unit, vs, vs_value, command, **extra)
    merge_summary({name: entry}, path)
    return entry
