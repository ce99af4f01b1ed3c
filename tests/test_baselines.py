"""Baselines: each trains on tiny budgets, returns params of the target's exact spec shapes, plugs into the
evaluation protocol; the shipped weight files load and beat the random-init floor on unseen classes."""

import numpy as np
import pytest
import torch

from pudnet.baselines import (
    ScratchBaseline, ScratchConfig, Validation, centralise_gradients, default_target, evaluate_baselines,
    load_baseline, load_baselines, save_baseline, scratch_baselines, shipped_path, split_train_val,
    train_baseline,
)
from pudnet.baselines.__main__ import main as cli_main
from pudnet.checkpoint import CheckpointError, atomic_save
from pudnet.data.episodes import EpisodeStream
from pudnet.data.sampler import EpisodeSpec
from pudnet.evaluate import EvalConfig, Evaluator, accuracy_with
from pudnet.targets import make_target

TINY_VAL = dict(val_groups=1, val_sketch=12, val_query=6)


def assert_spec_shapes(params, target):
    assert list(params) == [s.name for s in target.specs()]
    for spec in target.specs():
        assert tuple(params[spec.name].shape) == spec.shape, spec.name
        assert params[spec.name].dtype == torch.float32
        assert torch.isfinite(params[spec.name]).all()


@pytest.fixture(scope="module")
def tiny_task(small_fashion):
    stream = EpisodeStream(small_fashion, [6, 7, 8, 9], EpisodeSpec(4, 20, 5, 10), seed=3)
    return stream.batch([0])


def test_split_holds_out_the_last_tenth_of_each_training_class(small_fashion):
    train, val = split_train_val(small_fashion, [0, 1, 2, 3, 4, 5], 0.1)
    assert set(train.classes) == set(val.classes) == {0, 1, 2, 3, 4, 5}
    for c in range(6):
        members = np.flatnonzero(small_fashion.labels == c)
        assert (val.labels == c).sum() == 20 and (train.labels == c).sum() == 180
        np.testing.assert_array_equal(val.images[val.labels == c], small_fashion.images[members[-20:]])


def test_pretrained_trains_saves_and_loads(tmp_path, small_fashion):
    target = default_target()
    out = tmp_path / "pre.safetensors"
    params, info = train_baseline("pretrained", out, store=small_fashion, progress=False, epochs=1,
                                  max_images=64, batch_size=32, evals_per_epoch=1, **TINY_VAL)
    assert_spec_shapes(params, target)
    assert info["train_images"] == 64 and 0 < info["val_acc"] <= 1
    loaded, meta = load_baseline(out, target, "pretrained")
    assert meta["baseline"] == "pretrained" and "command" in meta and "train" in meta
    for name in params:
        torch.testing.assert_close(loaded[name], params[name])
    half = tmp_path / "half.safetensors"
    save_baseline(params, half, "pretrained", target, info, half=True)
    assert half.stat().st_size < 0.6 * out.stat().st_size
    loaded, _ = load_baseline(half, target, "pretrained")
    assert all(torch.equal(loaded[name], params[name].half().float()) for name in params)


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_protonet_trains_and_changes_the_weights(distance, small_fashion):
    target = default_target()
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in target.module().state_dict().items()}  # seed 0: the same init
    params, info = train_baseline("protonet", None, store=small_fashion, progress=False, steps=1, val_every=1,
                                  distance=distance, sketch=12, support=4, query=4, **TINY_VAL)
    assert_spec_shapes(params, target)
    assert info["selected_step"] == 1 and len(info["history"]) == 1
    assert not torch.equal(params["conv1.weight"], init["conv1.weight"])


def test_unknown_baseline_and_option_are_refused(small_fashion):
    with pytest.raises(ValueError, match="unknown baseline"):
        train_baseline("metabaseline", None, store=small_fashion)
    with pytest.raises(TypeError, match="unknown option"):
        train_baseline("protonet", None, store=small_fashion, epochz=3)


def test_scratch_trains_under_no_grad_and_records_time(tiny_task):
    target = default_target()
    untrained = ScratchBaseline(target, ScratchConfig(epochs=0))(tiny_task)
    for optimiser in ("adam", "gc"):
        baseline = ScratchBaseline(target, ScratchConfig(epochs=1, optimiser=optimiser, batch_size=10))
        with torch.no_grad():  # the evaluator calls baselines under no_grad
            params = baseline(tiny_task)
        assert_spec_shapes(params, target)
        assert len(baseline.seconds) == 1 and baseline.seconds[0] > 0
        assert not torch.equal(params["conv2.weight"], untrained["conv2.weight"])


def test_scratch_labelled_sets_and_names(tiny_task):
    target = default_target()
    support = ScratchBaseline(target, ScratchConfig(labelled="support"))
    everything = ScratchBaseline(target, ScratchConfig(labelled="all"))
    assert len(support.labelled_images(tiny_task)[0]) == 4 * 5
    assert len(everything.labelled_images(tiny_task)[0]) == 4 * 20
    names = set(scratch_baselines(target, epochs=(1, 5), labelled=("support", "all"), optimisers=("adam", "gc")))
    assert "scratch_adam_1ep_10perclass" in names and "scratch_gc_5ep_alldata" in names and len(names) == 8
    with pytest.raises(ValueError):
        ScratchConfig(labelled="query")


def test_gradient_centralisation_zeroes_the_mean_over_inputs():
    w = torch.nn.Parameter(torch.randn(8, 4, 3, 3))
    b = torch.nn.Parameter(torch.randn(8))
    w.grad, b.grad = torch.randn(8, 4, 3, 3) + 5, torch.randn(8) + 5
    before = b.grad.clone()
    centralise_gradients([w, b])
    torch.testing.assert_close(w.grad.mean(dim=(1, 2, 3)), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(b.grad, before)  # vectors untouched


def test_shipped_weights_load_and_beat_the_floor_on_training_classes(fashion_train, fashion_test):
    """On held-out images of the training classes both shipped baselines are far above a random-init
    ConvNet-3 (~92% / ~89% vs ~78%). On the unseen classes 6-9 the random-init floor is itself ~89-90% and
    the gaps are a few points at most (benchmarks/NOTES.md, "## Baselines", 100 groups), which 5 groups
    cannot resolve: there every method must only score far above chance."""
    target = default_target()
    assert shipped_path("pretrained").is_file() and shipped_path("protonet").is_file()
    baselines = load_baselines(target)
    fixed = {k: baselines[k] for k in ("pretrained", "protonet")}
    for name, baseline in fixed.items():
        assert_spec_shapes(baseline(None), target)
        assert baseline.metadata["baseline"] == name
    _, val = split_train_val(fashion_train, [0, 1, 2, 3, 4, 5])
    validation = Validation(val, [0, 1, 2, 3, 4, 5], groups=3, spec=EpisodeSpec(4, 20, 10, 10))
    floor = validation.score(target, target.random_params(torch.Generator().manual_seed(0)))
    for name, baseline in fixed.items():
        assert validation.score(target, baseline.params) > floor + 0.05, name
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = evaluate_baselines(fixed, EvalConfig(groups=5, sketch=20, query=10), fashion_train,
                                    fashion_test, target, progress=False)
    acc = result["accuracy"]
    for name in ("random_init", "pretrained", "protonet"):
        assert acc[name]["mean"] > 75, acc  # 4-way chance is 25%


def test_baselines_plug_into_the_evaluator(small_fashion, fashion_test):
    """Evaluator.run(net, baselines=...) scores them with accuracy_with on the same groups."""
    from pudnet.model.config import PudNetConfig
    from pudnet.model.pudnet import PudNet

    net = PudNet(PudNetConfig()).eval()
    config = EvalConfig(groups=1, sketch=20, query=10, spread_datasets=2)
    evaluator = Evaluator(small_fashion, fashion_test, config)
    baselines = load_baselines()
    scratch = ScratchBaseline(net.target, ScratchConfig(epochs=1))
    result = evaluator.run(net, progress=False, baselines={"pretrained": baselines["pretrained"], "scratch": scratch})
    tasks = evaluator.task(0)
    expected = accuracy_with(net.target, baselines["pretrained"].params, tasks, 0)
    assert result["scores"]["pretrained"] == [expected]
    assert len(result["scores"]["scratch"]) == 1 and len(scratch.seconds) == 1


def test_weight_files_are_checked(tmp_path):
    with pytest.raises(CheckpointError, match="target"):
        load_baseline(shipped_path("pretrained"), make_target("convnet3", in_channels=1, image_size=28, width=32))
    with pytest.raises(CheckpointError, match="train_baseline"):
        load_baselines(make_target("convnet3", in_channels=3, image_size=32))
    with pytest.raises(FileNotFoundError, match="python -m pudnet.baselines train"):
        load_baselines(weights_dir=tmp_path)
    other = tmp_path / "other.safetensors"
    atomic_save({"x": torch.zeros(2)}, other, {"format": "something-else"})
    with pytest.raises(CheckpointError, match="not a pudnet baseline"):
        load_baseline(other)
    params, _ = load_baseline(shipped_path("protonet"))
    with pytest.raises(CheckpointError, match="holds baseline"):
        load_baseline(shipped_path("protonet"), name="pretrained")
    with pytest.raises(CheckpointError):  # a params dict missing a tensor is never written
        save_baseline({k: v for k, v in list(params.items())[1:]}, tmp_path / "bad.safetensors", "protonet",
                      default_target(), {})
    assert not (tmp_path / "bad.safetensors").exists()


def test_cli_help_and_info(capsys):
    for argv in (["--help"], ["train", "--help"], ["eval", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            cli_main(argv)
        assert exit_.value.code == 0
    assert cli_main(["info", str(shipped_path("pretrained"))]) == 0
    assert "baseline: pretrained" in capsys.readouterr().out
