//! Overhead of physcon's optimality loss against the floor: a minimal
//! hand-written tch sequence making the same autograd calls (one energy
//! forward on a detached leaf, a create-graph backward, the per-molecule
//! reduction, a backward to the leaf, the surrogate, the final backward).
//! Prints the ratio of median times; target <= 1.05.
//!
//! `scripts/with-libtorch.sh cargo bench --bench overhead`

mod common;

use std::time::Instant;

use physcon::losses::OptimalityLoss;
use physcon::{EnergyModel, Result};
use tch::{Kind, Tensor};

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn time(mut f: impl FnMut() -> Result<()>, reps: usize) -> Result<f64> {
    for _ in 0..3 {
        f()?;
    }
    let mut samples = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64());
    }
    Ok(median(samples))
}

fn main() -> Result<()> {
    let threads = 1;
    tch::set_num_threads(threads);
    println!("optimality loss (stationarity, ToStructure): physcon vs hand-written tch, {threads} thread(s)");
    println!(
        "{:>10} {:>14} {:>14} {:>8} {:>10}",
        "molecules", "physcon (ms)", "floor (ms)", "ratio", "A/A ratio"
    );
    for molecules in [32i64, 256] {
        let (layout, pos) = common::batch(molecules, common::ATOMS, 1)?;
        let energy = common::energy(&layout)?;
        let structure = || pos.detach().set_requires_grad(true);
        let counts = layout.counts().to_kind(Kind::Float);
        let physcon = || -> Result<()> {
            let x = structure();
            OptimalityLoss::stationarity()
                .forward(&energy, &x, None, &layout)?
                .backward();
            Ok(())
        };
        let floor = || -> Result<()> {
            let r_hat = structure();
            let leaf = r_hat.detach().set_requires_grad(true);
            let e = energy.energy(&leaf)?;
            let g = Tensor::run_backward(&[e.sum(Kind::Float)], &[&leaf], true, true).remove(0);
            let per_atom = g.square().sum_dim_intlist(1, false, Kind::Float);
            let per_mol = Tensor::zeros([molecules], (Kind::Float, tch::Device::Cpu)).index_add(
                0,
                layout.batch(),
                &per_atom,
            ) / &counts;
            let loss = per_mol.mean(Kind::Float);
            let v = Tensor::run_backward(&[&loss], &[&leaf], false, false).remove(0);
            let surrogate = loss.detach() + (v * (&r_hat - r_hat.detach())).sum(Kind::Float);
            surrogate.backward();
            Ok(())
        };
        let reps = if molecules > 100 { 30 } else { 100 };
        // Interleave the two so drift in machine load hits both alike, and alternate which
        // goes first so neither always runs on the other's freshly freed memory. The floor
        // is timed twice per round: floor / floor (A/A) shows how far this method is from 1
        // with no difference at all.
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..8 {
            if round % 2 == 0 {
                a.push(time(physcon, reps)?);
                b.push(time(floor, reps)?);
                c.push(time(floor, reps)?);
            } else {
                c.push(time(floor, reps)?);
                b.push(time(floor, reps)?);
                a.push(time(physcon, reps)?);
            }
        }
        let (a, b, c) = (median(a), median(b), median(c));
        println!(
            "{molecules:>10} {:>14.3} {:>14.3} {:>8.3} {:>10.3}",
            a * 1e3,
            b * 1e3,
            a / b,
            c / b
        );
    }
    Ok(())
}
