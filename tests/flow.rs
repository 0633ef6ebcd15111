//! Gradient flow on a tiny two-head model whose heads share a parameter.
//!
//! Parameters: `a` shared by both heads, `k` used only by the energy head, `c`
//! used only by the structure head. The structure head makes
//! `R_hat = a x (1 + c)` per axis (the eps head likewise); the energy head
//! is `E = sum_{i<j} k/2 (a r_ij - 1.2)^2`.
//!
//! - `ToStructure`: `k` gets exactly zero gradient, `a` and `c` get exactly
//!   what a frozen copy of the energy head would give them, and the structure
//!   gets the same gradient as with `Both`.
//! - `ToEnergy`: the converse: `c` gets none, `a` and `k` get what they get
//!   with the structure detached, and the structure gets none.

mod common;

use common::{max_abs_diff, single_thread};
use physcon::diffusion::{q_sample_with, NoiseSchedule};
use physcon::geometry::{distances, pairs_within};
use physcon::losses::{Forces, GradientFlow, OptimalityLoss, ScoreConsistency};
use physcon::{BatchLayout, Result};
use tch::{Device, Kind, Tensor};

struct Params {
    a: Tensor,
    k: Tensor,
    c: Tensor,
}

impl Params {
    fn fresh() -> Self {
        Self {
            a: Tensor::from(0.9f64).set_requires_grad(true),
            k: Tensor::from(2.5f64).set_requires_grad(true),
            c: Tensor::from_slice(&[0.1f64, -0.2, 0.05]).set_requires_grad(true),
        }
    }

    /// Gradients after `backward`, undefined ones read as `None`.
    fn grads(&self) -> [Option<Tensor>; 3] {
        [&self.a, &self.k, &self.c].map(|p| {
            let g = p.grad();
            g.defined().then_some(g)
        })
    }
}

fn energy_head<'a>(
    layout: &'a BatchLayout,
    a: &'a Tensor,
    k: &'a Tensor,
) -> impl Fn(&Tensor) -> Result<Tensor> + 'a {
    let (i, j) = pairs_within(layout).unwrap();
    move |pos: &Tensor| {
        let r = distances(pos, &i, &j, layout)?;
        let phi = (r * a - 1.2).square() * k * 0.5;
        let zeros = Tensor::zeros([layout.num_molecules()], (Kind::Double, Device::Cpu));
        Ok(zeros.index_add(0, &layout.batch().index_select(0, &i), &phi))
    }
}

fn setup() -> (BatchLayout, Tensor) {
    single_thread();
    let layout = BatchLayout::new(&Tensor::from_slice(&[1i64, 0, 1, 0, 1, 0, 1]), 2).unwrap();
    let x = Tensor::from_slice(&[
        0.0f64, 0.1, -0.2, 1.1, 0.0, 0.3, 0.2, 1.3, 0.1, -0.9, 0.4, 0.0, 1.0, 1.0, 0.2, 0.0, -1.2, 0.5, -0.8,
        0.3, 1.1,
    ])
    .reshape([7, 3]);
    (layout, x)
}

/// A loss of the structure (or eps) produced by the structure head and the energy head.
type Objective<'a> = dyn Fn(GradientFlow, &Tensor, &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> + 'a;

fn assert_zero_or_none(g: &Option<Tensor>, what: &str) {
    if let Some(g) = g {
        assert_eq!(
            g.abs().sum(Kind::Double).double_value(&[]),
            0.0,
            "{what} must get no gradient"
        );
    }
}

fn assert_same(a: &Option<Tensor>, b: &Option<Tensor>, what: &str) {
    let (a, b) = (a.as_ref().expect(what), b.as_ref().expect(what));
    let diff = max_abs_diff(a, b);
    assert!(diff < 1e-12, "{what}: {a} vs {b}");
    assert!(
        a.abs().sum(Kind::Double).double_value(&[]) > 0.0,
        "{what} should be non-zero here"
    );
}

fn check_flows(layout: &BatchLayout, x: &Tensor, objective: &Objective) {
    let head_output = |p: &Params| -> Tensor { x * &p.a * (&p.c + 1.0) };
    // ToStructure against a frozen (detached) copy of the energy head under Both.
    let p = Params::fresh();
    let out = head_output(&p);
    objective(GradientFlow::ToStructure, &out, &energy_head(layout, &p.a, &p.k))
        .unwrap()
        .backward();
    let to_structure = p.grads();
    let q = Params::fresh();
    let out = head_output(&q);
    let (a_frozen, k_frozen) = (q.a.detach(), q.k.detach());
    objective(
        GradientFlow::Both,
        &out,
        &energy_head(layout, &a_frozen, &k_frozen),
    )
    .unwrap()
    .backward();
    let frozen = q.grads();
    assert_zero_or_none(&to_structure[1], "ToStructure: energy-only parameter k");
    assert_same(
        &to_structure[0],
        &frozen[0],
        "ToStructure: shared a vs frozen teacher",
    );
    assert_same(
        &to_structure[2],
        &frozen[2],
        "ToStructure: structure-only c vs frozen teacher",
    );

    // ToEnergy against Both with the structure detached.
    let p = Params::fresh();
    let out = head_output(&p);
    objective(GradientFlow::ToEnergy, &out, &energy_head(layout, &p.a, &p.k))
        .unwrap()
        .backward();
    let to_energy = p.grads();
    let q = Params::fresh();
    let out = head_output(&q).detach();
    objective(GradientFlow::Both, &out, &energy_head(layout, &q.a, &q.k))
        .unwrap()
        .backward();
    let detached = q.grads();
    assert_zero_or_none(&to_energy[2], "ToEnergy: structure-only parameter c");
    assert_same(
        &to_energy[0],
        &detached[0],
        "ToEnergy: shared a vs detached structure",
    );
    assert_same(
        &to_energy[1],
        &detached[1],
        "ToEnergy: energy-only k vs detached structure",
    );

    // The gradient that reaches the structure itself.
    let p = Params::fresh();
    let structure_grad = |flow| {
        let leaf = head_output(&p).detach().set_requires_grad(true);
        let loss = objective(flow, &leaf, &energy_head(layout, &p.a, &p.k)).unwrap();
        Tensor::run_backward(&[loss], &[&leaf], false, false)
            .pop()
            .unwrap()
    };
    let (ts, both) = (
        structure_grad(GradientFlow::ToStructure),
        structure_grad(GradientFlow::Both),
    );
    assert!(max_abs_diff(&ts, &both) < 1e-12);
    assert!(ts.abs().sum(Kind::Double).double_value(&[]) > 0.0);
    let te = structure_grad(GradientFlow::ToEnergy);
    assert!(!te.defined() || te.abs().sum(Kind::Double).double_value(&[]) == 0.0);
}

#[test]
fn optimality_stationarity_flows() {
    let (layout, x) = setup();
    check_flows(&layout, &x, &|flow, structure, energy| {
        OptimalityLoss::stationarity()
            .flow(flow)
            .forward(energy, structure, None, &layout)
    });
}

#[test]
fn optimality_energy_descent_flows() {
    let (layout, x) = setup();
    let reference = &x * 1.05;
    check_flows(&layout, &x, &|flow, structure, energy| {
        OptimalityLoss::energy_descent()
            .flow(flow)
            .forward(energy, structure, Some(&reference), &layout)
    });
}

#[test]
fn score_consistency_flows() {
    let (layout, x) = setup();
    let schedule = NoiseSchedule::cosine(1000).unwrap();
    let t = Tensor::from_slice(&[30i64, 80]);
    let eps = Tensor::from_slice(&[
        0.3f64, -0.1, 0.2, 0.0, 0.5, -0.4, 0.1, 0.1, 0.1, -0.3, 0.2, 0.6, 0.0, 0.0, 0.4, 0.2, -0.5, 0.1, 0.3,
        0.3, -0.2,
    ])
    .reshape([7, 3]);
    // The clean structure is data; the "structure" the heads produce here is eps_hat.
    let clean = &x * 1.1 + 0.2;
    let noised = q_sample_with(&schedule, &clean, &t, &eps, &layout).unwrap();
    check_flows(&layout, &x, &|flow, eps_hat, energy| {
        ScoreConsistency::new(0.2)?
            .flow(flow)
            .forward(eps_hat, &noised, Forces::Model(&energy), &layout)
    });
}
