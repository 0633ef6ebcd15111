//! Gradient flow on a tiny two-head model whose heads share a parameter.
//!
//! Parameters: `a` shared by both heads, `k` used only by the energy head, `c`
//! used only by the structure head. Every tensor the structure head hands a
//! loss carries a graph to `a` and `c`: the generated structure, the eps
//! prediction, the clean structure of score consistency and even force labels
//! (a user may pass labels computed from a model by mistake). The energy head
//! is `E = sum_{i<j} k/2 (a r_ij - 1.2)^2`.
//!
//! Each flow is compared, parameter by parameter, with `Both` on inputs that
//! are explicitly frozen or detached:
//! - `ToStructure` = `Both` with a frozen copy of the energy head, the clean
//!   structure and the labels detached: `k` gets exactly zero;
//! - `ToEnergy` = `Both` with every structure-head output detached: `c` gets
//!   exactly zero;
//! - `Both` = `Both` with only the labels detached (labels are constants).
//!
//! Every loss is checked through `forward` and through
//! `forward_per_molecule(..).weighted_mean(..)`.

mod common;

use common::{max_abs_diff, single_thread};
use physcon::diffusion::{q_sample_with, NoiseLevel, NoiseSchedule};
use physcon::geometry::{distances, pairs_within};
use physcon::losses::{
    DenoisingLoss, EnergyDescentLoss, EnergyLoss, EnergyMetric, ForceLoss, Forces, GradientFlow, PerMolecule,
    ScoreConsistency, StationarityLoss,
};
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

/// What the structure head hands the losses, each with a graph to `a` and `c`.
struct Heads {
    structure: Tensor,
    eps_hat: Tensor,
    clean: Tensor,
    labels: Tensor,
}

struct Fixture {
    layout: BatchLayout,
    x: Tensor,
    eps: Tensor,
    level: NoiseLevel,
}

impl Fixture {
    fn new() -> Self {
        single_thread();
        let layout = BatchLayout::new(&Tensor::from_slice(&[1i64, 0, 1, 0, 1, 0, 1]), 2).unwrap();
        let x = Tensor::from_slice(&[
            0.0f64, 0.1, -0.2, 1.1, 0.0, 0.3, 0.2, 1.3, 0.1, -0.9, 0.4, 0.0, 1.0, 1.0, 0.2, 0.0, -1.2, 0.5,
            -0.8, 0.3, 1.1,
        ])
        .reshape([7, 3]);
        let eps = Tensor::from_slice(&[
            0.3f64, -0.1, 0.2, 0.0, 0.5, -0.4, 0.1, 0.1, 0.1, -0.3, 0.2, 0.6, 0.0, 0.0, 0.4, 0.2, -0.5, 0.1,
            0.3, 0.3, -0.2,
        ])
        .reshape([7, 3]);
        let schedule = NoiseSchedule::cosine(1000).unwrap();
        let t = Tensor::from_slice(&[30i64, 80]);
        let level = q_sample_with(&schedule, &x, &t, &eps, &layout)
            .unwrap()
            .level()
            .clone();
        Self {
            layout,
            x,
            eps,
            level,
        }
    }

    fn heads(&self, p: &Params) -> Heads {
        let scale = (&p.c + 1.0) * &p.a;
        Heads {
            structure: &self.x * &scale,
            eps_hat: &self.eps * &scale,
            clean: (&self.x * 1.1 + 0.2) * &scale,
            labels: (&self.eps - 0.1) * &scale,
        }
    }

    fn energy_head<'a>(&'a self, a: &'a Tensor, k: &'a Tensor) -> impl Fn(&Tensor) -> Result<Tensor> + 'a {
        let layout = &self.layout;
        let (i, j) = pairs_within(layout).unwrap();
        move |pos: &Tensor| {
            let r = distances(pos, &i, &j, layout)?;
            let phi = (r * a - 1.2).square() * k * 0.5;
            let zeros = Tensor::zeros([layout.num_molecules()], (Kind::Double, Device::Cpu));
            Ok(zeros.index_add(0, &layout.batch().index_select(0, &i), &phi))
        }
    }
}

/// The two reductions every loss offers.
#[derive(Clone, Copy, Debug)]
enum Reduction {
    Forward,
    Weighted,
}

impl Reduction {
    fn of(self, per_molecule: Result<PerMolecule>) -> Result<Tensor> {
        let weights = Tensor::from_slice(&[0.3f64, 1.7]);
        per_molecule?.weighted_mean(&weights)
    }
}

/// A loss of the heads' outputs and the energy head, under a flow and a reduction.
type Objective<'a> =
    dyn Fn(GradientFlow, Reduction, &Heads, &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> + 'a;

fn detached(heads: &Heads, structure_head: bool, clean: bool) -> Heads {
    let cut = |t: &Tensor, yes: bool| if yes { t.detach() } else { t.shallow_clone() };
    Heads {
        structure: cut(&heads.structure, structure_head),
        eps_hat: cut(&heads.eps_hat, structure_head),
        clean: cut(&heads.clean, clean || structure_head),
        labels: heads.labels.detach(),
    }
}

fn assert_zero_or_none(g: &Option<Tensor>, what: &str) {
    if let Some(g) = g {
        assert_eq!(
            g.abs().sum(Kind::Double).double_value(&[]),
            0.0,
            "{what} must get no gradient, got {g}"
        );
    }
}

fn assert_same(a: &Option<Tensor>, b: &Option<Tensor>, what: &str) {
    let zero = Tensor::from(0.0f64);
    let (a, b) = (a.as_ref().unwrap_or(&zero), b.as_ref().unwrap_or(&zero));
    assert!(max_abs_diff(a, b) < 1e-12, "{what}: {a} vs {b}");
}

fn nonzero(g: &Option<Tensor>) -> bool {
    g.as_ref()
        .is_some_and(|g| g.abs().sum(Kind::Double).double_value(&[]) > 0.0)
}

fn check_flows(f: &Fixture, objective: &Objective) {
    for reduction in [Reduction::Forward, Reduction::Weighted] {
        for flow in [
            GradientFlow::ToStructure,
            GradientFlow::ToEnergy,
            GradientFlow::Both,
        ] {
            let what = format!("{flow:?}, {reduction:?}");
            let p = Params::fresh();
            objective(flow, reduction, &f.heads(&p), &f.energy_head(&p.a, &p.k))
                .unwrap()
                .backward();
            let got = p.grads();

            let q = Params::fresh();
            let heads = f.heads(&q);
            let (a_frozen, k_frozen) = (q.a.detach(), q.k.detach());
            let (a, k) = match flow {
                GradientFlow::ToStructure => (&a_frozen, &k_frozen),
                _ => (&q.a, &q.k),
            };
            let inputs = detached(
                &heads,
                flow == GradientFlow::ToEnergy,
                flow == GradientFlow::ToStructure,
            );
            objective(GradientFlow::Both, reduction, &inputs, &f.energy_head(a, k))
                .unwrap()
                .backward();
            let want = q.grads();
            for (name, (g, w)) in ["a", "k", "c"].iter().zip(got.iter().zip(&want)) {
                assert_same(g, w, &format!("{what}: parameter {name}"));
            }
            match flow {
                GradientFlow::ToStructure => {
                    assert_zero_or_none(&got[1], &format!("{what}: energy-only k"));
                    assert!(nonzero(&got[2]), "{what}: the structure head must learn");
                }
                GradientFlow::ToEnergy => {
                    assert_zero_or_none(&got[2], &format!("{what}: structure-only c"));
                    assert!(nonzero(&got[1]), "{what}: the energy head must learn");
                }
                GradientFlow::Both => assert!(nonzero(&got[1]) && nonzero(&got[2]), "{what}"),
            }
        }
    }
}

/// The gradient that reaches a generated structure: the same under `ToStructure`
/// and `Both`, none under `ToEnergy`.
fn check_structure_gradient(f: &Fixture, objective: &Objective) {
    let p = Params::fresh();
    let structure_grad = |flow| {
        let mut heads = f.heads(&p);
        let leaf = heads.structure.detach().set_requires_grad(true);
        heads.structure = leaf.shallow_clone();
        let loss = objective(flow, Reduction::Forward, &heads, &f.energy_head(&p.a, &p.k)).unwrap();
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
fn stationarity_flows() {
    let f = Fixture::new();
    let objective = |flow, reduction: Reduction, h: &Heads, energy: &dyn Fn(&Tensor) -> Result<Tensor>| {
        let loss = StationarityLoss::new().flow(flow);
        match reduction {
            Reduction::Forward => loss.forward(energy, &h.structure, &f.layout),
            Reduction::Weighted => reduction.of(loss.forward_per_molecule(energy, &h.structure, &f.layout)),
        }
    };
    check_flows(&f, &objective);
    check_structure_gradient(&f, &objective);
}

#[test]
fn energy_descent_flows() {
    let f = Fixture::new();
    // The reference is the clean structure, with its graph: its energy is a stopped constant.
    let objective = |flow, reduction: Reduction, h: &Heads, energy: &dyn Fn(&Tensor) -> Result<Tensor>| {
        let loss = EnergyDescentLoss::new().flow(flow);
        let reference = &h.clean * 1.05;
        match reduction {
            Reduction::Forward => loss.forward(energy, &h.structure, &reference, &f.layout),
            Reduction::Weighted => {
                reduction.of(loss.forward_per_molecule(energy, &h.structure, &reference, &f.layout))
            }
        }
    };
    check_flows(&f, &objective);
    check_structure_gradient(&f, &objective);
}

fn score_objective(f: &Fixture, labels: bool) -> Box<Objective<'_>> {
    Box::new(
        move |flow, reduction, h: &Heads, energy: &dyn Fn(&Tensor) -> Result<Tensor>| {
            let loss = ScoreConsistency::new(0.2)?.flow(flow);
            let forces = if labels {
                Forces::Labels(&h.labels)
            } else {
                Forces::Model {
                    energy: &energy,
                    at: &h.clean,
                }
            };
            match reduction {
                Reduction::Forward => loss.forward(&h.eps_hat, &f.level, forces, &f.layout),
                Reduction::Weighted => {
                    reduction.of(loss.forward_per_molecule(&h.eps_hat, &f.level, forces, &f.layout))
                }
            }
        },
    )
}

#[test]
fn score_consistency_flows_with_a_clean_structure_that_carries_a_graph() {
    let f = Fixture::new();
    check_flows(&f, &score_objective(&f, false));
}

#[test]
fn score_consistency_both_follows_the_clean_structure() {
    // Under `Both` the clean structure's graph is a real path: cutting it must change `c`'s gradient.
    let f = Fixture::new();
    let objective = score_objective(&f, false);
    let c_grad = |cut: bool| {
        let p = Params::fresh();
        let heads = f.heads(&p);
        let heads = detached(&heads, false, cut);
        objective(
            GradientFlow::Both,
            Reduction::Forward,
            &heads,
            &f.energy_head(&p.a, &p.k),
        )
        .unwrap()
        .backward();
        p.c.grad()
    };
    assert!(max_abs_diff(&c_grad(false), &c_grad(true)) > 1e-6);
}

#[test]
fn score_consistency_labels_are_constants() {
    let f = Fixture::new();
    let objective = score_objective(&f, true);
    for reduction in [Reduction::Forward, Reduction::Weighted] {
        for flow in [GradientFlow::ToStructure, GradientFlow::Both] {
            let grads = |cut: bool| {
                let p = Params::fresh();
                let mut heads = f.heads(&p);
                if cut {
                    heads.labels = heads.labels.detach();
                }
                objective(flow, reduction, &heads, &f.energy_head(&p.a, &p.k))
                    .unwrap()
                    .backward();
                p.grads()
            };
            let (live, cut) = (grads(false), grads(true));
            for (name, (g, w)) in ["a", "k", "c"].iter().zip(live.iter().zip(&cut)) {
                assert_same(
                    g,
                    w,
                    &format!("{flow:?}, {reduction:?}: labels, parameter {name}"),
                );
            }
            assert_zero_or_none(&live[1], "labels: energy-only k");
        }
        let p = Params::fresh();
        let err = objective(
            GradientFlow::ToEnergy,
            reduction,
            &f.heads(&p),
            &f.energy_head(&p.a, &p.k),
        );
        assert!(matches!(
            err,
            Err(physcon::Error::InvalidArgument { arg: "forces", .. })
        ));
    }
}

/// The supervised losses train their prediction only: targets and weights that
/// carry a graph are constants.
#[test]
fn supervised_targets_and_weights_are_constants() {
    let f = Fixture::new();
    let layout = &f.layout;
    let mask = Tensor::from_slice(&[true, true]);
    type Supervised<'a> = Box<dyn Fn(&Tensor, &Tensor, &Heads) -> Result<PerMolecule> + 'a>;
    let losses: [(&str, Supervised); 3] = [
        (
            "energy",
            Box::new(|e: &Tensor, target: &Tensor, _h: &Heads| {
                EnergyLoss::new(EnergyMetric::Mse)?.forward_per_molecule(e, target, Some(&mask), layout)
            }),
        ),
        (
            "force",
            Box::new(|_e: &Tensor, _target: &Tensor, h: &Heads| {
                let pred = &h.eps_hat.detach() * 2.0 + &h.structure.detach();
                let pred = pred.set_requires_grad(true);
                ForceLoss::new().forward_per_molecule(&(pred * 1.0), &h.labels, Some(&mask), layout)
            }),
        ),
        (
            "denoising",
            Box::new(|_e: &Tensor, _target: &Tensor, h: &Heads| {
                DenoisingLoss::new().forward_per_molecule(&h.eps_hat, &h.labels, layout)
            }),
        ),
    ];
    for (name, loss) in &losses {
        let grads = |cut: bool| {
            let p = Params::fresh();
            let mut heads = f.heads(&p);
            let energy = f.energy_head(&p.a, &p.k)(&f.x).unwrap();
            // A target and weights computed from the structure head's `c`.
            let mut target = heads
                .labels
                .sum_dim_intlist(1, false, Kind::Double)
                .narrow(0, 0, 2);
            let mut weights = p.c.narrow(0, 0, 2) + 1.0;
            if cut {
                heads.labels = heads.labels.detach();
                target = target.detach();
                weights = weights.detach();
            }
            loss(&energy, &target, &heads)
                .unwrap()
                .weighted_mean(&weights)
                .unwrap()
                .backward();
            p.grads()
        };
        let (live, cut) = (grads(false), grads(true));
        for (param, (g, w)) in ["a", "k", "c"].iter().zip(live.iter().zip(&cut)) {
            assert_same(g, w, &format!("{name}: parameter {param}"));
        }
    }
}
