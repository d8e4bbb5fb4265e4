"""Folder evaluation (``nnunet_aux evaluate``) on tiny label maps written in tmp_path."""

import argparse
import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_aux.errors import InputError
from nnunet_aux.evaluation import (
    evaluate_folders,
    labels_from_dataset_json,
    parse_label_arguments,
    parse_scale_arguments,
    scale_metrics,
    vessel_metrics,
)
from nnunet_aux.evaluation.cli import register

SPACING_XYZ = (0.8, 0.7, 2.0)        # SimpleITK order; array order is (2.0, 0.7, 0.8)
SPACING_ZYX = tuple(reversed(SPACING_XYZ))

DATASET_JSON = {
    "labels": {"background": 0, "vessel": [1, 2, 3], "tumour": 4},
    "regions_class_order": [1, 2],
    "scales": {"vessel": {"small": 1, "medium": 2, "large": 3}},
    "file_ending": ".nii.gz",
}


def write(path, array, spacing=SPACING_XYZ, origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


def reference_case(shift):
    """Scale-labelled vessels (1 small, 2 medium, 3 large) and a tumour (4)."""
    ref = np.zeros((6, 10, 16), dtype=np.uint8)
    ref[1, 1, 2:14] = 1
    ref[2:4, 4:6, 2:14] = 2
    ref[1:4, 7:10, 2 + shift : 14] = 3
    ref[5, 0:3, 0:3] = 4
    return ref


def nnunet_region_prediction(ref, drop_small=False):
    """What nnU-Net writes for the region dataset: vessel = 1, tumour = 2."""
    pred = np.zeros_like(ref)
    pred[np.isin(ref, (1, 2, 3))] = 1
    if drop_small:
        pred[ref == 1] = 0
    pred[ref == 4] = 2
    return pred


@pytest.fixture
def region_dataset(tmp_path):
    ref_dir, pred_dir = tmp_path / "labelsTs", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    refs = {"case_000": reference_case(0), "case_001": reference_case(2)}
    preds = {
        "case_000": nnunet_region_prediction(refs["case_000"]),
        "case_001": nnunet_region_prediction(refs["case_001"], drop_small=True),
    }
    for name in refs:
        write(ref_dir / f"{name}.nii.gz", refs[name])
        write(pred_dir / f"{name}.nii.gz", preds[name])
    (pred_dir / "plans.json").write_text("{}")   # nnU-Net's extra files are ignored
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text(json.dumps(DATASET_JSON))
    return ref_dir, pred_dir, dataset_json, refs, preds


def test_region_dataset_json_and_csv(region_dataset, tmp_path):
    ref_dir, pred_dir, dataset_json, refs, preds = region_dataset
    out = tmp_path / "out" / "summary.json"
    summary = evaluate_folders(ref_dir, pred_dir, out, dataset_json=dataset_json, num_processes=1, progress=False)

    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(summary))
    assert saved["labels"]["vessel"] == {"reference": [1, 2, 3], "prediction": [1],
                                         "scales": {"small": 1, "medium": 2, "large": 3}}
    assert saved["labels"]["tumour"] == {"reference": [4], "prediction": [2]}
    cases = {c["case"]: c for c in saved["metric_per_case"]}
    assert list(cases) == ["case_000", "case_001"]
    assert cases["case_000"]["spacing"] == pytest.approx(SPACING_ZYX)

    # Case 0 is perfect for both labels.
    assert cases["case_000"]["metrics"]["vessel"]["dice"] == 1.0
    assert cases["case_000"]["metrics"]["tumour"]["hd95"] == 0.0
    # Case 1 misses the small vessel: known by hand, and equal to the array API.
    ref1, pred1 = refs["case_001"], preds["case_001"]
    expected = vessel_metrics(pred1 == 1, np.isin(ref1, (1, 2, 3)), spacing=SPACING_ZYX)
    vessel1 = cases["case_001"]["metrics"]["vessel"]
    for key, value in expected.items():
        assert vessel1[key] == pytest.approx(value), key
    assert vessel1["missed_components"] == 1 and vessel1["components_ref"] == 3
    assert vessel1["scales"]["small"]["recall"] == 0.0
    assert vessel1["scales"]["large"]["recall"] == 1.0
    assert vessel1["scales"] == scale_metrics(pred1 == 1, ref1, {"small": 1, "medium": 2, "large": 3},
                                              spacing=SPACING_ZYX)
    # The tumour is prediction value 2, which in the reference would be a medium vessel.
    assert cases["case_001"]["metrics"]["tumour"]["dice"] == 1.0

    aggregate = saved["aggregate"]["vessel"]
    assert aggregate["dice"]["mean"] == pytest.approx((1.0 + vessel1["dice"]) / 2)
    assert aggregate["dice"]["median"] == pytest.approx((1.0 + vessel1["dice"]) / 2)
    assert aggregate["dice"]["std"] == pytest.approx(abs(1.0 - vessel1["dice"]) / 2)
    assert aggregate["dice"]["n"] == 2
    assert aggregate["scales"]["small"]["recall"] == {"mean": 0.5, "std": 0.5, "median": 0.5, "n": 2, "n_skipped": 0}
    assert "scales" not in saved["aggregate"]["tumour"]

    with open(tmp_path / "out" / "summary.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["label"]) for r in rows] == [
        ("case_000", "vessel"), ("case_000", "tumour"), ("case_001", "vessel"), ("case_001", "tumour")]
    assert float(rows[2]["dice"]) == pytest.approx(vessel1["dice"])
    assert rows[2]["recall_small"] == "0.0" and rows[2]["missed_components"] == "1"
    assert rows[1]["recall_small"] == ""           # no scales for the tumour


def test_absent_scale_is_null_and_skipped(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    for name, ref in {"a": reference_case(0), "b": reference_case(0)}.items():
        if name == "b":
            ref[ref == 2] = 0                         # no medium vessel in case b
        write(ref_dir / f"{name}.nii.gz", ref)
        write(pred_dir / f"{name}.nii.gz", nnunet_region_prediction(ref))
    summary = evaluate_folders(ref_dir, pred_dir, tmp_path / "s.json", dataset_json=DATASET_JSON,
                               num_processes=1, progress=False)
    text = (tmp_path / "s.json").read_text(encoding="utf-8")
    assert "NaN" not in text
    b = summary["metric_per_case"][1]["metrics"]["vessel"]["scales"]["medium"]
    assert b["recall"] is None and b["dice"] is None
    medium = summary["aggregate"]["vessel"]["scales"]["medium"]["recall"]
    assert medium["n"] == 1 and medium["n_skipped"] == 1 and medium["mean"] == 1.0


def test_labels_argument_other_formats_and_parallel(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    ref = np.zeros((5, 6, 12), dtype=np.uint8)
    ref[2, 2:4, 1:11] = 1
    pred = np.roll(ref, 1, axis=2)
    write(ref_dir / "x.nrrd", ref)
    write(pred_dir / "x.mha", pred)
    write(ref_dir / "y.nii.gz", ref)
    write(pred_dir / "y.nii.gz", ref)
    serial = evaluate_folders(ref_dir, pred_dir, None, labels={"vessel": 1}, num_processes=1, progress=False)
    parallel = evaluate_folders(ref_dir, pred_dir, None, labels=parse_label_arguments(["vessel=1"]),
                                num_processes=2, progress=False)
    assert serial["metric_per_case"] == parallel["metric_per_case"]
    x = serial["metric_per_case"][0]["metrics"]["vessel"]
    assert x["dice"] == pytest.approx(18 / 20) and x["hd"] == pytest.approx(SPACING_XYZ[0])
    assert not (tmp_path / "summary.json").exists()


def test_geometry_mismatch_names_both_files(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    ref = reference_case(0)
    write(ref_dir / "a.nii.gz", ref)
    write(pred_dir / "a.nii.gz", ref, spacing=(0.8, 0.7, 2.5))
    with pytest.raises(ValueError, match="spacing") as error:
        evaluate_folders(ref_dir, pred_dir, None, labels={"vessel": 1}, progress=False)
    assert str(ref_dir / "a.nii.gz") in str(error.value) and str(pred_dir / "a.nii.gz") in str(error.value)
    write(pred_dir / "a.nii.gz", ref, origin=(0.0, 5.0, 0.0))
    with pytest.raises(ValueError, match="origin"):
        evaluate_folders(ref_dir, pred_dir, None, labels={"vessel": 1}, progress=False)
    write(pred_dir / "a.nii.gz", ref[:, :, :-1])
    with pytest.raises(ValueError, match="shape"):
        evaluate_folders(ref_dir, pred_dir, None, labels={"vessel": 1}, progress=False)
    # Round-off below the tolerance is accepted.
    write(pred_dir / "a.nii.gz", ref, origin=(0.0, 1e-5, 0.0))
    evaluate_folders(ref_dir, pred_dir, None, labels={"vessel": 1}, num_processes=1, progress=False)


def test_missing_prediction_is_listed(tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    for name in ("a", "b", "c"):
        write(ref_dir / f"{name}.nii.gz", reference_case(0))
    write(pred_dir / "b.nii.gz", reference_case(0))
    with pytest.raises(ValueError, match="2 reference case") as error:
        evaluate_folders(ref_dir, pred_dir, None, labels={"vessel": 1}, progress=False)
    assert "a, c" in str(error.value)


def test_dataset_json_found_in_prediction_folder(region_dataset):
    ref_dir, pred_dir, dataset_json, _, _ = region_dataset
    (pred_dir / "dataset.json").write_text(dataset_json.read_text(encoding="utf-8"))
    summary = evaluate_folders(ref_dir, pred_dir, None, num_processes=1, progress=False)
    assert summary["label_source"].endswith("dataset.json")
    assert set(summary["aggregate"]) == {"vessel", "tumour"}


def test_dataset_json_beside_reference_folder_else_error(region_dataset):
    ref_dir, pred_dir, dataset_json, _, _ = region_dataset
    # nnU-Net raw layout: DatasetXXX/labelsTs beside DatasetXXX/dataset.json.
    summary = evaluate_folders(ref_dir, pred_dir, None, num_processes=1, progress=False)
    assert summary["label_source"] == str(dataset_json)
    dataset_json.unlink()
    with pytest.raises(ValueError, match="no labels given"):
        evaluate_folders(ref_dir, pred_dir, None, progress=False)


def test_labels_from_dataset_json_variants():
    brats = labels_from_dataset_json({
        "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3},
        "regions_class_order": [1, 2, 3]})
    assert [s.prediction_values for s in brats] == [(1, 2, 3), (2, 3), (3,)]
    plain = labels_from_dataset_json({"labels": {"background": 0, "vessel": 1, "tumour": 2}})
    assert [(s.reference_values, s.prediction_values) for s in plain] == [((1,), (1,)), ((2,), (2,))]
    with pytest.raises(ValueError, match="regions_class_order"):
        labels_from_dataset_json({"labels": {"background": 0, "vessel": [1, 2]}})
    with pytest.raises(ValueError, match="not a foreground label"):
        labels_from_dataset_json({"labels": {"background": 0, "vessel": 1}, "scales": {"artery": {"s": 1}}})
    with pytest.raises(ValueError, match="not values of region"):
        labels_from_dataset_json({"labels": {"background": 0, "vessel": [1, 2], "t": 3},
                                  "regions_class_order": [1, 2], "scales": {"vessel": {"s": 3}}})
    with pytest.raises(ValueError, match="name=1"):
        parse_label_arguments(["vessel"])


def test_cli_register_and_run(region_dataset, tmp_path, capsys):
    ref_dir, pred_dir, dataset_json, _, _ = region_dataset
    parser = argparse.ArgumentParser(prog="nnunet_aux")
    subparsers = parser.add_subparsers(dest="command")
    evaluate_parser = register(subparsers)
    help_text = evaluate_parser.format_help()
    for flag in ("-ref", "-pred", "-o", "--labels", "--scales", "--dataset-json", "-np", "--no-csv",
                 "--no-progress"):
        assert flag in help_text
    out = tmp_path / "cli" / "summary.json"
    args = parser.parse_args(["evaluate", "-ref", str(ref_dir), "-pred", str(pred_dir), "-o", str(out),
                              "--dataset-json", str(dataset_json), "-np", "1", "--no-progress", "--no-csv"])
    assert args.func(args) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["aggregate"]["tumour"]["dice"]["mean"] == 1.0
    assert not (tmp_path / "cli" / "summary.csv").exists()
    assert "vessel" in capsys.readouterr().out
    args = parser.parse_args(["evaluate", "-ref", str(ref_dir), "-pred", str(pred_dir),
                              "--labels", "vessel=1", "-np", "1", "--no-progress"])
    args.func(args)
    assert (pred_dir / "summary_nnunet_aux.csv").exists()


def test_cli_scales_with_multiclass_labels(tmp_path):
    # A multi-class prediction (each scale its own class) evaluated per scale from --labels.
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    ref = reference_case(0)
    pred = ref.copy()
    pred[ref == 1] = 0
    write(ref_dir / "a.nii.gz", ref)
    write(pred_dir / "a.nii.gz", pred)
    parser = argparse.ArgumentParser(prog="nnunet_aux")
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "s.json"
    args = parser.parse_args(["evaluate", "-ref", str(ref_dir), "-pred", str(pred_dir), "-o", str(out),
                              "--labels", "vessel=1,2,3", "--scales", "vessel:small=1,medium=2,large=3",
                              "-np", "1", "--no-progress"])
    args.func(args)
    scales = json.loads(out.read_text(encoding="utf-8"))["metric_per_case"][0]["metrics"]["vessel"]["scales"]
    assert (scales["small"]["recall"], scales["medium"]["recall"], scales["large"]["recall"]) == (0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="vessel:small=1"):
        parse_scale_arguments(["vessel=1"])
    args = parser.parse_args(["evaluate", "-ref", str(ref_dir), "-pred", str(pred_dir), "--scales", "vessel:s=1"])
    with pytest.raises(InputError, match="--scales needs --labels"):
        args.func(args)


def test_nnunet_formats_read_with_nnunets_own_readers(tmp_path):
    """2D PNG and 3D TIFF (spacing in the .json beside it), written by nnU-Net's writers, score as
    the same arrays do in NIfTI; a 3D TIFF without its spacing file is one clear error."""
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
    from nnunetv2.imageio.tif_reader_writer import Tiff3DIO

    ref3 = np.zeros((5, 6, 12), dtype=np.uint8)
    ref3[2, 2:4, 1:11] = 1
    pred3 = np.roll(ref3, 1, axis=2)
    ref2, pred2 = ref3[2:3], pred3[2:3]  # one slice: 20 vessel pixels, 18 shared
    results = {}
    for name, io, ref, pred, ending, spacing in (
            ("png", NaturalImage2DIO, ref2, pred2, ".png", (999, 1, 1)),
            ("tif", Tiff3DIO, ref3, pred3, ".tif", SPACING_ZYX)):
        ref_dir, pred_dir = tmp_path / f"{name}_ref", tmp_path / f"{name}_pred"
        ref_dir.mkdir()
        pred_dir.mkdir()
        io().write_seg(ref, str(ref_dir / f"a{ending}"), {"spacing": spacing})
        io().write_seg(pred, str(pred_dir / f"a{ending}"), {"spacing": spacing})
        summary = evaluate_folders(ref_dir, pred_dir, None, labels={"vessel": 1}, num_processes=1, progress=False)
        results[name] = summary["metric_per_case"][0]["metrics"]["vessel"]
    assert results["png"]["dice"] == pytest.approx(18 / 20) and results["png"]["hd"] == pytest.approx(1.0)
    assert results["tif"]["dice"] == pytest.approx(18 / 20) and results["tif"]["hd"] == pytest.approx(SPACING_XYZ[0])
    (tmp_path / "tif_pred" / "a.json").unlink()
    with pytest.raises(InputError, match="a.tif"):
        evaluate_folders(tmp_path / "tif_ref", tmp_path / "tif_pred", None, labels={"vessel": 1}, progress=False)
