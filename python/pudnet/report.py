"""Recorded figures: every headline number goes into ``benchmarks/results/summary.json`` via
:func:`record_figure`, never by hand."""

from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
from pathlib import Path

SUMMARY = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "summary.json"


def machine() -> str:
    """A one-line description of this machine (CPU model, cores, GPU if any)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return text


def record_figure(
    name: str, value: float, unit: str, vs: str, vs_value: float, command: str,
    path: str | os.PathLike = SUMMARY,
) -> dict:
    """Add or replace entry ``name`` of the summary file (atomically), with ratio, date and machine."""
    entry = {
        "value": value, "unit": unit, "vs": vs, "vs_value": vs_value,
        "ratio": value / vs_value if vs_value else None, "command": command,
        "date": datetime.date.today().isoformat(), "machine": machine(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = json.loads(path.read_text()) if path.exists() else {}
    summary[name] = entry
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return entry
