//! How structures are generated: the `--generation` flags that `train`,
//! `evaluate` and `predict` share, and their checks, next to the flags
//! themselves (the readers and writers of `io` and the checks of `checks`
//! import them from here, not from the command line).

use crate::error::{flag, Result};

use crate::eval::{Generation, Guard};
use crate::relax::Fire;

/// The most structures per molecule `--samples` may ask for: they are held in
/// memory until the output is written whole.
pub const MAX_SAMPLES: i64 = 1000;

/// `--max-move` (Å): the consistency arm's relax moves no atom of a validation
/// molecule farther than 0.027 Å; a refinement that moves one farther is of a
/// molecule unlike those (study step 16).
pub const DEFAULT_MAX_MOVE: f64 = 0.03;

/// The most `--rounds` of a relax: each round is a whole DDIM chain.
pub const MAX_ROUNDS: i64 = 100;

#[derive(Clone, Copy, clap::ValueEnum, PartialEq)]
pub enum GenerationName {
    /// Take the input (cheap) structure as the --start state without adding noise, then
    /// DDIM to 0 (deterministic: one sample is all it has).
    Relax,
    /// Noise the input structure to --start, then DDIM.
    Refine,
    /// Generate from pure noise.
    Noise,
    /// No structure model: relax the input structure on the energy model with FIRE
    /// (--fmax, --max-steps); the reference the structure model is measured against.
    Fire,
    /// No structure model: --descent-steps fixed steps `R += step F(R)` along the
    /// energy model's forces (--descent-step, Å²/eV), each kept only where it lowers
    /// the energy model's energy (the guard).
    Descent,
}

impl GenerationName {
    /// The value `--generation` takes.
    pub fn name(self) -> &'static str {
        match self {
            GenerationName::Relax => "relax",
            GenerationName::Refine => "refine",
            GenerationName::Noise => "noise",
            GenerationName::Fire => "fire",
            GenerationName::Descent => "descent",
        }
    }
}

/// The values of `--guard`.
#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq, Debug)]
pub enum GuardName {
    /// Keep a refinement only where the energy model's energy does not rise.
    Energy,
    /// Keep every refinement.
    Off,
}

/// How structures are generated.
#[derive(clap::Args, Clone)]
pub struct GenArgs {
    /// Structures generated per molecule (default 1 for the deterministic relax and fire, 4 otherwise).
    #[arg(long)]
    pub samples: Option<i64>,
    /// How structures are generated.
    #[arg(long, value_enum, default_value_t = GenerationName::Relax)]
    pub generation: GenerationName,
    /// Diffusion step the refinement starts from.
    #[arg(long, default_value_t = 10)]
    pub start: i64,
    /// DDIM steps.
    #[arg(long, default_value_t = 10)]
    pub ddim_steps: i64,
    /// Descent: the step along the energy model's forces (Å²/eV; the default is half
    /// of what relax from t = 10 takes at 450 K, `s_10²/kT`).
    #[arg(long, default_value_t = 0.008)]
    pub descent_step: f64,
    /// Descent: how many steps.
    #[arg(long, default_value_t = 2)]
    pub descent_steps: i64,
    /// Relax: how many times the relaxation runs, each from the last one's structure.
    #[arg(long, default_value_t = 1)]
    pub rounds: i64,
    /// Relax and refine: keep a refined structure (each round) only where the energy
    /// model puts it at or below the structure it started from (`energy`, the default),
    /// or always (`off`). `predict` reports per molecule what it decided.
    #[arg(long, value_enum)]
    pub guard: Option<GuardName>,
    /// Relax and refine with the energy guard: also keep a refinement only where no
    /// atom moves farther than this from the input (Å; 0: no limit). The default is
    /// the largest move of any atom on the validation split, rounded up (study step 16).
    #[arg(long, default_value_t = DEFAULT_MAX_MOVE)]
    pub max_move: f64,
    /// FIRE: a molecule is converged when no atomic force exceeds this (eV/Å).
    #[arg(long, default_value_t = Fire::default().fmax)]
    pub fmax: f64,
    /// FIRE: force evaluations at most.
    #[arg(long, default_value_t = Fire::default().max_steps)]
    pub max_steps: usize,
}

impl GenArgs {
    pub fn generation(&self) -> Generation {
        match self.generation {
            GenerationName::Refine => Generation::Refine {
                start: self.start,
                steps: self.ddim_steps,
                guard: self.guard(),
            },
            GenerationName::Relax => Generation::Relax {
                start: self.start,
                steps: self.ddim_steps,
                rounds: self.rounds,
                guard: self.guard(),
            },
            GenerationName::Noise => Generation::Noise {
                steps: self.ddim_steps,
            },
            GenerationName::Descent => Generation::Descent {
                step: self.descent_step,
                steps: self.descent_steps,
            },
            GenerationName::Fire => Generation::Fire(Fire {
                fmax: self.fmax,
                max_steps: self.max_steps,
            }),
        }
    }

    /// The energy guard of a refinement: `--guard`, on unless `off`.
    pub fn guard(&self) -> Guard {
        match self.guard {
            Some(GuardName::Off) => Guard::Off,
            Some(GuardName::Energy) | None if self.max_move > 0.0 => Guard::EnergyAndMove(self.max_move),
            Some(GuardName::Energy) | None => Guard::Energy,
        }
    }

    /// Structures per molecule: `--samples`, or 1 for a deterministic generation and 4 otherwise.
    pub fn samples(&self) -> i64 {
        self.samples.unwrap_or(if self.generation().is_deterministic() {
            1
        } else {
            4
        })
    }
}

/// Refuses generation settings the schedule (or FIRE) cannot run, naming the flag and its range.
///
/// # Errors
/// [`crate::Error::Flag`] naming `--samples` (also when above 1 for a
/// deterministic generation), `--start`, `--ddim-steps`, `--fmax` or `--max-steps`.
pub fn check_generation(gen: &GenArgs, diffusion_steps: i64) -> Result<()> {
    check_samples(gen.samples())?;
    if gen.generation().is_deterministic() && gen.samples() > 1 {
        return Err(flag(
            "--samples",
            format!(
                "`--generation {}` draws no noise, so all {} samples would be the same structure; \
                 leave --samples out, or use `--generation refine` for several samples",
                gen.generation.name(),
                gen.samples()
            ),
        ));
    }
    if !(gen.max_move.is_finite() && gen.max_move >= 0.0) {
        return Err(flag(
            "--max-move",
            format!("must be 0 (no limit) or positive (Å), got {}", gen.max_move),
        ));
    }
    if gen.generation == GenerationName::Descent {
        if !(gen.descent_step.is_finite() && gen.descent_step > 0.0 && gen.descent_step <= 1.0) {
            return Err(flag(
                "--descent-step",
                format!("must lie in (0, 1] Å²/eV, got {}", gen.descent_step),
            ));
        }
        if !(1..=MAX_ROUNDS).contains(&gen.descent_steps) {
            return Err(flag(
                "--descent-steps",
                format!("must lie in 1..={MAX_ROUNDS}, got {}", gen.descent_steps),
            ));
        }
    }
    let refines = matches!(gen.generation, GenerationName::Refine | GenerationName::Relax);
    if let (Some(name), false) = (gen.guard, refines) {
        return Err(flag(
            "--guard",
            format!(
                "`--guard {}` judges a refinement of the input structure, and `--generation {}` \
                 makes none; use it with relax or refine",
                if name == GuardName::Energy {
                    "energy"
                } else {
                    "off"
                },
                gen.generation.name()
            ),
        ));
    }
    if gen.rounds != 1 && gen.generation != GenerationName::Relax {
        return Err(flag(
            "--rounds",
            format!(
                "only `--generation relax` runs in rounds, got {} with `--generation {}`",
                gen.rounds,
                gen.generation.name()
            ),
        ));
    }
    if !(1..=MAX_ROUNDS).contains(&gen.rounds) {
        return Err(flag(
            "--rounds",
            format!("must lie in 1..={MAX_ROUNDS}, got {}", gen.rounds),
        ));
    }
    let (top, what) = match gen.generation {
        GenerationName::Refine | GenerationName::Relax => {
            if !(1..=diffusion_steps).contains(&gen.start) {
                return Err(flag(
                    "--start",
                    format!(
                        "must lie in 1..={diffusion_steps} (the checkpoint's diffusion steps), got {}",
                        gen.start
                    ),
                ));
            }
            (gen.start, "--start")
        }
        GenerationName::Noise => (diffusion_steps, "the checkpoint's diffusion steps"),
        GenerationName::Descent => return Ok(()),
        GenerationName::Fire => {
            if !(gen.fmax.is_finite() && gen.fmax > 0.0) {
                return Err(flag(
                    "--fmax",
                    format!("must be positive (eV/Å), got {}", gen.fmax),
                ));
            }
            if gen.max_steps == 0 {
                return Err(flag("--max-steps", "must be at least 1".into()));
            }
            return Ok(());
        }
    };
    if !(1..=top).contains(&gen.ddim_steps) {
        return Err(flag(
            "--ddim-steps",
            format!("must lie in 1..={top} ({what}), got {}", gen.ddim_steps),
        ));
    }
    Ok(())
}

/// Refuses a `--samples` outside 1..=[`MAX_SAMPLES`].
///
/// # Errors
/// [`crate::Error::Flag`] (`--samples`).
pub fn check_samples(samples: i64) -> Result<()> {
    if (1..=MAX_SAMPLES).contains(&samples) {
        Ok(())
    } else {
        Err(flag(
            "--samples",
            format!("must lie in 1..={MAX_SAMPLES}, got {samples}"),
        ))
    }
}
