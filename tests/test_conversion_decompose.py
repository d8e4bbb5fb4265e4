"""`decompose_dataset` on generic nnU-Net raw datasets and the MSD Task08 layout; bad input."""

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_aux.conversion import DecompositionSettings, convert_msd_hepaticvessel, decompose_dataset
from nnunet_aux.dataset_format import load_dataset_json, read_scale_spec
from nnunet_aux.errors import DatasetExistsError, InputError

ORIGIN = (10.0, -5.0, 3.0)
DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
SPACING_XYZ = (1.0, 1.0, 1.0)
NO_PROGRESS = dict(progress=False)


def write(array, path, spacing=SPACING_XYZ, origin=ORIGIN, direction=DIRECTION):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def tube_label(shape=(20, 24, 24)):
    """Thin tube (r 1.5) and thick tube (r 3.5) of value ``vessel``; liver block elsewhere."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    inside = (z > 1) & (z < shape[0] - 2)
    thin = ((y - 6) ** 2 + (x - 6) ** 2 <= 1.5 ** 2) & inside
    thick = ((y - 15) ** 2 + (x - 15) ** 2 <= 3.5 ** 2) & inside
    return thin, thick


def make_raw_dataset(root, name="Dataset100_Source", n_train=2, n_test=1):
    """Two channels; labels background 0, liver 1, vessel 2, ignore 3."""
    folder = root / name
    thin, thick = tube_label()
    for i in range(n_train + n_test):
        split = "Tr" if i < n_train else "Ts"
        label = np.zeros(thin.shape, dtype=np.uint8)
        label[:, 20:, :] = 1
        label[0] = 3
        label[thin | thick] = 2
        for c in range(2):
            write((label * 50 + c).astype(np.int16), folder / f"images{split}" / f"case{i}_{c:04d}.nii.gz")
        if split == "Tr":
            write(label, folder / "labelsTr" / f"case{i}.nii.gz")
    dataset_json = {"channel_names": {"0": "CT", "1": "other"},
                    "labels": {"background": 0, "liver": 1, "vessel": 2, "ignore": 3},
                    "numTraining": n_train, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    return folder


def decompose(raw, source=100, target=200, **kwargs):
    settings = kwargs.pop("settings", DecompositionSettings(2))
    return decompose_dataset(source, target, settings=settings, raw_root=raw, **NO_PROGRESS, **kwargs)


def test_generic_dataset(tmp_path):
    source = make_raw_dataset(tmp_path)
    out = decompose(tmp_path)
    assert out == tmp_path / "Dataset200_Source_scales"
    dj = load_dataset_json(out)
    assert dj["labels"] == {"background": 0, "vessel": [1, 2], "liver": 3, "ignore": 4}
    # Each region is predicted with a value inside it (vessel 1, liver 3), so nnU-Net's own evaluation reads it.
    assert dj["regions_class_order"] == [1, 3]
    assert dj["channel_names"] == {"0": "CT", "1": "other"} and dj["numTraining"] == 2
    assert read_scale_spec(dj).regions == {"vessel": (1, 2), "liver": (3,)}

    thin, thick = tube_label()
    label_image = sitk.ReadImage(str(out / "labelsTr" / "case0.nii.gz"))
    label = sitk.GetArrayFromImage(label_image)
    assert set(np.unique(label[thin])) == {1} and set(np.unique(label[thick])) == {2}
    assert np.all(label[0] == 4) and np.all(label[1:, 20:][~(thin | thick)[1:, 20:]] == 3)
    assert label_image.GetOrigin() == ORIGIN and label_image.GetDirection() == DIRECTION
    for split, case in (("Tr", "case0"), ("Ts", "case2")):
        for c in range(2):
            name = f"images{split}/{case}_{c:04d}.nii.gz"
            assert os.path.samefile(source / name, out / name)  # hard-linked, not re-encoded
    assert not (out / "labelsTs").exists()
    report = json.loads((out / "scale_decomposition_report.json").read_text(encoding="utf-8"))
    assert report["label_mapping"] == {"0": 0, "1": 3, "2": [1, 2], "3": 4}
    assert report["training_cases"]["case0"]["n_voxels_per_scale"] == {"small": int(thin.sum()),
                                                                        "large": int(thick.sum())}
    assert report["test_cases"]["case2"]["labelled"] is False


@pytest.mark.slow  # nnU-Net's verification starts a spawned process pool for each check
def test_generic_dataset_passes_nnunet_verification(tmp_path):
    """nnU-Net reads the decomposed dataset as meant and its integrity check, which rejects a broken
    copy of it, accepts it."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    make_raw_dataset(tmp_path)
    out = decompose(tmp_path)
    # what nnU-Net finds: both training cases with their two channels and label; the test case is no training case
    found = get_filenames_of_train_images_and_targets(str(out))
    assert sorted(found) == ["case0", "case1"]
    for case, files in found.items():
        assert [os.path.basename(f) for f in files["images"]] == [f"{case}_0000.nii.gz", f"{case}_0001.nii.gz"]
        assert files["label"] == str(out / "labelsTr" / f"{case}.nii.gz")
    labels = LabelManager(load_dataset_json(out)["labels"], load_dataset_json(out)["regions_class_order"])
    assert labels.foreground_regions == [(1, 2), 3] and labels.ignore_label == 4
    verify_dataset_integrity(str(out), num_processes=1)  # raises on any problem it finds

    # the same check on a copy with an undeclared label value (7): nnU-Net refuses it
    label_file = out / "labelsTr" / "case1.nii.gz"
    label = sitk.ReadImage(str(label_file))
    array = sitk.GetArrayFromImage(label)
    array[5, 5, 5] = 7
    broken = sitk.GetImageFromArray(array)
    broken.CopyInformation(label)
    label_file.unlink()  # a new file, in case it is a link
    sitk.WriteImage(broken, str(label_file))
    with pytest.raises(RuntimeError, match="unexpected labels"):
        verify_dataset_integrity(str(out), num_processes=1)


def test_source_by_name_or_path_and_target_name(tmp_path):
    source = make_raw_dataset(tmp_path)
    assert decompose(tmp_path, "Dataset100_Source", "Dataset201_Mine").name == "Dataset201_Mine"
    assert decompose(tmp_path, str(source), 202).name == "Dataset202_Source_scales"
    with pytest.raises(DatasetExistsError):
        decompose(tmp_path, 100, 202)
    with pytest.raises(InputError, match="ID of the source"):
        decompose(tmp_path, 100, 100, overwrite=True)
    with pytest.raises(InputError, match="no dataset with ID 101"):
        decompose(tmp_path, 101, 203)
    with pytest.raises(InputError, match="DatasetXXX_Name"):
        decompose(tmp_path, 100, "Dataset12_Bad")


def _break(tmp_path, how):
    source = make_raw_dataset(tmp_path)
    dataset_json = json.loads((source / "dataset.json").read_text(encoding="utf-8"))
    label_file = source / "labelsTr" / "case1.nii.gz"
    if how == "missing image":
        (source / "imagesTr" / "case1_0001.nii.gz").unlink()
    elif how == "missing label":
        label_file.unlink()
    elif how == "shape":
        write(np.zeros((20, 24, 23), np.uint8), label_file)
    elif how == "spacing":
        write(np.zeros((20, 24, 24), np.uint8), label_file, spacing=(1.0, 1.0, 2.0))
    elif how == "values":
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
        label[5, 5, 5] = 7
        write(label, label_file)
    elif how == "non-integer":
        write(np.full((20, 24, 24), 0.5, np.float32), label_file)
    elif how == "numTraining":
        dataset_json["numTraining"] = 3
    elif how == "vessel name":
        dataset_json["labels"] = {"background": 0, "liver": 1, "vein": 2, "ignore": 3}
    elif how == "regions":
        dataset_json["labels"]["both"] = [1, 2]
    (source / "dataset.json").write_text(json.dumps(dataset_json))
    return source


@pytest.mark.parametrize("how, message", [
    ("missing image", r"missing file .*imagesTr/case1_0001.nii.gz"),
    ("missing label", r"missing file .*labelsTr/case1.nii.gz"),
    ("shape", r"shape mismatch: .*case1.nii.gz"),
    ("spacing", r"spacing mismatch: .*case1.nii.gz"),
    ("values", r"case1.nii.gz: label values \[7\] are not declared"),
    ("non-integer", r"case1.nii.gz: label map holds non-integer values"),
    ("numTraining", r"dataset.json says numTraining = 3, but 2"),
    ("vessel name", r"no label named 'vessel'"),
    ("regions", r"region-based source datasets are not supported"),
])
def test_bad_input_stops_with_a_clear_message_and_writes_nothing(tmp_path, how, message):
    source = _break(tmp_path, how)
    with pytest.raises(InputError, match=message):
        decompose(tmp_path)
    assert list(tmp_path.iterdir()) == [source]


def make_msd(root):
    """Task08 layout: MSD dataset.json, '._' resource forks, float labels with their own origin."""
    task = root / "Task08_HepaticVessel"
    thin, thick = tube_label()
    for i, split in ((1, "Tr"), (2, "Tr"), (3, "Ts")):
        label = np.zeros(thin.shape, np.float32)
        label[2:6, 18:, 18:] = 2
        label[thin | thick] = 1
        write((label * 100).astype(np.int16), task / f"images{split}" / f"hepaticvessel_{i:03d}.nii.gz")
        if split == "Tr":
            write(label, task / "labelsTr" / f"hepaticvessel_{i:03d}.nii.gz", origin=(0.0, 0.0, 0.0))
    (task / "imagesTr" / "._hepaticvessel_001.nii.gz").write_bytes(b"\x00junk")
    (task / "labelsTr" / "._hepaticvessel_001.nii.gz").write_bytes(b"\x00junk")
    (task / "dataset.json").write_text(json.dumps({
        "name": "HepaticVessel", "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "Vessel", "2": "Tumour"},
        "numTraining": 2, "numTest": 1,
    }))
    return task


def test_msd_hepaticvessel(tmp_path):
    task = make_msd(tmp_path)
    raw = tmp_path / "raw"
    out = convert_msd_hepaticvessel(task, 508, settings=DecompositionSettings(2), raw_root=raw, **NO_PROGRESS)
    assert out == raw / "Dataset508_MSDHepaticVessel"
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["hepaticvessel_001_0000.nii.gz",
                                                                     "hepaticvessel_002_0000.nii.gz"]
    assert [p.name for p in (out / "imagesTs").iterdir()] == ["hepaticvessel_003_0000.nii.gz"]
    dj = load_dataset_json(out)
    assert dj["labels"] == {"background": 0, "vessel": [1, 2], "tumour": 3}
    assert dj["regions_class_order"] == [1, 3] and dj["channel_names"] == {"0": "CT"}
    label_image = sitk.ReadImage(str(out / "labelsTr" / "hepaticvessel_002.nii.gz"))
    label = sitk.GetArrayFromImage(label_image)
    thin, thick = tube_label()
    assert label.dtype == np.uint8
    assert set(np.unique(label[thin])) == {1} and set(np.unique(label[thick])) == {2}
    assert np.all(label[2:6, 18:, 18:][~(thin | thick)[2:6, 18:, 18:]] == 3)
    # Geometry comes from the image, not from the label file.
    assert label_image.GetOrigin() == ORIGIN and label_image.GetDirection() == DIRECTION
    with pytest.raises(DatasetExistsError):
        convert_msd_hepaticvessel(task, 508, settings=DecompositionSettings(2), raw_root=raw, **NO_PROGRESS)


def test_msd_missing_pieces(tmp_path):
    task = make_msd(tmp_path)
    (task / "labelsTr" / "hepaticvessel_002.nii.gz").unlink()
    with pytest.raises(InputError, match="missing file .*hepaticvessel_002.nii.gz"):
        convert_msd_hepaticvessel(task, 508, raw_root=tmp_path / "raw", **NO_PROGRESS)
    (task / "dataset.json").unlink()
    with pytest.raises(InputError, match="missing file .*dataset.json"):
        convert_msd_hepaticvessel(task, 508, raw_root=tmp_path / "raw", **NO_PROGRESS)
    with pytest.raises(InputError, match="not found"):
        convert_msd_hepaticvessel(tmp_path / "nope", 508, raw_root=tmp_path / "raw", **NO_PROGRESS)
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []
