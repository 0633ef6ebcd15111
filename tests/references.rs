//! The fitted atomic reference energies: least squares, minimum norm, lookups, batches.

mod common;

use common::single_thread;

use std::collections::BTreeMap;

use physcon::{AtomicReferences, BatchLayout, Error, Result};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

/// Element energies used to make synthetic data (eV, roughly the scale of DFT totals).
fn true_refs() -> BTreeMap<i64, f64> {
    BTreeMap::from([(1, -13.6), (6, -1029.8), (7, -1485.3), (8, -2041.9)])
}

fn composition_energy(refs: &BTreeMap<i64, f64>, mol: &[i64]) -> f64 {
    mol.iter().map(|z| refs[z]).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Noiseless data with enough distinct compositions pins every element exactly.
    #[test]
    fn fit_recovers_exact_references(extra in prop::collection::vec(prop::collection::vec(prop::sample::select(vec![1i64, 6, 7, 8]), 1..=20), 0..10)) {
        single_thread();
        let refs = true_refs();
        // A basis of four independent compositions, then random molecules.
        let mut species = vec![vec![1, 1], vec![6, 1, 1, 1, 1], vec![7, 1, 1, 1], vec![8, 1, 1]];
        species.extend(extra);
        let energies: Vec<f64> = species.iter().map(|m| composition_energy(&refs, m)).collect();
        let fitted = AtomicReferences::fit(&species, &energies).unwrap();
        prop_assert_eq!(fitted.as_map().len(), 4);
        for (z, e) in &refs {
            let got = fitted.get(*z).unwrap();
            prop_assert!((got - e).abs() < 1e-8, "Z = {}: {} vs {}", z, got, e);
        }
        for (mol, e) in species.iter().zip(&energies) {
            prop_assert!((fitted.molecule_energy(mol).unwrap() - e).abs() < 1e-7);
        }
    }
}

#[test]
fn fit_is_least_squares_on_noisy_data() -> Result<()> {
    single_thread();
    // Two elements (H, O); energies with deterministic "noise".
    let species: Vec<Vec<i64>> = vec![
        vec![1, 1],
        vec![8, 8],
        vec![1, 1, 8],
        vec![1, 8],
        vec![1, 1, 8, 8],
        vec![8, 8, 8],
        vec![1, 1, 1, 1, 8],
    ];
    let energies: Vec<f64> = species
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let (h, o) = (
                m.iter().filter(|&&z| z == 1).count(),
                m.iter().filter(|&&z| z == 8).count(),
            );
            -0.5 * h as f64 - 2.0 * o as f64 + 0.05 * ((k as f64) * 1.7).sin()
        })
        .collect();
    // Normal equations (A^T A) e = A^T y, solved by Cramer's rule.
    let (mut a11, mut a12, mut a22, mut b1, mut b2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (m, y) in species.iter().zip(&energies) {
        let h = m.iter().filter(|&&z| z == 1).count() as f64;
        let o = m.iter().filter(|&&z| z == 8).count() as f64;
        a11 += h * h;
        a12 += h * o;
        a22 += o * o;
        b1 += h * y;
        b2 += o * y;
    }
    let det = a11 * a22 - a12 * a12;
    let e_h = (b1 * a22 - a12 * b2) / det;
    let e_o = (a11 * b2 - a12 * b1) / det;
    let fitted = AtomicReferences::fit(&species, &energies)?;
    let (got_h, got_o) = (fitted.get(1).expect("H"), fitted.get(8).expect("O"));
    assert!((got_h - e_h).abs() < 1e-10, "{got_h} vs {e_h}");
    assert!((got_o - e_o).abs() < 1e-10, "{got_o} vs {e_o}");
    // The noise moved the fit off the generating values, so the check is not vacuous.
    assert!((got_h + 0.5).abs() > 1e-4 || (got_o + 2.0).abs() > 1e-4);
    // Residuals are orthogonal to the columns.
    let (mut r_h, mut r_o) = (0.0, 0.0);
    for (m, y) in species.iter().zip(&energies) {
        let r = y - fitted.molecule_energy(m)?;
        r_h += r * m.iter().filter(|&&z| z == 1).count() as f64;
        r_o += r * m.iter().filter(|&&z| z == 8).count() as f64;
    }
    assert!(r_h.abs() < 1e-9 && r_o.abs() < 1e-9);
    Ok(())
}

#[test]
fn fit_rank_deficient_gives_minimum_norm() -> Result<()> {
    single_thread();
    // Every molecule is (CH2)_k: only 2 e_H + e_C is determined.
    let species: Vec<Vec<i64>> = (1..=4)
        .map(|k| (0..k).flat_map(|_| [6i64, 1, 1]).collect())
        .collect();
    let v = -1056.9; // 2 e_H + e_C
    let energies: Vec<f64> = (1..=4).map(|k| k as f64 * v).collect();
    let fitted = AtomicReferences::fit(&species, &energies)?;
    let (e_h, e_c) = (fitted.get(1).expect("H"), fitted.get(6).expect("C"));
    assert!(e_h.is_finite() && e_c.is_finite());
    // Minimum-norm solution of 2x + y = v: (x, y) = v (2, 1) / 5.
    assert!((e_h - 2.0 * v / 5.0).abs() < 1e-8, "{e_h}");
    assert!((e_c - v / 5.0).abs() < 1e-8, "{e_c}");
    for (mol, e) in species.iter().zip(&energies) {
        assert!((fitted.molecule_energy(mol)? - e).abs() < 1e-8);
    }
    // A single molecule is the extreme case.
    let one = AtomicReferences::fit(&[vec![8, 1, 1]], &[-2069.1])?;
    assert!((one.molecule_energy(&[8, 1, 1])? + 2069.1).abs() < 1e-9);
    assert!(one.get(1).expect("H").is_finite());
    Ok(())
}

#[test]
fn fit_and_lookup_errors() {
    single_thread();
    let invalid = |r: Result<AtomicReferences>, name: &str| match r {
        Err(Error::InvalidArgument { arg, .. }) => assert_eq!(arg, name),
        other => panic!("expected InvalidArgument({name}), got {other:?}"),
    };
    invalid(AtomicReferences::fit(&[vec![1, 1], vec![8]], &[-1.0]), "energies");
    invalid(AtomicReferences::fit(&[vec![1, 1]], &[-1.0, -2.0]), "energies");
    invalid(AtomicReferences::fit(&[], &[]), "energies");
    invalid(
        AtomicReferences::fit(&[vec![1, 1], vec![]], &[-1.0, 0.0]),
        "species",
    );
    invalid(AtomicReferences::fit(&[vec![1, 0]], &[-1.0]), "species");
    invalid(AtomicReferences::fit(&[vec![119]], &[-1.0]), "species");
    for bad in [f64::NAN, f64::INFINITY] {
        assert!(matches!(
            AtomicReferences::fit(&[vec![1, 1], vec![8]], &[-1.0, bad]),
            Err(Error::NonFinite { arg: "energies" })
        ));
    }
    let refs = AtomicReferences::from_map(BTreeMap::from([(1, -0.5), (8, -2.0)]));
    assert_eq!(refs.molecule_energy(&[8, 1, 1]).ok(), Some(-3.0));
    match refs.molecule_energy(&[8, 1, 6]) {
        Err(Error::InvalidArgument {
            arg: "species",
            reason,
        }) => assert!(reason.contains('6'), "{reason}"),
        other => panic!("{other:?}"),
    }
    let layout = BatchLayout::from_counts(&[2, 1], Device::Cpu).expect("layout");
    match refs.batch_energy(&Tensor::from_slice(&[1i64, 1, 7]), &layout, Kind::Double) {
        Err(Error::InvalidArgument {
            arg: "species",
            reason,
        }) => assert!(reason.contains('7'), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        refs.batch_energy(&Tensor::from_slice(&[1i64, 1]), &layout, Kind::Double),
        Err(Error::Shape { arg: "species", .. })
    ));
    // Species must be atomic numbers (i64), and the energies a float kind: an integer kind
    // would silently truncate -0.5 eV to 0.
    for species in [
        Tensor::from_slice(&[1.0f64, 1.0, 8.0]),
        Tensor::from_slice(&[1i32, 1, 8]),
    ] {
        assert!(matches!(
            refs.batch_energy(&species, &layout, Kind::Double),
            Err(Error::Dtype { arg: "species", .. })
        ));
    }
    assert!(matches!(
        refs.batch_energy(&Tensor::from_slice(&[1i64, 1, 8]), &layout, Kind::Int64),
        Err(Error::Dtype { arg: "kind", .. })
    ));
}

#[test]
fn batch_energy_matches_molecule_energy_on_shuffled_layout() -> Result<()> {
    single_thread();
    let refs = AtomicReferences::from_map(true_refs());
    // Molecules: CH4, H2O, NH3, CO2, H2, interleaved atom by atom.
    let molecules: Vec<Vec<i64>> = vec![
        vec![6, 1, 1, 1, 1],
        vec![8, 1, 1],
        vec![7, 1, 1, 1],
        vec![6, 8, 8],
        vec![1, 1],
    ];
    let mut atoms: Vec<(i64, i64)> = molecules
        .iter()
        .enumerate()
        .flat_map(|(m, zs)| zs.iter().map(move |&z| (m as i64, z)))
        .collect();
    // A fixed interleaving: reverse, then rotate by 3.
    atoms.reverse();
    atoms.rotate_left(3);
    let batch: Vec<i64> = atoms.iter().map(|a| a.0).collect();
    let species: Vec<i64> = atoms.iter().map(|a| a.1).collect();
    let layout = BatchLayout::new(&Tensor::from_slice(&batch), molecules.len() as i64)?;
    for kind in [Kind::Double, Kind::Float] {
        let per_molecule = refs.batch_energy(&Tensor::from_slice(&species), &layout, kind)?;
        assert_eq!(per_molecule.kind(), kind);
        assert_eq!(per_molecule.size(), vec![molecules.len() as i64]);
        let got = Vec::<f64>::try_from(per_molecule.to_kind(Kind::Double)).expect("f64");
        let tol = if kind == Kind::Double { 1e-9 } else { 1e-3 };
        for (m, mol) in molecules.iter().enumerate() {
            let expected = refs.molecule_energy(mol)?;
            assert!(
                (got[m] - expected).abs() < tol,
                "molecule {m}: {} vs {expected}",
                got[m]
            );
        }
    }
    Ok(())
}
