"""The experiment runner (``nnunet_aux experiment``): table building, fold states, evaluation
cache, the runner on pre-made folds, and one end-to-end run of real nnU-Net trainings."""

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_aux.errors import InputError
from nnunet_aux.experiment import (
    build_table,
    evaluate_fold,
    fold_state,
    fold_values,
    format_markdown,
    register,
    run_experiment,
    table_columns,
    write_per_fold_csv,
    write_table_csv,
)
from nnunet_aux.experiment.commands import environment_with_trainer_path
from nnunet_aux.experiment.jobs import TrainingJob
from nnunet_aux.experiment.layout import find_dataset_name
from nnunet_aux.experiment.process import nnunet_command
from nnunet_aux.training import trainer_path

# ---------------------------------------------------------------------------------------
# Table building on fake per-fold values

PER_FOLD = {
    "nnUNetTrainer": {0: {"dice": 0.50, "jaccard": 0.30, "cldice": 0.40, "hd": 10.0, "hd95": 4.0,
                          "recall_small": 0.2, "n_cases": 2},
                      1: {"dice": 0.70, "jaccard": 0.50, "cldice": 0.60, "hd": 20.0, "hd95": 6.0,
                          "recall_small": None, "n_cases": 2},
                      2: {"dice": 0.60, "jaccard": 0.40, "cldice": 0.50, "hd": 15.0, "hd95": 5.0,
                          "recall_small": 0.4, "n_cases": 2}},
    "nnUNetTrainerScaleAux": {0: {"dice": 0.80, "jaccard": 0.60, "cldice": 0.70, "hd": 30.0, "hd95": 8.0,
                                  "recall_small": 0.5, "n_cases": 2},
                              1: None,
                              2: {"dice": 0.60, "jaccard": 0.40, "cldice": 0.50, "hd": 25.0, "hd95": 7.0,
                                  "recall_small": 0.7, "n_cases": 2}},
}


def test_build_table_mean_and_std_by_hand():
    rows = build_table(PER_FOLD)
    stock, aux = rows
    assert [r["method"] for r in rows] == ["nnUNetTrainer", "nnUNetTrainerScaleAux"]
    # dice 0.5, 0.7, 0.6: mean 0.6, population std sqrt(((0.1)^2 + (0.1)^2 + 0) / 3)
    assert stock["cells"]["dice"]["mean"] == pytest.approx(0.6)
    assert stock["cells"]["dice"]["std"] == pytest.approx(math.sqrt(0.02 / 3))
    assert stock["cells"]["hd"]["mean"] == pytest.approx(15.0)
    assert stock["cells"]["hd"]["std"] == pytest.approx(math.sqrt(50 / 3))
    # recall_small is undefined in fold 1: two values, counted, not dropped silently
    assert stock["cells"]["recall_small"]["n"] == 2
    assert stock["cells"]["recall_small"]["mean"] == pytest.approx(0.3)
    # the failed fold 1 of the auxiliary trainer: 2 of 3 folds
    assert (aux["folds"], aux["folds_total"], aux["folds_missing"]) == (2, 3, ["1"])
    assert aux["cells"]["dice"]["mean"] == pytest.approx(0.7)
    assert aux["cells"]["dice"]["std"] == pytest.approx(0.1)
    assert aux["cells"]["dice"]["values"] == [0.8, 0.6]


def test_build_table_sample_std_and_single_fold():
    rows = build_table({"A": {0: {"dice": 0.5}, 1: {"dice": 0.7}}, "B": {0: {"dice": 0.4}}}, ddof=1)
    assert rows[0]["cells"]["dice"]["std"] == pytest.approx(math.sqrt(0.02))
    assert rows[1]["cells"]["dice"]["std"] is None  # one fold: no sample std
    with pytest.raises(ValueError, match="ddof"):
        build_table({"A": {0: {"dice": 0.5}}}, ddof=2)


def test_build_table_refuses_nan():
    with pytest.raises(ValueError, match="not finite"):
        build_table({"A": {0: {"dice": float("nan")}, 1: {"dice": 0.5}}})


def test_table_columns_with_and_without_scales():
    keys = [c[0] for c in table_columns(PER_FOLD)]
    assert keys == ["dice", "jaccard", "cldice", "hd", "hd95", "recall_small"]
    keys = [c[0] for c in table_columns({"A": {0: {"dice": 0.5, "hd95": 1.0}, 1: None}})]
    assert keys == ["dice", "jaccard", "cldice", "hd"]


def test_markdown_content():
    columns = table_columns(PER_FOLD)
    text = format_markdown(build_table(PER_FOLD, columns), columns, title="Dataset990")
    lines = text.splitlines()
    assert lines[0] == "Dataset990"
    header = next(line for line in lines if line.startswith("| Method"))
    assert header == ("| Method | Folds | DSC (%) | Jacc (%) | clDSC (%) | HD (mm) | HD95 (mm) "
                      "| Recall small (%) |")
    stock = next(line for line in lines if line.startswith("| nnUNetTrainer |"))
    aux = next(line for line in lines if line.startswith("| nnUNetTrainerScaleAux |"))
    cells = [c.strip() for c in stock.strip("|").split("|")]
    # dice 60.00 ± 8.16 (std 0.0816...), HD 15.00 best (lower is better) so bold
    assert cells[1] == "3/3"
    assert cells[2] == "60.00 ± 8.16"
    assert cells[5] == "**15.00** ± 4.08"
    assert cells[7] == "30.00 ± 10.00 (n=2)"  # recall_small: fold 1 has no small vessels
    cells = [c.strip() for c in aux.strip("|").split("|")]
    assert cells[1] == "2/3"
    assert cells[2] == "**70.00** ± 10.00"   # higher dice is better: bold
    assert cells[7] == "**60.00** ± 10.00"   # 2 values of 2 folds: no (n=...)
    assert "n/a" in format_markdown(build_table({"A": {0: None}}, columns), columns)


def test_csv_content(tmp_path):
    columns = table_columns(PER_FOLD)
    rows = build_table(PER_FOLD, columns)
    write_table_csv(tmp_path / "t.csv", rows, columns)
    with open(tmp_path / "t.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["nnUNetTrainer", "nnUNetTrainerScaleAux"]
    assert float(table[0]["dice_mean"]) == pytest.approx(0.6)  # stored units, not percent
    assert float(table[0]["hd_std"]) == pytest.approx(math.sqrt(50 / 3))
    assert table[0]["recall_small_n"] == "2"
    assert (table[1]["folds"], table[1]["folds_total"], table[1]["folds_missing"]) == ("2", "3", "1")

    empty = build_table({"A": {0: None}}, columns)
    write_table_csv(tmp_path / "e.csv", empty, columns)
    with open(tmp_path / "e.csv", newline="", encoding="utf-8") as f:
        row = next(csv.DictReader(f))
    assert (row["dice_mean"], row["dice_std"], row["dice_n"]) == ("", "", "0")

    write_per_fold_csv(tmp_path / "f.csv", PER_FOLD, columns)
    with open(tmp_path / "f.csv", newline="", encoding="utf-8") as f:
        per_fold = list(csv.DictReader(f))
    assert len(per_fold) == 6
    assert per_fold[1]["recall_small"] == ""          # undefined metric
    assert per_fold[4]["dice"] == "" and per_fold[4]["fold"] == "1"  # failed fold


def test_fold_values_from_evaluation_summary():
    summary = {
        "labels": {"vessel": {"reference": [1, 2], "prediction": [1], "scales": {"small": 1, "large": 2}},
                   "tumour": {"reference": [3], "prediction": [2]}},
        "aggregate": {
            "vessel": {**{k: {"mean": v} for k, v in
                          dict(dice=0.5, jaccard=0.4, cldice=0.3, hd=9.0, hd95=3.0, assd=1.0).items()},
                       "scales": {"small": {"recall": {"mean": 0.25}}, "large": {"recall": {"mean": None}}}},
            "tumour": {k: {"mean": 0.9} for k in ("dice", "jaccard", "cldice", "hd", "hd95", "assd")},
        },
        "metric_per_case": [{}, {}, {}],
    }
    values = fold_values(summary)
    assert values == {"dice": 0.5, "jaccard": 0.4, "cldice": 0.3, "hd": 9.0, "hd95": 3.0, "assd": 1.0,
                      "recall_small": 0.25, "recall_large": None, "n_cases": 3}
    assert fold_values(summary, "tumour")["dice"] == 0.9
    with pytest.raises(ValueError, match="liver"):
        fold_values(summary, "liver")


# ---------------------------------------------------------------------------------------
# Fold states, commands, dataset lookup


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


@pytest.mark.parametrize("files, state, flag", [
    ([], "new", None),
    (["checkpoint_latest.pth"], "interrupted", "--c"),
    (["checkpoint_latest.pth", "checkpoint_best.pth"], "interrupted", "--c"),
    (["checkpoint_final.pth"], "needs_validation", "--val"),
    (["checkpoint_final.pth", "validation/summary.json"], "finished", None),
])
def test_fold_state_and_command(tmp_path, files, state, flag):
    for name in files:
        touch(tmp_path / "fold_0" / name)
    assert fold_state(tmp_path / "fold_0") == state
    job = TrainingJob("T/fold_0", "990", "3d_fullres", 0, "T", "nnUNetPlans", "cpu", str(tmp_path / "fold_0"),
                      str(tmp_path / "log"), {}, nnunet_command("nnUNetv2_train"))
    assert job.state() == state
    if state == "finished":
        with pytest.raises(ValueError, match="no training needed"):
            job.train_command(state)
        return
    command = job.train_command(state)
    assert Path(command[0]).name == "nnUNetv2_train"
    assert command[1:10] == ["990", "3d_fullres", "0", "-tr", "T", "-p", "nnUNetPlans", "-device", "cpu"]
    assert command[10:] == ([flag] if flag else [])


def test_environment_with_trainer_path():
    env = environment_with_trainer_path({"nnUNet_extTrainer": "/my/trainers"})
    assert env["nnUNet_extTrainer"] == os.pathsep.join(["/my/trainers", trainer_path()])
    assert environment_with_trainer_path(env)["nnUNet_extTrainer"] == env["nnUNet_extTrainer"]
    assert environment_with_trainer_path({})["nnUNet_extTrainer"] == trainer_path()


def test_dataset_name_errors(tmp_path):
    (tmp_path / "pre" / "Dataset012_A").mkdir(parents=True)
    (tmp_path / "raw" / "Dataset013_B").mkdir(parents=True)
    assert find_dataset_name("12", tmp_path / "pre") == "Dataset012_A"
    assert find_dataset_name("Dataset012_A", tmp_path / "pre") == "Dataset012_A"
    with pytest.raises(InputError, match="unknown dataset 14"):
        find_dataset_name(14, tmp_path / "pre", tmp_path / "raw")
    with pytest.raises(InputError, match="nnUNetv2_plan_and_preprocess -d 13"):
        find_dataset_name(13, tmp_path / "pre", tmp_path / "raw")
    with pytest.raises(InputError, match="ID"):
        find_dataset_name("twelve", tmp_path / "pre")


# ---------------------------------------------------------------------------------------
# Evaluation of pre-made folds (no training): cache, missing predictions, the runner

DATASET_JSON = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "vessel": [1, 2], "tumour": 3},
    "regions_class_order": [1, 2],
    "scales": {"vessel": {"small": 1, "large": 2}},
    "numTraining": 3,
    "file_ending": ".nii.gz",
}
CASES = ["case_000", "case_001", "case_002"]


def write_image(path, array):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing((1.0, 1.0, 2.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def reference(i):
    ref = np.zeros((4, 8, 10), dtype=np.uint8)
    ref[1, 1, 1:9] = 1                 # small vessel
    ref[2:4, 4:7, 1:9] = 2             # large vessel
    ref[0, 6:8, 0:2] = 3               # tumour
    if i == 2:
        ref[ref == 1] = 0              # no small vessel in this case
    return ref


def prediction(ref, miss_small=False):
    """nnU-Net's output of the region dataset: vessel 1, tumour 2."""
    pred = np.zeros_like(ref)
    pred[np.isin(ref, (1, 2))] = 1
    if miss_small:
        pred[ref == 1] = 0
    pred[ref == 3] = 2
    return pred


def make_nnunet_tree(root, trainers, folds=(0, 1), splits=None, miss_small=()):
    """nnUNet_preprocessed and nnUNet_results of Dataset990 with finished folds (no training)."""
    pre = root / "preprocessed" / "Dataset990_Tiny"
    results = root / "results" / "Dataset990_Tiny"
    (root / "raw").mkdir(parents=True, exist_ok=True)
    pre.mkdir(parents=True)
    (pre / "dataset.json").write_text(json.dumps(DATASET_JSON))
    (pre / "nnUNetPlans.json").write_text(json.dumps({"configurations": {"3d_fullres": {}}}))
    splits = splits or [{"train": CASES[1:], "val": CASES[:1]}, {"train": CASES[:1], "val": CASES[1:]}]
    (pre / "splits_final.json").write_text(json.dumps(splits))
    for i, case in enumerate(CASES):
        write_image(pre / "gt_segmentations" / f"{case}.nii.gz", reference(i))
    for trainer in trainers:
        for fold in folds:
            fold_dir = results / f"{trainer}__nnUNetPlans__3d_fullres" / f"fold_{fold}"
            touch(fold_dir / "checkpoint_final.pth")
            (fold_dir / "validation").mkdir(parents=True)
            (fold_dir / "validation" / "summary.json").write_text("{}")
            for case in splits[fold]["val"]:
                i = CASES.index(case)
                write_image(fold_dir / "validation" / f"{case}.nii.gz",
                            prediction(reference(i), miss_small=(trainer, fold) in miss_small))
    env = {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
           "nnUNet_results": str(root / "results")}
    return pre, results, env


def test_evaluate_fold_cache_and_missing_prediction(tmp_path):
    pre, results, _ = make_nnunet_tree(tmp_path, ["T"], miss_small={("T", 1)})
    fold_dir = results / "T__nnUNetPlans__3d_fullres" / "fold_1"
    cache = tmp_path / "out" / "fold_1.json"
    summary, reused = evaluate_fold(fold_dir, pre / "gt_segmentations", cache, pre / "dataset.json",
                                    ["case_001", "case_002"], num_processes=1)
    assert not reused and cache.is_file() and cache.with_suffix(".csv").is_file()
    values = fold_values(summary)
    assert values["dice"] < 1.0 and values["n_cases"] == 2
    assert values["recall_small"] == 0.0   # only case_001 has small vessels, all missed
    assert values["recall_large"] == 1.0
    assert summary["metric_per_case"][0]["reference_file"].startswith(str(pre / "gt_segmentations"))

    again, reused = evaluate_fold(fold_dir, pre / "gt_segmentations", cache, pre / "dataset.json",
                                  ["case_001", "case_002"], num_processes=1)
    assert reused and fold_values(again) == values

    # a new validation by nnU-Net (summary.json rewritten) invalidates the cache
    later = cache.stat().st_mtime + 10
    os.utime(fold_dir / "validation" / "summary.json", (later, later))
    _, reused = evaluate_fold(fold_dir, pre / "gt_segmentations", cache, pre / "dataset.json",
                              ["case_001", "case_002"], num_processes=1)
    assert not reused

    # a validation case without prediction is an error, never left out
    os.remove(fold_dir / "validation" / "case_002.nii.gz")
    with pytest.raises(InputError, match="case_002"):
        evaluate_fold(fold_dir, pre / "gt_segmentations", cache, pre / "dataset.json",
                      ["case_001", "case_002"], num_processes=1)


def test_run_experiment_on_finished_folds(tmp_path):
    trainers = ["TrainerA", "TrainerB"]
    pre, results, env = make_nnunet_tree(tmp_path, trainers, miss_small={("TrainerB", 0), ("TrainerB", 1)})
    result = run_experiment(990, trainers, [0, 1], device="cpu", env=env, num_processes=1)
    assert result.ok
    out = results / "nnunet_aux_experiment"
    assert result.output_dir == out
    for name in ("table.md", "table.csv", "per_fold.csv", "table.png", "experiment.json",
                 "evaluation/TrainerA__nnUNetPlans__3d_fullres/fold_0.json"):
        assert (out / name).is_file(), name
    a, b = result.rows
    assert a["cells"]["dice"]["mean"] == 1.0 and a["cells"]["dice"]["std"] == 0.0
    assert a["cells"]["recall_small"]["mean"] == 1.0
    assert b["cells"]["recall_small"]["mean"] == 0.0 and b["cells"]["recall_small"]["n"] == 2
    assert b["cells"]["dice"]["mean"] < 1.0
    # per-fold value = mean over the fold's cases: fold 1 of B has two cases, one without small vessels
    state = json.loads((out / "experiment.json").read_text(encoding="utf-8"))
    assert state["per_fold"]["TrainerB"]["1"]["n_cases"] == 2
    assert all(step["command"] is None for step in state["steps"])  # nothing trained
    text = (out / "table.md").read_text(encoding="utf-8")
    assert "| TrainerA | 2/2 | **100.00** ± 0.00 |" in text
    assert "Recall small (%)" in text and "Recall large (%)" in text

    # second run: every evaluation comes from the cache
    again = run_experiment(990, trainers, [0, 1], device="cpu", env=env, num_processes=1, figure=False)
    assert all(step.evaluation_reused for step in again.steps)
    assert again.markdown == result.markdown


def test_run_experiment_keeps_going_after_a_failed_fold(tmp_path, capsys, monkeypatch):
    trainers = ["TrainerA", "TrainerB"]
    _, results, env = make_nnunet_tree(tmp_path, trainers)
    os.remove(results / "TrainerA__nnUNetPlans__3d_fullres" / "fold_0" / "validation" / "case_000.nii.gz")
    result = run_experiment(990, trainers, [0, 1], device="cpu", env=env, num_processes=1, figure=False)
    assert [(f.trainer, f.fold, f.step) for f in result.failures] == [("TrainerA", 0, "evaluation")]
    assert result.rows[0]["folds"] == 1 and result.rows[1]["folds"] == 2
    assert "| TrainerA | 1/2 |" in result.markdown

    stopped = run_experiment(990, trainers, [0, 1], device="cpu", env=env, num_processes=1, figure=False,
                             stop_on_error=True, output_dir=tmp_path / "stopped")
    assert len(stopped.steps) == 1 and stopped.rows[1]["folds"] == 0

    # the command line: exit code 1, table printed, failure named
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["experiment", "-d", "990", "--trainers", *trainers, "--folds", "0", "1",
                              "-device", "cpu", "-np", "1", "--no-figure", "-o", str(tmp_path / "cli")])
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    assert args.func(args) == 1
    captured = capsys.readouterr()
    assert "| TrainerB | 2/2 |" in captured.out
    assert "TrainerA fold 0: evaluation failed" in captured.err


FAKE_TRAIN = r"""
import json, os, sys
import numpy as np, SimpleITK as sitk
dataset, configuration, fold, _, trainer, _, plans, _, device, *flags = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(" ".join([trainer, fold, *flags]) + "\n")
if trainer == "BrokenTrainer":
    print("Traceback ...\nRuntimeError: boom")
    sys.exit(1)
out = os.path.join(os.environ["nnUNet_results"], dataset, f"{trainer}__{plans}__{configuration}", f"fold_{fold}")
pre = os.path.join(os.environ["nnUNet_preprocessed"], dataset)
os.makedirs(os.path.join(out, "validation"), exist_ok=True)
if "--val" not in flags:
    open(os.path.join(out, "checkpoint_final.pth"), "w").close()
    if os.path.exists(os.path.join(out, "checkpoint_latest.pth")):
        os.remove(os.path.join(out, "checkpoint_latest.pth"))
for case in json.load(open(os.path.join(pre, "splits_final.json")))[int(fold)]["val"]:
    image = sitk.ReadImage(os.path.join(pre, "gt_segmentations", case + ".nii.gz"))
    ref = sitk.GetArrayFromImage(image)
    pred = sitk.GetImageFromArray(np.select([np.isin(ref, (1, 2)), ref == 3], [1, 2], 0).astype(np.uint8))
    pred.CopyInformation(image)
    sitk.WriteImage(pred, os.path.join(out, "validation", case + ".nii.gz"))
open(os.path.join(out, "validation", "summary.json"), "w").write("{}")
"""


def test_run_experiment_trains_what_is_missing(tmp_path, monkeypatch):
    """The runner's decisions, with a stand-in for nnUNetv2_train (no nnU-Net run)."""
    import nnunet_aux.experiment.process as process
    import nnunet_aux.experiment.runner as runner

    script = tmp_path / "fake_nnUNetv2_train.py"
    script.write_text(FAKE_TRAIN)
    calls = tmp_path / "calls.txt"
    monkeypatch.setattr(process, "nnunet_command", lambda name: [sys.executable, str(script)])
    monkeypatch.setattr(runner, "missing_trainers", lambda trainers, env: [])
    _, results, env = make_nnunet_tree(tmp_path / "n", ["TrainerB"], folds=(1,))
    env["FAKE_CALLS"] = str(calls)
    touch(results / "TrainerA__nnUNetPlans__3d_fullres" / "fold_1" / "checkpoint_latest.pth")
    touch(results / "TrainerB__nnUNetPlans__3d_fullres" / "fold_0" / "checkpoint_final.pth")
    trainers = ["TrainerA", "TrainerB", "BrokenTrainer"]

    result = run_experiment(990, trainers, [0, 1], device="cpu", env=env, num_processes=1, figure=False)
    assert calls.read_text(encoding="utf-8").splitlines() == [
        "TrainerA 0", "TrainerB 0 --val", "BrokenTrainer 0", "TrainerA 1 --c", "BrokenTrainer 1"]
    assert [(f.trainer, f.fold, f.step) for f in result.failures] == [("BrokenTrainer", 0, "training"),
                                                                       ("BrokenTrainer", 1, "training")]
    assert "RuntimeError: boom" in result.failures[0].message  # the tail of the log
    assert "[exit code 1]" in result.failures[0].message
    assert [row["folds"] for row in result.rows] == [2, 2, 0]
    assert result.rows[0]["cells"]["dice"]["mean"] == 1.0
    log = (result.output_dir / "logs" / "TrainerA__fold_1.log").read_text(encoding="utf-8")
    assert "3d_fullres 1 -tr TrainerA -p nnUNetPlans -device cpu --c" in log

    # a second run retries only the failed folds; the others are reused
    again = run_experiment(990, trainers, [0, 1], device="cpu", env=env, num_processes=1, figure=False)
    assert calls.read_text(encoding="utf-8").splitlines()[5:] == ["BrokenTrainer 0", "BrokenTrainer 1"]
    assert [s.evaluation_reused for s in again.steps if s.trainer != "BrokenTrainer"] == [True] * 4
    assert again.markdown == result.markdown
    assert "| BrokenTrainer | 0/2 | n/a |" in again.markdown


def test_run_experiment_input_errors(tmp_path):
    _, _, env = make_nnunet_tree(tmp_path, ["TrainerA"])
    with pytest.raises(InputError, match="unknown dataset 991"):
        run_experiment(991, ["TrainerA"], [0], env=env)
    with pytest.raises(InputError, match="configuration '2d'"):
        run_experiment(990, ["TrainerA"], [0], configuration="2d", env=env)
    with pytest.raises(InputError, match="plans 'OtherPlans'"):
        run_experiment(990, ["TrainerA"], [0], plans="OtherPlans", env=env)
    with pytest.raises(InputError, match="label 'liver'"):
        run_experiment(990, ["TrainerA"], [0], label="liver", env=env)
    with pytest.raises(InputError, match="folds"):
        run_experiment(990, ["TrainerA"], ["all"], env=env)
    with pytest.raises(InputError, match="nnUNet_results is not set"):
        run_experiment(990, ["TrainerA"], [0], env={k: v for k, v in env.items() if k != "nnUNet_results"})


@pytest.mark.slow  # nnU-Net's trainer search imports every trainer module: about 20 s
def test_unknown_trainer_is_reported_before_training(tmp_path):
    _, _, env = make_nnunet_tree(tmp_path, ["TrainerA"], folds=(0,))
    with pytest.raises(InputError, match=r"cannot find trainer\(s\) \['NoSuchTrainerXyz'\].*trainer-path"):
        run_experiment(990, ["TrainerA", "NoSuchTrainerXyz"], [0], env=env)


# ---------------------------------------------------------------------------------------
# End to end: real nnU-Net trainings on the shared tiny dataset

TINY_TRAINERS = '''
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerTiny_test(nnUNetTrainer):
    """Stock nnU-Net, 1 epoch of 5 training and 2 validation iterations."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 1
        self.num_iterations_per_epoch = 5
        self.num_val_iterations_per_epoch = 2
'''


@pytest.mark.slow
def test_experiment_end_to_end_and_resume(scale_dataset, tmp_path):
    root = tmp_path / "nnunet"
    for kind, source in (("raw", scale_dataset["raw"]), ("preprocessed", scale_dataset["preprocessed"])):
        shutil.copytree(source, root / kind / source.name)
    pre = root / "preprocessed" / scale_dataset["preprocessed"].name
    cases = scale_dataset["cases"]
    (pre / "splits_final.json").write_text(json.dumps([
        {"train": cases[:-1], "val": cases[-1:]}, {"train": cases[1:], "val": cases[:1]}]))
    (tmp_path / "ext").mkdir()
    (tmp_path / "ext" / "experiment_test_trainers.py").write_text(TINY_TRAINERS)
    env = {**scale_dataset["env"], "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
           "nnUNet_results": str(root / "results"), "nnUNet_extTrainer": str(tmp_path / "ext"),
           "nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1"}
    (root / "results").mkdir()
    nnunet_aux = str(Path(sys.executable).parent / "nnunet_aux")
    trainers = ["nnUNetTrainerTiny_test", "nnUNetTrainerScaleAux_smoke"]

    def command(trainers, *extra):
        return [nnunet_aux, "experiment", "-d", str(scale_dataset["id"]), "-device", "cpu", "-np", "1",
                "--folds", "0", "1", "--trainers", *trainers, *extra]

    # the first run in submitit's debug executor (in this process), the re-runs with the default local one
    first = subprocess.run(command(trainers, "--cluster", "debug"), env=env, capture_output=True, text=True,
                           encoding="utf-8", errors="replace", timeout=1500)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    results = root / "results" / scale_dataset["preprocessed"].name
    out = results / "nnunet_aux_experiment"
    checkpoints = sorted(results.glob("*_test__nnUNetPlans__3d_fullres/fold_*/checkpoint_final.pth")) + sorted(
        results.glob("*ScaleAux_smoke__nnUNetPlans__3d_fullres/fold_*/checkpoint_final.pth"))
    assert len(checkpoints) == 4
    mtimes = [p.stat().st_mtime for p in checkpoints]
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "| nnUNetTrainerTiny_test | 2/2 |" in table
    assert "| nnUNetTrainerScaleAux_smoke | 2/2 |" in table
    assert "Recall small (%)" in table and table in first.stdout  # printed at the end
    for name in ("table.csv", "per_fold.csv", "table.png", "logs/nnUNetTrainerTiny_test__fold_1.log"):
        assert (out / name).is_file(), name
    with open(out / "per_fold.csv", newline="", encoding="utf-8") as f:
        per_fold = list(csv.DictReader(f))
    assert {(r["method"], r["fold"], r["n_cases"]) for r in per_fold if r["dice"]} == {
        (t, f, "1") for t in trainers for f in ("0", "1")}

    # rerun: nothing is retrained, evaluations come from the cache
    second = subprocess.run(command(trainers), env=env, capture_output=True, text=True, encoding="utf-8",
                            errors="replace", timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert [p.stat().st_mtime for p in checkpoints] == mtimes
    state = json.loads((out / "experiment.json").read_text(encoding="utf-8"))
    assert all(s["command"] is None and s["evaluation_reused"] for s in state["steps"])

    # a killed run: validation missing -> --val; checkpoint_latest only -> --c (seen in the log)
    fold = results / "nnUNetTrainerTiny_test__nnUNetPlans__3d_fullres" / "fold_1"
    shutil.rmtree(fold / "validation")
    third = subprocess.run(command(trainers), env=env, capture_output=True, text=True, encoding="utf-8",
                           errors="replace", timeout=600)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    log = (out / "logs" / "nnUNetTrainerTiny_test__fold_1.log").read_text(encoding="utf-8")
    assert "3d_fullres 1 -tr nnUNetTrainerTiny_test -p nnUNetPlans -device cpu --val" in log
    assert fold_state(fold) == "finished"
