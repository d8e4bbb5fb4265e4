"""Operator launches per training step: why a trainer's GPU step costs more than its FLOPs say.

On a GPU a short step is bound by kernel launches, not arithmetic. This script runs one
``train_step`` of each trainer on the CPU under ``torch.profiler`` and counts the leaf ATen
operators (those that call no other operator: the ones that become kernels on a GPU, plus
cheap views), against stock nnU-Net in the same run. The count does not depend on the device.

Example::

    python benchmarks/op_count.py --trainers lite contrastive --patch 64 64 64
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Operators that never launch a kernel (metadata only), left out of the "kernels" column.
VIEWS = {"aten::as_strided", "aten::view", "aten::empty", "aten::empty_strided", "aten::reshape", "aten::expand",
         "aten::permute", "aten::transpose", "aten::t", "aten::unsqueeze", "aten::squeeze", "aten::slice",
         "aten::select", "aten::detach", "aten::alias", "aten::resize_", "aten::_reshape_alias", "aten::lift_fresh"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trainers", nargs="+", default=["lite", "contrastive"], metavar="NAME",
                   help="short names of benchmarks/bench_trainers.py (default: lite contrastive); stock is added")
    p.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64], metavar=("Z", "Y", "X"),
                   help="patch size (default 64 64 64)")
    p.add_argument("--features", type=int, nargs="+", default=[32, 64, 128, 256, 320, 320], metavar="N",
                   help="features per stage (default nnU-Net's 3d_fullres: 32 64 128 256 320 320)")
    p.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    return p.parse_args(argv)


def leaf_operators(trainer, batch) -> collections.Counter:
    """Leaf ATen operators of one ``train_step`` (after a warm-up step), by name."""
    import torch

    trainer.train_step(batch)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        trainer.train_step(batch)
    return collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::") and not e.cpu_children)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import bench_trainers as bt
    from bench_common import make_plans

    bt.point_nnunet_at(tempfile.mkdtemp(prefix="op_count_"))
    import torch

    plans = make_plans(tuple(args.patch), tuple(args.features), args.batch)
    images, labels = bt.make_cases(tuple(args.patch), args.batch)
    rows = {}
    for name in ["stock", *[t for t in args.trainers if t != "stock"]]:
        trainer = bt.build_trainer(name, plans, torch.device("cpu"))
        counts = leaf_operators(trainer, bt.make_batch(trainer, images, labels))
        kernels = sum(n for op, n in counts.items() if op not in VIEWS)
        rows[name] = (sum(counts.values()), kernels, counts)
    print(f"patch {tuple(args.patch)}, features {tuple(args.features)}, batch {args.batch}: one train_step\n")
    print("| trainer | leaf operators | ratio | of which not views (kernels on a GPU) | ratio |")
    print("|---|---|---|---|---|")
    total0, kernels0, _ = rows["stock"]
    for name, (total, kernels, _) in rows.items():
        print(f"| {name} | {total} | {total / total0:.2f} | {kernels} | {kernels / kernels0:.2f} |")
    for name, (_, _, counts) in rows.items():
        top = ", ".join(f"{op[6:]} {n}" for op, n in counts.most_common() if op not in VIEWS)
        print(f"\n{name}: {top[:400]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
