//! `evaluate`: one checkpoint's scores on a split.

use std::path::PathBuf;

use crate::Result;
use physcon::data::Splits;
use physcon::diffusion::NoiseSchedule;

use crate::eval::evaluate;
use crate::generation::{check_generation, GenArgs};
use crate::npz;
use crate::report::table;
use crate::settings::Preset;
use crate::threads::Threads;
use crate::training::load_model;

use super::{requested, SplitName};

#[derive(clap::Args, Clone)]
pub struct EvaluateArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Refuse a checkpoint not trained with this preset's settings (default: the checkpoint's own).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    #[arg(long, value_enum, default_value_t = SplitName::Test)]
    pub split: SplitName,
    #[command(flatten)]
    pub gen: GenArgs,
    /// Also write the per-molecule results to this NumPy .npz file (keys in the README).
    #[arg(long)]
    pub npz: Option<PathBuf>,
    #[command(flatten)]
    pub threads: Threads,
}

/// `evaluate`: one checkpoint's scores on a split beside the cheap structures'.
pub fn evaluate_checkpoint(args: &EvaluateArgs) -> Result<()> {
    let trained = load_model(&args.checkpoint, requested(args.preset)?.as_ref())?;
    let splits = Splits::read_dir(&args.data)?;
    let split = match args.split {
        SplitName::Val => &splits.val,
        SplitName::Test => &splits.test,
    };
    check_generation(&args.gen, trained.settings.diffusion_steps)?;
    let schedule = NoiseSchedule::cosine(trained.settings.diffusion_steps)?;
    let gen = &args.gen;
    let e = evaluate(
        &trained.model,
        split,
        gen.samples(),
        gen.generation(),
        &schedule,
        0,
    )?;
    println!(
        "{}",
        table(
            &[
                ("MMFF structure (cheap level)", vec![&e.baseline]),
                (trained.arm.name(), vec![&e.model])
            ],
            gen.samples()
        )
    );
    match &args.npz {
        Some(path) => npz::write_evaluation(path, &e.per_molecule),
        None => Ok(()),
    }
}
