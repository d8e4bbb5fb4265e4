"""Generator presets: the tissue contrast, noise and sampling of a synthetic regime.

Two presets are built in (:data:`PRESETS`):

``demo``
    The generator's original, easy regime, unchanged: parenchyma 100 HU, vessels drawn
    in 180-200 HU, white noise of SD 20 HU, near-isotropic 1.0 x 0.8 x 0.8 mm voxels
    (64 x 96 x 96 voxels) and a partial-volume ramp about one voxel wide. The
    contrast-to-noise ratio is about 4.5 at full contrast (90 HU over 20 HU) and 3-4
    averaged over a vessel's voxels, even for the thinnest vessels.

``clinical``
    Calibrated to portal-venous-phase liver CT as in 3D-IRCADb-01 and MSD Task08:

    ===========================  ==================  ====================================
    quantity                     preset              published range (approximate)
    ===========================  ==================  ====================================
    liver parenchyma             110 HU              100-120 HU [1]_, [2]_
    portal / hepatic veins       155-175 HU per case 150-200 HU [1]_, [3]_
    noise SD (per voxel)         22 HU               15-30 HU [4]_, [5]_
    in-plane pixel               0.8 mm              0.56-0.87 mm [6]_, ~0.8 mm [7]_,
                                                     0.7-0.8 mm [8]_
    slice spacing = thickness    2.0 mm              1.6-4 mm [6]_, 1.5-8 mm [7]_,
                                                     3-3.2 mm [8]_
    slice profile                Gaussian, FWHM      slice sensitivity profile of about
                                 = slice thickness   the nominal thickness [9]_
    in-plane PSF                 Gaussian, FWHM      standard soft-tissue kernel, MTF50
                                 1.1 mm              ~0.35-0.5 lp/mm [9]_
    noise texture                in-plane Gaussian   correlated over about a pixel
                                 FWHM 1.0 mm         (noise power spectrum) [9]_
    ===========================  ==================  ====================================

    The volume is 32 x 96 x 96 voxels: the same field of view as ``demo`` (about
    62 x 76 x 76 mm) with half the voxels. Vessel intensities are formed from the
    vessels' true volume fraction averaged over the slice profile (computed on slices
    oversampled to the in-plane pixel size) and blurred in-plane by the PSF, so a
    vessel narrower than a slice is averaged with parenchyma: the thinnest vessels
    (radius 0.7-1 mm) keep only about half of the 55 HU contrast, roughly one noise SD,
    close to the smallest vessels of 3D-IRCADb and MSD Task08. Liver
    inhomogeneity is milder than in ``demo``: smooth gain and offset fields of SD 4 %
    and 5 HU (``demo``: 8 % and 10 HU). Tumours stay at 40 HU.

Measured on generated cases (seeds 0-5, default shapes; contrast = mean over true
vessel voxels of the image minus the local parenchyma level, over the noise SD;
``tests/test_synthetic_presets.py`` checks these):

===========================================  ============  ============
statistic                                    ``demo``      ``clinical``
===========================================  ============  ============
parenchyma mean (HU)                         98-102        109-111
noise SD (HU, flat parenchyma)               20.5          22.4
vessel level, >= 2.5 mm inside a 5 mm root   163-203       150-172
contrast/noise, true radius 0.7-1 mm         3.0-3.8       1.0-1.25
contrast/noise, scales 1 / 2 / 3             2.9-4.0 /     0.7-1.1 /
                                             3.0-3.8 /     1.2-1.4 /
                                             3.5-4.1       1.6-1.9
generation time, one core                    0.1-0.3 s     0.3-0.7 s
===========================================  ============  ============

The preset only sets the image and sampling; the tree, its true radii and the scale
labels are generated exactly as for ``demo``, so scores against the true scales mean
the same in both regimes.

References
----------
.. [1] K. T. Bae, "Intravenous contrast medium administration and scan timing at CT:
       considerations and approaches", Radiology 256(1):32-61, 2010 (review of hepatic
       and portal-venous enhancement and its timing; approximate figures: parenchyma
       about 100-120 HU and portal vein about 150-200 HU in the portal-venous phase).
.. [2] J. P. Heiken et al., "Dynamic incremental CT: effect of volume and
       concentration of contrast material and patient weight on hepatic
       enhancement", Radiology 195(2):353-357, 1995, and M. Kanematsu et al. on
       hepatic enhancement with weight-tailored contrast doses (a hepatic enhancement
       of about 50 HU over the unenhanced ~55-65 HU is the usual target).
.. [3] CHAOS challenge, data description (portal-venous phase CT 70-80 s after
       injection, in which portal veins are well enhanced and hepatic veins partly),
       https://chaos.grand-challenge.org/Data/
.. [4] W. P. Shuman et al., "Model-based iterative reconstruction versus adaptive
       statistical iterative reconstruction and filtered back projection in liver
       64-MDCT", AJR 200(5):1071-1076, 2013 (routine three-phase liver CT acquired at a
       weight-based noise index of 30-36, the noise index being roughly the targeted
       noise SD in HU at the reference slice thickness).
.. [5] AAPM CT protocols, adult routine abdomen/pelvis (noise targets of routine
       abdominal CT; approximate).
.. [6] L. Soler et al., "3D image reconstruction for comparison of algorithm database:
       a patient-specific anatomical and medical image database", IRCAD, 2010
       (3D-IRCADb-01: 20 portal-venous CTs, pixels 0.56-0.87 mm, slices 1.6-4 mm).
.. [7] M. Antonelli, A. Reinke, S. Bakas et al., "The Medical Segmentation Decathlon",
       Nature Communications 13:4128, 2022; A. L. Simpson et al., "A large annotated
       medical image dataset for the development and evaluation of segmentation
       algorithms", arXiv:1902.09063, 2019 (Task08 HepaticVessel: portal-venous CT,
       pixels about 0.8 mm, slices 1.5-8 mm, median about 5 mm; approximate).
.. [8] A. E. Kavur et al., "CHAOS Challenge - combined (CT-MR) healthy abdominal
       organ segmentation", Medical Image Analysis 69:101950, 2021 (portal-venous
       CT, pixels 0.7-0.8 mm, slices 3-3.2 mm).
.. [9] J. Hsieh, "Computed Tomography: Principles, Design, Artifacts, and Recent
       Advances", 2nd ed., SPIE, 2009 (slice sensitivity profile, in-plane
       resolution and noise power spectrum of filtered back projection).

Examples
--------
>>> get_preset("clinical").spacing
(2.0, 0.8, 0.8)
>>> get_preset("demo").noise_hu
20.0
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class SyntheticPreset:
    """Image and sampling parameters of one synthetic regime.

    Attributes
    ----------
    name : str
        Preset name.
    shape : tuple of 3 int
        Default volume shape ``(nz, ny, nx)``.
    spacing : tuple of 3 float
        Default voxel size ``(sz, sy, sx)`` in mm.
    parenchyma_hu : float
        Organ (liver) intensity.
    vessel_hu_range : (float, float)
        Each case draws its vessel intensity uniformly from this range.
    noise_hu : float
        Standard deviation of the per-voxel noise.
    slice_fwhm : float
        Full width at half maximum of the Gaussian slice sensitivity profile, in
        units of the slice spacing ``sz`` (1 = contiguous slices); 0 samples the
        vessels at slice centres with a one-voxel partial-volume ramp (``demo``).
    psf_fwhm_mm : float
        In-plane FWHM (mm) of the Gaussian point-spread function; 0 for none.
    noise_fwhm_mm : float
        In-plane FWHM (mm) of the Gaussian that correlates the noise; 0 for white
        noise. The noise SD stays ``noise_hu`` either way.
    bias_gain : float
        Standard deviation of the smooth multiplicative gain around 1.
    bias_offset_hu : float
        Standard deviation of the smooth additive offset.
    """

    name: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    parenchyma_hu: float = 100.0
    vessel_hu_range: tuple[float, float] = (180.0, 200.0)
    noise_hu: float = 20.0
    slice_fwhm: float = 0.0
    psf_fwhm_mm: float = 0.0
    noise_fwhm_mm: float = 0.0
    bias_gain: float = 0.08
    bias_offset_hu: float = 10.0


#: The built-in presets; ``demo`` is the generator's original regime.
PRESETS: dict[str, SyntheticPreset] = {
    "demo": SyntheticPreset(name="demo", shape=(64, 96, 96), spacing=(1.0, 0.8, 0.8)),
    "clinical": SyntheticPreset(
        name="clinical", shape=(32, 96, 96), spacing=(2.0, 0.8, 0.8), parenchyma_hu=110.0,
        vessel_hu_range=(155.0, 175.0), noise_hu=22.0, slice_fwhm=1.0, psf_fwhm_mm=1.1, noise_fwhm_mm=1.0,
        bias_gain=0.04, bias_offset_hu=5.0,
    ),
}


def get_preset(preset: str | SyntheticPreset) -> SyntheticPreset:
    """Look up a preset by name (a :class:`SyntheticPreset` passes through).

    Parameters
    ----------
    preset : str or SyntheticPreset
        A key of :data:`PRESETS` or a preset.

    Returns
    -------
    preset : SyntheticPreset

    Raises
    ------
    InputError
        For an unknown name; the message lists the valid ones.

    Examples
    --------
    >>> get_preset("demo").shape
    (64, 96, 96)
    """
    if isinstance(preset, SyntheticPreset):
        return preset
    try:
        return PRESETS[preset]
    except (KeyError, TypeError):
        raise InputError(f"unknown synthetic preset {preset!r}; valid presets: {', '.join(PRESETS)}") from None
