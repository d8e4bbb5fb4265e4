"""One reading of the dataset contract, one rule per setting, and the image I/O layer (issue #25)."""

import ast
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import nnunet_aux
from nnunet_aux.conversion.writer import DecompositionSettings
from nnunet_aux.dataset_format import (
    check_scales,
    dataset_scales,
    make_scale_dataset_json,
    multiclass_dataset_json,
    read_scale_spec,
    scored_regions,
)
from nnunet_aux.errors import InputError
from nnunet_aux.evaluation import evaluate_folders, labels_from_dataset_json, parse_label_arguments, with_scales
from nnunet_aux.evaluation.labels import label_specs
from nnunet_aux.scales import assign_scales, decompose_vessels, local_radii, quantile_thresholds, scale_of_radius
from nnunet_aux.validation import check_binary_mask, check_thresholds

PACKAGE = Path(nnunet_aux.__file__).parent


# ------------------------------------------------------------------- image I/O below conversion and evaluation
def _imported_modules(path):
    """Absolute names of the nnunet_aux modules a file imports (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            names.add(".".join(p for p in (base, node.module or "") if p))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("nnunet_aux")}


def test_io_imports_neither_conversion_nor_evaluation():
    files = sorted((PACKAGE / "io").glob("*.py"))
    assert {f.name for f in files} >= {"images.py", "segmentations.py", "files.py"}
    for f in files:
        wrong = {m for m in _imported_modules(f) if m.startswith(("nnunet_aux.conversion", "nnunet_aux.evaluation"))}
        assert not wrong, (f.name, wrong)


def test_nothing_imports_the_old_image_io():
    assert not (PACKAGE / "conversion" / "image_io.py").exists()
    assert not (PACKAGE / "conversion" / "files.py").exists()
    for f in PACKAGE.rglob("*.py"):
        old = ("nnunet_aux.conversion.image_io", "nnunet_aux.conversion.files")
        wrong = {m for m in _imported_modules(f) if m in old}
        assert not wrong, (f, wrong)


# --------------------------------------------------------------------------- one reading of dataset.json
def test_evaluation_and_trainers_read_the_same_scales():
    dj = make_scale_dataset_json(3, 3, other_labels=["tumour"])
    spec = read_scale_spec(dj)
    vessel = labels_from_dataset_json(dj)[0]
    assert vessel.scales == dataset_scales(dj)["vessel"] == dict(zip(spec.scale_names, spec.scale_labels))
    assert [(s.name, s.reference_values, s.prediction_values) for s in labels_from_dataset_json(dj)] == [
        (name, reference, predicted) for name, (reference, predicted) in scored_regions(dj).items()]
    # Scales listed out of order read the same everywhere (smallest first).
    shuffled = dict(dj, scales={"vessel": {"large": 3, "small": 1, "medium": 2}})
    assert labels_from_dataset_json(shuffled)[0].scales == vessel.scales
    assert read_scale_spec(shuffled).scale_names == spec.scale_names


def test_scales_naming_other_structures_get_one_message_everywhere():
    dj = {"labels": {"background": 0, "vessel": 1, "tumour": 2}, "scales": {"artery": {"small": 1, "large": 2}}}
    messages = set()
    for read in (lambda: read_scale_spec(dj, "f.json"), lambda: dataset_scales(dj, "f.json"),
                 lambda: labels_from_dataset_json(dj)):
        with pytest.raises(InputError, match="'artery' is not a foreground label") as info:
            read()
        messages.add(str(info.value).split(": ", 1)[1])
    assert len(messages) == 1
    with pytest.raises(InputError, match="--scales: scales\\['artery'\\]"):
        with_scales(parse_label_arguments(["vessel=1", "tumour=2"]), {"artery": {"small": 1, "large": 2}}, "--scales")


def test_the_multiclass_variant_is_evaluated_with_its_structure_merged(tmp_path):
    """dataset_format keeps 'scales' in the multi-class variant so that evaluation merges the scale classes
    back into the vessel: evaluate scores it (it stopped on it before) and gives per-scale recall."""
    dj = multiclass_dataset_json(make_scale_dataset_json(1, 3, other_labels=["tumour"]))
    specs = {s.name: s for s in labels_from_dataset_json(dj)}
    assert list(specs) == ["vessel_small", "vessel_medium", "vessel_large", "tumour", "vessel"]
    assert specs["vessel"].reference_values == specs["vessel"].prediction_values == (1, 2, 3)
    assert specs["vessel"].scales == {"small": 1, "medium": 2, "large": 3}
    ref = np.zeros((4, 8, 12), np.uint8)
    ref[1, 1, 1:11], ref[2, 3:5, 1:11], ref[1:3, 6:8, 1:11] = 1, 2, 3
    pred = ref.copy()
    pred[ref == 1] = 0
    for folder, array in (("ref", ref), ("pred", pred)):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / folder / "a.nii.gz"))
    summary = evaluate_folders(tmp_path / "ref", tmp_path / "pred", None, dataset_json=dj, num_processes=1,
                               progress=False)
    scales = summary["metric_per_case"][0]["metrics"]["vessel"]["scales"]
    assert (scales["small"]["recall"], scales["medium"]["recall"], scales["large"]["recall"]) == (0.0, 1.0, 1.0)


def test_label_values_from_the_command_line_follow_the_dataset_rule():
    with pytest.raises(InputError, match="--labels: label 'vessel' is -1; label values must be integers from 0"):
        parse_label_arguments(["vessel=-1"])
    with pytest.raises(InputError, match="repeated"):
        parse_label_arguments(["vessel=1", "vessel=2"])
    with pytest.raises(InputError, match="label 'tumour' is 2.5"):
        label_specs({"vessel": 1, "tumour": 2.5})
    assert check_scales({"vessel": {"large": 2, "small": 1}}, {"vessel": [1, 2]}) == {"vessel": {"small": 1,
                                                                                                  "large": 2}}


# ----------------------------------------------------------------------------- one rule per setting
def test_thresholds_get_one_message_at_every_entry_point():
    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 4, 4] = True
    result = decompose_vessels(mask, n_scales=2, thresholds=[1.0])
    with pytest.raises(InputError, match=r"^need 2 radii for 3 scales, got none$"):
        DecompositionSettings(3, thresholds="fixed")
    with pytest.raises(InputError, match=r"^need 2 thresholds for 3 scales, got \[1.0\]$"):
        decompose_vessels(mask, n_scales=3, thresholds=[1.0])
    for call in (lambda: assign_scales(result, []), lambda: scale_of_radius([1.0], [])):
        with pytest.raises(InputError, match=r"^need at least one of the thresholds \(two scales\), got \[\]$"):
            call()
    bad = [2.0, float("inf")]
    messages = set()
    for call in (lambda: assign_scales(result, bad), lambda: scale_of_radius([1.0], bad),
                 lambda: decompose_vessels(mask, n_scales=3, thresholds=bad), lambda: check_thresholds(bad, 3)):
        with pytest.raises(InputError, match="finite numbers >= 0") as info:
            call()
        messages.add(str(info.value))
    assert len(messages) == 1
    assert quantile_thresholds([], 3).tolist() == [0.0, 0.0]


def test_settings_shared_by_the_decomposition_and_its_parts_get_one_message():
    mask = np.zeros((8, 8, 8), bool)
    for call in (lambda: decompose_vessels(mask, m_neighbours=2.5),
                 lambda: local_radii(np.zeros((1, 3)), np.ones((1, 3)), m_neighbours=2.5),
                 lambda: DecompositionSettings(2, m_neighbours=2.5)):
        with pytest.raises(InputError, match=r"^m_neighbours must be a positive integer, got 2.5$"):
            call()
    with pytest.raises(InputError, match=r"^radius_correction must be one of"):
        decompose_vessels(mask, radius_correction="full")
    with pytest.raises(InputError, match=r"^thresholds must be one of \('quantile', 'dataset', 'fixed'\)"):
        DecompositionSettings(2, thresholds="mean")


@pytest.mark.parametrize("bad, found", [(np.full((4, 5, 6), np.nan), "NaN"), (np.full((4, 5, 6), 0.7), "0.7")])
def test_one_mask_rule(bad, found):
    from nnunet_aux.evaluation import vessel_metrics

    message = f"must be binary (only 0 and 1), got {'NaN' if found == 'NaN' else 'e.g. ' + found}; binarise it"
    for call, name in ((lambda: vessel_metrics(bad, np.zeros(bad.shape, bool)), "pred"),
                       (lambda: decompose_vessels(bad), "mask"), (lambda: check_binary_mask(bad, "x"), "x")):
        with pytest.raises(InputError) as info:
            call()
        assert str(info.value).startswith(f"{name} {message}")
