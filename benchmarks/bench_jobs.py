"""Overhead of the job layer (issue #22): what running a training as a job costs beyond the training.

Runs N jobs whose "nnUNetv2_train" is a stand-in that only writes a finished fold (no nnU-Net,
no evaluation), three ways, in one process and one run:

- ``subprocess``: the stand-in called directly (the floor: starting Python);
- ``debug``: :func:`nnunet_aux.experiment.cluster.run_jobs` with submitit's debug executor (the
  job in this process: fold lock, state, process group, result);
- ``local``: the same with submitit's local executor (a controller and a job process per job,
  pickling, polling), one job at a time, as ``nnunet_aux experiment`` runs by default.

It prints seconds per job and the ratios against ``subprocess``. A real nnU-Net training takes
minutes to days, so the figure to compare it with is the absolute overhead per job.

Example::

    python benchmarks/bench_jobs.py --jobs 10
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAKE = """
import os, sys
fold = sys.argv[1]
os.makedirs(os.path.join(fold, "validation"), exist_ok=True)
open(os.path.join(fold, "checkpoint_final.pth"), "w").close()
open(os.path.join(fold, "validation", "summary.json"), "w").write("{}")
"""


def make_jobs(root: Path, n: int, script: Path, tag: str):
    from nnunet_aux.experiment.jobs import TrainingJob

    jobs = []
    for i in range(n):
        fold = root / tag / f"fold_{i}"
        # the stand-in takes the fold folder as its only argument: executable + fold, no nnU-Net arguments
        job = TrainingJob(f"{tag}/{i}", "1", "3d_fullres", i, "T", "P", "cpu", str(fold), str(root / tag / f"{i}.log"),
                          {}, [sys.executable, str(script), str(fold)])
        jobs.append(job)
    return jobs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=10, help="jobs per way (default 10)")
    args = p.parse_args(argv)
    from nnunet_aux.experiment.cluster import ClusterOptions, run_jobs

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        script = root / "fake_train.py"
        script.write_text(FAKE)
        seconds = {}
        start = time.perf_counter()
        for i in range(args.jobs):
            subprocess.run([sys.executable, str(script), str(root / "direct" / f"fold_{i}")], check=True)
        seconds["subprocess"] = (time.perf_counter() - start) / args.jobs
        for cluster in ("debug", "local"):
            jobs = make_jobs(root, args.jobs, script, cluster)
            start = time.perf_counter()
            out = run_jobs(jobs, ClusterOptions(cluster, poll_seconds=0.05), root / f"out_{cluster}")
            seconds[cluster] = (time.perf_counter() - start) / args.jobs
            assert len(out.results) == args.jobs and all(r.ok for r in out.results.values()), out.results
    print(f"{args.jobs} jobs each; seconds per job, ratio against calling the stand-in directly:")
    for way, s in seconds.items():
        print(f"  {way:<10} {s:6.3f} s   x{s / seconds['subprocess']:.2f}   (+{s - seconds['subprocess']:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
