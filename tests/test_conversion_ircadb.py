"""3D-IRCADb-01 conversion from DICOM series named ``image_<i>`` (plain and zipped layouts)."""

import json
import shutil
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_aux.conversion import DecompositionSettings, convert_ircadb, read_dicom_series
from nnunet_aux.conversion.dicom import slice_files
from nnunet_aux.conversion.ircadb import liver_box
from nnunet_aux.dataset_format import load_dataset_json
from nnunet_aux.errors import InputError

SHAPE = (12, 16, 16)  # 12 slices: sorting "image_10" after "image_1" would scramble them
SPACING_XYZ = (0.8, 0.8, 2.0)
ORIGIN = (-20.0, 30.0, 100.0)


def write_dicom_series(array, folder):
    """Write ``array`` (z, y, x) as a DICOM series of files ``image_<i>`` without extension."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1." + str(abs(hash(str(folder))) % 10 ** 12)
    for i in range(array.shape[0]):
        image = sitk.GetImageFromArray(array[i])
        image.SetSpacing(SPACING_XYZ[:2])
        position = (ORIGIN[0], ORIGIN[1], ORIGIN[2] + i * SPACING_XYZ[2])
        for tag, value in (("0008|0060", "CT"), ("0020|000e", series), ("0020|0013", str(i + 1)),
                           ("0020|0032", "\\".join(f"{p:g}" for p in position)),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0018|0050", f"{SPACING_XYZ[2]:g}")):
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / "slice.dcm"))
        writer.Execute(image)
        (folder / "slice.dcm").rename(folder / f"image_{i}")


def box(z, y, x):
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[z, y, x] = 255
    return mask


# Portal vein and venous system overlap at [2:10, 6:9, 6:9]; the artery is apart.
PORTAL = box(slice(2, 10), slice(3, 9), slice(6, 9))
VENOUS = box(slice(2, 10), slice(6, 12), slice(6, 9))
ARTERY = box(slice(2, 10), slice(6, 9), slice(12, 14))
LIVER = box(slice(1, 11), slice(2, 13), slice(4, 15))


def ct():
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 300 - 100).astype(np.int16)


def make_ircadb(root):
    """Patient 1 plain (artery), patient 2 zipped with venacava, patient 10 with portalvein1."""
    source = root / "3Dircadb1"
    layouts = {1: {"portalvein": PORTAL, "venoussystem": VENOUS, "artery": ARTERY, "liver": LIVER},
               2: {"portalvein": PORTAL, "venacava": VENOUS, "liver": LIVER},
               10: {"portalvein1": PORTAL, "venacava": VENOUS, "liver": LIVER}}
    for n, masks in layouts.items():
        patient = source / f"3Dircadb1.{n}"
        write_dicom_series(ct(), patient / "PATIENT_DICOM")
        for name, mask in masks.items():
            write_dicom_series(mask, patient / "MASKS_DICOM" / name)
    # Patient 2 as downloaded: zips only, the masks' zip nested as MASKS_DICOM/MASKS_DICOM/.
    patient = source / "3Dircadb1.2"
    for name, prefix in (("PATIENT_DICOM", "PATIENT_DICOM"), ("MASKS_DICOM", "MASKS_DICOM/MASKS_DICOM")):
        with zipfile.ZipFile(patient / f"{name}.zip", "w") as z:
            for f in sorted((patient / name).rglob("*")):
                if f.is_file():
                    z.write(f, f"{prefix}/{f.relative_to(patient / name).as_posix()}")
        shutil.rmtree(patient / name)
    return source


def test_dicom_series_is_read_in_slice_order(tmp_path):
    array = ct()
    write_dicom_series(array, tmp_path / "series")
    files = slice_files(tmp_path / "series")
    assert [f.name for f in files] == [f"image_{i}" for i in range(SHAPE[0])]
    image = read_dicom_series(tmp_path / "series")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), array)
    assert image.GetSpacing() == pytest.approx(SPACING_XYZ)
    assert image.GetOrigin() == pytest.approx(ORIGIN)


def test_dicom_slices_sorted_by_position_not_name(tmp_path):
    array = ct()
    write_dicom_series(array, tmp_path / "series")
    # Rename so that the names run against the positions.
    n = SHAPE[0]
    for i in range(n):
        (tmp_path / "series" / f"image_{i}").rename(tmp_path / "series" / f"tmp_{n - 1 - i}")
    for i in range(n):
        (tmp_path / "series" / f"tmp_{i}").rename(tmp_path / "series" / f"image_{i}")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_dicom_series(tmp_path / "series")), array)


def test_bad_dicom_folder(tmp_path):
    with pytest.raises(InputError, match="missing DICOM folder"):
        read_dicom_series(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "image_0").write_text("not dicom")
    with pytest.raises(InputError, match="image_0 is not a readable DICOM file"):
        read_dicom_series(tmp_path / "junk")


def test_ircadb_conversion(tmp_path):
    source = make_ircadb(tmp_path)
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    raw = tmp_path / "raw"
    out = convert_ircadb(source, 509, artery=True, liver_label=True, settings=DecompositionSettings(2),
                         raw_root=raw, progress=False)
    assert out == raw / "Dataset509_IRCADbVessels"
    assert sorted(before) == sorted(p.relative_to(source) for p in source.rglob("*"))  # source untouched
    dj = load_dataset_json(out)
    assert dj["labels"] == {"background": 0, "vessel": [1, 2], "liver": 3} and dj["numTraining"] == 3
    assert dj["regions_class_order"] == [1, 3]  # the liver predicted as 3, inside its region
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "ircadb_01_0000.nii.gz", "ircadb_02_0000.nii.gz", "ircadb_10_0000.nii.gz"]

    venous_union = (PORTAL > 0) | (VENOUS > 0)
    for case, vessel in (("ircadb_01", venous_union | (ARTERY > 0)), ("ircadb_02", venous_union),
                         ("ircadb_10", venous_union)):
        label_image = sitk.ReadImage(str(out / "labelsTr" / f"{case}.nii.gz"))
        label = sitk.GetArrayFromImage(label_image)
        np.testing.assert_array_equal((label == 1) | (label == 2), vessel)  # a union, never a sum
        np.testing.assert_array_equal(label == 3, (LIVER > 0) & ~vessel)
        image = sitk.ReadImage(str(out / "imagesTr" / f"{case}_0000.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), ct())
        for im in (image, label_image):
            assert im.GetSpacing() == pytest.approx(SPACING_XYZ) and im.GetOrigin() == pytest.approx(ORIGIN)

    report = json.loads((out / "scale_decomposition_report.json").read_text(encoding="utf-8"))
    cases = report["training_cases"]
    assert cases["ircadb_01"]["masks"] == {"vessel": ["portalvein", "venoussystem", "artery"], "liver": ["liver"]}
    assert cases["ircadb_02"]["masks"]["vessel"] == ["portalvein", "venacava"]
    assert cases["ircadb_02"]["missing_masks"] == ["artery"]
    assert cases["ircadb_02"]["unzipped"] == ["PATIENT_DICOM.zip", "MASKS_DICOM.zip"]
    assert cases["ircadb_10"]["masks"]["vessel"] == ["portalvein1", "venacava"]
    assert report["artery"] is True


def test_ircadb_crop_to_liver(tmp_path):
    source = make_ircadb(tmp_path)
    for n in (2, 10):
        shutil.rmtree(source / f"3Dircadb1.{n}")
    out = convert_ircadb(source, 510, crop_liver=True, margin_mm=2.0, settings=DecompositionSettings(2),
                         raw_root=tmp_path / "raw", progress=False)
    # Margin 2 mm: one slice in z (2 mm), three voxels in y and x (0.8 mm).
    expected = (slice(0, 12), slice(0, 16), slice(1, 16))
    assert liver_box(LIVER > 0, SPACING_XYZ[::-1], 2.0) == expected
    label_image = sitk.ReadImage(str(out / "labelsTr" / "ircadb_01.nii.gz"))
    image = sitk.ReadImage(str(out / "imagesTr" / "ircadb_01_0000.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), ct()[expected])
    vessel = ((PORTAL > 0) | (VENOUS > 0))[expected]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label_image) > 0, vessel)
    shifted = (ORIGIN[0] + 1 * SPACING_XYZ[0], ORIGIN[1], ORIGIN[2])
    assert image.GetOrigin() == pytest.approx(shifted) and label_image.GetOrigin() == pytest.approx(shifted)
    report = json.loads((out / "scale_decomposition_report.json").read_text(encoding="utf-8"))
    assert report["training_cases"]["ircadb_01"]["crop_zyx"] == [[0, 12], [0, 16], [1, 16]]
    assert load_dataset_json(out)["labels"] == {"background": 0, "vessel": [1, 2]}


def test_ircadb_bad_input(tmp_path):
    with pytest.raises(InputError, match="not found"):
        convert_ircadb(tmp_path / "nope", raw_root=tmp_path / "raw", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no patient folders"):
        convert_ircadb(tmp_path / "empty", raw_root=tmp_path / "raw", progress=False)
    source = make_ircadb(tmp_path)
    shutil.rmtree(source / "3Dircadb1.10" / "MASKS_DICOM" / "liver")
    with pytest.raises(InputError, match="3Dircadb1.10/MASKS_DICOM has no 'liver' mask"):
        convert_ircadb(source, crop_liver=True, raw_root=tmp_path / "raw", progress=False)
    shutil.rmtree(source / "3Dircadb1.10" / "MASKS_DICOM")
    with pytest.raises(InputError, match="missing folder .*3Dircadb1.10/MASKS_DICOM"):
        convert_ircadb(source, raw_root=tmp_path / "raw", progress=False)
    assert list((tmp_path / "raw").iterdir()) == []
