#!/usr/bin/env python3
"""Judge every arm and seed of a `two_stage train` run with GFN2-xTB itself.

For each `seed-*/<arm>.safetensors` under RUN, writes the arm's structures for
the split's `mmff` frames with `two_stage predict` (its default generation
unless `--predict-args` says otherwise), scores them with `evaluate_xtb.py`'s
judge (Kabsch RMSD, bond-length MAE, EGap_xtb against the GFN2-xTB minimum),
and prints Markdown tables: mean ± standard deviation over seeds per arm, the
cheap (MMFF) row, each arm against the control per seed with the mean
difference against twice its seed-to-seed standard deviation, and the number
of molecules on which the arm beats MMFF, and the wall time per molecule that
`predict` printed. With `--fire`, the control's and the consistency arm's
energy models also relax the MMFF structures with FIRE (the reference rows;
`--fire-seeds`, default the first seed).

Usage (the dataset environment of scripts/requirements-dataset.txt, libtorch
through scripts/with-libtorch.sh, and a built `two_stage` example):

    scripts/with-libtorch.sh cargo build --release -p two_stage
    python scripts/judge_run.py --run runs/ablation --split test [--fire]
    python scripts/judge_run.py --run runs/ablation --frames outside.extxyz.gz
"""

import argparse
import gzip
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evaluate_xtb import Judge  # noqa: E402

ARMS = ["control", "optimality-only", "score-only", "consistency", "oracle"]
METRICS = [("RMSD mean (Å)", 0), ("bond-length MAE (Å)", 1), ("EGap_xtb mean (eV)", 2)]


def mmff_frames(split_path, out_path, prefix=""):
    """Writes the `mmff` frames of a split (extended XYZ, maybe gzipped) whose
    mol_id starts with `prefix` to out_path."""
    opener = gzip.open if split_path.endswith(".gz") else open
    with opener(split_path, "rt") as f:
        lines = f.read().splitlines(True)
    out, i = [], 0
    while i < len(lines):
        n = int(lines[i])
        block = lines[i : i + n + 2]
        i += n + 2
        mol_id = re.search(r"(^|\s)mol_id=(\S+)", block[1])
        if re.search(r"(^|\s)level=mmff(\s|$)", block[1]) and mol_id and mol_id.group(2).startswith(prefix):
            out += block
    with open(out_path, "w") as f:
        f.writelines(out)


def predict(binary, checkpoint, inp, out, extra):
    cmd = [binary, "predict", "--checkpoint", checkpoint, "--input", inp, "--output", out, *extra]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    ms = re.search(r"([0-9.]+) ms per molecule", res.stdout)
    return float(ms.group(1)) if ms else float("nan"), res.stdout.strip()


def fmt(values, digits=4):
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a `two_stage train` output folder (seed-*/<arm>.safetensors)")
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--split", choices=["val", "test"], help="a split of --data")
    which.add_argument("--frames", help="any file with `mmff` and `xtb-opt` frames per mol_id (e.g. from make_outside_set.py)")
    ap.add_argument("--data", default="data")
    ap.add_argument("--binary", default="target/release/two_stage")
    ap.add_argument("--predict-args", default="", help="extra `predict` arguments (e.g. '--generation refine')")
    ap.add_argument("--fire", action="store_true", help="add the FIRE relaxation on the control's and consistency's energy models")
    ap.add_argument("--workdir", default=None, help="keep predictions here and reuse those already written")
    ap.add_argument("--fire-seeds", default=None, help="seeds for --fire, comma-separated (default: the first seed)")
    ap.add_argument("--only", default="", help="judge only the molecules whose mol_id starts with this (e.g. odd-)")
    ap.add_argument("--arms", default=",".join(ARMS), help="the arms to judge, comma-separated")
    args = ap.parse_args()

    split_path = args.frames or os.path.join(args.data, f"{args.split}.extxyz.gz")
    title = f"{args.split} split" if args.split else os.path.basename(args.frames)
    judge = Judge(split_path)
    if args.only:
        judge.only(args.only)
        title += f", mol_id {args.only}*"
    seeds = sorted(
        int(d.split("-")[1]) for d in os.listdir(args.run) if re.fullmatch(r"seed-\d+", d)
    )
    tmp = args.workdir or tempfile.mkdtemp(prefix="judge-")
    os.makedirs(tmp, exist_ok=True)
    inp = os.path.join(tmp, "mmff.extxyz")
    mmff_frames(split_path, inp, args.only)
    cheap_by_id = judge.cheap_by_id()
    cheap = np.array(list(cheap_by_id.values()))
    fire_seeds = [int(x) for x in args.fire_seeds.split(",")] if args.fire_seeds else seeds[:1]
    # results[(label, seed)] = per-molecule rows [M, 3]; times[(label, seed)] = ms per molecule;
    # worst[(label, seed)] = (EGap_xtb(arm) - EGap_xtb(MMFF), mol_id) of the molecule made most worse
    results, times, worst, exploded = {}, {}, {}, {}
    for seed in seeds:
        for arm in args.arms.split(","):
            ckpt = os.path.join(args.run, f"seed-{seed}", f"{arm}.safetensors")
            if not os.path.exists(ckpt):
                continue
            runs = [(arm, args.predict_args.split())]
            if args.fire and seed in fire_seeds and arm in ("control", "consistency"):
                # FIRE may follow the energy model into broken structures: those are left out.
                runs.append((f"{arm}, FIRE on its energy", ["--generation", "fire", "--skip-bad"]))
            for label, extra in runs:
                out = os.path.join(tmp, f"{label.replace(' ', '_').replace(',', '')}-{seed}.extxyz")
                if os.path.exists(out) and os.path.exists(out + ".log"):
                    log = open(out + ".log").read().strip()
                    found = re.search(r"([0-9.]+) ms per molecule", log)
                    ms = float(found.group(1)) if found else float("nan")
                else:
                    ms, log = predict(args.binary, ckpt, inp, out, extra)
                    with open(out + ".log", "w") as f:
                        f.write(log + "\n")
                print(f"seed {seed} {label}: {log}", file=sys.stderr)
                by_id = judge.file_by_id(out)
                missing = len(set(cheap_by_id) - set(by_id))
                if missing and "FIRE" not in label:
                    sys.exit(f"{out}: structures for {len(by_id)} of the {len(cheap_by_id)} molecules")
                # A molecule whose structure `predict` left out (exploded) counts as NaN.
                results[(label, seed)] = np.array([by_id.get(k, (np.nan,) * 3) for k in cheap_by_id])
                exploded[(label, seed)] = missing
                times[(label, seed)] = ms
                worst[(label, seed)] = max(
                    (by_id[k][2] - cheap_by_id[k][2], k) for k in by_id if np.isfinite(by_id[k][2])
                )
    labels = list(dict.fromkeys(k[0] for k in results))

    print(f"### {title} ({len(cheap)} molecules), seeds {seeds}, judged by GFN2-xTB\n")
    print("| structures | " + " | ".join(m for m, _ in METRICS)
          + " | beats MMFF on EGap_xtb (molecules) | worst molecule against its MMFF input, EGap_xtb (eV) | ms per molecule |")
    print("|---" * (len(METRICS) + 4) + "|")
    print("| MMFF (cheap level) | " + " | ".join(f"{cheap[:, k].mean():.4f}" for _, k in METRICS) + " | — | — | — |")
    for label in labels:
        per_seed = [results[(label, s)] for s in seeds if (label, s) in results]
        cols = [fmt([np.nanmean(r[:, k]) for r in per_seed]) for _, k in METRICS]
        wins = fmt([float((r[:, 2] < cheap[:, 2]).sum()) for r in per_seed], 1)
        failed = sum(int(np.isnan(r[:, 2]).sum()) for r in per_seed)
        lost = sum(exploded.get((label, s), 0) for s in seeds)
        if lost:
            cols[0] += f" ({lost} exploded structures left out)"
            failed -= lost
        if failed:
            cols[2] += f" ({failed} without a converged xTB SCF left out)"
        ms = fmt([times[(label, s)] for s in seeds if (label, s) in times], 1)
        bad = max(worst[(label, s)] for s in seeds if (label, s) in worst)
        print(f"| {label} | " + " | ".join(cols) + f" | {wins} | {bad[0]:+.3f} ({bad[1]}) | {ms} |")

    def against(base_name, base, rule):
        """Per seed `arm - base` for each metric; `base(seed)` gives the base's rows."""
        print(f"\nAgainst {base_name}, per seed (arm − {base_name}; negative is better). {rule}\n")
        print("| arm | " + " | ".join(f"Δ {m}" for m, _ in METRICS) + " |")
        print("|---" * (len(METRICS) + 1) + "|")
        for label in labels:
            if label == base_name or "FIRE" in label:
                continue
            cells = []
            for _, k in METRICS:
                d = np.array([
                    np.nanmean(results[(label, s)][:, k]) - np.nanmean(base(s)[:, k])
                    for s in seeds if (label, s) in results and base(s) is not None
                ])
                sd = d.std(ddof=1) if len(d) > 1 else float("nan")
                ok = bool((d < 0).all() and len(d) > 1 and abs(d.mean()) > 2 * sd)
                per = ", ".join(f"{x:+.4f}" for x in d)
                cells.append(f"{d.mean():+.4f} ({per}) {'yes' if ok else 'no'}")
            print(f"| {label} | " + " | ".join(cells) + " |")

    if "control" in labels:
        against("control", lambda s: results.get(("control", s)),
                "`yes` when every seed is better and |mean| > 2 × seed-to-seed std of the difference.")
    against("MMFF", lambda s: cheap,
            "`yes` when every seed is better and |mean| > 2 × seed-to-seed std of the difference.")
    # The headline's criteria: a fraction of MMFF's error per metric, and no molecule
    # more than 0.1 eV (EGap_xtb) worse than its MMFF input; per seed.
    print("\nCriteria per seed: arm / MMFF for each metric (target: EGap_xtb ≤ 0.5, bond-length MAE ≤ 0.6, "
          "RMSD ≤ 0.95) and the worst molecule against its input (target ≤ +0.1 eV).\n")
    print("| arm | RMSD ratio | bond-length MAE ratio | EGap_xtb ratio | worst molecule (eV) | all met |")
    print("|---|---|---|---|---|---|")
    targets = {0: 0.95, 1: 0.6, 2: 0.5}
    for label in labels:
        if "FIRE" in label:
            continue
        ratios = {k: [np.nanmean(results[(label, s)][:, k]) / np.nanmean(cheap[:, k]) for s in seeds if (label, s) in results]
                  for k in targets}
        worsts = [worst[(label, s)][0] for s in seeds if (label, s) in worst]
        met = all(r <= targets[k] for k in targets for r in ratios[k]) and all(w <= 0.1 for w in worsts)
        cells = [", ".join(f"{r:.3f}" for r in ratios[k]) for k in (0, 1, 2)]
        print(f"| {label} | " + " | ".join(cells) + " | " + ", ".join(f"{w:+.3f}" for w in worsts)
              + f" | {'yes' if met else 'no'} |")
    print("\nEGap_xtb median (eV), mean over seeds (robust to the odd exploded structure): MMFF "
          f"{np.nanmedian(cheap[:, 2]):.4f}; "
          + "; ".join(
              f"{label} {np.mean([np.nanmedian(results[(label, s)][:, 2]) for s in seeds if (label, s) in results]):.4f}"
              for label in labels
          ))


if __name__ == "__main__":
    main()
