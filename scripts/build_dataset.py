#!/usr/bin/env python3
"""Build physcon's shipped molecular dataset (and the extxyz test fixtures).

Molecules: RDKit's bundled NCI sample (rdkit/Data/NCI/first_5K.smi), filtered to
neutral (net formal charge 0, no radicals), single-fragment molecules of
H C N O F S Cl with <= 12 heavy atoms and <= 2 rotatable bonds.

Levels:
  mmff           RDKit ETKDG embedding (fixed seed) + MMFF94 optimisation
                 ("structure data", cheap level); energy/forces = GFN2-xTB
                 single point on that structure.
  xtb-opt        GFN2-xTB (tblite) optimisation started from the MMFF structure,
                 ASE BFGS, fmax 0.005 eV/A, <= 500 steps; val/test molecules
                 only (the training set holds only cheap-level structures).
  xtb-perturbed  3 harmonic Boltzmann (normal-mode) samples around the MMFF
                 structure per molecule, at 300, 450 and 600 K: GFN2-xTB
                 Cartesian Hessian by central differences of the forces,
                 rigid-body modes projected out, eigenvalues clamped below
                 at 2 eV/A^2, dx ~ N(0, kT H^-1); GFN2-xTB energy and forces
                 ("force data"). The temperature is the frame's
                 `temperature` key.

Output: <out>/{train,val,test}.extxyz.gz (extended XYZ as ASE writes it,
deterministic gzip), <out>/baseline.json, <out>/manifest.json, <out>/README.md.

Usage:
  python scripts/build_dataset.py [--out data] [--workers 1] [--limit N]
  python scripts/build_dataset.py --fixtures [--fixtures-out tests/fixtures/extxyz]
"""
import os

# Single-threaded numerics everywhere (reproducibility, and the build machine
# is shared). Must be set before numpy / tblite are imported.
for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
           "OMP_MAX_ACTIVE_LEVELS"):
    os.environ[_v] = "1"
os.environ.setdefault("OMP_STACKSIZE", "256M")

import argparse
import gzip
import hashlib
import io
import json
import platform
import sys
import time
from collections import Counter

import numpy as np

SEED = 20240611              # global seed (split, embedding, perturbations)
MAX_HEAVY = 12
MAX_ROT = 2
ELEMENTS = {"H", "C", "N", "O", "F", "S", "Cl"}
N_PERTURBED = 3
PERTURB_TEMPS = (300.0, 450.0, 600.0)  # K, sampling temperature of perturbed frame k
KB_EV = 8.617333262e-5       # eV/K
HESS_STEP = 0.005            # A, central-difference step of the xTB Hessian
HESS_LAMBDA_MIN = 2.0        # eV/A^2, eigenvalues of the internal Hessian clamped up to this
OPT_FMAX = 0.005             # eV/A
OPT_STEPS = 500
BOND_SCALE = 1.25            # bonded if d < 1.25 * (r_cov_i + r_cov_j)
SPLIT_FRAC = (0.8, 0.1, 0.1)
POS_DECIMALS = 8             # ASE writes %16.8f; xTB is run on the rounded positions

DROP_REASONS = {
    "embed_failed": "ETKDG embedding failed (molecule dropped)",
    "mmff_setup_failed": "MMFF94 parameters missing (molecule dropped)",
    "mmff_not_converged": "MMFF94 optimisation not converged (molecule dropped)",
    "mmff_graph_mismatch": "covalent-radius graph of the MMFF structure differs "
                           "from the SMILES bond graph (molecule dropped)",
    "odd_electrons": "odd electron count (molecule dropped)",
    "scf_failed": "GFN2-xTB SCF failed on the MMFF structure (molecule dropped)",
    "opt_scf_failed": "GFN2-xTB SCF failed during optimisation (molecule dropped)",
    "opt_not_converged": "GFN2-xTB optimisation not converged in 500 steps "
                         "(molecule dropped)",
    "opt_graph_changed": "bond graph changed during GFN2-xTB optimisation "
                         "(molecule dropped)",
    "hessian_failed": "GFN2-xTB SCF failed at a Hessian displacement (the molecule's "
                      "perturbed frames dropped, its other frames kept)",
    "perturbed_scf_failed": "GFN2-xTB SCF failed on a perturbed frame (frame dropped)",
    "perturbed_graph_changed": "bond graph changed by a perturbation (frame dropped)",
}


def nci_path():
    from rdkit import RDConfig
    p = os.path.join(RDConfig.RDDataDir, "NCI", "first_5K.smi")
    if not os.path.exists(p):
        import rdkit
        p = os.path.join(os.path.dirname(rdkit.__file__), "Data", "NCI", "first_5K.smi")
    return p


def versions():
    import ase
    import rdkit
    from importlib.metadata import version
    return {
        "python": platform.python_version(),
        "rdkit": rdkit.__version__,
        "tblite": version("tblite"),
        "ase": ase.__version__,
        "numpy": np.__version__,
    }


# --------------------------------------------------------------------------
# Molecule selection
# --------------------------------------------------------------------------
def select_molecules(path):
    """Return (list of (mol_id, nci_int, smiles)), stats). Sorted by NCI id."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdMolDescriptors
    RDLogger.DisableLog("rdApp.*")
    stats = Counter()
    seen = set()
    out = []
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            stats["read"] += 1
            smi, nci = parts[0], int(parts[1])
            m = Chem.MolFromSmiles(smi)
            if m is None:
                stats["unparsable"] += 1
                continue
            if len(Chem.GetMolFrags(m)) != 1:
                stats["multi_fragment"] += 1
                continue
            if any(a.GetSymbol() not in ELEMENTS for a in m.GetAtoms()):
                stats["other_elements"] += 1
                continue
            if Chem.GetFormalCharge(m) != 0 or any(a.GetNumRadicalElectrons() for a in m.GetAtoms()):
                stats["charged_or_radical"] += 1
                continue
            if m.GetNumHeavyAtoms() > MAX_HEAVY:
                stats["too_many_heavy_atoms"] += 1
                continue
            if rdMolDescriptors.CalcNumRotatableBonds(m) > MAX_ROT:
                stats["too_many_rotatable_bonds"] += 1
                continue
            can = Chem.MolToSmiles(m, isomericSmiles=False)
            assert "\\" not in can and "/" not in can
            if can in seen:
                stats["duplicate"] += 1
                continue
            seen.add(can)
            stats["selected"] += 1
            out.append((f"nci-{nci:05d}", nci, can))
    out.sort(key=lambda t: t[1])
    return out, dict(stats)


def assign_splits(mol_ids):
    """80/10/10 by molecule, fixed seed, independent of the later drops."""
    ids = sorted(mol_ids)
    rng = np.random.default_rng(SEED)
    perm = rng.permutation(len(ids))
    n = len(ids)
    n_train = int(round(SPLIT_FRAC[0] * n))
    n_val = int(round(SPLIT_FRAC[1] * n))
    split = {}
    for rank, idx in enumerate(perm):
        split[ids[idx]] = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
    return split


# --------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------
def smiles_bonds(smiles):
    """Bond list [(i, j, order)] from a fresh parse with explicit Hs; aromatic = 4."""
    from rdkit import Chem
    m = Chem.AddHs(Chem.MolFromSmiles(smiles))
    bonds = []
    for b in m.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        if i > j:
            i, j = j, i
        if b.GetIsAromatic():
            order = 4
        else:
            order = int(round(b.GetBondTypeAsDouble()))
            if order not in (1, 2, 3):
                raise ValueError(f"unsupported bond type {b.GetBondType()} in {smiles}")
        bonds.append((i, j, order))
    bonds.sort()
    return [a.GetAtomicNum() for a in m.GetAtoms()], bonds


def covalent_graph(numbers, pos):
    from ase.data import covalent_radii
    r = covalent_radii[np.asarray(numbers)]
    d = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    cut = BOND_SCALE * (r[:, None] + r[None, :])
    iu = np.triu_indices(len(numbers), 1)
    mask = d[iu] < cut[iu]
    return frozenset(zip(iu[0][mask].tolist(), iu[1][mask].tolist()))


def kabsch_rmsd(p, q):
    """RMSD between p and q (same atom order) after centring and optimal proper rotation."""
    p = p - p.mean(axis=0)
    q = q - q.mean(axis=0)
    h = p.T @ q
    u, s, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    if d == 0:
        d = 1.0
    dm = np.diag([1.0, 1.0, d])
    r = vt.T @ dm @ u.T          # rotation taking p onto q
    p_rot = p @ r.T
    return float(np.sqrt(np.mean(np.sum((p_rot - q) ** 2, axis=1))))


def mmff_structure(smiles, nci):
    """ETKDG + MMFF94. Returns (numbers, positions) or raises _Drop."""
    from rdkit import Chem
    from rdkit.Chem import AllChem
    m = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = (SEED + 7919 * nci) % (2 ** 31 - 1)
    params.numThreads = 1
    if AllChem.EmbedMolecule(m, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(m, params) != 0:
            raise _Drop("embed_failed")
    if not AllChem.MMFFHasAllMoleculeParams(m):
        raise _Drop("mmff_setup_failed")
    res = AllChem.MMFFOptimizeMolecule(m, mmffVariant="MMFF94", maxIters=20000)
    if res != 0:
        raise _Drop("mmff_not_converged" if res == 1 else "mmff_setup_failed")
    numbers = [a.GetAtomicNum() for a in m.GetAtoms()]
    pos = np.array(m.GetConformer().GetPositions(), dtype=np.float64)
    return numbers, pos


class _Drop(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _calc():
    from tblite.ase import TBLite
    return TBLite(method="GFN2-xTB", verbosity=0)


def xtb_single_point(numbers, pos):
    from ase import Atoms
    a = Atoms(numbers=numbers, positions=pos)
    a.calc = _calc()
    e = float(a.get_potential_energy())
    f = np.array(a.get_forces(), dtype=np.float64)
    if not (np.isfinite(e) and np.all(np.isfinite(f))):
        raise RuntimeError("non-finite xTB result")
    return e, f


def xtb_optimise(numbers, pos):
    from ase import Atoms
    from ase.optimize import BFGS
    a = Atoms(numbers=numbers, positions=pos)
    a.calc = _calc()
    opt = BFGS(a, logfile=None, maxstep=0.2)
    converged = opt.run(fmax=OPT_FMAX, steps=OPT_STEPS)
    if not converged:
        raise _Drop("opt_not_converged")
    return np.array(a.get_positions(), dtype=np.float64), opt.nsteps


def xtb_hessian(numbers, pos):
    """GFN2-xTB Cartesian Hessian (3N x 3N, eV/A^2) at pos by central differences
    of the forces (step HESS_STEP, displaced positions rounded like every xTB
    input, a fresh calculator per call), symmetrised. Also returns the largest
    asymmetry |H - H^T| before symmetrisation (a finite-difference noise check)."""
    n3 = 3 * len(numbers)
    h = np.zeros((n3, n3))
    for i in range(n3):
        a, c = divmod(i, 3)
        fs = []
        for sgn in (1.0, -1.0):
            p = pos.copy()
            p[a, c] += sgn * HESS_STEP
            _, f = xtb_single_point(numbers, np.round(p, POS_DECIMALS))
            fs.append(f.reshape(-1))
        h[i] = -(fs[0] - fs[1]) / (2.0 * HESS_STEP)
    asym = float(np.max(np.abs(h - h.T)))
    return 0.5 * (h + h.T), asym


def internal_basis(pos):
    """Orthonormal basis (3N x (3N - r)) of the Cartesian displacements orthogonal
    to the r = 6 (5 if linear, 3 for an atom) rigid-body translations and
    infinitesimal rotations about the centroid (unweighted: no masses)."""
    n = len(pos)
    x = pos - pos.mean(axis=0)
    rb = np.zeros((3 * n, 6))
    for k in range(3):
        t = np.zeros((n, 3))
        t[:, k] = 1.0
        rb[:, k] = t.reshape(-1)
        e = np.zeros(3)
        e[k] = 1.0
        rb[:, 3 + k] = np.cross(e, x).reshape(-1)
    u, sv, _ = np.linalg.svd(rb, full_matrices=True)
    r = int(np.sum(sv > 1e-6 * sv[0]))
    return u[:, r:]


def harmonic_modes(h, pos):
    """Internal normal modes of the Cartesian Hessian h at pos: (eigenvalues,
    modes as columns 3N x m), rigid-body space projected out (B^T H B in an
    orthonormal basis B of its complement), eigenvalues ascending, unclamped."""
    b = internal_basis(pos)
    lam, u = np.linalg.eigh(b.T @ h @ b)
    return lam, b @ u


def process_molecule(task):
    """Compute all frames of one molecule. Pure function of its arguments."""
    mol_id, nci, smiles, split = task
    t0 = time.perf_counter()
    out = {"mol_id": mol_id, "smiles": smiles, "split": split, "frames": [],
           "drop": None, "frame_drops": [], "opt_steps": None, "hessian": None}
    try:
        numbers_b, bonds = smiles_bonds(smiles)
        numbers, pos = mmff_structure(smiles, nci)
        assert numbers == numbers_b, "atom order of fresh parse differs"
        pos = np.round(pos, POS_DECIMALS)
        ref_graph = covalent_graph(numbers, pos)
        if ref_graph != frozenset((i, j) for i, j, _ in bonds):
            raise _Drop("mmff_graph_mismatch")
        if (sum(numbers)) % 2:
            raise _Drop("odd_electrons")
        flat_bonds = [x for b in bonds for x in b]
        try:
            e, f = xtb_single_point(numbers, pos)
        except _Drop:
            raise
        except Exception:
            raise _Drop("scf_failed")
        frames = [("mmff", pos, e, f, {})]
        if split != "train":
            try:
                opt_pos, nsteps = xtb_optimise(numbers, pos)
            except _Drop:
                raise
            except Exception:
                raise _Drop("opt_scf_failed")
            opt_pos = np.round(opt_pos, POS_DECIMALS)
            if covalent_graph(numbers, opt_pos) != ref_graph:
                raise _Drop("opt_graph_changed")
            try:
                e_opt, f_opt = xtb_single_point(numbers, opt_pos)
            except Exception:
                raise _Drop("opt_scf_failed")
            frames.append(("xtb-opt", opt_pos, e_opt, f_opt, {}))
            out["opt_steps"] = nsteps
            out["baseline"] = {
                "n_atoms": len(numbers),
                "rmsd": kabsch_rmsd(pos, opt_pos),
                "egap": e - e_opt,
            }
        # Harmonic Boltzmann samples: dx ~ N(0, kT H^-1) over the internal modes
        # of the xTB Hessian at the MMFF structure, eigenvalues clamped up to
        # HESS_LAMBDA_MIN (soft torsions, and negative curvature: the MMFF
        # structure is not an xTB stationary point).
        th = time.perf_counter()
        try:
            hess, asym = xtb_hessian(numbers, pos)
        except Exception:
            hess = None
            out["drop_perturbed"] = "hessian_failed"
        if hess is not None:
            lam, modes = harmonic_modes(hess, pos)
            lam_c = np.maximum(lam, HESS_LAMBDA_MIN)
            out["hessian"] = {"modes": int(len(lam)), "negative": int(np.sum(lam < 0)),
                              "clamped": int(np.sum(lam < HESS_LAMBDA_MIN)),
                              "lambda_min": float(lam[0]), "asymmetry_max": asym,
                              "seconds": time.perf_counter() - th}
            rng = np.random.default_rng([SEED, nci])
            for k in range(N_PERTURBED):
                temp = PERTURB_TEMPS[k]
                xi = rng.standard_normal(len(lam))
                disp = (modes @ (np.sqrt(KB_EV * temp / lam_c) * xi)).reshape(pos.shape)
                ppos = np.round(pos + disp, POS_DECIMALS)
                if covalent_graph(numbers, ppos) != ref_graph:
                    out["frame_drops"].append("perturbed_graph_changed")
                    continue
                try:
                    ep, fp = xtb_single_point(numbers, ppos)
                except Exception:
                    out["frame_drops"].append("perturbed_scf_failed")
                    continue
                frames.append(("xtb-perturbed", ppos, ep, fp, {"temperature": temp}))
        out["numbers"] = numbers
        out["bonds"] = flat_bonds
        out["frames"] = frames
    except _Drop as d:
        out["drop"] = d.reason
        out["frames"] = []
    out["seconds"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------
def make_atoms(mol_id, smiles, level, numbers, bonds, pos, energy, forces, extra=None):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    a = Atoms(numbers=numbers, positions=pos)
    a.info["mol_id"] = mol_id
    a.info["smiles"] = smiles
    a.info["level"] = level
    a.info["bonds"] = np.asarray(bonds, dtype=np.int64)
    for k, v in (extra or {}).items():
        a.info[k] = v
    res = {}
    if energy is not None:
        res["energy"] = float(energy)
    if forces is not None:
        res["forces"] = np.asarray(forces, dtype=np.float64)
    if res:
        a.calc = SinglePointCalculator(a, **res)
    return a


def extxyz_text(atoms_list):
    import ase.io
    s = io.StringIO()
    ase.io.write(s, atoms_list, format="extxyz")
    return s.getvalue()


def write_gz(path, text):
    """Deterministic gzip: no file name in the header, mtime 0, level 9."""
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(text.encode("utf-8"))


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_roundtrip(path, expected):
    """Read a written file back with ASE and compare with what was meant."""
    import ase.io
    with gzip.open(path, "rt") as fh:
        frames = ase.io.read(fh, index=":", format="extxyz")
    assert len(frames) == len(expected), (path, len(frames), len(expected))
    order = {}
    for a, (mol_id, smiles, level, numbers, bonds, pos, e, f, extra) in zip(frames, expected):
        assert a.info["mol_id"] == mol_id
        assert a.info["smiles"] == smiles, (a.info["smiles"], smiles)
        assert a.info["level"] == level
        assert list(np.atleast_1d(a.info["bonds"]).astype(int)) == list(bonds)
        assert list(a.numbers) == list(numbers)
        assert np.allclose(a.positions, pos, atol=1e-8)
        assert abs(a.get_potential_energy() - e) < 1e-9 * max(1.0, abs(e))
        assert np.allclose(a.get_forces(), f, atol=1e-8)
        for k, v in extra.items():
            assert a.info[k] == v, (k, a.info.get(k), v)
        assert ("temperature" in a.info) == ("temperature" in extra)
        order.setdefault(mol_id, list(a.numbers))
        assert order[mol_id] == list(a.numbers)
    return len(frames)


def summarise(values):
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return None
    return {"n": int(len(v)), "mean": float(v.mean()), "median": float(np.median(v)),
            "max": float(v.max()), "min": float(v.min())}


def r6(x):
    if isinstance(x, dict):
        return {k: r6(v) for k, v in x.items()}
    if isinstance(x, list):
        return [r6(v) for v in x]
    if isinstance(x, float):
        return float(f"{x:.6g}")
    return x


def build(args):
    from tqdm import tqdm
    t_start = time.perf_counter()
    vers = versions()
    src = nci_path()
    mols, sel_stats = select_molecules(src)
    split = assign_splits([m[0] for m in mols])
    if args.limit:
        mols = mols[: args.limit]
    tasks = [(mol_id, nci, smi, split[mol_id]) for mol_id, nci, smi in mols]
    print(f"source: {src}\nselected {len(tasks)} molecules ({sel_stats})", flush=True)

    results = []
    bar = tqdm(total=len(tasks), desc="molecules", unit="mol", file=sys.stderr)
    if args.workers <= 1:
        for t in tasks:
            results.append(process_molecule(t))
            bar.update(1)
    else:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(args.workers) as pool:
            for r in pool.imap(process_molecule, tasks, chunksize=1):
                results.append(r)
                bar.update(1)
    bar.close()
    t_compute = time.perf_counter() - t_start

    os.makedirs(args.out, exist_ok=True)
    drops = Counter()
    counts = {s: Counter() for s in ("train", "val", "test")}
    baseline_rows = {"val": [], "test": []}
    per_split = {"train": [], "val": [], "test": []}
    opt_steps = []
    hess_rows = []
    for r in sorted(results, key=lambda r: r["mol_id"]):
        for fd in r["frame_drops"]:
            drops[fd] += 1
        if r["drop"]:
            drops[r["drop"]] += 1
            continue
        if r.get("drop_perturbed"):
            drops[r["drop_perturbed"]] += 1
        if r["hessian"]:
            hess_rows.append(r["hessian"])
        s = r["split"]
        counts[s]["molecules"] += 1
        for level, pos, e, f, extra in r["frames"]:
            counts[s][level] += 1
            counts[s]["atoms"] += len(r["numbers"])
            per_split[s].append((r["mol_id"], r["smiles"], level, r["numbers"], r["bonds"], pos, e, f, extra))
        if "baseline" in r:
            baseline_rows[s].append(dict(mol_id=r["mol_id"], smiles=r["smiles"], **r["baseline"]))
            opt_steps.append(r["opt_steps"])

    # label statistics per split and level (forces in eV/A; energies relative
    # to the same molecule's MMFF frame, per atom, in eV)
    label_stats = {}
    for s in ("train", "val", "test"):
        e_mmff = {fr[0]: fr[6] for fr in per_split[s] if fr[2] == "mmff"}
        label_stats[s] = {}
        for level in ("mmff", "xtb-opt", "xtb-perturbed"):
            sel = [fr for fr in per_split[s] if fr[2] == level]
            if not sel:
                continue
            fnorm = np.concatenate([np.linalg.norm(fr[7], axis=1) for fr in sel])
            de = [(fr[6] - e_mmff[fr[0]]) / len(fr[3]) for fr in sel]
            label_stats[s][level] = {
                "frames": len(sel),
                "force_norm_mean_eV_A": float(fnorm.mean()),
                "force_norm_max_eV_A": float(fnorm.max()),
                "e_minus_e_mmff_per_atom_mean_eV": float(np.mean(de)),
            }

    # perturbed frames in detail: per split, all splits, and per temperature
    mmff_ref = {fr[0]: (fr[5], fr[6]) for s in per_split for fr in per_split[s] if fr[2] == "mmff"}
    pert = {s: [fr for fr in per_split[s] if fr[2] == "xtb-perturbed"] for s in per_split}
    groups = [(s, pert[s]) for s in ("train", "val", "test")]
    all_pert = [fr for s in ("train", "val", "test") for fr in pert[s]]
    groups.append(("all", all_pert))
    for t in PERTURB_TEMPS:
        groups.append((f"all_{t:.0f}K", [fr for fr in all_pert if fr[8]["temperature"] == t]))
    perturbed_stats = {}
    for name, sel in groups:
        if not sel:
            continue
        de = np.array([(fr[6] - mmff_ref[fr[0]][1]) / len(fr[3]) for fr in sel])
        fnorm = np.concatenate([np.linalg.norm(fr[7], axis=1) for fr in sel])
        rms = np.array([np.sqrt(np.mean(np.sum((fr[5] - mmff_ref[fr[0]][0]) ** 2, axis=1)))
                        for fr in sel])
        fmax = np.array([np.linalg.norm(fr[7], axis=1).max() for fr in sel])
        perturbed_stats[name] = {
            "frames": len(sel),
            "e_minus_e_mmff_per_atom_eV": summarise(de),
            "force_norm_eV_A": dict(summarise(fnorm), p99=float(np.percentile(fnorm, 99))),
            "frame_max_force_norm_eV_A": dict(summarise(fmax), p99=float(np.percentile(fmax, 99))),
            "rms_displacement_A": summarise(rms),
        }
    hessian_stats = None
    if hess_rows:
        modes = sum(h["modes"] for h in hess_rows)
        hessian_stats = {
            "molecules": len(hess_rows),
            "step_A": HESS_STEP,
            "lambda_min_clamp_eV_A2": HESS_LAMBDA_MIN,
            "internal_modes": modes,
            "negative_modes": sum(h["negative"] for h in hess_rows),
            "clamped_modes": sum(h["clamped"] for h in hess_rows),
            "molecules_with_negative_mode": sum(1 for h in hess_rows if h["negative"]),
            "lowest_eigenvalue_eV_A2": summarise([h["lambda_min"] for h in hess_rows]),
            "asymmetry_max_eV_A2": summarise([h["asymmetry_max"] for h in hess_rows]),
        }

    files = {}
    for s in ("train", "val", "test"):
        path = os.path.join(args.out, f"{s}.extxyz.gz")
        atoms = [make_atoms(*fr) for fr in per_split[s]]
        write_gz(path, extxyz_text(atoms))
        n = verify_roundtrip(path, per_split[s])
        files[f"{s}.extxyz.gz"] = {"bytes": os.path.getsize(path), "sha256": sha256(path), "frames": n}

    baseline = {
        "description": "MMFF94 structure vs GFN2-xTB-optimised structure, per molecule. "
                       "rmsd_A: Kabsch RMSD (proper rotation, all atoms incl. H, centred), A. "
                       "egap_eV: E_xtb(MMFF structure) - E_xtb(xtb-opt structure), eV. "
                       "egap_per_atom_eV: egap / n_atoms.",
    }
    for s in ("val", "test"):
        rows = baseline_rows[s]
        worst = sorted(rows, key=lambda r: -r["rmsd"])[:5]
        baseline[s] = {
            "molecules": len(rows),
            "rmsd_A": summarise([r["rmsd"] for r in rows]),
            "egap_eV": summarise([r["egap"] for r in rows]),
            "egap_per_atom_eV": summarise([r["egap"] / r["n_atoms"] for r in rows]),
            "worst_rmsd": [{"mol_id": r["mol_id"], "smiles": r["smiles"], "rmsd_A": r["rmsd"],
                            "egap_eV": r["egap"]} for r in worst],
        }
    baseline = r6(baseline)
    with open(os.path.join(args.out, "baseline.json"), "w") as fh:
        json.dump(baseline, fh, indent=2, sort_keys=True)
        fh.write("\n")

    t_total = time.perf_counter() - t_start
    manifest = {
        "source": "rdkit/Data/NCI/first_5K.smi (RDKit %s)" % vers["rdkit"],
        "selection": sel_stats,
        "limit": args.limit,
        "seed": SEED,
        "versions": vers,
        "counts": {s: dict(sorted(c.items())) for s, c in counts.items()},
        "drops": dict(sorted(drops.items())),
        "files": files,
        "xtb_opt_steps": summarise(opt_steps),
        "label_stats": label_stats,
        "perturbed_stats": perturbed_stats,
        "hessian": hessian_stats,
    }
    manifest = r6(manifest)
    with open(os.path.join(args.out, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.write("\n")

    # ---- summary ----
    print("\n=== summary ===")
    print("versions:", vers)
    print(f"{'split':6s} {'mols':>6s} {'mmff':>6s} {'xtb-opt':>8s} {'xtb-pert':>9s} {'frames':>7s}  file")
    for s in ("train", "val", "test"):
        c = counts[s]
        fr = c["mmff"] + c["xtb-opt"] + c["xtb-perturbed"]
        fi = files[f"{s}.extxyz.gz"]
        print(f"{s:6s} {c['molecules']:6d} {c['mmff']:6d} {c['xtb-opt']:8d} {c['xtb-perturbed']:9d} {fr:7d}"
              f"  {fi['bytes'] / 1e6:.2f} MB sha256={fi['sha256']}")
    print("drops:", dict(sorted(drops.items())) or "none")
    for s in ("val", "test"):
        b = baseline[s]
        if b["rmsd_A"]:
            print(f"baseline {s} ({b['molecules']} mols): RMSD mean {b['rmsd_A']['mean']:.4f} "
                  f"median {b['rmsd_A']['median']:.4f} max {b['rmsd_A']['max']:.4f} A; "
                  f"EGap mean {b['egap_eV']['mean']:.4f} median {b['egap_eV']['median']:.4f} eV; "
                  f"per atom mean {b['egap_per_atom_eV']['mean']:.5f} "
                  f"median {b['egap_per_atom_eV']['median']:.5f} eV")
    print(f"time: compute {t_compute:.1f} s, total {t_total:.1f} s "
          f"(workers={args.workers}, {sum(r['seconds'] for r in results):.1f} s molecule CPU time)")
    for s in ("train", "val", "test"):
        for level, st in label_stats[s].items():
            print(f"labels {s:5s} {level:13s}: {st['frames']:5d} frames, |F| mean "
                  f"{st['force_norm_mean_eV_A']:.3f} max {st['force_norm_max_eV_A']:.2f} eV/A, "
                  f"E - E_mmff per atom {st['e_minus_e_mmff_per_atom_mean_eV']:+.4f} eV")
    for name, st in perturbed_stats.items():
        print(f"perturbed {name:9s}: {st['frames']:5d} frames, (E - E_mmff)/n mean "
              f"{st['e_minus_e_mmff_per_atom_eV']['mean']:.4f} median "
              f"{st['e_minus_e_mmff_per_atom_eV']['median']:.4f} max "
              f"{st['e_minus_e_mmff_per_atom_eV']['max']:.4f} eV; |F| mean "
              f"{st['force_norm_eV_A']['mean']:.3f} median {st['force_norm_eV_A']['median']:.3f} "
              f"p99 {st['force_norm_eV_A']['p99']:.2f} max {st['force_norm_eV_A']['max']:.2f} eV/A; "
              f"RMS disp mean {st['rms_displacement_A']['mean']:.4f} A")
    if hessian_stats:
        print("hessian:", hessian_stats)
    hess_cpu = sum(r["hessian"]["seconds"] for r in results if r["hessian"])
    print(f"hessian CPU time {hess_cpu:.1f} s")
    timing = {"total": t_total, "compute": t_compute, "workers": args.workers,
              "cores": os.cpu_count(), "cpu": sum(r["seconds"] for r in results),
              "hessian_cpu": hess_cpu}
    write_readme(args, manifest, baseline, timing)
    return manifest, baseline


def write_readme(args, m, b, timing):
    """data/README.md from the numbers of this run (the only output with timing in it)."""
    v = m["versions"]
    sel = m["selection"]
    c = m["counts"]
    example = None
    with gzip.open(os.path.join(args.out, "test.extxyz.gz"), "rt") as fh:
        example = [next(fh) for _ in range(4)]
    L = []
    a = L.append
    a("# physcon dataset: small NCI molecules, MMFF94 structures, GFN2-xTB labels")
    a("")
    a("Generated by `scripts/build_dataset.py`; every number below comes from that run")
    a("(also in `manifest.json` and `baseline.json`). Do not edit by hand: regenerate.")
    a("")
    a("## Provenance and selection")
    a("")
    a(f"- Source: RDKit's bundled NCI sample `rdkit/Data/NCI/first_5K.smi` (RDKit {v['rdkit']}), "
      f"{sel.get('read', 0)} SMILES; `mol_id` = `nci-` + the file's 5-digit NCI number.")
    a("- Kept: parsable, single fragment, only H C N O F S Cl, net formal charge 0 and no radical "
      "(zwitterionic groups such as nitro `[N+](=O)[O-]` are kept), <= 12 heavy atoms, "
      "<= 2 rotatable bonds (`rdMolDescriptors.CalcNumRotatableBonds`), duplicates removed "
      "after canonicalisation.")
    a("- Filter counts (first failing filter): " + ", ".join(f"{k} {vv}" for k, vv in sorted(sel.items())) + ".")
    a("- `smiles` is RDKit's canonical SMILES **without stereo and isotopes** "
      "(`Chem.MolToSmiles(mol, isomericSmiles=False)`): it never contains `/` or `\\`, which ASE's "
      "extxyz reader would mangle. Stereo is implicit in the 3D structures (from ETKDG).")
    a("")
    a("## Levels of theory (the `level` key)")
    a("")
    a(f"- `mmff` (cheap \"structure data\"): `Chem.AddHs`, ETKDGv3 embedding with a fixed seed per molecule, "
      f"then MMFF94 optimisation to convergence (RDKit {v['rdkit']}). `energy`/`forces` on this frame are "
      f"the GFN2-xTB single point at the MMFF structure. In every split.")
    a(f"- `xtb-opt`: GFN2-xTB (tblite {v['tblite']}, `tblite.ase.TBLite(method=\"GFN2-xTB\")`) optimisation "
      f"started from the MMFF structure, ASE {v['ase']} BFGS (maxstep 0.2 A), fmax {OPT_FMAX} eV/A, "
      f"at most {OPT_STEPS} steps; `energy`/`forces` at the final structure. **Only val and test**: "
      "the training split holds only cheap-level structures.")
    temps = "/".join(f"{t:.0f}" for t in PERTURB_TEMPS)
    a(f"- `xtb-perturbed` (\"force data\"): {N_PERTURBED} harmonic Boltzmann (normal-mode) samples per "
      f"molecule (all splits) around the MMFF structure, frame k at the fixed temperature "
      f"T_k = {temps} K, stored as the frame's `temperature` key (K); GFN2-xTB energy and forces at "
      "the sampled structure. Sampling: the GFN2-xTB Cartesian Hessian H (3N x 3N, eV/A^2) at the "
      f"MMFF structure by central differences of the forces (step {HESS_STEP} A, 6N force calls, "
      "symmetrised); the 6 rigid-body directions (5 if linear: translations and infinitesimal "
      "rotations about the centroid, no masses) projected out by diagonalising H in an orthonormal "
      "basis of their complement; each remaining eigenvalue clamped up to "
      f"lambda_min = {HESS_LAMBDA_MIN} eV/A^2; then dx = sum over modes of sqrt(k_B T_k / lambda) xi v, "
      f"xi ~ N(0, 1) (seed `numpy.random.default_rng([{SEED}, nci_number])`, one standard-normal "
      "vector per frame), i.e. dx ~ N(0, k_B T H^-1): classical configurational Boltzmann samples "
      "p(R) ~ exp(-E/kT) in the harmonic approximation (no masses, no zero-point motion). The samples "
      "carry no net translation and no net infinitesimal rotation. The clamp bounds the "
      f"displacement along soft torsions and along negative-curvature modes (the MMFF structure is "
      f"not an xTB stationary point): a clamped mode moves sqrt(k_B T / {HESS_LAMBDA_MIN}) = "
      f"{np.sqrt(KB_EV * PERTURB_TEMPS[0] / HESS_LAMBDA_MIN):.3f}-"
      f"{np.sqrt(KB_EV * PERTURB_TEMPS[-1] / HESS_LAMBDA_MIN):.3f} A (1 sigma), so frames sample the "
      "local well of the MMFF conformer, not other conformers; along those modes the frames are "
      "colder than T_k. Since the MMFF structure is not the xTB minimum, the samples are centred on "
      "it, not on the xTB minimum, and energies/forces are the anharmonic xTB values at the sampled "
      "points.")
    a("- GFN2-xTB defaults of tblite (neutral, closed shell, electronic temperature 300 K), "
      "single-threaded. Positions are rounded to 1e-8 A (what the file holds) before every xTB call.")
    a(f"- Bond graph check: atoms i, j bonded when d < {BOND_SCALE} (r_i + r_j), ASE covalent radii. "
      "The MMFF graph must equal the SMILES graph; xtb-opt and perturbed frames must keep it.")
    a("")
    a("## Units and format")
    a("")
    a("Positions in A, `energy` in eV (GFN2-xTB total energy, no reference subtracted), `forces` in eV/A.")
    a("Extended XYZ exactly as `ase.io.write(..., format='extxyz')` writes it, one frame per structure, "
      "gzip-compressed (mtime 0, no file name, level 9). Comment-line keys: `mol_id`, `smiles` "
      "(quoted by ASE only when it contains characters such as `[]()`), `level`, `bonds` (flat "
      "`i j order` triples, 0-based, sorted, order 1/2/3, aromatic = 4, from a fresh parse of the "
      "SMILES with explicit H, atoms in the same order as the coordinates), on `xtb-perturbed` frames "
      "`temperature` (sampling temperature in K, e.g. `temperature=450.0`), `energy`, and ASE's "
      "`pbc=\"F F F\"`. Per-atom columns `species:S:1:pos:R:3:forces:R:3` (`%16.8f`). In a file, "
      "molecules are sorted by `mol_id`; per molecule the frames are `mmff`, `xtb-opt` (val/test), "
      "`xtb-perturbed` x <= 3; all frames of one `mol_id` share the atom order. ASE reads "
      "`energy`/`forces` back into a calculator (`get_potential_energy()`, `get_forces()`).")
    a("")
    a("Example (first frame of test.extxyz.gz, first two atoms):")
    a("")
    a("```")
    L.extend(x.rstrip("\n") for x in example)
    a("```")
    a("")
    a("## Counts")
    a("")
    a("| split | molecules | mmff | xtb-opt | xtb-perturbed | frames | atoms (all frames) | file | bytes | sha256 |")
    a("|---|---|---|---|---|---|---|---|---|---|")
    tot = Counter()
    for s in ("train", "val", "test"):
        cs = Counter(c[s])
        fr = cs["mmff"] + cs["xtb-opt"] + cs["xtb-perturbed"]
        f = m["files"][f"{s}.extxyz.gz"]
        a(f"| {s} | {cs['molecules']} | {cs['mmff']} | {cs['xtb-opt']} | {cs['xtb-perturbed']} | {fr} | "
          f"{cs['atoms']} | `{s}.extxyz.gz` | {f['bytes']} | `{f['sha256']}` |")
        tot.update(cs)
        tot["bytes"] += f["bytes"]
    a(f"| all | {tot['molecules']} | {tot['mmff']} | {tot['xtb-opt']} | {tot['xtb-perturbed']} | "
      f"{tot['mmff'] + tot['xtb-opt'] + tot['xtb-perturbed']} | {tot['atoms']} | | {tot['bytes']} | |")
    a("")
    a("The split (80/10/10 by molecule, `numpy.random.default_rng(%d)` over the sorted `mol_id`s of "
      "all selected molecules) is drawn before any computation; dropped molecules leave their split "
      "slightly smaller." % SEED)
    a("")
    a("Drops (a molecule drop removes all its frames; a perturbed frame drop removes that frame only; "
      "`hessian_failed` counts molecules that keep their other frames):")
    a("")
    a("| reason | count | meaning |")
    a("|---|---|---|")
    for k, text in DROP_REASONS.items():
        a(f"| `{k}` | {m['drops'].get(k, 0)} | {text} |")
    a("")
    if m.get("xtb_opt_steps"):
        st = m["xtb_opt_steps"]
        a(f"xtb-opt BFGS steps: mean {st['mean']:.1f}, median {st['median']:.0f}, max {st['max']:.0f}.")
        a("")
    a("Label statistics (|F| per atom; energy relative to the molecule's `mmff` frame, per atom):")
    a("")
    a("| split | level | frames | mean abs F (eV/A) | max abs F (eV/A) | mean (E - E_mmff)/n (eV) |")
    a("|---|---|---|---|---|---|")
    for s in ("train", "val", "test"):
        for level, st in m["label_stats"][s].items():
            a(f"| {s} | {level} | {st['frames']} | {st['force_norm_mean_eV_A']:.3f} | "
              f"{st['force_norm_max_eV_A']:.2f} | {st['e_minus_e_mmff_per_atom_mean_eV']:+.4f} |")
    a("")
    ps = m["perturbed_stats"]
    a("Perturbed frames in detail (`perturbed_stats` in `manifest.json`; E - E_mmff per atom relative "
      "to the same molecule's `mmff` frame; |F| over all atoms of the frames; RMS displacement per frame "
      "from the MMFF structure over its atoms):")
    a("")
    a("| frames of | frames | (E - E_mmff)/n mean (eV) | median | max | abs F mean (eV/A) | median | 99th pct | max | RMS displacement mean (A) | max |")
    a("|---|---|---|---|---|---|---|---|---|---|---|")
    order = ["train", "val", "test", "all"] + [f"all_{t:.0f}K" for t in PERTURB_TEMPS]
    for name in (k for k in order if k in ps):
        st = ps[name]
        de, fn, rd = st["e_minus_e_mmff_per_atom_eV"], st["force_norm_eV_A"], st["rms_displacement_A"]
        label = name.replace("all_", "all, T = ").replace("K", " K") if name.startswith("all_") else name
        a(f"| {label} | {st['frames']} | {de['mean']:+.4f} | {de['median']:+.4f} | {de['max']:+.4f} | "
          f"{fn['mean']:.3f} | {fn['median']:.3f} | {fn['p99']:.2f} | {fn['max']:.2f} | "
          f"{rd['mean']:.4f} | {rd['max']:.4f} |")
    a("")
    hs = m.get("hessian")
    if hs:
        a(f"Hessians: {hs['molecules']} molecules, {hs['internal_modes']} internal modes, "
          f"{hs['clamped_modes']} ({100.0 * hs['clamped_modes'] / hs['internal_modes']:.1f} %) clamped "
          f"(eigenvalue < {HESS_LAMBDA_MIN} eV/A^2), of which {hs['negative_modes']} negative "
          f"(in {hs['molecules_with_negative_mode']} molecules; lowest eigenvalue per molecule: "
          f"median {hs['lowest_eigenvalue_eV_A2']['median']:.3f}, min "
          f"{hs['lowest_eigenvalue_eV_A2']['min']:.3f} eV/A^2). Finite-difference noise: largest "
          f"|H - H^T| before symmetrisation per molecule median {hs['asymmetry_max_eV_A2']['median']:.3f}, "
          f"max {hs['asymmetry_max_eV_A2']['max']:.3f} eV/A^2.")
        a("")
    kt = [KB_EV * t for t in PERTURB_TEMPS]
    a("For reference, a harmonic Boltzmann sample has mean potential energy (3N - 6)/2 k_B T above the "
      f"minimum, about 1.5 k_B T per atom ({1.5 * kt[0]:.3f}/{1.5 * kt[1]:.3f}/{1.5 * kt[2]:.3f} eV at "
      f"{temps} K), less along clamped modes; the MMFF frame's own forces add a zero-mean linear term. "
      "Thermal forces are large even at 300 K (about sqrt(3 k_B T lambda), 1-2 eV/A for stiff "
      "X-H and ring modes). For the score-consistency loss, the frames of one temperature "
      "follow p(R) ~ exp(-E/k_B T) around the MMFF conformer in the harmonic approximation; select "
      "them by the `temperature` key.")
    a("")
    a("## Baseline: how far the cheap level is from the accurate one")
    a("")
    a("Per molecule, MMFF94 structure vs GFN2-xTB-optimised structure: RMSD after centring and the "
      "optimal proper rotation (Kabsch via SVD with the determinant sign fix, all atoms including H), "
      "and EGap = E_xtb(MMFF structure) - E_xtb(xtb-opt structure). A structure model trained on this "
      "data should beat these numbers on the test split.")
    a("")
    a("| split | molecules | RMSD mean (A) | RMSD median | RMSD max | EGap mean (eV) | EGap median | EGap/atom mean (eV) | EGap/atom median |")
    a("|---|---|---|---|---|---|---|---|---|")
    for s in ("test", "val"):
        bs = b[s]
        if not bs["rmsd_A"]:
            continue
        a(f"| {s} | {bs['molecules']} | {bs['rmsd_A']['mean']:.4f} | {bs['rmsd_A']['median']:.4f} | "
          f"{bs['rmsd_A']['max']:.4f} | {bs['egap_eV']['mean']:.4f} | {bs['egap_eV']['median']:.4f} | "
          f"{bs['egap_per_atom_eV']['mean']:.5f} | {bs['egap_per_atom_eV']['median']:.5f} |")
    a("")
    a("Largest RMSDs on test: " + "; ".join(
        f"{w['mol_id']} `{w['smiles']}` {w['rmsd_A']:.3f} A" for w in b["test"]["worst_rmsd"]) + ".")
    a("")
    a("## Regenerate")
    a("")
    a("```")
    a("python3 -m venv ~/.cache/physcon/venv-dataset")
    a("~/.cache/physcon/venv-dataset/bin/pip install -r scripts/requirements-dataset.txt")
    a(f"~/.cache/physcon/venv-dataset/bin/python scripts/build_dataset.py --out data --workers {args.workers}")
    a("```")
    a("")
    a(f"This run took {timing['total'] / 60:.1f} min wall time with {timing['workers']} worker "
      f"process(es) on a {timing['cores']}-core machine (xTB and BLAS single-threaded; "
      f"{timing['cpu'] / 60:.1f} min summed over molecules, of which {timing['hessian_cpu'] / 60:.1f} "
      "min for the finite-difference Hessians). `--limit N` builds from the first N molecules for a quick check; `--fixtures` rewrites "
      "`tests/fixtures/extxyz/`.")
    a("")
    a(f"Tool versions: Python {v['python']}, RDKit {v['rdkit']}, tblite {v['tblite']}, ASE {v['ase']}, "
      f"NumPy {v['numpy']} (all pinned in `scripts/requirements-dataset.txt`).")
    a("")
    a("Reproducibility: seeds are fixed (split, ETKDG, normal-mode samples), every molecule is a pure "
      "function of its inputs (fresh xTB calculator per call, so the worker count does not matter), "
      "molecules are written in sorted order, xTB and BLAS run on one thread, and gzip headers carry "
      "no time or name, so the three `.extxyz.gz` files, `baseline.json` and `manifest.json` are "
      "byte-for-byte identical between runs with the same tool versions on the same platform "
      "(checked by comparing sha256 of `--workers 1` and `--workers 2` builds with `--limit 20`). "
      "Other library versions or CPUs may change the last digits of xTB numbers (and, through the "
      "Hessian eigenvectors, the perturbed structures) and therefore the hashes.")
    a("")
    with open(os.path.join(args.out, "README.md"), "w") as fh:
        fh.write("\n".join(L))


# --------------------------------------------------------------------------
# Test fixtures
# --------------------------------------------------------------------------
def _fixture_molecules():
    """Two small molecules from the selection: the smallest aromatic one and
    the smallest non-aromatic one with a double bond (by atom count, then id)."""
    from rdkit import Chem
    mols, _ = select_molecules(nci_path())
    def natoms(s):
        return Chem.AddHs(Chem.MolFromSmiles(s)).GetNumAtoms()
    arom = [m for m in mols if any(b[2] == 4 for b in smiles_bonds(m[2])[1])]
    other = [m for m in mols if any(b[2] == 2 for b in smiles_bonds(m[2])[1])
             and not any(b[2] == 4 for b in smiles_bonds(m[2])[1])]
    a = min(arom, key=lambda m: (natoms(m[2]), m[1]))
    b = min(other, key=lambda m: (natoms(m[2]), m[1]))
    return [b, a]


def make_fixtures(outdir):
    os.makedirs(outdir, exist_ok=True)
    (id1, nci1, smi1), (id2, nci2, smi2) = _fixture_molecules()
    r1 = process_molecule((id1, nci1, smi1, "val"))    # mmff + xtb-opt + perturbed
    r2 = process_molecule((id2, nci2, smi2, "train"))  # mmff + perturbed
    assert not r1["drop"] and not r2["drop"]
    fr1 = {lv: (p, e, f, x) for lv, p, e, f, x in reversed(r1["frames"])}
    fr2 = {lv: (p, e, f, x) for lv, p, e, f, x in reversed(r2["frames"])}
    atoms = []
    p, e, f, _ = fr1["mmff"]
    atoms.append(make_atoms(id1, smi1, "mmff", r1["numbers"], r1["bonds"], p, e, f))
    p, e, f, _ = fr1["xtb-opt"]
    atoms.append(make_atoms(id1, smi1, "xtb-opt", r1["numbers"], r1["bonds"], p, e, None))  # no forces
    p, e, f, _ = fr2["mmff"]
    atoms.append(make_atoms(id2, smi2, "mmff", r2["numbers"], r2["bonds"], p, e, f))
    p, e, f, x = fr2["xtb-perturbed"]
    atoms.append(make_atoms(id2, smi2, "xtb-perturbed", r2["numbers"], r2["bonds"], p, e, f, x))
    text = extxyz_text(atoms)
    with open(os.path.join(outdir, "valid_small.extxyz"), "w") as fh:
        fh.write(text)
    write_gz(os.path.join(outdir, "valid_small.extxyz.gz"), text)

    lines = text.splitlines(keepends=True)
    # frame layout: (count line index, comment index, first atom idx, n atoms)
    frames = []
    i = 0
    while i < len(lines):
        n = int(lines[i])
        frames.append((i, i + 1, i + 2, n))
        i += 2 + n
    assert len(frames) == 4

    def save(name, ls):
        with open(os.path.join(outdir, name), "w") as fh:
            fh.write("".join(ls))

    rows = []  # (file, line (1-based), error kind, what)

    # truncated_frame: last frame loses its last 3 atom lines (file ends mid-frame)
    c, h, a0, n = frames[3]
    save("truncated_frame.extxyz", lines[: a0 + n - 3])
    rows.append(("truncated_frame.extxyz", f"{c + 1} (frame header; EOF after line {a0 + n - 3})",
                 "Truncated / unexpected end of file",
                 f"frame 4 declares {n} atoms, only {n - 3} atom lines follow before EOF"))

    # wrong_atom_count: frame 1 count says n+1; the reader takes frame 2's count line as an atom line
    c, h, a0, n = frames[0]
    ls = list(lines)
    ls[c] = f"{n + 1}\n"
    save("wrong_atom_count.extxyz", ls)
    rows.append(("wrong_atom_count.extxyz", f"{frames[1][0] + 1}",
                 "Parse (malformed atom line: wrong number of columns)",
                 f"line 1 says {n + 1} atoms, {n} follow; line {frames[1][0] + 1} "
                 f"(next frame's count line '{lines[frames[1][0]].strip()}') is read as an atom line"))

    # unknown_element: the 2nd atom of frame 2 becomes Xx
    c, h, a0, n = frames[1]
    ls = list(lines)
    sym = ls[a0 + 1].split()[0]
    ls[a0 + 1] = "Xx" + ls[a0 + 1][2:]  # species is left-justified, padded
    assert ls[a0 + 1].split()[0] == "Xx"
    save("unknown_element.extxyz", ls)
    rows.append(("unknown_element.extxyz", f"{a0 + 2}", "Unknown element / species",
                 f"species 'Xx' (was {sym})"))

    # nonfinite_number: y coordinate of the 1st atom of frame 3 becomes nan
    c, h, a0, n = frames[2]
    ls = list(lines)
    cols = ls[a0].split()
    ls[a0] = ls[a0].replace(cols[2], "nan".rjust(len(cols[2])), 1)
    assert ls[a0].split()[2] == "nan"
    save("nonfinite_number.extxyz", ls)
    rows.append(("nonfinite_number.extxyz", f"{a0 + 1}", "Non-finite number",
                 "a 'nan' y coordinate"))

    # missing_key: frame 2's comment line without mol_id
    c, h, a0, n = frames[1]
    ls = list(lines)
    import re
    new = re.sub(r"mol_id=\S+ ", "", ls[h], count=1)
    assert new != ls[h] and "mol_id" not in new
    ls[h] = new
    save("missing_key.extxyz", ls)
    rows.append(("missing_key.extxyz", f"{h + 1}", "Missing key (mol_id)",
                 "frame 2's comment line has no mol_id"))

    # bad_bonds_index: first bond index of frame 1 becomes n_atoms (out of range)
    c, h, a0, n = frames[0]
    ls = list(lines)
    m = re.search(r'bonds="(\d+) ', ls[h])
    ls[h] = ls[h][: m.start(1)] + str(n) + ls[h][m.end(1):]
    save("bad_bonds_index.extxyz", ls)
    rows.append(("bad_bonds_index.extxyz", f"{h + 1}", "Bad bonds (atom index out of range)",
                 f"first bond index is {n}, the frame has {n} atoms (valid 0..{n - 1})"))

    # bad_bonds_length: frame 3's bonds list loses its last entry (length not a multiple of 3)
    c, h, a0, n = frames[2]
    ls = list(lines)
    m = re.search(r'bonds="([0-9 ]+)"', ls[h])
    vals = m.group(1).split()
    ls[h] = ls[h][: m.start(1)] + " ".join(vals[:-1]) + ls[h][m.end(1):]
    save("bad_bonds_length.extxyz", ls)
    rows.append(("bad_bonds_length.extxyz", f"{h + 1}", "Bad bonds (length not a multiple of 3)",
                 f"bonds list has {len(vals) - 1} entries"))

    # README
    import ase
    v = versions()
    doc = ["# extxyz test fixtures", "",
           "Generated by `python scripts/build_dataset.py --fixtures` (same code path as the",
           f"shipped dataset: RDKit {v['rdkit']} ETKDG+MMFF94, GFN2-xTB via tblite {v['tblite']},",
           f"written by ASE {v['ase']} `ase.io.write(..., format='extxyz')`). Line numbers are 1-based.", "",
           "## valid_small.extxyz (and valid_small.extxyz.gz, the same bytes gzipped)", "",
           "| frame | lines | mol_id | smiles | level | atoms | energy | forces |",
           "|---|---|---|---|---|---|---|---|"]
    desc = [(id1, smi1, "mmff", True), (id1, smi1, "xtb-opt", False),
            (id2, smi2, "mmff", True), (id2, smi2, "xtb-perturbed", True)]
    for k, ((c, h, a0, n), (mid, smi, lv, hasf)) in enumerate(zip(frames, desc)):
        doc.append(f"| {k + 1} | {c + 1}-{a0 + n} | {mid} | `{smi}` | {lv} | {n} | yes | "
                   f"{'yes' if hasf else 'absent (no forces column)'} |")
    doc += ["", f"Both molecules have bonds; `{smi2 if any(b == 4 for b in r2['bonds'][2::3]) else smi1}` "
            "has aromatic bonds (order 4). All frames of one mol_id share the atom order. Frame 4 also "
            f"carries `temperature={fr2['xtb-perturbed'][3]['temperature']}` (its normal-mode sampling "
            "temperature in K), a key physcon does not read: unknown keys are ignored.", "",
            "## Malformed files (each derived from valid_small.extxyz by one edit)", "",
            "A reader must fail with an error naming the file and this line, returning nothing read half-way.", "",
            "| file | error line | expected error kind | what is wrong |", "|---|---|---|---|"]
    for f_, ln, kind, what in rows:
        doc.append(f"| {f_} | {ln} | {kind} | {what} |")
    doc.append("")
    with open(os.path.join(outdir, "README.md"), "w") as fh:
        fh.write("\n".join(doc))
    # sanity: ASE reads the valid file back
    import ase.io
    back = ase.io.read(os.path.join(outdir, "valid_small.extxyz"), index=":")
    assert len(back) == 4 and "forces" not in back[1].calc.results
    print(f"fixtures written to {outdir}: {sorted(os.listdir(outdir))}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="only the first N selected molecules (quick run)")
    ap.add_argument("--fixtures", action="store_true", help="write the extxyz test fixtures instead")
    ap.add_argument("--fixtures-out", default="tests/fixtures/extxyz")
    args = ap.parse_args()
    if args.fixtures:
        make_fixtures(args.fixtures_out)
    else:
        build(args)


if __name__ == "__main__":
    main()
