"""Validated checkpoint configs: every field range- and type-checked at load, before any tensor is allocated."""

import json
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pudnet.checkpoint import CheckpointError
from pudnet.model.config import FLOAT_BOUNDS, INT_BOUNDS, PudNetConfig
from pudnet.model.pudnet import PudNet
from pudnet.model.serialise import expected_state
from pudnet.pretrained import path_of

SHIPPED = path_of("fashion-convnet3")
SECONDS = 10  # per case, generous for a shared CPU; the slowest normal case takes well under one


def shipped() -> tuple[dict, dict]:
    with safe_open(str(SHIPPED), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def cases() -> list[tuple[str, object]]:
    """(description, change of the config dict): each numeric field huge, negative, zero and NaN; each field
    of the wrong type; each key missing."""
    _, metadata = shipped()
    config = json.loads(metadata["config"])
    numeric = [(k,) for k in (*INT_BOUNDS, *FLOAT_BOUNDS)] + [("target_kwargs", k) for k in config["target_kwargs"]]
    found = []
    for key in numeric:
        for label, value in (("huge", 10**12), ("negative", -3), ("zero", 0), ("NaN", float("nan")),
                             ("string", "7"), ("null", None)):
            found.append((f"{'.'.join(key)}={label}", (key, value)))
    for key in config:
        if key not in INT_BOUNDS and key not in FLOAT_BOUNDS:
            found += [(f"{key}=int", ((key,), 7)), (f"{key}=string", ((key,), "x"))]
        found.append((f"{key} missing", ((key,), KeyError)))
    return found


def edited(config: dict, key: tuple, value) -> dict:
    config = json.loads(json.dumps(config))
    holder = config
    for part in key[:-1]:
        holder = holder[part]
    if value is KeyError:
        del holder[key[-1]]
    else:
        holder[key[-1]] = value
    return config


def test_every_single_field_edit_of_the_shipped_config_ends_in_a_clear_error_or_a_normal_result(
        tmp_path, small_fashion):
    tensors, metadata = shipped()
    config = json.loads(metadata["config"])
    data = small_fashion.of_classes([6, 7])
    images, support = data.subset(list(range(0, 400, 20))), data.labelled(per_class=3)
    outcomes, failures = {"error": 0, "normal": 0}, []
    for name, (key, value) in cases():
        path = tmp_path / "edited.safetensors"
        save_file(tensors, path, metadata={**metadata, "config": json.dumps(edited(config, key, value))})
        began = time.perf_counter()
        try:
            net = PudNet.from_pretrained(path)
            module = net.predict(images, support=support)
            assert torch.isfinite(module(images.tensor()[:4])).all()
            outcomes["normal"] += 1
        except CheckpointError as e:
            outcomes["error"] += 1
            if str(path) not in str(e):
                failures.append(f"{name}: the error does not name the file: {e}")
            elif key[-1] not in str(e) and "do not match the architecture" not in str(e):
                failures.append(f"{name}: the error names neither the field nor the tensors: {e}")
        except Exception as e:  # noqa: BLE001 — anything else is what this test exists to catch
            failures.append(f"{name}: {type(e).__name__}: {e}")
        if time.perf_counter() - began > SECONDS:
            failures.append(f"{name}: took {time.perf_counter() - began:.1f} s")
    assert not failures, "\n".join(failures)
    assert outcomes["error"] > 80 and outcomes["normal"] > 10, outcomes


def test_malformed_metadata_is_a_checkpoint_error_naming_the_file(tmp_path):
    path = tmp_path / "c.safetensors"
    tensors, metadata = shipped()
    for broken in ({"config": "{not json"}, {"config": "[1, 2]"}, {"config": None}, {"step": "{"}):
        meta = {**metadata, **{k: v for k, v in broken.items() if v is not None}}
        if broken.get("config", "") is None:
            del meta["config"]
        save_file(tensors, path, metadata=meta)
        with pytest.raises(CheckpointError, match=str(path)):
            PudNet.from_pretrained(path)


def test_config_fields_are_range_and_type_checked():
    with pytest.raises(ValueError, match=r"embedding_dim must be an integer in \[1, 8192\], got 0"):
        PudNetConfig(embedding_dim=0)
    with pytest.raises(ValueError, match=r"target_kwargs.width .* got 200000"):
        PudNetConfig(target_kwargs={"in_channels": 1, "image_size": 28, "width": 200000})
    with pytest.raises(ValueError, match="refine_steps must be an integer"):
        PudNetConfig(refine_steps=1e9)
    with pytest.raises(ValueError, match="alpha must be a number"):
        PudNetConfig(alpha=float("nan"))
    with pytest.raises(ValueError, match="use_ahru must be true or false"):
        PudNetConfig(use_ahru=1)
    with pytest.raises(ValueError, match="do not fit target 'resnet18'"):
        PudNetConfig(target="resnet18", target_kwargs={"width": 8})


def test_a_config_too_large_in_total_is_refused_without_allocating():
    config = PudNetConfig(target_kwargs={"in_channels": 1, "image_size": 1024, "width": 1024},
                          num_train_classes=100_000)
    began = time.perf_counter()
    with pytest.raises(CheckpointError, match="parameters"):
        expected_state(PudNet, config)
    assert time.perf_counter() - began < SECONDS
