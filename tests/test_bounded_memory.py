"""Bounded memory: BatchNorm statistics streamed in chunks equal one pass; the refinement and the statistics
see bounded, labelled-first subsets; `pudnet predict` defaults to the unseen classes and guards the size."""

import pytest
import torch
from safetensors.torch import load_file

import pudnet
from pudnet.cli import USAGE, main
from pudnet.model import pudnet as pudnet_module
from pudnet.model.pudnet import _at_most, _evenly_filled
from pudnet.targets import make_target
from test_train import MODEL

# float32 sums over different groupings of the same values: ConvNet-3's statistics agree to ~1e-5 of their
# size; a random-init ResNet-18's deep layers have tiny variances on 12 images, where both passes are
# ~5e-4 from a float64 reference (checked), so the bound there is looser
CASES = [("convnet3", 28, 50, 16, 1e-4), ("resnet18", 8, 12, 5, 2e-3)]


@pytest.mark.parametrize("name, size, images, chunk, tolerance", CASES)
def test_streamed_statistics_equal_one_pass(name, size, images, chunk, tolerance):
    target = make_target(name, in_channels=1, image_size=size)
    params = target.random_params(torch.Generator().manual_seed(1))
    x = torch.rand(images, 1, size, size)
    one_pass = target.forward(params, x)[1]
    passes = []
    streamed = target.dataset_stats(params, x, chunk=chunk, progress=passes.append)
    assert streamed.keys() == one_pass.keys()
    for layer, (mean, var) in one_pass.items():
        torch.testing.assert_close(streamed[layer][0], mean, rtol=tolerance, atol=tolerance * mean.abs().max())
        torch.testing.assert_close(streamed[layer][1], var, rtol=tolerance, atol=tolerance * var.abs().max())
    chunks = -(-images // chunk)
    assert len(passes) == chunks * len(one_pass)  # one pass over the chunks per BatchNorm layer


def test_a_dataset_within_one_chunk_takes_the_one_pass_rule():
    target = make_target("convnet3", in_channels=1, image_size=28)
    params = target.random_params(torch.Generator().manual_seed(2))
    x = torch.rand(20, 1, 28, 28)
    one_pass = target.forward(params, x)[1]
    assert all(torch.equal(a, b) for layer in one_pass
               for a, b in zip(one_pass[layer], target.dataset_stats(params, x, chunk=20)[layer]))


def test_prediction_streams_statistics_and_bounds_the_refinement(small_fashion, monkeypatch):
    net = pudnet.PudNet(pudnet.PudNetConfig(**{**MODEL.to_dict(), "refine_steps": 2, "sketch_support": True}))
    data = small_fashion.of_classes([6, 7, 8, 9])
    images = data.tensor()[::8]  # 100 images, 4 classes
    labels = torch.full((len(images),), -1)
    labels[:8] = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    # float32: the streamed and the one-pass statistics are compared to float32 rounding (bf16 autocast, the
    # default on a native-bf16 CPU, rounds them differently)
    whole_params, whole_stats = net.predict_params(images, labels, "fp32")

    monkeypatch.setattr(pudnet_module, "STATS_CHUNK", 30)
    params, stats = net.predict_params(images, labels, "fp32")
    for name in params:  # the sketch of 100 images is streamed too (chunks of 30)
        torch.testing.assert_close(params[name], whole_params[name], rtol=1e-4, atol=1e-5)
    for layer, (mean, var) in whole_stats.items():
        torch.testing.assert_close(stats[layer][0], mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stats[layer][1], var, rtol=1e-4, atol=1e-5)

    monkeypatch.setattr(pudnet_module, "STATS_IMAGES", 40)
    _, capped = net.predict_params(images, labels, "fp32")
    expected = net.target.dataset_stats(params, _at_most(40, images, labels)[0], chunk=30)
    assert all(torch.equal(a, b) for layer in capped for a, b in zip(capped[layer], expected[layer]))

    refined_on = []
    monkeypatch.setattr(pudnet_module, "refine", lambda target, p, x, y, how, **_: refined_on.append(y) or p)
    monkeypatch.setattr(pudnet_module, "REFINE_IMAGES", 20)
    net.predict_params(images, labels, "fp32")
    assert len(refined_on[0]) == 20 and int((refined_on[0] >= 0).sum()) == 8  # every labelled image kept


def test_the_subset_keeps_every_labelled_position_then_spaces_the_rest():
    known = torch.zeros(100, dtype=torch.bool)
    known[[3, 50, 97]] = True
    picks = _evenly_filled(known, 10)
    assert len(picks) == 10 and {3, 50, 97} <= set(picks.tolist())
    assert picks.tolist() == sorted(set(picks.tolist()))
    images, labels = torch.rand(8, 1, 4, 4), torch.arange(8)
    assert _at_most(10, images, labels) == (images, labels)  # a dataset that small is used whole
    few, few_labels = _at_most(5, images, torch.tensor([-1, 0, -1, -1, -1, 1, -1, -1]))
    assert few_labels.tolist().count(-1) == 3 and set(few_labels.tolist()) == {-1, 0, 1}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    pudnet.PudNet(MODEL).save_pretrained(path)
    return path


def test_predict_defaults_to_the_unseen_classes(checkpoint, tmp_path, capsys):
    out = tmp_path / "w.safetensors"
    assert main(["predict", "--checkpoint", str(checkpoint), "--split", "test", "--out", str(out), "--quiet"]) == 0
    assert "for 4000 images" in capsys.readouterr().out  # classes 6-9 of the test split, 1,000 each
    assert set(load_file(out)) >= {"conv1.weight", "bn1.running_mean"}


def test_predict_refuses_more_images_than_max_images(checkpoint, tmp_path, capsys):
    argv = ["predict", "--checkpoint", str(checkpoint), "--split", "test", "--classes", "all",
            "--max-images", "9999", "--out", str(tmp_path / "w.safetensors")]
    assert main(argv) == USAGE
    err = capsys.readouterr().err
    assert "10000 images exceed --max-images 9999" in err and err.count("\n") == 1
    assert not (tmp_path / "w.safetensors").exists()


def test_predict_classes_must_be_ids_or_all(capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "--classes", "everything", "--out", "w.safetensors"])
    assert info.value.code == USAGE and "class ids" in capsys.readouterr().err


def test_streamed_sketch_features_equal_one_pass():
    from pudnet.model.sketch import SketchEncoder

    encoder = SketchEncoder(1, width=8, sketch_dim=16).eval()
    images = torch.rand(50, 1, 28, 28)
    with torch.no_grad():
        whole = encoder.per_image(images.unsqueeze(0))[0]
    torch.testing.assert_close(encoder.streamed_per_image(images, 16), whole, rtol=1e-4, atol=1e-5)


def test_a_large_prediction_sketches_in_chunks(small_fashion, monkeypatch):
    net = pudnet.PudNet(pudnet.PudNetConfig(**{**MODEL.to_dict(), "sketch_images": 0}))
    images = small_fashion.of_classes([6, 7, 8, 9]).tensor()[::8]
    whole = net.predict_weights(images)
    monkeypatch.setattr(pudnet_module, "STATS_CHUNK", 30)
    chunked = net.predict_weights(images)
    for name, value in whole.items():
        torch.testing.assert_close(chunked[name], value, rtol=1e-4, atol=1e-5)
