//! # physcon: physical-consistency losses for molecular multi-task learning
//!
//! Molecular models learn several tasks from data of different accuracy:
//! equilibrium structures from a cheap method, energies and forces from an
//! accurate one. Two physical laws tie the tasks together and let the
//! accurate data correct the cheap one:
//!
//! - **optimality consistency** ([`losses::StationarityLoss`],
//!   [`losses::EnergyDescentLoss`]): an equilibrium
//!   structure is a minimum of the energy, so the gradient of the predicted
//!   energy at a generated structure must vanish;
//! - **score consistency** ([`losses::ScoreConsistency`]): under the Boltzmann
//!   distribution the score of the structure distribution is `F / kT`, so the
//!   diffusion model's small-noise score must match the energy model's force.
//!
//! Both are composable autograd functions over libtorch tensors
//! ([`tch::Tensor`]) with an explicit [`losses::GradientFlow`], beside the
//! supervised losses (energy, force, denoising), a variance-preserving
//! coordinate diffusion ([`diffusion`]), metrics ([`metrics`]) and fitted
//! atomic reference energies.
//!
//! ## Conventions
//! - Units: Å, eV, eV/Å, K; `k_B` = [`units::KB_EV_PER_K`].
//! - Ragged batches, no padding: `pos: [N, 3]`, `species: [N]`, `batch: [N]`
//!   ([`BatchLayout`], [`MolBatch`]); molecule-level tensors are `[B]`. Losses
//!   reduce per molecule first, then over molecules.
//! - dtype and device follow the inputs; nothing moves between devices.
//! - Every fallible function returns [`Result`]; bad input is an [`Error`]
//!   naming the argument, never a panic or a silent NaN.
//! - Host data enters and results leave as [`ndarray`] arrays ([`mod@array`]).
//!
//! ## One convention for every loss
//! Each loss in [`losses`] is built once with validated settings, then called
//! per batch: `forward(inputs.., layout)` gives the scalar, and
//! `forward_per_molecule(inputs.., layout)` the `[B]` values before the last
//! reduction ([`losses::PerMolecule`]: log them, mask them, weight them).
//! Energies and forces for the supervised terms come from one forward with
//! [`energy_and_forces`]. `physcon::tch` is the `tch` physcon is built on:
//! use it (or the same `tch` version) so that tensors are one type.
//!
//! ## A stage-2 step in a custom trainer
//! ```
//! # fn main() -> physcon::Result<()> {
//! use physcon::diffusion::{q_sample, NoiseSchedule};
//! use physcon::losses::{DenoisingLoss, Forces, LossTerms, ScoreConsistency, StationarityLoss};
//! use physcon::testing::{PairEnergy, PairPotential};
//! use physcon::tch::{Device, Kind, Tensor};
//! use physcon::{BatchLayout, Temperature};
//!
//! let layout = BatchLayout::from_counts(&[2, 3], Device::Cpu)?;
//! // Stand-ins for the user's models: an analytic energy and an eps head with one weight.
//! let energy = PairEnergy::new(PairPotential::Morse { d: 4.0, a: 2.0, r0: 1.1 }, &layout)?;
//! let w = Tensor::from(0.5f64).set_requires_grad(true);
//! let eps_model = |x_t: &Tensor| x_t * &w;
//!
//! let clean = Tensor::randn([5, 3], (Kind::Double, Device::Cpu));
//! let schedule = NoiseSchedule::cosine(1000)?;
//! let t = schedule.sample_t(2, 1..=50, Device::Cpu)?;
//! let noised = q_sample(&schedule, &clean, &t, &layout)?;
//! let eps_hat = eps_model(noised.x_t());
//! let structure = clean.shallow_clone() * &w; // a generated structure with a graph
//!
//! let score = ScoreConsistency::new(Temperature::kelvin(300.0)?.kt())?;
//! let forces = Forces::Model { energy: &energy, at: noised.x0() };
//! let mut terms = LossTerms::new();
//! terms.push("denoising", 0.01, DenoisingLoss::new().forward(&eps_hat, noised.eps(), &layout)?)?;
//! terms.push("optimality", 0.1, StationarityLoss::new().forward(&energy, &structure, &layout)?)?;
//! terms.push("score", 1.0, score.forward(&eps_hat, noised.level(), forces, &layout)?)?;
//! terms.total()?.backward();
//! assert!(w.grad().double_value(&[]).is_finite());
//! # Ok(()) }
//! ```

mod batch;
mod check;
mod convert;
mod energy;
mod error;

pub mod array;
pub mod data;
pub mod diffusion;
pub mod geometry;
pub mod losses;
pub mod metrics;
pub mod reference;
pub mod testing;
pub mod units;

pub use batch::{BatchLayout, Bonds, MolBatch, Molecule};
pub use energy::{energy_and_forces, forces, EnergyAndForces, EnergyModel};
pub use error::{Error, ParseError, Result};
pub use reference::AtomicReferences;
pub use units::Temperature;

/// The `ndarray` physcon takes host arrays from and returns results in (see
/// [`mod@array`]): the version `tch` converts, so a user's arrays and tch's are one type.
pub use ndarray;

/// The `tch` (libtorch bindings) physcon is built on and takes tensors from.
///
/// Depend on the same `tch` version, or use this re-export, so that a model's
/// tensors and physcon's are one type.
pub use tch;
