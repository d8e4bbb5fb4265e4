"""The ``nnunet_aux experiment`` subcommand.

The package's main ``cli.py`` calls :func:`register` with its subparsers; the parser's
``func`` default is :func:`run`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..cli import add_command_parser

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
dataset, plans, configuration, label; a trainer nnU-Net cannot find; impossible cluster
settings) stops before any training with exit code 2.

Where the trainings run (submitit does the work): each (trainer, fold, seed) is one job.
  --cluster local   on this machine, one job at a time (--max-parallel K for more,
                    --gpus 0 1 ... to give each running job its own GPU)
  --cluster slurm   one SLURM job array; jobs that hit --timeout-min are requeued and
                    continue with --c; re-running the command re-attaches to queued or
                    running jobs (ids in OUTDIR/jobs.json), resubmits failed ones and skips
                    finished folds; --no-wait returns after submitting, --collect only
                    tabulates what has finished
  --cluster debug   in this process, one after the other (tests, debugging)
A fold folder is locked while a job trains it, so a fold is never trained twice at once.
--dry-run prints every job (state, command), the SLURM script and a GPU-hours estimate
and submits nothing; --write-commands FILE writes the commands for other schedulers.

examples:
  nnunet_aux experiment -d 510 --trainers nnUNetTrainer nnUNetTrainerScaleAux \\
      nnUNetTrainerScaleContrastive --folds 0 1 2 3 4
  nnunet_aux experiment -d 510 --trainers nnUNetTrainer nnUNetTrainerScaleContrastive \\
      --cluster slurm --slurm-partition gpu --gpus-per-node 1 --cpus-per-task 8 \\
      --mem-gb 64 --timeout-min 1440 --slurm-setup "module load cuda" --dry-run
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``experiment`` parser (:func:`nnunet_aux.cli.add_command_parser`) and return it;
    its ``func`` default is :func:`run`."""
    parser = add_command_parser(
        subparsers, "experiment",
        "train (or reuse) several trainers on several folds, evaluate, write Table 1",
        DESCRIPTION)
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
                        help="also print nnU-Net's training output as it comes, local and debug executors (it "
                             "always goes to OUTDIR/logs)")
    parser.add_argument("--no-figure", dest="figure", action="store_false", help="do not write table.png")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, metavar="SEED",
                        help="repeat every (trainer, fold) once per seed, each into its own results folder "
                             "OUTDIR/seed_<k>/nnUNet_results (default: one run in $nnUNet_results)")
    add_cluster_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def add_cluster_arguments(parser: argparse.ArgumentParser, experiment_flags: bool = True) -> None:
    """The executor flags (shared with benchmarks/outcome.py); names follow submitit's parameters.

    ``experiment_flags`` adds ``--no-wait``, ``--collect``, ``--dry-run``, ``--epoch-seconds`` and
    ``--write-commands`` (``nnunet_aux experiment`` only).
    """
    g = parser.add_argument_group("where the jobs run (submitit)")
    g.add_argument("--cluster", choices=("local", "slurm", "debug"), default="local",
                   help="local: this machine (default); slurm: one job array; debug: in this process")
    g.add_argument("--max-parallel", type=int, default=1, metavar="K",
                   help="local: jobs at once (default: %(default)s)")
    g.add_argument("--gpus", nargs="+", type=int, default=(), metavar="ID",
                   help="local: GPU ids; each running job gets one as CUDA_VISIBLE_DEVICES")
    g.add_argument("--timeout-min", type=int, default=4320, metavar="MIN",
                   help="wall-time limit of one job; a job that reaches it is requeued and continues with --c "
                        "(default: %(default)s = 3 days)")
    g.add_argument("--gpus-per-node", type=int, default=None, metavar="N",
                   help="slurm: GPUs of one job (default: --num-gpus when above 1, else none requested)")
    g.add_argument("--cpus-per-task", type=int, default=None, metavar="N",
                   help="CPUs of one job, at least 2 (nnU-Net's data loaders die with one); also sets "
                        "nnUNet_n_proc_DA = N - num_gpus")
    g.add_argument("--mem-gb", type=float, default=None, metavar="GB", help="slurm: memory of one job")
    g.add_argument("--slurm-partition", default=None, metavar="NAME", help="slurm: partition")
    g.add_argument("--slurm-account", default=None, metavar="NAME", help="slurm: account")
    g.add_argument("--slurm-qos", default=None, metavar="NAME", help="slurm: quality of service")
    g.add_argument("--slurm-array-parallelism", type=int, default=None, metavar="N",
                   help="slurm: array tasks running at once (default: all)")
    g.add_argument("--slurm-max-num-timeout", type=int, default=3, metavar="N",
                   help="requeues after a timeout before a job counts as failed (default: %(default)s)")
    g.add_argument("--slurm-setup", action="append", default=[], metavar="CMD",
                   help="slurm: shell line run before each job, repeatable (module load ..., conda activate ...)")
    g.add_argument("--num-gpus", type=int, default=1, metavar="N",
                   help="nnUNetv2_train -num_gpus N: one task per node with N GPUs; nnU-Net starts DDP itself "
                        "(default: %(default)s)")
    if not experiment_flags:
        return
    g.add_argument("--no-wait", action="store_true",
                   help="slurm: return after submitting; run the same command again (or with --collect) later")
    g.add_argument("--collect", action="store_true",
                   help="submit nothing: tabulate the folds finished so far (the others shown as missing)")
    g.add_argument("--dry-run", action="store_true",
                   help="submit nothing: print every job (state, command), the SLURM script and a GPU-hours estimate")
    g.add_argument("--epoch-seconds", type=float, default=None, metavar="S",
                   help="--dry-run: seconds per epoch when nnU-Net's logs of this configuration show none")
    g.add_argument("--write-commands", default=None, metavar="FILE",
                   help="--dry-run: also write one shell command per job to FILE (for LSF, PBS, ...)")


def cluster_options(args: argparse.Namespace):
    """:class:`~nnunet_aux.experiment.cluster.ClusterOptions` from the parsed flags."""
    from .cluster import ClusterOptions

    return ClusterOptions(
        cluster=args.cluster, max_parallel=args.max_parallel, gpus=tuple(args.gpus), timeout_min=args.timeout_min,
        gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb,
        slurm_partition=args.slurm_partition, slurm_account=args.slurm_account, slurm_qos=args.slurm_qos,
        slurm_array_parallelism=args.slurm_array_parallelism, slurm_max_num_timeout=args.slurm_max_num_timeout,
        slurm_setup=tuple(args.slurm_setup), num_gpus=args.num_gpus)


def run(args: argparse.Namespace) -> int:
    """Run ``nnunet_aux experiment`` with parsed arguments.

    Returns
    -------
    exit_code : int
        0 when every fold was trained and evaluated, 1 when any failed.
    """
    from ..errors import InputError
    from .runner import dry_run_experiment, run_experiment

    options = cluster_options(args)
    if (args.epoch_seconds is not None or args.write_commands) and not args.dry_run:
        raise InputError("--epoch-seconds and --write-commands go with --dry-run")
    if args.dry_run:
        print(dry_run_experiment(args.dataset, args.trainers, args.folds, configuration=args.configuration,
                                 plans=args.plans, device=args.device, output_dir=args.output, label=args.label,
                                 seeds=args.seeds, cluster=options, epoch_seconds=args.epoch_seconds,
                                 write_commands=args.write_commands), end="")
        return 0
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
        seeds=args.seeds,
        cluster=options,
        wait=not args.no_wait,
        collect=args.collect,
    )
    if result.submitted:
        print(f"submitted {len(result.submitted)} job(s) (ids in {result.output_dir / 'jobs.json'}); run the same "
              "command again to wait for them and tabulate, or add --collect to tabulate what has finished")
    print()
    print(result.markdown, end="")
    print(f"\nwritten to {result.output_dir}")
    if result.failures:
        print(f"\n{len(result.failures)} fold(s) failed:", file=sys.stderr)
        for failure in result.failures:
            where = f" (log: {failure.log_file})" if failure.log_file else ""
            print(f"  {failure.trainer} fold {failure.fold}: {failure.step} failed{where}", file=sys.stderr)
        return 1
    if result.missing:
        print(f"\n{len(result.missing)} job(s) not finished yet: {', '.join(result.missing)}", file=sys.stderr)
        return 0 if (args.collect or args.no_wait) else 1
    return 0
