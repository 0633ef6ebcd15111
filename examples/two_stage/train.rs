//! Two-stage training of the reference model with physcon's losses, and
//! checkpoints that resume to the same numbers.
//!
//! Determinism: every step seeds libtorch's generator from (seed, arm, step)
//! and draws its batch from a per-epoch shuffle of (seed, epoch), so a run
//! resumed from a checkpoint (weights, Adam moments, step) continues exactly
//! as the uninterrupted run would.

use std::fs::File;
use std::io::Write;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Instant;

use physcon::data::{Dataset, LabelledBatch};
use physcon::diffusion::{q_sample, x0_from_eps, NoiseSchedule, Noised};
use physcon::losses::{
    denoising_loss, force_loss, EnergyLoss, Forces, LossTerms, Optimality, OptimalityLoss, ScoreConsistency,
};
use physcon::schedule::{LossWeights, TrainingPlan};
use physcon::{AtomicReferences, Error, Result, Temperature};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::model::{Graph, Model, ModelConfig, ELEMENTS};

/// Everything a run needs besides data.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub name: String,
    pub plan: TrainingPlan,
    pub model: ModelConfig,
    /// kT of score consistency (eV).
    pub kt: f64,
    /// Steps drawn for score consistency (small noise).
    pub score_t: RangeInclusive<i64>,
    /// Steps at which the one-step generated structure `x0_hat(R_t)` is made for optimality.
    pub optimality_t: RangeInclusive<i64>,
    /// Which form of optimality consistency.
    pub optimality: Optimality,
    /// Fraction of denoising samples drawn from `small_t` instead of all steps: refining a
    /// structure needs a precise denoiser at small noise, which uniform steps train rarely.
    pub small_t_fraction: f64,
    /// The small-noise steps of the denoising loss.
    pub small_t: RangeInclusive<i64>,
    /// Diffusion steps T.
    pub diffusion_steps: i64,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Gradient-norm clip.
    pub clip: f64,
}

impl Settings {
    /// The named preset: `cpu` (default, both arms within minutes on 2 cores),
    /// `quick` (a smoke run), `paper` (the paper's steps and batch size).
    pub fn preset(name: &str) -> Result<Self> {
        let base = Self {
            name: name.to_owned(),
            plan: TrainingPlan::cpu(),
            model: ModelConfig::default(),
            kt: Temperature::kelvin(450.0)?.kt(),
            score_t: 1..=20,
            optimality_t: 1..=10,
            optimality: Optimality::Stationarity,
            small_t_fraction: 0.0,
            small_t: 1..=100,
            diffusion_steps: 1000,
            checkpoint_every: 200,
            clip: 10.0,
        };
        Ok(match name {
            "cpu" => base,
            "quick" => Self {
                plan: TrainingPlan {
                    stage1_steps: 30,
                    stage2_steps: 20,
                    batch_size: 8,
                    warmup_steps: 5,
                    ..TrainingPlan::cpu()
                },
                model: ModelConfig {
                    hidden: 32,
                    layers: 2,
                    ..ModelConfig::default()
                },
                checkpoint_every: 10,
                ..base
            },
            "paper" => Self {
                plan: TrainingPlan::paper(),
                checkpoint_every: 5000,
                ..base
            },
            other => {
                return Err(Error::InvalidArgument {
                    arg: "--preset",
                    reason: format!("unknown preset `{other}` (cpu, quick, paper)"),
                })
            }
        })
    }
}

/// Which stage-2 losses a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// Stage 1 (shared by both arms).
    Stage1,
    /// Stage 2 with optimality and score consistency.
    Consistency,
    /// Stage 2 with the consistency losses off (force loss on): the control.
    Control,
}

impl Arm {
    pub fn name(self) -> &'static str {
        match self {
            Arm::Stage1 => "stage1",
            Arm::Consistency => "consistency",
            Arm::Control => "control",
        }
    }

    fn salt(self) -> u64 {
        match self {
            Arm::Stage1 => 1,
            Arm::Consistency => 2,
            Arm::Control => 3,
        }
    }
}

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
            return Err(Error::InvalidArgument {
                arg: "data",
                reason: "the training split has no `mmff` frames".into(),
            });
        }
        Ok(data)
    }

    /// Atomic reference energies from the cheap-level frames' energies.
    pub fn references(&self) -> Result<AtomicReferences> {
        let frames = self.structures.frames();
        let species: Vec<Vec<i64>> = frames.iter().map(|f| f.species.clone()).collect();
        let energies: Vec<f64> = frames.iter().map(|f| f.energy.unwrap_or(f64::NAN)).collect();
        AtomicReferences::fit(&species, &energies)
    }
}

/// Adam with its state in plain tensors, so checkpoints carry it.
pub struct Adam {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: i64,
}

impl Adam {
    pub fn new(params: &[Tensor]) -> Self {
        Self {
            m: params.iter().map(Tensor::zeros_like).collect(),
            v: params.iter().map(Tensor::zeros_like).collect(),
            t: 0,
        }
    }

    /// One Adam step (betas 0.9, 0.999) after clipping the global gradient norm to `clip`.
    pub fn step(&mut self, params: &[Tensor], lr: f64, clip: f64) -> f64 {
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        self.t += 1;
        let grads: Vec<Option<Tensor>> = params
            .iter()
            .map(|p| Some(p.grad()).filter(Tensor::defined))
            .collect();
        let norm = grads
            .iter()
            .flatten()
            .map(|g| g.square().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt();
        let scale = if norm > clip { clip / norm } else { 1.0 };
        tch::no_grad(|| {
            for ((p, g), (m, v)) in params
                .iter()
                .zip(&grads)
                .zip(self.m.iter_mut().zip(self.v.iter_mut()))
            {
                let Some(g) = g else { continue };
                let g = g * scale;
                *m = &*m * b1 + &g * (1.0 - b1);
                *v = &*v * b2 + g.square() * (1.0 - b2);
                let m_hat = &*m / (1.0 - b1.powi(self.t as i32));
                let v_hat = &*v / (1.0 - b2.powi(self.t as i32));
                let mut p = p.shallow_clone();
                let _ = p.f_sub_(&(m_hat / (v_hat.sqrt() + eps) * lr));
            }
        });
        norm
    }
}

/// The batches of one step and their graphs.
pub struct StepBatches {
    /// Equilibrium (`mmff`) frames.
    pub structures: LabelledBatch,
    pub g: Graph,
    /// Off-equilibrium (`xtb-perturbed`) frames, when the step uses them.
    pub offeq: Option<(LabelledBatch, Graph)>,
}

/// What one noised term drew: steps `t` `[B]` and noise `eps` `[N, 3]`.
// Training discards them; benches/step.rs (which compiles this file) writes them
// to its fixtures so the PyTorch side can replay the step.
#[allow(dead_code)]
pub struct Drawn {
    pub t: Tensor,
    pub eps: Tensor,
}

impl Drawn {
    fn new(t: Tensor, noised: &Noised) -> Self {
        Self {
            t,
            eps: noised.eps().shallow_clone(),
        }
    }
}

/// What a step drew from libtorch's generator, per noised term.
#[derive(Default)]
pub struct Draws {
    pub denoising: Option<Drawn>,
    pub optimality: Option<Drawn>,
    pub score: Option<Drawn>,
}

/// A model, its optimiser state and where it is in the plan.
pub struct Trainer {
    pub settings: Settings,
    pub vs: VarStore,
    pub model: Model,
    pub adam: Adam,
    pub step: u64,
    pub seed: u64,
    pub schedule: NoiseSchedule,
}

/// Mixes a seed with two counters into an independent seed (SplitMix64 finaliser).
pub fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ c.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The indices of the batch of `step` in a dataset of `len` frames.
pub fn batch_indices(data: &Dataset, batch_size: usize, seed: u64, step: u64) -> Result<Vec<usize>> {
    let per_epoch = data.len().div_ceil(batch_size) as u64;
    let (epoch, k) = (step / per_epoch, step % per_epoch);
    let batches = data.batches(batch_size, mix(seed, epoch, 0xba7c))?;
    Ok(batches[k as usize].clone())
}

impl Trainer {
    /// A fresh model (f32) with atomic references fitted on the training data.
    pub fn new(settings: Settings, seed: u64, data: &TrainData) -> Result<Self> {
        settings.plan.validate()?;
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
        })
    }

    /// The stage weights of the current step; the control arm never uses the consistency terms.
    pub fn weights(&self, arm: Arm) -> Result<LossWeights> {
        let mut weights = self.settings.plan.weights(self.step)?;
        if arm == Arm::Control {
            weights.optimality = 0.0;
            weights.score = 0.0;
        }
        Ok(weights)
    }

    /// The batches of the current step in `kind`: equilibrium structures, and the
    /// off-equilibrium frames when the forces or score consistency use them.
    pub fn batches(&self, weights: &LossWeights, data: &TrainData, kind: Kind) -> Result<StepBatches> {
        let bs = self.settings.plan.batch_size;
        let structures = data.structures.batch(
            &batch_indices(&data.structures, bs, self.seed, self.step)?,
            kind,
            Device::Cpu,
        )?;
        let g = Graph::new(&structures.batch, kind)?;
        let offeq = if (weights.force > 0.0 || weights.score > 0.0) && !data.offeq.is_empty() {
            let indices = batch_indices(&data.offeq, bs, self.seed ^ 0x0ffe, self.step)?;
            let b = data.offeq.batch(&indices, kind, Device::Cpu)?;
            let g2 = Graph::new(&b.batch, kind)?;
            Some((b, g2))
        } else {
            None
        };
        Ok(StepBatches { structures, g, offeq })
    }

    /// Energy loss (per-atom MSE) and, with `with_forces`, the force loss of one batch.
    ///
    /// One forward serves both: the forces come from a create-graph backward, so
    /// the force loss trains the energy model (a double backward).
    pub fn energy_force(
        &self,
        b: &LabelledBatch,
        g: &Graph,
        with_forces: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let layout = &g.layout;
        let pos = b.batch.pos();
        let x = pos.detach().set_requires_grad(with_forces);
        let e = self.model.energy(g, &x);
        let l_energy =
            EnergyLoss::default()
                .per_atom(true)
                .forward(&e, &b.energy, layout, Some(&b.energy_mask))?;
        if !with_forces {
            return Ok((l_energy, None));
        }
        let f = -Tensor::run_backward(&[e.sum(pos.kind())], &[&x], true, true).remove(0);
        let l_force = force_loss(&f, &b.forces, layout, Some(&b.force_mask))?;
        Ok((l_energy, Some(l_force)))
    }

    /// Denoising loss at t uniform in 1..=T, or in the small range with probability
    /// `small_t_fraction`; with what it drew.
    pub fn denoising(&self, b: &LabelledBatch, g: &Graph) -> Result<(Tensor, Drawn)> {
        let layout = &g.layout;
        let n = layout.num_molecules();
        let t_all = self
            .schedule
            .sample_t(n, 1..=self.settings.diffusion_steps, Device::Cpu)?;
        let t_small = self
            .schedule
            .sample_t(n, self.settings.small_t.clone(), Device::Cpu)?;
        let pick_small = Tensor::rand([n], (Kind::Float, Device::Cpu)).lt(self.settings.small_t_fraction);
        let t = t_small.where_self(&pick_small, &t_all);
        let noised = q_sample(&self.schedule, b.batch.pos(), &t, layout)?;
        let eps_hat = self.model.eps(g, noised.x_t(), &t);
        let loss = denoising_loss(&eps_hat, noised.eps(), layout)?;
        Ok((loss, Drawn::new(t, &noised)))
    }

    /// Optimality consistency (`settings.optimality`, flow `ToStructure`) of the
    /// one-step structure `x0_hat(R_t)` at t in `optimality_t`; with what it drew.
    pub fn optimality(&self, b: &LabelledBatch, g: &Graph) -> Result<(Tensor, Drawn)> {
        let layout = &g.layout;
        let pos = b.batch.pos();
        let t = self.schedule.sample_t(
            layout.num_molecules(),
            self.settings.optimality_t.clone(),
            Device::Cpu,
        )?;
        let noised = q_sample(&self.schedule, pos, &t, layout)?;
        let eps_hat = self.model.eps(g, noised.x_t(), &t);
        let generated = x0_from_eps(noised.x_t(), &eps_hat, noised.level(), layout)?;
        let energy = self.model.energy_model(g);
        let loss = OptimalityLoss {
            form: self.settings.optimality,
            ..OptimalityLoss::default()
        };
        let reference = (self.settings.optimality == Optimality::EnergyDescent).then_some(pos);
        let l = loss.forward(&energy, &generated, reference, layout)?;
        Ok((l, Drawn::new(t, &noised)))
    }

    /// Score consistency with the model's own forces at t in `score_t` (flow
    /// `ToStructure`); with what it drew.
    pub fn score(&self, b: &LabelledBatch, g: &Graph) -> Result<(Tensor, Drawn)> {
        let layout = &g.layout;
        let t = self
            .schedule
            .sample_t(layout.num_molecules(), self.settings.score_t.clone(), Device::Cpu)?;
        let noised = q_sample(&self.schedule, b.batch.pos(), &t, layout)?;
        let eps_hat = self.model.eps(g, noised.x_t(), &t);
        let energy = self.model.energy_model(g);
        let l = ScoreConsistency::new(self.settings.kt)?.forward(
            &eps_hat,
            &noised,
            Forces::Model(&energy),
            layout,
        )?;
        Ok((l, Drawn::new(t, &noised)))
    }

    /// The weighted loss terms of one step on `batches`, drawing steps and noise
    /// from libtorch's generator in a fixed order; with what was drawn.
    pub fn losses(&self, weights: &LossWeights, batches: &StepBatches) -> Result<(LossTerms, Draws)> {
        let StepBatches { structures, g, offeq } = batches;
        let mut terms = LossTerms::new();
        let mut draws = Draws::default();

        // Stage 2 trains forces on every frame that has them: the accurate forces at
        // the cheap structures say where the accurate minimum lies.
        let with_forces = weights.force > 0.0;
        let (mut l_energy, force) = self.energy_force(structures, g, with_forces)?;
        let mut l_force: Vec<Tensor> = force.into_iter().collect();

        let (l, drawn) = self.denoising(structures, g)?;
        terms.push("denoising", weights.denoising, l)?;
        draws.denoising = Some(drawn);

        if let (Some((b, g2)), true) = (offeq, with_forces) {
            let (l2, f2) = self.energy_force(b, g2, true)?;
            l_force.extend(f2);
            l_energy = (l_energy + l2) * 0.5;
        }
        if !l_force.is_empty() {
            let n = l_force.len() as f64;
            let sum = l_force
                .into_iter()
                .reduce(|a, b| a + b)
                .unwrap_or_else(|| Tensor::from(0.0f32));
            terms.push("force", weights.force, sum / n)?;
        }
        terms.push("energy", weights.energy, l_energy)?;

        if weights.optimality > 0.0 {
            let (l, drawn) = self.optimality(structures, g)?;
            terms.push("optimality", weights.optimality, l)?;
            draws.optimality = Some(drawn);
        }
        if let (Some((b, g2)), true) = (offeq, weights.score > 0.0) {
            let (l, drawn) = self.score(b, g2)?;
            terms.push("score", weights.score, l)?;
            draws.score = Some(drawn);
        }
        Ok((terms, draws))
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
        let bar = indicatif::ProgressBar::new(until.saturating_sub(self.step));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("{} s{}", arm.name(), self.seed));
        while self.step < until {
            let started = Instant::now();
            tch::manual_seed(mix(self.seed, arm.salt(), self.step) as i64);
            let weights = self.weights(arm)?;
            let batches = self.batches(&weights, data, Kind::Float)?;
            let (terms, _) = self.losses(&weights, &batches)?;
            let total = terms.total()?;
            for p in &params {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.f_zero_();
                }
            }
            total.backward();
            let lr = self.settings.plan.lr(self.step)?;
            let grad_norm = self.adam.step(&params, lr, self.settings.clip);
            let value = total.double_value(&[]);
            if !value.is_finite() {
                return Err(Error::NonFinite { arg: "training loss" });
            }
            log.row(
                arm,
                self.step,
                lr,
                value,
                grad_norm,
                &terms,
                started.elapsed().as_secs_f64(),
            )?;
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

    /// Writes weights, Adam state and position to a safetensors file (temp file, then rename).
    pub fn save(&self, path: &Path, arm: Arm) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .map(|(k, v)| (format!("model.{k}"), v))
            .collect();
        for (k, (m, v)) in self.adam.m.iter().zip(&self.adam.v).enumerate() {
            named.push((format!("adam.m.{k}"), m.shallow_clone()));
            named.push((format!("adam.v.{k}"), v.shallow_clone()));
        }
        let c = self.settings.model;
        let meta = [
            self.step as i64,
            self.adam.t,
            self.seed as i64,
            arm.salt() as i64,
            c.hidden,
            c.layers,
            c.rbf,
        ];
        named.push(("meta.ints".into(), Tensor::from_slice(&meta)));
        named.push(("meta.rbf_max".into(), Tensor::from_slice(&[c.rbf_max])));
        named.push(("meta.elements".into(), Tensor::from_slice(&ELEMENTS)));
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let tmp = path.with_extension("safetensors.partial");
        let refs: Vec<(&str, &Tensor)> = named.iter().map(|(k, v)| (k.as_str(), v)).collect();
        Tensor::write_safetensors(&refs, &tmp)?;
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Restores a checkpoint written by [`Trainer::save`] into this trainer.
    ///
    /// # Errors
    /// A missing or corrupt file, or one written for another model size or element set.
    pub fn load(&mut self, path: &Path) -> Result<Arm> {
        let (arm, named) = read_checkpoint(path, self.settings.model)?;
        let vars = self.vs.variables();
        tch::no_grad(|| -> Result<()> {
            for (name, var) in &vars {
                let src = named
                    .get(&format!("model.{name}"))
                    .ok_or_else(|| corrupt(path, &format!("no variable `{name}`")))?;
                if src.size() != var.size() {
                    return Err(corrupt(
                        path,
                        &format!("`{name}` has shape {:?}, the model {:?}", src.size(), var.size()),
                    ));
                }
                let mut var = var.shallow_clone();
                var.f_copy_(src)?;
            }
            Ok(())
        })?;
        for k in 0..self.adam.m.len() {
            let get = |w: &str| {
                named
                    .get(&format!("adam.{w}.{k}"))
                    .map(Tensor::shallow_clone)
                    .ok_or_else(|| corrupt(path, "no optimiser state"))
            };
            self.adam.m[k] = get("m")?;
            self.adam.v[k] = get("v")?;
        }
        let ints = Vec::<i64>::try_from(&named["meta.ints"])?;
        self.step = ints[0] as u64;
        self.adam.t = ints[1];
        Ok(arm)
    }
}

fn corrupt(path: &Path, what: &str) -> Error {
    Error::InvalidArgument {
        arg: "checkpoint",
        reason: format!("{}: {what}", path.display()),
    }
}

/// Reads a checkpoint's tensors and checks it fits a model of `config`.
pub fn read_checkpoint(
    path: &Path,
    config: ModelConfig,
) -> Result<(Arm, std::collections::HashMap<String, Tensor>)> {
    if !path.exists() {
        return Err(Error::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no checkpoint here"),
        });
    }
    let named: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .map_err(|e| corrupt(path, &format!("not a readable safetensors file ({e})")))?
        .into_iter()
        .collect();
    let ints = named
        .get("meta.ints")
        .ok_or_else(|| corrupt(path, "not a physcon checkpoint (no meta.ints)"))?;
    let ints = Vec::<i64>::try_from(ints)?;
    if ints.len() != 7 {
        return Err(corrupt(path, "meta.ints has the wrong length"));
    }
    if (ints[4], ints[5], ints[6]) != (config.hidden, config.layers, config.rbf) {
        return Err(corrupt(
            path,
            &format!(
                "written for hidden {} layers {} rbf {}, not the preset's {:?}",
                ints[4], ints[5], ints[6], config
            ),
        ));
    }
    let elements = named.get("meta.elements").map(Vec::<i64>::try_from).transpose()?;
    if elements.as_deref() != Some(&ELEMENTS[..]) {
        return Err(corrupt(path, "written for another element set"));
    }
    let arm = match ints[3] {
        1 => Arm::Stage1,
        2 => Arm::Consistency,
        3 => Arm::Control,
        _ => return Err(corrupt(path, "unknown arm")),
    };
    Ok((arm, named))
}

/// Metrics per step as CSV.
pub struct Log {
    file: File,
    path: PathBuf,
}

pub const LOG_TERMS: [&str; 5] = ["energy", "denoising", "force", "optimality", "score"];

impl Log {
    /// Opens (appends to) `path`, writing the header to a new file.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let fresh = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if fresh {
            writeln!(
                file,
                "arm,step,lr,total,grad_norm,{},seconds",
                LOG_TERMS.join(",")
            )
            .map_err(io)?;
        }
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        arm: Arm,
        step: u64,
        lr: f64,
        total: f64,
        grad_norm: f64,
        terms: &LossTerms,
        seconds: f64,
    ) -> Result<()> {
        let values = terms.breakdown();
        let cell = |name: &str| {
            values
                .iter()
                .find(|t| t.name == name)
                .map(|t| format!("{:.6e}", t.value))
                .unwrap_or_default()
        };
        let cells: Vec<String> = LOG_TERMS.iter().map(|n| cell(n)).collect();
        writeln!(
            self.file,
            "{},{step},{lr:.3e},{total:.6e},{grad_norm:.4e},{},{seconds:.4}",
            arm.name(),
            cells.join(",")
        )
        .map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Stage 1, then both stage-2 arms from its checkpoint, with resume.
pub fn train_all(
    settings: &Settings,
    seed: u64,
    data: &TrainData,
    out: &Path,
    resume: bool,
) -> Result<[PathBuf; 2]> {
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_owned(),
        source,
    })?;
    let mut log = Log::open(&out.join("metrics.csv"))?;
    let plan = &settings.plan;
    let stage1 = out.join("stage1.safetensors");
    let mut trainer = Trainer::new(settings.clone(), seed, data)?;
    if resume && stage1.exists() {
        trainer.load(&stage1)?;
    } else if stage1.exists() && !resume {
        return Err(Error::InvalidArgument {
            arg: "--out",
            reason: format!(
                "{} already holds a run; pass --resume to continue it or choose another --out",
                out.display()
            ),
        });
    }
    trainer.run(Arm::Stage1, plan.stage1_steps, data, &mut log, &stage1)?;
    let mut paths = Vec::new();
    for arm in [Arm::Consistency, Arm::Control] {
        let path = out.join(format!("{}.safetensors", arm.name()));
        let mut trainer = Trainer::new(settings.clone(), seed, data)?;
        trainer.load(if resume && path.exists() { &path } else { &stage1 })?;
        trainer.run(arm, plan.total_steps(), data, &mut log, &path)?;
        paths.push(path);
    }
    Ok([paths.remove(0), paths.remove(0)])
}

/// A trained model loaded from a checkpoint, for evaluation and prediction.
pub fn load_model(path: &Path, settings: &Settings) -> Result<(VarStore, Model, Arm)> {
    let vs = VarStore::new(Device::Cpu);
    let model = Model::new(&vs.root(), settings.model, settings.diffusion_steps);
    let mut trainer = Trainer {
        settings: settings.clone(),
        adam: Adam::new(&vs.trainable_variables()),
        vs,
        model,
        step: 0,
        seed: 0,
        schedule: NoiseSchedule::cosine(settings.diffusion_steps)?,
    };
    let arm = trainer.load(path)?;
    Ok((trainer.vs, trainer.model, arm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use physcon::data::Splits;

    /// A run interrupted at a checkpoint and resumed ends with the same weights
    /// and Adam state as the uninterrupted run, in both stages.
    #[test]
    fn resume_reproduces_the_uninterrupted_run() {
        let _rng = crate::rng_lock();
        tch::set_num_threads(1);
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let splits = Splits::read_dir(root.join("data")).unwrap();
        // A small slice of the training set keeps this fast.
        let ids: std::collections::HashSet<&str> = splits.train.molecule_ids().into_iter().take(24).collect();
        let data = TrainData::new(&splits.train.filter(|f| ids.contains(f.mol_id.as_str()))).unwrap();
        let mut settings = Settings::preset("quick").unwrap();
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
        assert_eq!(resumed.step, 3);
        resumed.run(Arm::Stage1, 6, &data, &mut log, &ckpt).unwrap();
        resumed.run(Arm::Consistency, 8, &data, &mut log, &ckpt).unwrap();
        let mut again = Trainer::new(settings, 5, &data).unwrap();
        assert_eq!(again.load(&ckpt).unwrap(), Arm::Consistency);
        again.run(Arm::Consistency, 10, &data, &mut log, &ckpt).unwrap();

        let (a, b) = (straight.vs.variables(), again.vs.variables());
        for (name, value) in &a {
            assert!(value.equal(&b[name]), "{name} differs after resume");
        }
        for (m, n) in straight.adam.m.iter().zip(&again.adam.m) {
            assert!(m.equal(n));
        }
        // Corrupt and missing checkpoints are clear errors, not panics.
        std::fs::write(&ckpt, b"not a checkpoint").unwrap();
        assert!(matches!(
            again.load(&ckpt),
            Err(Error::InvalidArgument {
                arg: "checkpoint",
                ..
            })
        ));
        assert!(matches!(
            again.load(&dir.join("missing.safetensors")),
            Err(Error::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
