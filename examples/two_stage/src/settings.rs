//! Everything a run needs besides data, its presets, and its `key = value`
//! text form, which checkpoints carry so that a model is always read back with
//! the settings it was trained with.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::plan::{LossWeights, TrainingPlan};
use physcon::{Error, Result, Temperature};

use crate::model::ModelConfig;

/// The named starting points of [`Settings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// Both arms within minutes on 2 cores (the default).
    Cpu,
    /// A smoke run of seconds (used by the tests).
    Quick,
    /// The paper's steps and batch size.
    Paper,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Cpu => "cpu",
            Preset::Quick => "quick",
            Preset::Paper => "paper",
        }
    }
}

/// Everything a run needs besides data.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The preset these settings started from (overrides may have changed them since).
    pub preset: Preset,
    pub plan: TrainingPlan,
    pub model: ModelConfig,
    /// kT of score consistency (eV).
    pub kt: f64,
    /// Steps drawn for score consistency (small noise).
    pub score_t: RangeInclusive<i64>,
    /// Steps at which the one-step generated structure `x0_hat(R_t)` is made for optimality.
    pub optimality_t: RangeInclusive<i64>,
    /// Which form of optimality consistency.
    pub optimality: OptimalityForm,
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
    /// The settings of `preset`.
    pub fn preset(preset: Preset) -> Result<Self> {
        let base = Self {
            preset,
            plan: TrainingPlan::cpu(),
            model: ModelConfig::default(),
            kt: Temperature::kelvin(450.0)?.kt(),
            score_t: 1..=20,
            optimality_t: 1..=10,
            optimality: OptimalityForm::Stationarity,
            small_t_fraction: 0.0,
            small_t: 1..=100,
            diffusion_steps: 1000,
            checkpoint_every: 200,
            clip: 10.0,
        };
        Ok(match preset {
            Preset::Cpu => base,
            Preset::Quick => Self {
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
            Preset::Paper => Self {
                plan: TrainingPlan::paper(),
                checkpoint_every: 5000,
                ..base
            },
        })
    }

    /// The settings as `(key, value)` pairs, in the order [`Settings::to_text`] writes them.
    pub fn entries(&self) -> Vec<(String, String)> {
        let p = &self.plan;
        let m = &self.model;
        let mut e: Vec<(String, String)> = vec![
            ("preset".into(), self.preset.name().into()),
            ("plan.stage1_steps".into(), p.stage1_steps.to_string()),
            ("plan.stage2_steps".into(), p.stage2_steps.to_string()),
            ("plan.batch_size".into(), p.batch_size.to_string()),
            ("plan.lr".into(), p.lr.to_string()),
            ("plan.warmup_steps".into(), p.warmup_steps.to_string()),
            ("plan.final_lr".into(), p.final_lr.to_string()),
        ];
        for (stage, w) in [("stage1", &p.stage1), ("stage2", &p.stage2)] {
            for (name, value) in w.named() {
                e.push((format!("plan.{stage}.{name}"), value.to_string()));
            }
        }
        e.extend([
            ("model.hidden".into(), m.hidden.to_string()),
            ("model.layers".into(), m.layers.to_string()),
            ("model.rbf".into(), m.rbf.to_string()),
            ("model.rbf_max".into(), m.rbf_max.to_string()),
            ("kt".into(), self.kt.to_string()),
            ("score_t".into(), range_text(&self.score_t)),
            ("optimality_t".into(), range_text(&self.optimality_t)),
            ("optimality".into(), optimality_name(self.optimality).into()),
            ("small_t_fraction".into(), self.small_t_fraction.to_string()),
            ("small_t".into(), range_text(&self.small_t)),
            ("diffusion_steps".into(), self.diffusion_steps.to_string()),
            ("checkpoint_every".into(), self.checkpoint_every.to_string()),
            ("clip".into(), self.clip.to_string()),
        ]);
        e
    }

    /// One `key = value` line per setting (floats in Rust's shortest form that reads back exactly).
    pub fn to_text(&self) -> String {
        self.entries()
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect()
    }

    /// Reads the settings back from `key = value` lines (as [`Settings::to_text`] writes).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the line of an unreadable, unknown or
    /// repeated key, or a missing key.
    pub fn from_text(text: &str) -> Result<Self> {
        let mut keys = KeyValues::parse(text)?;
        let settings = Self::take_from(&mut keys)?;
        keys.finish()?;
        Ok(settings)
    }

    /// Takes the settings' keys out of `keys`, leaving any others.
    pub(crate) fn take_from(keys: &mut KeyValues) -> Result<Self> {
        let stage = |keys: &mut KeyValues, s: &str| -> Result<LossWeights> {
            Ok(LossWeights {
                energy: keys.take(&format!("plan.{s}.energy"))?,
                denoising: keys.take(&format!("plan.{s}.denoising"))?,
                force: keys.take(&format!("plan.{s}.force"))?,
                optimality: keys.take(&format!("plan.{s}.optimality"))?,
                score: keys.take(&format!("plan.{s}.score"))?,
            })
        };
        Ok(Self {
            preset: keys.take_with("preset", |v| <Preset as clap::ValueEnum>::from_str(v, false))?,
            plan: TrainingPlan {
                stage1_steps: keys.take("plan.stage1_steps")?,
                stage2_steps: keys.take("plan.stage2_steps")?,
                batch_size: keys.take("plan.batch_size")?,
                lr: keys.take("plan.lr")?,
                warmup_steps: keys.take("plan.warmup_steps")?,
                final_lr: keys.take("plan.final_lr")?,
                stage1: stage(keys, "stage1")?,
                stage2: stage(keys, "stage2")?,
            },
            model: ModelConfig {
                hidden: keys.take("model.hidden")?,
                layers: keys.take("model.layers")?,
                rbf: keys.take("model.rbf")?,
                rbf_max: keys.take("model.rbf_max")?,
            },
            kt: keys.take("kt")?,
            score_t: keys.take_with("score_t", parse_range)?,
            optimality_t: keys.take_with("optimality_t", parse_range)?,
            optimality: keys.take_with("optimality", parse_optimality)?,
            small_t_fraction: keys.take("small_t_fraction")?,
            small_t: keys.take_with("small_t", parse_range)?,
            diffusion_steps: keys.take("diffusion_steps")?,
            checkpoint_every: keys.take("checkpoint_every")?,
            clip: keys.take("clip")?,
        })
    }

    /// The first setting that differs from `other`'s: `(key, self's value, other's value)`.
    ///
    /// The preset is a label, not a setting: settings equal in every value are the same run's.
    pub fn first_difference(&self, other: &Settings) -> Option<(String, String, String)> {
        self.entries()
            .into_iter()
            .zip(other.entries())
            .find(|(a, b)| a != b && a.0 != "preset")
            .map(|((key, mine), (_, theirs))| (key, mine, theirs))
    }
}

fn range_text(r: &RangeInclusive<i64>) -> String {
    format!("{}..={}", r.start(), r.end())
}

fn parse_range(s: &str) -> std::result::Result<RangeInclusive<i64>, String> {
    let (a, b) = s
        .split_once("..=")
        .ok_or_else(|| format!("`{s}` is not a range `a..=b`"))?;
    let bound = |v: &str| v.trim().parse::<i64>().map_err(|e| format!("`{v}`: {e}"));
    Ok(bound(a)?..=bound(b)?)
}

/// Which form of optimality consistency stage 2 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimalityForm {
    /// [`physcon::losses::StationarityLoss`]: the energy gradient vanishes at the generated structure.
    Stationarity,
    /// [`physcon::losses::EnergyDescentLoss`]: the generated structure lies below the training structure.
    EnergyDescent,
}

/// The name of an optimality form, as the CLI's `--optimality` spells it.
pub fn optimality_name(form: OptimalityForm) -> &'static str {
    match form {
        OptimalityForm::Stationarity => "stationarity",
        OptimalityForm::EnergyDescent => "descent",
    }
}

/// Reads an optimality form by [`optimality_name`].
pub fn parse_optimality(s: &str) -> std::result::Result<OptimalityForm, String> {
    [OptimalityForm::Stationarity, OptimalityForm::EnergyDescent]
        .into_iter()
        .find(|&f| optimality_name(f) == s)
        .ok_or_else(|| format!("unknown optimality form `{s}` (stationarity, descent)"))
}

/// `key = value` lines (blank lines and `#` comments skipped), taken out key by key.
pub(crate) struct KeyValues {
    /// `(line number, key, value)`; `None` once taken.
    lines: Vec<Option<(usize, String, String)>>,
}

fn text_error(reason: String) -> Error {
    Error::InvalidArgument {
        arg: "settings",
        reason,
    }
}

impl KeyValues {
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let mut lines: Vec<Option<(usize, String, String)>> = Vec::new();
        for (k, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| text_error(format!("line {}: expected `key = value`, got `{line}`", k + 1)))?;
            let key = key.trim().to_owned();
            if let Some(Some((first, ..))) = lines
                .iter()
                .find(|l| matches!(l, Some((_, other, _)) if *other == key))
            {
                return Err(text_error(format!(
                    "line {}: `{key}` repeats line {first}",
                    k + 1
                )));
            }
            lines.push(Some((k + 1, key, value.trim().to_owned())));
        }
        Ok(Self { lines })
    }

    /// The value of `key`, read by `parse`.
    pub(crate) fn take_with<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> std::result::Result<T, String>,
    ) -> Result<T> {
        let slot = self
            .lines
            .iter_mut()
            .find(|l| matches!(l, Some((_, k, _)) if k.as_str() == key))
            .ok_or_else(|| text_error(format!("no `{key}`")))?;
        let (line, _, value) = slot.take().ok_or_else(|| text_error(format!("no `{key}`")))?;
        parse(&value).map_err(|e| text_error(format!("line {line}: `{key}`: {e}")))
    }

    /// The value of `key`, read by its `FromStr`.
    pub(crate) fn take<T: FromStr>(&mut self, key: &str) -> Result<T>
    where
        T::Err: Display,
    {
        self.take_with(key, |v| v.parse::<T>().map_err(|e| format!("`{v}`: {e}")))
    }

    /// Refuses keys nobody took.
    pub(crate) fn finish(self) -> Result<()> {
        match self.lines.into_iter().flatten().next() {
            Some((line, key, _)) => Err(text_error(format!("line {line}: unknown key `{key}`"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_reads_back_exactly() {
        for preset in [Preset::Cpu, Preset::Quick, Preset::Paper] {
            let mut s = Settings::preset(preset).unwrap();
            s.kt = 0.1 + 0.2; // not a short decimal
            s.optimality = OptimalityForm::EnergyDescent;
            assert_eq!(Settings::from_text(&s.to_text()).unwrap(), s);
        }
    }

    #[test]
    fn bad_text_names_the_line() {
        let text = Settings::preset(Preset::Quick).unwrap().to_text();
        let err = |text: &str| match Settings::from_text(text) {
            Err(Error::InvalidArgument { reason, .. }) => reason,
            other => panic!("expected an error, got {other:?}"),
        };
        let bad = text.replace("model.hidden = 32", "model.hidden = many");
        assert!(err(&bad).starts_with("line 18: `model.hidden`"), "{}", err(&bad));
        assert!(err(&format!("{text}colour = blue\n")).contains("unknown key `colour`"));
        assert!(err(&format!("{text}kt = 1\n")).contains("`kt` repeats line"));
        assert!(err(&text.replace("clip = 10\n", "")).contains("no `clip`"));
        assert!(err("kt 1\n").starts_with("line 1: expected `key = value`"));
    }

    #[test]
    fn the_first_difference_is_named() {
        let cpu = Settings::preset(Preset::Cpu).unwrap();
        let quick = Settings::preset(Preset::Quick).unwrap();
        let (key, a, b) = cpu.first_difference(&quick).unwrap();
        assert_eq!(
            (key.as_str(), a.as_str(), b.as_str()),
            ("plan.stage1_steps", "1500", "30")
        );
        let relabelled = Settings {
            preset: Preset::Paper,
            ..cpu.clone()
        };
        assert_eq!(cpu.first_difference(&relabelled), None);
    }
}
