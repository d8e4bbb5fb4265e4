"""A synthetic scale-decomposed dataset (vessel trees with known radii, CT-like images)."""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.images import Geometry
from ..validation import check_seed, check_spacing
from .labels import plan_labels
from .paths import dataset_name
from .writer import CaseJob, DecompositionSettings, LoadedCase, write_scale_dataset

if TYPE_CHECKING:
    from ..synthetic import SyntheticPreset

SYNTHETIC_LABELS = {"background": 0, "vessel": 1, "tumour": 2}

#: Fewest voxels along an axis: the skeleton of a vessel tree needs a few voxels beside its
#: walls (the generator itself stops with a clear message when its tree does not fit).
MIN_SHAPE = 8


def _is_count(value, minimum: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class SyntheticCaseReader:
    """Generates one synthetic case (:func:`nnunet_aux.synthetic.generate_case`)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    seed: int
    n_scales: int = 3
    tumours: bool = True
    true_scales: bool = False
    preset: str | SyntheticPreset = "demo"

    def load(self) -> LoadedCase:
        """Generate the case; the label map uses :data:`SYNTHETIC_LABELS`."""
        from ..synthetic import generate_case

        try:
            case = generate_case(self.shape, self.spacing, seed=self.seed, n_scales=self.n_scales,
                                 tumours=self.tumours, preset=self.preset)
        except ValueError as e:  # the generator's parameter checks (e.g. a volume too small for a tree)
            raise InputError(f"synthetic case (seed {self.seed}): {e}") from None
        image = sitk.GetImageFromArray(case.image.astype(np.float32))
        image.SetSpacing(tuple(float(s) for s in reversed(case.spacing)))
        label = np.zeros(case.mask.shape, dtype=np.uint8)
        label[case.tumour] = SYNTHETIC_LABELS["tumour"]
        label[case.mask] = SYNTHETIC_LABELS["vessel"]
        info = {"seed": int(self.seed)}
        scales = thresholds = None
        if self.true_scales:
            scales, thresholds = case.scale, case.thresholds_mm.tolist()
            info["n_branches"] = sum(1 for s in case.segments if s.n_voxels)
        return LoadedCase(images=[image], geometry=Geometry.of(image), label=label,
                          label_source=f"synthetic case (seed {self.seed})", scales=scales,
                          thresholds_mm=thresholds, info=info)


def write_synthetic_dataset(
    dataset_id: int,
    n_train: int,
    n_test: int = 0,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    seed: int = 0,
    n_scales: int = 3,
    num_processes: int = 1,
    overwrite: bool = False,
    raw_root: str | os.PathLike | None = None,
    name: str = "SyntheticVessels",
    *,
    true_scales: bool = False,
    tumours: bool = True,
    settings: DecompositionSettings | None = None,
    progress: bool = True,
    preset: str | SyntheticPreset = "demo",
) -> Path:
    """Write a synthetic scale-decomposed dataset (imagesTr, labelsTr, imagesTs, labelsTs).

    By default the scales come from running :func:`nnunet_aux.scales.decompose_vessels`
    on each generated vessel mask, exactly as for users' data; ``true_scales`` uses the
    generator's ground-truth scales instead.

    Parameters
    ----------
    dataset_id : int
        Dataset ID (1..999).
    n_train, n_test : int
        Numbers of training and test cases.
    shape : sequence of 3 int, optional
        Volume shape ``(nz, ny, nx)``; the preset's if not given.
    spacing : sequence of 3 float, optional
        Voxel size ``(sz, sy, sx)`` in mm, written into the image headers; the
        preset's if not given.
    seed : int, optional
        Base seed; every case gets its own seed derived from it.
    n_scales : int, optional
        Number of scales.
    num_processes : int, optional
        Worker processes.
    overwrite : bool, optional
        Replace an existing dataset with this ID.
    raw_root : path-like, optional
        Raw data folder; defaults to ``$nnUNet_raw``.
    name : str, optional
        Dataset name after ``DatasetXXX_``.
    true_scales : bool, optional
        Use the generator's scales instead of decomposing the masks.
    tumours : bool, optional
        Add tumours (label ``S + 1``).
    settings : DecompositionSettings, optional
        Decomposition settings (``n_scales`` must agree); default per-volume quantiles.
    progress : bool, optional
        Show progress bars.
    preset : str or SyntheticPreset, optional
        Image regime (:mod:`nnunet_aux.synthetic.presets`): ``"demo"`` (easy,
        64 x 96 x 96 voxels of 1.0 x 0.8 x 0.8 mm) or ``"clinical"`` (calibrated to
        portal-venous liver CT, 32 x 96 x 96 voxels of 2.0 x 0.8 x 0.8 mm).

    Returns
    -------
    folder : Path
        ``<raw_root>/DatasetXXX_<name>``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as raw:
    ...     folder = write_synthetic_dataset(999, 1, shape=(16, 24, 24), raw_root=raw,
    ...                                      true_scales=True, progress=False)
    ...     sorted(p.name for p in folder.iterdir())
    ['dataset.json', 'imagesTr', 'labelsTr', 'scale_decomposition_report.json']
    """
    from ..synthetic import get_preset

    regime = get_preset(preset)
    if not _is_count(n_train, 1) or not _is_count(n_test, 0):
        raise InputError(f"need at least 1 training case and 0 or more test cases, got {n_train!r} and {n_test!r}")
    settings = DecompositionSettings(n_scales=n_scales) if settings is None else settings
    if settings.n_scales != n_scales:
        raise ValueError(f"settings.n_scales ({settings.n_scales}) differs from n_scales ({n_scales})")
    shape = tuple(int(s) for s in (regime.shape if shape is None else shape))
    spacing = tuple(float(s) for s in (regime.spacing if spacing is None else spacing))
    if len(shape) != 3 or len(spacing) != 3:
        raise InputError(f"shape and spacing need 3 values (z, y, x), got {shape} and {spacing}")
    if min(shape) < MIN_SHAPE:
        raise InputError(f"shape must be at least {MIN_SHAPE} voxels along each axis, got {list(shape)}")
    spacing = check_spacing(spacing)
    seed = check_seed(seed)
    # Independent, reproducible seeds per case; test cases never repeat a training case.
    seeds = np.random.SeedSequence(seed).generate_state(n_train + n_test).tolist()
    jobs = [
        CaseJob(f"synthetic_{i:03d}", "Tr" if i < n_train else "Ts",
                SyntheticCaseReader(shape, spacing, int(s), n_scales, tumours, true_scales, regime))
        for i, s in enumerate(seeds)
    ]
    labels = SYNTHETIC_LABELS if tumours else {"background": 0, "vessel": 1}
    plan = plan_labels(labels, "vessel", n_scales)
    scales_from = "the generator's true scales" if true_scales else "decompose_vessels"
    return write_scale_dataset(
        jobs, plan, dataset_name(dataset_id, name), settings=settings, raw_root_folder=raw_root,
        overwrite=overwrite, num_processes=num_processes, progress=progress, channel_names={"0": "CT"},
        description=f"synthetic vessel trees, {n_scales} scales from {scales_from}",
        report={"source": "nnunet_aux.synthetic.generate_case", "seed": int(seed),
                "true_scales": bool(true_scales), "preset": regime.name},
    )
