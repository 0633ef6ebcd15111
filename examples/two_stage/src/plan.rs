//! The two-stage training plan: which losses are active, with which weights,
//! and the learning rate at each step.
//!
//! Stage 1 (multi-task) trains energy and denoising; stage 2 adds the force
//! loss and the two consistency losses. The learning rate warms up linearly
//! from 0, then decays linearly to `final_lr` at the last step of stage 2.
//!
//! The example's own plan, not the library's: a user's trainer has its own.
//! [`Term`] is the one list of the loss terms; the log's columns, the
//! settings' keys and the objective's pushes all take their names from it.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// A loss term of the example's objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// Energy loss (per atom).
    Energy,
    /// Denoising loss.
    Denoising,
    /// Force loss.
    Force,
    /// Optimality consistency.
    Optimality,
    /// Score consistency.
    Score,
}

impl Term {
    /// Every term, in the order of the log's columns.
    pub const ALL: [Term; 5] = [
        Term::Energy,
        Term::Denoising,
        Term::Force,
        Term::Optimality,
        Term::Score,
    ];

    /// The term's name in logs, settings and checkpoints.
    pub const fn name(self) -> &'static str {
        match self {
            Term::Energy => "energy",
            Term::Denoising => "denoising",
            Term::Force => "force",
            Term::Optimality => "optimality",
            Term::Score => "score",
        }
    }
}

/// Loss weights of one stage; a zero weight means the term is off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossWeights {
    /// Energy loss.
    pub energy: f64,
    /// Denoising loss.
    pub denoising: f64,
    /// Force loss.
    pub force: f64,
    /// Optimality consistency.
    pub optimality: f64,
    /// Score consistency.
    pub score: f64,
}

impl LossWeights {
    /// The weight of `term`.
    pub fn get(&self, term: Term) -> f64 {
        match term {
            Term::Energy => self.energy,
            Term::Denoising => self.denoising,
            Term::Force => self.force,
            Term::Optimality => self.optimality,
            Term::Score => self.score,
        }
    }

    /// Whether a step with these weights needs off-equilibrium frames: the
    /// force loss trains on them too, and score consistency only on them.
    pub fn uses_offeq(&self) -> bool {
        self.force > 0.0 || self.score > 0.0
    }

    /// The terms with a non-zero weight, by name, in [`Term::ALL`]'s order.
    pub fn active(&self) -> Vec<(&'static str, f64)> {
        self.named().into_iter().filter(|(_, w)| *w != 0.0).collect()
    }

    /// Every term by name, in [`Term::ALL`]'s order.
    pub fn named(&self) -> [(&'static str, f64); 5] {
        Term::ALL.map(|term| (term.name(), self.get(term)))
    }

    fn check(&self, stage: &'static str) -> Result<()> {
        for (name, w) in self.named() {
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::Invalid {
                    name: stage,
                    reason: format!("weight `{name}` must be finite and >= 0, got {w}"),
                });
            }
        }
        Ok(())
    }
}

/// The stage a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Stage 1: multi-task (energy + denoising).
    MultiTask,
    /// Stage 2: consistency losses and forces added.
    Consistency,
}

/// The two-stage plan: step counts, batch size, Adam's learning-rate schedule, weights.
///
/// ```
/// # fn main() -> physcon::Result<()> {
/// use two_stage::plan::{Stage, TrainingPlan};
/// let plan = TrainingPlan::paper();
/// assert_eq!(plan.stage(299_999)?, Stage::MultiTask);
/// assert_eq!(plan.stage(300_000)?, Stage::Consistency);
/// assert_eq!(plan.lr(10_000)?, 2e-4);
/// assert_eq!(plan.weights(400_000)?.optimality, 0.1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingPlan {
    /// Steps of stage 1.
    pub stage1_steps: u64,
    /// Steps of stage 2.
    pub stage2_steps: u64,
    /// Molecules per batch.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps from 0 to `lr`.
    pub warmup_steps: u64,
    /// Learning rate reached at the last step.
    pub final_lr: f64,
    /// Weights in stage 1.
    pub stage1: LossWeights,
    /// Weights in stage 2.
    pub stage2: LossWeights,
}

impl TrainingPlan {
    /// The paper's plan: 300k + 200k steps, batch 256, Adam lr 2e-4 with 10k
    /// warm-up and linear decay; stage 1 = 1.0 energy + 0.01 denoising,
    /// stage 2 adds 0.1 optimality + 1.0 score + 1.0 force.
    pub fn paper() -> Self {
        let stage1 = LossWeights {
            energy: 1.0,
            denoising: 0.01,
            force: 0.0,
            optimality: 0.0,
            score: 0.0,
        };
        Self {
            stage1_steps: 300_000,
            stage2_steps: 200_000,
            batch_size: 256,
            lr: 2e-4,
            warmup_steps: 10_000,
            final_lr: 0.0,
            stage1,
            stage2: LossWeights {
                force: 1.0,
                optimality: 0.1,
                score: 1.0,
                ..stage1
            },
        }
    }

    /// A plan that finishes in minutes on a 2-core CPU: 1500 + 1000 steps,
    /// batch 32, lr 1e-3 with 100 warm-up steps, the paper's weights.
    pub fn cpu() -> Self {
        Self {
            stage1_steps: 1_500,
            stage2_steps: 1_000,
            batch_size: 32,
            lr: 1e-3,
            warmup_steps: 100,
            final_lr: 1e-5,
            ..Self::paper()
        }
    }

    /// Checks the plan.
    ///
    /// # Errors
    /// [`Error::Invalid`] for no steps, a zero batch, a learning rate
    /// that is not positive and finite, `final_lr` above `lr`, or a bad weight.
    pub fn validate(&self) -> Result<()> {
        if self.total_steps() == 0 {
            return Err(Error::Invalid {
                name: "steps",
                reason: "the plan has no steps".into(),
            });
        }
        if self.batch_size == 0 {
            return Err(Error::Invalid {
                name: "batch_size",
                reason: "must be at least 1".into(),
            });
        }
        let lr_ok = self.lr.is_finite() && self.lr > 0.0;
        if !(lr_ok && self.final_lr.is_finite() && (0.0..=self.lr).contains(&self.final_lr)) {
            return Err(Error::Invalid {
                name: "lr",
                reason: format!(
                    "need 0 < lr and 0 <= final_lr <= lr, got lr {} final_lr {}",
                    self.lr, self.final_lr
                ),
            });
        }
        self.stage1.check("stage1")?;
        self.stage2.check("stage2")
    }

    /// Steps of both stages.
    pub fn total_steps(&self) -> u64 {
        self.stage1_steps + self.stage2_steps
    }

    /// The stage of 0-based `step`.
    ///
    /// # Errors
    /// [`Error::Invalid`] past the last step.
    pub fn stage(&self, step: u64) -> Result<Stage> {
        self.in_range(step)?;
        Ok(if step < self.stage1_steps {
            Stage::MultiTask
        } else {
            Stage::Consistency
        })
    }

    /// The loss weights at `step`.
    ///
    /// # Errors
    /// As [`TrainingPlan::stage`].
    pub fn weights(&self, step: u64) -> Result<LossWeights> {
        Ok(match self.stage(step)? {
            Stage::MultiTask => self.stage1,
            Stage::Consistency => self.stage2,
        })
    }

    /// The learning rate at `step`: `lr (step + 1) / warmup` during warm-up,
    /// then linear from `lr` to `final_lr` at the last step.
    ///
    /// # Errors
    /// As [`TrainingPlan::stage`].
    pub fn lr(&self, step: u64) -> Result<f64> {
        self.in_range(step)?;
        if step < self.warmup_steps {
            return Ok(self.lr * (step + 1) as f64 / self.warmup_steps as f64);
        }
        let span = self
            .total_steps()
            .saturating_sub(1)
            .saturating_sub(self.warmup_steps);
        if span == 0 {
            return Ok(self.lr);
        }
        let w = (step - self.warmup_steps) as f64 / span as f64;
        Ok(self.lr + w * (self.final_lr - self.lr))
    }

    fn in_range(&self, step: u64) -> Result<()> {
        if step < self.total_steps() {
            Ok(())
        } else {
            Err(Error::Invalid {
                name: "step",
                reason: format!("{step} is past the plan's last step ({})", self.total_steps() - 1),
            })
        }
    }
}
