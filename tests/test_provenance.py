"""Provenance of recorded figures (pudnet.report) and replayable fuzz failures (benchmarks/fuzz_campaign.py)."""

import datetime
import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from pudnet import report
from pudnet.pretrained import path_of

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def utc(text: str) -> datetime.datetime:
    when = datetime.datetime.fromisoformat(text)
    assert when.utcoffset() == datetime.timedelta(0), text
    return when


@pytest.fixture
def fresh_git_state():
    report._git_state_once.cache_clear()
    yield
    report._git_state_once.cache_clear()


def test_every_entry_written_carries_its_provenance(tmp_path, fresh_git_state):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"older": {"value": 1, "date": "2026-01-01"}}))
    written = report.merge_summary({
        "timed": report.figure(5.0, "ms", "target", 10.0, "pudnet bench predict", checkpoint="fashion-convnet3"),
        "plain": {"value": 2, "unit": "x", "date": "stale"},
    }, path)
    data = json.loads(path.read_text())
    assert data["older"] == {"value": 1, "date": "2026-01-01"}  # others keep theirs
    for name in ("timed", "plain"):
        entry = data[name]
        assert entry == written[name]
        assert set(report.PROVENANCE_FIELDS) <= set(entry) and "date" not in entry
        assert utc(entry["started"]) <= utc(entry["recorded"]) <= datetime.datetime.now(datetime.timezone.utc)
        assert entry["argv"] == sys.argv and entry["machine"] == report.machine()
        if entry["git_commit"] is None:  # not run from a git checkout (an installed wheel)
            assert entry["git_dirty"] is None and entry["git_error"]
        else:
            assert re.fullmatch(r"[0-9a-f]{40}", entry["git_commit"]) and isinstance(entry["git_dirty"], bool)
    shipped = hashlib.sha256(path_of("fashion-convnet3").read_bytes()).hexdigest()
    assert data["timed"]["checkpoint"] == "fashion-convnet3" and data["timed"]["checkpoint_sha256"] == shipped
    assert data["timed"]["ratio"] == 0.5
    assert "checkpoint_sha256" not in data["plain"]
    # a checkpoint given for the whole call, a file by path, one that cannot be read
    other = report.stamped({"a": {"value": 1}}, checkpoint=path_of("fashion-convnet3"))["a"]
    assert other["checkpoint_sha256"] == shipped and other["checkpoint"].endswith("fashion-convnet3.safetensors")
    missing = report.stamped({"a": {"value": 1, "checkpoint": str(tmp_path / "gone.safetensors")}})["a"]
    assert missing["checkpoint_sha256"] is None and "gone.safetensors" in missing["checkpoint_error"]
    assert report.stamped({"a": {}}, started="2026-01-02T03:04:05+00:00")["a"]["started"] == "2026-01-02T03:04:05+00:00"


def test_without_git_the_commit_is_none_with_a_reason(tmp_path, monkeypatch, fresh_git_state):
    state = report.git_state(tmp_path)  # not a checkout
    assert state["git_commit"] is None and state["git_dirty"] is None and "not a git checkout" in state["git_error"]

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(report.subprocess, "run", no_git)
    entry = report.stamped({"a": {"value": 1}})["a"]
    assert entry["git_commit"] is None and entry["git_dirty"] is None
    assert entry["git_error"] == "git is not installed"
    assert utc(entry["started"]) and entry["argv"] == sys.argv


def test_a_persisted_failing_fuzz_case_replays_to_the_same_outcome(tmp_path, monkeypatch):
    fuzz = load_script("fuzz_campaign")
    config = json.loads(fuzz.shipped()[1]["config"])
    assert fuzz.config_case(config, 7, 3) == fuzz.config_case(config, 7, 3) != fuzz.config_case(config, 7, 4)
    monkeypatch.setattr(fuzz, "SECONDS", -1.0)  # every case "too slow": a failure to persist
    log, failures = tmp_path / "fuzz_log.jsonl", tmp_path / "failures"
    record = fuzz.campaign(1, 7, ("config",), log, failures, progress=lambda *a: None)
    assert record["failures"] == 1 and record["targets"]["config"]["cases"] == 1
    line = json.loads(log.read_text().splitlines()[-1])
    assert {"cases", "seed", "failures", "duration_s", "git_commit", "argv", "started",
            "checkpoint_sha256"} <= set(line)
    saved = json.loads((failures / "config-seed7-case0.json").read_text())
    assert saved["case"] == fuzz.config_case(config, 7, 0) and saved["result"]["outcome"] == "failure"
    again = fuzz.replay(failures / "config-seed7-case0.json")
    assert again["reproduced"] and again["still_failing"]
    # a passing case replays to its own outcome too (error or normal, the same problem: none)
    case = fuzz.config_case(config, 7, 0)
    monkeypatch.setattr(fuzz, "SECONDS", 10.0)
    first = fuzz.ConfigFuzz().run(case)
    path = fuzz.persist(case, first, tmp_path / "kept")
    assert first["outcome"] in ("error", "normal") and fuzz.replay(path)["reproduced"]


def test_eval_entries_are_the_recorded_keys_of_pudnet_eval():
    results = BENCHMARKS / "results"
    summary = json.loads((results / "summary.json").read_text())
    for file, prefix in (("eval-fashion-500.json", "fashion_unseen"), ("eval-mnist-100.json", "mnist_cross_domain")):
        entries = report.eval_entries(json.loads((results / file).read_text()), "pudnet eval", prefix, seed=1)
        assert set(entries) == {k for k in summary if k.startswith(prefix + ".")}
        assert all(e["seed"] == 1 and e["command"] == "pudnet eval" for e in entries.values())
