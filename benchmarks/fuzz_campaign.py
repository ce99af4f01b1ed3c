"""Fuzz campaigns with a case count and a seed, logged; every failing case persisted and replayable.

    ~/.cache/pudnet/venv/bin/python benchmarks/fuzz_campaign.py [--cases 200] [--seed 0] [--targets config,sampler]
    ~/.cache/pudnet/venv/bin/python benchmarks/fuzz_campaign.py --replay benchmarks/results/fuzz_failures/ID.json

Targets (``--cases`` cases each):
- ``config``: edits of the shipped checkpoint's config (``fashion-convnet3``): per case 1–3 fields (nested
  ``target_kwargs`` included) set to another value — huge, negative, zero, NaN, ±inf, doubled, off by one,
  of the wrong type, or missing — drawn from ``random.Random("<seed>:<index>")``; each edited checkpoint is
  loaded with ``PudNet.from_pretrained`` and, where it loads, predicts for 20 real Fashion-MNIST images and
  runs. A case passes when it ends in a ``CheckpointError`` naming the file and an edited field (or the
  tensors that do not fit), or in a normal, finite result, within ``SECONDS`` (the rule of
  ``tests/test_config_fuzz.py``, there over every single-field edit);
- ``parsers``, ``sampler``: the hypothesis properties of ``tests/test_native_loaders.py`` (mutated IDX / gzip /
  CIFAR / PNG / JPEG bytes raise only ``DataError``) and ``tests/test_native_sampler.py`` (the Rust sampler
  equals the Python reference over random configurations), run by pytest with ``--hypothesis-seed=<seed>``,
  ``PUDNET_FUZZ_CASES=<cases>`` and no example database (a run depends on the seed and the code only).

Each campaign appends one JSON line to ``benchmarks/results/fuzz_log.jsonl``: cases run and failures per
target, the seed, the duration, and the provenance of ``pudnet.report`` (start time, commit, dirty tree,
exact argv, machine, the checkpoint's sha256). Each failing case goes to
``benchmarks/results/fuzz_failures/<id>.json`` (everything needed to rerun it and the outcome it had);
``--replay FILE`` reruns it, says whether the outcome repeats, and exits 1 while the case still fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOG = HERE / "results" / "fuzz_log.jsonl"
FAILURES = HERE / "results" / "fuzz_failures"
CHECKPOINT = "fashion-convnet3"
SECONDS = 10.0  # per config case, as tests/test_config_fuzz.py
HYPOTHESIS = {
    "parsers": "tests/test_native_loaders.py::test_fuzz_parsers_raise_only_data_error",
    "sampler": "tests/test_native_sampler.py::test_native_equals_reference_over_random_configs",
}
TARGETS = ("config", *HYPOTHESIS)


# ------------------------------------------------------------------------------------------- config fuzz


def shipped() -> tuple[dict, dict]:
    """The shipped checkpoint's tensors and metadata."""
    from safetensors import safe_open

    from pudnet.pretrained import path_of

    with safe_open(str(path_of(CHECKPOINT)), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def fields(config: dict, prefix: tuple = ()) -> list[tuple]:
    """Every key path of ``config`` (nested dicts too: ``("target_kwargs", "width")``)."""
    out = []
    for key, value in config.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out += fields(value, (*prefix, key))
    return out


def mutations(value) -> list[tuple[str, object]]:
    """(label, new value) for one field; ``"missing"`` deletes it."""
    common = [("null", None), ("string", "7"), ("list", [1]), ("object", {}), ("missing", None)]
    if isinstance(value, bool):
        return [("flipped", not value), ("int", 1), ("string", "true"), *common]
    if isinstance(value, (int, float)):
        numbers = [("huge", 10**12), ("negative", -3), ("zero", 0), ("NaN", math.nan), ("inf", math.inf),
                   ("-inf", -math.inf), ("doubled", value * 2), ("plus one", value + 1), ("minus one", value - 1),
                   ("bool", True)]
        if isinstance(value, int):
            numbers.append(("fraction", value + 0.5))
        return numbers + common
    if isinstance(value, str):
        return [("other string", value + "x"), ("empty", ""), ("int", 7), *common]
    if isinstance(value, list):
        return [("empty", []), ("longer", value + value[:1]), ("string", "x"), ("null", None), ("missing", None)]
    return [("empty", {}), ("string", "x"), ("int", 7), ("null", None), ("missing", None)]


def config_case(config: dict, seed: int, index: int) -> dict:
    """Case ``index`` of the campaign ``seed``: 1–3 field edits of ``config``, from ``Random(f"{seed}:{index}")``."""
    rng = random.Random(f"{seed}:{index}")
    edits = []
    paths = fields(config)
    for path in rng.sample(paths, rng.choice([1, 1, 2, 3])):
        if any(tuple(e["field"]) == path[: len(e["field"])] for e in edits if e["change"] == "missing"):
            continue  # inside a field already deleted
        label, value = rng.choice(mutations(_get(config, path)))
        edits.append({"field": list(path), "change": label, "value": value})
    return {"target": "config", "seed": seed, "index": index, "checkpoint": CHECKPOINT, "edits": edits}


def _get(config: dict, path: tuple):
    for key in path:
        config = config[key]
    return config


def edited(config: dict, edits: list[dict]) -> dict:
    config = json.loads(json.dumps(config))
    for edit in edits:
        holder = config
        for key in edit["field"][:-1]:
            if not isinstance(holder, dict) or key not in holder:
                break  # an earlier edit replaced or deleted the parent
            holder = holder[key]
        else:
            if not isinstance(holder, dict):
                continue
            if edit["change"] == "missing":
                holder.pop(edit["field"][-1], None)
            else:
                holder[edit["field"][-1]] = edit["value"]
    return config


class ConfigFuzz:
    """The shipped checkpoint and the images every config case predicts for (loaded once)."""

    def __init__(self):
        import numpy as np

        import pudnet

        self.tensors, self.metadata = shipped()
        self.config = json.loads(self.metadata["config"])
        store = pudnet.datasets.fashion_mnist("train")
        keep = np.concatenate([np.flatnonzero(store.labels == c)[:200] for c in (6, 7)])
        data = store.subset(np.sort(keep))
        self.images, self.support = data.subset(np.arange(0, 400, 20)), data.labelled(per_class=3)
        self.work = Path(tempfile.mkdtemp(prefix="pudnet-fuzz-"))

    def run(self, case: dict) -> dict:
        """``{outcome: normal | error | failure, problem (failures: what is wrong), message, seconds}``."""
        import torch
        from safetensors.torch import save_file

        import pudnet

        path = self.work / "edited.safetensors"
        config = json.dumps(edited(self.config, case["edits"]))
        save_file(self.tensors, path, metadata={**self.metadata, "config": config})
        names = {str(e["field"][-1]) for e in case["edits"]}
        began = time.perf_counter()
        result = {"outcome": "normal", "problem": None, "message": None}
        try:
            net = pudnet.PudNet.from_pretrained(str(path))
            module = net.predict(self.images, support=self.support)
            with torch.no_grad():
                if not torch.isfinite(module(self.images.tensor()[:4])).all():
                    result.update(outcome="failure", problem="non-finite output")
        except pudnet.CheckpointError as e:
            result.update(outcome="error", message=str(e).replace(str(path), "<checkpoint>")[:500])
            if str(path) not in str(e):
                result.update(outcome="failure", problem="the error does not name the file")
            elif not any(name in str(e) for name in names) and "do not match the architecture" not in str(e):
                result.update(outcome="failure", problem="the error names neither an edited field nor the tensors")
        except Exception as e:  # noqa: BLE001 — anything else is what the campaign exists to find
            result.update(outcome="failure", problem=f"raised {type(e).__name__}",
                          message=f"{type(e).__name__}: {e}".replace(str(path), "<checkpoint>")[:500])
        result["seconds"] = round(time.perf_counter() - began, 3)
        if result["seconds"] > SECONDS and result["outcome"] != "failure":
            result.update(outcome="failure", problem=f"took more than {SECONDS:g} s")
        return result


# -------------------------------------------------------------------------------------- hypothesis targets


class _CampaignProfile:
    """pytest plugin of the child run: no example database, falsifying examples printed with their blob."""

    @staticmethod
    def pytest_configure(config):
        from hypothesis import settings

        settings.register_profile("pudnet-campaign", database=None, print_blob=True)
        settings.load_profile("pudnet-campaign")


def run_hypothesis(targets, cases: int, seed: int) -> dict[str, dict]:
    """Runs hypothesis properties by pytest in one child process: ``{target: {outcome, cases, failing, message}}``
    (``cases``, ``failing``: the examples of the generate phase, shrinking not counted)."""
    nodes = {target: HYPOTHESIS[target] for target in targets}
    env = dict(os.environ, PUDNET_FUZZ_CASES=str(cases))
    argv = [sys.executable, str(Path(__file__).resolve()), "--pytest-child", "-q", "-p", "no:cacheprovider",
            "-rA", f"--hypothesis-seed={seed}", "--hypothesis-show-statistics", *nodes.values()]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    out = done.stdout + done.stderr
    statistics = out.split("Hypothesis Statistics", 1)[-1]
    results = {}
    for target, node in nodes.items():
        test = node.rsplit("::", 1)[1]
        block = statistics.split(f"{node}:", 1)[1].split("\n\n\n", 1)[0] if f"{node}:" in statistics else ""
        generate = block.split("during generate phase", 1)[-1].split("- during", 1)[0] if block else ""
        counts = [tuple(map(int, m)) for m in re.findall(r"(\d+) passing(?: examples)?, (\d+) failing", generate)]
        if re.search(rf"^PASSED {re.escape(node)}", out, re.M):
            outcome = "passed"
        elif re.search(rf"^FAILED {re.escape(node)}", out, re.M):
            outcome = "failed"
        else:  # not run: a collection error, a crash
            outcome = f"error (pytest exit {done.returncode})"
        result = {"outcome": outcome, "cases": sum(p + f for p, f in counts), "failing": sum(f for _, f in counts),
                  "message": None}
        if outcome != "passed":
            section = re.split(rf"_{{3,}} {re.escape(test)}\S* _{{3,}}", out)
            text = section[1] if len(section) > 1 else out
            example = re.search(r"(?:Falsifying example|Failing test case):.*?\n(?:E\s+)?\)", text, re.S)
            blob = re.search(r"@reproduce_failure\([^)]*\)", text)
            result["message"] = (example.group(0) if example else text[-3000:])[:3000]
            result["reproduce_failure"] = blob.group(0) if blob else None
        results[target] = result
    return results


# ----------------------------------------------------------------------------------------------- campaign


def persist(case: dict, result: dict, folder: Path = FAILURES) -> Path:
    """Writes a failing case (what reruns it, and the outcome it had) to ``folder/<id>.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    if case["target"] == "config":
        ident = f"config-seed{case['seed']}-case{case['index']}"
    else:
        ident = f"{case['target']}-seed{case['seed']}-cases{case['cases']}"
    path = folder / f"{ident}.json"
    path.write_text(json.dumps({"id": ident, "case": case, "result": result}, indent=1) + "\n")
    return path


def campaign(cases: int, seed: int, targets=TARGETS, log: Path = LOG, failures: Path = FAILURES,
             progress=print) -> dict:
    """Runs ``cases`` cases of each target with ``seed``; appends the campaign's line to ``log``."""
    from pudnet.report import provenance

    began = time.perf_counter()
    per_target, failure_files = {}, []
    if "config" in targets:
        fuzz = ConfigFuzz()
        outcomes = {"normal": 0, "error": 0, "failure": 0}
        for index in range(cases):
            case = config_case(fuzz.config, seed, index)
            result = fuzz.run(case)
            outcomes[result["outcome"]] += 1
            if result["outcome"] == "failure":
                failure_files.append(persist(case, result, failures))
                progress(f"config case {index}: {result['problem']}: {result['message']}")
        per_target["config"] = {"cases": cases, "failures": outcomes["failure"], "outcomes": outcomes}
        progress(f"config: {cases} cases, {outcomes}")
    properties = [t for t in targets if t in HYPOTHESIS]
    for target, result in (run_hypothesis(properties, cases, seed) if properties else {}).items():
        case = {"target": target, "test": HYPOTHESIS[target], "seed": seed, "cases": cases}
        per_target[target] = {"cases": result["cases"], "failures": int(result["outcome"] != "passed"),
                              "outcome": result["outcome"]}
        if result["outcome"] != "passed":
            failure_files.append(persist(case, result, failures))
        progress(f"{target}: {result['cases']} cases, {result['outcome']}")
    record = {
        "cases": cases, "seed": seed, "targets": per_target,
        "failures": sum(t["failures"] for t in per_target.values()),
        "failure_files": [_relative(p) for p in failure_files],
        "duration_s": round(time.perf_counter() - began, 1),
        **provenance(CHECKPOINT if "config" in targets else None),
    }
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    return record


def replay(file: str | os.PathLike) -> dict:
    """Reruns a persisted case: ``{id, recorded, now, reproduced, still_failing}``."""
    saved = json.loads(Path(file).read_text())
    case, before = saved["case"], saved["result"]
    if case["target"] == "config":
        now = ConfigFuzz().run(case)
        same = (now["outcome"], now["problem"]) == (before["outcome"], before["problem"])
        failing = now["outcome"] == "failure"
    else:
        now = run_hypothesis([case["target"]], case["cases"], case["seed"])[case["target"]]
        same, failing = now["outcome"] == before["outcome"], now["outcome"] != "passed"
    return {"id": saved["id"], "recorded": before, "now": now, "reproduced": same, "still_failing": failing}


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=200, help="cases per target (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma list of {', '.join(TARGETS)}")
    parser.add_argument("--log", type=Path, default=LOG, help="the campaign log (JSON lines; default %(default)s)")
    parser.add_argument("--failures", type=Path, default=FAILURES, help="folder of failing cases (default %(default)s)")
    parser.add_argument("--replay", metavar="FILE", help="rerun one persisted case instead")
    args = parser.parse_args(argv)
    if args.replay:
        result = replay(args.replay)
        print(json.dumps(result, indent=1))
        print(f"{result['id']}: {'the recorded outcome repeats' if result['reproduced'] else 'the outcome changed'}"
              f"; {'still failing' if result['still_failing'] else 'passes now'}")
        return 1 if result["still_failing"] else 0
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or args.cases < 1:
        parser.error(f"unknown targets {unknown}" if unknown else "--cases must be at least 1")
    record = campaign(args.cases, args.seed, targets, args.log, args.failures)
    print(json.dumps(record))
    return 1 if record["failures"] else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--pytest-child":
        import pytest

        sys.exit(pytest.main(sys.argv[2:], plugins=[_CampaignProfile()]))
    sys.exit(main())
