"""Shared fixtures: one tiny synthetic scale-decomposed dataset, planned and preprocessed once."""

from __future__ import annotations

from pathlib import Path

import pytest
from nnunet_helpers import nnunet_env, run, shrink_plans, write_splits

SCALE_DATASET_ID = 990


@pytest.fixture(scope="session")
def nnunet_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("nnunet")


@pytest.fixture(scope="session")
def scale_dataset(nnunet_root):
    """Dataset990: 4 training + 1 test case of 32x48x48 voxels, planned, preprocessed, CPU-sized plan.

    Returns a dict with the environment for nnU-Net commands and the dataset's folders.
    The split is fixed (3 training cases, 1 validation case) so that nnU-Net's final
    validation predicts a single case.
    """
    from nnunet_aux.conversion import write_synthetic_dataset

    env = nnunet_env(nnunet_root)
    raw = write_synthetic_dataset(SCALE_DATASET_ID, n_train=4, n_test=1, shape=(32, 48, 48),
                                  spacing=(1.5, 1.0, 1.0), seed=3, raw_root=env["nnUNet_raw"],
                                  true_scales=True, progress=False)
    run(["nnUNetv2_plan_and_preprocess", "-d", SCALE_DATASET_ID, "-c", "3d_fullres", "-np", "1",
         "--verify_dataset_integrity"], env)
    pre = Path(env["nnUNet_preprocessed"]) / raw.name
    shrink_plans(pre)
    cases = sorted(p.name[:-len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))
    write_splits(pre, cases[:-1], cases[-1:])
    return {"env": env, "id": SCALE_DATASET_ID, "raw": raw, "preprocessed": pre,
            "results": Path(env["nnUNet_results"]) / raw.name, "cases": cases}


@pytest.fixture
def nnunet_paths(scale_dataset, monkeypatch):
    """Point this process's nnU-Net environment variables at the shared test folders."""
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_compile"):
        monkeypatch.setenv(k, scale_dataset["env"][k])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    return scale_dataset
