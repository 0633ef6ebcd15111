//! Physics: the losses vanish where the laws hold and not elsewhere, match
//! closed forms on analytic energies (second order included), and are
//! invariant to rotation, translation, atom permutation and molecule order.

mod common;

use common::{raw_case, rotation, seeded, shuffled, single_thread, Morse};
use physcon::diffusion::{q_sample_with, NoiseSchedule};
use physcon::losses::{
    DenoisingLoss, EnergyDescentLoss, EnergyLoss, EnergyMetric, ForceLoss, Forces, GradientFlow,
    ScoreConsistency, StationarityLoss,
};
use physcon::testing::{PairEnergy, PairPotential};
use physcon::{BatchLayout, EnergyModel, Result};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

const POTENTIALS: [PairPotential; 3] = [
    PairPotential::Harmonic { k: 3.0, r0: 1.1 },
    PairPotential::Morse {
        d: 4.5,
        a: 1.9,
        r0: 0.95,
    },
    PairPotential::LennardJones {
        epsilon: 0.4,
        sigma: 1.3,
    },
];

fn diatomic(r: f64, axis: [f64; 3]) -> Tensor {
    let norm = axis.iter().map(|a| a * a).sum::<f64>().sqrt();
    let u: Vec<f64> = axis.iter().map(|a| a / norm * r).collect();
    Tensor::from_slice(&[0.3, -0.2, 0.1, 0.3 + u[0], -0.2 + u[1], 0.1 + u[2]]).reshape([2, 3])
}

#[test]
fn optimality_vanishes_at_the_minimum_and_only_there() -> Result<()> {
    single_thread();
    let layout = BatchLayout::from_counts(&[2], Device::Cpu)?;
    for potential in POTENTIALS {
        let energy = PairEnergy::new(potential, &layout)?;
        let loss = StationarityLoss::new();
        let at_min = loss.forward(&energy, &diatomic(potential.minimum(), [1.0, 2.0, -0.5]), &layout)?;
        assert!(at_min.double_value(&[]) < 1e-24, "{potential:?}: {at_min}");
        for factor in [0.93, 1.08, 1.3] {
            let r = potential.minimum() * factor;
            let value = loss
                .forward(&energy, &diatomic(r, [0.2, -1.0, 0.4]), &layout)?
                .double_value(&[]);
            // Two atoms, each with |dE/dr_i| = |phi'(r)|: L = phi'(r)^2.
            let expected = potential.derivatives(r)[1].powi(2);
            assert!(
                value > 0.0 && (value - expected).abs() <= 1e-10 * expected,
                "{potential:?} r={r}: {value} vs {expected}"
            );
        }
    }
    // An equilateral triangle of harmonic bonds at rest length is a minimum too.
    let layout = BatchLayout::from_counts(&[3], Device::Cpu)?;
    let energy = PairEnergy::new(PairPotential::Harmonic { k: 2.0, r0: 1.5 }, &layout)?;
    let h = 1.5 * 3f64.sqrt() / 2.0;
    let triangle = Tensor::from_slice(&[0.0, 0.0, 0.0, 1.5, 0.0, 0.0, 0.75, h, 0.0]).reshape([3, 3]);
    assert!(
        StationarityLoss::new()
            .forward(&energy, &triangle, &layout)?
            .double_value(&[])
            < 1e-24
    );
    assert!(
        StationarityLoss::new()
            .forward(&energy, &(&triangle * 1.1), &layout)?
            .double_value(&[])
            > 1e-3
    );
    Ok(())
}

#[test]
fn energy_descent_reads_as_the_per_atom_gap() -> Result<()> {
    single_thread();
    let layout = BatchLayout::from_counts(&[2], Device::Cpu)?;
    for potential in POTENTIALS {
        let energy = PairEnergy::new(potential, &layout)?;
        let (r, r_ref) = (potential.minimum() * 1.2, potential.minimum());
        let loss = EnergyDescentLoss::new();
        let value = loss.forward(
            &energy,
            &diatomic(r, [1.0, 0.0, 0.0]),
            &diatomic(r_ref, [0.0, 1.0, 0.0]),
            &layout,
        )?;
        let expected = (potential.derivatives(r)[0] - potential.derivatives(r_ref)[0]) / 2.0;
        assert!((value.double_value(&[]) - expected).abs() < 1e-12);
        let same = diatomic(r, [1.0, 0.0, 0.0]);
        assert_eq!(
            loss.forward(&energy, &same, &same, &layout)?.double_value(&[]),
            0.0
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// dL/dx_1 = 2 phi'(r) phi''(r) u for a diatomic (u the unit bond vector):
    /// the Hessian-vector product the stationarity loss's gradient needs, in closed form.
    #[test]
    fn stationarity_gradient_matches_the_closed_form(
        which in 0..3usize, factor in 0.85..1.6f64, axis in prop::array::uniform3(-1.0..1.0f64),
    ) {
        single_thread();
        prop_assume!(axis.iter().map(|a| a * a).sum::<f64>() > 1e-2);
        let potential = POTENTIALS[which];
        let layout = BatchLayout::from_counts(&[2], Device::Cpu).unwrap();
        let energy = PairEnergy::new(potential, &layout).unwrap();
        let r = potential.minimum() * factor;
        let x = diatomic(r, axis).set_requires_grad(true);
        let loss = StationarityLoss::new().forward(&energy, &x, &layout).unwrap();
        loss.backward();
        let [_, d1, d2] = potential.derivatives(r);
        let bond = x.get(0) - x.get(1);
        let u = &bond / r;
        let expected = Tensor::stack(&[&u * (2.0 * d1 * d2), &u * (-2.0 * d1 * d2)], 0);
        let scale = (2.0 * d1 * d2).abs().max(1e-12);
        let err = (x.grad().detach() - expected).abs().max().double_value(&[]);
        prop_assert!(err <= 1e-9 * scale, "{:?} r={}: error {}", potential, r, err);
    }
}

/// `E = k/2 sum_i |x_i - x_mean|^2`: forces `-k (x_i - x_mean)`.
fn harmonic_well(layout: &BatchLayout, k: f64) -> impl Fn(&Tensor) -> Result<Tensor> + '_ {
    move |pos: &Tensor| {
        let centred = layout.centre(pos)?;
        layout.sum(&(centred.square().sum_dim_intlist(1, false, Kind::Double) * (0.5 * k)))
    }
}

#[test]
fn score_consistency_vanishes_when_the_score_is_force_over_kt() -> Result<()> {
    single_thread();
    let layout = BatchLayout::from_counts(&[3, 4], Device::Cpu)?;
    let (k, kt) = (2.0, 0.05);
    let energy = harmonic_well(&layout, k);
    let schedule = NoiseSchedule::cosine(1000)?;
    let t = Tensor::from_slice(&[5i64, 40]);
    let clean = Tensor::from_slice(&[
        0.1, 0.2, 0.3, 1.0, -0.4, 0.2, -0.7, 0.9, 0.0, 0.0, 0.0, 0.5, 1.2, 0.3, -0.1, 0.4, -1.0, 0.8, -0.6,
        0.2, 0.0,
    ])
    .reshape([7, 3]);
    let eps = Tensor::from_slice(&[0.5f64; 21])
        .reshape([7, 3])
        .cumsum(0, Kind::Double)
        .sin();
    let noised = q_sample_with(&schedule, &clean, &t, &eps, &layout)?;
    // eps* = -(s/a) F / kT = (s/a) (k/kT) (x - x_mean), written out by hand.
    let ratio = noised.level().sigma() / noised.level().alpha() * (k / kt);
    let eps_star = layout.centre(&clean)? * layout.expand(&ratio)?.unsqueeze(1);
    let forces = Forces::Model {
        energy: &energy,
        at: noised.x0(),
    };
    let loss = ScoreConsistency::new(kt)?;
    let zero = loss.forward(&eps_star, noised.level(), forces, &layout)?;
    assert!(zero.double_value(&[]) < 1e-24, "{zero}");
    let off = ScoreConsistency::new(2.0 * kt)?.forward(&eps_star, noised.level(), forces, &layout)?;
    // Halving the target: L = mean_b (1/n_b) sum_i |eps*_i / 2|^2.
    let expected = layout
        .mean(&(&eps_star / 2.0).square().sum_dim_intlist(1, false, Kind::Double))?
        .mean(Kind::Double);
    assert!((off.double_value(&[]) - expected.double_value(&[])).abs() < 1e-12);
    Ok(())
}

/// For a harmonic well the Boltzmann distribution is Gaussian and the noised
/// score is known: `eps_true(R_t) = s R_t / (a^2 kT/k + s^2)`. Score
/// consistency, an unbiased single-sample target, must be minimised (in
/// expectation) by that exact noise predictor: the best scale `c` of
/// `c * eps_true` is 1.
#[test]
fn score_consistency_is_minimised_by_the_true_noised_score() -> Result<()> {
    let _rng = seeded(7);
    let (k, kt, atoms, molecules) = (4.0, 0.1, 6i64, 4000i64);
    let layout = BatchLayout::from_counts(&vec![atoms; molecules as usize], Device::Cpu)?;
    let energy = harmonic_well(&layout, k);
    let sigma0 = (kt / k).sqrt();
    let clean = layout.centre(&Tensor::randn(
        [atoms * molecules, 3],
        (Kind::Double, Device::Cpu),
    ))? * sigma0;
    let schedule = NoiseSchedule::cosine(1000)?;
    for step in [20i64, 100, 300] {
        let t = Tensor::full([molecules], step, (Kind::Int64, Device::Cpu));
        let eps = layout.centre(&Tensor::randn(
            [atoms * molecules, 3],
            (Kind::Double, Device::Cpu),
        ))?;
        let noised = q_sample_with(&schedule, &clean, &t, &eps, &layout)?;
        let (a, s) = (schedule.alpha(step)?, schedule.sigma(step)?);
        let eps_true = noised.x_t() * (s / (a * a * sigma0 * sigma0 + s * s));
        let value_at = |c: &Tensor| -> Result<f64> {
            let loss = ScoreConsistency::new(kt)?.forward(
                &(&eps_true * c),
                noised.level(),
                Forces::Model {
                    energy: &energy,
                    at: noised.x0(),
                },
                &layout,
            )?;
            Ok(loss.double_value(&[]))
        };
        // The loss is quadratic in c: its minimiser from three values.
        let (l0, l1, l2) = (
            value_at(&Tensor::from(0.0))?,
            value_at(&Tensor::from(1.0))?,
            value_at(&Tensor::from(2.0))?,
        );
        let best = (l0 - l2) / (2.0 * (l0 - 2.0 * l1 + l2)) + 1.0;
        assert!((best - 1.0).abs() < 0.05, "t={step}: best scale {best}");
    }
    Ok(())
}

/// Every input of the losses for one batch.
struct Fields {
    pos: Tensor,
    u: Tensor,
    v: Tensor,
    p: Tensor,
    q: Tensor,
    mask: Tensor,
    t: Tensor,
}

fn loss_values(layout: &BatchLayout, f: &Fields) -> Result<Vec<f64>> {
    let energy = Morse::new(layout, &Morse::default_params());
    let schedule = NoiseSchedule::cosine(1000)?;
    let noised = q_sample_with(&schedule, &f.pos, &f.t, &f.u, layout)?;
    let generated = &f.pos + &f.v * 0.1;
    let losses = [
        EnergyLoss::new(EnergyMetric::Mse)
            .unwrap()
            .per_atom(true)
            .forward(&f.p, &f.q, Some(&f.mask), layout)?,
        ForceLoss::new().forward(&f.u, &f.v, Some(&f.mask), layout)?,
        DenoisingLoss::new().forward(&f.u, &f.v, layout)?,
        StationarityLoss::new().forward(&energy, &generated, layout)?,
        EnergyDescentLoss::new().forward(&energy, &generated, &f.pos, layout)?,
        ScoreConsistency::new(0.4)?.forward(
            &f.v,
            noised.level(),
            Forces::Model {
                energy: &energy,
                at: noised.x0(),
            },
            layout,
        )?,
        ScoreConsistency::new(0.4)?.flow(GradientFlow::Both).forward(
            &f.v,
            noised.level(),
            Forces::Labels(&f.u),
            layout,
        )?,
    ];
    Ok(losses.iter().map(|l| l.double_value(&[])).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_loss_is_invariant(
        raw in raw_case(10),
        quat in prop::array::uniform4(-1.0..1.0f64),
        shift in prop::array::uniform3(-5.0..5.0f64),
        seed in any::<u64>(),
        step in 1..400i64,
    ) {
        single_thread();
        prop_assume!(quat.iter().map(|x| x * x).sum::<f64>() > 1e-2);
        let c = raw.build();
        let (n, b) = (c.layout.num_atoms(), c.layout.num_molecules());
        // Atoms move anywhere in the batch (within-molecule order included); molecules are relabelled.
        let (atom_perm, mol_perm) = (shuffled(n, seed), shuffled(b, seed ^ 0x5eed));
        let t = Tensor::full([b], step, (Kind::Int64, Device::Cpu)) + Tensor::arange(b, (Kind::Int64, Device::Cpu));
        let before = Fields {
            pos: c.pos.shallow_clone(), u: c.u.shallow_clone(), v: c.v.shallow_clone(),
            p: c.p.shallow_clone(), q: c.q.shallow_clone(), mask: c.mask.shallow_clone(), t,
        };
        let rotation = rotation(quat[0], quat[1], quat[2], quat[3]);
        let ap = Tensor::from_slice(&atom_perm);
        let rot = |x: &Tensor| x.matmul(&rotation.tr()).index_select(0, &ap);
        // New label of molecule m is mol_perm[m]; molecule-level values move with it.
        let mp = Tensor::from_slice(&mol_perm);
        let inverse = mp.argsort(0, false);
        let layout = BatchLayout::new(&mp.index_select(0, &c.layout.batch().index_select(0, &ap)), b).unwrap();
        let mol = |x: &Tensor| x.index_select(0, &inverse);
        let after = Fields {
            pos: rot(&before.pos) + Tensor::from_slice(&shift), u: rot(&before.u), v: rot(&before.v),
            p: mol(&before.p), q: mol(&before.q), mask: mol(&before.mask), t: mol(&before.t),
        };
        let (before, after) = (loss_values(&c.layout, &before).unwrap(), loss_values(&layout, &after).unwrap());
        for (k, (x, y)) in before.iter().zip(&after).enumerate() {
            prop_assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "loss {}: {} vs {}", k, x, y);
        }
    }
}

#[test]
fn energy_model_fixture_is_sane() -> Result<()> {
    // Guards the fixture the invariance test relies on: energies differ between molecules.
    let layout = BatchLayout::from_counts(&[2, 2], Device::Cpu)?;
    let pos =
        Tensor::from_slice(&[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0]).reshape([4, 3]);
    let e = Morse::new(&layout, &Morse::default_params()).energy(&pos)?;
    assert!((e.double_value(&[0]) - e.double_value(&[1])).abs() > 1e-3);
    Ok(())
}
