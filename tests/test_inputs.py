"""predict takes what users have: ImageStores, tensors, numpy arrays, folders; support as (images, labels),
counted once when drawn from the dataset; bad input gets an error naming the problem."""

import numpy as np
import pytest
import torch
from PIL import Image

import pudnet
from pudnet.data.episodes import EpisodeStream
from pudnet.data.inputs import images_of, labelled_of, with_support
from pudnet.data.sampler import EpisodeSpec
from pudnet.evaluate import EvalConfig, Evaluator

LABELLED = pudnet.PudNetConfig(embedding_dim=16, generator_hidden=4, sketch_width=4, sketch_dim=8,
                               sketch_support=True, target_kwargs={"in_channels": 1, "image_size": 28, "width": 8})


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return pudnet.PudNet(LABELLED).eval()


@pytest.fixture
def data(small_fashion):
    return small_fashion.of_classes([1, 8]).subset(np.arange(60))


def weights_of(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_every_kind_of_dataset_gives_the_same_prediction(net, data, tmp_path):
    support = data.labelled(per_class=5)
    reference = weights_of(net.predict(data, support=support))
    for kind in (data.images, torch.from_numpy(data.images), data.tensor(), data.tensor().numpy()):
        assert_same(weights_of(net.predict(kind, support=support)), reference)
    as_tuple = (support.images, support.labels + 100)  # any integer class ids
    assert_same(weights_of(net.predict(data, support=as_tuple)), reference)


def test_a_folder_is_read_at_the_targets_size(net, data, tmp_path):
    for i, (image, label) in enumerate(zip(data.images, data.labels)):
        folder = tmp_path / f"class{label}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(image[0]).save(folder / f"{i}.png")
    support = data.labelled(per_class=5)
    from_folder = net.predict(str(tmp_path), support=support)
    assert_same(weights_of(from_folder), weights_of(net.predict(pudnet.datasets.image_folder(tmp_path),
                                                                support=support)))


def test_support_drawn_from_the_dataset_is_counted_once(data):
    images = data.tensor()
    support, labels = labelled_of(data.labelled(per_class=5), 1, 28)
    merged, merged_labels = with_support(images, support, labels)
    assert torch.equal(merged, images)  # nothing appended
    assert (merged_labels >= 0).sum() == 10 and merged_labels.max() == 1
    outside = torch.rand(3, 1, 28, 28)
    merged, merged_labels = with_support(images, outside, torch.tensor([0, 1, 1]))
    assert len(merged) == len(images) + 3 and merged_labels[-3:].tolist() == [0, 1, 1]
    assert (merged_labels[:-3] == -1).all()


def test_the_evaluator_predicts_through_the_public_path_with_the_same_labels(small_fashion, net):
    spec = EpisodeSpec(ways=3, sketch=20, support=4, query=5)
    tasks = EpisodeStream(small_fashion, [6, 7, 8], spec, seed=1).batch([0])
    dataset = tasks.sketch[0]
    images, labels = net.labelled_dataset(dataset, (dataset[tasks.support_positions], tasks.labels("support")))
    assert torch.equal(images, dataset) and torch.equal(labels, tasks.sketch_labels[0])
    result = Evaluator(small_fashion, small_fashion, EvalConfig(groups=1, sketch=20, query=5)).run(net, progress=False)
    assert result["accuracy"]["pudnet"]["mean"] > 0


@pytest.mark.parametrize("bad, error, message", [
    (np.zeros((4, 1, 28, 28), dtype=np.int32), TypeError, "uint8 or floats"),
    (np.full((4, 1, 28, 28), 255.0, dtype=np.float32), ValueError, "divide 0–255 values by 255"),
    (np.zeros((4, 28, 28), dtype=np.uint8), ValueError, r"\[N, 1, H, W\]"),
    ([[0, 1]], TypeError, "expected an ImageStore, an image folder"),
])
def test_bad_datasets_are_named(bad, error, message):
    with pytest.raises(error, match=message):
        images_of(bad, 1, 28)


def test_bad_support_is_named(net, data):
    with pytest.raises(ValueError, match="needs labelled samples .*pretrained_names"):
        net.predict(data)
    with pytest.raises(ValueError, match="needs at least 2 classes"):
        net.predict(data, support=(data.images[:4], [3, 3, 3, 3]))
    with pytest.raises(ValueError, match="one integer label per image"):
        net.predict(data, support=(data.images[:4], [0.5, 1, 0, 1]))
    with pytest.raises(TypeError, match=r"\(images, labels\)"):
        net.predict(data, support=[data.images[:4]])


def test_pretrained_names_say_which_need_labels():
    needing, not_needing = pudnet.pretrained_names(needs_labels=True), pudnet.pretrained_names(needs_labels=False)
    assert "fashion-convnet3" in needing and "fashion-unet-denoise" in not_needing
    assert sorted(needing + not_needing) == pudnet.pretrained_names()
