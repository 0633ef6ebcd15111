//! Shared bench fixtures: batches of ~20-atom molecules and an analytic energy.
#![allow(dead_code)]

use physcon::testing::{PairEnergy, PairPotential};
use physcon::{BatchLayout, Result};
use tch::{Device, Kind, Tensor};

pub const ATOMS: i64 = 20;

/// `molecules` molecules of `atoms` atoms on a jittered lattice (no close contacts), f32.
pub fn batch(molecules: i64, atoms: i64, seed: i64) -> Result<(BatchLayout, Tensor)> {
    tch::manual_seed(seed);
    let layout = BatchLayout::from_counts(&vec![atoms; molecules as usize], Device::Cpu)?;
    let k = Tensor::arange(atoms, (Kind::Int64, Device::Cpu));
    let lattice =
        Tensor::stack(&[k.remainder(3), (&k / 3).remainder(3), &k / 9], 1).to_kind(Kind::Float) * 1.3;
    let pos = lattice.repeat([molecules, 1])
        + Tensor::rand([molecules * atoms, 3], (Kind::Float, Device::Cpu)) * 0.3;
    Ok((layout, pos))
}

/// A Morse pair energy over all pairs of each molecule.
pub fn energy(layout: &BatchLayout) -> Result<PairEnergy> {
    PairEnergy::new(
        PairPotential::Morse {
            d: 1.0,
            a: 1.5,
            r0: 1.4,
        },
        layout,
    )
}
