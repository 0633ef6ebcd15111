//! The command line: `train` (default), `evaluate`, `predict`, one file each;
//! the generation flags they share are [`crate::generation`]'s.

use crate::Result;
use clap::{Parser, Subcommand, ValueEnum};

use crate::settings::{Preset, Settings};

mod evaluate;
mod predict;
#[cfg(test)]
mod tests;
mod train;

pub use evaluate::{evaluate_checkpoint, EvaluateArgs};
pub use predict::{predict, PredictArgs, Predicted};
pub use train::{train, TrainArgs};

#[derive(Parser)]
#[command(
    name = "two_stage",
    about = "physcon's two-stage example: physical consistency on MMFF structures with GFN2-xTB labels"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Stage 1, then both stage-2 arms, evaluated on val and test, per seed.
    Train(TrainArgs),
    /// Scores a checkpoint on a split.
    Evaluate(EvaluateArgs),
    /// Writes K generated structures per molecule of an SDF/MOL or extended-XYZ file.
    Predict(PredictArgs),
}

/// The split `evaluate` scores.
#[derive(Clone, Copy, ValueEnum)]
pub enum SplitName {
    Val,
    Test,
}

/// Parses the command line and runs it; errors end the process with status 1.
pub fn main() {
    keep_freed_memory();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Keeps memory that libtorch frees in the process's heap.
///
/// Every training step frees and re-allocates its activations, blocks of
/// megabytes. With glibc's defaults they go back to the kernel (`munmap`, heap
/// trimming) and return as fresh zeroed pages: the default run took 47 million
/// page faults and 940 s of training. With the blocks kept it takes 0.34 million
/// and 587 s, with the same report to every digit.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets two thresholds of glibc's allocator, before any
    // thread of ours or libtorch's exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    // No subcommand means `train` with every default.
    let command = cli
        .command
        .unwrap_or_else(|| Command::Train(TrainArgs::parse_from(["two_stage"])));
    match command {
        Command::Train(args) => {
            args.threads.apply()?;
            train(&args)
        }
        Command::Evaluate(args) => {
            args.threads.apply()?;
            evaluate_checkpoint(&args)
        }
        Command::Predict(args) => {
            args.threads.apply()?;
            let outcome = predict(&args)?;
            for line in outcome.skipped.iter().chain(&outcome.notes) {
                eprintln!("{line}");
            }
            print!("{}", outcome.summary);
            outcome.status(&args)
        }
    }
}

/// The settings a `--preset` asks for, if given.
fn requested(preset: Option<Preset>) -> Result<Option<Settings>> {
    preset.map(Settings::preset).transpose()
}
