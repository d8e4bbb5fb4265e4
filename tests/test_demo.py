"""Tests of the ``nnunet_aux demo`` command: plans, workdir handling, report, figures, CLI, end to end."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np
import pytest

from nnunet_aux.demo.commands import CommandFailedError, nnunet_environment, run_command
from nnunet_aux.demo.figures import outcome_map, overview_figure, project_codes, scale_recall_figure
from nnunet_aux.demo.pipeline import (
    QUICK_SETTINGS,
    STATE_FILE,
    DemoSettings,
    _prepare_workdir,
    resolve_device,
    table_text,
)
from nnunet_aux.demo.plans import small_plans, write_small_plans, write_splits
from nnunet_aux.demo.report import markdown_table, results_table, scale_recalls, write_report
from nnunet_aux.errors import InputError


def nnunet_like_plans() -> dict:
    arch = {"n_stages": 5, "features_per_stage": [32, 64, 128, 256, 320], "kernel_sizes": [[3, 3, 3]] * 5,
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]], "n_conv_per_stage": [2] * 5,
            "n_conv_per_stage_decoder": [2] * 4}
    config = {"data_identifier": "nnUNetPlans_3d_fullres", "batch_size": 2, "patch_size": [48, 96, 96],
              "architecture": {"network_class_name": "PlainConvUNet", "arch_kwargs": arch}}
    return {"plans_name": "nnUNetPlans", "configurations": {"3d_fullres": config, "2d": {"batch_size": 12}}}


# ---------------------------------------------------------------- plans
def test_small_plans_cuts_stages_and_keeps_data():
    plans = nnunet_like_plans()
    small = small_plans(plans, "nnUNetPlans_demo", (8, 16, 32, 64), patch_size=(32, 64, 64), batch_size=3)
    assert list(small["configurations"]) == ["3d_fullres"]
    config = small["configurations"]["3d_fullres"]
    arch = config["architecture"]["arch_kwargs"]
    assert small["plans_name"] == "nnUNetPlans_demo"
    assert config["data_identifier"] == "nnUNetPlans_3d_fullres"
    assert arch["n_stages"] == 4 and arch["features_per_stage"] == [8, 16, 32, 64]
    assert len(arch["strides"]) == len(arch["kernel_sizes"]) == len(arch["n_conv_per_stage"]) == 4
    assert len(arch["n_conv_per_stage_decoder"]) == 3
    assert config["patch_size"] == [32, 64, 64] and config["batch_size"] == 3
    # the source is not modified
    assert plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["n_stages"] == 5


@pytest.mark.parametrize("kwargs, message", [
    ({"features_per_stage": (8,)}, "stages"),
    ({"features_per_stage": (8, 16, 32, 64, 128, 256)}, "stages"),
    ({"features_per_stage": (8, 0)}, "positive"),
    ({"features_per_stage": (8, 16, 32), "patch_size": (30, 64, 64)}, "divisible"),
    ({"features_per_stage": (8, 16), "patch_size": (32, 64)}, "3 values"),
    ({"features_per_stage": (8, 16), "configuration": "3d_lowres"}, "3d_lowres"),
])
def test_small_plans_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_plans(nnunet_like_plans(), "p", **kwargs)


def test_write_small_plans_and_splits(tmp_path):
    with pytest.raises(ValueError, match="plan_and_preprocess"):
        write_small_plans(tmp_path, "demo", (8, 16))
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(nnunet_like_plans()))
    path = write_small_plans(tmp_path, "nnUNetPlans_demo", (8, 16))
    assert path == tmp_path / "nnUNetPlans_demo.json"
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["n_stages"] == 2
    splits = write_splits(tmp_path, ["a", "b"], ["c"])
    assert json.loads(splits.read_text(encoding="utf-8")) == [{"train": ["a", "b"], "val": ["c"]}]
    with pytest.raises(ValueError, match="both"):
        write_splits(tmp_path, ["a"], ["a"])
    with pytest.raises(ValueError, match="validation"):
        write_splits(tmp_path, ["a"], [])


def test_demo_trainers_get_their_length_from_the_environment(tmp_path):
    """The demo sets the package's one override (NNUNET_AUX_OUTCOME) for its nnU-Net commands."""
    from nnunet_aux.demo.pipeline import _Demo
    from nnunet_aux.demo.trainers import nnUNetTrainer_demo, nnUNetTrainerScaleContrastiveLite_demo
    from nnunet_aux.training.schedule import ScheduleFromEnvironment, read_schedule

    settings = dataclasses.replace(QUICK_SETTINGS, num_epochs=2, iterations_per_epoch=4)
    demo = _Demo(tmp_path, settings, "cpu", 1, None, {"settings": settings.to_json(), "finished": {}})
    assert read_schedule(demo.env) == {"num_epochs": 2, "num_iterations_per_epoch": 4,
                                       "num_val_iterations_per_epoch": QUICK_SETTINGS.val_iterations_per_epoch}
    for trainer in (nnUNetTrainer_demo, nnUNetTrainerScaleContrastiveLite_demo):
        assert trainer.__mro__[1] is ScheduleFromEnvironment


# ---------------------------------------------------------------- settings and work folder
def test_settings_validation():
    assert QUICK_SETTINGS.n_train > QUICK_SETTINGS.n_val
    with pytest.raises(InputError, match="n_val"):
        DemoSettings(n_train=2, n_val=2)
    with pytest.raises(InputError, match="shape"):
        DemoSettings(shape=(16, 16))
    with pytest.raises(InputError, match="num_epochs"):
        DemoSettings(num_epochs=0)
    assert DemoSettings().to_json()["shape"] == list(DemoSettings().shape)


def test_workdir_refused_unless_demo_and_asked(tmp_path):
    settings = QUICK_SETTINGS
    # empty or missing: fresh start
    state = _prepare_workdir(tmp_path / "new", settings, resume=False, overwrite=False)
    assert state["finished"] == {} and (tmp_path / "new").is_dir()
    # not a demo folder: refused even with overwrite, nothing deleted
    (tmp_path / "mine.txt").write_text("keep")
    for flags in ({"resume": False, "overwrite": False}, {"resume": False, "overwrite": True}):
        with pytest.raises(InputError, match="not a demo folder"):
            _prepare_workdir(tmp_path, settings, **flags)
    assert (tmp_path / "mine.txt").read_text(encoding="utf-8") == "keep"
    with pytest.raises(InputError, match="not a folder"):
        _prepare_workdir(tmp_path / "mine.txt", settings, resume=False, overwrite=False)


def test_workdir_resume_and_overwrite(tmp_path):
    settings = QUICK_SETTINGS
    recorded = {"settings": settings.to_json(), "finished": {"dataset": 1.0}}
    (tmp_path / STATE_FILE).write_text(json.dumps(recorded))
    (tmp_path / "nnUNet_raw" / "x").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="--resume"):
        _prepare_workdir(tmp_path, settings, resume=False, overwrite=False)
    assert _prepare_workdir(tmp_path, settings, resume=True, overwrite=False) == recorded
    with pytest.raises(InputError, match="other settings"):
        _prepare_workdir(tmp_path, DemoSettings(), resume=True, overwrite=False)
    with pytest.raises(InputError, match="exclude"):
        _prepare_workdir(tmp_path, settings, resume=True, overwrite=True)
    assert _prepare_workdir(tmp_path, settings, resume=False, overwrite=True)["finished"] == {}
    assert not (tmp_path / "nnUNet_raw").exists() and not (tmp_path / STATE_FILE).exists()
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"  # only the demo's own files go


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(InputError, match="device"):
        resolve_device("tpu")


# ---------------------------------------------------------------- subprocesses
def test_environment_points_into_workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", "/users/own/raw")
    env = nnunet_environment(tmp_path, ["/a"], {"nnUNet_n_proc_DA": "1"})
    assert env["nnUNet_raw"] == str(tmp_path.absolute() / "nnUNet_raw")
    assert env["nnUNet_preprocessed"] == str(tmp_path.absolute() / "nnUNet_preprocessed")
    assert env["nnUNet_extTrainer"] == "/a" and env["nnUNet_n_proc_DA"] == "1"
    import os

    assert os.environ["nnUNet_raw"] == "/users/own/raw"  # the caller's environment is untouched


def test_run_command_streams_logs_and_reports_failure(tmp_path):
    import io

    stream = io.StringIO()
    log = tmp_path / "logs" / "ok.log"
    run_command([sys.executable, "-c", "print('hello')"], {}, log, stream=stream)
    assert stream.getvalue() == "hello\n"
    assert "\nhello\n[exit code 0]\n" in log.read_text(encoding="utf-8")
    code = "import sys\nfor i in range(100): print('line', i)\nsys.exit(3)"
    with pytest.raises(CommandFailedError) as error:
        run_command([sys.executable, "-c", code], {}, tmp_path / "bad.log", stream=None)
    message = str(error.value)
    assert "exit status 3" in message and "line 99" in message and "line 10\n" not in message
    assert str(tmp_path / "bad.log") in message


# ---------------------------------------------------------------- report and figures
def fake_summary(dice: float, recalls: dict) -> dict:
    def s(mean, std=0.0):
        return {"mean": mean, "std": std, "median": mean, "n": 2, "n_skipped": 0}
    return {"aggregate": {"vessel": {"dice": s(dice, 0.05), "cldice": s(0.7), "hd95": s(3.25, 1.0),
                                     "scales": {k: {"recall": s(v), "dice": s(v)} for k, v in recalls.items()}},
                          "tumour": {"dice": s(0.1)}}}


def test_results_table_and_report(tmp_path):
    summaries = {"baseline": fake_summary(0.8, {"small": 0.5, "medium": 0.75, "large": 0.9}),
                 "contrastive": fake_summary(0.82, {"small": 0.6, "medium": None, "large": 0.95})}
    summaries["contrastive"]["aggregate"]["vessel"]["scales"]["medium"]["recall"]["mean"] = None
    heading, rows = results_table(summaries)
    assert heading == ["Method", "Dice", "clDice", "HD95 (mm)", "Recall small", "Recall medium", "Recall large"]
    assert rows[0] == ["baseline", "0.800 ± 0.050", "0.700 ± 0.000", "3.25 ± 1.00", "0.500 ± 0.000",
                       "0.750 ± 0.000", "0.900 ± 0.000"]
    assert rows[1][5] == "n/a"
    assert markdown_table(heading, rows).splitlines()[1] == "|---|---|---|---|---|---|---|"
    assert table_text(heading, rows).splitlines()[1].startswith("baseline     0.800 ± 0.050")
    with pytest.raises(ValueError, match="no label"):
        results_table(summaries, label="liver")
    recalls = scale_recalls(summaries)
    assert recalls["baseline"]["large"] == (0.9, 0.0) and recalls["contrastive"]["medium"][0] is None
    report = tmp_path / "report.md"
    write_report(report, heading, rows, figures={"bars": "bars.png"}, settings={"seed": 0},
                 timings={"train": 10.4, "predict": 2.0}, notes=["cpu"])
    text = report.read_text(encoding="utf-8")
    assert "| baseline | 0.800 ± 0.050 |" in text and "![bars](bars.png)" in text
    assert "| total | 12 |" in text and "- cpu" in text
    scale_recall_figure(recalls, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_outcome_codes_and_projection():
    reference = np.array([[0, 1, 1], [3, 0, 2]])
    prediction = np.array([[1, 1, 0], [1, 0, 0]], dtype=bool)
    codes = outcome_map(reference, prediction, 3)
    np.testing.assert_array_equal(codes, [[4, 1, 5], [3, 0, 5]])
    # found beats false positive beats missed; the largest found scale wins
    np.testing.assert_array_equal(project_codes(codes, 3, axis=0), [3, 1, 5])
    np.testing.assert_array_equal(project_codes(codes, 3, axis=1), [1, 3])
    with pytest.raises(ValueError, match="shape"):
        outcome_map(reference, prediction[:1], 3)
    with pytest.raises(ValueError, match="0..2"):
        outcome_map(reference, prediction, 2)


def test_overview_figure(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(6, 10, 12))
    reference = np.zeros(image.shape, dtype=np.uint8)
    reference[3, 2:8, 5] = 3
    reference[3, 4, 6:10] = 1
    overview_figure(image, reference, {"a": reference > 0, "b": np.zeros(image.shape, bool)},
                    tmp_path / "o.png", spacing=(2.0, 1.0, 1.0))
    assert (tmp_path / "o.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="one shape"):
        overview_figure(image, reference[:2], {}, tmp_path / "x.png")


# ---------------------------------------------------------------- command line
def parse(argv):
    from nnunet_aux.demo.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["demo", *argv])


def test_cli_settings():
    from nnunet_aux.demo.cli import run, settings_from_args

    args = parse([])
    assert args.func is run and args.workdir == "nnunet_aux_demo" and args.device == "auto"
    assert settings_from_args(args) == DemoSettings()
    args = parse(["--quick", "--epochs", "2", "--shape", "16,32,32", "--features", "4,8", "-o", "w"])
    assert settings_from_args(args) == dataclasses.replace(QUICK_SETTINGS, num_epochs=2,
                                                           shape=(16, 32, 32), features_per_stage=(4, 8))
    with pytest.raises(SystemExit):
        parse(["--resume", "--overwrite"])
    with pytest.raises(SystemExit):
        parse(["--shape", "16,32"])


def test_cli_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        parse(["-h"])
    text = capsys.readouterr().out
    for flag in ("--workdir", "--device", "--quick", "--resume", "--overwrite", "--quiet", "--epochs", "--shape"):
        assert flag in text


# ---------------------------------------------------------------- end to end
@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    """The reduced demo through nnU-Net's commands on the CPU (a few minutes on two cores)."""
    from nnunet_aux.cli import main

    workdir = tmp_path / "demo"
    assert main(["demo", "--quick", "-o", str(workdir), "--device", "cpu", "-q", "-np", "2"]) == 0
    out = capsys.readouterr().out
    report = workdir / "report.md"
    assert f"Report: {report}" in out and "ScaleContrastive" in out
    text = report.read_text(encoding="utf-8")
    for method in ("nnU-Net binary baseline", "ScaleContrastiveLite (Sadikine et al.)"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {method} |"))
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        assert len(cells) == 6  # Dice, clDice, HD95, recall small/medium/large
        for cell in cells:
            mean = float(cell.split("±")[0])
            assert np.isfinite(mean) and mean >= 0
    for png in ("overview.png", "scale_recall.png"):
        assert (workdir / png).read_bytes()[:4] == b"\x89PNG" and f"({png})" in text
    for key in ("baseline", "scale_contrastive"):
        summary = json.loads((workdir / "evaluation" / f"{key}.json").read_text(encoding="utf-8"))
        assert 0 <= summary["aggregate"]["vessel"]["dice"]["mean"] <= 1
        assert set(summary["aggregate"]["vessel"]["scales"]) == {"small", "medium", "large"}
    # nnU-Net's folders were inside the work folder, the user's own untouched
    assert (workdir / "nnUNet_results").is_dir()
    # a rerun is refused; with --resume only the report is redone
    assert main(["demo", "--quick", "-o", str(workdir), "--device", "cpu", "-q"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["demo", "--quick", "-o", str(workdir), "--device", "cpu", "--resume"]) == 0
    assert "done in an earlier run, skipped" in capsys.readouterr().out
