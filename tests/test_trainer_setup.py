"""Trainer construction: clear errors on datasets without scales, settings, variants, trainer search."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.slow  # needs the shared planned dataset


def plans_and_dataset(ds):
    plans = json.loads((ds["preprocessed"] / "nnUNetPlans.json").read_text(encoding="utf-8"))
    plans["continue_training"] = False  # nnU-Net 2.8's run_training adds this key before constructing a trainer
    dataset_json = json.loads((ds["preprocessed"] / "dataset.json").read_text(encoding="utf-8"))
    return plans, dataset_json


def test_dataset_without_scales_says_how_to_make_one(nnunet_paths):
    from nnunet_aux.errors import InputError
    from nnunet_aux.training.trainers import nnUNetTrainerScaleContrastive

    plans, dataset_json = plans_and_dataset(nnunet_paths)
    del dataset_json["scales"]
    with pytest.raises(InputError, match="nnunet_aux decompose"):
        nnUNetTrainerScaleContrastive(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))


def test_settings_are_attributes_and_reach_the_task(nnunet_paths):
    from nnunet_aux.training.trainers import nnUNetTrainerScaleContrastive

    plans, dataset_json = plans_and_dataset(nnunet_paths)
    trainer = nnUNetTrainerScaleContrastive(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))
    trainer.contrastive_temperature = 0.5
    trainer.contrastive_voxels_per_scale = 100
    trainer.scale_loss_weights = (1.0, 1.0, 1.0)
    trainer.initialize()
    hp = trainer.aux_hyperparameters()["scale"]
    assert hp["temperature"] == 0.5 and hp["voxels_per_scale"] == 100 and hp["scale_weights"] == [1, 1, 1]
    # heads are in the optimizer (second parameter group), and the inference network is stock
    assert len(trainer.optimizer.param_groups) == 2
    assert trainer.training_model.network is trainer.network
    assert not any(k.startswith("tasks.") for k in trainer.network.state_dict())


def test_nnunet_finds_every_trainer_and_variant(nnunet_paths):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    for name in ("nnUNetTrainerScaleAux", "nnUNetTrainerScaleContrastive", "nnUNetTrainerScaleContrastive_smoke",
                 "nnUNetTrainerScaleAux_100epochs"):
        cls = recursive_find_trainer_class_by_name(name)
        assert cls.__name__ == name
    smoke = recursive_find_trainer_class_by_name("nnUNetTrainerScaleAux_smoke")
    plans, dataset_json = plans_and_dataset(nnunet_paths)
    t = smoke(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))
    assert (t.num_epochs, t.num_iterations_per_epoch, t.num_val_iterations_per_epoch) == (1, 5, 2)
    assert t.contrastive_weight == 0.0
