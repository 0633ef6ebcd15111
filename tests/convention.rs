//! The one loss convention: `forward_per_molecule(..).mean()` is `forward` in
//! value and gradient for every loss and flow, weights reduce as documented,
//! `energy_and_forces` is one forward, score consistency takes any diffusion,
//! and `Checks::Metadata` skips exactly the value checks.

mod common;

use common::{max_abs_diff, raw_case, single_thread, Case, Morse};
use physcon::diffusion::{q_sample_with, NoiseLevel, NoiseSchedule};
use physcon::losses::{
    Checks, DenoisingLoss, EnergyDescentLoss, EnergyLoss, EnergyMetric, ForceLoss, Forces, GradientFlow,
    PerMolecule, ScoreConsistency, StationarityLoss,
};
use physcon::{energy_and_forces, forces, EnergyModel, Error, Result};
use proptest::prelude::*;
use tch::{Kind, Tensor};

const FLOWS: [GradientFlow; 3] = [
    GradientFlow::ToStructure,
    GradientFlow::Both,
    GradientFlow::ToEnergy,
];

/// Value and gradients (in `leaves`) of a scalar.
fn value_and_grads(loss: Tensor, leaves: &[&Tensor]) -> (f64, Vec<Tensor>) {
    let value = loss.double_value(&[]);
    // keep_graph: both reductions backpropagate through the same inputs.
    let grads = Tensor::run_backward(&[loss], leaves, true, false)
        .into_iter()
        .zip(leaves)
        .map(|(g, x)| if g.defined() { g } else { x.zeros_like() })
        .collect();
    (value, grads)
}

/// `forward` and `forward_per_molecule(..).mean()` agree in value and in the
/// gradient of every leaf.
fn assert_same_reduction(
    what: &str,
    forward: impl Fn() -> Result<Tensor>,
    per_molecule: impl Fn() -> Result<PerMolecule>,
    leaves: &[&Tensor],
) {
    let (v1, g1) = value_and_grads(forward().unwrap(), leaves);
    let (v2, g2) = value_and_grads(per_molecule().unwrap().mean().unwrap(), leaves);
    assert!(
        (v1 - v2).abs() <= 1e-12 * (1.0 + v1.abs()),
        "{what}: {v1} vs {v2}"
    );
    for (k, (a, b)) in g1.iter().zip(&g2).enumerate() {
        assert!(max_abs_diff(a, b) < 1e-10, "{what}: gradient of leaf {k}");
    }
}

fn leaves(c: &Case) -> (Tensor, Tensor, Tensor) {
    (
        c.pos.detach().set_requires_grad(true),
        c.u.detach().set_requires_grad(true),
        Morse::default_params().set_requires_grad(true),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn per_molecule_mean_is_forward(raw in raw_case(8), masked: bool, t in 1..100i64) {
        single_thread();
        let c = raw.build();
        let layout = &c.layout;
        let mask = masked.then(|| c.mask.shallow_clone());
        let (pos, u, params) = leaves(&c);
        let p = c.p.detach().set_requires_grad(true);

        let energy = EnergyLoss::new(EnergyMetric::Huber { delta: 0.5 }).unwrap().per_atom(true);
        assert_same_reduction(
            "energy",
            || energy.forward(&p, &c.q, mask.as_ref(), layout),
            || energy.forward_per_molecule(&p, &c.q, mask.as_ref(), layout),
            &[&p],
        );
        assert_same_reduction(
            "force",
            || ForceLoss::new().forward(&u, &c.v, mask.as_ref(), layout),
            || ForceLoss::new().forward_per_molecule(&u, &c.v, mask.as_ref(), layout),
            &[&u],
        );
        assert_same_reduction(
            "denoising",
            || DenoisingLoss::new().forward(&u, &c.v, layout),
            || DenoisingLoss::new().forward_per_molecule(&u, &c.v, layout),
            &[&u],
        );
        let structure = &pos + &u * 0.1;
        let schedule = NoiseSchedule::cosine(1000).unwrap();
        let t = Tensor::full([layout.num_molecules()], t, (Kind::Int64, tch::Device::Cpu));
        let noised = q_sample_with(&schedule, &pos, &t, &c.v, layout).unwrap();
        for flow in FLOWS {
            let model = Morse::new(layout, &params);
            let stationarity = StationarityLoss::new().flow(flow);
            assert_same_reduction(
                &format!("stationarity {flow:?}"),
                || stationarity.forward(&model, &structure, layout),
                || stationarity.forward_per_molecule(&model, &structure, layout),
                &[&pos, &u, &params],
            );
            let descent = EnergyDescentLoss::new().flow(flow);
            assert_same_reduction(
                &format!("energy descent {flow:?}"),
                || descent.forward(&model, &structure, &pos, layout),
                || descent.forward_per_molecule(&model, &structure, &pos, layout),
                &[&pos, &u, &params],
            );
            let score = ScoreConsistency::new(0.3).unwrap().flow(flow);
            let forces = Forces::Model { energy: &model, at: noised.x0() };
            assert_same_reduction(
                &format!("score {flow:?}"),
                || score.forward(&u, noised.level(), forces, layout),
                || score.forward_per_molecule(&u, noised.level(), forces, layout),
                &[&pos, &u, &params],
            );
        }
    }
}

#[test]
fn weighted_mean_by_hand() -> Result<()> {
    single_thread();
    let layout = physcon::BatchLayout::from_counts(&[1, 2, 1], tch::Device::Cpu)?;
    let pred = Tensor::from_slice(&[1.0f64, 2.0, 3.0]);
    let target = Tensor::from_slice(&[0.0f64, f64::NAN, 1.0]);
    let mask = Tensor::from_slice(&[true, false, true]);
    let per =
        EnergyLoss::new(EnergyMetric::L1)?.forward_per_molecule(&pred, &target, Some(&mask), &layout)?;
    // |1 - 0| and |3 - 1|; the unlabelled molecule counts for nothing, whatever its weight.
    let w = Tensor::from_slice(&[2.0f64, 50.0, 0.5]);
    assert!((per.weighted_mean(&w)?.double_value(&[]) - (2.0 * 1.0 + 0.5 * 2.0) / 2.5).abs() < 1e-15);
    // No labelled weight: a zero with a graph, not NaN.
    let w0 = Tensor::from_slice(&[0.0f64, 1.0, 0.0]);
    let pred_leaf = pred.set_requires_grad(true);
    let per = EnergyLoss::new(EnergyMetric::Mse).unwrap().forward_per_molecule(
        &pred_leaf,
        &target,
        Some(&mask),
        &layout,
    )?;
    let zero = per.weighted_mean(&w0)?;
    assert_eq!(zero.double_value(&[]), 0.0);
    zero.backward();
    assert_eq!(pred_leaf.grad().abs().sum(Kind::Double).double_value(&[]), 0.0);
    Ok(())
}

#[test]
fn weights_are_validated() -> Result<()> {
    single_thread();
    let layout = physcon::BatchLayout::from_counts(&[1, 1], tch::Device::Cpu)?;
    let x = Tensor::from_slice(&[1.0f64, 2.0]);
    let per = EnergyLoss::new(EnergyMetric::Mse)
        .unwrap()
        .forward_per_molecule(&x, &x, None, &layout)?;
    let cases: [(Tensor, &str); 5] = [
        (Tensor::from_slice(&[1.0f64, -1.0]), "InvalidArgument"),
        (Tensor::from_slice(&[1.0f64, f64::NAN]), "InvalidArgument"),
        (Tensor::from_slice(&[1.0f64, f64::INFINITY]), "InvalidArgument"),
        (Tensor::from_slice(&[1.0f32, 1.0]), "Dtype"),
        (Tensor::from_slice(&[1.0f64, 1.0, 1.0]), "Shape"),
    ];
    for (w, variant) in cases {
        let err = per.weighted_mean(&w).expect_err(variant);
        assert!(format!("{err:?}").starts_with(variant), "{err:?}");
        assert!(err.to_string().contains("weights"), "{err}");
    }
    Ok(())
}

#[test]
fn energy_and_forces_is_one_forward_with_both_graphs() -> Result<()> {
    single_thread();
    let c = common::Case::fixed();
    let layout = &c.layout;
    let params = Morse::default_params().set_requires_grad(true);
    let model = Morse::new(layout, &params);
    let out = energy_and_forces(&model, &c.pos, layout, true)?;
    assert!(max_abs_diff(&out.energy, &model.energy(&c.pos)?) < 1e-14);
    assert!(max_abs_diff(&out.forces, &forces(&model, &c.pos, layout, false)?) < 1e-14);
    // Energy and force losses through the one forward train the parameters
    // exactly as two separate forwards do.
    let loss = |e: &Tensor, f: &Tensor| -> Result<Tensor> {
        Ok(EnergyLoss::new(EnergyMetric::Mse)
            .unwrap()
            .forward(e, &c.q, None, layout)?
            + ForceLoss::new().forward(f, &c.v, None, layout)?)
    };
    let (_, one) = value_and_grads(loss(&out.energy, &out.forces)?, &[&params]);
    let separate = loss(&model.energy(&c.pos)?, &forces(&model, &c.pos, layout, true)?)?;
    let (_, two) = value_and_grads(separate, &[&params]);
    assert!(max_abs_diff(&one[0], &two[0]) < 1e-12);
    // Without a graph the forces are constants.
    assert!(!energy_and_forces(&model, &c.pos, layout, false)?
        .forces
        .requires_grad());
    Ok(())
}

/// The energy of `energy_and_forces(.., false)` still trains the model: forces
/// for monitoring only must not free the graph the energy loss backpropagates
/// through (it used to: "Trying to backward through the graph a second time").
#[test]
fn energy_without_force_graph_keeps_its_graph_to_the_parameters() -> Result<()> {
    single_thread();
    let c = common::Case::fixed();
    let layout = &c.layout;
    // E_b = (k/2) sum_{i in b} |r_i|^2, so dE_b/dk = (1/2) sum_{i in b} |r_i|^2.
    let k = Tensor::from(1.7f64).set_requires_grad(true);
    let well = |pos: &Tensor| layout.sum(&((pos * pos).sum_dim_intlist(1, false, Kind::Double) * &k * 0.5));
    let out = energy_and_forces(&well, &c.pos, layout, false)?;
    assert!(!out.forces.requires_grad());
    let expected_forces = -(&c.pos * 1.7);
    assert!(max_abs_diff(&out.forces, &expected_forces) < 1e-12);
    out.energy.sum(Kind::Double).backward();
    let closed_form = (&c.pos * &c.pos).sum(Kind::Double).double_value(&[]) * 0.5;
    let got = k.grad().double_value(&[]);
    assert!(
        (got - closed_form).abs() <= 1e-12 * closed_form.abs(),
        "{got} vs {closed_form}"
    );
    Ok(())
}

#[test]
fn score_consistency_takes_any_diffusion() -> Result<()> {
    single_thread();
    let c = common::Case::fixed();
    let layout = &c.layout;
    let model = Morse::new(layout, &Morse::default_params());
    let f = forces(&model, &c.pos, layout, false)?;
    let f_centred = layout.centre(&f)?;
    let kt = 0.05;
    let b = layout.num_molecules();
    // Variance exploding (EDM): R_sigma = R + sigma eps, eps* = -sigma F / kT.
    let sigma = Tensor::linspace(0.01, 0.05, b, (Kind::Double, tch::Device::Cpu));
    let ve = NoiseLevel::sigma_only(&sigma)?;
    let eps_star = layout.expand(&sigma)?.unsqueeze(1) * &f_centred * (-1.0 / kt);
    let score = ScoreConsistency::new(kt)?;
    let at_target = score.forward(
        &eps_star,
        &ve,
        Forces::Model {
            energy: &model,
            at: &c.pos,
        },
        layout,
    )?;
    assert!(at_target.double_value(&[]) < 1e-24);
    // The value against labels equals the value against the model's own forces.
    let shifted = &eps_star + 0.1;
    let by_model = score.forward(
        &shifted,
        &ve,
        Forces::Model {
            energy: &model,
            at: &c.pos,
        },
        layout,
    )?;
    let by_labels = score.forward(&shifted, &ve, Forces::Labels(&f), layout)?;
    assert!((by_model.double_value(&[]) - by_labels.double_value(&[])).abs() < 1e-12);
    // A variance-preserving level of one's own equals physcon's schedule at the same (a, s).
    let schedule = NoiseSchedule::cosine(1000)?;
    let t = Tensor::full([b], 37i64, (Kind::Int64, tch::Device::Cpu));
    let ours = schedule.level(&t, Kind::Double)?;
    let theirs = NoiseLevel::new(ours.alpha(), ours.sigma())?;
    let l1 = score.forward(&shifted, &ours, Forces::Labels(&f), layout)?;
    let l2 = score.forward(&shifted, &theirs, Forces::Labels(&f), layout)?;
    assert_eq!(l1.double_value(&[]), l2.double_value(&[]));
    Ok(())
}

#[test]
fn noise_level_validation() {
    single_thread();
    let ok = Tensor::from_slice(&[0.5f64, 0.9]);
    let cases: [(Tensor, Tensor, &str, &str); 6] = [
        (
            ok.shallow_clone(),
            Tensor::from_slice(&[0.1f64, 0.0]),
            "InvalidArgument",
            "sigma",
        ),
        (
            Tensor::from_slice(&[0.5f64, -1.0]),
            ok.shallow_clone(),
            "InvalidArgument",
            "alpha",
        ),
        (
            ok.shallow_clone(),
            Tensor::from_slice(&[0.1f64, f64::NAN]),
            "InvalidArgument",
            "sigma",
        ),
        (
            ok.shallow_clone(),
            Tensor::from_slice(&[0.1f32, 0.1]),
            "Dtype",
            "sigma",
        ),
        (
            ok.shallow_clone(),
            Tensor::from_slice(&[0.1f64]),
            "Shape",
            "sigma",
        ),
        (ok.reshape([2, 1]), ok.reshape([2, 1]), "Shape", "alpha"),
    ];
    for (alpha, sigma, variant, arg) in cases {
        let err = NoiseLevel::new(&alpha, &sigma).expect_err(variant);
        assert!(format!("{err:?}").starts_with(variant), "{err:?}");
        assert!(err.to_string().contains(arg), "{err}");
    }
    assert!(NoiseLevel::sigma_only(&Tensor::from_slice(&[0i64, 1])).is_err());
}

#[test]
fn metadata_checks_skip_only_the_value_checks() -> Result<()> {
    single_thread();
    let layout = physcon::BatchLayout::from_counts(&[2], tch::Device::Cpu)?;
    let nan = Tensor::full([2, 3], f64::NAN, (Kind::Double, tch::Device::Cpu));
    let ok = Tensor::zeros([2, 3], (Kind::Double, tch::Device::Cpu));
    let full = DenoisingLoss::new();
    let cheap = DenoisingLoss::new().checks(Checks::Metadata);
    assert!(matches!(
        full.forward(&nan, &ok, &layout),
        Err(Error::NonFinite { arg: "eps_hat" })
    ));
    assert!(cheap.forward(&nan, &ok, &layout)?.double_value(&[]).is_nan());
    assert!(matches!(
        cheap.forward(&ok.narrow(0, 0, 1), &ok, &layout),
        Err(Error::Shape { arg: "eps_hat", .. })
    ));
    let per = ForceLoss::new()
        .checks(Checks::Metadata)
        .forward_per_molecule(&ok, &ok, None, &layout)?;
    assert!(per.weighted_mean(&Tensor::from_slice(&[-1.0f64])).is_ok());
    Ok(())
}

/// The finiteness checks of one call settle together, naming the first bad input.
#[test]
fn one_host_read_still_names_the_argument() {
    single_thread();
    let layout = physcon::BatchLayout::from_counts(&[2], tch::Device::Cpu).unwrap();
    let ok = Tensor::zeros([2, 3], (Kind::Double, tch::Device::Cpu));
    let inf = Tensor::full([2, 3], f64::INFINITY, (Kind::Double, tch::Device::Cpu));
    let loss = DenoisingLoss::new();
    assert!(matches!(
        loss.forward(&ok, &inf, &layout),
        Err(Error::NonFinite { arg: "eps" })
    ));
    assert!(matches!(
        loss.forward(&inf, &inf, &layout),
        Err(Error::NonFinite { arg: "eps_hat" })
    ));
    assert!(loss.forward(&ok, &ok, &layout).is_ok());
}
