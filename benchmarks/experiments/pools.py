"""The training-task pools the experiments probe, on the training images left after the validation hold-out
and with an episode seed no run trains with: "classes" = the six classes and their quarter turns (24),
"transformed" = the transformed pool (its classes kept 20° clear of the 45° validation turn)."""
from dataclasses import replace

from pudnet.data import datasets
from pudnet.data.store import with_rotated_classes
from pudnet.train import TrainConfig, Validator, holdout_split, task_stream

PROBE_SEED = 424242


def training_pools(seed: int = PROBE_SEED) -> dict:
    kept, _, _ = holdout_split(datasets.fashion_mnist("train"), [0, 1, 2, 3, 4, 5], 0.1)
    streams = {}
    for pool in ("classes", "transformed"):
        config = TrainConfig(task_pool=pool, validation_degrees=45, seed=seed)
        store, classes = (with_rotated_classes(kept, config.train_classes) if pool == "classes"
                          else (kept, config.train_classes))
        streams[pool] = task_stream(store, replace(config, train_classes=classes))
    return streams


def validation_evaluator(groups: int, degrees: float, seed: int, validation: str = "rotated-classes"):
    """(the meta-training images, the evaluator of ``validation`` — by default the rotated-class one — with
    ``groups`` groups): the groups a run of training seed ``seed`` validates on (pudnet.train.Validator)."""
    config = TrainConfig(validate_every=1, validation_groups=groups, validation_degrees=degrees, seed=seed,
                         validation=validation)
    kept, sketch, query = holdout_split(datasets.fashion_mnist("train"), config.train_classes,
                                        config.validation_fraction)
    return kept, Validator(sketch, query, config).evaluator
