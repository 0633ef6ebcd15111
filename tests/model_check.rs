//! `testing::check_energy_model`: analytic models pass it, and each
//! deliberately broken model fails exactly the check it breaks.

mod common;

use common::single_thread;

use physcon::geometry::{distances, pairs_within};
use physcon::testing::{check_energy_model, Check, ModelCheck, ModelReport, PairEnergy, PairPotential};
use physcon::{EnergyModel, Error, MolBatch, Result};
use tch::{Device, Kind, Tensor};

/// A model under test: molecule energies `[B]` of a batch.
type Model = dyn Fn(&MolBatch) -> Result<Tensor>;

const MORSE: PairPotential = PairPotential::Morse {
    d: 4.0,
    a: 2.0,
    r0: 1.1,
};

/// Water, a CH3 fragment and H2, their atoms interleaved, with bonds.
fn batch(kind: Kind) -> MolBatch {
    // (molecule, species, position) per atom slot.
    let atoms: [(i64, i64, [f64; 3]); 9] = [
        (0, 8, [0.0, 0.0, 0.1]),
        (1, 6, [3.0, 0.2, 0.0]),
        (2, 1, [-2.0, 2.5, 1.0]),
        (0, 1, [0.76, 0.0, -0.5]),
        (1, 1, [3.9, 0.8, 0.3]),
        (1, 1, [2.4, 1.0, -0.5]),
        (2, 1, [-2.1, 2.7, 1.72]),
        (0, 1, [-0.77, 0.1, -0.45]),
        (1, 1, [3.1, -0.7, 0.6]),
    ];
    let pos: Vec<f64> = atoms.iter().flat_map(|a| a.2).collect();
    let species: Vec<i64> = atoms.iter().map(|a| a.1).collect();
    let molecule: Vec<i64> = atoms.iter().map(|a| a.0).collect();
    let bonds = Tensor::from_slice(&[0i64, 3, 0, 7, 1, 4, 1, 5, 1, 8, 2, 6]).reshape([6, 2]);
    let orders = Tensor::from_slice(&[1i64, 1, 1, 1, 2, 1]);
    MolBatch::new(
        &Tensor::from_slice(&pos).reshape([9, 3]).to_kind(kind),
        &Tensor::from_slice(&species),
        &Tensor::from_slice(&molecule),
        3,
    )
    .and_then(|b| b.with_bonds(&bonds, &orders))
    .expect("valid batch")
}

fn run(model: &Model) -> ModelReport {
    single_thread();
    check_energy_model(model, &batch(Kind::Double), &ModelCheck::default()).expect("the check runs")
}

/// Molecule energies `[B]` of per-item values `[K]` belonging to molecules `molecule: [K]`.
fn per_molecule(b: &MolBatch, molecule: &Tensor, values: &Tensor) -> Tensor {
    Tensor::zeros([b.num_molecules()], (Kind::Double, Device::Cpu)).index_add(0, molecule, values)
}

fn pair(b: &MolBatch) -> Result<Tensor> {
    PairEnergy::new(MORSE, b.layout())?.energy(b.pos())
}

/// Harmonic bonds weighted by bond order: passes only if bonds follow their atoms.
fn bonded(b: &MolBatch) -> Result<Tensor> {
    let bonds = b.bonds().expect("the test batch has bonds");
    let (i, j) = (bonds.index().select(1, 0), bonds.index().select(1, 1));
    let d = distances(b.pos(), &i, &j, b.layout())?;
    let stretch = (d - 1.0).square() * bonds.order().to_kind(Kind::Double);
    Ok(pair(b)? + per_molecule(b, &b.layout().batch().index_select(0, &i), &stretch))
}

/// Depends on absolute position (invariant under rotation about the origin).
fn tethered(b: &MolBatch) -> Result<Tensor> {
    let r2 = b.pos().square().sum_dim_intlist(1, false, Kind::Double);
    Ok(pair(b)? + b.layout().sum(&r2)? * 0.05)
}

/// Couples each atom to the atoms of the other molecules.
fn leaky(b: &MolBatch) -> Result<Tensor> {
    let molecule = Vec::<i64>::try_from(b.layout().batch())?;
    let (mut i, mut j) = (Vec::new(), Vec::new());
    for (a, &ma) in molecule.iter().enumerate() {
        for (c, &mc) in molecule.iter().enumerate() {
            if ma != mc {
                i.push(a as i64);
                j.push(c as i64);
            }
        }
    }
    let (i, j) = (Tensor::from_slice(&i), Tensor::from_slice(&j));
    let coupling = distances(b.pos(), &i, &j, b.layout())?.neg().exp() * 0.1;
    Ok(pair(b)? + per_molecule(b, &b.layout().batch().index_select(0, &i), &coupling))
}

/// Weights each atom's distance from the centroid by its rank within its molecule.
fn ranked(b: &MolBatch) -> Result<Tensor> {
    let molecule = Vec::<i64>::try_from(b.layout().batch())?;
    let mut seen = vec![0.0f64; b.num_molecules() as usize];
    let rank: Vec<f64> = molecule
        .iter()
        .map(|&m| {
            seen[m as usize] += 1.0;
            seen[m as usize]
        })
        .collect();
    let r2 = b
        .layout()
        .centre(b.pos())?
        .square()
        .sum_dim_intlist(1, false, Kind::Double);
    Ok(pair(b)? + b.layout().sum(&(r2 * Tensor::from_slice(&rank)))? * 0.1)
}

/// A pair term along x only: translation but not rotation invariant.
fn anisotropic(b: &MolBatch) -> Result<Tensor> {
    let (i, j) = pairs_within(b.layout())?;
    let x = b.pos().select(1, 0);
    let dx2 = (x.index_select(0, &i) - x.index_select(0, &j)).square();
    Ok(pair(b)? + per_molecule(b, &b.layout().batch().index_select(0, &i), &dx2) * 0.1)
}

/// A pair "network" of ReLU units whose kinks lie every 5 mÅ: a zigzag in the
/// distance, smooth between kinks but with a gradient that jumps at each.
fn relu(b: &MolBatch) -> Result<Tensor> {
    let (i, j) = pairs_within(b.layout())?;
    let d = distances(b.pos(), &i, &j, b.layout())?;
    let kinks: Vec<f64> = (0..700).map(|k| 0.5 + 0.005 * f64::from(k)).collect();
    let slopes: Vec<f64> = (0..700)
        .map(|k| {
            if k == 0 {
                1.0
            } else {
                2.0 * f64::from(1 - 2 * (k % 2))
            }
        })
        .collect();
    let hidden = (d.unsqueeze(1) - Tensor::from_slice(&kinks).unsqueeze(0)).relu();
    let zigzag = hidden.matmul(&Tensor::from_slice(&slopes)) * 0.5;
    Ok(pair(b)? + per_molecule(b, &b.layout().batch().index_select(0, &i), &zigzag))
}

#[test]
fn analytic_models_pass_every_check() {
    for (name, model) in [("pair", &pair as &Model), ("bonded", &bonded)] {
        let report = run(model);
        assert!(report.passed(), "{name}:\n{report}");
        let checks: Vec<Check> = report.findings.iter().map(|f| f.check).collect();
        for check in [
            Check::Rotation,
            Check::Translation,
            Check::Permutation,
            Check::MoleculeOrder,
            Check::Isolation,
            Check::Forces,
            Check::SecondOrder,
        ] {
            assert!(checks.contains(&check), "{name}: {check} not run");
        }
        assert!(report.ensure().is_ok());
    }
}

#[test]
fn each_broken_model_fails_exactly_the_check_it_breaks() {
    let cases: [(&str, &Model, Check); 5] = [
        ("absolute position", &tethered, Check::Translation),
        ("cross-molecule term", &leaky, Check::Isolation),
        ("atom index order", &ranked, Check::Permutation),
        ("ReLU", &relu, Check::SecondOrder),
        ("anisotropic", &anisotropic, Check::Rotation),
    ];
    for (name, model, broken) in cases {
        let report = run(model);
        assert_eq!(report.failed(), vec![broken], "{name}:\n{report}");
        let message = report
            .clone()
            .ensure()
            .expect_err("a failed check is an error")
            .to_string();
        assert!(message.contains(broken.name()), "{name}: {message}");
        // Clearly, not by a rounding error.
        let worst = report
            .findings
            .iter()
            .filter(|f| !f.passed())
            .map(|f| f.worst / f.tolerance.max(1e-300));
        assert!(worst.fold(0.0, f64::max) > 100.0, "{name}:\n{report}");
    }
}

#[test]
fn the_leak_shows_in_the_gradient_and_in_the_lone_molecules() {
    let report = run(&leaky);
    let failed: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| !f.passed())
        .map(|f| f.quantity)
        .collect();
    assert_eq!(failed.len(), 3, "{report}");
}

#[test]
fn bad_inputs_and_outputs_are_errors() {
    single_thread();
    let options = ModelCheck::default();
    assert!(matches!(
        check_energy_model(&pair, &batch(Kind::Float), &options),
        Err(Error::Dtype { arg: "batch pos", .. })
    ));
    let one = MolBatch::new(
        &Tensor::from_slice(&[0.0f64, 0., 0., 1., 0., 0.]).reshape([2, 3]),
        &Tensor::from_slice(&[1i64, 1]),
        &Tensor::from_slice(&[0i64, 0]),
        1,
    )
    .expect("valid batch");
    assert!(matches!(
        check_energy_model(&pair, &one, &options),
        Err(Error::InvalidArgument { arg: "batch", .. })
    ));
    let total = |b: &MolBatch| -> Result<Tensor> { Ok(pair(b)?.sum(Kind::Double)) };
    assert!(matches!(
        check_energy_model(&total, &batch(Kind::Double), &options),
        Err(Error::Shape {
            arg: "energy model output",
            ..
        })
    ));
    let detached = |b: &MolBatch| -> Result<Tensor> { Ok(pair(b)?.detach()) };
    assert!(matches!(
        check_energy_model(&detached, &batch(Kind::Double), &options),
        Err(Error::NoGraph { .. })
    ));
    let single = |b: &MolBatch| -> Result<Tensor> { Ok(pair(b)?.to_kind(Kind::Float)) };
    assert!(matches!(
        check_energy_model(&single, &batch(Kind::Double), &options),
        Err(Error::Dtype {
            arg: "energy model output",
            ..
        })
    ));
    let failing = |_: &MolBatch| -> Result<Tensor> {
        Err(Error::InvalidArgument {
            arg: "species",
            reason: "unknown element".into(),
        })
    };
    assert!(matches!(
        check_energy_model(&failing, &batch(Kind::Double), &options),
        Err(Error::InvalidArgument { arg: "species", .. })
    ));
    let no_segment = ModelCheck {
        segment: 0.0,
        ..ModelCheck::default()
    };
    assert!(matches!(
        check_energy_model(&pair, &batch(Kind::Double), &no_segment),
        Err(Error::NonPositive { arg: "segment", .. })
    ));
}
