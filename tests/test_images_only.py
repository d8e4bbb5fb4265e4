"""`nnunet_aux images-only`: unlabelled images into an nnU-Net raw dataset with dummy labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_aux.cli import main
from nnunet_aux.conversion import make_images_only_dataset
from nnunet_aux.errors import DatasetExistsError, InputError


def write(path, array, spacing=(0.8, 0.9, 2.5), origin=(1.0, 2.0, 3.0)):
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def raw(tmp_path, monkeypatch):
    for k in ("nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(k, raising=False)
    root = tmp_path / "raw"
    root.mkdir()
    return root


def test_plain_folder_of_single_channel_images(tmp_path, raw):
    src = tmp_path / "scans"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ("patient_a", "patient_b"):
        write(src / f"{name}.nii.gz", rng.normal(size=(4, 5, 6)) * 100 - 400)
    folder = make_images_only_dataset([src], 701, channel_names=["CT"], raw_root=raw, progress=False)
    assert folder.name == "Dataset701_ImagesOnly"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["patient_a_0000.nii.gz",
                                                                       "patient_b_0000.nii.gz"]
    dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "CT"} and dataset_json["labels"] == {"background": 0, "image": 1}
    assert dataset_json["numTraining"] == 2 and dataset_json["file_ending"] == ".nii.gz"
    image = sitk.ReadImage(str(folder / "imagesTr" / "patient_a_0000.nii.gz"))
    label = sitk.ReadImage(str(folder / "labelsTr" / "patient_a.nii.gz"))
    assert np.all(sitk.GetArrayFromImage(label) == 1)
    for attribute in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(label, attribute)() == getattr(image, attribute)()
    report = json.loads((folder / "images_only_report.json").read_text(encoding="utf-8"))
    assert report["cases"]["patient_b"] == [str(src / "patient_b.nii.gz")]


def test_threshold_labels_the_body_only(tmp_path, raw):
    src = tmp_path / "scans"
    src.mkdir()
    array = np.full((3, 4, 4), -1000.0)
    array[1, 1:3, 1:3] = 40
    write(src / "case_0000.nii.gz", array)
    folder = make_images_only_dataset([src], 702, channel_names=["CT"], foreground_threshold=-500, raw_root=raw,
                                      progress=False)
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / "case.nii.gz")))
    np.testing.assert_array_equal(label, (array > -500).astype(np.uint8))


def test_nnunet_dataset_sources_keep_channels_and_take_test_images_on_request(tmp_path, raw):
    src = raw / "Dataset703_Two"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (src / sub).mkdir(parents=True)
    for case, sub in (("tr1", "imagesTr"), ("tr2", "imagesTr"), ("ts1", "imagesTs")):
        for c in range(2):
            write(src / sub / f"{case}_{c:04d}.nrrd", np.zeros((2, 3, 4)) + c)
    (src / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "tumour": 1}, "numTraining": 2,
        "file_ending": ".nrrd"}))
    folder = make_images_only_dataset(["703"], 704, raw_root=raw, progress=False)
    assert folder.name == "Dataset704_Two_images"
    assert json.loads((folder / "dataset.json").read_text(encoding="utf-8"))["channel_names"] == {"0": "T1", "1": "T2"}
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["tr1.nrrd", "tr2.nrrd"]
    with_test = make_images_only_dataset([src], 705, include_test=True, raw_root=raw, progress=False)
    assert sorted(p.name for p in (with_test / "imagesTr").iterdir()) == [
        f"{c}_{k:04d}.nrrd" for c in ("tr1", "tr2", "ts1") for k in range(2)]
    with pytest.raises(InputError, match="ID of the source"):
        make_images_only_dataset([src], 703, raw_root=raw, progress=False)
    with pytest.raises(DatasetExistsError):
        make_images_only_dataset([src], 704, raw_root=raw, progress=False)
    assert make_images_only_dataset([src], 704, raw_root=raw, overwrite=True, progress=False).is_dir()


def test_bad_input_is_reported(tmp_path, raw):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    write(a / "x.nii.gz", np.zeros((2, 2, 2)))
    write(b / "x.nii.gz", np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match="channel names"):
        make_images_only_dataset([a], 706, raw_root=raw, progress=False)
    with pytest.raises(InputError, match="unique"):
        make_images_only_dataset([a, b], 706, channel_names=["CT"], raw_root=raw, progress=False)
    write(b / "y.nrrd", np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match="file endings"):
        make_images_only_dataset([b], 706, channel_names=["CT"], raw_root=raw, progress=False)
    with pytest.raises(InputError, match="neither a folder"):
        make_images_only_dataset([tmp_path / "missing"], 706, channel_names=["CT"], raw_root=raw, progress=False)
    assert not list(raw.glob("Dataset706_*")) and not list(raw.glob(".*"))  # nothing left behind


def test_command_line(tmp_path, raw, capsys):
    src = tmp_path / "scans"
    src.mkdir()
    write(src / "s1.nii.gz", np.zeros((2, 3, 3)))
    args = ["images-only", "-i", str(src), "-o", "707", "--channel-names", "CT", "--raw-root", str(raw),
            "--no-progress", "-np", "1"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(raw / "Dataset707_ImagesOnly")
    assert main(args) == 2  # exists
    assert "already exists" in capsys.readouterr().err
