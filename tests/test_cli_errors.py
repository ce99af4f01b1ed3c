"""Clear errors at the surface: argparse types, one-line messages, distinct exit codes, API input checks."""

import numpy as np
import pytest
import torch
from PIL import Image

import pudnet
from pudnet.cli import DATA, INTERNAL, USAGE, main
from test_train import MODEL


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "refining.safetensors"
    pudnet.PudNet(pudnet.PudNetConfig(**{**MODEL.to_dict(), "refine_steps": 2})).save_pretrained(path)
    return path


def usage_error(argv, capsys, message: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == USAGE
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["train", "--out", "run", "--steps", "0"], "--steps: expected a positive integer, got '0'"),
    (["train", "--out", "run", "--meta-batch", "0"], "--meta-batch: expected a positive integer"),
    (["train", "--out", "run", "--checkpoint-every", "0"], "--checkpoint-every: expected a positive integer"),
    (["train", "--out", "run", "--threads", "-1"], "--threads: expected a positive integer, got '-1'"),
    (["train", "--out", "run", "--lr", "nan"], "--lr: expected a positive number"),
    (["eval", "--groups", "0"], "--groups: expected a positive integer"),
    (["bench", "predict", "--repeats", "0"], "--repeats: expected a positive integer"),
    (["predict", "--out", "out.safetensors", "--threads", "-1"], "--threads: expected a positive integer"),
    (["data", "--folder", "/no/such/folder"], "no such folder"),
])
def test_bad_arguments_are_usage_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    usage_error(argv, capsys, message)
    assert not (tmp_path / "run").exists()  # train --steps 0 announces and writes nothing


def test_predict_out_must_not_be_an_existing_folder(tmp_path, capsys):
    usage_error(["predict", "--out", str(tmp_path)], capsys, "is a folder")


def test_train_out_must_not_be_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    usage_error(["train", "--out", str(tmp_path / "file")], capsys, "is not a folder")


def test_invalid_model_json_is_a_usage_error(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--model", '{"embedding_dim": 0}']) == USAGE
    assert "embedding_dim must be an integer" in capsys.readouterr().err


def test_an_internal_error_is_one_line_with_a_hint(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("something inside\nmore lines")

    monkeypatch.setattr("pudnet.cli.cmd_data", broken)
    assert main(["data"]) == INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: something inside" in err
    assert "PUDNET_TRACEBACK=1" in err


def test_a_native_panic_is_an_internal_error_not_a_traceback(monkeypatch, capsys):
    class PanicException(BaseException):  # what pyo3 raises for a panic of the native core
        pass

    def panicking(args):
        raise PanicException("gather: internal error in pudnet._native (a bug, please report it): boom")

    monkeypatch.setattr("pudnet.cli.cmd_data", panicking)
    assert main(["data"]) == INTERNAL
    assert "internal error: PanicException: gather: internal error in pudnet._native" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "exit codes: 0 success; 2 usage error" in out and "3 data or checkpoint error" in out
    assert "4 internal error" in out


def test_wrong_channel_count_is_refused_before_any_computation(checkpoint, small_fashion):
    net = pudnet.PudNet.from_pretrained(str(checkpoint))
    rgb = pudnet.ImageStore(np.repeat(small_fashion.images[:20], 3, axis=1), small_fashion.labels[:20])
    with pytest.raises(ValueError, match=r"images must be \[N, 1, H, W\].*got \[20, 3, 28, 28\]"):
        net.predict(rgb, support=small_fashion.labelled(per_class=2))
    with pytest.raises(ValueError, match=r"images must be \[N, 1, H, W\]"):
        net.predict(small_fashion, support=rgb)
    with pytest.raises(ValueError, match=r"images must be \[N, 1, H, W\]"):
        net.predict_weights(torch.rand(2, 1, 28))


def test_a_tensor_as_support_is_a_clear_type_error(checkpoint, small_fashion):
    net = pudnet.PudNet.from_pretrained(str(checkpoint))
    with pytest.raises(TypeError, match=r"support must be an ImageStore .* or \(images, labels\), got Tensor"):
        net.predict(small_fashion, support=small_fashion.labelled(per_class=2).tensor())


def test_one_class_support_needs_at_least_2_classes(checkpoint, small_fashion, tmp_path, capsys):
    net = pudnet.PudNet.from_pretrained(str(checkpoint))
    one = small_fashion.of_classes([3])
    with pytest.raises(ValueError, match="needs at least 2 classes"):
        net.predict(one, support=one.labelled(per_class=2))
    folder = tmp_path / "images" / "shirts"
    folder.mkdir(parents=True)
    for i, image in enumerate(one.images[:12]):
        Image.fromarray(image[0]).save(folder / f"{i}.png")
    code = main(["predict", "--checkpoint", str(checkpoint), "--folder", str(tmp_path / "images"),
                 "--out", str(tmp_path / "w.safetensors")])
    assert code == DATA
    err = capsys.readouterr().err
    assert "needs at least 2 classes" in err and err.count("\n") == 1
