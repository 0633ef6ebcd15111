#!/usr/bin/env python3
"""What a perfect teacher could do for the `relax` generation, judged by GFN2-xTB.

`two_stage predict --generation relax` (from t = 10 in 10 DDIM steps, no noise
drawn) moves a cheap structure by about s_t^2 * score(R) in all, and score
consistency teaches score = F / kT. With the accurate forces themselves as the
score this is one steepest-descent step of size alpha = s_t^2 / kT along the
GFN2-xTB forces (0.0161 A^2/eV at t = 10, s_t = 0.025 A, kT = 0.0388 eV). This
script takes such steps from every `mmff` structure of a split with the xTB
forces (no model anywhere) and scores the result like `evaluate_xtb.py`: the
ceiling of one relax round, of several rounds, and of other step sizes, for a
structure model that had learnt its teacher perfectly.

Usage (the dataset environment of scripts/requirements-dataset.txt):

    python scripts/ceiling_xtb.py --split data/val.extxyz.gz
"""

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evaluate_xtb import Judge  # noqa: E402
from tblite.ase import TBLite  # noqa: E402


def forces(atoms):
    a = atoms.copy()
    a.calc = TBLite(method="GFN2-xTB", verbosity=0)
    return a.get_forces()


def descend(start, alpha, steps):
    """`steps` steepest-descent steps R <- R + alpha F_xtb(R) from `start`."""
    a = start.copy()
    for _ in range(steps):
        a.positions = a.positions + alpha * forces(a)
    return a


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", required=True)
    ap.add_argument("--kt", type=float, default=0.038779, help="eV (default 450 K, the example's)")
    ap.add_argument("--s-t", type=float, default=0.025, help="the noise level s_t of the relax start (A)")
    ap.add_argument(
        "--runs",
        default="0.25x1,0.5x1,1x1,2x1,1x2,0.5x2,0.5x4,0.5x8,0.25x4,0.25x16",
        help="comma-separated SCALExSTEPS: STEPS steps of SCALE * s_t^2/kT each",
    )
    args = ap.parse_args()
    judge = Judge(args.split)
    alpha = args.s_t**2 / args.kt
    cheap = np.array(judge.cheap())
    print(f"alpha = s_t^2/kT = {alpha:.4f} A^2/eV; {len(cheap)} molecules\n")
    print("| perfect-teacher structures | RMSD mean (Å) | bond-length MAE (Å) | EGap_xtb mean (eV) | EGap_xtb median (eV) | worst vs MMFF (eV) |")
    print("|---|---|---|---|---|---|")

    def row(name, rows):
        r = np.array(rows)
        worst = np.nanmax(r[:, 2] - cheap[:, 2])
        print(
            f"| {name} | {r[:, 0].mean():.4f} | {r[:, 1].mean():.4f} | {np.nanmean(r[:, 2]):.3f} "
            f"| {np.nanmedian(r[:, 2]):.3f} | {worst:+.3f} |",
            flush=True,
        )

    row("MMFF", cheap)
    runs = [(float(r.split("x")[0]), int(r.split("x")[1])) for r in args.runs.split(",")]
    for scale, steps in runs:
        moved = {k: [descend(v, scale * alpha, steps)] for k, v in judge.mmff.items()}
        row(f"{steps} step(s) of {scale:g} × s_t²/kT along F_xtb", judge.rows(moved))


if __name__ == "__main__":
    main()
