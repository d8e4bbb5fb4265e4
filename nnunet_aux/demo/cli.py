"""The ``nnunet_aux demo`` command (:func:`nnunet_aux.demo.pipeline.run_demo`)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Callable


def _triple(kind: type) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        parts = text.replace("x", ",").split(",")
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"need 3 values z,y,x, got {text!r}")
        try:
            return tuple(kind(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not 3 numbers: {text!r}") from None
    return parse


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` parser."""
    from .pipeline import QUICK_SETTINGS, DemoSettings

    full = DemoSettings()
    p = subparsers.add_parser(
        "demo", help="run the end-to-end demo on synthetic data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "End-to-end demo on synthetic vessel trees, through nnU-Net's own commands: write a synthetic\n"
            "scale-decomposed dataset, nnUNetv2_plan_and_preprocess, a small network plan, nnUNetv2_train of\n"
            "the binary baseline (stock nnUNetTrainer) and of nnUNetTrainerScaleContrastiveLite, nnUNetv2_predict\n"
            "of the test cases, evaluation, and WORKDIR/report.md with a results table and pictures.\n\n"
            "nnUNet_raw, nnUNet_preprocessed and nnUNet_results point into WORKDIR for the commands the demo\n"
            "starts; your own nnU-Net folders are not touched. The full run takes about 10 minutes on two CPU\n"
            "cores (much less on a GPU); --quick takes a few minutes and learns little. A non-empty WORKDIR\n"
            "is refused unless it holds an earlier demo run and --resume or --overwrite is given.\n\n"
            "The training length (--epochs, --iterations, --val-iterations) reaches the demo's trainers\n"
            "(nnUNetTrainer_demo, nnUNetTrainerScaleContrastiveLite_demo) as the JSON schedule in\n"
            "NNUNET_AUX_OUTCOME, the override the benchmarks use too; for your own runs choose the length\n"
            "by the trainer's name (<trainer>_<X>epochs, see `nnunet_aux trainers`)."),
    )
    p.add_argument("-o", "--workdir", default="nnunet_aux_demo",
                   help="work folder for all data, models, logs and the report (default: %(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: CUDA when torch sees a GPU, else CPU (default: %(default)s). On the CPU, test "
                        "cases are predicted without test-time mirroring")
    p.add_argument("--quick", action="store_true",
                   help=f"reduced run for tests: {QUICK_SETTINGS.n_train} training and {QUICK_SETTINGS.n_test} "
                        f"test case(s) of {'x'.join(map(str, QUICK_SETTINGS.shape))} voxels, "
                        f"{QUICK_SETTINGS.iterations_per_epoch} training iterations")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue an earlier run in WORKDIR (same settings): finished steps are skipped, "
                            "an interrupted training continues from its checkpoint")
    again.add_argument("--overwrite", action="store_true",
                       help="remove an earlier demo run's files from WORKDIR and start over")
    p.add_argument("-np", "--num-processes", type=int, default=None, metavar="N",
                   help="worker processes for data generation, preprocessing and evaluation "
                        "(default: min(4, CPU count))")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="show only step headers and the results, not the nnU-Net commands' output "
                        "(it is always in WORKDIR/logs)")
    sizes = p.add_argument_group("sizes (override the full or --quick defaults)")
    sizes.add_argument("--n-train", type=int, metavar="N",
                       help=f"training cases including validation (full: {full.n_train})")
    sizes.add_argument("--n-val", type=int, metavar="N",
                       help=f"validation cases, the last training cases (full: {full.n_val})")
    sizes.add_argument("--n-test", type=int, metavar="N", help=f"test cases (full: {full.n_test})")
    sizes.add_argument("--shape", type=_triple(int), metavar="Z,Y,X",
                       help=f"volume shape in voxels (full: {','.join(map(str, full.shape))})")
    sizes.add_argument("--spacing", type=_triple(float), metavar="Z,Y,X",
                       help=f"voxel size in mm (full: {','.join(map(str, full.spacing))})")
    sizes.add_argument("--seed", type=int, metavar="N", help=f"seed of the synthetic data (full: {full.seed})")
    sizes.add_argument("--features", dest="features_per_stage", type=_int_list, metavar="F1,F2,...",
                       help=f"U-Net features per stage (full: {','.join(map(str, full.features_per_stage))})")
    sizes.add_argument("--patch-size", type=_triple(int), metavar="Z,Y,X",
                       help=f"training patch size (full: {','.join(map(str, full.patch_size))})")
    sizes.add_argument("--batch-size", type=int, metavar="N", help=f"patches per step (full: {full.batch_size})")
    sizes.add_argument("--epochs", dest="num_epochs", type=int, metavar="N",
                       help=f"training epochs (full: {full.num_epochs})")
    sizes.add_argument("--iterations", dest="iterations_per_epoch", type=int, metavar="N",
                       help=f"training iterations per epoch (full: {full.iterations_per_epoch})")
    sizes.add_argument("--val-iterations", dest="val_iterations_per_epoch", type=int, metavar="N",
                       help=f"validation iterations per epoch (full: {full.val_iterations_per_epoch})")
    sizes.add_argument("--dataset-id", type=int, metavar="N",
                       help=f"nnU-Net dataset ID inside WORKDIR (full: {full.dataset_id})")
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace):
    """The :class:`~nnunet_aux.demo.pipeline.DemoSettings` that the arguments ask for."""
    from .pipeline import QUICK_SETTINGS, DemoSettings

    base = QUICK_SETTINGS if args.quick else DemoSettings()
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(DemoSettings)
               if getattr(args, f.name, None) is not None}
    return dataclasses.replace(base, **changes)


def run(args: argparse.Namespace) -> int:
    """Run the demo; print the results table and the report's path."""
    import sys

    from .commands import CommandFailedError
    from .pipeline import run_demo, table_text

    try:
        result = run_demo(args.workdir, settings_from_args(args), device=args.device, resume=args.resume,
                          overwrite=args.overwrite, num_processes=args.num_processes,
                          stream=None if args.quiet else sys.stdout)
    except CommandFailedError as error:
        print(f"nnunet_aux demo: {error}", file=sys.stderr)
        return 1
    print("\nResults on the synthetic test cases (mean ± std):\n")
    print(table_text(result.heading, result.rows))
    print(f"\nReport: {result.report}")
    return 0
