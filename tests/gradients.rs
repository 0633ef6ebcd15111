//! Autograd gradients of every loss against central finite differences
//! (torch.autograd.gradcheck's tolerances: eps 1e-6, atol 1e-5, rtol 1e-3),
//! on random molecules in shuffled ragged layouts, for every differentiable
//! input the loss's gradient flow lets through.

mod common;

use common::{raw_case, single_thread, Morse};
use physcon::diffusion::{q_sample_with, NoiseSchedule};
use physcon::losses::{
    DenoisingLoss, EnergyDescentLoss, EnergyLoss, EnergyMetric, ForceLoss, Forces, GradientFlow,
    ScoreConsistency, StationarityLoss,
};
use physcon::testing::{gradcheck, GradcheckOptions};
use physcon::{EnergyModel, Result};
use proptest::prelude::*;
use tch::Tensor;

fn check(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
) -> std::result::Result<(), TestCaseError> {
    let report =
        gradcheck(f, inputs, GradcheckOptions::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(report.passed(), "{}", report);
    prop_assert!(report.checked > 0);
    Ok(())
}

const FLOWS: [GradientFlow; 3] = [
    GradientFlow::ToStructure,
    GradientFlow::Both,
    GradientFlow::ToEnergy,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn energy_loss_gradients(raw in raw_case(12), metric in 0..3usize, per_atom: bool, masked: bool) {
        single_thread();
        let c = raw.build();
        let metric = [EnergyMetric::L1, EnergyMetric::Mse, EnergyMetric::Huber { delta: 0.5 }][metric];
        let loss = EnergyLoss::new(metric).unwrap().per_atom(per_atom);
        let mask = masked.then(|| c.mask.shallow_clone());
        check(|x| loss.forward(&x[0], &c.q, mask.as_ref(), &c.layout), &[c.p.shallow_clone()])?;
        // Per-molecule weights: the weighted mean of the per-molecule values.
        let weights = c.q.abs() + 0.1;
        check(
            |x| loss.forward_per_molecule(&x[0], &c.q, mask.as_ref(), &c.layout)?.weighted_mean(&weights),
            &[c.p.shallow_clone()],
        )?;
    }

    #[test]
    fn force_loss_gradients(raw in raw_case(12), masked: bool) {
        single_thread();
        let c = raw.build();
        let mask = masked.then(|| c.mask.shallow_clone());
        check(|x| ForceLoss::new().forward(&x[0], &c.v, mask.as_ref(), &c.layout), &[c.u.shallow_clone()])?;
    }

    #[test]
    fn denoising_loss_gradients(raw in raw_case(12)) {
        single_thread();
        let c = raw.build();
        // The noise is the target, a constant: only the prediction is differentiated.
        check(|x| DenoisingLoss::new().forward(&x[0], &c.v, &c.layout), &[c.u.shallow_clone()])?;
    }

    /// The stationarity loss's gradient in the structure needs the Hessian of E:
    /// this is the second-order check against finite differences of the loss.
    #[test]
    fn optimality_gradients(raw in raw_case(8), descent: bool, flow in 0..3usize) {
        single_thread();
        let c = raw.build();
        let flow = FLOWS[flow];
        let structure = &c.pos + &c.u * 0.1;
        let reference = descent.then(|| c.pos.shallow_clone());
        let weights = c.q.abs() + 0.1;
        let params = Morse::default_params();
        // EnergyDescent stops the gradient of E(R_ref), which finite differences in the
        // parameters would see: add the stopped term back so both differentiate E(R_hat) alone.
        let run = |structure: &Tensor, params: &Tensor| -> Result<Tensor> {
            let model = Morse::new(&c.layout, params);
            // Through `forward` and through the weighted per-molecule values (the
            // per-molecule frozen-teacher surrogate), in one sum.
            let (value, per_molecule) = match &reference {
                None => {
                    let loss = StationarityLoss::new().flow(flow);
                    (loss.forward(&model, structure, &c.layout)?, loss.forward_per_molecule(&model, structure, &c.layout)?)
                }
                Some(r) => {
                    let loss = EnergyDescentLoss::new().flow(flow);
                    (loss.forward(&model, structure, r, &c.layout)?, loss.forward_per_molecule(&model, structure, r, &c.layout)?)
                }
            };
            let value = value + per_molecule.weighted_mean(&weights)?;
            match &reference {
                None => Ok(value),
                Some(r) => {
                    let per_atom = model.energy(r)?.detach() / c.layout.counts().to_kind(tch::Kind::Double);
                    let stopped = per_atom.mean(tch::Kind::Double) + (&per_atom * &weights).sum(tch::Kind::Double) / weights.sum(tch::Kind::Double);
                    Ok(value + stopped)
                }
            }
        };
        match flow {
            GradientFlow::ToStructure => check(|x| run(&x[0], &params), &[structure])?,
            GradientFlow::ToEnergy => check(|x| run(&structure, &x[0]), &[params])?,
            GradientFlow::Both => check(|x| run(&x[0], &x[1]), &[structure, params])?,
        }
    }

    #[test]
    fn score_consistency_gradients(raw in raw_case(8), flow in 0..3usize, labels: bool, t in 1..200i64) {
        single_thread();
        let c = raw.build();
        let flow = FLOWS[flow];
        prop_assume!(!(labels && flow == GradientFlow::ToEnergy));
        let schedule = NoiseSchedule::cosine(1000).unwrap();
        let t = Tensor::full([c.layout.num_molecules()], t, (tch::Kind::Int64, tch::Device::Cpu));
        let loss = ScoreConsistency::new(0.3).unwrap().flow(flow);
        let params = Morse::default_params();
        let run = |eps_hat: &Tensor, clean: &Tensor, params: &Tensor| {
            let noised = q_sample_with(&schedule, clean, &t, &c.u, &c.layout)?;
            let model = Morse::new(&c.layout, params);
            let forces = if labels { Forces::Labels(&c.v) } else { Forces::Model { energy: &model, at: noised.x0() } };
            loss.forward(eps_hat, noised.level(), forces, &c.layout)
        };
        let eps_hat = c.v.shallow_clone();
        match (flow, labels) {
            (GradientFlow::ToStructure, _) | (GradientFlow::Both, true) => {
                check(|x| run(&x[0], &c.pos, &params), &[eps_hat])?
            }
            // The clean structure is a constant under ToEnergy: only the energy's parameters move.
            (GradientFlow::ToEnergy, _) => check(|x| run(&eps_hat, &c.pos, &x[0]), &[params])?,
            (GradientFlow::Both, false) => {
                check(|x| run(&x[0], &x[1], &x[2]), &[eps_hat, c.pos.shallow_clone(), params])?
            }
        }
    }
}

/// The checker itself must catch wrong gradients, or every check above is empty.
#[test]
fn gradcheck_rejects_a_wrong_first_derivative() -> Result<()> {
    single_thread();
    let x = Tensor::from_slice(&[0.4f64, -1.1, 2.0]);
    // Autograd sees x * c with c constant: gradient x instead of 2x.
    let wrong = |xs: &[Tensor]| -> Result<Tensor> { Ok((&xs[0] * xs[0].detach()).sum(tch::Kind::Double)) };
    let report = gradcheck(wrong, &[x], GradcheckOptions::default())?;
    assert_eq!(report.failures, 3, "{report}");
    Ok(())
}

#[test]
fn gradgradcheck_rejects_a_wrong_second_derivative() -> Result<()> {
    single_thread();
    let x = Tensor::from_slice(&[0.4f64, -1.1, 2.0]);
    // x^3 with a first derivative that is right but has no graph: the frozen-surrogate shape.
    let cube = |xs: &[Tensor]| -> Result<Tensor> {
        let (x, xd) = (&xs[0], xs[0].detach());
        let link = (xd.square() * 3.0 * (x - &xd)).sum(tch::Kind::Double);
        Ok(xd.pow_tensor_scalar(3).sum(tch::Kind::Double) + link)
    };
    let options = GradcheckOptions::default();
    assert!(gradcheck(cube, &[x.shallow_clone()], options)?.passed());
    assert!(!physcon::testing::gradgradcheck(cube, &[x], options)?.passed());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// The energy fixtures are twice differentiable as autograd builds them.
    #[test]
    fn morse_energy_second_derivatives(raw in raw_case(6)) {
        single_thread();
        let c = raw.build();
        let f = |x: &[Tensor]| Ok(Morse::new(&c.layout, &x[1]).energy(&x[0])?.sum(tch::Kind::Double));
        let report = physcon::testing::gradgradcheck(f, &[c.pos.shallow_clone(), Morse::default_params()], GradcheckOptions::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(report.passed(), "{}", report);
    }
}
