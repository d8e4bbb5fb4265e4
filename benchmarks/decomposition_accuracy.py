"""Accuracy of the vessel scale decomposition on synthetic trees with known radii.

For several seeded synthetic cases (``nnunet_aux.synthetic.generate_case``) this
prints, per case and overall:

- scale agreement: the share of vessel voxels whose decomposed scale equals the true
  scale (true scales use the same Q1/Q3 rule on the true segment radii);
- the median relative error of the per-voxel branch radius against the true radius
  of the voxel's segment, over voxels whose true radius is at least 1.5 voxels
  (voxel size: the smallest spacing).

The default seed list, 0 to 11, is fixed (the figures in ``RESULTS.md`` are its mean
and minimum); trees use ``generate_case``'s default root radius for the volume.

Usage::

    python benchmarks/decomposition_accuracy.py [--seeds 0 1 ... 11] [--shape 64 128 128]
        [--radius-estimate min_area_moments] [--radius-correction outer_face]
        [--min-branch-length 1.0] [--nearest-skeleton chains]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from nnunet_aux.scales import NEAREST_SKELETON, RADIUS_CORRECTIONS, RADIUS_ESTIMATES, decompose_vessels
from nnunet_aux.synthetic import generate_case


def case_accuracy(case, **settings) -> dict[str, float]:
    """Scale agreement and median relative radius error of one synthetic case."""
    start = time.perf_counter()
    result = decompose_vessels(case.mask, spacing=case.spacing, **settings)
    seconds = time.perf_counter() - start
    vessel = case.mask
    agreement = float(np.mean(result.labels[vessel] == case.scale[vessel]))
    true_radius = case.radius_mm[vessel]
    large = true_radius >= 1.5 * min(case.spacing)
    error = np.abs(result.radius_mm[vessel][large] - true_radius[large]) / true_radius[large]
    return {
        "agreement": agreement,
        "median_rel_error": float(np.median(error)) if error.size else float("nan"),
        "signed_median": float(np.median((result.radius_mm[vessel][large] - true_radius[large])
                                         / true_radius[large])) if error.size else float("nan"),
        "n_voxels": int(vessel.sum()),
        "n_branches": result.n_branches,
        "n_segments": len([s for s in case.segments if s.n_voxels > 0]),
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(12)))
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128])
    parser.add_argument("--spacing", type=float, nargs=3, default=[1.0, 0.7, 0.7])
    parser.add_argument("--radius-estimate", choices=RADIUS_ESTIMATES, default="min_area_moments")
    parser.add_argument("--radius-correction", choices=RADIUS_CORRECTIONS, default="outer_face")
    parser.add_argument("--min-branch-length", type=float, default=1.0)
    parser.add_argument("--m-neighbours", type=int, default=8)
    parser.add_argument("--nearest-skeleton", choices=NEAREST_SKELETON, default="chains")
    args = parser.parse_args(argv)

    settings = dict(radius_estimate=args.radius_estimate, radius_correction=args.radius_correction,
                    min_branch_length=args.min_branch_length, m_neighbours=args.m_neighbours,
                    nearest_skeleton=args.nearest_skeleton)
    print(f"shape {tuple(args.shape)}, spacing {tuple(args.spacing)}, settings {settings}")
    print(f"{'seed':>4} {'voxels':>7} {'segments':>8} {'branches':>8} {'agreement':>9} "
          f"{'rad.err':>7} {'signed':>7} {'time s':>6}")
    rows = []
    for seed in args.seeds:
        case = generate_case(tuple(args.shape), tuple(args.spacing), seed=seed, tumours=False)
        row = case_accuracy(case, **settings)
        rows.append(row)
        print(f"{seed:>4} {row['n_voxels']:>7} {row['n_segments']:>8} {row['n_branches']:>8} "
              f"{row['agreement']:>9.3f} {row['median_rel_error']:>7.3f} {row['signed_median']:>+7.3f} "
              f"{row['seconds']:>6.2f}")
    agreement = [r["agreement"] for r in rows]
    error = [r["median_rel_error"] for r in rows]
    print(f"scale agreement: mean {np.mean(agreement):.3f}, min {np.min(agreement):.3f}, "
          f"max {np.max(agreement):.3f}")
    print(f"median relative radius error (radius >= 1.5 voxels): mean {np.mean(error):.3f}, "
          f"max {np.max(error):.3f}")


if __name__ == "__main__":
    main()
