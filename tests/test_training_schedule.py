"""The one override of a training's length (NNUNET_AUX_OUTCOME) and the one documented way (variant names)."""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import pytest

from nnunet_aux.errors import InputError
from nnunet_aux.training.schedule import (
    SCHEDULE_ENV_VAR,
    ScheduleFromEnvironment,
    apply_schedule,
    check_schedule,
    read_schedule,
    schedule_environment,
)


class FakeTrainer:
    """nnU-Net's constructor signature and length attributes, nothing else."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: str = "cuda"):
        self.device = device
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 1000, 250, 50


class FakeTrainer_override(ScheduleFromEnvironment, FakeTrainer):
    pass


def test_read_schedule_round_trip():
    schedule = {"num_epochs": 3, "num_iterations_per_epoch": 7, "num_val_iterations_per_epoch": 1, "save_every": 1}
    assert read_schedule(schedule_environment(schedule)) == schedule
    assert read_schedule({}) == {} and read_schedule({SCHEDULE_ENV_VAR: "  "}) == {}


@pytest.mark.parametrize("text, message", [
    ("{", "not JSON"),
    ("[1]", "JSON object"),
    ('{"learning_rate": 1}', "unknown keys"),
    ('{"seed": 1}', "outcome trainers only"),
    ('{"num_epochs": 0}', "positive integer"),
    ('{"num_epochs": 2.5}', "positive integer"),
    ('{"num_epochs": true}', "positive integer"),
])
def test_bad_schedules_are_refused(text, message):
    with pytest.raises(InputError, match=message):
        read_schedule({SCHEDULE_ENV_VAR: text})


def test_apply_schedule_sets_attributes():
    trainer = FakeTrainer({}, "3d_fullres", 0, {})
    apply_schedule(trainer, {"num_epochs": 2})
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch) == (2, 250)
    with pytest.raises(InputError):
        check_schedule({"num_epochs": -1})


def test_mixin_reads_the_environment_after_the_base(monkeypatch):
    monkeypatch.setenv(SCHEDULE_ENV_VAR, json.dumps({"num_epochs": 3, "num_iterations_per_epoch": 4}))
    trainer = FakeTrainer_override({}, "3d_fullres", 0, {})
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (3, 4, 50)
    assert trainer.device == "cuda" and FakeTrainer_override({}, "2d", 0, {}, device="cpu").device == "cpu"
    monkeypatch.delenv(SCHEDULE_ENV_VAR)
    assert FakeTrainer_override({}, "3d_fullres", 0, {}).num_epochs == 1000  # unset: the base's length


def test_mixin_keeps_nnunet_constructor_parameter_names():
    """nnU-Net stores ``__init__``'s arguments by the subclass's parameter names (``my_init_kwargs``)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_aux.demo.trainers import nnUNetTrainer_demo

    names = list(inspect.signature(nnUNetTrainer.__init__).parameters)
    assert list(inspect.signature(ScheduleFromEnvironment.__init__).parameters) == names
    assert list(inspect.signature(nnUNetTrainer_demo.__init__).parameters) == names


def test_epoch_variants_are_the_documented_way():
    from nnunet_aux.training import trainers
    from nnunet_aux.training.variants import EPOCH_VARIANTS, SMOKE_SETTINGS

    assert EPOCH_VARIANTS == (5, 10, 20, 50, 100, 250, 500, 750, 2000)  # nnU-Net's training_length variants
    assert SMOKE_SETTINGS == {"num_epochs": 1, "num_iterations_per_epoch": 5, "num_val_iterations_per_epoch": 2}
    for base in ("nnUNetTrainerScaleContrastive", "nnUNetTrainerSkeletonRecall"):
        assert f"{base}_smoke" in trainers.__all__
        assert all(f"{base}_{n}epochs" in trainers.__all__ for n in EPOCH_VARIANTS)
    # no trainer users name with -tr reads the override
    assert not any(issubclass(getattr(trainers, name), ScheduleFromEnvironment) for name in trainers.__all__)


def test_benchmarks_read_the_same_override():
    """benchmarks/outcome_trainers keeps its own reader: the same variable and keys (no import, it builds trainers)."""
    from nnunet_aux.training.schedule import BENCHMARK_KEYS, SCHEDULE_KEYS

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "outcome_trainers" / "nnunet_aux_outcome_trainers.py"
    constants = {node.targets[0].id: ast.literal_eval(node.value)
                 for node in ast.parse(path.read_text(encoding="utf-8")).body
                 if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                 and node.targets[0].id in ("ENV_VAR", "SCHEDULE_KEYS")}
    assert constants == {"ENV_VAR": SCHEDULE_ENV_VAR, "SCHEDULE_KEYS": SCHEDULE_KEYS}
    assert all(f'"{key}"' in path.read_text(encoding="utf-8") for key in BENCHMARK_KEYS)
