//! Optimality consistency in one screen: cheap structures move to the minima
//! of an accurate energy.
//!
//! Three small clusters start at "cheap" geometries (every bond 20 % too
//! long). A structure model (here a learnable displacement per atom) is
//! trained with the stationarity loss against a frozen, accurate Morse
//! energy: `GradientFlow::ToStructure` moves the structure only. The RMSD to
//! the accurate minima (found by plain energy minimisation) falls to ~0.
//!
//! Run: `scripts/with-libtorch.sh cargo run --release --example consistency_demo`

use physcon::losses::{GradientFlow, StationarityLoss};
use physcon::metrics::kabsch_rmsd;
use physcon::testing::{PairEnergy, PairPotential};
use physcon::{BatchLayout, EnergyModel, Result};
use tch::nn::{Adam, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

fn main() -> Result<()> {
    tch::manual_seed(0);
    let layout = BatchLayout::from_counts(&[3, 4, 5], Device::Cpu)?;
    let accurate = PairEnergy::new(
        PairPotential::Morse {
            d: 1.0,
            a: 1.5,
            r0: 1.0,
        },
        &layout,
    )?;

    // Cheap structures: the accurate minima, found below, stretched by 20 % plus noise.
    let start = Tensor::randn([12, 3], (Kind::Double, Device::Cpu)) * 0.6;
    let minima = minimise(&accurate, &start)?;
    let cheap = &minima * 1.2 + Tensor::randn([12, 3], (Kind::Double, Device::Cpu)) * 0.02;

    let mut vs = VarStore::new(Device::Cpu);
    vs.set_kind(Kind::Double);
    let shift = vs.root().zeros("shift", &[12, 3]);
    let mut opt = Adam::default().build(&vs, 0.01)?;
    let loss = StationarityLoss::new().flow(GradientFlow::ToStructure);

    println!("step  stationarity (eV²/Å²)  RMSD to accurate minima (Å)");
    for step in 0..=400 {
        let structure = &cheap + &shift;
        let value = loss.forward(&accurate, &structure, &layout)?;
        if step % 50 == 0 {
            let rmsd = kabsch_rmsd(&structure.detach(), &minima, &layout)?.mean(Kind::Double);
            println!(
                "{step:4}  {:21.6}  {:.4}",
                value.double_value(&[]),
                rmsd.double_value(&[])
            );
        }
        opt.zero_grad();
        value.backward();
        opt.step();
    }
    Ok(())
}

/// Gradient descent on the energy: the accurate minima the structures should reach.
fn minimise(energy: &impl EnergyModel, start: &Tensor) -> Result<Tensor> {
    let mut vs = VarStore::new(Device::Cpu);
    vs.set_kind(Kind::Double);
    let x = vs.root().var_copy("x", start);
    let mut opt = Adam::default().build(&vs, 0.02)?;
    for _ in 0..3000 {
        let e = energy.energy(&x)?.sum(Kind::Double);
        opt.zero_grad();
        e.backward();
        opt.step();
    }
    Ok(x.detach())
}
