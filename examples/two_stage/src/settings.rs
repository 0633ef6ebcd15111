//! Everything a run needs besides data: one schema ([`Settings`], with serde),
//! its presets, overrides by key (`--set plan.stage2.score=0.5`), and its TOML
//! text, which checkpoints carry so that a model is always read back with the
//! settings it was trained with. Settings are validated wherever they are
//! made: from a preset with overrides, and when read back from a checkpoint.

use std::ops::RangeInclusive;

use crate::error::{flag, Error, Result};
use physcon::Temperature;
use serde::{Deserialize, Serialize};

use crate::model::ModelConfig;
use crate::plan::TrainingPlan;

/// The named starting points of [`Settings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
///
/// The one declaration of the settings: the text form, the overrides' keys
/// and the comparison of two runs' settings all come from its serde fields
/// (plain values first, then the `plan` and `model` tables, as TOML wants).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The preset these settings started from (overrides may have changed them since).
    pub preset: Preset,
    /// kT of score consistency (eV).
    pub kt: f64,
    /// Steps drawn for score consistency (small noise).
    #[serde(with = "steps")]
    pub score_t: RangeInclusive<i64>,
    /// Steps at which the one-step generated structure `x0_hat(R_t)` is made for optimality.
    #[serde(with = "steps")]
    pub optimality_t: RangeInclusive<i64>,
    /// Which form of optimality consistency.
    pub optimality: OptimalityForm,
    /// Which frames score consistency is taught on (absent in checkpoints written
    /// before it existed, which all used the off-equilibrium frames).
    #[serde(default)]
    pub score_frames: ScoreFrames,
    /// Fraction of denoising samples drawn from `small_t` instead of all steps: refining a
    /// structure needs a precise denoiser at small noise, which uniform steps train rarely.
    pub small_t_fraction: f64,
    /// The small-noise steps of the denoising loss.
    #[serde(with = "steps")]
    pub small_t: RangeInclusive<i64>,
    /// Diffusion steps T.
    pub diffusion_steps: i64,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Gradient-norm clip.
    pub clip: f64,
    pub plan: TrainingPlan,
    pub model: ModelConfig,
}

/// A `--set` value that does not fit, or a setting out of its range.
fn invalid(arg: &'static str, reason: String) -> Error {
    Error::Invalid { name: arg, reason }
}

impl Settings {
    /// The settings of `preset`.
    pub fn preset(preset: Preset) -> Result<Self> {
        let base = Self {
            preset,
            kt: Temperature::kelvin(450.0)?.kt(),
            score_t: 1..=20,
            optimality_t: 1..=10,
            optimality: OptimalityForm::EnergyDescent,
            score_frames: ScoreFrames::Perturbed,
            small_t_fraction: 0.0,
            small_t: 1..=100,
            diffusion_steps: 1000,
            checkpoint_every: 200,
            clip: 10.0,
            plan: TrainingPlan::cpu(),
            model: ModelConfig::default(),
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

    /// The settings of `preset` with `overrides` (`(key, value)`: a dotted key of
    /// the TOML text, e.g. `plan.stage2.score`, and a TOML value or bare word), validated.
    ///
    /// # Errors
    /// [`Error::Flag`] (`--set`) for an unknown key or a value of the
    /// wrong type; those of [`Settings::validate`].
    pub fn with_overrides(preset: Preset, overrides: &[(String, String)]) -> Result<Self> {
        let mut tree = toml::Value::try_from(Self::preset(preset)?)
            .map_err(|e| invalid("settings", format!("cannot be written as TOML: {e}")))?;
        let known: Vec<String> = leaves(&tree)
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k != "preset")
            .collect();
        for (key, text) in overrides {
            let slot = key
                .split('.')
                .try_fold(&mut tree, |node, part| node.get_mut(part))
                .filter(|slot| !slot.is_table() && key != "preset")
                .ok_or_else(|| {
                    flag(
                        "--set",
                        format!("unknown setting `{key}` (settings: {})", known.join(", ")),
                    )
                })?;
            *slot = override_value(slot, text).map_err(|e| flag("--set", format!("`{key}={text}`: {e}")))?;
        }
        let settings: Self = tree
            .try_into()
            .map_err(|e: toml::de::Error| flag("--set", e.message().to_owned()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every setting's range; the plan by [`TrainingPlan::validate`].
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the setting; [`Error::Physcon`] for a `kt` that
    /// is not positive and finite.
    pub fn validate(&self) -> Result<()> {
        self.plan.validate()?;
        physcon::Temperature::from_kt(self.kt)?;
        if self.diffusion_steps < 1 {
            return Err(invalid(
                "diffusion_steps",
                format!("must be at least 1, got {}", self.diffusion_steps),
            ));
        }
        for (name, range) in [
            ("score_t", &self.score_t),
            ("optimality_t", &self.optimality_t),
            ("small_t", &self.small_t),
        ] {
            if !(1 <= *range.start() && range.start() <= range.end() && *range.end() <= self.diffusion_steps)
            {
                return Err(invalid(
                    name,
                    format!(
                        "must be a range a..=b with 1 <= a <= b <= diffusion_steps ({}), got {}",
                        self.diffusion_steps,
                        steps::text(range)
                    ),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.small_t_fraction) {
            return Err(invalid(
                "small_t_fraction",
                format!("must lie in [0, 1], got {}", self.small_t_fraction),
            ));
        }
        if self.checkpoint_every == 0 {
            return Err(invalid("checkpoint_every", "must be at least 1".into()));
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return Err(Error::Invalid {
                name: "clip",
                reason: format!("must be positive and finite, got {}", self.clip),
            });
        }
        self.model.validate()
    }

    /// The settings as TOML (floats in the shortest form that reads back exactly).
    pub fn to_text(&self) -> String {
        toml::to_string(self).expect("settings are plain values and tables")
    }

    /// Reads and validates [`Settings::to_text`]'s TOML.
    ///
    /// # Errors
    /// [`Error::Invalid`] (`settings`) with the line of an unreadable,
    /// unknown or missing key; those of [`Settings::validate`].
    pub fn from_text(text: &str) -> Result<Self> {
        let settings: Self = toml::from_str(text).map_err(|e| invalid("settings", e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn tree(&self) -> toml::Value {
        toml::Value::try_from(self).expect("settings are plain values and tables")
    }

    /// The first setting that differs from `other`'s: `(key, self's value, other's value)`.
    ///
    /// The preset is a label, not a setting: settings equal in every value are the same run's.
    pub fn first_difference(&self, other: &Settings) -> Option<(String, String, String)> {
        leaves(&self.tree())
            .into_iter()
            .zip(leaves(&other.tree()))
            .find(|(a, b)| a != b && a.0 != "preset")
            .map(|((key, mine), (_, theirs))| (key, mine, theirs))
    }
}

/// Every value of a TOML tree as `(dotted key, value as TOML writes it)`, in order.
fn leaves(tree: &toml::Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, node: &toml::Value, out: &mut Vec<(String, String)>) {
        match node {
            toml::Value::Table(table) => {
                for (k, v) in table {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => out.push((prefix.to_owned(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", tree, &mut out);
    out
}

/// `text` as a TOML value of the same type as `old`: a number, a boolean, or a
/// bare word for a string (`optimality=descent`, `score_t=1..=20`).
fn override_value(old: &toml::Value, text: &str) -> std::result::Result<toml::Value, String> {
    let parsed = format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    let value = match (old, parsed) {
        (toml::Value::String(_), Some(toml::Value::String(s))) => toml::Value::String(s),
        (toml::Value::String(_), _) => toml::Value::String(text.trim().to_owned()),
        // A whole number where a float is expected is that float.
        (toml::Value::Float(_), Some(toml::Value::Integer(i))) => toml::Value::Float(i as f64),
        (_, Some(v)) if v.same_type(old) => v,
        _ => return Err(format!("expected {}, like `{old}`", old.type_str())),
    };
    Ok(value)
}

/// Step ranges as `a..=b` text.
mod steps {
    use std::ops::RangeInclusive;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn text(r: &RangeInclusive<i64>) -> String {
        format!("{}..={}", r.start(), r.end())
    }

    pub fn parse(s: &str) -> Result<RangeInclusive<i64>, String> {
        let (a, b) = s
            .split_once("..=")
            .ok_or_else(|| format!("`{s}` is not a range `a..=b`"))?;
        let bound = |v: &str| v.trim().parse::<i64>().map_err(|e| format!("`{v}`: {e}"));
        Ok(bound(a)?..=bound(b)?)
    }

    pub fn serialize<S: Serializer>(r: &RangeInclusive<i64>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(r))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RangeInclusive<i64>, D::Error> {
        parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Which form of optimality consistency stage 2 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimalityForm {
    /// [`physcon::losses::StationarityLoss`]: the energy gradient vanishes at the generated structure.
    #[serde(rename = "stationarity")]
    Stationarity,
    /// [`physcon::losses::EnergyDescentLoss`]: the generated structure lies below the training structure.
    #[serde(rename = "descent")]
    EnergyDescent,
}

/// Which training frames score consistency `score(R_t) = F(R)/kT` is taught on.
///
/// The off-equilibrium frames say how the forces change around a structure; the
/// cheap-level structures are where `relax` starts, and their accurate forces
/// say where the accurate minimum lies from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreFrames {
    /// The off-equilibrium (`xtb-perturbed`) frames: the force data.
    #[default]
    Perturbed,
    /// The cheap-level (`mmff`) structures: the structure data.
    Structures,
    /// Both, the two losses averaged.
    Both,
}

impl ScoreFrames {
    /// Whether score consistency is taught on the off-equilibrium frames.
    pub fn perturbed(self) -> bool {
        matches!(self, ScoreFrames::Perturbed | ScoreFrames::Both)
    }

    /// Whether score consistency is taught on the cheap-level structures.
    pub fn structures(self) -> bool {
        matches!(self, ScoreFrames::Structures | ScoreFrames::Both)
    }
}

/// The name of an optimality form, as its settings key spells it.
pub fn optimality_name(form: OptimalityForm) -> &'static str {
    match form {
        OptimalityForm::Stationarity => "stationarity",
        OptimalityForm::EnergyDescent => "descent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn reason(err: Error) -> String {
        match err {
            Error::Invalid { name, reason } => format!("{name}: {reason}"),
            Error::Flag { flag, reason } => format!("{flag}: {reason}"),
            other => other.to_string(),
        }
    }

    #[test]
    fn every_preset_reads_back_exactly() {
        for preset in [Preset::Cpu, Preset::Quick, Preset::Paper] {
            let mut s = Settings::preset(preset).unwrap();
            s.kt = 0.1 + 0.2; // not a short decimal
            s.optimality = OptimalityForm::EnergyDescent;
            s.validate().unwrap();
            assert_eq!(Settings::from_text(&s.to_text()).unwrap(), s);
        }
    }

    #[test]
    fn bad_text_names_the_line_or_the_setting() {
        let text = Settings::preset(Preset::Quick).unwrap().to_text();
        let err = |text: &str| reason(Settings::from_text(text).expect_err("refused"));
        let bad = text.replace("hidden = 32", "hidden = \"many\"");
        assert!(
            err(&bad).contains("line") && err(&bad).contains("hidden"),
            "{}",
            err(&bad)
        );
        assert!(err(&format!("colour = \"blue\"\n{text}")).contains("colour"));
        assert!(
            err(&text.replace("clip = 10.0\n", "")).contains("clip"),
            "{}",
            err(&text.replace("clip = 10.0\n", ""))
        );
        // Read back, validated: a kt that no run could have used is refused.
        assert!(err(&text.replace("kt = ", "kt = -")).contains("kt"));
        assert!(err(&text.replace("score_t = \"1..=20\"", "score_t = \"0..=20\"")).starts_with("score_t:"));
        // A checkpoint from before `score_frames` existed taught the perturbed frames.
        let line = "score_frames = \"perturbed\"\n";
        assert!(text.contains(line), "{text}");
        let old = Settings::from_text(&text.replace(line, "")).unwrap();
        assert_eq!(old.score_frames, ScoreFrames::Perturbed);
        let both = Settings::from_text(&text.replace(line, "score_frames = \"both\"\n")).unwrap();
        assert_eq!(both.score_frames, ScoreFrames::Both);
        assert!(err(&text.replace(line, "score_frames = \"all\"\n")).contains("score_frames"));
    }

    #[test]
    fn the_first_difference_is_named() {
        let cpu = Settings::preset(Preset::Cpu).unwrap();
        let quick = Settings::preset(Preset::Quick).unwrap();
        let (key, a, b) = cpu.first_difference(&quick).unwrap();
        assert_eq!(
            (key.as_str(), a.as_str(), b.as_str()),
            ("checkpoint_every", "200", "10")
        );
        let relabelled = Settings {
            preset: Preset::Paper,
            ..cpu.clone()
        };
        assert_eq!(cpu.first_difference(&relabelled), None);
    }

    /// Every override lands on its own setting, exactly as written, and nothing else moves.
    #[test]
    fn overrides_reach_their_settings() {
        let got = Settings::with_overrides(
            Preset::Cpu,
            &set(&[
                ("plan.stage1.force", "1.5"),
                ("plan.stage2.force", "2"),
                ("plan.stage2.score", "0.5"),
                ("kt", "1.0"),
                ("optimality", "descent"),
                ("score_t", "1..=7"),
                ("plan.stage2_steps", "40"),
            ]),
        )
        .unwrap();
        let mut want = Settings::preset(Preset::Cpu).unwrap();
        want.plan.stage1.force = 1.5;
        want.plan.stage2.force = 2.0;
        want.plan.stage2.score = 0.5;
        want.kt = 1.0; // not 0.9999999999999999 by way of a temperature
        want.optimality = OptimalityForm::EnergyDescent;
        want.score_t = 1..=7;
        want.plan.stage2_steps = 40;
        assert_eq!(got, want);
    }

    #[test]
    fn bad_overrides_name_the_key() {
        let err = |pairs: &[(&str, &str)]| {
            reason(Settings::with_overrides(Preset::Cpu, &set(pairs)).expect_err("refused"))
        };
        let unknown = err(&[("plan.stage2.colour", "1")]);
        assert!(
            unknown.starts_with("--set: unknown setting `plan.stage2.colour`"),
            "{unknown}"
        );
        assert!(unknown.contains("plan.stage2.score"), "{unknown}");
        assert!(err(&[("plan", "1")]).contains("unknown setting `plan`"));
        assert!(
            err(&[("kt", "warm")]).contains("`kt=warm`: expected float"),
            "{}",
            err(&[("kt", "warm")])
        );
        assert!(err(&[("plan.batch_size", "2.5")]).contains("expected integer"));
        assert!(
            err(&[("optimality", "both")]).contains("both"),
            "{}",
            err(&[("optimality", "both")])
        );
        assert!(err(&[("score_t", "20..=1")]).starts_with("score_t:"));
        assert!(err(&[("small_t_fraction", "1.5")]).starts_with("small_t_fraction:"));
        assert!(err(&[("kt", "0")]).contains("kt"));
    }
}
