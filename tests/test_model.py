import pytest
import torch

from pudnet.data.episodes import EpisodeStream
from pudnet.data.sampler import EpisodeSpec
from pudnet.model.losses import meta_batch_losses
from pudnet.model.config import PudNetConfig
from pudnet.model.pudnet import PudNet

SPEC = EpisodeSpec(ways=3, sketch=8, support=3, query=4)


def tiny(**overrides) -> PudNet:
    base = dict(embedding_dim=24, generator_hidden=8, sketch_width=8, sketch_dim=16,
                target_kwargs={"in_channels": 1, "image_size": 28, "width": 8})
    return PudNet(PudNetConfig(**{**base, **overrides}))


def tasks(store, n=2, seed=0):
    return EpisodeStream(store, [0, 1, 2, 3, 4, 5], SPEC, seed).batch(list(range(n)))


def global_ids():
    ids = torch.full((10,), -1)
    ids[:6] = torch.arange(6)
    return ids


def test_weights_have_exact_shapes_per_dataset(small_fashion):
    net = tiny()
    batch = tasks(small_fashion, n=3)
    weights = net(batch.sketch)
    assert [tuple(w.shape[1:]) for w in weights] == [s.shape for s in net.specs]
    assert all(w.shape[0] == 3 and torch.isfinite(w).all() for w in weights)


def test_sketches_of_different_datasets_differ(small_fashion):
    """Guards the constant-sketch pitfall: BatchNorm right before the dataset mean."""
    net = tiny()
    shirts_bags = small_fashion.of_classes([6, 8]).tensor()[:32]
    trousers = small_fashion.of_classes([1]).tensor()[:32]
    sketches = net.sketch(torch.stack([shirts_bags, trousers]))
    gap = (sketches[0] - sketches[1]).norm() / sketches.norm(dim=1).mean()
    assert gap > 0.05
    weights = net(torch.stack([shirts_bags, trousers]))
    assert not torch.allclose(weights[0][0], weights[0][1])


def test_sketch_does_not_depend_on_other_datasets_in_the_meta_batch(small_fashion):
    net = tiny()
    batch = tasks(small_fashion, n=2)
    together = net.sketch(batch.sketch)
    alone = net.sketch(batch.sketch[:1])
    torch.testing.assert_close(together[:1], alone, rtol=1e-5, atol=1e-6)


def test_generated_matrices_are_well_conditioned(small_fashion):
    net = tiny()
    weights = net(tasks(small_fashion).sketch)
    for spec, w in zip(net.specs, weights):
        if spec.is_matrix:
            std = w[0].std().item()
            assert abs(std / (2.0 / spec.fan_in) ** 0.5 - 1) < 0.05, spec.name
        elif spec.kind == "bn_weight":
            assert (w - 1).abs().max() < 1.0


@pytest.mark.parametrize(
    "overrides",
    [{}, {"use_ahru": False}, {"loss": "metric"}, {"loss": "no_kl"}, {"weight_mode": "residual"}, {"weight_mode": "frozen_base"},
     {"sketch_support": True}, {"weight_mode": "frozen_base", "generator_rank": 2}],
    ids=["paper", "no-ahru", "metric-only", "no-kl", "residual", "frozen-base", "sketch-support", "low-rank"],
)
def test_every_variant_trains_end_to_end(small_fashion, overrides):
    net = tiny(**overrides)
    batch = tasks(small_fashion)
    result = meta_batch_losses(net, batch, global_ids())
    result.loss.backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert torch.isfinite(result.loss)
    assert grads["embed.weight"] is not None and grads["embed.weight"].abs().sum() > 0
    if overrides.get("loss") == "metric":
        assert result.full.item() == 0 and grads["head.weight"] is None
    if overrides.get("loss") in ("metric", "no_kl"):
        assert result.kl.item() == 0
    if overrides.get("use_ahru") is False:
        assert net.ahru is None
    else:
        assert grads["ahru.w_h"].abs().sum() > 0


def test_low_rank_generators_make_matrices_of_that_rank_from_far_fewer_numbers(small_fashion):
    def generator_numbers(**config):
        with torch.device("meta"):
            return sum(p.numel() for p in PudNet(PudNetConfig(target="resnet18", **config)).generators.parameters())

    assert generator_numbers(generator_rank=1) < 0.05 * generator_numbers()
    rank = 2
    low = tiny(generator_rank=rank)
    weights = low(tasks(small_fashion).sketch)
    for spec, w in zip(low.specs, weights):
        assert w.shape[1:] == spec.shape
        if spec.is_matrix:  # standardised: U V minus its mean, so at most rank + 1
            assert torch.linalg.matrix_rank(w[0].reshape(spec.shape[0], -1)) <= rank + 1, spec.name
            assert abs(w[0].std().item() / (2.0 / spec.fan_in) ** 0.5 - 1) < 0.05, spec.name
    sketches = tasks(small_fashion, seed=1).sketch
    assert not torch.allclose(weights[0][0], low(sketches)[0][0])  # still conditioned on the dataset


def test_sketch_support_needs_labels(small_fashion):
    net = tiny(sketch_support=True)
    with pytest.raises(ValueError, match="labelled"):
        net(tasks(small_fashion).sketch)
    images = small_fashion.of_classes([6, 7]).tensor()[:16]
    with pytest.raises(ValueError, match="labelled"):
        net.predict_weights(images, torch.full((16,), -1))


def test_predict_rejects_wrong_channels_and_tiny_datasets():
    net = tiny()
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        net.predict(torch.rand(10, 3, 28, 28))
    with pytest.raises(ValueError, match="at least 2"):
        net.predict(torch.rand(1, 1, 28, 28))


def test_predicted_module_reproduces_functional_forward(small_fashion):
    net = tiny().eval()
    data = small_fashion.of_classes([6, 7, 8, 9])
    images = data.tensor()[:64]
    params, stats = net.predict_params(images)
    module = net.target.to_module(params, stats)
    query = small_fashion.of_classes([6]).tensor()[-16:]
    expected, _ = net.target.forward(params, query, stats)
    torch.testing.assert_close(module(query), expected, rtol=1e-5, atol=1e-5)
    # the module's BatchNorm statistics are the dataset's, not the queries'
    torch.testing.assert_close(module.bn1.running_mean, stats["bn1"][0])


def test_bf16_prediction_matches_float32(small_fashion):
    net = tiny(weight_mode="residual").eval()
    images = small_fashion.of_classes([6, 7, 8, 9]).tensor()[:64]
    fast, exact = net.predict_weights(images, precision="bf16"), net.predict_weights(images, precision="fp32")
    for spec in net.specs:
        assert fast[spec.name].dtype == torch.float32
        error = (fast[spec.name] - exact[spec.name]).norm() / exact[spec.name].norm()
        assert error < 0.02, spec.name


def test_cached_low_precision_generators_follow_parameter_updates(small_fashion):
    net = tiny().eval()
    images = small_fashion.of_classes([6, 7]).tensor()[:32]
    before = net.predict_weights(images, precision="bf16")  # the cache holds bf16 copies under autocast
    with torch.no_grad():
        for group in net.generators.groups.values():
            for w in group.out_w:
                w.mul_(-1.0)
    after = net.predict_weights(images, precision="bf16")
    for spec in net.specs:
        if spec.is_matrix:  # the output projection's sign flips the standardised matrix
            torch.testing.assert_close(after[spec.name], -before[spec.name], rtol=0, atol=1e-6)


def test_unknown_config_keys_are_rejected():
    with pytest.raises(ValueError, match="unknown"):
        PudNetConfig.from_dict({"embedding": 3})
    with pytest.raises(ValueError, match="weight_mode"):
        PudNetConfig(weight_mode="magic")


def test_presets_name_the_paper_and_the_shipped_configuration():
    assert PudNetConfig.preset("paper") == PudNetConfig()
    assert PudNetConfig.preset("residual-prototypes").weight_mode == "residual"
    shipped = PudNetConfig.preset("frozen-base-prototypes")
    assert shipped.weight_mode == "frozen_base" and shipped.sketch_support
    net = PudNet.from_pretrained("fashion-convnet3")
    assert net.config == PudNetConfig.preset("frozen-base-prototypes-refined", num_train_classes=24)
    assert net.config.refine_steps == 10 and net.config.refinement.last == 3
    with pytest.raises(ValueError, match="unknown PudNet preset"):
        PudNetConfig.preset("best")


def test_sketch_of_a_large_dataset_uses_every_labelled_image_and_an_even_spread_of_the_rest(small_fashion):
    net = tiny(sketch_support=True, sketch_images=20).eval()
    images = small_fashion.of_classes([6, 7]).tensor()[:50]
    labels = torch.full((50,), -1)
    labels[[3, 30, 31, 49]] = torch.tensor([0, 1, 1, 0])
    picked, picked_labels = net._sketch_subset(images.unsqueeze(0), labels.unsqueeze(0))
    assert picked.shape[1] == 20 and (picked_labels >= 0).sum() == 4
    positions = [i for i in range(50) if any(torch.equal(images[i], p) for p in picked[0])]
    assert len(positions) == 20 and {3, 30, 31, 49} <= set(positions) and positions[0] == 0
    torch.testing.assert_close(net.embedding(images.unsqueeze(0), labels.unsqueeze(0)),
                               net.embedding(picked, picked_labels))
    small = images[:20].unsqueeze(0)  # no larger than the cap: untouched
    assert net._sketch_subset(small, None)[0] is small
