"""End to end: nnUNetv2_train -> nnUNetv2_predict with the classification and SimSiam trainers; parity with
stock nnU-Net, resume, the pre-training phases.

One smoke training per trainer (the machine is small); every check on a trainer uses that run. The
combinations with the scale trainer (ScaleContrastiveSimSiam, ScaleContrastiveCls) train, predict and
resume in tests/test_config_matrix.py, with both plans and both configurations.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunet_helpers import run

pytestmark = pytest.mark.slow

_TRAINED = {}


def train(dataset, trainer):
    """Train ``trainer`` once per session through nnU-Net's own command; return its folders."""
    if trainer not in _TRAINED:
        run(["nnUNetv2_train", dataset["id"], "3d_fullres", "0", "-tr", trainer, "-device", "cpu"], dataset["env"])
        folder = dataset["results"] / f"{trainer}__nnUNetPlans__3d_fullres"
        _TRAINED[trainer] = {"folder": folder, "fold": folder / "fold_0", "trainer": trainer,
                             "checkpoint": torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                                                      weights_only=False)}
    return _TRAINED[trainer]


def stock_network_keys(folder):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cm = PlansManager(json.loads((folder / "plans.json").read_text(encoding="utf-8"))).get_configuration("3d_fullres")
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 1, 1, deep_supervision=False)
    return set(net.state_dict())


def predict(dataset, trainer, out, env=None):
    run(["nnUNetv2_predict", "-i", dataset["raw"] / "imagesTs", "-o", out, "-d", dataset["id"], "-c", "3d_fullres",
         "-f", "0", "-tr", trainer, "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"],
        env or dataset["env"])
    return sitk.GetArrayFromImage(sitk.ReadImage(str(next(out.glob("*.nii.gz")))))


def check_common(dataset, trained, tasks, terms, tmp_path):
    """Stock network keys, settings saved, loss terms logged and finite, nnUNetv2_predict works."""
    ckpt = trained["checkpoint"]
    assert set(ckpt["network_weights"]) == stock_network_keys(trained["folder"])
    aux = ckpt["aux_state"]
    assert set(aux["hyperparameters"]) == set(tasks)
    assert not any("encoder" in k for k in aux["task_weights"])  # the shared encoder is not copied
    log = next(trained["fold"].glob("training_log_*.txt")).read_text(encoding="utf-8")
    assert "nnunet_aux settings" in log
    for term in terms:
        for split in ("train", "val"):
            values = ckpt["logging"][f"{split}_loss_{term}"]
            assert values and all(np.isfinite(values)), (split, term, values)
    pred = predict(dataset, trained["trainer"], tmp_path / "pred")
    image = sitk.ReadImage(str(next((dataset["raw"] / "imagesTs").glob("*.nii.gz"))))
    assert pred.shape == sitk.GetArrayFromImage(image).shape
    assert set(np.unique(pred)) <= {0, 1, 4}  # vessel (1) and tumour (4), each inside its region
    return pred


def check_resume(dataset, trained):
    """--c: a fresh trainer restores the heads (and their optimizer group) from the checkpoint."""
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(dataset["id"]), "3d_fullres", 0, trained["trainer"], device=torch.device("cpu"))
    trainer.initialize()
    before = {k: v.clone() for k, v in trainer.aux_tasks.state_dict().items()}
    trainer.load_checkpoint(str(trained["fold"] / "checkpoint_final.pth"))
    after = trainer.aux_tasks.state_dict()
    saved = trained["checkpoint"]["aux_state"]["task_weights"]
    assert set(after) == set(saved)
    for k, v in saved.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    assert len(trainer.optimizer.state_dict()["param_groups"]) == 2
    return trainer


def test_cls_trainer_trains_predicts_like_stock_and_resumes(scale_dataset, nnunet_paths, tmp_path):
    trained = train(scale_dataset, "nnUNetTrainerClsAux_smoke")
    pred = check_common(scale_dataset, trained, ["cls"], ["main", "cls"], tmp_path)
    hp = trained["checkpoint"]["aux_state"]["hyperparameters"]["cls"]
    assert hp["structures"] == ["vessel", "tumour"] and hp["labels"] is None  # regions of the data contract
    assert (hp["focal_alpha"], hp["focal_gamma"], hp["weight"], hp["presence_threshold"]) == (0.8, 2.0, 1.0, 1)
    assert any(k.startswith("cls.head.fc.") for k in trained["checkpoint"]["aux_state"]["task_weights"])
    # presence accuracy and AUROC of the validation iterations
    logging = trained["checkpoint"]["logging"]
    assert len(logging["val_cls_accuracy"]) == 1 and 0 <= logging["val_cls_accuracy"][0] <= 1
    assert len(logging["val_cls_auroc"]) == 1  # NaN when every validation patch holds a vessel
    log = next(trained["fold"].glob("training_log_*.txt")).read_text(encoding="utf-8")
    assert "presence classification (val): accuracy" in log

    # parity: the same checkpoint, handed to stock nnU-Net as an nnUNetTrainer checkpoint, predicts the same
    stock = scale_dataset["results"] / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    shutil.rmtree(stock, ignore_errors=True)
    (stock / "fold_0").mkdir(parents=True)
    for f in ("plans.json", "dataset.json"):
        shutil.copy(trained["folder"] / f, stock / f)
    ckpt = dict(trained["checkpoint"], trainer_name="nnUNetTrainer")
    del ckpt["aux_state"]
    torch.save(ckpt, stock / "fold_0" / "checkpoint_final.pth")
    stock_env = {k: v for k, v in scale_dataset["env"].items() if k != "nnUNet_extTrainer"}
    np.testing.assert_array_equal(pred, predict(scale_dataset, "nnUNetTrainer", tmp_path / "stock", stock_env))

    trainer = check_resume(scale_dataset, trained)
    assert trainer.current_epoch == 1


def test_voxel_simsiam_trainer_trains_predicts_and_resumes(scale_dataset, nnunet_paths, tmp_path):
    trained = train(scale_dataset, "nnUNetTrainerVoxelSimSiam_smoke")
    check_common(scale_dataset, trained, ["simsiam"], ["main", "simsiam"], tmp_path)
    aux = trained["checkpoint"]["aux_state"]
    hp = aux["hyperparameters"]["simsiam"]
    assert (hp["n_layers"], hp["weight"], hp["hidden_channels"], hp["max_voxels"], hp["max_false_negatives"]) == \
        (3, 10.0, 64, 1700, 1000)
    plans = json.loads((trained["folder"] / "plans.json").read_text(encoding="utf-8"))
    n_stages = len(plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"])
    assert hp["stages"] == list(range(n_stages - 3, n_stages))
    for layer in range(3):
        assert any(k.startswith(f"simsiam.heads.{layer}.prediction.") for k in aux["task_weights"])
    check_resume(scale_dataset, trained)


def _synthetic_batch(trainer):
    """One batch of region targets as nnU-Net's loader gives it: a vessel block in sample 0, none in sample 1."""
    patch = list(trainer.configuration_manager.patch_size)
    torch.manual_seed(0)
    data = torch.randn(2, 1, *patch)
    seg = torch.zeros(2, len(trainer.label_manager.foreground_regions), *patch)
    seg[0, 0, 4:12, 8:24, 8:24] = 1
    targets = []
    for scale in trainer._get_deep_supervision_scales():
        shape = [round(p * s) for p, s in zip(patch, scale)]
        targets.append(torch.nn.functional.interpolate(seg, size=shape, mode="nearest-exact"))
    return {"data": data, "target": targets}


def test_pretraining_trains_the_encoder_on_classification_then_the_network_on_segmentation(scale_dataset,
                                                                                            nnunet_paths):
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(scale_dataset["id"]), "3d_fullres", 0, "nnUNetTrainerClsAuxPretrain_smoke",
                                    device=torch.device("cpu"))
    assert (trainer.num_epochs, trainer.cls_pretrain_epochs, trainer.cls_focal_alpha) == (2, 1, 0.5)
    trainer.initialize()
    assert trainer.pretrain_epochs == 1
    net = trainer.network
    parts = {"encoder": net.encoder, "decoder": torch.nn.ModuleList([net.decoder.stages, net.decoder.transpconvs,
                                                                     net.decoder.seg_layers]),
             "cls": trainer.aux_tasks["cls"]}
    batch = _synthetic_batch(trainer)

    def step(epoch):
        trainer.current_epoch = epoch
        trainer.on_train_epoch_start()
        before = {name: [p.detach().clone() for p in m.parameters()] for name, m in parts.items()}
        out = trainer.train_step(batch)
        changed = {name: any(not torch.equal(b, p) for b, p in zip(before[name], m.parameters()))
                   for name, m in parts.items()}
        return out, changed

    out, changed = step(0)  # phase 1: classification alone, decoder untouched
    assert changed == {"encoder": True, "decoder": False, "cls": True}
    assert out["loss"] == pytest.approx(float(out["loss_cls"]))  # L_seg has weight 0 (its value is still logged)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(trainer.initial_lr)

    out, changed = step(1)  # phase 2: segmentation alone, schedule restarted, momentum reset
    assert changed == {"encoder": True, "decoder": True, "cls": False}
    assert out["loss"] == pytest.approx(float(out["loss_main"]))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(trainer.initial_lr)
    aux_params = set(map(id, trainer.aux_tasks.parameters()))
    assert not any(id(p) in aux_params for p in trainer.optimizer.state)  # no momentum from phase 1 left
