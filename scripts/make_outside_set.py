#!/usr/bin/env python3
"""A small check set of molecules from outside the NCI file, built like data/.

The training data are NCI molecules. The promise is that the structure model
also improves molecules of other origins, so this script builds `mmff` and
`xtb-opt` frames (the same ETKDG + MMFF94 and GFN2-xTB BFGS as
scripts/build_dataset.py) for a fixed list of common solvents, drug fragments,
heterocycles, agrochemical and flavour molecules written from memory (not
drawn from NCI; any that also occur in data/ are dropped and reported), with
<= 12 heavy atoms of H C N O F S Cl (mol_id `out-...`), and for molecules
unlike NCI's, tiny, linear and inorganic-looking ones (mol_id `odd-...`). It
is a check, never used for tuning.

Usage (the dataset environment of scripts/requirements-dataset.txt):

    python scripts/make_outside_set.py --out outside.extxyz.gz
    python scripts/judge_run.py --run runs/final-ablation --frames outside.extxyz.gz
"""

import argparse
import gzip
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_dataset as bd  # noqa: E402

SMILES = {
    "dmso": "CS(C)=O",
    "sulfolane": "O=S1(=O)CCCC1",
    "thiophene": "c1ccsc1",
    "2-chlorothiophene": "Clc1cccs1",
    "thiazole": "c1cscn1",
    "oxazole": "c1cocn1",
    "isoxazole": "c1cnoc1",
    "1,2,4-triazole": "c1nc[nH]n1",
    "tetrazole": "c1nnn[nH]1",
    "pyrimidine": "c1cncnc1",
    "pyrazine": "c1cnccn1",
    "2-fluoropyridine": "Fc1ccccn1",
    "nicotinamide": "NC(=O)c1cccnc1",
    "isoniazid": "NNC(=O)c1ccncc1",
    "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "caffeine-core-theophylline": "Cn1c(=O)c2[nH]cnc2n(C)c1=O",
    "uracil": "O=c1cc[nH]c(=O)[nH]1",
    "5-fluorouracil": "O=c1[nH]cc(F)c(=O)[nH]1",
    "cytosine": "Nc1cc[nH]c(=O)n1",
    "hydantoin": "O=C1CNC(=O)N1",
    "succinimide": "O=C1CCC(=O)N1",
    "gamma-butyrolactone": "O=C1CCCO1",
    "ethylene-carbonate": "O=C1OCCO1",
    "morpholine": "C1COCCN1",
    "thiomorpholine": "C1CSCCN1",
    "piperazine": "C1CNCCN1",
    "n-methylpyrrolidone": "CN1CCCC1=O",
    "dimethylformamide": "CN(C)C=O",
    "acetonitrile": "CC#N",
    "acrylonitrile": "C=CC#N",
    "malononitrile": "N#CCC#N",
    "trifluoroacetic-acid": "OC(=O)C(F)(F)F",
    "2,2,2-trifluoroethanol": "OCC(F)(F)F",
    "chloroacetone": "CC(=O)CCl",
    "dichloroacetic-acid": "OC(=O)C(Cl)Cl",
    "methyl-methacrylate": "C=C(C)C(=O)OC",
    "vinyl-acetate": "C=COC(C)=O",
    "ethyl-lactate": "CCOC(=O)C(C)O",
    "glycine-methyl-ester": "COC(=O)CN",
    "alanine": "CC(N)C(=O)O",
    "cysteine": "NC(CS)C(=O)O",
    "methionine": "CSCCC(N)C(=O)O",
    "taurine": "NCCS(=O)(=O)O",
    "mesna-acid": "OS(=O)(=O)CCS",
    "thiourea": "NC(N)=S",
    "methyl-isothiocyanate": "CN=C=S",
    "dimethyl-sulfide": "CSC",
    "allyl-mercaptan": "C=CCS",
    "furfural": "O=Cc1ccco1",
    "furfuryl-alcohol": "OCc1ccco1",
    "vanillin": "COc1cc(C=O)ccc1O",
    "salicylic-acid": "OC(=O)c1ccccc1O",
    "benzoic-acid-4-fluoro": "OC(=O)c1ccc(F)cc1",
    "4-chloroaniline": "Nc1ccc(Cl)cc1",
    "2,4-dichlorophenol": "Oc1ccc(Cl)cc1Cl",
    "benzenesulfonamide": "NS(=O)(=O)c1ccccc1",
    "toluene": "Cc1ccccc1",
    "styrene": "C=Cc1ccccc1",
    "indole": "c1ccc2[nH]ccc2c1",
    "benzothiazole": "c1ccc2scnc2c1",
    "benzimidazole": "c1ccc2[nH]cnc2c1",
    "quinoline": "c1ccc2ncccc2c1",
    "coumarin": "O=c1ccc2ccccc2o1",
    "cyclohexanone": "O=C1CCCCC1",
    "menthone-core-isopropylcyclohexanone": "CC(C)C1CCCCC1=O",
    "limonene": "CC1=CCC(CC1)C(C)=C",
    "camphor": "CC1(C)C2CCC1(C)C(=O)C2",
    "adamantane": "C1C2CC3CC1CC(C2)C3",
    "tert-butyl-methyl-ether": "COC(C)(C)C",
    "isoprene": "C=CC(C)=C",
    "diethyl-malonate": "CCOC(=O)CC(=O)OCC",
    "urea": "NC(N)=O",
    "guanidine": "NC(N)=N",
    "metformin": "CN(C)C(=N)NC(N)=N",
    "hydroxyurea": "NC(=O)NO",
    "glycerol": "OCC(O)CO",
    "ethanolamine": "NCCO",
    "propylene-oxide": "CC1CO1",
    "oxetane": "C1COC1",
    "azetidine": "C1CNC1",
    "cyclopropylamine": "NC1CC1",
    "fluorobenzene": "Fc1ccccc1",
    "chlorobenzene": "Clc1ccccc1",
    "benzotrifluoride": "FC(F)(F)c1ccccc1",
    "1,3-dichloropropene": "ClC=CCCl",
    "chloral-hydrate": "OC(O)C(Cl)(Cl)Cl",
}

# Molecules unlike anything in NCI's selection (tiny, linear, inorganic-looking):
# where a model trained on drug-like molecules is most likely to do harm. Their
# mol_ids start with `odd-` so that results can be read for them apart.
UNLIKE_NCI = {
    "water": "O",
    "hydrogen-sulfide": "S",
    "ammonia": "N",
    "methane": "C",
    "hydrogen-chloride": "Cl",
    "hydrogen-fluoride": "F",
    "carbon-dioxide": "O=C=O",
    "carbonyl-sulfide": "O=C=S",
    "carbon-disulfide": "S=C=S",
    "hydrogen-cyanide": "C#N",
    "acetylene": "C#C",
    "ethylene": "C=C",
    "formaldehyde": "C=O",
    "methanol": "CO",
    "formic-acid": "OC=O",
    "hydrazine": "NN",
    "hydroxylamine": "NO",
    "hydrogen-peroxide": "OO",
    "cyanogen-chloride": "ClC#N",
    "cyanogen": "N#CC#N",
    "diacetylene": "C#CC#C",
    "propyne": "CC#C",
    "cyanoacetylene": "C#CC#N",
    "ketene": "C=C=O",
    "allene": "C=C=C",
    "isocyanic-acid": "N=C=O",
    "phosgene": "O=C(Cl)Cl",
    "carbonyl-fluoride": "O=C(F)F",
    "chloroform": "ClC(Cl)Cl",
    "carbon-tetrachloride": "ClC(Cl)(Cl)Cl",
    "tetrafluoromethane": "FC(F)(F)F",
    "tetrafluoroethylene": "FC(F)=C(F)F",
    "thionyl-chloride": "O=S(Cl)Cl",
    "sulfur-dichloride": "ClSCl",
    "hypochlorous-acid": "OCl",
    "chlorine-fluoride": "FCl",
    "dichlorine": "ClCl",
    "difluorine": "FF",
}


def canonical(smiles):
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output .extxyz.gz")
    ap.add_argument("--data", default="data", help="the training data, to drop molecules it already holds")
    args = ap.parse_args()
    import ase.io

    seen = set()
    for split in ("train", "val", "test"):
        for a in ase.io.read(os.path.join(args.data, f"{split}.extxyz.gz"), index=":"):
            if "smiles" in a.info:
                seen.add(canonical(a.info["smiles"]))
    frames, dropped = [], []
    molecules = [(f"out-{n}", s) for n, s in SMILES.items()] + [(f"odd-{n}", s) for n, s in UNLIKE_NCI.items()]
    for k, (mol_id, smiles) in enumerate(molecules):
        name = mol_id
        if canonical(smiles) in seen:
            dropped.append((name, "in data/"))
            continue
        try:
            numbers, bonds = bd.smiles_bonds(smiles)
            numbers_m, pos = bd.mmff_structure(smiles, 10_000_000 + k)
            assert numbers == numbers_m
            opt, _ = bd.xtb_optimise(numbers, pos)
            e_mmff, f_mmff = bd.xtb_single_point(numbers, pos)
            e_opt, f_opt = bd.xtb_single_point(numbers, opt)
        except Exception as e:  # a molecule the pipeline cannot build is reported, not fatal
            dropped.append((name, str(e)))
            continue
        # Flat `i j order ...` as in data/ (a 2-D array would be written as ASE's `_JSON`).
        bonds = np.asarray(bonds, dtype=np.int64).reshape(-1)
        frames.append(bd.make_atoms(mol_id, smiles, "mmff", numbers, bonds, pos, e_mmff, f_mmff))
        frames.append(bd.make_atoms(mol_id, smiles, "xtb-opt", numbers, bonds, opt, e_opt, f_opt))
    bd.write_gz(args.out, bd.extxyz_text(frames))
    print(f"wrote {len(frames) // 2} molecules to {args.out}; dropped {len(dropped)}: {dropped}")


if __name__ == "__main__":
    main()
