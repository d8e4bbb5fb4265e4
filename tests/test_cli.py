"""The `nnunet_aux` command: help for every flag, user errors without traceback, end to end."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_aux.cli import COMMANDS, build_parser, main

BIN = Path(sys.executable).parent
CONVERSION_COMMANDS = ["synth", "decompose", "multiclass", "convert msd-hepaticvessel", "convert ircadb", "images-only"]


def _subparser(command):
    words = command.split()
    parser = build_parser(words[0])
    for word in words:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[word]
    return parser


@pytest.mark.parametrize("command", CONVERSION_COMMANDS + ["trainer-path"])
def test_every_flag_is_explained(command, capsys):
    parser = _subparser(command)
    for action in parser._actions:
        assert action.help, f"{command}: {action.option_strings or action.dest} has no help"
    with pytest.raises(SystemExit) as exit_info:
        main([*command.split(), "-h"])
    assert exit_info.value.code == 0
    assert "usage: nnunet_aux " + command in capsys.readouterr().out


def test_top_level_help_lists_commands_without_importing_them():
    code = ("import sys; from nnunet_aux.cli import main\n"
            "try:\n    main(['-h'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', [m for m in ('SimpleITK', 'torch', 'nnunet_aux.conversion.writer') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8",
                         errors="replace", check=True).stdout
    for command in ("synth", "decompose", "multiclass", "convert", "trainer-path"):
        assert command in out
    assert "LOADED []" in out


def test_missing_modules_are_left_out(monkeypatch):
    monkeypatch.setitem(COMMANDS, "nothing", ("nnunet_aux.not_a_module", "never shown"))
    parser = build_parser(None)
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "nothing" not in action.choices and "synth" in action.choices


def test_user_error_gives_message_and_exit_code_2(tmp_path, capsys):
    args = ["synth", "-d", "931", "-n", "1", "--shape", "16", "24", "24", "--true-scales", "--raw-root",
            str(tmp_path), "-np", "1", "--no-progress"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "Dataset931_SyntheticVessels")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("nnunet_aux synth: error: dataset ID 931 already exists") and "Traceback" not in err
    assert main(args + ["--overwrite"]) == 0
    assert main(["synth", "--thresholds", "fixed", "--raw-root", str(tmp_path)]) == 2
    assert "need 2 radii" in capsys.readouterr().err


def test_console_script_error_has_no_traceback(tmp_path):
    env = dict(os.environ, nnUNet_raw=str(tmp_path))
    result = subprocess.run([str(BIN / "nnunet_aux"), "decompose", "-d", "42", "-o", "43"], capture_output=True,
                            text=True, encoding="utf-8", errors="replace", env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == f"nnunet_aux decompose: error: found no dataset with ID 42 in {tmp_path}"


def test_decompose_and_multiclass_commands(tmp_path, capsys):
    raw = str(tmp_path)
    common = ["--raw-root", raw, "--no-progress"]
    assert main(["synth", "-d", "932", "-n", "2", "--shape", "16", "24", "24", "-np", "1", *common]) == 0
    # Decompose the decomposed dataset again? It has region labels: a clear refusal.
    assert main(["decompose", "-d", "932", "-o", "933", "-np", "1", *common]) == 2
    assert "region-based source datasets are not supported" in capsys.readouterr().err
    assert main(["multiclass", "-d", "932", "-o", "934", *common]) == 0
    multiclass = tmp_path / "Dataset934_SyntheticVessels_multiclass"
    dataset_json = json.loads((multiclass / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["labels"]["vessel_small"] == 1


def test_trainer_path(capsys):
    assert main(["trainer-path"]) == 0
    assert Path(capsys.readouterr().out.strip()).is_dir()


@pytest.mark.slow
def test_synth_then_nnunet_verification_and_fingerprint(tmp_path):
    # planning and preprocessing of a synthetic dataset run in the scale_dataset fixture (tests/conftest.py)
    env = dict(os.environ, nnUNet_raw=str(tmp_path / "raw"), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "results"))
    subprocess.run([str(BIN / "nnunet_aux"), "synth", "-d", "941", "-n", "3", "--n-test", "1", "--shape", "24",
                    "32", "32", "-np", "1", "--no-progress"], env=env, check=True, capture_output=True)
    result = subprocess.run([str(BIN / "nnUNetv2_extract_fingerprint"), "-d", "941", "--verify_dataset_integrity",
                             "-np", "1"], env=env, capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "verify_dataset_integrity Done" in result.stdout
    raw = tmp_path / "raw" / "Dataset941_SyntheticVessels"
    scales = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))["scales"]
    assert scales == {"vessel": {"small": 1, "medium": 2, "large": 3}}
    fingerprint = json.loads((tmp_path / "pre" / raw.name / "dataset_fingerprint.json").read_text(encoding="utf-8"))
    assert len(fingerprint["spacings"]) == 3
