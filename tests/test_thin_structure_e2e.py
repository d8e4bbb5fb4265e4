"""End to end: nnUNetv2_train -> nnUNetv2_predict with nnUNetTrainerSkeletonRecall; parity with stock, resume.

The skeleton targets are made in nnU-Net's augmentation worker process (``nnUNet_n_proc_DA=1``),
as in real training. One smoke training per trainer (the machine is small): Skeleton Recall and cbDice; soft-clDice
and the composition with the scale trainer are covered in-process by the configuration matrix.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from test_cls_simsiam_e2e import predict, stock_network_keys, train

pytestmark = pytest.mark.slow


def test_skeleton_recall_trains_predicts_like_stock_and_resumes(scale_dataset, nnunet_paths, tmp_path):
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    trained = train(scale_dataset, "nnUNetTrainerSkeletonRecall_smoke")
    ckpt = trained["checkpoint"]
    assert set(ckpt["network_weights"]) == stock_network_keys(trained["folder"])
    hp = ckpt["aux_state"]["hyperparameters"]
    assert set(hp) == {"skeleton_recall"} and ckpt["aux_state"]["task_weights"] == {}
    settings = hp["skeleton_recall"]
    assert (settings["weight"], settings["tube_radius"], settings["smooth"]) == (1.0, 2, 1e-5)
    for split in ("train", "val"):
        values = ckpt["logging"][f"{split}_loss_skeleton_recall"]
        assert values and all(0 <= v <= 1 for v in values), (split, values)
    log = next(trained["fold"].glob("training_log_*.txt")).read_text(encoding="utf-8")
    assert "nnunet_aux settings" in log and "skeleton_recall" in log

    pred = predict(scale_dataset, trained["trainer"], tmp_path / "pred")
    image = sitk.ReadImage(str(next((scale_dataset["raw"] / "imagesTs").glob("*.nii.gz"))))
    assert pred.shape == sitk.GetArrayFromImage(image).shape
    dataset_json = json.loads((trained["folder"] / "dataset.json").read_text(encoding="utf-8"))
    assert set(np.unique(pred).tolist()) <= {0, *dataset_json["regions_class_order"]}

    # parity: the checkpoint handed to stock nnU-Net as an nnUNetTrainer checkpoint predicts the same
    stock = scale_dataset["results"] / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.rmtree(stock, ignore_errors=True)
    (stock / "fold_0").mkdir(parents=True)
    for f in ("plans.json", "dataset.json"):
        shutil.copy(trained["folder"] / f, stock / f)
    stock_ckpt = dict(ckpt, trainer_name="nnUNetTrainer")
    del stock_ckpt["aux_state"]
    torch.save(stock_ckpt, stock / "fold_0" / "checkpoint_final.pth")
    stock_env = {k: v for k, v in scale_dataset["env"].items() if k != "nnUNet_extTrainer"}
    np.testing.assert_array_equal(pred, predict(scale_dataset, "nnUNetTrainer", tmp_path / "stock", stock_env))

    # --c: what nnUNetv2_train does with it (network, optimizer, epoch and logs restored)
    fresh = get_trainer_from_args(str(scale_dataset["id"]), "3d_fullres", 0, trained["trainer"],
                                  continue_training=True, device=torch.device("cpu"))
    maybe_load_checkpoint(fresh, True, False, None)
    assert fresh.current_epoch == ckpt["current_epoch"] == 1
    for k, v in ckpt["network_weights"].items():
        torch.testing.assert_close(fresh.network.state_dict()[k], v, rtol=0, atol=0)
    assert fresh.optimizer.state_dict()["state"].keys() == ckpt["optimizer_state"]["state"].keys()
    assert fresh._target_layout.n_aux == 2  # the skeletons of the vessel and tumour regions


def test_cbdice_trains_and_predicts_through_stock_commands(scale_dataset, nnunet_paths, tmp_path):
    """nnUNetv2_train / nnUNetv2_predict with nnUNetTrainerCbDice on the region dataset: stock network_weights,
    the cbDice term and the CE weight 2 in the log, predictions with nnU-Net's region values."""
    trained = train(scale_dataset, "nnUNetTrainerCbDice_smoke")
    ckpt = trained["checkpoint"]
    assert set(ckpt["network_weights"]) == stock_network_keys(trained["folder"])
    settings = ckpt["aux_state"]["hyperparameters"]["cbdice"]
    assert (settings["weight"], settings["ce_weight"], settings["iterations"], settings["smooth"]) == \
        (1.0, 2.0, 10, 1e-3)
    assert ckpt["aux_state"]["task_weights"] == {}
    for split in ("train", "val"):
        values = ckpt["logging"][f"{split}_loss_cbdice"]
        assert values and all(np.isfinite(v) and v <= 1 for v in values), (split, values)
    pred = predict(scale_dataset, trained["trainer"], tmp_path / "pred")
    image = sitk.ReadImage(str(next((scale_dataset["raw"] / "imagesTs").glob("*.nii.gz"))))
    assert pred.shape == sitk.GetArrayFromImage(image).shape
    dataset_json = json.loads((trained["folder"] / "dataset.json").read_text(encoding="utf-8"))
    assert set(np.unique(pred).tolist()) <= {0, *dataset_json["regions_class_order"]}
