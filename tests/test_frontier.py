"""The accuracy-vs-seconds frontier: the Pareto set and the speed-up on hand-made points, the output folder's
resume rules, and one small run through the CLI on real Fashion-MNIST."""

import json
import sys

import pytest

from pudnet import frontier
from pudnet.cli import USAGE, main
from pudnet.frontier import Point, cheapest_at_least_as_accurate, dominates, pareto_front, speed_up_needed


def test_dominance_needs_one_strict_improvement():
    assert dominates(Point(90, 1.0), Point(89, 1.0))
    assert dominates(Point(90, 0.5), Point(90, 1.0))
    assert not dominates(Point(90, 1.0), Point(90, 1.0))  # a tie dominates nothing
    assert not dominates(Point(91, 2.0), Point(90, 1.0))  # more accurate but slower


def test_pareto_front_fastest_first_without_dominated_points():
    points = {"slow_best": Point(95, 10.0), "fast_weak": Point(88, 0.001), "middle": Point(92, 0.5),
              "dominated": Point(91, 1.0), "slow_weak": Point(87, 20.0)}
    assert pareto_front(points) == ["fast_weak", "middle", "slow_best"]


def test_pareto_front_keeps_identical_points_and_drops_equal_accuracy_slower_ones():
    points = {"a": Point(90, 1.0), "b": Point(90, 1.0), "slower_same": Point(90, 2.0),
              "same_time_worse": Point(89, 1.0)}
    assert pareto_front(points) == ["a", "b"]


def test_a_dominated_pudnet_is_off_the_front_and_its_alternative_is_faster():
    points = {"pudnet": Point(91, 0.8), "pretrained": Point(91.5, 1e-4), "adam": Point(95, 20.0)}
    assert "pudnet" not in pareto_front(points)
    name, ratio = speed_up_needed(points, "pudnet", ["pretrained", "adam"])
    assert name == "pretrained" and ratio == pytest.approx(1e-4 / 0.8)


def test_speed_up_of_the_cheapest_alternative_that_matches():
    points = {"pudnet": Point(92, 0.5), "cheap_worse": Point(90, 0.01), "matches_exactly": Point(92, 5.0),
              "better_slower": Point(96, 30.0)}
    alternatives = ["cheap_worse", "matches_exactly", "better_slower"]
    assert speed_up_needed(points, "pudnet", alternatives) == ("matches_exactly", pytest.approx(10.0))


def test_equally_fast_matches_prefer_the_more_accurate_and_no_match_is_none():
    points = {"pudnet": Point(92, 0.5), "x": Point(93, 2.0), "y": Point(94, 2.0), "weak": Point(50, 0.1)}
    assert cheapest_at_least_as_accurate(points, "pudnet", ["x", "y", "weak"]) == "y"
    assert speed_up_needed(points, "pudnet", ["weak"]) is None
    assert speed_up_needed(points, "pudnet", ["pudnet"]) is None  # the reference is no alternative to itself


def rows_of(names, scores, seconds):
    return [{"group": g, "scores": dict(zip(names, s)), "seconds": dict(zip(names, t))}
            for g, (s, t) in enumerate(zip(scores, seconds))]


def test_summary_pairs_every_method_with_pudnets_point_and_floors_fixed_times():
    names = ["pudnet_forward", "pretrained", "scratch_adam_1ep_10perclass"]
    rows = rows_of(names, [(0.90, 0.91, 0.95), (0.92, 0.92, 0.96), (0.91, 0.93, 0.94)],
                   [(0.05, 1e-6, 2.0), (0.06, 2e-6, 2.2), (0.04, 1e-6, 1.8)])
    result = frontier.summarise(rows, names, "pudnet_forward")
    methods = result["methods"]
    assert methods["pretrained"]["minus_pudnet"]["mean"] == pytest.approx(1.0)
    assert methods["pudnet_forward"]["minus_pudnet"] is None
    assert methods["pretrained"]["plotted_s"] == frontier.TIME_FLOOR_S
    assert methods["pretrained"]["median_s"] == pytest.approx(1e-6)  # the measured value is kept
    assert result["frontier"] == ["pretrained", "scratch_adam_1ep_10perclass"]
    assert not result["pudnet_on_frontier"] and result["pudnet_dominated_by"] == ["pretrained"]
    assert "dominated by pretrained + centroids" in frontier.verdict(result)
    assert result["speed_up"]["alternative"] == "pretrained"


def test_summary_entries_judge_the_forward_pass_against_pretrained_with_ten_steps():
    names = ["pudnet_forward", "pudnet_10steps", "pretrained", "pretrained_10steps"]
    rows = rows_of(names, [(0.90, 0.93, 0.91, 0.94), (0.92, 0.93, 0.92, 0.95)],
                   [(0.02, 0.8, 1e-6, 0.8), (0.02, 0.8, 1e-6, 0.8)])
    result = frontier.summarise(rows, names, "pudnet_10steps")
    result |= {"settings": {"domain": "mnist", "checkpoint": "c", "steps": [0, 10]}, "threads": 2}
    entries = frontier.summary_entries(result, "cmd")
    forward = entries["frontier.mnist.forward_only_vs_pretrained_10steps"]
    assert forward["value"] == pytest.approx(91.0) and forward["vs_value"] == pytest.approx(94.5)
    assert forward["paired_difference"] == pytest.approx(-3.5) and forward["seconds"] == pytest.approx(0.02)
    speed = entries["frontier.mnist.pudnet_point_seconds_vs_cheapest_as_accurate"]
    assert speed["vs"].startswith("pretrained + 10 refinement steps") and speed["pudnet_on_frontier"] is False


def test_a_row_cut_short_by_a_crash_is_dropped(tmp_path):
    names = ["pudnet_forward", "random_init"]
    path = tmp_path / frontier.ROWS
    good = rows_of(names, [(0.9, 0.8)], [(0.1, 0.001)])[0]
    path.write_text(json.dumps(good) + "\n" + '{"group": 1, "sco')
    assert list(frontier.read_rows(path, names)) == [0]
    assert path.read_text() == json.dumps(good) + "\n"


def test_a_foreign_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(frontier.SettingsMismatch, match="not empty"):
        frontier.open_folder(tmp_path, {"steps": [0]})


def test_without_matplotlib_json_and_markdown_are_written(tmp_path, monkeypatch):
    names = ["pudnet_forward", "pretrained"]
    result = frontier.summarise(rows_of(names, [(0.9, 0.8), (0.9, 0.85)], [(0.1, 0), (0.1, 0)]), names,
                                "pudnet_forward")
    result |= {"settings": {"domain": "fashion", "checkpoint": "x"}, "machine": "m", "threads": 1, "date": "d"}
    (tmp_path / "frontier.png").write_bytes(b"stale")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert frontier.write_outputs(tmp_path, result) is None
    assert (tmp_path / "frontier.json").exists() and (tmp_path / "frontier.md").exists()
    assert not (tmp_path / "frontier.png").exists()


def test_other_settings_are_named_and_refused(tmp_path):
    settings = {"steps": [0, 1], "epochs": [1], "eval_config": {"seed": 1, "ways": 4}, "threads": 1}
    assert frontier.open_folder(tmp_path, settings) == {}
    assert frontier.open_folder(tmp_path, settings) == {}  # the same settings: continue (no rows yet)
    with pytest.raises(frontier.SettingsMismatch) as info:
        frontier.open_folder(tmp_path, {**settings, "eval_config": {"seed": 2, "ways": 4}, "threads": 2})
    assert "eval_config.seed: 1 in the folder, 2 now; threads: 1 in the folder, 2 now" in str(info.value)


def test_frontier_options_need_frontier(capsys):
    assert main(["eval", "--frontier-steps", "0,1"]) == USAGE
    assert "--frontier-steps needs --frontier" in capsys.readouterr().err


@pytest.fixture
def one_thread():
    """``--threads 1`` (two threads on two shared cores run ~10x slower) without leaking into other tests."""
    import torch

    before = torch.get_num_threads()
    yield ["--threads", "1"]
    torch.set_num_threads(before)


def test_frontier_end_to_end_with_resume(tmp_path, capsys, fashion_train, fashion_test, one_thread):
    out = tmp_path / "frontier"
    argv = ["eval", "--frontier", "--frontier-steps", "0,1", "--frontier-epochs", "1", "--frontier-out", str(out),
            "--quiet", "--device", "cpu", *one_thread, "--groups"]
    assert main(argv + ["1"]) == 0  # as if interrupted after the first group
    first_row = (out / "groups.jsonl").read_text()
    assert main(argv + ["2"]) == 0  # continues: computes group 1 only
    printed = capsys.readouterr().out
    assert "| method |" in printed and "Pareto frontier" in printed
    rows = (out / "groups.jsonl").read_text()
    assert rows.startswith(first_row) and len(rows.splitlines()) == 2
    assert {p.name for p in out.iterdir()} >= {"frontier.json", "frontier.md", "frontier.png", "groups.jsonl",
                                               "settings.json"}
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = json.loads((out / "frontier.json").read_text())
    # the shipped checkpoint refines by 10 steps: that count joins the steps, for PudNet and pretrained alike
    expected = {"pudnet_forward", "pudnet_1steps", "pudnet_10steps", "pretrained", "pretrained_1steps",
                "pretrained_10steps", "scratch_adam_1ep_10perclass", "scratch_gc_1ep_10perclass", "protonet",
                "random_init"}
    assert set(first["methods"]) == expected and first["pudnet_point"] == "pudnet_10steps"
    for m in first["methods"].values():
        assert len(m["scores"]) == 2 and len(m["seconds"]) == 2
    assert_resumed_group_draws_what_an_uninterrupted_run_draws(first, fashion_train, fashion_test)

    assert main(argv + ["2"]) == 0  # every group done: nothing recomputed, the same result
    capsys.readouterr()
    assert (out / "groups.jsonl").read_text() == rows
    again = json.loads((out / "frontier.json").read_text())
    assert again["methods"] == first["methods"] and again["frontier"] == first["frontier"]

    other = [a if a != "0,1" else "0,3" for a in argv + ["2"]]
    assert main(other) == USAGE
    err = capsys.readouterr().err
    assert "other settings" in err and "steps: [0, 1, 10] in the folder, [0, 3, 10] now" in err


def assert_resumed_group_draws_what_an_uninterrupted_run_draws(result, train_store, test_store):
    """Group 1 was computed by a second process: its random init and from-scratch seeds are still group 1's."""
    import torch

    from pudnet.baselines import ScratchBaseline, ScratchConfig
    from pudnet.evaluate import EvalConfig, Evaluator, accuracy_with
    from pudnet.model.pudnet import PudNet

    target = PudNet.from_pretrained("fashion-convnet3").target
    evaluator = Evaluator(train_store, test_store, EvalConfig(groups=2))
    generator = torch.Generator().manual_seed(evaluator.config.seed)
    random_params = [target.random_params(generator) for _ in range(2)][1]
    scratch = ScratchBaseline(target, ScratchConfig(1, "adam", "support"))
    scratch.calls = 1
    tasks = evaluator.task(1)
    with torch.no_grad(), evaluator.scoring():
        random_score = accuracy_with(target, random_params, tasks, 0)
        scratch_score = accuracy_with(target, scratch(tasks), tasks, 0)
    assert result["methods"]["random_init"]["scores"][1] == pytest.approx(random_score, abs=1e-6)
    assert result["methods"]["scratch_adam_1ep_10perclass"]["scores"][1] == pytest.approx(scratch_score, abs=1e-6)


def test_a_weights_folder_without_protonet_leaves_protonet_out(tmp_path, capsys, one_thread):
    import shutil

    from pudnet.baselines import WEIGHTS

    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copy(WEIGHTS / "pretrained-convnet3.safetensors", weights)
    out = tmp_path / "frontier"
    argv = ["eval", "--frontier", "--frontier-steps", "0", "--frontier-epochs", "1", "--frontier-out", str(out),
            "--weights-dir", str(weights), "--quiet", "--device", "cpu", *one_thread, "--groups", "1"]
    assert main(argv) == 0
    assert main(argv[:-1] + ["2"]) == 0  # continues from the first group's row
    result = json.loads((out / "frontier.json").read_text())
    assert "protonet" not in result["methods"] and "pretrained" in result["methods"]
    assert len(result["methods"]["pretrained"]["scores"]) == 2
    assert list(result["settings"]["baseline_files"]) == ["pretrained-convnet3.safetensors"]
    shutil.copy(WEIGHTS / "protonet-convnet3.safetensors", weights)
    assert main(argv) == USAGE  # the folder's rows came from other baseline files
    assert "baseline_files" in capsys.readouterr().err
    (weights / "pretrained-convnet3.safetensors").unlink()
    assert main(argv) != 0  # no pretrained weights: a clear error, not a run
    assert "python -m pudnet.baselines train pretrained --target convnet3" in capsys.readouterr().err
