"""3D-IRCADb-01 (DICOM series per patient) into a scale-decomposed dataset.

Layout: ``3Dircadb1/3Dircadb1.N/PATIENT_DICOM/image_<i>`` and
``3Dircadb1.N/MASKS_DICOM/<structure>/image_<i>``, or the same folders still zipped as
``PATIENT_DICOM.zip`` / ``MASKS_DICOM.zip`` (unzipped into a temporary folder, never into
the source). Masks are 0/255 images.

Vessel = portal vein (``portalvein``; case 10 has ``portalvein1``) united with the
venous system (``venoussystem``; cases 2, 10, 11, 13 and 18 have ``venacava`` instead),
plus ``artery`` where present and asked for. The paper crops each scan to the liver's
bounding box; ``crop_liver`` does that with a margin.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.images import Geometry
from .dicom import read_dicom_series
from .labels import plan_labels
from .paths import target_name
from .writer import CaseJob, DecompositionSettings, LoadedCase, write_scale_dataset

_PATIENT = re.compile(r"^3Dircadb1\.(\d+)$", re.IGNORECASE)

#: Mask folders that make up the vessel tree: for each part, the names to try in order.
VESSEL_PARTS = {
    "portal vein": ("portalvein", "portalvein1"),
    "venous system": ("venoussystem", "venacava"),
}


def _dicom_folder(patient: Path, name: str, scratch: Path) -> tuple[Path, str | None]:
    """``patient/name``, or where ``patient/name.zip`` unzips to inside ``scratch``."""
    folder = patient / name
    if folder.is_dir() and any(folder.iterdir()):
        return folder, None
    archive = patient / f"{name}.zip"
    if not archive.is_file():
        raise InputError(f"missing folder {folder} (and no {archive.name})")
    target = scratch / name
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(target, members=[m for m in z.namelist() if not m.startswith("__MACOSX")])
    except zipfile.BadZipFile:
        raise InputError(f"{archive} is not a valid zip file") from None
    # The archives hold "NAME/...", some "NAME/NAME/...": go down to the content.
    while (target / name).is_dir():
        target = target / name
    return target, archive.name


def _mask_folders(masks: Path) -> dict[str, Path]:
    return {p.name.lower(): p for p in masks.iterdir() if p.is_dir() and not p.name.startswith(".")}


def _read_mask(folder: Path, reference: sitk.Image) -> np.ndarray:
    mask = read_dicom_series(folder)
    if mask.GetSize() != reference.GetSize() or not np.allclose(mask.GetSpacing(), reference.GetSpacing(),
                                                                rtol=1e-4, atol=1e-4):
        raise InputError(f"mask {folder} has size {mask.GetSize()} and spacing {mask.GetSpacing()}, its CT "
                         f"{reference.GetSize()} and {reference.GetSpacing()}")
    # 0/255 masks; any non-zero value is inside.
    return sitk.GetArrayFromImage(mask) > 0


def liver_box(liver: np.ndarray, spacing_zyx: tuple[float, ...], margin_mm: float) -> tuple[slice, ...]:
    """Bounding box of a mask grown by ``margin_mm`` on each side, clipped to the volume.

    Examples
    --------
    >>> m = np.zeros((10, 10, 10), bool); m[4:6, 4:6, 4:6] = True
    >>> liver_box(m, (1.0, 2.0, 2.0), 3.0)
    (slice(1, 9, None), slice(2, 8, None), slice(2, 8, None))
    """
    if not liver.any():
        raise InputError("the liver mask is empty")
    box = []
    for axis, s in enumerate(spacing_zyx):
        other = tuple(a for a in range(liver.ndim) if a != axis)
        idx = np.flatnonzero(liver.any(axis=other))
        pad = int(math.ceil(margin_mm / s - 1e-9))
        box.append(slice(max(int(idx[0]) - pad, 0), min(int(idx[-1]) + 1 + pad, liver.shape[axis])))
    return tuple(box)


@dataclass(frozen=True)
class IrcadbCaseReader:
    """Reads one 3D-IRCADb patient folder."""

    patient: str
    artery: bool = False
    crop_liver: bool = False
    margin_mm: float = 10.0
    liver_label: bool = False

    def load(self) -> LoadedCase:
        """CT and label map (vessel 1, liver 2 if asked), cropped if asked."""
        patient = Path(self.patient)
        with tempfile.TemporaryDirectory(prefix="nnunet_aux_ircadb_") as scratch:
            ct_folder, ct_zip = _dicom_folder(patient, "PATIENT_DICOM", Path(scratch))
            masks_folder, masks_zip = _dicom_folder(patient, "MASKS_DICOM", Path(scratch))
            ct = read_dicom_series(ct_folder)
            available = _mask_folders(masks_folder)
            used: dict[str, list[str]] = {"vessel": []}
            vessel = np.zeros(tuple(reversed(ct.GetSize())), dtype=bool)
            for names in VESSEL_PARTS.values():
                name = next((n for n in names if n in available), None)
                if name is None:
                    continue
                vessel |= _read_mask(available[name], ct)  # a union: overlapping masks stay 1
                used["vessel"].append(name)
            if self.artery and "artery" in available:
                vessel |= _read_mask(available["artery"], ct)
                used["vessel"].append("artery")
            if not used["vessel"]:
                raise InputError(f"{masks_folder} holds none of the vessel masks "
                                 f"{[n for names in VESSEL_PARTS.values() for n in names]}")
            liver = None
            if self.crop_liver or self.liver_label:
                if "liver" not in available:
                    raise InputError(f"{masks_folder} has no 'liver' mask, needed for cropping or the liver label")
                liver = _read_mask(available["liver"], ct)
                used["liver"] = ["liver"]
        label = np.zeros(vessel.shape, dtype=np.uint8)
        if self.liver_label:
            label[liver] = 2
        label[vessel] = 1
        info: dict = {"patient_folder": str(patient), "masks": used,
                      "missing_masks": sorted({"artery"} - set(available)) if self.artery else [],
                      "unzipped": [z for z in (ct_zip, masks_zip) if z]}
        if self.crop_liver:
            box = liver_box(liver, tuple(reversed(ct.GetSpacing())), self.margin_mm)
            # SimpleITK slices in (x, y, z) order and moves the origin with the crop.
            ct = ct[box[2], box[1], box[0]]
            label = label[box]
            info["crop_zyx"] = [[b.start, b.stop] for b in box]
        return LoadedCase(images=[ct], geometry=Geometry.of(ct), label=label,
                          label_source=str(patient / "MASKS_DICOM"), info=info)


def ircadb_patients(folder: Path) -> list[tuple[int, Path]]:
    """``(number, folder)`` of each ``3Dircadb1.N`` patient folder, sorted by number."""
    if not folder.is_dir():
        raise InputError(f"3D-IRCADb folder {folder} not found")
    found = sorted((int(m.group(1)), p) for p in folder.iterdir()
                   if p.is_dir() and (m := _PATIENT.match(p.name)))
    if not found:
        raise InputError(f"{folder} holds no patient folders named 3Dircadb1.<N>")
    return found


def convert_ircadb(
    source: str | os.PathLike,
    target: int | str = 509,
    *,
    artery: bool = False,
    crop_liver: bool = False,
    margin_mm: float = 10.0,
    liver_label: bool = False,
    settings: DecompositionSettings = DecompositionSettings(),
    raw_root: str | os.PathLike | None = None,
    overwrite: bool = False,
    num_processes: int = 1,
    progress: bool = True,
) -> Path:
    """Convert 3D-IRCADb-01 into a scale-decomposed nnU-Net dataset (all cases for training).

    Parameters
    ----------
    source : path-like
        The ``3Dircadb1`` folder holding ``3Dircadb1.1`` ... ``3Dircadb1.20``.
    target : int or str, optional
        Target ID (named ``IRCADbVessels``) or ``DatasetXXX_Name``.
    artery : bool, optional
        Add the hepatic artery to the vessel tree where a case has its mask.
    crop_liver : bool, optional
        Crop each case to the liver's bounding box plus ``margin_mm`` (the paper's setting).
    margin_mm : float, optional
        Margin around the liver box, in mm.
    liver_label : bool, optional
        Add the liver (without its vessels) as label ``S + 1``.
    settings : DecompositionSettings, optional
        Number of scales and threshold mode.
    raw_root : path-like, optional
        Output raw data folder; defaults to ``$nnUNet_raw``.
    overwrite : bool, optional
        Replace an existing dataset with the target's ID.
    num_processes : int, optional
        Worker processes.
    progress : bool, optional
        Show progress bars.

    Returns
    -------
    folder : Path

    References
    ----------
    .. [1] L. Soler et al., "3D image reconstruction for comparison of algorithm database:
           a patient specific anatomical and medical image database", IRCAD, 2010.
    .. [2] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Sect. 3 (liver bounding box).

    Examples
    --------
    >>> convert_ircadb("/data/3Dircadb1", 509, crop_liver=True, margin_mm=10)  # doctest: +SKIP
    PosixPath('.../Dataset509_IRCADbVessels')
    """
    if margin_mm < 0:
        raise InputError(f"margin must be non-negative, got {margin_mm} mm")
    folder = Path(source)
    jobs = [CaseJob(f"ircadb_{n:02d}", "Tr", IrcadbCaseReader(str(p), artery, crop_liver, float(margin_mm),
                                                                liver_label))
            for n, p in ircadb_patients(folder)]
    labels = {"background": 0, "vessel": 1, **({"liver": 2} if liver_label else {})}
    plan = plan_labels(labels, "vessel", settings.n_scales)
    parts = "portal vein + venous system" + (" + artery" if artery else "")
    return write_scale_dataset(
        jobs, plan, target_name(target, "IRCADbVessels"), settings=settings, raw_root_folder=raw_root,
        overwrite=overwrite, num_processes=num_processes, progress=progress, channel_names={"0": "CT"},
        description=f"3D-IRCADb-01 liver vessels ({parts}) decomposed into {settings.n_scales} scales"
                    + (f", cropped to the liver box + {margin_mm} mm" if crop_liver else ""),
        report={"source": str(folder.resolve()), "artery": artery, "crop_liver": crop_liver,
                "margin_mm": margin_mm if crop_liver else None, "liver_label": liver_label}, sources=[folder],
    )
