//! The training data and the batches of each step.
//!
//! Determinism: the batch of a step comes from a per-epoch shuffle of
//! (seed, epoch), so any step's batch is known without replaying the ones
//! before it, which is what lets a resumed run continue exactly.

use crate::{Error, Result};
use physcon::data::{splitmix64, Dataset, LabelledBatch};
use physcon::AtomicReferences;
use tch::{Device, Kind};

use crate::model::Graph;
use crate::plan::{LossWeights, TrainingPlan};

/// The training frames: cheap-level structures with accurate energies, and off-equilibrium frames.
pub struct TrainData {
    pub structures: Dataset,
    pub offeq: Dataset,
}

impl TrainData {
    pub fn new(train: &Dataset) -> Result<Self> {
        let data = Self {
            structures: train.with_level("mmff"),
            offeq: train.with_level("xtb-perturbed"),
        };
        if data.structures.is_empty() {
            return Err(Error::Invalid {
                name: "data",
                reason: "the training split has no `mmff` frames".into(),
            });
        }
        Ok(data)
    }

    /// Refuses a plan that weights forces or score consistency when there are
    /// no off-equilibrium frames to train them on (they would be dropped silently).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the stage and the terms.
    pub fn check_plan(&self, plan: &TrainingPlan) -> Result<()> {
        for (stage, weights) in [("stage1", &plan.stage1), ("stage2", &plan.stage2)] {
            if weights.uses_offeq() && self.offeq.is_empty() {
                return Err(Error::Invalid {
                    name: stage,
                    reason: format!(
                        "force weight {} and score weight {}: both need `xtb-perturbed` frames, \
                         and the training split has none",
                        weights.force, weights.score
                    ),
                });
            }
        }
        Ok(())
    }

    /// Atomic reference energies from the cheap-level frames' energies.
    pub fn references(&self) -> Result<AtomicReferences> {
        let frames = self.structures.frames();
        let species: Vec<Vec<i64>> = frames.iter().map(|f| f.species.clone()).collect();
        let energies: Vec<f64> = frames.iter().map(|f| f.energy.unwrap_or(f64::NAN)).collect();
        Ok(AtomicReferences::fit(&species, &energies)?)
    }
}

/// Mixes a seed with two counters into an independent seed (SplitMix64 finaliser).
pub fn mix(a: u64, b: u64, c: u64) -> u64 {
    splitmix64(a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ c.wrapping_mul(0xc2b2_ae3d_27d4_eb4f))
}

/// The indices of the batch of `step` in `data`.
pub fn batch_indices(data: &Dataset, batch_size: usize, seed: u64, step: u64) -> Result<Vec<usize>> {
    let per_epoch = data.len().div_ceil(batch_size) as u64;
    let (epoch, k) = (step / per_epoch, step % per_epoch);
    let batches = data.batches(batch_size, mix(seed, epoch, 0xba7c))?;
    Ok(batches[k as usize].clone())
}

/// The batches of one step and their graphs.
pub struct StepBatches {
    /// Equilibrium (`mmff`) frames.
    pub structures: LabelledBatch,
    pub g: Graph,
    /// Off-equilibrium (`xtb-perturbed`) frames, when the step uses them.
    pub offeq: Option<(LabelledBatch, Graph)>,
}

impl StepBatches {
    /// The batches of `step` in `kind`: equilibrium structures, and the
    /// off-equilibrium frames when the forces or score consistency use them.
    pub fn draw(
        data: &TrainData,
        weights: &LossWeights,
        batch_size: usize,
        seed: u64,
        step: u64,
        kind: Kind,
    ) -> Result<Self> {
        let structures = data.structures.batch(
            &batch_indices(&data.structures, batch_size, seed, step)?,
            kind,
            Device::Cpu,
        )?;
        let g = Graph::new(&structures.batch, kind)?;
        let offeq = if weights.uses_offeq() {
            if data.offeq.is_empty() {
                return Err(Error::Invalid {
                    name: "data",
                    reason: "the step weights forces or score consistency, and there are no `xtb-perturbed` frames"
                        .into(),
                });
            }
            let indices = batch_indices(&data.offeq, batch_size, seed ^ 0x0ffe, step)?;
            let b = data.offeq.batch(&indices, kind, Device::Cpu)?;
            let g2 = Graph::new(&b.batch, kind)?;
            Some((b, g2))
        } else {
            None
        };
        Ok(Self { structures, g, offeq })
    }
}
