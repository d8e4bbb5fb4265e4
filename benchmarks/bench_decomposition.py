"""Speed of the vessel scale decomposition against one full-volume skeletonize call.

Builds a synthetic 200 x 512 x 512 mask holding a vessel tree of about 10^5 voxels
(``nnunet_aux.synthetic.generate_case`` with a 5.4 mm root), then times, in the same
process, ``decompose_vessels`` on the mask and ``skimage.morphology.skeletonize`` on
the full volume, and prints the ratio. The target is a ratio below 0.5.

The two calls alternate, so that both see the same load on a shared machine, and
each is timed by the wall clock and by the process's CPU time (medians of the
repeats). Both are single-threaded, so the two clocks agree on an idle machine; on
a busy one the CPU-time ratio is the steadier figure.

Usage::

    python benchmarks/bench_decomposition.py [--repeats 3] [--root-radius 5.2] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from skimage.morphology import skeletonize

from nnunet_aux.scales import decompose_vessels
from nnunet_aux.synthetic import generate_case


def median_seconds(functions, repeats: int) -> np.ndarray:
    """Median wall and CPU seconds of each function, shape (len(functions), 2).

    The functions are called in turn, ``repeats`` rounds.
    """
    times = np.zeros((repeats, len(functions), 2))
    for round_ in range(repeats):
        for i, function in enumerate(functions):
            wall, cpu = time.perf_counter(), time.process_time()
            function()
            times[round_, i] = time.perf_counter() - wall, time.process_time() - cpu
    return np.median(times, axis=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[200, 512, 512])
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.8, 0.7, 0.7])
    parser.add_argument("--root-radius", type=float, default=5.4, help="root vessel radius in mm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    case = generate_case(tuple(args.shape), tuple(args.spacing), seed=args.seed, tumours=False,
                         root_radius_mm=args.root_radius)
    mask = case.mask
    box = np.argwhere(mask)
    print(f"mask {mask.shape}, spacing {tuple(args.spacing)}, {int(mask.sum())} vessel voxels, "
          f"{len(case.segments)} segments, bounding box {tuple(box.max(axis=0) - box.min(axis=0) + 1)}")

    result = decompose_vessels(mask, spacing=case.spacing)  # warm-up (imports, caches)
    (decompose, decompose_cpu), (skeleton, skeleton_cpu) = median_seconds(
        [lambda: decompose_vessels(mask, spacing=case.spacing), lambda: skeletonize(mask)], args.repeats)
    print(f"decompose_vessels: {decompose:.2f} s wall, {decompose_cpu:.2f} s CPU ({result.n_branches} branches)")
    print(f"skeletonize (full volume): {skeleton:.2f} s wall, {skeleton_cpu:.2f} s CPU")
    print(f"ratio decompose / skeletonize: {decompose / skeleton:.3f} wall, {decompose_cpu / skeleton_cpu:.3f} CPU "
          f"(target < 0.5)")


if __name__ == "__main__":
    main()
