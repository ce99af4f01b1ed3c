"""Denoising: the noise model, the blind-spot mask, the metrics, training (resumable) and the CLI's errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pudnet.cli import main
from pudnet.data.store import ImageStore
from pudnet.denoise import DenoiseConfig, load_unet, meta_train, pretrain_unet
from pudnet.evaluate_denoise import summarise
from pudnet.model.pudnet import PudNet
from pudnet.tasks.denoising import add_noise, blind_spot, blind_spot_loss, psnr, ssim


def test_noise_is_added_in_0_255_units_and_clipped():
    grey = torch.full((4, 1, 32, 32), 0.5)
    noisy = add_noise(grey, 25.0, torch.Generator().manual_seed(0))
    assert abs(float((noisy - grey).std()) * 255 - 25.0) < 1.0  # mid-grey: no clipping to speak of
    black = add_noise(torch.zeros(2, 1, 16, 16), 25.0, torch.Generator().manual_seed(0))
    assert float(black.min()) == 0.0 and float((black == 0).float().mean()) > 0.45  # half the noise clipped
    assert torch.equal(add_noise(grey, 0.0), grey)
    with pytest.raises(ValueError, match="sigma must be ≥ 0"):
        add_noise(grey, -1.0)


def test_blind_spot_replaces_a_tenth_of_the_pixels_by_a_neighbour():
    image = torch.arange(2 * 20 * 20, dtype=torch.float32).view(2, 1, 20, 20)  # every value unique
    masked, mask = blind_spot(image, torch.Generator().manual_seed(0))
    assert 0.05 < float(mask.float().mean()) < 0.15
    assert torch.equal(masked[~mask.expand_as(image)], image[~mask.expand_as(image)])
    for n, _, i, j in mask.nonzero().tolist():
        source = int(masked[n, 0, i, j]) - n * 400
        si, sj = divmod(source, 20)
        assert (si, sj) != (i, j) and abs(si - i) <= 2 and abs(sj - j) <= 2
    assert float(blind_spot_loss(masked, image, mask)) > 0
    assert float(blind_spot_loss(image, image, mask)) == 0


def test_psnr_and_ssim_agree_with_their_definitions():
    clean = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.8
    shifted = clean + 0.1
    assert np.allclose(psnr(shifted, clean), 20 * math.log10(1 / 0.1))
    assert np.allclose(ssim(clean, clean), 1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(clean[:2], clean)


def test_bad_training_settings_are_named():
    with pytest.raises(ValueError, match="loss must be one of"):
        DenoiseConfig(loss="l2")
    with pytest.raises(ValueError, match="sigma must be in"):
        DenoiseConfig(sigma=300)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        DenoiseConfig(steps=0)


def _store() -> ImageStore:
    rng = np.random.default_rng(0)
    images = (rng.random((6 * 40, 1, 12, 12)) * 255).astype(np.uint8)
    return ImageStore(images, np.repeat(np.arange(6), 40), source="synthetic")


def _config(steps: int, **kw) -> DenoiseConfig:
    settings = dict(meta_batch=2, ways=2, per_class=4, width=4, validate_every=2, validation_collections=2)
    return DenoiseConfig(steps=steps, **{**settings, **kw})


def test_pretraining_and_meta_training_resume_bit_for_bit(tmp_path):
    store = _store()
    base = pretrain_unet(store, _config(4, meta_batch=1), tmp_path / "unet", progress=False)
    assert load_unet(base, width=4)(torch.rand(2, 1, 12, 12)).shape == (2, 1, 12, 12)
    overrides = dict(embedding_dim=8, sketch_width=4, sketch_dim=8, generator_hidden=4)
    straight = meta_train(store, _config(4), base, tmp_path / "straight", progress=False, **overrides)
    meta_train(store, _config(2), base, tmp_path / "halves", progress=False, **overrides)
    with pytest.raises(ValueError, match="settings that differ"):
        meta_train(store, _config(4, lr=0.1), base, tmp_path / "halves", resume=True, progress=False, **overrides)
    with pytest.raises(FileExistsError, match="pass --resume"):
        meta_train(store, _config(2), base, tmp_path / "halves", progress=False, **overrides)
    meta_train(store, _config(4), base, tmp_path / "halves", resume=True, progress=False, **overrides)  # 2 more
    last_a = PudNet.read_checkpoint(tmp_path / "straight" / "last.safetensors").model
    last_b = PudNet.read_checkpoint(tmp_path / "halves" / "last.safetensors").model
    for name in last_a:
        assert torch.allclose(last_a[name], last_b[name], atol=1e-6), name
    net = PudNet.from_pretrained(straight)
    noisy = add_noise(torch.rand(6, 1, 12, 12), 25.0)
    denoiser = net.predict(noisy)
    assert denoiser(noisy).shape == noisy.shape and not denoiser.training


@pytest.mark.parametrize("argv, message", [
    (["denoise", "--data", "no-such-thing", "--out", "{tmp}/o"], "neither an image folder nor"),
    (["eval", "--domain", "natural"], "--suite denoise"),
])
def test_cli_errors_are_one_line_with_usage_exit(argv, message, tmp_path, capsys):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_a_step_count_below_one(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train-denoiser", "--out", str(tmp_path), "--steps", "0"])
    assert info.value.code == 2 and "expected a positive integer, got '0'" in capsys.readouterr().err


def test_summary_pairs_methods_and_finds_the_cheapest_match():
    def scores(pudnet, pretrained, scratch):
        row = {name: {"psnr": 20.0, "ssim": 0.5, "seconds": 0.0} for name in
               ("noisy", "bm3d", "pretrained", "pretrained_collection_bn", "pudnet_foreign", "zs_n2n_45")}
        row["pudnet"] = {"psnr": pudnet, "ssim": 0.8, "seconds": 0.1}
        row["pretrained_collection_bn"] = {"psnr": pretrained, "ssim": 0.7, "seconds": 0.05}
        row["scratch_30ep"] = {"psnr": scratch, "ssim": 0.9, "seconds": 10.0}
        return row

    rows = [{"domain": "fashion", "index": i, "scores": scores(25.0 + i, 24.0 + i, 26.0 + i)} for i in range(3)]
    result = summarise(rows, {"domains": ["fashion"]})["domains"]["fashion"]
    assert result["paired_psnr"]["pudnet_minus_pretrained_collection_bn"] == {"mean_db": 1.0, "ci95_db": 0.0}
    assert result["speed_up"]["cheapest_matching"] == "scratch_30ep"
    assert math.isclose(result["speed_up"]["ratio"], 100.0)


def test_evaluation_collections_are_fixed_by_seed_and_noised_once():
    from pudnet.evaluate_denoise import COLLECTION, collections

    first, again = collections("mnist", 2, 25.0, 0), collections("mnist", 2, 25.0, 0)
    assert len(first) == 2 and first[0][0].shape == (COLLECTION, 1, 28, 28)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], first[1][0])  # different images per collection
    assert float(first[0][0].max()) > 0.5  # floats in [0, 1], not divided twice
    with pytest.raises(ValueError, match="unknown domain"):
        collections("cifar", 1, 25.0, 0)


def test_pudnet_scores_its_own_and_a_foreign_collection(tmp_path):
    from pudnet.evaluate_denoise import SCORED, score_pudnet

    torch.manual_seed(0)
    net = PudNet(_tiny_denoiser_config()).eval()
    clean = torch.rand(SCORED + 2, 1, 12, 12)
    noisy, foreign = add_noise(clean, 25.0), add_noise(torch.rand(SCORED + 2, 1, 12, 12), 25.0)
    scores = score_pudnet(net, clean, noisy, foreign)
    assert set(scores) == {"pudnet", "pudnet_foreign"} and scores["pudnet"]["seconds"] > 0
    assert all(math.isfinite(s["psnr"]) and 0 < s["ssim"] <= 1 for s in scores.values())


def _tiny_denoiser_config():
    from pudnet.denoise import model_config

    return model_config(_config(1), embedding_dim=8, sketch_width=4, sketch_dim=8, generator_hidden=4)


def test_cli_denoises_a_flat_folder_and_a_named_dataset(tmp_path, capsys):
    from PIL import Image

    torch.manual_seed(0)
    checkpoint = tmp_path / "den.safetensors"
    PudNet(_tiny_denoiser_config()).save_pretrained(checkpoint)
    folder = tmp_path / "noisy"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 24), dtype=np.uint8)).save(folder / f"{i}.png")
    assert main(["denoise", "--data", str(folder), "--out", str(tmp_path / "a"), "--checkpoint", str(checkpoint)]) == 0
    written = sorted((tmp_path / "a" / "denoised").iterdir())
    assert len(written) == 3 and Image.open(written[0]).size == (24, 20)
    assert main(["denoise", "--data", "mnist", "--limit", "4", "--out", str(tmp_path / "b"),
                 "--checkpoint", str(checkpoint)]) == 0
    assert "PSNR noisy" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "b").iterdir()} == {"clean", "noisy", "denoised"}
    assert main(["denoise", "--data", "mnist", "--out", str(tmp_path / "c"), "--checkpoint", "fashion-convnet3"]) == 2
    assert "not a denoiser" in capsys.readouterr().err
