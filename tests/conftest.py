"""Shared fixtures and the per-test time limits.

Fixtures: one tiny synthetic scale-decomposed dataset, planned and preprocessed once
(``scale_dataset``, ``nnunet_paths``), and the small datasets of the bad-input tests
(``msd_dataset``: an MSD task converted; ``eval_folders``: reference and prediction folders).

Time limits (pytest-timeout): ``timeout = 120`` in setup.cfg's ``[tool:pytest]`` is every
test's limit; tests marked ``slow`` (they run nnU-Net, or several processes) get
``SLOW_TIMEOUT_S`` instead, unless they carry their own ``@pytest.mark.timeout``. An explicit
``--timeout`` or ``PYTEST_TIMEOUT`` applies to every test as given (``--timeout 0``: none).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from nnunet_helpers import nnunet_env, run, shrink_plans, write_splits

SCALE_DATASET_ID = 990
#: limit of a test marked slow, fixture set-up included (the first test of a session-scoped
#: planned dataset pays its planning and preprocessing)
SLOW_TIMEOUT_S = 900


def pytest_collection_modifyitems(config, items):
    """Give tests marked ``slow`` a 15-minute limit instead of the 2-minute default of setup.cfg."""
    if config.getoption("timeout", None) is not None or os.environ.get("PYTEST_TIMEOUT"):
        return  # the user's limit holds for every test
    for item in items:
        if item.get_closest_marker("slow") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


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


@pytest.fixture
def msd_dataset(tmp_path, monkeypatch):
    """An MSD-style task converted to Dataset508 (2 scales, vessel + tumour), nnU-Net paths set.

    Returns a dict: the MSD task folder ``task``, the raw root ``raw``, the converted dataset
    ``folder`` and ``tmp`` (whose ``pre`` and ``res`` are nnU-Net's preprocessed and results folders).
    """
    from test_bad_input import make_msd

    from nnunet_aux.conversion import DecompositionSettings, convert_msd_hepaticvessel

    raw = tmp_path / "raw"
    for k, v in (("nnUNet_raw", raw), ("nnUNet_preprocessed", tmp_path / "pre"), ("nnUNet_results", tmp_path / "res")):
        monkeypatch.setenv(k, str(v))
    task = make_msd(tmp_path)
    out = convert_msd_hepaticvessel(task, 508, settings=DecompositionSettings(2, thresholds="fixed",
                                                                            fixed_radii_mm=(2.0,)),
                                    raw_root=raw, progress=False)
    return {"task": task, "raw": raw, "folder": out, "tmp": tmp_path}


@pytest.fixture
def eval_folders(tmp_path):
    """Reference and prediction folders of two identical MSD-valued label maps, and a dataset.json.

    Returns ``(ref, pred, dataset_json)``: ``tmp_path/ref`` and ``tmp_path/pred`` hold
    ``case0.nii.gz`` and ``case1.nii.gz`` (vessel 1, tumour 2); the dataset.json declaring
    them lies in ``tmp_path/dataset``, not beside ``ref``, so that ``evaluate`` finds it only
    when given ``--dataset-json``. Function-scoped: the tests truncate, replace and write into
    these files (four 16x24x24 images take milliseconds to write).
    """
    from test_bad_input import msd_label, write

    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for i in range(2):
        write(msd_label(), ref / f"case{i}.nii.gz")
        write(msd_label(), pred / f"case{i}.nii.gz")
    dataset_json = tmp_path / "dataset" / "dataset.json"
    dataset_json.parent.mkdir()
    dataset_json.write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "vessel": 1, "tumour": 2}, "numTraining": 2,
        "file_ending": ".nii.gz"}), encoding="utf-8")
    return ref, pred, dataset_json
