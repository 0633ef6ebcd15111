//! Coordinate diffusion: CoM-free noise, forward-process moments, schedules,
//! noise levels, conversions and the DDPM/DDIM samplers.

mod common;

use std::cell::RefCell;

use physcon::diffusion::{
    com_free_noise, eps_from_x0, eps_to_score, q_sample, q_sample_with, sample, score_to_eps, x0_from_eps,
    NoiseSchedule, Sampler, SamplerConfig, ScheduleKind,
};
use physcon::{BatchLayout, Error, Result};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

use common::{
    batch_from_counts, max_abs_diff, num_molecules, seeded, shuffled_batch_vector, shuffled_layout,
    single_thread, vals,
};

/// A batch vector with every molecule present, atoms in random order.
fn shuffled_batch() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(1i64..=6, 1..=5)
        .prop_flat_map(|counts| Just(batch_from_counts(&counts)).prop_shuffle())
}

/// Per-molecule centroids computed on the host.
fn host_centroids(x: &Tensor, batch: &[i64]) -> Vec<[f64; 3]> {
    let v = vals(x);
    let b = num_molecules(batch) as usize;
    let mut sum = vec![[0.0; 3]; b];
    let mut count = vec![0.0; b];
    for (i, &m) in batch.iter().enumerate() {
        for c in 0..3 {
            sum[m as usize][c] += v[3 * i + c];
        }
        count[m as usize] += 1.0;
    }
    sum.iter()
        .zip(&count)
        .map(|(s, n)| [s[0] / n, s[1] / n, s[2] / n])
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn com_free_noise_has_zero_centroid_per_molecule(batch in shuffled_batch(), seed in 0i64..1000) {
        let _rng = seeded(seed);
        let layout = BatchLayout::new(&Tensor::from_slice(&batch), num_molecules(&batch)).unwrap();
        for kind in [Kind::Double, Kind::Float] {
            let eps = com_free_noise(&layout, kind).unwrap();
            prop_assert_eq!(eps.size(), vec![batch.len() as i64, 3]);
            prop_assert_eq!(eps.kind(), kind);
            let tol = if kind == Kind::Double { 1e-12 } else { 1e-5 };
            for c in host_centroids(&eps, &batch) {
                prop_assert!(c.iter().all(|x| x.abs() < tol), "centroid {:?}", c);
            }
            // Not trivially zero: any molecule with two atoms has non-zero noise.
            if batch.len() as i64 > num_molecules(&batch) {
                prop_assert!(vals(&eps).iter().any(|x| x.abs() > 1e-3));
            }
        }
    }
}

#[test]
fn com_free_noise_rejects_integer_kind() -> Result<()> {
    single_thread();
    let layout = BatchLayout::from_counts(&[2], Device::Cpu)?;
    assert!(matches!(
        com_free_noise(&layout, Kind::Int64),
        Err(Error::Dtype { arg: "kind", .. })
    ));
    Ok(())
}

/// Empirical moments of `q_sample` over many identical molecules and draws.
///
/// For each (molecule type, atom, component) group with `S` samples, the
/// mean's standard error is `sqrt(var / S)` and, for normal data, the
/// variance's is `var sqrt(2 / (S - 1))`, the covariance's
/// `sqrt((var_x var_y + cov^2) / S)`. Every check allows 5 standard errors.
#[test]
fn q_sample_moments_match_schedule() -> Result<()> {
    let _rng = seeded(20240611);
    let schedule = NoiseSchedule::cosine(1000)?;
    // (atoms, t) of each molecule type; molecule m has type m % 4.
    let types: [(usize, i64); 4] = [(1, 5), (2, 40), (3, 300), (5, 900)];
    let copies = 50usize;
    let draws = 200usize;
    let b = types.len() * copies;
    let counts: Vec<i64> = (0..b).map(|m| types[m % types.len()].0 as i64).collect();
    let batch = shuffled_batch_vector(&counts, 0x9e37_79b9);
    let layout = BatchLayout::new(&Tensor::from_slice(&batch), b as i64)?;
    // The local index of each atom within its molecule.
    let mut seen = vec![0usize; b];
    let local: Vec<usize> = batch
        .iter()
        .map(|&m| {
            seen[m as usize] += 1;
            seen[m as usize] - 1
        })
        .collect();
    let template =
        |ty: usize, k: usize, c: usize| ((7 * ty + 3 * k + c) as f64 * 0.37).sin() * 1.5 + c as f64;
    let mut x0 = Vec::with_capacity(batch.len() * 3);
    for (i, &m) in batch.iter().enumerate() {
        for c in 0..3 {
            x0.push(template(m as usize % types.len(), local[i], c));
        }
    }
    let x0 = Tensor::from_slice(&x0).reshape([-1, 3]);
    let t: Vec<i64> = (0..b).map(|m| types[m % types.len()].1).collect();
    let t = Tensor::from_slice(&t);

    // Sums per (type, local atom, component), plus the cross moment of atoms 0 and 1 (x) of type 3.
    let mut sum = vec![vec![[0.0f64; 3]; 5]; types.len()];
    let mut sumsq = vec![vec![[0.0f64; 3]; 5]; types.len()];
    let mut cross = 0.0;
    let first_of = |m: usize, k: usize| (0..batch.len()).find(|&i| batch[i] as usize == m && local[i] == k);
    let pair: Vec<(usize, usize)> = (0..b)
        .filter(|m| m % types.len() == 3)
        .map(|m| (first_of(m, 0).unwrap_or(0), first_of(m, 1).unwrap_or(0)))
        .collect();
    for _ in 0..draws {
        let noised = q_sample(&schedule, &x0, &t, &layout)?;
        let v = vals(noised.x_t());
        for (i, &m) in batch.iter().enumerate() {
            let ty = m as usize % types.len();
            for c in 0..3 {
                sum[ty][local[i]][c] += v[3 * i + c];
                sumsq[ty][local[i]][c] += v[3 * i + c].powi(2);
            }
        }
        cross += pair.iter().map(|&(i, j)| v[3 * i] * v[3 * j]).sum::<f64>();
    }
    let samples = (copies * draws) as f64;
    for (ty, &(n, step)) in types.iter().enumerate() {
        let a = schedule.alpha(step)?;
        let s2 = 1.0 - schedule.alpha_bar(step)?;
        let var = s2 * (1.0 - 1.0 / n as f64);
        for c in 0..3 {
            let centroid = (0..n).map(|k| template(ty, k, c)).sum::<f64>() / n as f64;
            for k in 0..n {
                let expected_mean = a * (template(ty, k, c) - centroid);
                let mean = sum[ty][k][c] / samples;
                let emp_var = (sumsq[ty][k][c] - samples * mean * mean) / (samples - 1.0);
                if n == 1 {
                    // A lone atom is its own centroid: no noise at all.
                    assert!(
                        mean.abs() < 1e-12 && emp_var.abs() < 1e-20,
                        "type {ty}: {mean} {emp_var}"
                    );
                    continue;
                }
                let se_mean = (var / samples).sqrt();
                assert!(
                    (mean - expected_mean).abs() < 5.0 * se_mean,
                    "type {ty} atom {k} comp {c}: mean {mean}, expected {expected_mean} (se {se_mean})"
                );
                let se_var = var * (2.0 / (samples - 1.0)).sqrt();
                assert!(
                    (emp_var - var).abs() < 5.0 * se_var,
                    "type {ty} atom {k} comp {c}: variance {emp_var}, expected {var} (se {se_var})"
                );
            }
        }
    }
    // Atoms of one molecule are anti-correlated by the projection: cov = -s^2 / n.
    let (n, step) = types[3];
    let s2 = 1.0 - schedule.alpha_bar(step)?;
    let var = s2 * (1.0 - 1.0 / n as f64);
    let cov_expected = -s2 / n as f64;
    let mean0 = sum[3][0][0] / samples;
    let mean1 = sum[3][1][0] / samples;
    let cov = (cross - samples * mean0 * mean1) / (samples - 1.0);
    let se_cov = ((var * var + cov_expected * cov_expected) / samples).sqrt();
    assert!(
        (cov - cov_expected).abs() < 5.0 * se_cov,
        "covariance {cov}, expected {cov_expected} (se {se_cov})"
    );
    Ok(())
}

#[test]
fn q_sample_is_the_forward_formula() -> Result<()> {
    let _rng = seeded(3);
    let schedule = NoiseSchedule::linear(100, 1e-4, 0.02)?;
    let layout = shuffled_layout(&[3, 1, 4], 11)?;
    let batch = vals(&layout.batch().to_kind(Kind::Double));
    let batch: Vec<i64> = batch.iter().map(|&m| m as i64).collect();
    let x0 = Tensor::randn([8, 3], (Kind::Double, Device::Cpu)) + 2.0;
    let t = Tensor::from_slice(&[7i64, 50, 100]);
    let noised = q_sample(&schedule, &x0, &t, &layout)?;
    for c in host_centroids(noised.x0(), &batch)
        .iter()
        .chain(&host_centroids(noised.eps(), &batch))
    {
        assert!(c.iter().all(|x| x.abs() < 1e-12), "{c:?}");
    }
    // x0() is x0 minus its centroid.
    let centroids = host_centroids(&x0, &batch);
    let (xs, cs) = (vals(&x0), vals(noised.x0()));
    for (i, &m) in batch.iter().enumerate() {
        for c in 0..3 {
            assert!((xs[3 * i + c] - centroids[m as usize][c] - cs[3 * i + c]).abs() < 1e-12);
        }
    }
    let (x_t, eps) = (vals(noised.x_t()), vals(noised.eps()));
    let steps = [7, 50, 100];
    for (i, &m) in batch.iter().enumerate() {
        let step = steps[m as usize];
        let (a, s) = (schedule.alpha(step)?, schedule.sigma(step)?);
        for c in 0..3 {
            let k = 3 * i + c;
            assert!((x_t[k] - (a * cs[k] + s * eps[k])).abs() < 1e-12);
        }
    }
    assert_eq!(vals(noised.level().t().unwrap()), vec![7.0, 50.0, 100.0]);
    // q_sample_with projects the given noise.
    let raw = Tensor::ones([8, 3], (Kind::Double, Device::Cpu));
    let given = q_sample_with(&schedule, &x0, &t, &raw, &layout)?;
    assert!(vals(given.eps()).iter().all(|x| x.abs() < 1e-12));
    let given_x_t = vals(given.x_t());
    for (i, &m) in batch.iter().enumerate() {
        let a = schedule.alpha(steps[m as usize])?;
        for c in 0..3 {
            assert!((given_x_t[3 * i + c] - a * cs[3 * i + c]).abs() < 1e-12);
        }
    }
    // One t per molecule.
    assert!(matches!(
        q_sample(&schedule, &x0, &Tensor::from_slice(&[1i64, 2]), &layout),
        Err(Error::Shape { arg: "t", .. })
    ));
    assert!(matches!(
        q_sample(&schedule, &x0.narrow(0, 0, 7), &t, &layout),
        Err(Error::Shape { arg: "x0", .. })
    ));
    Ok(())
}

fn cosine_f(t: f64, big_t: f64, s: f64) -> f64 {
    ((t / big_t + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
        .cos()
        .powi(2)
}

#[test]
fn cosine_schedule_shape() -> Result<()> {
    single_thread();
    let schedule = NoiseSchedule::cosine(1000)?;
    assert_eq!(schedule.steps(), 1000);
    assert_eq!(schedule.kind(), ScheduleKind::Cosine { s: 0.008 });
    assert_eq!(schedule.alpha_bar(0)?, 1.0);
    let abar: Vec<f64> = (0..=1000).map(|t| schedule.alpha_bar(t)).collect::<Result<_>>()?;
    for t in 1..=1000 {
        assert!(abar[t] < abar[t - 1], "not strictly decreasing at {t}");
        let beta = 1.0 - abar[t] / abar[t - 1];
        assert!(beta > 0.0 && beta <= 0.999 + 1e-12, "beta_{t} = {beta}");
    }
    assert!(abar[1000] < 1e-6 && abar[1000] > 0.0, "abar(T) = {}", abar[1000]);
    assert!(abar[1] > 0.9999);
    // Unclipped steps follow the closed form f(t) / f(0).
    for t in [1usize, 10, 250, 500, 900] {
        let closed = cosine_f(t as f64, 1000.0, 0.008) / cosine_f(0.0, 1000.0, 0.008);
        assert!((abar[t] - closed).abs() < 1e-12 * closed.max(1e-3), "t = {t}");
    }
    // The last beta is the clipped one.
    assert!((1.0 - abar[1000] / abar[999] - 0.999).abs() < 1e-12);
    // alpha and sigma are the square roots.
    assert!((schedule.alpha(300)? - abar[300].sqrt()).abs() < 1e-15);
    assert!((schedule.sigma(300)? - (1.0 - abar[300]).sqrt()).abs() < 1e-15);
    assert!((schedule.alpha(300)?.powi(2) + schedule.sigma(300)?.powi(2) - 1.0).abs() < 1e-12);
    Ok(())
}

#[test]
fn linear_schedule_by_hand() -> Result<()> {
    single_thread();
    let schedule = NoiseSchedule::linear(3, 0.1, 0.3)?;
    assert_eq!(schedule.steps(), 3);
    let expected = [1.0, 0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.7];
    for (t, e) in expected.iter().enumerate() {
        assert!((schedule.alpha_bar(t as i64)? - e).abs() < 1e-15, "t = {t}");
    }
    assert!((schedule.alpha_bar(3)? - 0.504).abs() < 1e-15);
    assert!((schedule.alpha(2)? - 0.72f64.sqrt()).abs() < 1e-15);
    assert!((schedule.sigma(3)? - 0.496f64.sqrt()).abs() < 1e-15);
    let one = NoiseSchedule::linear(1, 0.25, 0.25)?;
    assert!((one.alpha_bar(1)? - 0.75).abs() < 1e-15);
    // DDPM's default ends near abar = 4e-5.
    let ddpm = NoiseSchedule::linear(1000, 1e-4, 0.02)?;
    let direct: f64 = (0..1000)
        .map(|k| 1.0 - (1e-4 + k as f64 / 999.0 * (0.02 - 1e-4)))
        .product();
    assert!((ddpm.alpha_bar(1000)? - direct).abs() < 1e-15);
    Ok(())
}

#[test]
fn schedule_rejects_bad_arguments() {
    single_thread();
    let invalid = |r: Result<NoiseSchedule>, name: &str| match r {
        Err(Error::InvalidArgument { arg, .. }) => assert_eq!(arg, name),
        other => panic!("expected InvalidArgument({name}), got {other:?}"),
    };
    invalid(NoiseSchedule::cosine(0), "steps");
    invalid(NoiseSchedule::cosine(-5), "steps");
    invalid(NoiseSchedule::linear(0, 0.1, 0.2), "steps");
    invalid(NoiseSchedule::linear(10, 0.2, 0.1), "beta");
    invalid(NoiseSchedule::linear(10, 0.1, 1.0), "beta");
    invalid(NoiseSchedule::linear(10, 0.1, 1.5), "beta");
    invalid(NoiseSchedule::linear(10, 0.0, 0.1), "beta");
    invalid(NoiseSchedule::linear(10, f64::NAN, 0.1), "beta");
    invalid(NoiseSchedule::new(ScheduleKind::Cosine { s: -0.1 }, 10), "s");
    invalid(
        NoiseSchedule::new(ScheduleKind::Cosine { s: f64::INFINITY }, 10),
        "s",
    );
    let schedule = NoiseSchedule::cosine(10).expect("valid");
    for t in [-1i64, 11] {
        assert!(matches!(
            schedule.alpha_bar(t),
            Err(Error::IndexOutOfRange { arg: "t", index, bound: 11 }) if index == t
        ));
    }
    assert!(schedule.sigma(10).is_ok() && schedule.alpha(0).is_ok());
}

#[test]
fn level_checks_t() -> Result<()> {
    single_thread();
    let schedule = NoiseSchedule::cosine(100)?;
    let level = schedule.level(&Tensor::from_slice(&[1i64, 50, 100]), Kind::Float)?;
    assert_eq!(level.alpha().kind(), Kind::Float);
    let alpha = vals(level.alpha());
    let sigma = vals(level.sigma());
    for (k, t) in [1, 50, 100].into_iter().enumerate() {
        assert!((alpha[k] - schedule.alpha(t)?).abs() < 1e-6);
        assert!((sigma[k] - schedule.sigma(t)?).abs() < 1e-6);
    }
    let oob = |t: &[i64], bad: i64| {
        assert!(matches!(
            schedule.level(&Tensor::from_slice(t), Kind::Double),
            Err(Error::IndexOutOfRange { arg: "t", index, bound: 101 }) if index == bad
        ));
    };
    oob(&[0], 0);
    oob(&[5, 0, 7], 0);
    oob(&[101], 101);
    oob(&[3, 101], 101);
    oob(&[-4, 3], -4);
    for bad_kind in [Tensor::from_slice(&[3.0f64]), Tensor::from_slice(&[3i32])] {
        assert!(matches!(
            schedule.level(&bad_kind, Kind::Double),
            Err(Error::Dtype { arg: "t", .. })
        ));
    }
    for bad_shape in [
        Tensor::from(3i64),
        Tensor::ones([2, 2], (Kind::Int64, Device::Cpu)),
        Tensor::from_slice::<i64>(&[]),
    ] {
        assert!(matches!(
            schedule.level(&bad_shape, Kind::Double),
            Err(Error::Shape { arg: "t", .. })
        ));
    }
    assert!(matches!(
        schedule.level(&Tensor::from_slice(&[3i64]), Kind::Int64),
        Err(Error::Dtype { arg: "kind", .. })
    ));
    Ok(())
}

#[test]
fn sample_t_stays_in_range() -> Result<()> {
    let _rng = seeded(7);
    let schedule = NoiseSchedule::cosine(1000)?;
    let t = schedule.sample_t(5000, 3..=7, Device::Cpu)?;
    assert_eq!(t.kind(), Kind::Int64);
    assert_eq!(t.size(), vec![5000]);
    let ts = Vec::<i64>::try_from(&t).expect("i64");
    for v in 3..=7 {
        assert!(ts.contains(&v), "{v} never drawn");
    }
    assert!(ts.iter().all(|v| (3..=7).contains(v)));
    let edge = Vec::<i64>::try_from(&schedule.sample_t(200, 1000..=1000, Device::Cpu)?).expect("i64");
    assert!(edge.iter().all(|&v| v == 1000));
    let full = Vec::<i64>::try_from(&schedule.sample_t(2000, 1..=1000, Device::Cpu)?).expect("i64");
    assert!(full.iter().all(|v| (1..=1000).contains(v)));
    assert!(full.contains(&1) || full.iter().any(|&v| v < 5));
    #[allow(clippy::reversed_empty_ranges)]
    let bad = [(10, 0..=5), (10, 5..=3), (10, 1..=1001), (0, 1..=5), (-1, 1..=5)];
    for (n, range) in bad {
        assert!(
            matches!(
                schedule.sample_t(n, range.clone(), Device::Cpu),
                Err(Error::InvalidArgument { arg: "range", .. })
            ),
            "n = {n}, {range:?}"
        );
    }
    Ok(())
}

#[test]
fn conversions_round_trip() -> Result<()> {
    let _rng = seeded(99);
    let schedule = NoiseSchedule::cosine(1000)?;
    let layout = shuffled_layout(&[4, 2, 5], 5)?;
    let x0 = Tensor::randn([11, 3], (Kind::Double, Device::Cpu)) * 1.3 + 0.7;
    let t = Tensor::from_slice(&[1i64, 400, 999]);
    let noised = q_sample(&schedule, &x0, &t, &layout)?;
    let level = noised.level();
    let x0_back = x0_from_eps(noised.x_t(), noised.eps(), level, &layout)?;
    assert!(
        max_abs_diff(&x0_back, noised.x0()) < 1e-9,
        "{}",
        max_abs_diff(&x0_back, noised.x0())
    );
    let eps_back = eps_from_x0(noised.x_t(), noised.x0(), level, &layout)?;
    assert!(max_abs_diff(&eps_back, noised.eps()) < 1e-9);
    // And the other way round on an arbitrary estimate.
    let guess = Tensor::randn([11, 3], (Kind::Double, Device::Cpu));
    let via = x0_from_eps(
        noised.x_t(),
        &eps_from_x0(noised.x_t(), &guess, level, &layout)?,
        level,
        &layout,
    )?;
    assert!(max_abs_diff(&via, &guess) < 1e-9);
    let e = Tensor::randn([11, 3], (Kind::Double, Device::Cpu));
    let round = score_to_eps(&eps_to_score(&e, level, &layout)?, level, &layout)?;
    assert!(max_abs_diff(&round, &e) < 1e-12);
    // score = -eps / s_t by hand: one atom of a one-molecule batch at t = 1 of linear(3, .1, .3).
    let small = NoiseSchedule::linear(3, 0.1, 0.3)?;
    let one = BatchLayout::from_counts(&[1], Device::Cpu)?;
    let lvl = small.level(&Tensor::from_slice(&[1i64]), Kind::Double)?;
    let eps = Tensor::from_slice(&[0.5f64, -1.0, 2.0]).reshape([1, 3]);
    let score = vals(&eps_to_score(&eps, &lvl, &one)?);
    let s1 = 0.1f64.sqrt();
    for (got, e) in score.iter().zip([0.5, -1.0, 2.0]) {
        assert!((got - (-e / s1)).abs() < 1e-14, "{got}");
    }
    // x0_hat by hand at t = 2: (x_t - s eps) / a with abar = 0.72.
    let lvl2 = small.level(&Tensor::from_slice(&[2i64]), Kind::Double)?;
    let x_t = Tensor::from_slice(&[1.0f64, 0.0, -1.0]).reshape([1, 3]);
    let x0_hat = vals(&x0_from_eps(&x_t, &eps, &lvl2, &one)?);
    let (a, s) = (0.72f64.sqrt(), 0.28f64.sqrt());
    for ((got, xt), e) in x0_hat.iter().zip([1.0, 0.0, -1.0]).zip([0.5, -1.0, 2.0]) {
        assert!((got - (xt - s * e) / a).abs() < 1e-14);
    }
    // A level of another dtype or batch does not fit.
    let lvl_f32 = schedule.level(&t, Kind::Float)?;
    assert!(matches!(
        eps_to_score(&e, &lvl_f32, &layout),
        Err(Error::Dtype {
            arg: "level.alpha",
            ..
        })
    ));
    assert!(matches!(
        eps_to_score(&e, &lvl, &layout),
        Err(Error::Shape {
            arg: "level.alpha",
            ..
        })
    ));
    Ok(())
}

/// `eps(x_t, t) = (x_t - a_t x0) / s_t`: the denoiser that knows the answer.
fn true_eps<'a>(
    schedule: &'a NoiseSchedule,
    layout: &'a BatchLayout,
    x0: &'a Tensor,
) -> impl Fn(&Tensor, &Tensor) -> Result<Tensor> + 'a {
    move |x: &Tensor, t: &Tensor| {
        let level = schedule.level(t, x.kind())?;
        let a = layout.expand(level.alpha())?.unsqueeze(1);
        let s = layout.expand(level.sigma())?.unsqueeze(1);
        Ok((x - a * x0) / s)
    }
}

#[test]
fn ddim_eta0_is_deterministic() -> Result<()> {
    let _rng = seeded(5);
    let schedule = NoiseSchedule::cosine(1000)?;
    let layout = shuffled_layout(&[3, 4], 2)?;
    let x_start = com_free_noise(&layout, Kind::Double)?;
    let denoiser = |x: &Tensor, _t: &Tensor| -> Result<Tensor> { Ok(x.tanh() * 0.8) };
    let config = SamplerConfig::ddim(25);
    let first = sample(&denoiser, &schedule, &layout, config, &x_start)?;
    let _ = Tensor::randn([100], (Kind::Double, Device::Cpu));
    tch::manual_seed(12345);
    let second = sample(&denoiser, &schedule, &layout, config, &x_start)?;
    assert!(first.equal(&second));
    // Stochastic DDIM does depend on the generator.
    let noisy = SamplerConfig {
        sampler: Sampler::Ddim { eta: 1.0 },
        ..config
    };
    let a = sample(&denoiser, &schedule, &layout, noisy, &x_start)?;
    let b = sample(&denoiser, &schedule, &layout, noisy, &x_start)?;
    assert!(max_abs_diff(&a, &b) > 1e-3);
    Ok(())
}

#[test]
fn ddim_recovers_x0_from_true_eps() -> Result<()> {
    let _rng = seeded(17);
    let layout = shuffled_layout(&[2, 5, 3], 8)?;
    let raw = Tensor::randn([10, 3], (Kind::Double, Device::Cpu));
    let x0 = layout.centre(&raw)?;
    let x_start = com_free_noise(&layout, Kind::Double)?;
    for schedule in [
        NoiseSchedule::cosine(1000)?,
        NoiseSchedule::linear(1000, 1e-4, 0.02)?,
    ] {
        let denoiser = true_eps(&schedule, &layout, &x0);
        for steps in [1, 7, 50, 1000] {
            let out = sample(
                &denoiser,
                &schedule,
                &layout,
                SamplerConfig::ddim(steps),
                &x_start,
            )?;
            let err = max_abs_diff(&out, &x0);
            assert!(err < 1e-10, "{:?}, {steps} steps: error {err}", schedule.kind());
        }
    }
    Ok(())
}

/// Refinement (SDEdit): a chain started at step t0 from the structure noised
/// to t0 visits only steps <= t0 and, with the true noise, lands on x0.
#[test]
fn ddim_from_a_start_step_refines_to_x0() -> Result<()> {
    let _rng = seeded(19);
    let layout = shuffled_layout(&[4, 3], 2)?;
    let x0 = layout.centre(&Tensor::randn([7, 3], (Kind::Double, Device::Cpu)))?;
    let schedule = NoiseSchedule::cosine(1000)?;
    let seen = std::cell::RefCell::new(Vec::new());
    let exact = true_eps(&schedule, &layout, &x0);
    let recording = |x: &Tensor, t: &Tensor| -> Result<Tensor> {
        seen.borrow_mut().push(t.int64_value(&[0]));
        exact(x, t)
    };
    for (start, steps) in [(200i64, 10i64), (37, 37), (5, 1)] {
        seen.borrow_mut().clear();
        let t = Tensor::full([2], start, (Kind::Int64, Device::Cpu));
        let x_start = physcon::diffusion::q_sample(&schedule, &x0, &t, &layout)?;
        let config = SamplerConfig::ddim(steps).start_at(start);
        let out = sample(&recording, &schedule, &layout, config, x_start.x_t())?;
        assert!(max_abs_diff(&out, &x0) < 1e-10, "start {start}");
        let visited = seen.borrow().clone();
        assert_eq!(visited.len(), steps as usize);
        assert_eq!(visited[0], start);
        assert!(visited.windows(2).all(|w| w[0] > w[1]) && *visited.last().unwrap() >= 1);
    }
    Ok(())
}

#[test]
fn ddpm_equals_ddim_eta_one() -> Result<()> {
    let _rng = seeded(23);
    let schedule = NoiseSchedule::cosine(1000)?;
    let layout = shuffled_layout(&[3, 1, 4], 4)?;
    let x_start = com_free_noise(&layout, Kind::Double)?;
    let denoiser = |x: &Tensor, _t: &Tensor| -> Result<Tensor> { Ok(x.sin() * 0.5) };
    for steps in [1, 10, 1000] {
        tch::manual_seed(1000 + steps);
        let ddpm = sample(
            &denoiser,
            &schedule,
            &layout,
            SamplerConfig::ddpm(steps),
            &x_start,
        )?;
        tch::manual_seed(1000 + steps);
        let eta1 = SamplerConfig {
            sampler: Sampler::Ddim { eta: 1.0 },
            ..SamplerConfig::ddim(steps)
        };
        let ddim = sample(&denoiser, &schedule, &layout, eta1, &x_start)?;
        let scale = vals(&ddpm).iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let err = max_abs_diff(&ddpm, &ddim);
        assert!(err < 1e-9 * scale, "{steps} steps: {err} (scale {scale})");
        // Ancestral sampling actually adds noise (with more than one step).
        let det = sample(
            &denoiser,
            &schedule,
            &layout,
            SamplerConfig::ddim(steps),
            &x_start,
        )?;
        if steps > 1 {
            assert!(max_abs_diff(&ddpm, &det) > 1e-3, "{steps} steps");
        } else {
            assert!(max_abs_diff(&ddpm, &det) < 1e-12);
        }
    }
    Ok(())
}

/// Runs a sampler with `eps = w x` and records whether each denoiser output has a graph.
fn sample_with_weight(
    w: &Tensor,
    config: SamplerConfig,
    schedule: &NoiseSchedule,
    layout: &BatchLayout,
    x_start: &Tensor,
) -> Result<(Tensor, Vec<bool>)> {
    let record = RefCell::new(Vec::new());
    let denoiser = |x: &Tensor, _t: &Tensor| -> Result<Tensor> {
        let out = x * w;
        record.borrow_mut().push(out.requires_grad());
        Ok(out)
    };
    let out = sample(&denoiser, schedule, layout, config, x_start)?;
    Ok((out, record.into_inner()))
}

#[test]
fn keep_graph_last_limits_the_graph() -> Result<()> {
    let _rng = seeded(31);
    let schedule = NoiseSchedule::cosine(1000)?;
    let layout = shuffled_layout(&[3, 2], 1)?;
    let x_start = com_free_noise(&layout, Kind::Double)?;
    let w = Tensor::from(0.3f64).set_requires_grad(true);
    let steps = 10usize;
    for sampler in [
        Sampler::Ddim { eta: 0.0 },
        Sampler::Ddpm,
        Sampler::Ddim { eta: 0.5 },
    ] {
        for k in [0usize, 1, 3, steps] {
            let config = SamplerConfig {
                sampler,
                steps: steps as i64,
                keep_graph_last: k as i64,
                start: None,
            };
            let (out, graphs) = sample_with_weight(&w, config, &schedule, &layout, &x_start)?;
            let expected: Vec<bool> = (0..steps).map(|i| i >= steps - k).collect();
            assert_eq!(graphs, expected, "{sampler:?}, k = {k}");
            assert_eq!(out.requires_grad(), k > 0, "{sampler:?}, k = {k}");
        }
    }
    // x_start's own graph is cut.
    let leaf = x_start.detach().set_requires_grad(true);
    let (out, _) = sample_with_weight(
        &w.detach(),
        SamplerConfig::ddim(4).keep_graph_last(4),
        &schedule,
        &layout,
        &leaf,
    )?;
    assert!(!out.requires_grad());
    Ok(())
}

#[test]
fn sampler_gradient_matches_finite_differences() -> Result<()> {
    let _rng = seeded(41);
    let schedule = NoiseSchedule::linear(100, 1e-4, 0.02)?;
    let layout = shuffled_layout(&[3, 4], 6)?;
    let x_start = com_free_noise(&layout, Kind::Double)?;
    let probe = Tensor::randn([7, 3], (Kind::Double, Device::Cpu));
    let (w0, h) = (0.3f64, 1e-6);
    for sampler in [Sampler::Ddim { eta: 0.0 }, Sampler::Ddpm] {
        let steps = 6;
        let objective = |w: &Tensor, k: i64| -> Result<Tensor> {
            tch::manual_seed(77);
            let config = SamplerConfig {
                sampler,
                steps,
                keep_graph_last: k,
                start: None,
            };
            let (out, _) = sample_with_weight(w, config, &schedule, &layout, &x_start)?;
            Ok((out.square() * &probe).sum(Kind::Double))
        };
        let w = Tensor::from(w0).set_requires_grad(true);
        let value = objective(&w, steps)?;
        let grad = Tensor::run_backward(&[&value], &[&w], false, false)
            .pop()
            .expect("one gradient")
            .double_value(&[]);
        let plus = objective(&Tensor::from(w0 + h), 0)?.double_value(&[]);
        let minus = objective(&Tensor::from(w0 - h), 0)?.double_value(&[]);
        let numeric = (plus - minus) / (2.0 * h);
        assert!(numeric.abs() > 1e-3, "degenerate check: {numeric}");
        assert!(
            (grad - numeric).abs() < 1e-6 * numeric.abs().max(1.0),
            "{sampler:?}: autograd {grad}, finite difference {numeric}"
        );
        // A truncated graph gives a different (partial) gradient.
        let w = Tensor::from(w0).set_requires_grad(true);
        let value = objective(&w, 1)?;
        let partial = Tensor::run_backward(&[&value], &[&w], false, false)
            .pop()
            .expect("one gradient")
            .double_value(&[]);
        assert!((partial - numeric).abs() > 1e-6 * numeric.abs());
    }
    Ok(())
}

#[test]
fn sampler_rejects_bad_configs_and_outputs() -> Result<()> {
    let _rng = seeded(2);
    let schedule = NoiseSchedule::cosine(50)?;
    let layout = BatchLayout::from_counts(&[2, 3], Device::Cpu)?;
    let x_start = com_free_noise(&layout, Kind::Double)?;
    let fine = |x: &Tensor, _t: &Tensor| -> Result<Tensor> { Ok(x * 0.1) };
    let invalid =
        |config: SamplerConfig, name: &str| match sample(&fine, &schedule, &layout, config, &x_start) {
            Err(Error::InvalidArgument { arg, .. }) => assert_eq!(arg, name, "{config:?}"),
            other => panic!("{config:?}: expected InvalidArgument({name}), got {other:?}"),
        };
    invalid(SamplerConfig::ddim(0), "steps");
    invalid(SamplerConfig::ddpm(-1), "steps");
    invalid(SamplerConfig::ddim(51), "steps");
    invalid(SamplerConfig::ddim(5).keep_graph_last(6), "keep_graph_last");
    invalid(SamplerConfig::ddim(5).keep_graph_last(-1), "keep_graph_last");
    invalid(SamplerConfig::ddim(5).start_at(0), "start");
    invalid(SamplerConfig::ddim(5).start_at(51), "start");
    invalid(SamplerConfig::ddim(6).start_at(5), "steps");
    for eta in [-0.1, f64::NAN, f64::INFINITY] {
        invalid(
            SamplerConfig {
                sampler: Sampler::Ddim { eta },
                ..SamplerConfig::ddim(5)
            },
            "eta",
        );
    }
    assert!(sample(
        &fine,
        &schedule,
        &layout,
        SamplerConfig::ddim(50).keep_graph_last(50),
        &x_start
    )
    .is_ok());

    let wrong_shape = |x: &Tensor, _t: &Tensor| -> Result<Tensor> { Ok(x.narrow(0, 0, 4)) };
    let nan = |x: &Tensor, _t: &Tensor| -> Result<Tensor> { Ok(x * f64::NAN) };
    let wrong_kind = |x: &Tensor, _t: &Tensor| -> Result<Tensor> { Ok(x.to_kind(Kind::Float)) };
    let failing = |_x: &Tensor, _t: &Tensor| -> Result<Tensor> {
        Err(Error::InvalidArgument {
            arg: "model",
            reason: "boom".into(),
        })
    };
    let t_seen = RefCell::new(Vec::new());
    let recorder = |x: &Tensor, t: &Tensor| -> Result<Tensor> {
        t_seen.borrow_mut().push(Vec::<i64>::try_from(t).expect("i64 t"));
        Ok(x * 0.1)
    };
    for k in [0, 1] {
        let config = SamplerConfig::ddim(5).keep_graph_last(k);
        assert!(matches!(
            sample(&wrong_shape, &schedule, &layout, config, &x_start),
            Err(Error::Shape {
                arg: "denoiser output",
                ..
            })
        ));
        assert!(matches!(
            sample(&nan, &schedule, &layout, config, &x_start),
            Err(Error::NonFinite {
                arg: "denoiser output"
            })
        ));
        assert!(matches!(
            sample(&wrong_kind, &schedule, &layout, config, &x_start),
            Err(Error::Dtype {
                arg: "denoiser output",
                ..
            })
        ));
        assert!(matches!(
            sample(&failing, &schedule, &layout, config, &x_start),
            Err(Error::InvalidArgument { arg: "model", .. })
        ));
    }
    assert!(matches!(
        sample(
            &fine,
            &schedule,
            &layout,
            SamplerConfig::ddim(5),
            &x_start.narrow(0, 0, 4)
        ),
        Err(Error::Shape { arg: "x_start", .. })
    ));
    assert!(matches!(
        sample(
            &fine,
            &schedule,
            &layout,
            SamplerConfig::ddim(5),
            &(&x_start * f64::INFINITY)
        ),
        Err(Error::NonFinite { arg: "x_start" })
    ));
    // The denoiser sees one step per molecule, evenly spaced from T down.
    let _ = sample(&recorder, &schedule, &layout, SamplerConfig::ddim(5), &x_start)?;
    let seen = t_seen.into_inner();
    let firsts: Vec<i64> = seen.iter().map(|t| t[0]).collect();
    assert_eq!(firsts, vec![50, 40, 30, 20, 10]);
    assert!(seen.iter().all(|t| t.len() == 2 && t[0] == t[1]));
    Ok(())
}
