//! The training loop: [`Trainer`] runs an [`Arm`] step by step (objective,
//! optimiser step, log, checkpoint), and [`train_all`] runs stage 1 and both
//! stage-2 arms (the two of the main run or the four of the ablation) with resume.
//!
//! Determinism: every step seeds libtorch's generator from (seed, arm, step)
//! and draws its batch from a per-epoch shuffle of (seed, epoch), so a run
//! resumed from a checkpoint (weights, Adam moments, step) continues exactly
//! as the uninterrupted run would.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::{Error, Result};
use physcon::diffusion::NoiseSchedule;
use tch::nn::VarStore;
use tch::{Device, Kind};

use crate::checkpoint::{self, Checkpoint, CheckpointMeta};
use crate::data::{mix, StepBatches, TrainData};
use crate::log::{progress, Log, StepRecord};
use crate::model::Model;
use crate::objective::{Arm, Losses, Objective};
use crate::optim::Adam;
use crate::plan::LossWeights;
use crate::settings::Settings;

/// The RNG salt of an arm's steps (stage 1 and each stage-2 arm draw independently).
fn salt(arm: Arm) -> u64 {
    match arm {
        Arm::Stage1 => 1,
        Arm::Consistency => 2,
        Arm::Control => 3,
        Arm::OptimalityOnly => 4,
        Arm::ScoreOnly => 5,
        Arm::Oracle => 6,
    }
}

/// Seeds libtorch's generator for `step` of `arm`, as [`Trainer::run`] does before each step.
pub fn seed_step(seed: u64, arm: Arm, step: u64) {
    tch::manual_seed(mix(seed, salt(arm), step) as i64);
}

/// A model, its optimiser state and where it is in the plan.
pub struct Trainer {
    settings: Settings,
    vs: VarStore,
    model: Model,
    adam: Adam,
    step: u64,
    seed: u64,
    schedule: NoiseSchedule,
    losses: Losses,
}

impl Trainer {
    /// A fresh model (f32) with atomic references fitted on the training data.
    pub fn new(settings: Settings, seed: u64, data: &TrainData) -> Result<Self> {
        settings.plan.validate()?;
        data.check_plan(&settings.plan)?;
        let losses = Losses::new(&settings)?;
        tch::manual_seed(mix(seed, 0, 0x1417) as i64);
        let vs = VarStore::new(Device::Cpu);
        let mut model = Model::new(&vs.root(), settings.model, settings.diffusion_steps);
        model.set_references(&data.references()?)?;
        let adam = Adam::new(&vs.trainable_variables());
        let schedule = NoiseSchedule::cosine(settings.diffusion_steps)?;
        Ok(Self {
            settings,
            vs,
            model,
            adam,
            step: 0,
            seed,
            schedule,
            losses,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The model's variables (casting them with `set_kind` casts the model).
    pub fn vs_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    pub fn vs(&self) -> &VarStore {
        &self.vs
    }

    pub fn adam(&self) -> &Adam {
        &self.adam
    }

    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// The next step to run.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Moves to `step` without training (benches measure a stage-2 step of a fresh model).
    pub fn skip_to(&mut self, step: u64) {
        self.step = step;
    }

    /// The losses of this trainer's model.
    pub fn objective(&self) -> Objective<'_> {
        Objective {
            model: &self.model,
            settings: &self.settings,
            schedule: &self.schedule,
            losses: &self.losses,
        }
    }

    /// The loss weights of the current step of `arm`.
    pub fn weights(&self, arm: Arm) -> Result<LossWeights> {
        arm.weights(&self.settings.plan, self.step)
    }

    /// The batches of the current step in `kind`.
    pub fn batches(&self, weights: &LossWeights, data: &TrainData, kind: Kind) -> Result<StepBatches> {
        StepBatches::draw(
            data,
            weights,
            self.settings.plan.batch_size,
            self.seed,
            self.step,
            kind,
        )
    }

    /// Trains `arm` up to (not including) step `until`, logging and checkpointing.
    pub fn run(
        &mut self,
        arm: Arm,
        until: u64,
        data: &TrainData,
        log: &mut Log,
        checkpoint: &Path,
    ) -> Result<()> {
        let params = self.vs.trainable_variables();
        let bar = progress(arm, self.seed, until.saturating_sub(self.step));
        while self.step < until {
            let started = Instant::now();
            seed_step(self.seed, arm, self.step);
            let weights = self.weights(arm)?;
            let batches = self.batches(&weights, data, Kind::Float)?;
            let (terms, _) = self.objective().losses(&weights, arm.teacher(), &batches)?;
            let total = terms.total()?;
            let lr = self.settings.plan.lr(self.step)?;
            let grad_norm = self.adam.minimise(&params, &total, lr, self.settings.clip)?;
            let value = total.double_value(&[]);
            if !value.is_finite() {
                return Err(Error::Invalid {
                    name: "training loss",
                    reason: format!("is {value} at step {}: training diverged", self.step),
                });
            }
            log.row(&StepRecord {
                arm,
                step: self.step,
                lr,
                total: value,
                grad_norm,
                terms: &terms,
                seconds: started.elapsed().as_secs_f64(),
            })?;
            bar.set_message(terms.to_string());
            bar.inc(1);
            self.step += 1;
            if self.step % self.settings.checkpoint_every == 0 || self.step == until {
                self.save(checkpoint, arm)?;
            }
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// Writes a checkpoint of this trainer as `arm`.
    pub fn save(&self, path: &Path, arm: Arm) -> Result<()> {
        let meta = CheckpointMeta {
            arm,
            step: self.step,
            adam_steps: self.adam.t,
            seed: self.seed,
            settings: self.settings.clone(),
        };
        checkpoint::save(path, &self.vs, &self.adam, &meta)
    }

    /// Restores a checkpoint of this run (same settings and seed) into this trainer.
    ///
    /// # Errors
    /// A missing or corrupt file, or one written with other settings or another seed.
    pub fn load(&mut self, path: &Path) -> Result<Arm> {
        let ckpt = Checkpoint::read(path)?;
        ckpt.check_settings(&self.settings)?;
        if ckpt.meta.seed != self.seed {
            return Err(Error::File {
                path: path.to_owned(),
                reason: format!("written by seed {}, not {}", ckpt.meta.seed, self.seed),
            });
        }
        ckpt.restore_model(&self.vs)?;
        ckpt.restore_adam(&mut self.adam)?;
        self.step = ckpt.meta.step;
        Ok(ckpt.meta.arm)
    }
}

/// Stage 1, then each of `arms` from its checkpoint, with resume; their checkpoints.
pub fn train_all(
    settings: &Settings,
    seed: u64,
    data: &TrainData,
    out: &Path,
    resume: bool,
    arms: &[Arm],
) -> Result<ArmCheckpoints> {
    if let Some(arm) = arms.iter().find(|a| **a == Arm::Stage1) {
        return Err(Error::Invalid {
            name: "arms",
            reason: format!("`{}` is not a stage-2 arm", arm.name()),
        });
    }
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_owned(),
        source,
    })?;
    let plan = &settings.plan;
    if resume {
        crate::log::cut_to_checkpoints(&out.join("metrics.csv"), out, plan.stage1_steps)?;
    }
    let mut log = Log::open(&out.join("metrics.csv"))?;
    let stage1 = out.join("stage1.safetensors");
    let mut trainer = Trainer::new(settings.clone(), seed, data)?;
    if resume && stage1.exists() {
        trainer.load(&stage1)?;
    } else if stage1.exists() && !resume {
        return Err(Error::Flag {
            flag: "--out",
            reason: format!(
                "{} already holds a run; pass --resume to continue it or choose another --out",
                out.display()
            ),
        });
    }
    trainer.run(Arm::Stage1, plan.stage1_steps, data, &mut log, &stage1)?;
    let mut paths = Vec::with_capacity(arms.len());
    for &arm in arms {
        let path = out.join(format!("{}.safetensors", arm.name()));
        let mut trainer = Trainer::new(settings.clone(), seed, data)?;
        trainer.load(if resume && path.exists() { &path } else { &stage1 })?;
        trainer.run(arm, plan.total_steps(), data, &mut log, &path)?;
        paths.push((arm, path));
    }
    Ok(ArmCheckpoints(paths))
}

/// The final checkpoint of each stage-2 arm of a seed, in training order.
pub struct ArmCheckpoints(pub Vec<(Arm, PathBuf)>);

/// A trained model read back for evaluation and prediction.
pub struct Trained {
    /// Holds the model's variables.
    pub vs: VarStore,
    pub model: Model,
    pub arm: Arm,
    /// The settings the model was trained with.
    pub settings: Settings,
}

/// Reads the model of a checkpoint, built with the settings stored in it.
///
/// # Errors
/// A missing or corrupt file, or, with `expected`, one trained with other settings.
pub fn load_model(path: &Path, expected: Option<&Settings>) -> Result<Trained> {
    let ckpt = Checkpoint::read(path)?;
    if let Some(expected) = expected {
        ckpt.check_settings(expected)?;
    }
    let settings = ckpt.meta.settings.clone();
    let vs = VarStore::new(Device::Cpu);
    let model = Model::new(&vs.root(), settings.model, settings.diffusion_steps);
    ckpt.restore_model(&vs)?;
    Ok(Trained {
        vs,
        model,
        arm: ckpt.meta.arm,
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Preset;
    use physcon::data::Splits;

    /// Forces and score consistency without off-equilibrium frames are refused
    /// before training, naming the stage, instead of being dropped from every step.
    #[test]
    fn a_plan_that_needs_offeq_frames_is_refused_without_them() {
        let splits = Splits::read_dir(crate::repo_root().join("data")).unwrap();
        let equilibrium_only = splits.train.filter(|f| f.level.as_deref() == Some("mmff"));
        let data = TrainData::new(&equilibrium_only).unwrap();
        assert!(data.offeq.is_empty());
        let mut settings = Settings::preset(Preset::Quick).unwrap();
        let err = Trainer::new(settings.clone(), 0, &data).err().expect("refused");
        assert!(
            matches!(&err, Error::Invalid { name: "stage2", reason } if reason.contains("xtb-perturbed")),
            "{err}"
        );
        // Without those terms the same data train.
        settings.plan.stage2.force = 0.0;
        settings.plan.stage2.score = 0.0;
        assert!(Trainer::new(settings, 0, &data).is_ok());
    }

    /// A run interrupted at a checkpoint and resumed ends with the same weights
    /// and Adam state as the uninterrupted run, in both stages.
    #[test]
    fn resume_reproduces_the_uninterrupted_run() {
        let _rng = crate::rng_lock();
        tch::set_num_threads(1);
        let splits = Splits::read_dir(crate::repo_root().join("data")).unwrap();
        // A small slice of the training set keeps this fast.
        let ids: std::collections::HashSet<&str> = splits.train.molecule_ids().into_iter().take(24).collect();
        let data = TrainData::new(&splits.train.filter(|f| ids.contains(f.mol_id.as_str()))).unwrap();
        let mut settings = Settings::preset(Preset::Quick).unwrap();
        settings.plan.stage1_steps = 6;
        settings.plan.stage2_steps = 4;
        let dir = std::env::temp_dir().join(format!("physcon-resume-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = Log::open(&dir.join("metrics.csv")).unwrap();
        let ckpt = dir.join("a.safetensors");

        let mut straight = Trainer::new(settings.clone(), 5, &data).unwrap();
        straight.run(Arm::Stage1, 6, &data, &mut log, &ckpt).unwrap();
        straight
            .run(Arm::Consistency, 10, &data, &mut log, &ckpt)
            .unwrap();

        let mut first = Trainer::new(settings.clone(), 5, &data).unwrap();
        first.run(Arm::Stage1, 3, &data, &mut log, &ckpt).unwrap();
        let mut resumed = Trainer::new(settings.clone(), 5, &data).unwrap();
        assert_eq!(resumed.load(&ckpt).unwrap(), Arm::Stage1);
        assert_eq!(resumed.step(), 3);
        resumed.run(Arm::Stage1, 6, &data, &mut log, &ckpt).unwrap();
        resumed.run(Arm::Consistency, 8, &data, &mut log, &ckpt).unwrap();
        let mut again = Trainer::new(settings.clone(), 5, &data).unwrap();
        assert_eq!(again.load(&ckpt).unwrap(), Arm::Consistency);
        again.run(Arm::Consistency, 10, &data, &mut log, &ckpt).unwrap();

        let (a, b) = (straight.vs().variables(), again.vs().variables());
        for (name, value) in &a {
            assert!(value.equal(&b[name]), "{name} differs after resume");
        }
        for (m, n) in straight
            .adam()
            .first_moments()
            .iter()
            .zip(again.adam().first_moments())
        {
            assert!(m.equal(n));
        }
        // Another seed or other settings are refused, naming what differs.
        let mut other_seed = Trainer::new(settings.clone(), 6, &data).unwrap();
        assert!(matches!(
            other_seed.load(&ckpt),
            Err(Error::File { reason, .. }) if reason.contains("seed 5")
        ));
        let mut longer = settings;
        longer.plan.stage2_steps = 5;
        let mut other_plan = Trainer::new(longer, 5, &data).unwrap();
        assert!(matches!(
            other_plan.load(&ckpt),
            Err(Error::File { reason, .. }) if reason.contains("`plan.stage2_steps = 4`")
        ));
        // Corrupt and missing checkpoints are clear errors, not panics.
        std::fs::write(&ckpt, b"not a checkpoint").unwrap();
        assert!(matches!(again.load(&ckpt), Err(Error::File { .. })));
        assert!(matches!(
            again.load(&dir.join("missing.safetensors")),
            Err(Error::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
