"""End to end (issue 12): stock nnU-Net trains on an MSD-style conversion with a tumour, and its own
validation summary (fold_0/validation/summary.json) agrees with ``nnunet_aux evaluate`` on the same files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunet_helpers import nnunet_env, run, shrink_plans, write_splits

pytestmark = pytest.mark.slow

DATASET_ID = 941
#: stock nnUNetTrainer, shortened as the package's _smoke variants (1 epoch, 5 + 2 iterations)
STOCK_SMOKE = '''
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_smoke(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 5
        self.num_val_iterations_per_epoch = 2
'''


def msd_task(root: Path, n_cases: int = 3) -> Path:
    """Task08_HepaticVessel layout: vessel tubes (1) and a tumour (2), CT-like intensities."""
    from nnunet_aux.synthetic import generate_case

    task = root / "Task08_HepaticVessel"
    for sub in ("imagesTr", "labelsTr"):
        (task / sub).mkdir(parents=True)
    for i in range(n_cases):
        case = generate_case((24, 40, 40), (1.5, 1.0, 1.0), seed=10 + i, n_scales=3, tumours=True)
        label = np.zeros(case.mask.shape, np.uint8)
        label[case.tumour] = 2
        label[case.mask] = 1
        for array, folder in ((case.image.astype(np.float32), "imagesTr"), (label, "labelsTr")):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((1.0, 1.0, 1.5))
            sitk.WriteImage(image, str(task / folder / f"hepaticvessel_{i:03d}.nii.gz"), useCompression=True)
    (task / "dataset.json").write_text(json.dumps({
        "name": "HepaticVessel", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "Vessel", "2": "Tumour"},
        "numTraining": n_cases, "numTest": 0}))
    return task


def test_nnunet_validation_summary_agrees_with_nnunet_aux_evaluate(tmp_path):
    env = nnunet_env(tmp_path / "nnunet")
    trainers = tmp_path / "trainers"
    trainers.mkdir()
    (trainers / "stock_smoke.py").write_text(STOCK_SMOKE, encoding="utf-8")
    env["nnUNet_extTrainer"] = str(trainers)
    task = msd_task(tmp_path)
    run(["nnunet_aux", "convert", "msd-hepaticvessel", "-i", task, "-d", DATASET_ID, "-np", "1", "--no-progress"], env)
    raw = Path(env["nnUNet_raw"]) / f"Dataset{DATASET_ID}_MSDHepaticVessel"
    dataset_json = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["labels"] == {"background": 0, "vessel": [1, 2, 3], "tumour": 4}
    assert dataset_json["regions_class_order"] == [1, 4]

    run(["nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "3d_fullres", "-np", "1", "-npfp", "1",
         "--verify_dataset_integrity"], env)
    pre = Path(env["nnUNet_preprocessed"]) / raw.name
    shrink_plans(pre)
    cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
    write_splits(pre, cases[:-1], cases[-1:])
    # augmentation in the main process: a tiny run is dominated by start-up costs (planning needs >= 1)
    run(["nnUNetv2_train", DATASET_ID, "3d_fullres", "0", "-tr", "nnUNetTrainer_smoke", "-device", "cpu"],
        {**env, "nnUNet_n_proc_DA": "0"})

    validation = (Path(env["nnUNet_results"]) / raw.name / "nnUNetTrainer_smoke__nnUNetPlans__3d_fullres" / "fold_0"
                  / "validation")
    theirs = json.loads((validation / "summary.json").read_text(encoding="utf-8"))
    reference = tmp_path / "reference"  # the validation case's ground truth only
    reference.mkdir()
    for case in cases[-1:]:
        os.link(pre / "gt_segmentations" / f"{case}.nii.gz", reference / f"{case}.nii.gz")
    run(["nnunet_aux", "evaluate", "-ref", reference, "-pred", validation, "--dataset-json", raw / "dataset.json",
         "-o", tmp_path / "ours.json", "-np", "1", "--no-progress"], env)
    ours = json.loads((tmp_path / "ours.json").read_text(encoding="utf-8"))

    keys = {"vessel": "(1, 2, 3)", "tumour": "4"}
    assert len(theirs["metric_per_case"]) == len(ours["metric_per_case"]) == 1
    for their_case, our_case in zip(theirs["metric_per_case"], ours["metric_per_case"]):
        assert Path(their_case["prediction_file"]).name == Path(our_case["prediction_file"]).name
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(their_case["prediction_file"]))
        assert set(np.unique(prediction).tolist()) <= {0, 1, 4}
        for name, key in keys.items():
            their_metrics, our_metrics = their_case["metrics"][key], our_case["metrics"][name]
            assert our_metrics["n_ref"] == their_metrics["n_ref"]
            assert our_metrics["n_pred"] == their_metrics["n_pred"]
            if not math.isnan(their_metrics["Dice"]):  # nnU-Net: NaN when both are empty, ours 1
                assert our_metrics["dice"] == pytest.approx(their_metrics["Dice"], abs=1e-9), name
