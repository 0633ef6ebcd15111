//! The training objective: which losses a step uses ([`Arm`] and the plan's
//! weights) and their values on a step's batches ([`Objective`]), apart from
//! the optimiser and the loop, in the spirit of TorchMD-Net's
//! `step(batch, loss_fn, stage)`.
//!
//! Every stochastic term draws its steps and noise from libtorch's generator in
//! a fixed order, so a step is reproducible from the generator's seed.

use crate::{Error, Result};
use physcon::data::LabelledBatch;
use physcon::diffusion::{q_sample, x0_from_eps, NoiseSchedule, Noised};
use physcon::losses::{
    DenoisingLoss, EnergyDescentLoss, EnergyLoss, EnergyMetric, ForceLoss, Forces, LossTerms,
    ScoreConsistency, StationarityLoss,
};
use physcon::{energy_and_forces, EnergyModel};
use tch::{Device, Kind, Tensor};

use crate::data::StepBatches;
use crate::model::{Graph, Model};
use crate::plan::{LossWeights, Term, TrainingPlan};
use crate::settings::{OptimalityForm, Settings};

/// Which stage-2 losses a run uses.
///
/// Every stage-2 arm starts from the same stage-1 checkpoint and trains energy,
/// forces and denoising alike; they differ only in the consistency terms, so the
/// ablation arms show each law's contribution on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arm {
    /// Stage 1 (shared by every stage-2 arm).
    Stage1,
    /// Stage 2 with optimality and score consistency.
    Consistency,
    /// Stage 2 with the consistency losses off (force loss on): the control.
    Control,
    /// Stage 2 with optimality consistency only (ablation).
    OptimalityOnly,
    /// Stage 2 with score consistency only (ablation).
    ScoreOnly,
    /// Stage 2 as [`Arm::Consistency`], but score consistency takes the frames'
    /// accurate (GFN2-xTB) forces instead of the energy model's: a perfect
    /// teacher, the ceiling of what the learned one can reach.
    Oracle,
}

/// Where score consistency's forces come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teacher {
    /// The energy model being trained (the method).
    Model,
    /// The frames' accurate force labels (the oracle).
    Labels,
}

impl Arm {
    pub const ALL: [Arm; 6] = [
        Arm::Stage1,
        Arm::Consistency,
        Arm::Control,
        Arm::OptimalityOnly,
        Arm::ScoreOnly,
        Arm::Oracle,
    ];
    /// The stage-2 arms of the default run: the control and both laws.
    pub const MAIN: [Arm; 2] = [Arm::Control, Arm::Consistency];
    /// The stage-2 arms of the ablation: each law on its own besides the two above.
    pub const ABLATION: [Arm; 4] = [
        Arm::Control,
        Arm::OptimalityOnly,
        Arm::ScoreOnly,
        Arm::Consistency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Arm::Stage1 => "stage1",
            Arm::Consistency => "consistency",
            Arm::Control => "control",
            Arm::OptimalityOnly => "optimality-only",
            Arm::ScoreOnly => "score-only",
            Arm::Oracle => "oracle",
        }
    }

    /// What the arm trains in stage 2, for tables.
    pub fn describe(self) -> &'static str {
        match self {
            Arm::Stage1 => "stage 1 (energy + denoising)",
            Arm::Consistency => "consistency (optimality + score)",
            Arm::Control => "control (no consistency)",
            Arm::OptimalityOnly => "+ optimality only",
            Arm::ScoreOnly => "+ score consistency only",
            Arm::Oracle => "oracle (score consistency with the xTB forces)",
        }
    }

    /// Whose forces the arm's score consistency takes.
    pub fn teacher(self) -> Teacher {
        if self == Arm::Oracle {
            Teacher::Labels
        } else {
            Teacher::Model
        }
    }

    /// The arm called `name`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a name no arm has.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| Error::Invalid {
                name: "arm",
                reason: format!("unknown arm `{name}` ({})", Self::ALL.map(Arm::name).join(", ")),
            })
    }

    /// The loss weights of `step`, with the consistency terms this arm leaves out set to 0.
    pub fn weights(self, plan: &TrainingPlan, step: u64) -> Result<LossWeights> {
        let mut weights = plan.weights(step)?;
        if matches!(self, Arm::Control | Arm::ScoreOnly) {
            weights.optimality = 0.0;
        }
        if matches!(self, Arm::Control | Arm::OptimalityOnly) {
            weights.score = 0.0;
        }
        Ok(weights)
    }
}

/// What one noised term drew: steps `t` `[B]` and noise `eps` `[N, 3]`.
///
/// Training discards them; `benches/step.rs` writes them to its fixtures so the
/// PyTorch side can replay the step.
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
    /// Score consistency on the off-equilibrium frames.
    pub score: Option<Drawn>,
    /// Score consistency on the cheap-level structures (`score_frames`).
    pub score_structures: Option<Drawn>,
}

/// Optimality consistency in the form the settings choose.
enum OptimalityLoss {
    Stationarity(StationarityLoss),
    Descent(EnergyDescentLoss),
}

/// The example's losses, built once from the settings (each validates its own).
pub struct Losses {
    energy: EnergyLoss,
    force: ForceLoss,
    denoising: DenoisingLoss,
    optimality: OptimalityLoss,
    score: ScoreConsistency,
}

impl Losses {
    /// Per-atom MSE energy, force MSE, denoising, optimality consistency in
    /// `settings.optimality`'s form, score consistency at `settings.kt`; every
    /// consistency loss with the default flow (`ToStructure`).
    ///
    /// # Errors
    /// [`Error::Physcon`] (the library's `NonPositive`) for a `kt` that is not positive and finite.
    pub fn new(settings: &Settings) -> Result<Self> {
        Ok(Self {
            energy: EnergyLoss::new(EnergyMetric::Mse)?.per_atom(true),
            force: ForceLoss::new(),
            denoising: DenoisingLoss::new(),
            optimality: match settings.optimality {
                OptimalityForm::Stationarity => OptimalityLoss::Stationarity(StationarityLoss::new()),
                OptimalityForm::EnergyDescent => OptimalityLoss::Descent(EnergyDescentLoss::new()),
            },
            score: ScoreConsistency::new(settings.kt)?,
        })
    }
}

/// The losses of the two-stage example for one model.
pub struct Objective<'a> {
    pub model: &'a Model,
    pub settings: &'a Settings,
    pub schedule: &'a NoiseSchedule,
    pub losses: &'a Losses,
}

impl Objective<'_> {
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
        let energy_loss = &self.losses.energy;
        if !with_forces {
            let e = self.model.energy(g, b.batch.pos())?;
            let l_energy = energy_loss.forward(&e, &b.energy, Some(&b.energy_mask), layout)?;
            return Ok((l_energy, None));
        }
        let out = energy_and_forces(&self.model.energy_model(g), b.batch.pos(), layout, true)?;
        let l_energy = energy_loss.forward(&out.energy, &b.energy, Some(&b.energy_mask), layout)?;
        let l_force = self
            .losses
            .force
            .forward(&out.forces, &b.forces, Some(&b.force_mask), layout)?;
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
        let noised = q_sample(self.schedule, b.batch.pos(), &t, layout)?;
        let eps_hat = self.model.eps(g, noised.x_t(), &t)?;
        let loss = self.losses.denoising.forward(&eps_hat, noised.eps(), layout)?;
        Ok((loss, Drawn::new(t, &noised)))
    }

    /// Optimality consistency (in the settings' form, flow `ToStructure`) of the
    /// one-step structure `x0_hat(R_t)` at t in `optimality_t`; with what it drew.
    pub fn optimality(&self, b: &LabelledBatch, g: &Graph) -> Result<(Tensor, Drawn)> {
        let layout = &g.layout;
        let pos = b.batch.pos();
        let t = self.schedule.sample_t(
            layout.num_molecules(),
            self.settings.optimality_t.clone(),
            Device::Cpu,
        )?;
        let noised = q_sample(self.schedule, pos, &t, layout)?;
        let eps_hat = self.model.eps(g, noised.x_t(), &t)?;
        let generated = x0_from_eps(noised.x_t(), &eps_hat, noised.level(), layout)?;
        let energy = self.model.energy_model(g);
        let energy: &dyn EnergyModel = &energy;
        let l = match &self.losses.optimality {
            OptimalityLoss::Stationarity(loss) => loss.forward(energy, &generated, layout)?,
            OptimalityLoss::Descent(loss) => loss.forward(energy, &generated, pos, layout)?,
        };
        Ok((l, Drawn::new(t, &noised)))
    }

    /// Score consistency with the `teacher`'s forces (the model's own, or the
    /// frames' labels) at t in `score_t` (flow `ToStructure`); with what it drew.
    pub fn score(&self, b: &LabelledBatch, g: &Graph, teacher: Teacher) -> Result<(Tensor, Drawn)> {
        let layout = &g.layout;
        let t = self
            .schedule
            .sample_t(layout.num_molecules(), self.settings.score_t.clone(), Device::Cpu)?;
        let noised = q_sample(self.schedule, b.batch.pos(), &t, layout)?;
        let eps_hat = self.model.eps(g, noised.x_t(), &t)?;
        let energy = self.model.energy_model(g);
        let forces = match teacher {
            Teacher::Model => Forces::Model {
                energy: &energy,
                at: noised.x0(),
            },
            Teacher::Labels => Forces::Labels(&b.forces),
        };
        let l = self
            .losses
            .score
            .forward(&eps_hat, noised.level(), forces, layout)?;
        Ok((l, Drawn::new(t, &noised)))
    }

    /// The weighted loss terms of one step on `batches`, drawing steps and noise
    /// from libtorch's generator in a fixed order; with what was drawn.
    pub fn losses(
        &self,
        weights: &LossWeights,
        teacher: Teacher,
        batches: &StepBatches,
    ) -> Result<(LossTerms, Draws)> {
        let StepBatches { structures, g, offeq } = batches;
        let mut terms = LossTerms::new();
        let mut draws = Draws::default();

        // Stage 2 trains forces on every frame that has them: the accurate forces at
        // the cheap structures say where the accurate minimum lies.
        let with_forces = weights.force > 0.0;
        let (mut l_energy, force) = self.energy_force(structures, g, with_forces)?;
        let mut l_force: Vec<Tensor> = force.into_iter().collect();

        let (l, drawn) = self.denoising(structures, g)?;
        terms.push(Term::Denoising.name(), weights.denoising, l)?;
        draws.denoising = Some(drawn);

        // The batches hold off-equilibrium frames exactly when the weights use
        // them (`LossWeights::uses_offeq`): forces, score consistency, or both.
        if let (Some((b, g2)), true) = (offeq, with_forces) {
            let (l2, f2) = self.energy_force(b, g2, true)?;
            l_force.extend(f2);
            l_energy = (l_energy + l2) * 0.5;
        }
        if let Some(mean) = mean_of(l_force) {
            terms.push(Term::Force.name(), weights.force, mean)?;
        }
        terms.push(Term::Energy.name(), weights.energy, l_energy)?;

        if weights.optimality > 0.0 {
            let (l, drawn) = self.optimality(structures, g)?;
            terms.push(Term::Optimality.name(), weights.optimality, l)?;
            draws.optimality = Some(drawn);
        }
        if weights.score > 0.0 {
            let on = self.settings.score_frames;
            let mut parts = Vec::with_capacity(2);
            if on.perturbed() {
                let (b, g2) = offeq.as_ref().ok_or_else(|| Error::Invalid {
                    name: "batches",
                    reason:
                        "score consistency is weighted on the off-equilibrium frames but the step drew none"
                            .into(),
                })?;
                let (l, drawn) = self.score(b, g2, teacher)?;
                parts.push(l);
                draws.score = Some(drawn);
            }
            if on.structures() {
                let (l, drawn) = self.score(structures, g, teacher)?;
                parts.push(l);
                draws.score_structures = Some(drawn);
            }
            if let Some(mean) = mean_of(parts) {
                terms.push(Term::Score.name(), weights.score, mean)?;
            }
        }
        Ok((terms, draws))
    }
}

/// The mean of one term's values on several batches; `None` for none.
fn mean_of(values: Vec<Tensor>) -> Option<Tensor> {
    let n = values.len() as f64;
    values.into_iter().reduce(|a, b| a + b).map(|sum| sum / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each ablation arm leaves out exactly the consistency terms its name says, keeps
    /// every other weight of the plan, and stage 1 is untouched.
    #[test]
    fn arms_differ_only_in_the_consistency_terms() {
        let plan = TrainingPlan::cpu();
        let step2 = plan.stage1_steps;
        let full = plan.weights(step2).unwrap();
        assert!(full.optimality > 0.0 && full.score > 0.0);
        for (arm, optimality, score) in [
            (Arm::Consistency, full.optimality, full.score),
            (Arm::OptimalityOnly, full.optimality, 0.0),
            (Arm::ScoreOnly, 0.0, full.score),
            (Arm::Control, 0.0, 0.0),
            (Arm::Oracle, full.optimality, full.score),
        ] {
            let w = arm.weights(&plan, step2).unwrap();
            assert_eq!((w.optimality, w.score), (optimality, score), "{}", arm.name());
            assert_eq!(
                (w.energy, w.denoising, w.force),
                (full.energy, full.denoising, full.force)
            );
            assert_eq!(Arm::from_name(arm.name()).unwrap(), arm);
        }
        assert_eq!(Arm::Stage1.weights(&plan, 0).unwrap(), plan.weights(0).unwrap());
        for arm in Arm::ALL {
            let oracle = arm == Arm::Oracle;
            assert_eq!(arm.teacher() == Teacher::Labels, oracle, "{}", arm.name());
        }
        assert!(matches!(
            Arm::from_name("both"),
            Err(Error::Invalid { name: "arm", reason }) if reason.contains("score-only")
        ));
    }

    /// A fresh model (default size) and what an [`Objective`] over it needs.
    struct Parts {
        _vs: tch::nn::VarStore,
        settings: Settings,
        model: Model,
        schedule: NoiseSchedule,
        losses: Losses,
    }

    impl Parts {
        fn new(settings: Settings) -> Self {
            let vs = tch::nn::VarStore::new(Device::Cpu);
            let model = Model::new(
                &vs.root(),
                crate::model::ModelConfig::default(),
                settings.diffusion_steps,
            );
            Self {
                _vs: vs,
                schedule: NoiseSchedule::cosine(settings.diffusion_steps).unwrap(),
                losses: Losses::new(&settings).unwrap(),
                settings,
                model,
            }
        }

        fn objective(&self) -> Objective<'_> {
            Objective {
                model: &self.model,
                settings: &self.settings,
                schedule: &self.schedule,
                losses: &self.losses,
            }
        }
    }

    /// The oracle's score term is the method's with the labels as the forces: with
    /// labels equal to the model's own forces, the two are the same number.
    #[test]
    fn the_oracle_takes_the_labels_where_the_method_takes_the_model() {
        use crate::settings::{Preset, Settings};
        use physcon::data::Splits;
        use physcon::forces;

        let _rng = crate::rng_lock();
        tch::set_num_threads(1);
        let parts = Parts::new(Settings::preset(Preset::Quick).unwrap());
        let (model, objective) = (&parts.model, parts.objective());
        let splits = Splits::read_dir(crate::repo_root().join("data")).unwrap();
        let offeq = splits.val.with_level("xtb-perturbed");
        let frames: Vec<&physcon::data::Frame> = offeq.frames()[..6].iter().collect();
        let mut b = LabelledBatch::from_frames(&frames, Kind::Float, Device::Cpu).unwrap();
        let g = Graph::new(&b.batch, Kind::Float).unwrap();
        let score = |b: &LabelledBatch, teacher: Teacher| {
            tch::manual_seed(11);
            objective.score(b, &g, teacher).unwrap().0.double_value(&[])
        };
        let with_labels = score(&b, Teacher::Labels);
        let with_model = score(&b, Teacher::Model);
        assert!(
            (with_labels - with_model).abs() > 1e-6 * with_model.abs(),
            "an untrained model's forces are not xTB's"
        );
        b.forces = forces(&model.energy_model(&g), b.batch.pos(), &g.layout, false).unwrap();
        let with_own_forces = score(&b, Teacher::Labels);
        assert!(
            (with_own_forces - with_model).abs() <= 1e-5 * with_model.abs(),
            "{with_own_forces} vs {with_model}"
        );
    }

    /// `score_frames` decides where score consistency is taught: on the cheap-level
    /// structures a step needs no off-equilibrium frames for it, on the perturbed
    /// frames it refuses a step without them, and each records its own draws.
    #[test]
    fn score_consistency_is_taught_on_the_frames_the_settings_name() {
        use crate::data::StepBatches;
        use crate::settings::{Preset, ScoreFrames, Settings};
        use physcon::data::Splits;

        let _rng = crate::rng_lock();
        tch::set_num_threads(1);
        let splits = Splits::read_dir(crate::repo_root().join("data")).unwrap();
        let mmff = splits.val.with_level("mmff");
        let frames: Vec<&physcon::data::Frame> = mmff.frames()[..4].iter().collect();
        let structures = LabelledBatch::from_frames(&frames, Kind::Float, Device::Cpu).unwrap();
        let g = Graph::new(&structures.batch, Kind::Float).unwrap();
        let batches = StepBatches {
            structures,
            g,
            offeq: None,
        };
        let weights = LossWeights {
            energy: 1.0,
            denoising: 0.01,
            force: 0.0,
            optimality: 0.0,
            score: 1.0,
        };
        let terms = |on: ScoreFrames, teacher: Teacher| {
            let settings = Settings {
                score_frames: on,
                ..Settings::preset(Preset::Quick).unwrap()
            };
            Parts::new(settings)
                .objective()
                .losses(&weights, teacher, &batches)
        };
        for teacher in [Teacher::Model, Teacher::Labels] {
            let (terms, draws) = terms(ScoreFrames::Structures, teacher).unwrap();
            let score = terms.breakdown().into_iter().find(|t| t.name == "score").unwrap();
            assert!(score.value.is_finite() && score.value > 0.0, "{}", score.value);
            assert!(draws.score.is_none() && draws.score_structures.is_some());
        }
        for on in [ScoreFrames::Perturbed, ScoreFrames::Both] {
            let err = terms(on, Teacher::Model).err().unwrap();
            assert!(matches!(&err, Error::Invalid { name: "batches", .. }), "{err}");
        }
    }
}
