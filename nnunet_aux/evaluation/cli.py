"""The ``nnunet_aux evaluate`` subcommand.

The package's main ``cli.py`` calls :func:`register` with its subparsers; the parser's
``func`` default is :func:`run`.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..cli import add_command_parser
from ..errors import InputError
from .folder import default_num_processes, evaluate_folders
from .labels import parse_label_arguments, parse_scale_arguments, with_scales

DESCRIPTION = """\
Evaluate predicted segmentations against references: Dice, Jaccard, clDice, HD, HD95,
ASSD (mm), voxel and connected-component counts, missed reference components, and for
vessel regions with scales, per-scale recall and Dice. Files are matched by case name
(case.nii.gz in both folders; .nii.gz, .nii, .nrrd, .mha, .mhd, .gipl with SimpleITK, and
.png, .bmp, .tif, .tiff with nnU-Net's own readers: 3D TIFF needs its spacing .json). Writes a JSON
summary (per case, and mean/std/median per label) and a CSV beside it (one row per case
and label).

Labels come from --labels, else --dataset-json, else the dataset.json that
nnUNetv2_predict writes into the prediction folder, else the one beside the reference
folder. With a region-based dataset.json ("vessel": [1, 2, 3]) regions are evaluated on
the reference, and the prediction value of each region is taken from
regions_class_order, as nnU-Net writes it (vessel = 1, tumour = 4 in the package's
scale-decomposed datasets; datasets of nnunet_aux 0.1 wrote tumour = 2, which this
command still reads right, nnU-Net's own evaluation does not: `nnunet_aux upgrade`
fixes them). Input errors (a missing or truncated file, a missing prediction,
geometry mismatch, no labels) end with one line and exit code 2. A "scales" key ({"vessel": {"small": 1, "medium": 2,
"large": 3}}) adds per-scale recall and Dice of that region; with --labels, --scales
does the same (e.g. for a multi-class prediction: --labels vessel=1,2,3 --scales
vessel:small=1,medium=2,large=3).
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` parser (:func:`nnunet_aux.cli.add_command_parser`) and return it;
    its ``func`` default is :func:`run`."""
    parser = add_command_parser(
        subparsers, "evaluate",
        "evaluate a folder of predictions (Dice, clDice, HD95, ASSD, per-scale recall)",
        DESCRIPTION)
    parser.add_argument("-ref", "--ref", dest="ref", required=True, metavar="FOLDER",
                        help="folder of reference label maps, e.g. nnUNet_raw/DatasetXXX/labelsTs")
    parser.add_argument("-pred", "--pred", dest="pred", required=True, metavar="FOLDER",
                        help="folder of predicted label maps, e.g. the output folder of nnUNetv2_predict")
    parser.add_argument("-o", "--output", dest="output", default=None, metavar="JSON",
                        help="summary JSON to write (default: PRED/summary_nnunet_aux.json); the CSV is "
                             "written beside it with the ending .csv")
    parser.add_argument("--labels", nargs="+", default=None, metavar="NAME=VALUES",
                        help="labels to evaluate, the same values in reference and prediction: "
                             "'vessel=1 tumour=2'; 'vessel=1,2,3' is a region (union of values). "
                             "Overrides --dataset-json")
    parser.add_argument("--scales", nargs="+", default=None, metavar="REGION:NAME=VALUE,...",
                        help="with --labels: reference values that carry the vessel scales of a region, "
                             "for per-scale recall and Dice, e.g. 'vessel:small=1,medium=2,large=3' "
                             "(a dataset.json gives them in its 'scales' key)")
    parser.add_argument("--dataset-json", dest="dataset_json", default=None, metavar="JSON",
                        help="nnU-Net dataset.json giving labels, regions (with regions_class_order) and "
                             "the optional 'scales' key")
    parser.add_argument("-np", "--num-processes", dest="num_processes", type=int,
                        default=default_num_processes(), metavar="N",
                        help="worker processes (default: %(default)s, from $nnUNet_def_n_proc or 8, "
                             "at most the number of CPUs)")
    parser.add_argument("--no-csv", dest="csv", action="store_false", help="do not write the CSV")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="hide the progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``nnunet_aux evaluate`` with parsed arguments; return the exit status (0)."""
    output = args.output or os.path.join(args.pred, "summary_nnunet_aux.json")
    labels = parse_label_arguments(args.labels) if args.labels else None
    if args.scales:
        if labels is None:
            raise InputError("--scales needs --labels (a dataset.json gives scales in its 'scales' key)")
        labels = with_scales(labels, parse_scale_arguments(args.scales), where="--scales")
    summary = evaluate_folders(
        args.ref,
        args.pred,
        output,
        labels=labels,
        dataset_json=args.dataset_json,
        num_processes=args.num_processes,
        csv=args.csv,
        progress=args.progress,
    )
    _note_old_dataset_json(summary["label_source"])
    # A short report for the terminal; the files hold everything.
    print(f"{len(summary['metric_per_case'])} cases, labels from {summary['label_source']}")
    for name, metrics in summary["aggregate"].items():
        means = ", ".join(f"{key} {metrics[key]['mean']:.4g}" for key in ("dice", "cldice", "hd95", "assd"))
        print(f"  {name}: {means}")
    print(f"summary written to {output}")
    return 0


def _note_old_dataset_json(label_source: str) -> None:
    """Say so when the dataset.json makes nnU-Net's own evaluation misread predictions."""
    from ..dataset_format import check_regions_class_order, load_dataset_json

    if not label_source.endswith(".json") or not os.path.isfile(label_source):
        return
    try:
        check_regions_class_order(load_dataset_json(label_source), label_source)
    except InputError as e:
        print(f"note: the scores above are right, nnU-Net's own evaluation of these files is not: {e}",
              file=sys.stderr)
