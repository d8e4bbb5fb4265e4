"""End to end: CLEF pretraining on unlabelled images, then fine-tuning with stock nnU-Net, with real commands.

nnU-Net's pretraining route (documentation/pretraining_and_finetuning.md): plan the labelled
target dataset, transfer its plans to the pretraining dataset, pretrain there, fine-tune on the
target with ``-pretrained_weights``::

    nnunet_aux images-only -i 981 -o 982
    nnUNetv2_plan_and_preprocess -d 981 -c 3d_fullres --no_pp
    nnUNetv2_plan_and_preprocess -d 982 -c 3d_fullres --no_pp --verify_dataset_integrity
    nnUNetv2_move_plans_between_datasets -s 981 -t 982 -sp nnUNetPlans -tp nnUNetPlans_pretrain
    nnUNetv2_preprocess -d 981 -c 3d_fullres;  nnUNetv2_preprocess -d 982 -plans_name nnUNetPlans_pretrain -c 3d_fullres
    nnUNetv2_train 982 3d_fullres all -p nnUNetPlans_pretrain -tr nnUNetTrainerCLEFPretrain_smoke
    nnUNetv2_train 981 3d_fullres 0 -tr nnUNetTrainer_demo -pretrained_weights .../checkpoint_final.pth
    nnUNetv2_predict ... -d 981 -tr nnUNetTrainer_demo

``nnUNetTrainer_demo`` is stock ``nnUNetTrainer`` with a training length read from the environment
(``NNUNET_AUX_OUTCOME``, here 1 epoch of 2 iterations): nnU-Net's own short variants run 250
iterations per epoch.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nnunet_helpers import command, nnunet_env, run, shrink_plans, write_splits

pytestmark = pytest.mark.slow

TARGET, SOURCE = 981, 982
PLANS = "nnUNetPlans_pretrain"
CLEF = "nnUNetTrainerCLEFPretrain_smoke"
STOCK = "nnUNetTrainer_demo"  # stock nnUNetTrainer, training length from the environment


def run_together(commands, env, timeout=900):
    """Run independent commands at the same time (their start-up and I/O overlap); fail as ``run`` does."""
    procs = [subprocess.Popen([command(c[0]), *map(str, c[1:])], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace")
             for c in commands]
    outputs = [p.communicate(timeout=timeout) for p in procs]
    for c, p, (stdout, stderr) in zip(commands, procs, outputs):
        if p.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, c))} failed with exit code {p.returncode}:\n"
                                 f"{stdout[-4000:]}\n---stderr---\n{stderr[-6000:]}")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Target (labelled, scale-decomposed) and source (its images only) datasets; CLEF pretraining done."""
    from nnunet_aux.conversion import write_synthetic_dataset
    from nnunet_aux.demo.trainers import demo_trainer_path
    from nnunet_aux.training import trainer_path
    from nnunet_aux.training.schedule import schedule_environment

    root = tmp_path_factory.mktemp("clef")
    env = nnunet_env(root, OMP_NUM_THREADS="1", nnUNet_def_n_proc="1",
                     nnUNet_extTrainer=os.pathsep.join((trainer_path(), demo_trainer_path())))
    env.update(schedule_environment({"num_epochs": 1, "num_iterations_per_epoch": 2,
                                     "num_val_iterations_per_epoch": 1}))
    target_raw = write_synthetic_dataset(TARGET, n_train=4, n_test=1, shape=(32, 48, 48), spacing=(1.5, 1.0, 1.0),
                                         seed=5, raw_root=env["nnUNet_raw"], true_scales=True, progress=False)
    out = run(["nnunet_aux", "images-only", "-i", TARGET, "-o", SOURCE, "-np", "1", "--no-progress"], env)
    source_raw = Path(out.stdout.strip().splitlines()[-1])
    # fingerprints and plans of both; nnU-Net's integrity check passes on the images-only dataset
    run_together([["nnUNetv2_plan_and_preprocess", "-d", TARGET, "-c", "3d_fullres", "--no_pp", "-npfp", "1"],
                  ["nnUNetv2_plan_and_preprocess", "-d", SOURCE, "-c", "3d_fullres", "--no_pp", "-npfp", "1",
                   "--verify_dataset_integrity"]], env)
    target_pre = Path(env["nnUNet_preprocessed"]) / target_raw.name
    plans = shrink_plans(target_pre)
    (target_pre / "nnUNetPlans.json").write_text(json.dumps(plans, indent=1))
    cases = sorted(p.name[:-len(".nii.gz")] for p in (target_raw / "labelsTr").glob("*.nii.gz"))
    write_splits(target_pre, cases[:-1], cases[-1:])  # nnU-Net's final validation predicts one case
    run(["nnUNetv2_move_plans_between_datasets", "-s", TARGET, "-t", SOURCE, "-sp", "nnUNetPlans", "-tp", PLANS], env)
    run_together([["nnUNetv2_preprocess", "-d", TARGET, "-c", "3d_fullres", "-np", "1"],
                  ["nnUNetv2_preprocess", "-d", SOURCE, "-plans_name", PLANS, "-c", "3d_fullres", "-np", "1"]], env)
    train = run(["nnUNetv2_train", SOURCE, "3d_fullres", "all", "-p", PLANS, "-tr", CLEF, "-device", "cpu"], env)
    folder = Path(env["nnUNet_results"]) / source_raw.name / f"{CLEF}__{PLANS}__3d_fullres"
    checkpoint = folder / "fold_all" / "checkpoint_final.pth"
    return {"env": env, "target_raw": target_raw, "source_raw": source_raw, "target_pre": target_pre,
            "source_pre": Path(env["nnUNet_preprocessed"]) / source_raw.name, "folder": folder,
            "checkpoint_path": checkpoint, "stdout": train.stdout,
            "checkpoint": torch.load(checkpoint, map_location="cpu", weights_only=False)}


@pytest.fixture
def nnunet_paths(pretrained, monkeypatch):
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_compile"):
        monkeypatch.setenv(k, pretrained["env"][k])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    return pretrained


def test_images_only_dataset_and_transferred_plans(pretrained):
    source = pretrained["source_raw"]
    dataset_json = json.loads((source / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["labels"] == {"background": 0, "image": 1} and dataset_json["numTraining"] == 4
    for label_file in (source / "labelsTr").glob("*.nii.gz"):
        label = sitk.ReadImage(str(label_file))
        image = sitk.ReadImage(str(source / "imagesTr" / label_file.name.replace(".nii.gz", "_0000.nii.gz")))
        assert np.all(sitk.GetArrayFromImage(label) == 1) and label.GetSpacing() == image.GetSpacing()
    # the pretraining runs on the target's (shrunk) plan: the network fine-tuning builds
    moved = json.loads((pretrained["source_pre"] / f"{PLANS}.json").read_text(encoding="utf-8"))
    target = json.loads((pretrained["target_pre"] / "nnUNetPlans.json").read_text(encoding="utf-8"))
    for key in ("architecture", "patch_size", "spacing", "normalization_schemes"):
        assert moved["configurations"]["3d_fullres"][key] == target["configurations"]["3d_fullres"][key]
    assert moved["foreground_intensity_properties_per_channel"] == target["foreground_intensity_properties_per_channel"]
    assert moved["configurations"]["3d_fullres"]["data_identifier"] == f"{PLANS}_3d_fullres"


def test_pretraining_writes_a_stock_checkpoint_losses_settings_and_progress(pretrained):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    ckpt = pretrained["checkpoint"]
    plans = json.loads((pretrained["target_pre"] / "nnUNetPlans.json").read_text(encoding="utf-8"))
    cm = PlansManager(plans).get_configuration("3d_fullres")
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 1, 3, deep_supervision=False)
    stock = net.state_dict()
    assert set(ckpt["network_weights"]) == set(stock)
    assert all(ckpt["network_weights"][k].shape == v.shape for k, v in stock.items() if ".seg_layers." not in k)
    aux = ckpt["aux_state"]
    assert set(aux["hyperparameters"]) == {"clef"} and aux["hyperparameters"]["clef"]["spacing_mm"] == [1.5, 1.0, 1.0]
    assert aux["task_weights"] and all(k.startswith("clef.head.") for k in aux["task_weights"])
    for term in ("decoding", "discriminative", "equivariance"):
        for split in ("train", "val"):
            values = ckpt["logging"][f"{split}_loss_{term}"]
            assert len(values) == 1 and np.all(np.isfinite(values)), (split, term, values)
    fold = pretrained["folder"] / "fold_all"
    log = next(fold.glob("training_log_*.txt")).read_text(encoding="utf-8")
    assert "nnunet_aux settings" in log and '"margin": -0.9' in log and "loss terms (train / val)" in log
    assert "final validation is skipped" in log and not (fold / "validation").exists()
    assert (fold / "checkpoint_best.pth").is_file()
    progress = sitk.ReadImage(str(fold / "progress.png"))
    assert progress.GetSize()[1] == 5400  # nnU-Net's own three panels (54 in at 100 dpi), untouched
    loss_terms = sitk.ReadImage(str(fold / "progress_aux.png"))  # the loss terms, in a file of their own
    assert 0 < loss_terms.GetSize()[1] < loss_terms.GetSize()[0]


def test_stock_nnunet_fine_tunes_from_the_checkpoint_and_predicts(pretrained, tmp_path):
    env = pretrained["env"]
    out = run(["nnUNetv2_train", TARGET, "3d_fullres", "0", "-tr", STOCK, "-pretrained_weights",
               pretrained["checkpoint_path"], "-device", "cpu"], env)
    assert "Loading pretrained weights from file" in out.stdout
    results = Path(env["nnUNet_results"]) / pretrained["target_raw"].name / f"{STOCK}__nnUNetPlans__3d_fullres"
    assert (results / "fold_0" / "checkpoint_final.pth").is_file()
    run(["nnUNetv2_predict", "-i", pretrained["target_raw"] / "imagesTs", "-o", tmp_path / "pred", "-d", TARGET,
         "-c", "3d_fullres", "-f", "0", "-tr", STOCK, "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"],
        env)
    image = next((pretrained["target_raw"] / "imagesTs").glob("*.nii.gz"))
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(next((tmp_path / "pred").glob("*.nii.gz")))))
    assert pred.shape == sitk.GetArrayFromImage(sitk.ReadImage(str(image))).shape
    assert set(np.unique(pred)) <= {0, 1, 4}  # vessel written as 1, tumour as 4 (regions_class_order)


def test_every_trainer_of_the_package_loads_the_checkpoint_as_pretrained_weights(nnunet_paths):
    """What ``nnUNetv2_train TARGET 3d_fullres 0 -tr <trainer> -pretrained_weights ...`` does before training."""
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    from nnunet_aux.training.trainers import __all__ as names

    weights = nnunet_paths["checkpoint"]["network_weights"]
    trainers = ["nnUNetTrainer"] + [n for n in names if "_" not in n]
    assert "nnUNetTrainerScaleContrastive" in trainers and "nnUNetTrainerVoxelSimSiam" in trainers
    for name in trainers:
        trainer = get_trainer_from_args(str(TARGET), "3d_fullres", 0, name, device=torch.device("cpu"))
        maybe_load_checkpoint(trainer, False, False, str(nnunet_paths["checkpoint_path"]))
        for k, v in trainer.network.state_dict().items():
            if ".seg_layers." not in k:
                torch.testing.assert_close(v, weights[k], rtol=0, atol=0, msg=f"{name}: {k}")


def test_pretraining_resumes_with_c(pretrained):
    """``--c`` in a new process restores the heads, their optimizer state and the logs (nothing left to train)."""
    before = pretrained["checkpoint"]
    run(["nnUNetv2_train", SOURCE, "3d_fullres", "all", "-p", PLANS, "-tr", CLEF, "-device", "cpu", "--c"],
        pretrained["env"])
    after = torch.load(pretrained["checkpoint_path"], map_location="cpu", weights_only=False)
    assert after["current_epoch"] == before["current_epoch"] == 1
    for k, v in before["aux_state"]["task_weights"].items():
        torch.testing.assert_close(after["aux_state"]["task_weights"][k], v, rtol=0, atol=0)
    for k, v in before["network_weights"].items():
        torch.testing.assert_close(after["network_weights"][k], v, rtol=0, atol=0)
    assert after["logging"]["train_loss_equivariance"] == before["logging"]["train_loss_equivariance"]
    saved, restored = before["optimizer_state"], after["optimizer_state"]
    assert len(restored["param_groups"]) == 2 and restored["state"].keys() == saved["state"].keys()
    for i, state in saved["state"].items():
        torch.testing.assert_close(restored["state"][i]["momentum_buffer"], state["momentum_buffer"], rtol=0, atol=0)
