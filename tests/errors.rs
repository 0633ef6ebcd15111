//! Every validation error: the documented variant, naming the right argument,
//! and never a panic or a crash.

mod common;

use common::single_thread;

use physcon::diffusion::{q_sample_with, NoiseSchedule};
use physcon::losses::{
    score_target, DenoisingLoss, EnergyDescentLoss, EnergyLoss, EnergyMetric, ForceLoss, Forces,
    GradientFlow, LossTerms, ScoreConsistency, StationarityLoss,
};
use physcon::metrics::kabsch_rmsd;
use physcon::{forces, BatchLayout, Error, MolBatch, Molecule, Result, Temperature};
use tch::{Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

/// Three molecules of 2, 1 and 3 atoms, interleaved.
fn batch3() -> Tensor {
    Tensor::from_slice(&[0i64, 2, 1, 2, 0, 2])
}

fn pos6() -> Tensor {
    Tensor::from_slice(&[
        0.0f64, 0.0, 0.0, 1.0, 0.1, 0.0, -0.5, 1.0, 0.2, 0.3, 0.9, -1.0, 1.2, -0.4, 0.5, 2.0, 0.0, 1.0,
    ])
    .reshape([6, 3])
}

fn species6() -> Tensor {
    Tensor::from_slice(&[6i64, 1, 8, 1, 1, 7])
}

fn layout3() -> BatchLayout {
    BatchLayout::new(&batch3(), 3).expect("valid layout")
}

/// Asserts `result` is `Err(Error::Shape { arg, .. })` etc., by variant name and argument.
fn expect_err<T: std::fmt::Debug>(result: Result<T>, variant: &str, arg: &str) -> Error {
    let err = match result {
        Ok(value) => panic!("expected {variant}({arg}), got Ok({value:?})"),
        Err(err) => err,
    };
    let (got_variant, got_arg) = match &err {
        Error::Shape { arg, .. } => ("Shape", *arg),
        Error::Dtype { arg, .. } => ("Dtype", *arg),
        Error::Device { arg, .. } => ("Device", *arg),
        Error::NonFinite { arg } => ("NonFinite", *arg),
        Error::EmptyMolecule { .. } => ("EmptyMolecule", ""),
        Error::IndexOutOfRange { arg, .. } => ("IndexOutOfRange", *arg),
        Error::NonPositive { arg, .. } => ("NonPositive", *arg),
        Error::InvalidArgument { arg, .. } => ("InvalidArgument", *arg),
        Error::NoGraph { arg, .. } => ("NoGraph", *arg),
        other => panic!("expected {variant}({arg}), got {other:?}"),
    };
    assert_eq!((got_variant, got_arg), (variant, arg), "{err:?}");
    // The message names the argument.
    assert!(err.to_string().contains(arg), "{err}");
    err
}

#[test]
fn batch_layout_validation() {
    single_thread();
    expect_err(
        BatchLayout::new(&batch3().to_kind(Kind::Float), 3),
        "Dtype",
        "batch",
    );
    expect_err(
        BatchLayout::new(&batch3().to_kind(Kind::Int), 3),
        "Dtype",
        "batch",
    );
    expect_err(BatchLayout::new(&batch3().reshape([2, 3]), 3), "Shape", "batch");
    expect_err(BatchLayout::new(&Tensor::from(0i64), 1), "Shape", "batch");
    expect_err(
        BatchLayout::new(&Tensor::from_slice::<i64>(&[]), 1),
        "Shape",
        "batch",
    );
    expect_err(BatchLayout::new(&batch3(), 0), "InvalidArgument", "num_molecules");
    expect_err(
        BatchLayout::new(&batch3(), -2),
        "InvalidArgument",
        "num_molecules",
    );
    match BatchLayout::new(&Tensor::from_slice(&[0i64, -1, 1]), 2) {
        Err(Error::IndexOutOfRange {
            arg: "batch",
            index: -1,
            bound: 2,
        }) => {}
        other => panic!("{other:?}"),
    }
    match BatchLayout::new(&batch3(), 2) {
        Err(Error::IndexOutOfRange {
            arg: "batch",
            index: 2,
            bound: 2,
        }) => {}
        other => panic!("{other:?}"),
    }
    match BatchLayout::new(&Tensor::from_slice(&[0i64, 3, 0, 3]), 4) {
        Err(Error::EmptyMolecule {
            molecule: 1,
            num_molecules: 4,
        }) => {}
        other => panic!("{other:?}"),
    }
    // A trailing molecule without atoms.
    match BatchLayout::new(&Tensor::from_slice(&[0i64, 1]), 3) {
        Err(Error::EmptyMolecule {
            molecule: 2,
            num_molecules: 3,
        }) => {}
        other => panic!("{other:?}"),
    }
    expect_err(
        BatchLayout::from_counts(&[], Device::Cpu),
        "InvalidArgument",
        "counts",
    );
    match BatchLayout::from_counts(&[2, 0, 1], Device::Cpu) {
        Err(Error::EmptyMolecule { molecule: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    // The layout's own reductions check their inputs.
    let layout = layout3();
    expect_err(layout.sum(&Tensor::ones([5], F64)), "Shape", "values");
    expect_err(layout.expand(&Tensor::ones([4], F64)), "Shape", "values");
    expect_err(layout.centre(&Tensor::ones([6, 2], F64)), "Shape", "x");
    expect_err(
        layout.centre(&Tensor::ones([6, 3], (Kind::Int64, Device::Cpu))),
        "Dtype",
        "x",
    );
}

#[test]
fn mol_batch_validation() {
    single_thread();
    let (pos, species, batch) = (pos6(), species6(), batch3());
    assert!(MolBatch::new(&pos, &species, &batch, 3).is_ok());
    // Errors of the batch vector come first.
    expect_err(
        MolBatch::new(&pos, &species, &batch.to_kind(Kind::Float), 3),
        "Dtype",
        "batch",
    );
    expect_err(
        MolBatch::new(&pos, &species, &batch, 0),
        "InvalidArgument",
        "num_molecules",
    );
    expect_err(
        MolBatch::new(&pos, &species, &(&batch - 1), 3),
        "IndexOutOfRange",
        "batch",
    );
    expect_err(MolBatch::new(&pos, &species, &batch, 4), "EmptyMolecule", "");
    // Positions.
    expect_err(
        MolBatch::new(&pos.narrow(1, 0, 2), &species, &batch, 3),
        "Shape",
        "pos",
    );
    expect_err(
        MolBatch::new(&pos.narrow(0, 0, 5), &species, &batch, 3),
        "Shape",
        "pos",
    );
    expect_err(
        MolBatch::new(&pos.reshape([18]), &species, &batch, 3),
        "Shape",
        "pos",
    );
    expect_err(
        MolBatch::new(&pos.to_kind(Kind::Int64), &species, &batch, 3),
        "Dtype",
        "pos",
    );
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let broken = pos.copy();
        let _ = broken.get(3).get(1).fill_(bad);
        expect_err(MolBatch::new(&broken, &species, &batch, 3), "NonFinite", "pos");
    }
    // Species.
    expect_err(
        MolBatch::new(&pos, &species.to_kind(Kind::Float), &batch, 3),
        "Dtype",
        "species",
    );
    expect_err(
        MolBatch::new(&pos, &species.to_kind(Kind::Int), &batch, 3),
        "Dtype",
        "species",
    );
    expect_err(
        MolBatch::new(&pos, &species.narrow(0, 0, 5), &batch, 3),
        "Shape",
        "species",
    );
    for (z, bad) in [(0, 0i64), (4, 119), (2, -6)] {
        let broken = species.copy();
        let _ = broken.get(z).fill_(bad);
        match MolBatch::new(&pos, &broken, &batch, 3) {
            Err(Error::IndexOutOfRange {
                arg: "species",
                index,
                bound: 119,
            }) => assert_eq!(index, bad),
            other => panic!("{other:?}"),
        }
    }
    let edge = Tensor::from_slice(&[1i64, 118, 1, 1, 1, 1]);
    assert!(MolBatch::new(&pos, &edge, &batch, 3).is_ok());
}

#[test]
fn bond_validation() -> Result<()> {
    single_thread();
    let mol = || MolBatch::new(&pos6(), &species6(), &batch3(), 3).expect("valid batch");
    // Atoms 0 and 4 are molecule 0; 1, 3 and 5 molecule 2; 2 is alone.
    let index = |pairs: &[i64]| Tensor::from_slice(pairs).reshape([-1, 2]);
    let order = |o: &[i64]| Tensor::from_slice(o);
    let good = mol().with_bonds(&index(&[0, 4, 1, 3, 3, 5]), &order(&[1, 2, 4]))?;
    assert_eq!(good.bonds().map(|b| b.order().size()), Some(vec![3]));
    assert!(mol().with_bonds(&index(&[]), &order(&[])).is_ok());
    expect_err(
        mol().with_bonds(&index(&[0, 4, 3, 3]), &order(&[1, 1])),
        "InvalidArgument",
        "bond index",
    );
    expect_err(
        mol().with_bonds(&index(&[0, 1]), &order(&[1])),
        "InvalidArgument",
        "bond index",
    );
    expect_err(
        mol().with_bonds(&index(&[2, 4]), &order(&[1])),
        "InvalidArgument",
        "bond index",
    );
    for (pairs, bad) in [([0i64, 6], 6i64), ([-1, 0], -1)] {
        match mol().with_bonds(&index(&pairs), &order(&[1])) {
            Err(Error::IndexOutOfRange {
                arg: "bond index",
                index,
                bound: 6,
            }) => assert_eq!(index, bad),
            other => panic!("{other:?}"),
        }
    }
    for bad in [0i64, 5, -1] {
        match mol().with_bonds(&index(&[0, 4]), &order(&[bad])) {
            Err(Error::IndexOutOfRange {
                arg: "bond order",
                index,
                bound: 5,
            }) => assert_eq!(index, bad),
            other => panic!("{other:?}"),
        }
    }
    expect_err(
        mol().with_bonds(&Tensor::from_slice(&[0i64, 4, 1]).reshape([1, 3]), &order(&[1])),
        "Shape",
        "bond index",
    );
    expect_err(
        mol().with_bonds(&index(&[0, 4]), &order(&[1, 2])),
        "Shape",
        "bond index",
    );
    expect_err(
        mol().with_bonds(&index(&[0, 4]), &order(&[1]).reshape([1, 1])),
        "Shape",
        "bond order",
    );
    expect_err(
        mol().with_bonds(&index(&[0, 4]), &Tensor::from(1i64)),
        "Shape",
        "bond order",
    );
    expect_err(
        mol().with_bonds(&index(&[0, 4]).to_kind(Kind::Float), &order(&[1])),
        "Dtype",
        "bond index",
    );
    expect_err(
        mol().with_bonds(&index(&[0, 4]), &order(&[1]).to_kind(Kind::Int)),
        "Dtype",
        "bond order",
    );
    // Host molecules: bonds are renumbered, so a valid local bond stays valid and a bad one is caught.
    let water = Molecule {
        species: vec![8, 1, 1],
        pos: vec![[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]],
        bonds: vec![(0, 1, 1), (0, 2, 1)],
    };
    let two = MolBatch::from_molecules(&[water.clone(), water.clone()], Kind::Double, Device::Cpu)?;
    let renumbered = Vec::<i64>::try_from(two.bonds().expect("bonds").index().reshape([-1])).expect("i64");
    assert_eq!(renumbered, vec![0, 1, 0, 2, 3, 4, 3, 5]);
    let mut broken = water.clone();
    broken.bonds.push((1, 3, 1));
    expect_err(
        MolBatch::from_molecules(&[broken, water.clone()], Kind::Double, Device::Cpu),
        "InvalidArgument",
        "bond index",
    );
    let mut short = water.clone();
    short.pos.pop();
    expect_err(
        MolBatch::from_molecules(&[water.clone(), short], Kind::Double, Device::Cpu),
        "InvalidArgument",
        "molecules",
    );
    expect_err(
        MolBatch::from_molecules(&[], Kind::Double, Device::Cpu),
        "InvalidArgument",
        "molecules",
    );
    expect_err(
        MolBatch::from_molecules(&[water], Kind::Int64, Device::Cpu),
        "Dtype",
        "kind",
    );
    Ok(())
}

#[test]
fn dtype_mismatch_in_losses() {
    single_thread();
    let layout = layout3();
    let e64 = Tensor::from_slice(&[1.0f64, 2.0, 3.0]);
    let e32 = e64.to_kind(Kind::Float);
    expect_err(
        EnergyLoss::new(EnergyMetric::Mse)
            .unwrap()
            .forward(&e64, &e32, None, &layout),
        "Dtype",
        "target",
    );
    expect_err(
        EnergyLoss::new(EnergyMetric::Mse)
            .unwrap()
            .forward(&e64, &e64.to_kind(Kind::Int64), None, &layout),
        "Dtype",
        "target",
    );
    expect_err(
        EnergyLoss::new(EnergyMetric::Mse)
            .unwrap()
            .forward(&e64.to_kind(Kind::Int64), &e64, None, &layout),
        "Dtype",
        "pred",
    );
    assert!(EnergyLoss::new(EnergyMetric::Mse)
        .unwrap()
        .forward(&e32, &e32, None, &layout)
        .is_ok());
    let f64_ = Tensor::ones([6, 3], F64);
    let f32_ = f64_.to_kind(Kind::Float);
    expect_err(
        ForceLoss::new().forward(&f64_, &f32_, None, &layout),
        "Dtype",
        "target",
    );
    expect_err(
        DenoisingLoss::new().forward(&f64_, &f32_, &layout),
        "Dtype",
        "eps",
    );
    expect_err(
        DenoisingLoss::new().forward(&f32_, &f64_, &layout),
        "Dtype",
        "eps",
    );
    assert!(DenoisingLoss::new().forward(&f32_, &f32_, &layout).is_ok());
    // Shapes and finiteness in the same losses.
    expect_err(
        EnergyLoss::new(EnergyMetric::Mse)
            .unwrap()
            .forward(&e64, &e64.narrow(0, 0, 2), None, &layout),
        "Shape",
        "target",
    );
    expect_err(
        EnergyLoss::new(EnergyMetric::Mse)
            .unwrap()
            .forward(&(&e64 * f64::NAN), &e64, None, &layout),
        "NonFinite",
        "pred",
    );
    expect_err(
        EnergyLoss::new(EnergyMetric::Mse)
            .unwrap()
            .forward(&e64, &(&e64 * f64::INFINITY), None, &layout),
        "NonFinite",
        "target",
    );
    expect_err(
        ForceLoss::new().forward(&f64_, &f64_.narrow(0, 0, 5), None, &layout),
        "Shape",
        "target",
    );
    expect_err(
        DenoisingLoss::new().forward(&f64_.narrow(0, 0, 5), &f64_, &layout),
        "Shape",
        "eps_hat",
    );
    expect_err(kabsch_rmsd(&f64_, &f32_, &layout), "Dtype", "reference");
}

#[test]
fn mask_validation() {
    single_thread();
    let layout = layout3();
    let e = Tensor::from_slice(&[1.0f64, 2.0, 3.0]);
    let f = Tensor::ones([6, 3], F64);
    let good = Tensor::from_slice(&[true, false, true]);
    assert!(EnergyLoss::new(EnergyMetric::Mse)
        .unwrap()
        .forward(&e, &e, Some(&good), &layout)
        .is_ok());
    assert!(ForceLoss::new().forward(&f, &f, Some(&good), &layout).is_ok());
    for wrong_kind in [
        good.to_kind(Kind::Int64),
        good.to_kind(Kind::Float),
        good.to_kind(Kind::Uint8),
    ] {
        expect_err(
            EnergyLoss::new(EnergyMetric::Mse)
                .unwrap()
                .forward(&e, &e, Some(&wrong_kind), &layout),
            "Dtype",
            "mask",
        );
        expect_err(
            ForceLoss::new().forward(&f, &f, Some(&wrong_kind), &layout),
            "Dtype",
            "mask",
        );
    }
    // A molecule mask has B entries; an atom-level mask [N] is a shape error.
    let atom_mask = Tensor::ones([6], (Kind::Bool, Device::Cpu));
    let short = Tensor::from_slice(&[true, true]);
    for wrong_len in [&atom_mask, &short, &good.reshape([3, 1])] {
        expect_err(
            EnergyLoss::new(EnergyMetric::Mse)
                .unwrap()
                .forward(&e, &e, Some(wrong_len), &layout),
            "Shape",
            "mask",
        );
        expect_err(
            ForceLoss::new().forward(&f, &f, Some(wrong_len), &layout),
            "Shape",
            "mask",
        );
    }
}

#[test]
fn temperature_and_kt_validation() -> Result<()> {
    single_thread();
    for bad in [0.0, -300.0, f64::NAN, f64::INFINITY] {
        let err = expect_err(Temperature::kelvin(bad), "NonPositive", "kelvin");
        if bad.is_finite() {
            assert!(matches!(err, Error::NonPositive { value, .. } if value == bad));
        }
        expect_err(Temperature::from_kt(bad), "NonPositive", "kt");
        expect_err(ScoreConsistency::new(bad), "NonPositive", "kt");
    }
    assert!((Temperature::kelvin(300.0)?.kt() - 0.025_852).abs() < 1e-6);
    // Kelvin passed as kT is refused with the way out; kT in kJ/mol (2.494 at 300 K) is not.
    let err = expect_err(ScoreConsistency::new(300.0), "InvalidArgument", "kt");
    assert!(
        err.to_string().contains("Temperature::kelvin(300)?.kt()"),
        "{err}"
    );
    assert!(ScoreConsistency::new(2.494).is_ok());
    let layout = layout3();
    let schedule = NoiseSchedule::cosine(100)?;
    let level = schedule.level(&Tensor::from_slice(&[1i64, 2, 3]), Kind::Double)?;
    let forces_ = Tensor::ones([6, 3], F64);
    for bad in [0.0, -0.1, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        expect_err(score_target(&forces_, &level, bad, &layout), "NonPositive", "kt");
    }
    assert!(score_target(&forces_, &level, 0.025, &layout).is_ok());
    expect_err(
        score_target(&forces_.narrow(0, 0, 5), &level, 0.025, &layout),
        "Shape",
        "forces",
    );
    expect_err(
        score_target(&(&forces_ * f64::NAN), &level, 0.025, &layout),
        "NonFinite",
        "forces",
    );
    Ok(())
}

#[test]
fn optimality_structure_and_reference_checks() -> Result<()> {
    single_thread();
    let layout = layout3();
    let energy = |pos: &Tensor| layout.sum(&pos.square().sum_dim_intlist(1, false, Kind::Double));
    let x = pos6();
    assert!(StationarityLoss::new().forward(&energy, &x, &layout).is_ok());
    assert!(EnergyDescentLoss::new().forward(&energy, &x, &x, &layout).is_ok());
    expect_err(
        EnergyDescentLoss::new().forward(&energy, &x, &x.narrow(0, 0, 5), &layout),
        "Shape",
        "reference",
    );
    expect_err(
        EnergyDescentLoss::new().forward(&energy, &x, &x.to_kind(Kind::Float), &layout),
        "Dtype",
        "reference",
    );
    expect_err(
        StationarityLoss::new().forward(&energy, &x.narrow(1, 0, 2), &layout),
        "Shape",
        "structure",
    );
    Ok(())
}

#[test]
fn energy_without_graph_is_an_error_not_a_crash() -> Result<()> {
    single_thread();
    let layout = layout3();
    let x = pos6();
    // A constant energy (e.g. a model evaluated under no_grad or on detached positions).
    let constant = |_pos: &Tensor| -> Result<Tensor> { Ok(Tensor::zeros([3], F64)) };
    let detached = |pos: &Tensor| layout.sum(&pos.detach().square().sum_dim_intlist(1, false, Kind::Double));
    let under_no_grad =
        |pos: &Tensor| tch::no_grad(|| layout.sum(&pos.square().sum_dim_intlist(1, false, Kind::Double)));
    let schedule = NoiseSchedule::cosine(100)?;
    let noised = q_sample_with(
        &schedule,
        &x,
        &Tensor::from_slice(&[1i64, 1, 1]),
        &Tensor::zeros([6, 3], F64),
        &layout,
    )?;
    let eps_hat = Tensor::zeros([6, 3], F64).set_requires_grad(true);
    let models: [&dyn physcon::EnergyModel; 3] = [&constant, &detached, &under_no_grad];
    for model in models {
        for create_graph in [false, true] {
            expect_err(
                forces(model, &x, &layout, create_graph),
                "NoGraph",
                "energy model output",
            );
        }
        for flow in [
            GradientFlow::ToStructure,
            GradientFlow::Both,
            GradientFlow::ToEnergy,
        ] {
            let structure = x.detach().set_requires_grad(true);
            expect_err(
                StationarityLoss::new()
                    .flow(flow)
                    .forward(model, &structure, &layout),
                "NoGraph",
                "energy model output",
            );
            expect_err(
                ScoreConsistency::new(0.025)?.flow(flow).forward(
                    &eps_hat,
                    noised.level(),
                    Forces::Model {
                        energy: model,
                        at: noised.x0(),
                    },
                    &layout,
                ),
                "NoGraph",
                "energy model output",
            );
        }
    }
    Ok(())
}

#[test]
fn energy_that_ignores_its_positions_is_refused_not_a_silent_zero() -> Result<()> {
    single_thread();
    let layout = layout3();
    let x = pos6();
    // The likeliest wrapping mistake: the model reads a tensor captured when it was
    // built (it has a graph, to that tensor), not the positions it is given.
    let captured = x.detach().set_requires_grad(true);
    let model = |_pos: &Tensor| layout.sum(&captured.square().sum_dim_intlist(1, false, Kind::Double));
    let refused = |result: Result<Tensor>| {
        let err = expect_err(result, "NoGraph", "energy model output");
        assert!(
            err.to_string().contains("does not depend on the positions"),
            "{err}"
        );
    };
    for create_graph in [false, true] {
        refused(forces(&model, &x, &layout, create_graph));
    }
    let schedule = NoiseSchedule::cosine(100)?;
    let t = Tensor::from_slice(&[1i64, 1, 1]);
    let noised = q_sample_with(&schedule, &x, &t, &Tensor::zeros([6, 3], F64), &layout)?;
    let eps_hat = Tensor::zeros([6, 3], F64).set_requires_grad(true);
    for flow in [
        GradientFlow::ToStructure,
        GradientFlow::Both,
        GradientFlow::ToEnergy,
    ] {
        let structure = x.detach().set_requires_grad(true);
        refused(
            StationarityLoss::new()
                .flow(flow)
                .forward(&model, &structure, &layout),
        );
        refused(
            EnergyDescentLoss::new()
                .flow(flow)
                .forward(&model, &structure, &x, &layout),
        );
        let at = Forces::Model {
            energy: &model,
            at: noised.x0(),
        };
        refused(
            ScoreConsistency::new(0.025)?
                .flow(flow)
                .forward(&eps_hat, noised.level(), at, &layout),
        );
    }
    // Flat is not ignoring: an energy that uses its positions with zero gradient is a legal zero.
    let flat = |pos: &Tensor| {
        Ok(
            layout.sum(&captured.square().sum_dim_intlist(1, false, Kind::Double))?
                + pos.sum(Kind::Double) * 0.0,
        )
    };
    assert_eq!(
        StationarityLoss::new()
            .forward(&flat, &x, &layout)?
            .double_value(&[]),
        0.0
    );
    Ok(())
}

#[test]
fn energy_output_shape_dtype_and_finiteness() -> Result<()> {
    single_thread();
    let layout = layout3();
    let x = pos6();
    let good = |pos: &Tensor| layout.sum(&pos.square().sum_dim_intlist(1, false, Kind::Double));
    let too_long =
        |pos: &Tensor| -> Result<Tensor> { Ok(Tensor::cat(&[good(pos)?, good(pos)?.narrow(0, 0, 1)], 0)) };
    let scalar = |pos: &Tensor| -> Result<Tensor> { Ok(good(pos)?.sum(Kind::Double)) };
    let nan = |pos: &Tensor| -> Result<Tensor> { Ok(good(pos)? * f64::NAN) };
    let inf = |pos: &Tensor| -> Result<Tensor> { Ok(good(pos)? / 0.0) };
    let single = |pos: &Tensor| -> Result<Tensor> { Ok(good(pos)?.to_kind(Kind::Float)) };
    let schedule = NoiseSchedule::cosine(100)?;
    let noised = q_sample_with(
        &schedule,
        &x,
        &Tensor::from_slice(&[3i64, 3, 3]),
        &Tensor::zeros([6, 3], F64),
        &layout,
    )?;
    let eps_hat = Tensor::zeros([6, 3], F64).set_requires_grad(true);
    let cases: [(&dyn physcon::EnergyModel, &str); 5] = [
        (&too_long, "Shape"),
        (&scalar, "Shape"),
        (&nan, "NonFinite"),
        (&inf, "NonFinite"),
        (&single, "Dtype"),
    ];
    for (model, variant) in cases {
        expect_err(forces(model, &x, &layout, false), variant, "energy model output");
        expect_err(
            StationarityLoss::new().forward(model, &x, &layout),
            variant,
            "energy model output",
        );
        expect_err(
            EnergyDescentLoss::new().forward(model, &x, &x, &layout),
            variant,
            "energy model output",
        );
        expect_err(
            ScoreConsistency::new(0.025)?.forward(
                &eps_hat,
                noised.level(),
                Forces::Model {
                    energy: model,
                    at: noised.x0(),
                },
                &layout,
            ),
            variant,
            "energy model output",
        );
        expect_err(
            physcon::metrics::energy_gap(model, &x, &x, &layout),
            variant,
            "energy model output",
        );
    }
    // The good model passes everywhere.
    assert!(forces(&good, &x, &layout, false).is_ok());
    assert!(ScoreConsistency::new(0.025)?
        .forward(
            &eps_hat,
            noised.level(),
            Forces::Model {
                energy: &good,
                at: noised.x0()
            },
            &layout
        )
        .is_ok());
    Ok(())
}

#[test]
fn score_consistency_labels_with_to_energy() -> Result<()> {
    single_thread();
    let layout = layout3();
    let x = pos6();
    let schedule = NoiseSchedule::cosine(100)?;
    let noised = q_sample_with(
        &schedule,
        &x,
        &Tensor::from_slice(&[2i64, 5, 9]),
        &Tensor::zeros([6, 3], F64),
        &layout,
    )?;
    let eps_hat = Tensor::zeros([6, 3], F64).set_requires_grad(true);
    let labels = Tensor::ones([6, 3], F64);
    expect_err(
        ScoreConsistency::new(0.025)?
            .flow(GradientFlow::ToEnergy)
            .forward(&eps_hat, noised.level(), Forces::Labels(&labels), &layout),
        "InvalidArgument",
        "forces",
    );
    for flow in [GradientFlow::ToStructure, GradientFlow::Both] {
        assert!(ScoreConsistency::new(0.025)?
            .flow(flow)
            .forward(&eps_hat, noised.level(), Forces::Labels(&labels), &layout)
            .is_ok());
    }
    let consistency = ScoreConsistency::new(0.025)?;
    expect_err(
        consistency.forward(
            &eps_hat,
            noised.level(),
            Forces::Labels(&labels.narrow(0, 0, 5)),
            &layout,
        ),
        "Shape",
        "forces",
    );
    expect_err(
        consistency.forward(
            &eps_hat,
            noised.level(),
            Forces::Labels(&labels.to_kind(Kind::Float)),
            &layout,
        ),
        "Dtype",
        "forces",
    );
    expect_err(
        consistency.forward(
            &eps_hat.to_kind(Kind::Float),
            noised.level(),
            Forces::Labels(&labels),
            &layout,
        ),
        "Dtype",
        "eps_hat",
    );
    expect_err(
        consistency.forward(
            &eps_hat.narrow(0, 0, 5),
            noised.level(),
            Forces::Labels(&labels),
            &layout,
        ),
        "Shape",
        "eps_hat",
    );
    Ok(())
}

#[test]
fn loss_terms_validation() {
    single_thread();
    let mut terms = LossTerms::new();
    expect_err(terms.total(), "InvalidArgument", "terms");
    expect_err(
        terms.push("a", -1.0, Tensor::from(1.0f64)).map(|_| ()),
        "InvalidArgument",
        "weight",
    );
    expect_err(
        terms.push("a", f64::NAN, Tensor::from(1.0f64)).map(|_| ()),
        "InvalidArgument",
        "weight",
    );
    expect_err(
        terms.push("a", 1.0, Tensor::ones([2], F64)).map(|_| ()),
        "Shape",
        "loss",
    );
    expect_err(
        terms.push("a", 1.0, Tensor::from(1i64)).map(|_| ()),
        "Dtype",
        "loss",
    );
    assert!(terms.push("a", 0.0, Tensor::from(1.0f64)).is_ok());
    expect_err(
        terms.push("a", 1.0, Tensor::from(1.0f64)).map(|_| ()),
        "InvalidArgument",
        "name",
    );
    expect_err(terms.total(), "InvalidArgument", "terms");
}

#[test]
fn error_messages_name_the_argument() {
    single_thread();
    let err = MolBatch::new(&pos6().narrow(1, 0, 2), &species6(), &batch3(), 3).expect_err("bad pos");
    let text = err.to_string();
    assert!(
        text.contains("`pos`") && text.contains("[N, 3]") && text.contains("[6, 2]"),
        "{text}"
    );
    let text = ScoreConsistency::new(-1.0).expect_err("bad kt").to_string();
    assert!(text.contains("`kt`") && text.contains("-1"), "{text}");
    let text = BatchLayout::new(&Tensor::from_slice(&[0i64, 5]), 2)
        .expect_err("bad index")
        .to_string();
    assert!(
        text.contains("`batch`") && text.contains('5') && text.contains("0..2"),
        "{text}"
    );
    let text = BatchLayout::new(&Tensor::from_slice(&[0i64, 2]), 3)
        .expect_err("empty")
        .to_string();
    assert!(text.contains("molecule 1"), "{text}");
    let layout = layout3();
    let text = forces(
        &|_: &Tensor| -> Result<Tensor> { Ok(Tensor::zeros([3], F64)) },
        &pos6(),
        &layout,
        false,
    )
    .expect_err("no graph")
    .to_string();
    assert!(
        text.contains("energy model output") && text.contains("no autograd graph"),
        "{text}"
    );
}

/// Device mismatches need a second device. On a CPU-only machine (or a
/// libtorch without CUDA) this test returns early: nothing can be checked.
#[test]
fn device_mismatch_when_cuda_is_available() -> Result<()> {
    single_thread();
    if !tch::Cuda::is_available() {
        eprintln!("CUDA not available: device-mismatch checks skipped");
        return Ok(());
    }
    let cuda = Device::Cuda(0);
    let layout = layout3();
    let x = pos6();
    expect_err(
        MolBatch::new(&x.to_device(cuda), &species6(), &batch3(), 3),
        "Device",
        "pos",
    );
    expect_err(
        MolBatch::new(&x, &species6().to_device(cuda), &batch3(), 3),
        "Device",
        "species",
    );
    expect_err(kabsch_rmsd(&x.to_device(cuda), &x, &layout), "Device", "pred");
    expect_err(
        DenoisingLoss::new().forward(&x, &x.to_device(cuda), &layout),
        "Device",
        "eps",
    );
    let e = Tensor::from_slice(&[1.0f64, 2.0, 3.0]);
    expect_err(
        EnergyLoss::new(EnergyMetric::Mse)
            .unwrap()
            .forward(&e, &e.to_device(cuda), None, &layout),
        "Device",
        "target",
    );
    let mask = Tensor::from_slice(&[true, true, false]).to_device(cuda);
    expect_err(
        EnergyLoss::new(EnergyMetric::Mse)
            .unwrap()
            .forward(&e, &e, Some(&mask), &layout),
        "Device",
        "mask",
    );
    let cuda_layout = BatchLayout::new(&batch3().to_device(cuda), 3)?;
    expect_err(cuda_layout.sum(&x), "Device", "values");
    match MolBatch::new(&x, &species6(), &batch3(), 3).and_then(|m| {
        m.with_bonds(
            &Tensor::from_slice(&[0i64, 4]).reshape([1, 2]).to_device(cuda),
            &Tensor::from_slice(&[1i64]),
        )
    }) {
        Err(Error::Device {
            arg: "bond index",
            expected: Device::Cpu,
            got,
        }) => assert_eq!(got, cuda),
        other => panic!("{other:?}"),
    }
    Ok(())
}

/// A finite energy whose gradient is not finite (sqrt at zero) must not slip
/// through as a NaN loss or NaN forces.
#[test]
fn non_finite_energy_gradients_are_caught() -> Result<()> {
    let layout = layout3();
    let kink = |pos: &Tensor| -> Result<Tensor> {
        layout.sum(&pos.abs().sqrt().sum_dim_intlist(1, false, Kind::Double))
    };
    let at_zero = pos6();
    let _ = at_zero.get(0).fill_(0.0);
    expect_err(forces(&kink, &at_zero, &layout, false), "NonFinite", "forces");
    expect_err(
        StationarityLoss::new().forward(&kink, &at_zero, &layout),
        "NonFinite",
        "optimality loss (the energy's gradient)",
    );
    let schedule = NoiseSchedule::cosine(1000)?;
    let t = Tensor::from_slice(&[5i64, 5, 5]);
    let noised = q_sample_with(&schedule, &at_zero, &t, &pos6(), &layout)?;
    // q_sample centres x0, moving the kink: evaluate the energy at the centred structure's own zero.
    let centred_kink = |pos: &Tensor| -> Result<Tensor> {
        let shifted = pos - noised.x0().get(0);
        layout.sum(&shifted.abs().sqrt().sum_dim_intlist(1, false, Kind::Double))
    };
    expect_err(
        ScoreConsistency::new(0.1)?.forward(
            &pos6(),
            noised.level(),
            Forces::Model {
                energy: &centred_kink,
                at: noised.x0(),
            },
            &layout,
        ),
        "NonFinite",
        "score loss (the energy's forces)",
    );
    Ok(())
}

/// libtorch's C++ backtrace stays out of the one-line message but is kept as its source.
#[test]
fn libtorch_errors_display_their_reason_without_the_backtrace() {
    let a = Tensor::zeros([2, 3], (Kind::Double, Device::Cpu));
    let err: Error = a.f_matmul(&a).expect_err("[2,3] x [2,3] cannot multiply").into();
    let shown = err.to_string();
    assert!(shown.starts_with("libtorch: "), "{shown}");
    assert!(shown.contains("cannot be multiplied"), "{shown}");
    assert!(!shown.contains('\n') && !shown.contains("frame #"), "{shown}");
    let source = std::error::Error::source(&err).expect("the full libtorch text");
    assert!(source.to_string().len() >= shown.len() - "libtorch: ".len());
}
