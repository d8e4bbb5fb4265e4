"""End to end: nnUNetv2_train -> nnUNetv2_predict with the scale trainers, parity with stock, resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunet_helpers import run

pytestmark = pytest.mark.slow

TRAINER = "nnUNetTrainerScaleContrastive_smoke"


@pytest.fixture(scope="module")
def trained(scale_dataset):
    """Train the smoke trainer through nnU-Net's own command, once for this module."""
    env = scale_dataset["env"]
    run(["nnUNetv2_train", scale_dataset["id"], "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"], env)
    folder = scale_dataset["results"] / f"{TRAINER}__nnUNetPlans__3d_fullres"
    return {**scale_dataset, "folder": folder, "fold": folder / "fold_0"}


def _stock_network(trained):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(json.loads((trained["folder"] / "plans.json").read_text(encoding="utf-8")))
    cm = plans.get_configuration("3d_fullres")
    return get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                  cm.network_arch_init_kwargs_req_import, 1, 2, deep_supervision=False)


def test_checkpoint_holds_exactly_the_stock_network(trained):
    ckpt = torch.load(trained["fold"] / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    stock_keys = set(_stock_network(trained).state_dict())
    assert set(ckpt["network_weights"]) == stock_keys
    aux = ckpt["aux_state"]
    assert aux["hyperparameters"]["scale"]["contrastive_weight"] == pytest.approx(0.53)
    assert aux["hyperparameters"]["scale"]["temperature"] == pytest.approx(0.94)
    assert aux["hyperparameters"]["scale"]["scale_weights"] == pytest.approx([0.78, 0.48, 0.54])
    assert aux["target_regions"] == [[1], [2], [3]]
    # three decoders and three projection heads, none of the encoder's weights
    keys = aux["task_weights"].keys()
    assert any(k.startswith("scale.decoders.2.") for k in keys)
    assert any(k.startswith("scale.projections.2.") for k in keys)
    assert not any("encoder" in k for k in keys)


def test_log_and_progress_show_the_auxiliary_losses(trained):
    log = next(trained["fold"].glob("training_log_*.txt")).read_text(encoding="utf-8")
    for term in ("main", "scale_small", "scale_medium", "scale_large", "contrastive"):
        assert term in log
    assert '"contrastive_weight": 0.53' in log
    ckpt = torch.load(trained["fold"] / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    logging = ckpt["logging"]
    for key in ("train_loss_contrastive", "val_loss_contrastive", "train_loss_scale_small"):
        assert len(logging[key]) == 1 and np.isfinite(logging[key][0])
    height = sitk.ReadImage(str(trained["fold"] / "progress.png")).GetSize()[1]
    assert height == 5400  # nnU-Net's own three panels, untouched
    width, height = sitk.ReadImage(str(trained["fold"] / "progress_aux.png")).GetSize()  # the loss terms
    assert 0 < height < width


def test_predict_and_parity_with_stock_nnunet(trained, tmp_path):
    env = trained["env"]
    out_aux = tmp_path / "aux"
    run(["nnUNetv2_predict", "-i", trained["raw"] / "imagesTs", "-o", out_aux, "-d", trained["id"],
         "-c", "3d_fullres", "-f", "0", "-tr", TRAINER, "-device", "cpu", "--disable_tta", "-npp", "1",
         "-nps", "1"], env)
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(next(out_aux.glob("*.nii.gz")))))
    assert set(np.unique(pred)) <= {0, 1, 4}  # vessel written as 1, tumour as 4 (regions_class_order)

    # the same checkpoint, handed to stock nnU-Net as an nnUNetTrainer checkpoint
    stock = trained["results"] / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.rmtree(stock, ignore_errors=True)
    (stock / "fold_0").mkdir(parents=True)
    for f in ("plans.json", "dataset.json"):
        shutil.copy(trained["folder"] / f, stock / f)
    ckpt = torch.load(trained["fold"] / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    ckpt["trainer_name"] = "nnUNetTrainer"
    del ckpt["aux_state"]
    torch.save(ckpt, stock / "fold_0" / "checkpoint_final.pth")
    out_stock = tmp_path / "stock"
    stock_env = {k: v for k, v in env.items() if k != "nnUNet_extTrainer"}
    run(["nnUNetv2_predict", "-i", trained["raw"] / "imagesTs", "-o", out_stock, "-d", trained["id"],
         "-c", "3d_fullres", "-f", "0", "-tr", "nnUNetTrainer", "-device", "cpu", "--disable_tta", "-npp", "1",
         "-nps", "1", "--save_probabilities"], stock_env)
    stock_pred = sitk.GetArrayFromImage(sitk.ReadImage(str(next(out_stock.glob("*.nii.gz")))))
    np.testing.assert_array_equal(pred, stock_pred)


def test_resume_restores_heads_and_optimizer(trained, nnunet_paths):
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(trained["id"]), "3d_fullres", 0, TRAINER, device=torch.device("cpu"))
    trainer.initialize()
    before = {k: v.clone() for k, v in trainer.aux_tasks.state_dict().items()}
    ckpt_file = trained["fold"] / "checkpoint_final.pth"
    trainer.load_checkpoint(str(ckpt_file))
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    after = trainer.aux_tasks.state_dict()
    for k, v in ckpt["aux_state"]["task_weights"].items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    # momentum buffers of the auxiliary parameter group are back too
    state = trainer.optimizer.state_dict()
    assert len(state["param_groups"]) == 2
    aux_ids = state["param_groups"][1]["params"]
    saved = ckpt["optimizer_state"]["state"]
    restored = [i for i in aux_ids if i in saved]
    assert len(restored) > len(aux_ids) // 2
    for i in restored:
        torch.testing.assert_close(state["state"][i]["momentum_buffer"], saved[i]["momentum_buffer"])
    assert trainer.current_epoch == 1
