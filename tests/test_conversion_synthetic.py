"""The dataset writer (atomic, no silent overwrite, threshold modes, report) and synthetic datasets."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_aux.conversion import DecompositionSettings, make_multiclass_dataset, write_synthetic_dataset
from nnunet_aux.conversion.labels import plan_labels
from nnunet_aux.conversion.writer import CaseJob, LoadedCase, write_scale_dataset
from nnunet_aux.dataset_format import load_dataset_json, read_scale_spec
from nnunet_aux.errors import DatasetExistsError, InputError
from nnunet_aux.io.images import Geometry
from nnunet_aux.synthetic import generate_case

SHAPE, SPACING = (16, 24, 24), (1.0, 0.8, 0.8)


def read(path):
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def tubes(radii, shape=(20, 24, 24)):
    """Vessel label map (1) of straight tubes along z with the given radii (voxels, spacing 1 mm)."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    label = np.zeros(shape, dtype=np.uint8)
    centres = [(6, 6), (16, 16), (6, 17), (17, 6)]
    for r, (cy, cx) in zip(radii, centres):
        label[((y - cy) ** 2 + (x - cx) ** 2 <= r ** 2) & (z > 1) & (z < shape[0] - 2)] = 1
    return label


@dataclass(frozen=True)
class ArrayReader:
    """A case from arrays (spacing 1 mm); fails on load when ``fail`` is set."""

    label: np.ndarray
    fail: bool = False

    def load(self):
        if self.fail:
            raise InputError("this case is broken")
        image = sitk.GetImageFromArray(self.label.astype(np.float32) * 200)
        return LoadedCase(images=[image], geometry=Geometry.of(image), label=self.label.astype(np.int64),
                          label_source="array")


PLAN2 = plan_labels({"background": 0, "vessel": 1}, "vessel", 2)


def test_true_scales_reproduce_the_generator(tmp_path):
    folder = write_synthetic_dataset(901, 2, 1, shape=SHAPE, spacing=SPACING, seed=3, raw_root=tmp_path,
                                     true_scales=True, progress=False)
    assert folder == tmp_path / "Dataset901_SyntheticVessels"
    report = json.loads((folder / "scale_decomposition_report.json").read_text(encoding="utf-8"))
    assert report["true_scales"] and list(report["test_cases"]) == ["synthetic_002"]
    for case_id, row in report["training_cases"].items():
        case = generate_case(SHAPE, SPACING, seed=row["seed"], n_scales=3)
        label, label_image = read(folder / "labelsTr" / f"{case_id}.nii.gz")
        image, image_image = read(folder / "imagesTr" / f"{case_id}_0000.nii.gz")
        np.testing.assert_array_equal(label, case.labels())
        np.testing.assert_allclose(image, case.image)
        assert label_image.GetSpacing() == pytest.approx(SPACING[::-1]) == image_image.GetSpacing()
        assert row["thresholds_mm"] == pytest.approx(case.thresholds_mm)
        assert sum(row["n_voxels_per_scale"].values()) == case.mask.sum()
    assert (folder / "labelsTs" / "synthetic_002.nii.gz").is_file()
    spec = read_scale_spec(load_dataset_json(folder))
    assert spec.regions == {"vessel": (1, 2, 3), "tumour": (4,)}


def test_decomposed_scales_cover_exactly_the_vessels(tmp_path):
    folder = write_synthetic_dataset(902, 2, shape=SHAPE, spacing=SPACING, seed=1, raw_root=tmp_path,
                                     progress=False)
    report = json.loads((folder / "scale_decomposition_report.json").read_text(encoding="utf-8"))
    assert report["settings"]["thresholds"] == "quantile" and not report["true_scales"]
    for case_id, row in report["training_cases"].items():
        case = generate_case(SHAPE, SPACING, seed=row["seed"], n_scales=3)
        label, _ = read(folder / "labelsTr" / f"{case_id}.nii.gz")
        np.testing.assert_array_equal((label >= 1) & (label <= 3), case.mask)
        np.testing.assert_array_equal(label == 4, case.tumour & ~case.mask)
        counts = row["n_voxels_per_scale"]
        assert [counts[n] for n in ("small", "medium", "large")] == [np.sum(label == v) for v in (1, 2, 3)]
        assert len(row["thresholds_mm"]) == 2 and row["n_branches"] >= 1


def test_refuses_to_overwrite_then_replaces(tmp_path):
    write_synthetic_dataset(903, 1, shape=SHAPE, raw_root=tmp_path, true_scales=True, progress=False)
    with pytest.raises(DatasetExistsError, match="ID 903 already exists"):
        write_synthetic_dataset(903, 1, shape=SHAPE, raw_root=tmp_path, true_scales=True, progress=False)
    with pytest.raises(DatasetExistsError):  # same ID, another name
        write_synthetic_dataset(903, 1, shape=SHAPE, raw_root=tmp_path, name="Other", progress=False)
    folder = write_synthetic_dataset(903, 2, shape=SHAPE, raw_root=tmp_path, name="Other", true_scales=True,
                                     overwrite=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset903_Other"]
    assert load_dataset_json(folder)["numTraining"] == 2


def test_preprocessed_dataset_with_same_id_other_name_blocks(tmp_path, monkeypatch):
    (tmp_path / "pre" / "Dataset904_Old").mkdir(parents=True)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    with pytest.raises(DatasetExistsError, match="nnUNet_preprocessed"):
        write_synthetic_dataset(904, 1, shape=SHAPE, raw_root=tmp_path / "raw", overwrite=True, progress=False)


def test_failing_case_leaves_nothing(tmp_path):
    jobs = [CaseJob("a", "Tr", ArrayReader(tubes([2]))), CaseJob("b", "Tr", ArrayReader(tubes([2]), fail=True))]
    with pytest.raises(InputError, match="broken"):
        write_scale_dataset(jobs, PLAN2, "Dataset905_X", settings=DecompositionSettings(2),
                            raw_root_folder=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_failure_with_overwrite_keeps_the_old_dataset(tmp_path):
    old = write_synthetic_dataset(906, 1, shape=SHAPE, raw_root=tmp_path, true_scales=True, progress=False)
    jobs = [CaseJob("a", "Tr", ArrayReader(tubes([2]), fail=True))]
    with pytest.raises(InputError):
        write_scale_dataset(jobs, PLAN2, "Dataset906_X", settings=DecompositionSettings(2),
                            raw_root_folder=tmp_path, overwrite=True, progress=False)
    assert list(tmp_path.iterdir()) == [old] and (old / "dataset.json").is_file()


def _labels(folder, case_id):
    return read(folder / "labelsTr" / f"{case_id}.nii.gz")[0]


def test_threshold_modes(tmp_path):
    thin, thick = tubes([1.5, 1.5]), tubes([3.5, 3.5])
    jobs = [CaseJob("thin", "Tr", ArrayReader(thin)), CaseJob("thick", "Tr", ArrayReader(thick))]

    # Per volume: each volume's median lies at its own (equal) radii -> everything "large".
    folder = write_scale_dataset(jobs, PLAN2, "Dataset907_Q", settings=DecompositionSettings(2),
                                 raw_root_folder=tmp_path, progress=False)
    assert set(np.unique(_labels(folder, "thin"))) == {0, 2} == set(np.unique(_labels(folder, "thick")))

    # Dataset-wide: the pooled median splits thin from thick.
    folder = write_scale_dataset(jobs, PLAN2, "Dataset908_D", settings=DecompositionSettings(2, thresholds="dataset"),
                                 raw_root_folder=tmp_path, progress=False)
    report = json.loads((folder / "scale_decomposition_report.json").read_text(encoding="utf-8"))
    np.testing.assert_array_equal(_labels(folder, "thin"), thin * 1)
    np.testing.assert_array_equal(_labels(folder, "thick"), thick * 2)
    t = report["dataset_thresholds_mm"]
    assert len(t) == 1 and report["training_cases"]["thin"]["thresholds_mm"] == t
    assert report["training_cases"]["thin"]["n_branches"] == 2
    assert not (folder / ".work").exists()

    # Fixed radii.
    settings = DecompositionSettings(2, thresholds="fixed", fixed_radii_mm=(100.0,))
    folder = write_scale_dataset(jobs, PLAN2, "Dataset909_F", settings=settings, raw_root_folder=tmp_path,
                                 progress=False)
    assert set(np.unique(_labels(folder, "thick"))) == {0, 1}
    report = json.loads((folder / "scale_decomposition_report.json").read_text(encoding="utf-8"))
    assert report["training_cases"]["thick"]["thresholds_mm"] == [100.0]


def test_settings_are_checked():
    with pytest.raises(InputError, match="need 2 radii"):
        DecompositionSettings(3, thresholds="fixed", fixed_radii_mm=(1.0,))
    with pytest.raises(InputError, match="increasing"):
        DecompositionSettings(3, thresholds="fixed", fixed_radii_mm=(2.0, 1.0))
    with pytest.raises(InputError, match="not 'fixed'"):
        DecompositionSettings(2, fixed_radii_mm=(1.0,))
    with pytest.raises(InputError, match="one of"):
        DecompositionSettings(2, thresholds="mean")
    with pytest.raises(InputError, match="quantile levels"):
        DecompositionSettings(3, quantiles=(0.5,))
    with pytest.raises(InputError, match="inside"):
        DecompositionSettings(3, quantiles=(0.5, 1.5))
    with pytest.raises(InputError, match="at least 2"):
        DecompositionSettings(1)


def test_parallel_equals_sequential(tmp_path):
    kwargs = dict(shape=SHAPE, spacing=SPACING, seed=5, raw_root=tmp_path, progress=False)
    one = write_synthetic_dataset(910, 2, **kwargs)
    two = write_synthetic_dataset(911, 2, num_processes=2, **kwargs)
    for case_id in ("synthetic_000", "synthetic_001"):
        np.testing.assert_array_equal(_labels(one, case_id), _labels(two, case_id))


def test_multiclass_variant_links_the_same_files(tmp_path):
    source = write_synthetic_dataset(912, 2, 1, shape=SHAPE, raw_root=tmp_path, true_scales=True,
                                     progress=False)
    target = make_multiclass_dataset(912, 913, raw_root=tmp_path)
    assert target.name == "Dataset913_SyntheticVessels_multiclass"
    dj = load_dataset_json(target)
    assert dj["labels"] == {"background": 0, "vessel_small": 1, "vessel_medium": 2, "vessel_large": 3,
                            "tumour": 4}
    assert "regions_class_order" not in dj and dj["numTraining"] == 2
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        names = sorted(p.name for p in (source / sub).iterdir())
        assert names == sorted(p.name for p in (target / sub).iterdir())
        for name in names:
            assert (source / sub / name).read_bytes() == (target / sub / name).read_bytes()
    assert (target / "scale_decomposition_report.json").is_file()
    with pytest.raises(DatasetExistsError):
        make_multiclass_dataset(912, 913, raw_root=tmp_path)
    with pytest.raises(InputError, match="already a multi-class"):
        make_multiclass_dataset(913, 914, raw_root=tmp_path)
    with pytest.raises(InputError, match="ID of the source"):
        make_multiclass_dataset(912, 912, raw_root=tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name, target.name]


def test_raw_root_is_required(monkeypatch):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(InputError, match="nnUNet_raw"):
        write_synthetic_dataset(915, 1, shape=SHAPE, progress=False)
