"""Medical Segmentation Decathlon Task08 (hepatic vessel) into a scale-decomposed dataset."""

from __future__ import annotations

import os
from pathlib import Path

from ..dataset_format import load_dataset_json
from ..errors import InputError
from .labels import plan_labels
from .paths import target_name
from .raw_dataset import raw_case_job
from .writer import CaseJob, DecompositionSettings, write_scale_dataset

MSD_FILE_ENDING = ".nii.gz"


def msd_labels(labels: dict, source: str = "dataset.json") -> dict[str, int]:
    """MSD's ``{"0": "background", "1": "Vessel"}`` as ``{"background": 0, "vessel": 1}``.

    Examples
    --------
    >>> msd_labels({"0": "background", "1": "Vessel", "2": "Tumour"})
    {'background': 0, 'vessel': 1, 'tumour': 2}
    """
    out: dict[str, int] = {}
    for value, name in labels.items():
        try:
            out[str(name).lower()] = int(value)
        except ValueError:
            raise InputError(f"{source}: label value {value!r} is not an integer") from None
    return out


def msd_jobs(folder: Path) -> list[CaseJob]:
    """Cases of an MSD task folder: ``imagesTr/<case>.nii.gz`` with ``labelsTr/<case>.nii.gz``, and ``imagesTs``."""
    jobs = []
    for split in ("Tr", "Ts"):
        images_dir = folder / f"images{split}"
        if not images_dir.is_dir():
            if split == "Tr":
                raise InputError(f"missing folder {images_dir}")
            continue
        # "._*" files are macOS resource forks shipped in the MSD archives.
        names = sorted(f.name for f in images_dir.iterdir()
                       if f.name.endswith(MSD_FILE_ENDING) and not f.name.startswith("."))
        for name in names:
            jobs.append(raw_case_job(name[: -len(MSD_FILE_ENDING)], split, (images_dir / name,),
                                     folder / f"labels{split}" / name, label_required=(split == "Tr")))
    return jobs


def convert_msd_hepaticvessel(
    source: str | os.PathLike,
    target: int | str = 508,
    *,
    settings: DecompositionSettings = DecompositionSettings(),
    raw_root: str | os.PathLike | None = None,
    overwrite: bool = False,
    num_processes: int = 1,
    progress: bool = True,
) -> Path:
    """Convert MSD Task08_HepaticVessel into a scale-decomposed nnU-Net dataset.

    Labels: vessel scales ``1..S``, tumour ``S + 1``; predictions are written as vessel 1,
    tumour ``S + 1`` (each region with a value inside it, so that nnU-Net's own evaluation
    reads them right; ``nnunet_aux map-labels`` gives MSD's vessel 1, tumour 2). Images are
    linked unchanged as ``<case>_0000.nii.gz``.

    Parameters
    ----------
    source : path-like
        The ``Task08_HepaticVessel`` folder (``dataset.json``, ``imagesTr``,
        ``labelsTr``, ``imagesTs``).
    target : int or str, optional
        Target ID (named ``MSDHepaticVessel``) or ``DatasetXXX_Name``.
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
    .. [1] M. Antonelli et al., "The Medical Segmentation Decathlon", Nature
           Communications 13:4128, 2022.

    Examples
    --------
    >>> convert_msd_hepaticvessel("/data/Task08_HepaticVessel", 508)  # doctest: +SKIP
    PosixPath('.../Dataset508_MSDHepaticVessel')
    """
    folder = Path(source)
    if not folder.is_dir():
        raise InputError(f"MSD task folder {folder} not found")
    dataset_json = load_dataset_json(folder, check=False)  # MSD's own format (labels by value)
    source_json = str(folder / "dataset.json")
    if "labels" not in dataset_json:
        raise InputError(f"{source_json} has no 'labels' entry")
    plan = plan_labels(msd_labels(dataset_json["labels"], source_json), "vessel", settings.n_scales, source_json)
    jobs = msd_jobs(folder)
    name = target_name(target, "MSDHepaticVessel")
    channels = dataset_json.get("modality", dataset_json.get("channel_names", {"0": "CT"}))
    return write_scale_dataset(
        jobs, plan, name, settings=settings, raw_root_folder=raw_root, overwrite=overwrite,
        num_processes=num_processes, progress=progress,
        channel_names={str(k): str(v) for k, v in channels.items()}, file_ending=MSD_FILE_ENDING,
        description=f"MSD Task08 hepatic vessel, vessels decomposed into {settings.n_scales} scales",
        report={"source": str(folder.resolve())}, sources=[folder],
    )
