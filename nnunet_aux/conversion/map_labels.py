"""Predictions of a scale-decomposed dataset back in the source dataset's label values.

A scale-decomposed dataset predicts each region with a value inside it (vessel 1, tumour
``S + 1``; or one class per scale in the multi-class variant), so that nnU-Net's own
evaluation reads its predictions right. Users who need the source dataset's values (MSD
Task08: vessel 1, tumour 2) map them back with ``nnunet_aux map-labels``; the mapping
comes from ``label_mapping`` in the dataset's ``scale_decomposition_report.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..dataset_format import REPORT_FILENAME, load_dataset_json, write_json_atomic
from ..errors import InputError
from ..io.files import check_outputs_apart, check_writable_folder, default_file_mode, make_folder, os_error_message
from ..io.images import check_complete, quiet_itk
from .paths import resolve_source

#: File map-labels writes beside the files it mapped; an input folder holding it is refused.
MARKER_FILENAME = ".nnunet_aux_map_labels.json"


def source_value_table(label_mapping: Mapping[str, Any], source: str = REPORT_FILENAME) -> dict[int, int]:
    """Predicted value -> source value, from a report's ``label_mapping`` (source value -> output value(s)).

    Every scale of the structure maps to the structure's source value.

    Examples
    --------
    >>> source_value_table({"0": 0, "1": [1, 2, 3], "2": 4})
    {0: 0, 1: 1, 2: 1, 3: 1, 4: 2}
    """
    table: dict[int, int] = {}
    try:
        for source_value, output in label_mapping.items():
            for value in (output if isinstance(output, (list, tuple)) else [output]):
                table[int(value)] = int(source_value)
    except (TypeError, ValueError, AttributeError):
        raise InputError(f"{source}: 'label_mapping' must map source values to output values") from None
    if 0 not in table:
        table[0] = 0
    return dict(sorted(table.items()))


def map_prediction_labels(
    dataset: int | str | os.PathLike,
    input_folder: str | os.PathLike,
    output_folder: str | os.PathLike,
    *,
    raw_root: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write every prediction of ``input_folder`` into ``output_folder`` with the source's label values.

    Parameters
    ----------
    dataset : int, str or path-like
        The scale-decomposed dataset the predictions belong to (ID, ``DatasetXXX_Name`` or
        folder); its report gives the mapping.
    input_folder : path-like
        Predictions (e.g. the output folder of ``nnUNetv2_predict``).
    output_folder : path-like
        Where the mapped files go (created); must not be ``input_folder``.
    raw_root : path-like, optional
        Raw data folder; defaults to ``$nnUNet_raw``.
    overwrite : bool, optional
        Replace files that already exist in ``output_folder``.

    Returns
    -------
    files : list of Path
        The files written. All are written to temporary names (each read back to be sure it
        is complete) and renamed at the end, so a failure leaves the output folder as it
        was; the geometry is copied from the prediction. ``.nnunet_aux_map_labels.json`` beside them
        marks them as mapped: an input folder holding it is refused (mapping twice would
        read MSD's tumour 2 as a vessel scale), as are files with values nnU-Net does not
        predict for the dataset, outputs that would overwrite an input, and an output
        folder that cannot be written.

    Examples
    --------
    >>> map_prediction_labels(508, "pred", "pred_msd_values")  # doctest: +SKIP
    """
    folder = resolve_source(dataset, raw_root)
    dataset_json = load_dataset_json(folder)
    report_file = folder / REPORT_FILENAME
    report = load_dataset_json(report_file, check=False)
    if "label_mapping" not in report:
        raise InputError(f"{report_file} has no 'label_mapping'")
    table = source_value_table(report["label_mapping"], str(report_file))
    ending = dataset_json.get("file_ending", ".nii.gz")
    table = _predicted_only(table, dataset_json, folder / "dataset.json")
    source_in, target = Path(input_folder), Path(output_folder)
    if not source_in.is_dir():
        raise InputError(f"missing folder {source_in}")
    if (source_in / MARKER_FILENAME).is_file():
        raise InputError(f"{source_in} holds predictions that map-labels already wrote with the source's values "
                         f"({source_in / MARKER_FILENAME}); mapping them again would misread them (a tumour as a "
                         f"vessel scale): map the predictions nnU-Net wrote")
    if target.exists() and target.resolve() == source_in.resolve():
        raise InputError("the output folder must differ from the input folder (values would be mapped twice)")
    files = sorted(p for p in source_in.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name.endswith(ending))
    if not files:
        raise InputError(f"no predictions ({ending}) in {source_in}")
    inputs = [(f, "prediction") for f in files] + [(folder / "dataset.json", "dataset.json"),
                                                   (report_file, "report")]
    check_outputs_apart([(target, "-o")], inputs)
    if target.exists() and not target.is_dir():
        raise InputError(f"-o {target} is a file; give a folder for the mapped predictions")
    outputs = [target / f.name for f in files]
    check_outputs_apart([(o, "-o") for o in outputs] + [(target / MARKER_FILENAME, "-o")], inputs)
    if not overwrite:
        clash = [o for o in outputs if o.exists()]
        if clash:
            raise InputError(f"{clash[0]} exists (use --overwrite to replace it)")
    check_writable_folder(target, "output folder")
    lut = np.arange(max(table) + 1, dtype=np.int64)
    known = np.zeros(len(lut), dtype=bool)
    for value, source_value in table.items():
        lut[value], known[value] = source_value, True
    # nnU-Net's own reader/writer for the dataset's format (what nnUNetv2_predict wrote with), so every
    # format nnU-Net supports works and the geometry is written back as nnU-Net writes it.
    io = _reader_writer(dataset_json, files[0])
    # Read and check everything first: one bad file writes nothing.
    mapped = []
    for f in files:
        check_complete(f)
        try:
            with quiet_itk():
                seg, properties = io.read_seg(str(f))
        except Exception as e:  # noqa: BLE001 (nnU-Net's readers raise anything)
            raise InputError(f"cannot read {f}: {e}") from None
        if not np.array_equal(seg, np.rint(seg)):  # nnU-Net's readers return float32 label maps
            raise InputError(f"{f}: predictions must hold integer label values")
        array = seg.astype(np.int64)
        values = np.unique(array)
        unknown = [int(v) for v in values if v < 0 or v >= len(lut) or not known[v]]
        if unknown:
            raise InputError(f"{f}: values {unknown} are not predicted values of {folder.name} "
                             f"(known: {sorted(table)})")
        mapped.append((f, properties, array))
    return _write_all(target, mapped, lut, io, ending, folder)


def _predicted_only(table: dict[int, int], dataset_json: Mapping[str, Any], source: Path) -> dict[int, int]:
    """The table restricted to values nnU-Net writes into predictions of the dataset.

    A region-based dataset's predictions hold only ``regions_class_order`` (vessel 1, tumour
    S + 1): a file holding another scale value (2 ... S) is not such a prediction (it may be
    a reference label map, or files already mapped to the source's values, where 2 is MSD's
    tumour) and is refused instead of being read as a vessel.
    """
    order = dataset_json.get("regions_class_order")
    if order is None:
        return table
    predicted = {0, *(int(v) for v in order)}
    kept = {value: source for value, source in table.items() if value in predicted}
    missing = sorted(predicted - set(kept))
    if missing:
        raise InputError(f"{source}: regions_class_order {list(order)} writes values {missing} that the report's "
                         f"label_mapping does not map back")
    return kept


def _write_all(target: Path, mapped: list, lut: np.ndarray, io: Any, ending: str, folder: Path) -> list[Path]:
    """Write every mapped file to a temporary name (checked complete), then rename them all.

    A failure (no permission, a full disk, a file-size limit, Ctrl-C) removes the temporary
    files and a folder made here: the output folder is as it was.
    """
    created = not target.exists()
    make_folder(target)
    mode = default_file_mode()
    pending: list[tuple[str, Path]] = []
    try:
        for f, properties, array in mapped:
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{f.name}.", suffix=ending, dir=target)
            except OSError as e:
                raise InputError(os_error_message(e, target / f.name)) from None
            os.close(fd)
            pending.append((tmp, target / f.name))
            _write_one(io, lut[array][0], tmp, properties, target / f.name)  # without its channel axis
            os.chmod(tmp, mode)
        marker = target / MARKER_FILENAME
        write_json_atomic({"dataset": folder.name, "note": "these files hold the source dataset's label values; "
                           "nnunet_aux map-labels refuses to map them again",
                           "files": [final.name for _, final in pending]}, marker)
        written = []
        for tmp, final in pending:
            os.replace(tmp, final)
            written.append(final)
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if created:
            with contextlib.suppress(OSError):
                (target / MARKER_FILENAME).unlink()
            with contextlib.suppress(OSError):
                target.rmdir()
        raise
    return written


def _write_one(io: Any, array: np.ndarray, tmp: str, properties: dict, final: Path) -> None:
    """``io.write_seg`` into ``tmp``; the result is read back (SimpleITK ignores failed writes)."""
    try:
        with quiet_itk():
            io.write_seg(array, tmp, properties)
    except OSError as e:
        raise InputError(os_error_message(e, final)) from None
    except RuntimeError as e:
        raise InputError(f"cannot write {final}: {str(e).strip().splitlines()[-1]}") from None
    try:
        check_complete(tmp)
    except InputError as e:
        raise InputError(f"cannot write {final}: the file came out incomplete ({e}); is the disk full or a "
                         f"file-size limit set?") from None


def _reader_writer(dataset_json: dict, example: Path):
    """An instance of nnU-Net's reader/writer class for the dataset (its ``overwrite_image_reader_writer``
    or the first class that reads ``example``)."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    try:
        return determine_reader_writer_from_dataset_json(dataset_json, str(example), verbose=False)()
    except Exception as e:  # noqa: BLE001
        raise InputError(f"no nnU-Net reader/writer for {example}: {e}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``nnunet_aux map-labels``."""
    written = map_prediction_labels(args.dataset, args.input, args.output, raw_root=args.raw_root,
                                    overwrite=args.overwrite)
    print(f"{len(written)} prediction(s) written to {args.output} with the source dataset's label values")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``map-labels`` parser."""
    p = subparsers.add_parser(
        "map-labels", help="write predictions with the source dataset's label values (MSD: vessel 1, tumour 2)",
        description="Map predictions of a scale-decomposed dataset (vessel = 1 or a scale 1..S, other structures "
                    "S+1, ...) back to the label values of the dataset it was converted from, using label_mapping "
                    "in its scale_decomposition_report.json. E.g. MSD Task08: vessel 1, tumour 2.",
    )
    p.add_argument("-d", "--dataset", required=True, metavar="ID",
                   help="the scale-decomposed dataset: ID, DatasetXXX_Name or folder")
    p.add_argument("-i", "--input", required=True, metavar="FOLDER", help="folder of predictions")
    p.add_argument("-o", "--output", required=True, metavar="FOLDER", help="folder for the mapped predictions")
    p.add_argument("--raw-root", default=None, metavar="FOLDER", help="nnU-Net raw data folder (default $nnUNet_raw)")
    p.add_argument("--overwrite", action="store_true", help="replace files that exist in the output folder")
    p.set_defaults(func=run)
