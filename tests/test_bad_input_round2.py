"""Issue 24: bad input, round 2. Each numbered case of the issue has a test here (the numbers
are the issue's); the cases that need a process of their own (a file-size limit, a read-only
folder as root, Ctrl-C) are in ``test_bad_input_processes.py``.

Every failing case checks exit code 2, one line naming the file and the field or setting, no
traceback, inputs byte-identical and no output left behind; every legal case the right result
(and a warning line where the result is surely not what the user meant).
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from test_bad_input import assert_one_line_error, cli, make_raw, msd_label, write

from nnunet_aux.cli import main
from nnunet_aux.errors import InputError, InputWarning


# ---------------------------------------------------------------------------------------------- helpers
def snapshot(*folders):
    """Every file under the folders with its bytes and mode (to prove nothing changed)."""
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            out[str(p)] = (p.read_bytes() if p.is_file() else None, stat.S_IMODE(p.lstat().st_mode))
    return out


def edit_json(path, **changes):
    content = json.loads(Path(path).read_text(encoding="utf-8"))
    content.update(changes)
    Path(path).write_text(json.dumps(content), encoding="utf-8")


def decompose(capsys, raw, *extra, source=935, target=936):
    return cli(capsys, "decompose", "-d", source, "-o", target, "--n-scales", 2, "--no-progress", "-np", 1,
               "--raw-root", raw, *extra)


def nifti_bytes(array, spacing=(0.8, 0.8, 1.5)):
    """An uncompressed NIfTI-1 file of ``array`` as SimpleITK writes it."""
    import tempfile

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    with tempfile.TemporaryDirectory() as d:
        sitk.WriteImage(image, os.path.join(d, "x.nii"))
        return Path(d, "x.nii").read_bytes()


def patched(data, **fields):
    """NIfTI-1 bytes with header fields replaced: ``pixdim1`` .. ``pixdim3`` (float), ``dims`` (8 int16)."""
    data = bytearray(data)
    for axis in (1, 2, 3):
        if f"pixdim{axis}" in fields:
            data[76 + 4 * axis:80 + 4 * axis] = struct.pack("<f", fields[f"pixdim{axis}"])
    if "dims" in fields:
        data[40:56] = struct.pack("<8h", *fields["dims"])
    return bytes(data)


@pytest.fixture
def raw(tmp_path):
    raw = tmp_path / "raw"
    make_raw(raw)
    return raw


def evaluate(capsys, ref, pred, *extra):
    return cli(capsys, "evaluate", "-ref", ref, "-pred", pred, "-np", 1, "--no-progress", *extra)


# --------------------------------------- 1, 2, 16, 22, 25, 26: one validator of dataset.json, every door
@pytest.mark.parametrize("change, needles", [
    ({"labels": {"background": 0, "vessel": 1, "tumour": -2}}, ["'tumour'", "-2", "from 0 to 32767"]),    # 1
    ({"labels": {"background": 0, "vessel": -1, "tumour": 2}}, ["'vessel'", "-1", "from 0 to 32767"]),    # 1
    ({"labels": {"background": 0, "vessel": 1.7, "tumour": 2}}, ["'vessel'", "1.7"]),                     # 2
    ({"labels": {"background": 0, "vessel": 1, "tumour": 10 ** 12}}, ["'tumour'", "1000000000000"]),      # 22
    ({"numTraining": "six"}, ["numTraining", "'six'"]),                                                   # 16
    ({"file_ending": ".nii"}, ["file_ending '.nii'", "matches no file", ".nii.gz"]),                      # 25
    ({"file_ending": "nii.gz"}, ["file_ending", "starting with a dot", "'nii.gz'"]),                      # 25
    ({"labels": {"background": 0, "vessel": 1, "tumour": 1}}, ["'vessel'", "'tumour'", "share the value 1"]),
])
def test_dataset_json_fields_are_checked_before_anything_is_read(raw, capsys, change, needles):
    dataset_json = raw / "Dataset935_Source" / "dataset.json"
    edit_json(dataset_json, **change)
    before = snapshot(raw)
    code, err = decompose(capsys, raw)
    assert_one_line_error(code, err, dataset_json, *needles)
    assert snapshot(raw) == before  # no Dataset936, no staging folder, no lock, source untouched


def test_a_negative_label_value_no_longer_wraps_in_the_lookup_table():
    """Case 1 at the library level: plan_labels refuses what lut[-2] would have written everywhere."""
    from nnunet_aux.conversion.labels import plan_labels

    with pytest.raises(InputError, match=r"label 'tumour' is -2"):
        plan_labels({"background": 0, "vessel": 1, "tumour": -2}, "vessel", 2)
    with pytest.raises(InputError, match=r"label 'vessel' is 1.7"):
        plan_labels({"background": 0, "vessel": 1.7}, "vessel", 2)
    plan = plan_labels({"background": 0, "vessel": 1, "tumour": 300}, "vessel", 2)  # legal: a wide LUT
    assert plan.lut.dtype == np.uint8 and plan.lut[300] == 3


def test_more_than_255_output_labels_get_a_wider_dtype():
    from nnunet_aux.conversion.labels import plan_labels

    others = {f"organ{i}": i + 2 for i in range(300)}
    plan = plan_labels({"background": 0, "vessel": 1, **others}, "vessel", 3)
    assert plan.lut.dtype == np.uint16 and int(plan.lut.max()) == 303
    label = np.array([[[0, 1, 301]]])
    out = plan.relabel(label, np.array([[[0, 2, 0]]], np.uint8))
    assert out.dtype == np.uint16 and out.tolist() == [[[0, 2, 303]]]


@pytest.mark.parametrize("command", ["decompose", "evaluate", "map-labels", "upgrade", "multiclass", "images-only"])
def test_dataset_json_that_is_a_list(tmp_path, raw, eval_folders, capsys, command):
    """Case 26: one line naming the file, whichever command reads it."""
    source = raw / "Dataset935_Source"
    (source / "dataset.json").write_text("[1, 2, 3]", encoding="utf-8")
    ref, pred, _ = eval_folders
    before = snapshot(tmp_path)
    args = {
        "decompose": ["decompose", "-d", 935, "-o", 936, "--raw-root", raw, "--no-progress", "-np", 1],
        "evaluate": ["evaluate", "-ref", ref, "-pred", pred, "--dataset-json", source / "dataset.json", "-np", 1,
                     "--no-progress"],
        "map-labels": ["map-labels", "-d", 935, "-i", pred, "-o", tmp_path / "out", "--raw-root", raw],
        "upgrade": ["upgrade", "-d", 935, "--raw-root", raw],
        "multiclass": ["multiclass", "-d", 935, "-o", 936, "--raw-root", raw],
        "images-only": ["images-only", "-i", 935, "-o", 936, "--raw-root", raw, "--no-progress"],
    }[command]
    code, err = cli(capsys, *args)
    assert_one_line_error(code, err, source / "dataset.json", "expected a JSON object", "list")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ 3, 21: header against payload
@pytest.mark.parametrize("what", ["short payload", "huge header"])
def test_nifti_payload_must_match_its_header(raw, tmp_path, eval_folders, capsys, what):
    """Case 3: a .nii.gz whose gzip stream is intact but whose voxels are fewer than the header
    says was zero-filled; case 21: a header claiming 1000 x 1000 x 500 voxels was a MemoryError."""
    data = nifti_bytes(msd_label())
    data = data[:-200] if what == "short payload" else patched(data, dims=(3, 1000, 1000, 500, 1, 1, 1, 1))
    label = raw / "Dataset935_Source" / "labelsTr" / "case1.nii.gz"
    label.write_bytes(gzip.compress(data))
    before = snapshot(raw)
    code, err = decompose(capsys, raw)
    assert_one_line_error(code, err, label, "header promises")
    assert snapshot(raw) == before
    ref, pred, dataset_json = eval_folders
    (pred / "case1.nii.gz").write_bytes(gzip.compress(data))
    code, err = evaluate(capsys, ref, pred, "--dataset-json", dataset_json)
    assert_one_line_error(code, err, pred / "case1.nii.gz", "header promises")
    assert not (pred / "summary_nnunet_aux.json").exists()


# ---------------------------------------------------------- 10, 24: voxel sizes read one way, never 0
def test_zero_voxel_size_is_refused(raw, eval_folders, capsys):
    image = raw / "Dataset935_Source" / "imagesTr" / "case0_0000.nii.gz"
    image.write_bytes(gzip.compress(patched(nifti_bytes((msd_label() * 100).astype(np.int16)), pixdim1=0.0)))
    before = snapshot(raw)
    code, err = decompose(capsys, raw)
    assert_one_line_error(code, err, image, "voxel size of 0 mm", "pixdim[1]")
    assert snapshot(raw) == before
    ref, pred, dataset_json = eval_folders
    (ref / "case0.nii.gz").write_bytes(gzip.compress(patched(nifti_bytes(msd_label()), pixdim3=0.0)))
    code, err = evaluate(capsys, ref, pred, "--dataset-json", dataset_json)
    assert_one_line_error(code, err, ref / "case0.nii.gz", "pixdim[3]")


def test_negative_voxel_size_in_image_and_label_is_read_one_way(raw, capsys):
    """Case 24: header-only reads gave -0.8, full reads +0.8 with a flipped axis: "spacing mismatch"
    between two identical headers. Now both give +0.8 and the flipped direction."""
    from nnunet_aux.io.images import read_geometry, read_label_map

    source = raw / "Dataset935_Source"
    for i in range(2):
        image = source / "imagesTr" / f"case{i}_0000.nii.gz"
        label = source / "labelsTr" / f"case{i}.nii.gz"
        image.write_bytes(gzip.compress(patched(nifti_bytes((msd_label() * 100).astype(np.int16)), pixdim1=-0.8)))
        label.write_bytes(gzip.compress(patched(nifti_bytes(msd_label()), pixdim1=-0.8)))
    header, full = read_geometry(image), read_label_map(label)[1]
    assert header.spacing == pytest.approx(full.spacing) and header.spacing[0] == pytest.approx(0.8)
    assert header.direction == pytest.approx(full.direction) and header.direction[0] == -1
    code, err = decompose(capsys, raw)
    assert code == 0, err
    written = sitk.ReadImage(str(raw / "Dataset936_Source_scales" / "labelsTr" / "case0.nii.gz"))
    assert written.GetSpacing()[0] == pytest.approx(0.8) and written.GetDirection()[0] == -1


# ------------------------------------------------------------------------- 11, 12: what an image holds
def test_vector_image_is_refused(raw, tmp_path, capsys):
    """Case 11: a 3-component image in imagesTr was accepted."""
    image = raw / "Dataset935_Source" / "imagesTr" / "case0_0000.nii.gz"
    vector = sitk.GetImageFromArray(np.zeros((16, 24, 24, 3), np.float32), isVector=True)
    vector.SetSpacing((0.8, 0.8, 1.5))
    sitk.WriteImage(vector, str(image))
    before = snapshot(raw)
    code, err = decompose(capsys, raw)
    assert_one_line_error(code, err, image, "3 components")
    code, err = cli(capsys, "images-only", "-i", raw / "Dataset935_Source", "-o", 940, "--raw-root", raw,
                    "--no-progress", "-np", 1)
    assert_one_line_error(code, err, image, "component")
    assert snapshot(raw) == before


@pytest.mark.parametrize("ending, bad", [(".mha", np.nan), (".mha", np.inf), (".nii.gz", np.nan)])
def test_nan_or_inf_in_an_image_is_refused(tmp_path, capsys, ending, bad):
    """Case 12: NaN became background in images-only; the NIfTI payload check finds it without a full read."""
    folder, raw = tmp_path / "images", tmp_path / "raw"
    raw.mkdir()  # the configured raw folder exists (a conversion creates it when missing)
    for i in range(2):
        array = np.full((8, 12, 12), 100.0, np.float32)
        if i == 1:
            array[4, 5, 6] = bad
        write(array, folder / f"img{i}{ending}")
    before = snapshot(tmp_path)
    code, err = cli(capsys, "images-only", "-i", folder, "-o", 941, "--channel-names", "CT", "--threshold", 50,
                    "--raw-root", raw, "--no-progress", "-np", 1)
    assert_one_line_error(code, err, folder / f"img1{ending}", "NaN or infinite")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------ 13, 14, 15: legal, but surely not what was meant
def test_threshold_above_every_voxel_warns(tmp_path, capsys):
    """Case 13: all-zero dummy labels were written without a word."""
    folder, raw = tmp_path / "images", tmp_path / "raw"
    for i in range(2):
        write(np.full((8, 12, 12), -1000, np.int16), folder / f"img{i}.nii.gz")
    code = main(["images-only", "-i", str(folder), "-o", "942", "--channel-names", "CT", "--threshold", "500",
                 "--raw-root", str(raw), "--no-progress", "-np", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "warning:" in lines[0] and "500" in lines[0] and "2 of 2" in lines[0], lines
    assert (raw / "Dataset942_ImagesOnly" / "labelsTr" / "img0.nii.gz").is_file()


def test_dataset_without_vessel_voxels_warns(raw, capsys):
    """Case 14: converted without a word."""
    source = raw / "Dataset935_Source"
    for i in range(2):
        label = msd_label()
        label[label == 1] = 0
        write(label, source / "labelsTr" / f"case{i}.nii.gz")
    code, err = decompose(capsys, raw)
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 1 and "warning:" in lines[0] and "'vessel'" in lines[0], err
    assert (raw / "Dataset936_Source_scales" / "dataset.json").is_file()
    from nnunet_aux.conversion import decompose_dataset

    with pytest.warns(InputWarning, match="no training case has a 'vessel' voxel"):
        decompose_dataset(935, 937, raw_root=raw, progress=False)


def test_undeclared_reference_value_warns(eval_folders, capsys):
    """Case 15: a reference value the dataset.json does not declare (77) was silently background."""
    ref, pred, dataset_json = eval_folders
    label = msd_label()
    label[0, 0, :3] = 77
    write(label, ref / "case1.nii.gz")
    code, err = evaluate(capsys, ref, pred, "--dataset-json", dataset_json)
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 1 and "warning:" in lines[0] and "[77]" in lines[0] and "case1" in lines[0], err
    summary = json.loads((pred / "summary_nnunet_aux.json").read_text(encoding="utf-8"))
    assert summary["undeclared_reference_values"] == {"case1": [77]}


# ---------------------------------------------------------------- 5, 19: outputs never overwrite inputs
@pytest.mark.parametrize("target", ["reference", "prediction", "dataset.json"])
def test_evaluate_output_never_overwrites_an_input(eval_folders, tmp_path, capsys, target):
    """Case 5."""
    ref, pred, dataset_json = eval_folders
    output = {"reference": ref / "case0.nii.gz", "prediction": pred / "case1.nii.gz",
              "dataset.json": dataset_json}[target]
    before = snapshot(tmp_path)
    code, err = evaluate(capsys, ref, pred, "--dataset-json", dataset_json, "-o", output)
    assert_one_line_error(code, err, "-o", "would overwrite")
    assert snapshot(tmp_path) == before


def test_evaluate_output_through_a_link(eval_folders, tmp_path, capsys):
    ref, pred, dataset_json = eval_folders
    (tmp_path / "link.json").symlink_to(dataset_json)
    before = snapshot(tmp_path)
    code, err = evaluate(capsys, ref, pred, "--dataset-json", dataset_json, "-o", tmp_path / "link.json")
    assert_one_line_error(code, err, "link.json", "would overwrite the dataset.json")
    assert snapshot(tmp_path) == before


@pytest.fixture
def predictions(msd_dataset, tmp_path):
    """Predictions of the converted MSD dataset as nnU-Net writes them (vessel 1, tumour 3)."""
    from test_bad_input import nnunet_prediction

    folder = msd_dataset["folder"]
    dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    pred = tmp_path / "pred"
    pred.mkdir()
    for ref_file in sorted((folder / "labelsTr").iterdir()):
        reference = sitk.ReadImage(str(ref_file))
        out = sitk.GetImageFromArray(nnunet_prediction(dataset_json, sitk.GetArrayFromImage(reference))[0])
        out.CopyInformation(reference)
        sitk.WriteImage(out, str(pred / ref_file.name))
    return pred


def test_map_labels_on_its_own_output_is_refused(predictions, tmp_path, capsys):
    """Case 6: mapping MSD values again read the tumour (2) as a vessel scale."""
    out = tmp_path / "msd"
    code, err = cli(capsys, "map-labels", "-d", 508, "-i", predictions, "-o", out)
    assert code == 0, err
    before = snapshot(tmp_path)
    code, err = cli(capsys, "map-labels", "-d", 508, "-i", out, "-o", tmp_path / "twice")
    assert_one_line_error(code, err, out, "already", ".nnunet_aux_map_labels.json")
    assert snapshot(tmp_path) == before
    # without the marker (files copied elsewhere), MSD's tumour 2 is not a value nnU-Net predicts here
    copied = tmp_path / "copied"
    copied.mkdir()
    for f in out.glob("*.nii.gz"):
        (copied / f.name).write_bytes(f.read_bytes())
    code, err = cli(capsys, "map-labels", "-d", 508, "-i", copied, "-o", tmp_path / "twice")
    assert_one_line_error(code, err, "values [2] are not predicted values")
    assert not (tmp_path / "twice").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_map_labels_output_onto_an_input_file(predictions, tmp_path, capsys, overwrite):
    """Case 19: was a FileExistsError / NotADirectoryError traceback."""
    victim = sorted(predictions.glob("*.nii.gz"))[0]
    before = snapshot(tmp_path)
    code, err = cli(capsys, "map-labels", "-d", 508, "-i", predictions, "-o", victim,
                    *(["--overwrite"] if overwrite else []))
    assert_one_line_error(code, err, "-o", victim, "would overwrite the prediction")
    assert snapshot(tmp_path) == before


# -------------------------------------------------------------------------- 7: one conversion per ID
def test_a_second_conversion_to_a_locked_id_stops(raw, capsys):
    """Case 7: two decompose runs to one ID made two Dataset936_* folders; the second now stops."""
    from nnunet_aux.io.files import dataset_id_lock

    (raw / "Dataset935_Source").rename(raw / "Dataset935_Other")
    make_raw(raw, name="Dataset934_Source")
    with dataset_id_lock(raw, 936):
        before = snapshot(raw)
        code, err = decompose(capsys, raw, source=934)
        assert_one_line_error(code, err, "dataset ID 936", "being written by another conversion", f"PID {os.getpid()}")
        assert snapshot(raw) == before
    code, err = decompose(capsys, raw, source=934)
    assert code == 0, err
    code, err = decompose(capsys, raw, source=935)
    assert_one_line_error(code, err, "dataset ID 936 already exists")
    assert [p.name for p in raw.iterdir() if p.name.startswith("Dataset936")] == ["Dataset936_Source_scales"]
    assert not list(raw.glob(".*lock"))


# --------------------------------------------------------------------------- 8: outputs follow the umask
@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def modes(folder):
    """{mode of folders}, {mode of files} under ``folder`` (hidden files and links excluded)."""
    dirs, files = {stat.S_IMODE(folder.stat().st_mode)}, set()
    for p in folder.rglob("*"):
        if not p.name.startswith("."):
            (dirs if p.is_dir() else files).add(stat.S_IMODE(p.stat().st_mode))
    return dirs, files


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_outputs_follow_the_umask(raw, tmp_path, predictions, capsys, umask, mask):
    """Case 8: folders came out 0700 and files 0600 whatever the umask; upgrade made a 0644 file 0600."""
    os.umask(mask)
    folder_mode, file_mode = 0o777 & ~mask, 0o666 & ~mask
    for sub in ("imagesTr", "labelsTr"):
        for f in (raw / "Dataset935_Source" / sub).iterdir():
            f.chmod(file_mode)  # linked images keep their own mode
    assert decompose(capsys, raw)[0] == 0
    assert main(["multiclass", "-d", "936", "-o", "937", "--raw-root", str(raw)]) == 0
    assert main(["images-only", "-i", "935", "-o", "938", "--raw-root", str(raw), "--no-progress", "-np", "1"]) == 0
    assert main(["synth", "-d", "939", "-n", "1", "--shape", "16", "24", "24", "--true-scales", "--raw-root", str(raw),
                 "--no-progress", "-np", "1"]) == 0
    assert main(["map-labels", "-d", "508", "-i", str(predictions), "-o", str(tmp_path / "msd")]) == 0
    for folder in [*(p for p in raw.iterdir() if p.name[:10] in ("Dataset936", "Dataset937", "Dataset938",
                                                                 "Dataset939")), tmp_path / "msd"]:
        assert modes(folder) == ({folder_mode}, {file_mode}), folder
    summary = tmp_path / "s.json"
    code, err = evaluate(capsys, raw / "Dataset936_Source_scales" / "labelsTr",
                         raw / "Dataset936_Source_scales" / "labelsTr", "--labels", "vessel=1", "-o", summary)
    assert code == 0, err
    assert stat.S_IMODE(summary.stat().st_mode) == file_mode
    assert stat.S_IMODE(summary.with_suffix(".csv").stat().st_mode) == file_mode
    capsys.readouterr()


def test_upgrade_keeps_the_mode_of_a_file_it_rewrites(msd_dataset, capsys, umask):
    dataset_json = msd_dataset["folder"] / "dataset.json"
    edit_json(dataset_json, regions_class_order=[1, 2])
    dataset_json.chmod(0o644)
    code, err = cli(capsys, "upgrade", "-d", 508)
    assert code == 0, err
    assert stat.S_IMODE(dataset_json.stat().st_mode) == 0o644
    assert json.loads(dataset_json.read_text(encoding="utf-8"))["regions_class_order"] == [1, 3]


# ------------------------------------------------------------------------ 9, 23: the number of scales
def test_more_than_255_scales_do_not_wrap():
    """Case 9: scale 300 was stored as 44 (uint8)."""
    from nnunet_aux.scales import decompose_vessels

    mask = np.zeros((12, 12, 12), bool)
    mask[2:10, 5:7, 5:7] = True
    result = decompose_vessels(mask, n_scales=300)
    assert result.labels.dtype == np.uint16 and int(result.labels.max()) == 300
    assert decompose_vessels(mask, n_scales=3).labels.dtype == np.uint8


@pytest.mark.parametrize("n_scales", [10 ** 9, 1e9, 32768])
def test_huge_numbers_of_scales_are_refused(n_scales):
    """Case 23: a MemoryError through the API (the CLI refused already)."""
    from nnunet_aux.scales import decompose_vessels

    with pytest.raises(InputError, match="n_scales .* at most 32767"):
        decompose_vessels(np.zeros((8, 8, 8), bool), n_scales=n_scales)


# --------------------------------------------------------------------------------- 17, 18: settings
@pytest.mark.parametrize("seed", ["-1", "-5"])
def test_negative_seed(tmp_path, capsys, seed):
    """Case 17: a ValueError traceback from numpy's SeedSequence."""
    code, err = cli(capsys, "synth", "-d", 951, "-n", 1, "--shape", 16, 24, 24, "--seed", seed, "--raw-root",
                    tmp_path / "raw", "--no-progress", "-np", 1)
    assert_one_line_error(code, err, "seed", seed)
    assert not (tmp_path / "raw").exists()
    from nnunet_aux.synthetic import generate_case

    with pytest.raises(InputError, match="seed must be a non-negative integer"):
        generate_case((16, 24, 24), seed=-1)


@pytest.mark.parametrize("how", ["--raw-root", "$nnUNet_raw", "under a file"])
@pytest.mark.parametrize("command", ["decompose", "synth", "images-only"])
def test_raw_root_that_is_a_file(tmp_path, raw, capsys, monkeypatch, how, command):
    """Case 18: a traceback (FileExistsError / NotADirectoryError)."""
    a_file = tmp_path / "raw_file"
    a_file.write_text("not a folder")
    root = a_file / "sub" if how == "under a file" else a_file
    args = {"decompose": ["decompose", "-d", raw / "Dataset935_Source", "-o", 936, "--n-scales", 2, "-np", 1],
            "synth": ["synth", "-d", 951, "-n", 1, "--shape", 16, 24, 24, "-np", 1],
            "images-only": ["images-only", "-i", raw / "Dataset935_Source", "-o", 936, "-np", 1]}[command]
    if how == "$nnUNet_raw":
        monkeypatch.setenv("nnUNet_raw", str(root))
    else:
        args += ["--raw-root", root]
    before = snapshot(tmp_path)
    code, err = cli(capsys, *args, "--no-progress")
    assert_one_line_error(code, err, a_file, "--raw-root" if how == "--raw-root" else "", "file")
    if how == "$nnUNet_raw":
        assert "$nnUNet_raw" in err
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------ 27: upgrade all or nothing
@pytest.mark.parametrize("broken", ["invalid JSON", "a list", "labels with -1"])
def test_upgrade_meeting_a_broken_copy_changes_nothing(msd_dataset, capsys, broken):
    folder = msd_dataset["folder"]
    old = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    old["regions_class_order"] = [1, 2]
    raw_copy = folder / "dataset.json"
    pre_copy = msd_dataset["tmp"] / "pre" / folder.name / "dataset.json"
    res_copy = msd_dataset["tmp"] / "res" / folder.name / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "dataset.json"
    for path in (raw_copy, pre_copy, res_copy):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(old), encoding="utf-8")
    res_copy.write_text({"invalid JSON": "{\"labels\": ", "a list": "[]",
                         "labels with -1": json.dumps({**old, "labels": {"background": 0, "vessel": -1}})}[broken],
                        encoding="utf-8")
    before = snapshot(msd_dataset["tmp"])
    code, err = cli(capsys, "upgrade", "-d", 508)
    assert_one_line_error(code, err, res_copy)
    assert snapshot(msd_dataset["tmp"]) == before  # the raw and preprocessed copies too


def test_upgrade_that_cannot_write_a_copy_puts_back_what_it_wrote(msd_dataset, capsys, monkeypatch):
    import nnunet_aux.conversion.upgrade as upgrade

    folder = msd_dataset["folder"]
    edit_json(folder / "dataset.json", regions_class_order=[1, 2])
    pre_copy = msd_dataset["tmp"] / "pre" / folder.name / "dataset.json"
    pre_copy.parent.mkdir(parents=True)
    pre_copy.write_bytes((folder / "dataset.json").read_bytes())
    real = upgrade.write_dataset_json

    def failing(content, path):
        if Path(path) == pre_copy:
            raise InputError(f"cannot write {path}: No space left on device")
        return real(content, path)

    monkeypatch.setattr(upgrade, "write_dataset_json", failing)
    before = snapshot(msd_dataset["tmp"])
    code, err = cli(capsys, "upgrade", "-d", 508)
    assert_one_line_error(code, err, pre_copy, "No space left", "nothing was changed")
    assert {k: v[0] for k, v in snapshot(msd_dataset["tmp"]).items()} == {k: v[0] for k, v in before.items()}


# ------------------------------------------------------------------ the resume state, written atomically
def test_json_state_is_written_atomically(tmp_path, umask):
    """The demo's resume state (and the experiment runner's) go through write_json_atomic: a failure
    while writing leaves the old file whole, a new file gets the umask's mode."""
    import inspect

    from nnunet_aux.dataset_format import write_json_atomic
    from nnunet_aux.demo import pipeline

    state = tmp_path / "demo_state.json"
    write_json_atomic({"finished": {"synth": 1.0}}, state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o644
    with pytest.raises(TypeError):
        write_json_atomic({"finished": {"train": object()}}, state)  # fails half-way through the text
    assert json.loads(state.read_text(encoding="utf-8")) == {"finished": {"synth": 1.0}}
    assert [p.name for p in tmp_path.iterdir()] == ["demo_state.json"]
    assert "write_json_atomic(self.state, self.workdir / STATE_FILE)" in inspect.getsource(pipeline._Demo.run)
