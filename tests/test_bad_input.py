"""Issue 12: nnU-Net's own evaluation is right on converted datasets; every bad input gets one line.

Each numbered case of the issue has a test here (the numbers are the issue's). CLI cases
run ``nnunet_aux.cli.main`` in this process and check the exit code 2, a one-line message
naming the file or value, and that nothing was written or lost.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_aux.cli import main
from nnunet_aux.errors import InputError

SPACING_XYZ = (0.8, 0.8, 1.5)


# ---------------------------------------------------------------------------------------------- helpers
def write(array, path, spacing=SPACING_XYZ):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def msd_label(shape=(16, 24, 24), tumour=True):
    """MSD Task08 values: a thin and a thick vessel (1) and a tumour block (2)."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    inside = (z > 1) & (z < shape[0] - 2)
    label = np.zeros(shape, np.uint8)
    if tumour:
        label[3:7, 17:22, 2:7] = 2
    label[(((y - 6) ** 2 + (x - 6) ** 2 <= 1.5 ** 2) | ((y - 15) ** 2 + (x - 15) ** 2 <= 3.5 ** 2)) & inside] = 1
    return label


def make_msd(root, n_train=2, n_test=1):
    """A Task08_HepaticVessel-style folder (MSD dataset.json, cases hepaticvessel_XXX.nii.gz)."""
    task = root / "Task08_HepaticVessel"
    for i in range(1, n_train + n_test + 1):
        split = "Tr" if i <= n_train else "Ts"
        label = msd_label()
        write((label * 100).astype(np.int16), task / f"images{split}" / f"hepaticvessel_{i:03d}.nii.gz")
        write(label, task / f"labels{split}" / f"hepaticvessel_{i:03d}.nii.gz")
    (task / "dataset.json").write_text(json.dumps({
        "name": "HepaticVessel", "modality": {"0": "CT"}, "labels": {"0": "background", "1": "Vessel", "2": "Tumour"},
        "numTraining": n_train, "numTest": n_test}))
    return task


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def cli(capsys, *args):
    """Run ``nnunet_aux ARGS``; return (exit code, stderr)."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "error:" in lines[0], err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


def make_raw(raw, name="Dataset935_Source", n_train=2):
    """A plain nnU-Net raw dataset with MSD's values (vessel 1, tumour 2)."""
    folder = raw / name
    for i in range(n_train):
        label = msd_label()
        write((label * 100).astype(np.int16), folder / "imagesTr" / f"case{i}_0000.nii.gz")
        write(label, folder / "labelsTr" / f"case{i}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "vessel": 1, "tumour": 2},
        "numTraining": n_train, "file_ending": ".nii.gz"}))
    return folder


# ------------------------------------------------------------- nnU-Net's own evaluation on converted data
def nnunet_prediction(dataset_json, reference, rng=None):
    """What nnU-Net's predictor writes for ``reference``: region probabilities -> LabelManager's conversion.

    With ``rng``, 2 % of the voxels of every region channel are flipped (an imperfect prediction).
    """
    import torch
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    lm = LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))
    probabilities = np.stack([np.isin(reference, r) for r in lm.foreground_regions]).astype(np.float32)
    if rng is not None:
        flip = rng.random(probabilities.shape) < 0.02
        probabilities[flip] = 1 - probabilities[flip]
    return lm.convert_probabilities_to_segmentation(torch.from_numpy(probabilities)).numpy().astype(np.uint8), lm


def test_nnunet_evaluation_agrees_with_nnunet_aux_on_an_msd_conversion(msd_dataset, tmp_path, capsys):
    """The issue's finding: a perfect prediction scored by nnU-Net's compute_metrics, on an MSD conversion."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    folder = msd_dataset["folder"]
    dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["regions_class_order"] == [1, 3]
    rng = np.random.default_rng(0)
    for kind, noise in (("perfect", None), ("noisy", rng)):
        pred_dir = tmp_path / kind
        pred_dir.mkdir()
        theirs = []
        for ref_file in sorted((folder / "labelsTr").iterdir()):
            reference = sitk.ReadImage(str(ref_file))
            pred, lm = nnunet_prediction(dataset_json, sitk.GetArrayFromImage(reference), noise)
            out = sitk.GetImageFromArray(pred)
            out.CopyInformation(reference)
            sitk.WriteImage(out, str(pred_dir / ref_file.name))
            # nnU-Net's per-case metrics, as its validation (summary.json) and nnUNetv2_evaluate_folder compute them
            theirs.append(compute_metrics(str(ref_file), str(pred_dir / ref_file.name), SimpleITKIO(),
                                          lm.foreground_regions, None)["metrics"])
        assert main(["evaluate", "-ref", str(folder / "labelsTr"), "-pred", str(pred_dir), "--dataset-json",
                     str(folder / "dataset.json"), "-np", "1", "--no-progress", "--no-csv"]) == 0
        summary = json.loads((pred_dir / "summary_nnunet_aux.json").read_text(encoding="utf-8"))
        for name, region in zip(("vessel", "tumour"), lm.foreground_regions):
            for case, their_case in zip(summary["metric_per_case"], theirs):
                their_dice = their_case[region]["Dice"]
                assert case["metrics"][name]["dice"] == pytest.approx(their_dice, abs=1e-9), (kind, name)
                if kind == "perfect":
                    assert their_dice == 1.0
                else:
                    assert 0.05 < their_dice < 0.99
    capsys.readouterr()


def test_map_labels_gives_back_the_msd_values(msd_dataset, tmp_path, capsys):
    folder = msd_dataset["folder"]
    dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    pred_dir, out_dir = tmp_path / "pred", tmp_path / "msd_values"
    pred_dir.mkdir()
    for ref_file in sorted((folder / "labelsTr").iterdir()):
        reference = sitk.ReadImage(str(ref_file))
        pred, _ = nnunet_prediction(dataset_json, sitk.GetArrayFromImage(reference))
        out = sitk.GetImageFromArray(pred)
        out.CopyInformation(reference)
        sitk.WriteImage(out, str(pred_dir / ref_file.name))
    code, err = cli(capsys, "map-labels", "-d", 508, "-i", pred_dir, "-o", out_dir)
    assert code == 0, err
    assert (out_dir / ".nnunet_aux_map_labels.json").is_file()  # marks them as mapped (issue 24, case 6)
    for f in sorted(out_dir.glob("*.nii.gz")):
        mapped = sitk.ReadImage(str(f))
        source = sitk.ReadImage(str(msd_dataset["task"] / "labelsTr" / f.name.replace("_0000", "")))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(mapped), sitk.GetArrayFromImage(source))
        assert mapped.GetSpacing() == pytest.approx(source.GetSpacing())
        assert mapped.GetOrigin() == pytest.approx(source.GetOrigin())
        assert mapped.GetDirection() == pytest.approx(source.GetDirection())
    # a non-integer value (a probability map by mistake): one line, nothing written
    first = next(pred_dir.iterdir())
    probabilities = sitk.Cast(sitk.ReadImage(str(first)), sitk.sitkFloat32) * 0.5
    sitk.WriteImage(probabilities, str(pred_dir / "yyy.nii.gz"))
    code, err = cli(capsys, "map-labels", "-d", 508, "-i", pred_dir, "-o", tmp_path / "again")
    assert_one_line_error(code, err, "yyy.nii.gz", "integer")
    assert not (tmp_path / "again").exists()
    (pred_dir / "yyy.nii.gz").unlink()
    # a value the dataset never predicts: one line, nothing written
    bad = sitk.GetArrayFromImage(sitk.ReadImage(str(next(pred_dir.iterdir()))))
    bad[0, 0, 0] = 9
    write(bad, pred_dir / "zzz.nii.gz")
    code, err = cli(capsys, "map-labels", "-d", 508, "-i", pred_dir, "-o", tmp_path / "again")
    assert_one_line_error(code, err, "zzz.nii.gz", "[9]")
    assert not (tmp_path / "again").exists()


def test_upgrade_rewrites_an_old_dataset_and_its_copies(msd_dataset, capsys):
    from nnunet_aux.dataset_format import read_scale_spec

    folder = msd_dataset["folder"]
    old = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    old["regions_class_order"] = [1, 2]  # what nnunet_aux 0.1 wrote: MSD's tumour value
    copies = [folder / "dataset.json", msd_dataset["tmp"] / "pre" / folder.name / "dataset.json",
              msd_dataset["tmp"] / "res" / folder.name / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "dataset.json"]
    for path in copies:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(old), encoding="utf-8")
    with pytest.raises(InputError, match=r"nnunet_aux upgrade -d 508"):
        read_scale_spec(old, f"dataset.json of {folder.name}")
    code, err = cli(capsys, "upgrade", "-d", 508, "--dry-run")
    assert code == 0 and json.loads(copies[0].read_text(encoding="utf-8"))["regions_class_order"] == [1, 2]
    code, err = cli(capsys, "upgrade", "-d", 508)
    assert code == 0, err
    for path in copies:
        new = json.loads(path.read_text(encoding="utf-8"))
        assert new["regions_class_order"] == [1, 3] and {k: v for k, v in new.items() if k != "regions_class_order"} \
            == {k: v for k, v in old.items() if k != "regions_class_order"}
        assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert main(["upgrade", "-d", "508"]) == 0 and "up to date" in capsys.readouterr().out


# ----------------------------------------------------------------------- 1. truncated compressed images
@pytest.mark.parametrize("broken", ["labelsTr/case1.nii.gz", "imagesTr/case0_0000.nii.gz"])
def test_truncated_file_stops_decompose(tmp_path, capsys, broken):
    raw = tmp_path / "raw"
    source = make_raw(raw)
    truncate(source / broken)
    before = listing(raw)
    code, err = cli(capsys, "decompose", "-d", 935, "-o", 936, "--n-scales", 2, "--no-progress", "-np", 1,
                    "--raw-root", raw)
    assert_one_line_error(code, err, broken, "truncated")
    assert listing(raw) == before  # no Dataset936, no staging folder


def test_truncated_image_is_never_linked(msd_dataset, capsys):
    task = msd_dataset["task"]
    truncate(task / "imagesTr" / "hepaticvessel_001.nii.gz")
    code, err = cli(capsys, "convert", "msd-hepaticvessel", "-i", task, "-d", 507, "--n-scales", 2,
                    "--no-progress", "-np", 1)
    assert_one_line_error(code, err, "imagesTr/hepaticvessel_001.nii.gz", "truncated")
    assert not list(msd_dataset["raw"].glob("*507*"))
    code, err = cli(capsys, "images-only", "-i", task / "imagesTr", "-o", 506, "--channel-names", "CT",
                    "--no-progress", "-np", 1)
    assert_one_line_error(code, err, "hepaticvessel_001.nii.gz", "truncated")
    assert not list(msd_dataset["raw"].glob("*506*"))


def test_truncated_uncompressed_nifti(tmp_path):
    from nnunet_aux.io.images import check_complete

    path = tmp_path / "x.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8, 8), np.int16)), str(path))
    check_complete(path)
    truncate(path)
    with pytest.raises(InputError, match="x.nii is truncated.*header promises"):
        check_complete(path)
    (tmp_path / "y.nii.gz").write_bytes(gzip.compress(b"\x00" * 100) + b"junk after the stream")
    with pytest.raises(InputError, match="y.nii.gz is truncated or corrupt"):
        check_complete(tmp_path / "y.nii.gz")


# ----------------------------------------------------------------------------- 2. evaluate's input errors
def evaluate(capsys, ref, pred, *extra):
    return cli(capsys, "evaluate", "-ref", ref, "-pred", pred, "--labels", "vessel=1", "tumour=2", "-np", 1,
               "--no-progress", *extra)


def test_evaluate_input_errors_are_one_line(eval_folders, tmp_path, capsys):
    ref, pred, _ = eval_folders  # tests/conftest.py; its dataset.json is found only when given
    assert evaluate(capsys, ref, pred)[0] == 0
    (pred / "summary_nnunet_aux.json").unlink()
    (pred / "summary_nnunet_aux.csv").unlink()

    (pred / "case1.nii.gz").rename(tmp_path / "moved.nii.gz")
    assert_one_line_error(*evaluate(capsys, ref, pred), "case1", "no prediction")
    (tmp_path / "moved.nii.gz").rename(pred / "case1.nii.gz")

    assert_one_line_error(*evaluate(capsys, tmp_path / "nope", pred), "missing reference folder", "nope")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(*evaluate(capsys, tmp_path / "empty", pred), "no segmentation files", "empty")

    write(msd_label(), pred / "case0.nii.gz", spacing=(1.0, 1.0, 1.0))
    assert_one_line_error(*evaluate(capsys, ref, pred), "geometry differ", "case0.nii.gz", "spacing")
    write(msd_label(), pred / "case0.nii.gz")

    code, err = cli(capsys, "evaluate", "-ref", ref, "-pred", pred, "-np", 1, "--no-progress")
    assert_one_line_error(code, err, "no labels given", "dataset.json")
    code, err = cli(capsys, "evaluate", "-ref", ref, "-pred", pred, "--dataset-json", tmp_path / "dj.json")
    assert_one_line_error(code, err, "missing file", "dj.json")

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root may write anyway
            assert_one_line_error(*evaluate(capsys, ref, pred, "-o", locked / "s.json"), "cannot write", "locked")
    finally:
        locked.chmod(0o700)
    (tmp_path / "file").write_text("x")
    assert_one_line_error(*evaluate(capsys, ref, pred, "-o", tmp_path / "file" / "s.json"), "file")

    truncate(pred / "case1.nii.gz")
    assert_one_line_error(*evaluate(capsys, ref, pred), "case1.nii.gz", "truncated")
    assert not (pred / "summary_nnunet_aux.json").exists()


# ------------------------------------------------------------------------------------- 3., 4. settings
@pytest.mark.parametrize("args, needle", [
    (["-n", "0"], "got 0"), (["--n-test", "-2"], "-2"), (["--shape", "0", "64", "64"], "[0, 64, 64]"),
    (["--shape", "4", "4", "4"], "[4, 4, 4]"), (["--spacing", "0", "1", "1"], "[0.0, 1.0, 1.0]"),
    (["--thresholds", "fixed", "--fixed-radii", "nan", "2"], "[nan, 2.0]"),
    (["--thresholds", "fixed", "--fixed-radii", "1", "inf"], "[1.0, inf]"),
])
def test_synth_settings_errors(tmp_path, capsys, args, needle):
    code, err = cli(capsys, "synth", "-d", 951, "-n", 1, "--shape", 16, 24, 24, "--raw-root", tmp_path / "raw",
                    "--no-progress", "-np", 1, *args)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "raw").exists() or listing(tmp_path / "raw") == []


# ----------------------------------------------------------------------- 5. a link to the target's ID
def test_link_to_the_source_cannot_be_overwritten(tmp_path, capsys):
    raw = tmp_path / "raw"
    make_raw(raw)
    link = tmp_path / "mylink"
    link.symlink_to(raw / "Dataset935_Source")
    before = listing(raw)
    code, err = cli(capsys, "decompose", "-d", link, "-o", 935, "--overwrite", "--no-progress", "-np", 1,
                    "--n-scales", 2, "--raw-root", raw)
    assert_one_line_error(code, err, "Dataset935_Source", "source")
    assert listing(raw) == before
    code, err = cli(capsys, "images-only", "-i", link, "-o", 935, "--overwrite", "--no-progress", "--raw-root", raw)
    assert_one_line_error(code, err, "Dataset935_Source", "source")
    assert listing(raw) == before


# ------------------------------------------------------------------- 6., 7. one policy for masks, spacing
@pytest.mark.parametrize("bad, needle", [
    (np.full((4, 5, 6), np.nan), "NaN"), (np.full((4, 5, 6), 0.7), "0.7"), (np.full((4, 5, 6), 2), "2"),
])
def test_metrics_and_decomposition_refuse_the_same_masks(bad, needle):
    from nnunet_aux.evaluation import vessel_metrics
    from nnunet_aux.scales import decompose_vessels

    ok = np.zeros((4, 5, 6), bool)
    with pytest.raises(InputError, match=f"pred must be binary.*{needle}"):
        vessel_metrics(bad, ok)
    with pytest.raises(InputError, match="mask must be binary"):
        decompose_vessels(bad)
    assert vessel_metrics(ok.astype(np.float32), ok)["dice"] == 1.0  # 0/1 numbers stay accepted


@pytest.mark.parametrize("kwargs, needle", [
    ({"spacing": 1e300}, "1e+300"), ({"spacing": 1e-300}, "1e-300"), ({"spacing": (1.0, 0.0, 1.0)}, "0.0"),
    ({"spacing": "1"}, "'1'"), ({"n_scales": None}, "None"), ({"n_scales": float("nan")}, "nan"),
    ({"n_scales": "3"}, "'3'"), ({"n_scales": True}, "True"),
])
def test_decompose_vessels_refuses_bad_settings(kwargs, needle):
    from nnunet_aux.scales import decompose_vessels

    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 4, 4] = True
    with pytest.raises(InputError) as info:
        decompose_vessels(mask, **kwargs)
    assert needle in str(info.value)


# ----------------------------------------------------------------------- 8. killed conversions
def test_sigterm_removes_the_staging_folder(tmp_path):
    raw = tmp_path / "raw"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "nnunet_aux.cli", "synth", "-d", "952", "-n", "40", "--shape", "32",
                             "48", "48", "--raw-root", str(raw), "--no-progress", "-np", "1"],
                            env={k: str(v) for k, v in env.items()}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list(raw.glob(".Dataset952_*.partial/imagesTr/*")) and time.time() < deadline:
        time.sleep(0.2)
    assert list(raw.glob(".Dataset952_*.partial")), "the conversion never started writing"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert listing(raw) == []


def test_what_a_killed_conversion_left_is_removed_next_time(tmp_path, capsys):
    from nnunet_aux.conversion import write_synthetic_dataset
    from nnunet_aux.conversion.staging import OWNER_FILE

    raw = tmp_path / "raw"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    stale = raw / ".Dataset953_SyntheticVessels.abc123.partial"
    (stale / "imagesTr").mkdir(parents=True)
    (stale / OWNER_FILE).write_text(f"{dead.pid} {socket.gethostname()}\n")
    alive = raw / ".Dataset953_SyntheticVessels.def456.partial"  # someone still writing: left alone
    alive.mkdir()
    (alive / OWNER_FILE).write_text(f"{os.getpid()} {socket.gethostname()}\n")
    write_synthetic_dataset(953, 1, shape=(16, 24, 24), raw_root=raw, true_scales=True, progress=False)
    assert not stale.exists() and alive.exists()
    assert f"removed {stale}" in capsys.readouterr().err
    assert not (raw / "Dataset953_SyntheticVessels" / OWNER_FILE).exists()


def test_one_rule_for_radius_thresholds_everywhere():
    """Equal thresholds leave a scale empty and are accepted by every entry point; decreasing ones
    and NaN are refused by every entry point with the same message."""
    from nnunet_aux.conversion.writer import DecompositionSettings
    from nnunet_aux.scales import assign_scales, decompose_vessels

    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 4, 4] = True
    result = decompose_vessels(mask, n_scales=3, thresholds=[2.0, 2.0])
    assert set(np.unique(assign_scales(result, [2.0, 2.0]).labels)) <= {0, 1, 3}
    DecompositionSettings(3, thresholds="fixed", fixed_radii_mm=(2.0, 2.0))
    for bad in ([3.0, 1.0], [float("nan"), 1.0]):
        for call in (lambda b=bad: decompose_vessels(mask, n_scales=3, thresholds=b),
                     lambda b=bad: assign_scales(result, b),
                     lambda b=bad: DecompositionSettings(3, thresholds="fixed", fixed_radii_mm=tuple(b))):
            with pytest.raises(InputError, match="non-decreasing"):
                call()
