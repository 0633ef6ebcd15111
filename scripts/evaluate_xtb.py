#!/usr/bin/env python3
"""Judge predicted structures with the accurate method itself (GFN2-xTB).

For every molecule of a split that has an `xtb-opt` frame, compares the
structures in a predicted extended-XYZ file (frames with the same `mol_id`,
e.g. written by `two_stage predict`) and the cheap-level `mmff` structure
against the GFN2-xTB minimum:

- Kabsch RMSD (proper rotation, all atoms), mean and median over molecules;
- bond-length MAE against the minimum (A);
- EGap_xtb = E_xtb(R) - E_xtb(R_xtb-opt) (eV): the true energy gap, which the
  model-energy EGap of the example's report only estimates.

Usage (with the dataset environment of scripts/requirements-dataset.txt):

    python scripts/evaluate_xtb.py --split data/val.extxyz.gz --pred pred.extxyz [--pred other.extxyz]
"""

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ase.io  # noqa: E402
import numpy as np  # noqa: E402
from ase.calculators.calculator import CalculationFailed  # noqa: E402
from tblite.ase import TBLite  # noqa: E402


def kabsch_rmsd(p, q):
    p = p - p.mean(0)
    q = q - q.mean(0)
    u, _, vt = np.linalg.svd(p.T @ q)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return float(np.sqrt(((p @ rot.T - q) ** 2).sum(1).mean()))


def bonds_of(atoms):
    raw = atoms.info["bonds"]
    flat = np.asarray(raw.split() if isinstance(raw, str) else raw, dtype=int)
    return flat.reshape(-1, 3)[:, :2]


def bond_lengths(x, bonds):
    return np.linalg.norm(x[bonds[:, 0]] - x[bonds[:, 1]], axis=1)


def xtb_energy(atoms):
    """GFN2-xTB energy (eV), or NaN where the SCF does not converge (a broken structure)."""
    atoms = atoms.copy()
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    try:
        return atoms.get_potential_energy()
    except CalculationFailed:
        return float("nan")


def summarise(name, rows):
    r = np.array([x[0] for x in rows])
    b = np.array([x[1] for x in rows])
    g = np.array([x[2] for x in rows])
    failed = int(np.isnan(g).sum())
    note = f", {failed} without a converged xTB SCF left out of EGap" if failed else ""
    print(
        f"{name:<28} RMSD mean {r.mean():.4f} median {np.median(r):.4f} | bond MAE {b.mean():.4f} A"
        f" | EGap_xtb mean {np.nanmean(g):.4f} median {np.nanmedian(g):.4f} eV ({len(rows)} molecules{note})"
    )


class Judge:
    """The accurate minima and cheap structures of a split, and the scores of predicted structures."""

    def __init__(self, split):
        frames = ase.io.read(split, index=":")
        self.opt = {a.info["mol_id"]: a for a in frames if a.info.get("level") == "xtb-opt"}
        self.mmff = {
            a.info["mol_id"]: a for a in frames if a.info.get("level") == "mmff" and a.info["mol_id"] in self.opt
        }

    def only(self, prefix):
        """Keeps the molecules whose mol_id starts with `prefix`."""
        self.opt = {k: v for k, v in self.opt.items() if k.startswith(prefix)}
        self.mmff = {k: v for k, v in self.mmff.items() if k in self.opt}

    def rows(self, structures):
        """Per molecule (RMSD, bond MAE, EGap_xtb), each the mean over that molecule's structures."""
        return list(self.rows_by_id(structures).values())

    def rows_by_id(self, structures):
        """`rows`, keyed by mol_id (molecules without structures left out)."""
        rows = {}
        for mol_id, ref in self.opt.items():
            xs = structures.get(mol_id, [])
            if not xs:
                continue
            bonds = bonds_of(self.mmff[mol_id])
            e_ref = ref.get_potential_energy()
            per = [
                (
                    kabsch_rmsd(x.positions, ref.positions),
                    np.abs(bond_lengths(x.positions, bonds) - bond_lengths(ref.positions, bonds)).mean(),
                    xtb_energy(x) - e_ref,
                )
                for x in xs
            ]
            rows[mol_id] = tuple(np.mean([p[k] for p in per]) for k in range(3))
        return rows

    def cheap(self):
        return self.rows({k: [v] for k, v in self.mmff.items()})

    def cheap_by_id(self):
        return self.rows_by_id({k: [v] for k, v in self.mmff.items()})

    def file(self, path):
        return list(self.file_by_id(path).values())

    def file_by_id(self, path):
        predicted = {}
        for a in ase.io.read(path, index=":"):
            predicted.setdefault(a.info["mol_id"], []).append(a)
        return self.rows_by_id(predicted)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", required=True, help="dataset split with mmff and xtb-opt frames")
    ap.add_argument("--pred", action="append", default=[], help="predicted structures (repeatable)")
    args = ap.parse_args()
    judge = Judge(args.split)
    summarise("MMFF (cheap level)", judge.cheap())
    for path in args.pred:
        summarise(os.path.basename(path), judge.file(path))


if __name__ == "__main__":
    main()
