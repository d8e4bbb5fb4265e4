"""The ``nnunet_aux experiment`` subcommand.

The package's main ``cli.py`` calls :func:`register` with its subparsers; the parser's
``func`` default is :func:`run`.
"""

from __future__ import annotations

import argparse
import logging
import sys

DESCRIPTION = """\
Run a cross-validation experiment with nnU-Net and tabulate it as in Sadikine et al., Table 1.

For every fold and trainer: train with nnUNetv2_train (a subprocess using your nnU-Net
environment variables; nnUNet_extTrainer gets this package's trainer folder added), or
reuse what is there. A fold's state is read from its folder:
  checkpoint_final.pth + validation/summary.json  finished, reused
  checkpoint_final.pth only                       nnUNetv2_train ... --val
  checkpoint_latest.pth                           nnUNetv2_train ... --c (continue)
  nothing                                         nnUNetv2_train ...
so a killed experiment continues where it stopped when run again.

Each fold's validation predictions (fold_X/validation/*) are evaluated against
$nnUNet_preprocessed/DatasetXXX/gt_segmentations (cached per fold in OUTDIR/evaluation).
A fold's value is the mean over its validation cases; the table shows mean +- std over
folds of DSC, Jacc, clDSC (%) and HD (mm), plus HD95 and per-scale recall when the
dataset has vessel scales. Written to OUTDIR: table.md, table.csv (fractions and mm),
per_fold.csv, table.png (bars of DSC, clDSC and Jacc with std error bars and the folds
as dots), experiment.json and logs/<trainer>__fold_<X>.log. The table is printed at the
end.

A failed fold is reported with the tail of its log and the other folds go on (or, with
--stop-on-error, the run stops there); the exit code is then 1. Bad input (unknown
dataset, plans, configuration, label; a trainer nnU-Net cannot find) stops before any
training with exit code 2.

example:
  nnunet_aux experiment -d 510 --trainers nnUNetTrainer nnUNetTrainerScaleAux \\
      nnUNetTrainerScaleContrastive --folds 0 1 2 3 4
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``experiment`` parser to a subparsers object and return it.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``ArgumentParser.add_subparsers()``.

    Returns
    -------
    parser : argparse.ArgumentParser
        Its ``func`` default is :func:`run`.
    """
    parser = subparsers.add_parser(
        "experiment",
        help="train (or reuse) several trainers on several folds, evaluate, write Table 1",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-d", "--dataset", required=True, metavar="ID",
                        help="dataset ID or name (DatasetXXX_Name), planned and preprocessed")
    parser.add_argument("--trainers", "-tr", nargs="+", required=True, metavar="TRAINER",
                        help="nnU-Net trainer class names, one table row each, e.g. nnUNetTrainer "
                             "nnUNetTrainerScaleAux nnUNetTrainerScaleContrastive")
    parser.add_argument("--folds", "-f", nargs="+", default=["0", "1", "2", "3", "4"], metavar="FOLD",
                        help="cross-validation folds (default: 0 1 2 3 4)")
    parser.add_argument("-c", "--configuration", default="3d_fullres",
                        help="nnU-Net configuration (default: %(default)s)")
    parser.add_argument("-p", "--plans", default="nnUNetPlans",
                        help="nnU-Net plans identifier (default: %(default)s)")
    parser.add_argument("-device", "--device", default="cuda", choices=("cuda", "cpu", "mps"),
                        help="device for nnUNetv2_train -device (default: %(default)s)")
    parser.add_argument("-o", "--output", default=None, metavar="OUTDIR",
                        help="output folder (default: $nnUNet_results/DatasetXXX_Name/nnunet_aux_experiment)")
    parser.add_argument("--label", default=None,
                        help="label or region of dataset.json to tabulate (default: the first with vessel "
                             "scales, else the first label)")
    parser.add_argument("--std", choices=("population", "sample"), default="population",
                        help="standard deviation over folds: population (ddof=0, the package's convention) "
                             "or sample (ddof=1) (default: %(default)s)")
    parser.add_argument("--stop-on-error", action="store_true",
                        help="stop at the first failed fold instead of going on with the others")
    parser.add_argument("-np", "--num-processes", type=int, default=None, metavar="N",
                        help="worker processes of the evaluation (default: $nnUNet_def_n_proc or 8, at most "
                             "the number of CPUs)")
    parser.add_argument("--show-output", action="store_true",
                        help="also print nnU-Net's training output (it always goes to OUTDIR/logs)")
    parser.add_argument("--no-figure", dest="figure", action="store_false", help="do not write table.png")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``nnunet_aux experiment`` with parsed arguments.

    Returns
    -------
    exit_code : int
        0 when every fold was trained and evaluated, 1 when any failed.
    """
    from .runner import run_experiment

    logger = logging.getLogger("nnunet_aux.experiment")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    result = run_experiment(
        args.dataset,
        args.trainers,
        args.folds,
        configuration=args.configuration,
        plans=args.plans,
        device=args.device,
        output_dir=args.output,
        label=args.label,
        stop_on_error=args.stop_on_error,
        ddof=1 if args.std == "sample" else 0,
        num_processes=args.num_processes,
        echo=print if args.show_output else None,
        figure=args.figure,
    )
    print()
    print(result.markdown, end="")
    print(f"\nwritten to {result.output_dir}")
    if result.failures:
        print(f"\n{len(result.failures)} fold(s) failed:", file=sys.stderr)
        for failure in result.failures:
            where = f" (log: {failure.log_file})" if failure.log_file else ""
            print(f"  {failure.trainer} fold {failure.fold}: {failure.step} failed{where}", file=sys.stderr)
        return 1
    return 0
