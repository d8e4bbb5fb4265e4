"""Generator presets: the clinical regime's measured statistics, demo unchanged, dataset and CLI."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from nnunet_aux.cli import main
from nnunet_aux.conversion import write_synthetic_dataset
from nnunet_aux.errors import InputError
from nnunet_aux.synthetic import PRESETS, Segment, generate_case, get_preset, slice_profile_fraction

SEEDS = (0, 2, 3)


def _measure(case) -> dict:
    """Parenchyma mean, noise SD and contrast-to-noise ratios (smallest vessels, per true scale) of a case."""
    sp = case.spacing
    inner = ndi.distance_transform_edt(case.organ, sampling=sp) > 4.0
    no_tumour = ndi.distance_transform_edt(~case.tumour, sampling=sp) > 3.0
    parenchyma = inner & no_tumour & (ndi.distance_transform_edt(~case.mask, sampling=sp) > 3.0)
    image = case.image.astype(np.float64)
    level = image[parenchyma].mean()
    # Noise: the residual after removing the smooth (bias) variation, on flat parenchyma.
    noise = (image - ndi.gaussian_filter(image, [3.0 / s for s in sp]))[parenchyma].std()
    # Contrast against the local parenchyma level (normalised convolution), free of the bias fields.
    sigma = [5.0 / s for s in sp]
    weight = parenchyma.astype(np.float64)
    local = ndi.gaussian_filter(image * weight, sigma) / np.maximum(ndi.gaussian_filter(weight, sigma), 1e-6)
    contrast = image - local
    # The smallest vessels: true radius 0.7-1 mm (the generator's minimum is 0.7 mm).
    small = case.mask & (case.radius_mm <= 1.0) & inner & no_tumour
    return {"parenchyma": level, "noise": noise, "cnr_small": contrast[small].mean() / noise,
            "cnr_scale": [contrast[(case.scale == k) & inner & no_tumour].mean() / noise
                          for k in range(1, case.n_scales + 1)]}


@pytest.fixture(scope="module")
def measured() -> dict:
    return {name: [_measure(generate_case(seed=s, preset=name)) for s in SEEDS] for name in ("demo", "clinical")}


# --- the clinical preset's parameters and measured statistics ---------------------------------


def test_clinical_parameters_lie_in_the_documented_ranges():
    p = get_preset("clinical")
    sz, sy, sx = p.spacing
    assert 1.5 <= sz <= 3.0 and 0.6 <= sy == sx <= 0.8 and sz >= 2 * sy  # anisotropic
    assert 100 <= p.parenchyma_hu <= 120 and 150 <= p.vessel_hu_range[0] <= p.vessel_hu_range[1] <= 180
    assert 15 <= p.noise_hu <= 30 and p.slice_fwhm == 1.0 and p.psf_fwhm_mm > 0
    # Same field of view as the demo preset, half the voxels.
    demo = get_preset("demo")
    extent = (np.array(p.shape) - 1) * p.spacing
    np.testing.assert_allclose(extent, (np.array(demo.shape) - 1) * demo.spacing, rtol=0.03)


def test_clinical_case_has_the_preset_spacing_and_shape():
    case = generate_case(seed=0, preset="clinical")
    assert case.spacing == (2.0, 0.8, 0.8) and case.image.shape == (32, 96, 96)
    assert case.image.dtype == np.float32 and bool(np.all((case.radius_mm > 0) == case.mask))


def test_clinical_parenchyma_and_noise(measured):
    for m in measured["clinical"]:
        assert 100 <= m["parenchyma"] <= 120, m
        assert 15 <= m["noise"] <= 30, m


def test_clinical_large_vessel_intensity():
    # A 5 mm root (portal-vein size); measured at least 2.5 mm inside the vessel, clear of partial volume.
    levels = []
    for seed in (0, 3):
        case = generate_case(seed=seed, preset="clinical", root_radius_mm=5.0, tumours=False)
        deep = (ndi.distance_transform_edt(case.mask, sampling=case.spacing) >= 2.5) & (case.radius_mm >= 4.0)
        assert deep.sum() > 100
        levels.append(case.image[deep].mean())
    # Per case the level moves with the smooth gain and offset fields; on average it is the preset's.
    assert 150 <= np.mean(levels) <= 180, levels


def test_smallest_vessels_sit_near_the_noise_floor(measured):
    clinical = [m["cnr_small"] for m in measured["clinical"]]
    demo = [m["cnr_small"] for m in measured["demo"]]
    # Documented: vessels of radius 0.7-1 mm keep about one noise SD of contrast (demo: about 3-4).
    assert max(clinical) < 1.5 and np.mean(clinical) < 1.3 and min(demo) > 2.0
    assert np.mean(clinical) < 0.5 * np.mean(demo)
    # Contrast still grows with the true scale.
    for m in measured["clinical"]:
        assert m["cnr_scale"][0] < m["cnr_scale"][-1], m


def test_slice_profile_averages_thin_vessels_with_parenchyma():
    # A 0.7 mm tube across 2 mm slices keeps about half its contrast, one along z all of it.
    across = Segment(id=1, parent=0, radius_mm=0.7, points_mm=np.array([[8.0, 5, 0], [8, 5, 10]]))
    along = Segment(id=1, parent=0, radius_mm=0.7, points_mm=np.array([[0.0, 5, 5], [16, 5, 5]]))
    kwargs = {"shape": (9, 13, 13), "spacing": (2.0, 0.8, 0.8), "slice_fwhm_mm": 2.0}
    peak_across = slice_profile_fraction([across], **kwargs)[4, 6, 6]
    assert 0.3 < peak_across < 0.75
    assert slice_profile_fraction([along], **kwargs)[4, 6, 6] == pytest.approx(1.0)


# --- demo unchanged, preset lookup -------------------------------------------------------------


def test_demo_preset_is_the_default_output():
    shape, spacing = (24, 48, 48), (1.0, 0.8, 0.8)
    plain = generate_case(shape, spacing, seed=5, n_tumours=1)
    demo = generate_case(shape, spacing, seed=5, n_tumours=1, preset="demo")
    for name in ("image", "mask", "radius_mm", "segment_id", "scale", "tumour", "organ", "thresholds_mm"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(demo, name), err_msg=name)
    assert get_preset("demo").shape == (64, 96, 96) and get_preset("demo").spacing == (1.0, 0.8, 0.8)


def test_unknown_preset_names_the_valid_ones():
    for call in (lambda: get_preset("ct"), lambda: generate_case((16, 32, 32), preset="ct"),
                 lambda: write_synthetic_dataset(990, 1, preset="ct", progress=False)):
        with pytest.raises(InputError, match="'ct'.*demo, clinical"):
            call()


# --- dataset writer and CLI --------------------------------------------------------------------


def _written_image(folder):
    return sitk.ReadImage(str(next((folder / "imagesTr").glob("*.nii.gz"))))


def test_write_synthetic_dataset_clinical_writes_the_spacing(tmp_path):
    folder = write_synthetic_dataset(991, 1, shape=(12, 40, 40), raw_root=tmp_path, true_scales=True,
                                     progress=False, preset="clinical")
    image = _written_image(folder)
    assert image.GetSpacing() == pytest.approx((0.8, 0.8, 2.0)) and image.GetSize() == (40, 40, 12)
    report = json.loads((folder / "scale_decomposition_report.json").read_text(encoding="utf-8"))
    assert report["preset"] == "clinical"


def test_cli_preset_clinical(tmp_path, capsys):
    common = ["-n", "1", "--shape", "12", "40", "40", "--true-scales", "--raw-root", str(tmp_path), "-np", "1",
              "--no-progress"]
    assert main(["synth", "-d", "992", "--preset", "clinical", *common]) == 0
    assert _written_image(tmp_path / "Dataset992_SyntheticVessels").GetSpacing() == pytest.approx((0.8, 0.8, 2.0))
    # An explicit --spacing overrides the preset's.
    assert main(["synth", "-d", "993", "--preset", "clinical", "--spacing", "1.5", "0.7", "0.7", *common]) == 0
    assert _written_image(tmp_path / "Dataset993_SyntheticVessels").GetSpacing() == pytest.approx((0.7, 0.7, 1.5))
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--preset", "ct", *common])
    assert exit_info.value.code == 2
    assert "invalid choice: 'ct'" in capsys.readouterr().err


def test_cli_choices_are_the_presets():
    from nnunet_aux.cli import build_parser

    parser = build_parser("synth")
    synth = next(a for a in parser._actions if hasattr(a, "choices") and a.choices and "synth" in a.choices)
    preset = next(a for a in synth.choices["synth"]._actions if a.dest == "preset")
    assert tuple(preset.choices) == tuple(PRESETS)
