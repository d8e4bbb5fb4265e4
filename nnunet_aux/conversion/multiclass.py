"""The multi-class baseline variant of a scale-decomposed dataset (one class per scale)."""

from __future__ import annotations

import os
from pathlib import Path

from ..dataset_format import REPORT_FILENAME, load_dataset_json, multiclass_dataset_json, write_dataset_json
from ..io.files import dataset_id_lock
from ..io.images import link_or_copy
from .paths import (
    check_not_source_id,
    check_target_free,
    resolve_source,
    source_short_name,
    split_dataset_name,
    target_name,
)
from .paths import raw_root as _raw_root
from .staging import staged_folder

_FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")


def make_multiclass_dataset(
    source: int | str | os.PathLike,
    target: int | str,
    *,
    raw_root: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the multi-class variant of a scale-decomposed dataset.

    The label files are the same (hard-linked, else copied); only dataset.json changes
    (:func:`nnunet_aux.dataset_format.multiclass_dataset_json`), so nnU-Net trains one
    softmax class per scale: the paper's multi-class baseline.

    Parameters
    ----------
    source : int, str or path-like
        Scale-decomposed dataset: ID, ``DatasetXXX_Name`` or folder.
    target : int or str
        Target ID (named after the source with ``_multiclass`` appended) or full name.
    raw_root : path-like, optional
        Raw data folder; defaults to ``$nnUNet_raw``.
    overwrite : bool, optional
        Replace an existing dataset with the target's ID.

    Returns
    -------
    folder : Path

    References
    ----------
    .. [1] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Table 1.

    Examples
    --------
    >>> import tempfile
    >>> from nnunet_aux.conversion import write_synthetic_dataset
    >>> with tempfile.TemporaryDirectory() as raw:
    ...     _ = write_synthetic_dataset(998, 1, shape=(16, 24, 24), raw_root=raw, true_scales=True,
    ...                                 progress=False)
    ...     make_multiclass_dataset(998, 997, raw_root=raw).name
    'Dataset997_SyntheticVessels_multiclass'
    """
    folder = resolve_source(source, raw_root)
    dataset_json = multiclass_dataset_json(load_dataset_json(folder), str(folder / "dataset.json"))
    name = target_name(target, f"{source_short_name(folder)}_multiclass")
    root = _raw_root(raw_root)
    check_not_source_id(name, folder, root)
    dataset_json["name"] = split_dataset_name(name)[1]
    with dataset_id_lock(root, split_dataset_name(name)[0]):
        existing = check_target_free(root, name, overwrite, sources=[folder])
        with staged_folder(root, name, existing) as out:
            for sub in _FOLDERS:
                if not (folder / sub).is_dir():
                    continue
                (out / sub).mkdir()
                for f in sorted((folder / sub).iterdir()):
                    if f.is_file() and not f.name.startswith("."):
                        link_or_copy(f, out / sub / f.name)
            if (folder / REPORT_FILENAME).is_file():
                link_or_copy(folder / REPORT_FILENAME, out / REPORT_FILENAME, check=False)
            write_dataset_json(dataset_json, out)
    return root / name
