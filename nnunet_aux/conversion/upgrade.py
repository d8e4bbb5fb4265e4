"""``nnunet_aux upgrade``: bring a dataset written by an earlier nnunet_aux version up to date.

nnunet_aux 0.1 wrote ``regions_class_order`` with the source dataset's values (MSD: vessel
1, tumour 2). nnU-Net's own evaluation reads a predicted region as the voxels whose value
lies in the region, so it read the tumour (2) as a vessel scale. The upgrade rewrites
``regions_class_order`` so that every region is written with a value inside it
(:func:`nnunet_aux.dataset_format.written_values`), in the raw dataset and in the copies
nnU-Net keeps (``$nnUNet_preprocessed/<dataset>/dataset.json`` and every trained model's
``$nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>/dataset.json``), each file
atomically. Label files, plans and weights stay as they are: training is unaffected.
Predictions written before the upgrade keep the old values; predict (or run
``nnUNetv2_train ... --val``) again to get files that nnU-Net's evaluation reads right.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from ..dataset_format import load_dataset_json, upgrade_dataset_json, write_dataset_json
from ..errors import InputError
from ..io.files import atomic_write
from .paths import resolve_source


def _copies(name: str) -> list[Path]:
    """dataset.json copies nnU-Net keeps for dataset ``name`` (preprocessed and results folders)."""
    found = []
    preprocessed, results = os.environ.get("nnUNet_preprocessed"), os.environ.get("nnUNet_results")
    if preprocessed and (Path(preprocessed) / name / "dataset.json").is_file():
        found.append(Path(preprocessed) / name / "dataset.json")
    if results and (Path(results) / name).is_dir():
        found += sorted(p / "dataset.json" for p in (Path(results) / name).iterdir()
                        if p.is_dir() and (p / "dataset.json").is_file())
    return found


def upgrade_dataset(dataset: int | str | os.PathLike, raw_root: str | os.PathLike | None = None,
                    dry_run: bool = False) -> list[Path]:
    """Rewrite ``regions_class_order`` of a dataset (and nnU-Net's copies) where it is outdated.

    Parameters
    ----------
    dataset : int, str or path-like
        ID, ``DatasetXXX_Name`` or folder of a raw dataset.
    raw_root : path-like, optional
        Raw data folder; defaults to ``$nnUNet_raw``.
    dry_run : bool, optional
        Only report which files would change.

    Returns
    -------
    changed : list of Path
        The dataset.json files rewritten (or to be rewritten); empty when up to date.

    Every copy is read and checked before any is written; a broken copy (invalid JSON, a
    malformed entry), a copy that cannot be written or a failed write stops the upgrade
    with every file as it was (files already rewritten are put back). Each rewritten file
    keeps its mode.

    Examples
    --------
    >>> upgrade_dataset(508)  # doctest: +SKIP
    [PosixPath('.../Dataset508_MSDHepaticVessel/dataset.json')]
    """
    folder = resolve_source(dataset, raw_root)
    name = folder.resolve().name
    # Read and upgrade every copy before writing any: a broken copy stops the upgrade with
    # every file as it was.
    planned = []
    for path in [folder / "dataset.json", *_copies(name)]:
        try:
            original = path.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror or e}") from None
        new, needed = upgrade_dataset_json(load_dataset_json(path), str(path))
        if needed:
            planned.append((path, new, original))
    if dry_run or not planned:
        return [path for path, _, _ in planned]
    for path, _, _ in planned:
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise InputError(f"cannot write {path}: no permission to write into {path.parent}; nothing was changed")
    done: list[tuple[Path, bytes]] = []
    try:
        for path, new, original in planned:
            write_dataset_json(new, path)
            done.append((path, original))
    except BaseException as e:
        for path, original in reversed(done):  # put back what was already rewritten
            with contextlib.suppress(InputError):
                atomic_write(path, lambda tmp, data=original: Path(tmp).write_bytes(data))
        if isinstance(e, InputError):
            raise InputError(f"{e}; nothing was changed") from None
        raise
    return [path for path, _, _ in planned]


def run(args: argparse.Namespace) -> int:
    """Run ``nnunet_aux upgrade``."""
    changed = upgrade_dataset(args.dataset, args.raw_root, dry_run=args.dry_run)
    if not changed:
        print("up to date: nothing to change")
        return 0
    verb = "would rewrite" if args.dry_run else "rewrote"
    for path in changed:
        order = upgrade_dataset_json(load_dataset_json(path))[0]["regions_class_order"]
        print(f"{verb} {path}: regions_class_order {order}")
    if not args.dry_run:
        print("predictions written before this keep the old values; predict again (or nnUNetv2_train ... --val) "
              "for files that nnU-Net's evaluation reads right")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``upgrade`` parser."""
    p = subparsers.add_parser(
        "upgrade", help="update a dataset written by an earlier nnunet_aux (regions_class_order)",
        description="Rewrite regions_class_order of a scale-decomposed dataset written by nnunet_aux 0.1 "
                    "(source values, e.g. tumour = 2, which nnU-Net's own evaluation reads as a vessel scale) so "
                    "that every region is written with a value inside it (vessel 1, tumour 4). Rewrites "
                    "dataset.json in the raw folder and nnU-Net's copies in $nnUNet_preprocessed and "
                    "$nnUNet_results, each atomically; labels, plans and weights are unchanged.",
    )
    p.add_argument("-d", "--dataset", required=True, metavar="ID", help="dataset: ID, DatasetXXX_Name or folder")
    p.add_argument("--raw-root", default=None, metavar="FOLDER", help="nnU-Net raw data folder (default $nnUNet_raw)")
    p.add_argument("--dry-run", action="store_true", help="only list the files that would change")
    p.set_defaults(func=run)
