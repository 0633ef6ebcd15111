//! `train`: every seed's stage 1 and stage-2 arms, evaluated and reported.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::Result;
use clap::Parser;
use physcon::data::{write_atomic, Dataset, Splits};
use physcon::diffusion::NoiseSchedule;

use crate::data::TrainData;
use crate::eval::evaluate;
use crate::generation::{check_generation, GenArgs};
use crate::objective::Arm;
use crate::report::{report, write_plots, SeedResult, SplitScores};
use crate::settings::{Preset, Settings};
use crate::threads::Threads;
use crate::training::{load_model, train_all, ArmCheckpoints};

/// `KEY=VALUE` of `--set`.
fn parse_set(text: &str) -> std::result::Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected KEY=VALUE, e.g. plan.stage2.score=0.5"))?;
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

/// `train`'s options; also a parser of its own, for `two_stage` without a subcommand.
#[derive(Parser, Clone)]
pub struct TrainArgs {
    #[arg(long, value_enum, default_value_t = Preset::Cpu)]
    pub preset: Preset,
    #[arg(long, default_value = "data")]
    pub data: PathBuf,
    /// Output folder (default `runs/<preset>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seeds, comma-separated (each at most 2^63 - 1: checkpoints hold them as TOML integers).
    #[arg(long, value_delimiter = ',', default_values_t = [0u64],
          value_parser = clap::value_parser!(u64).range(..=i64::MAX as u64))]
    pub seeds: Vec<u64>,
    /// Continue the runs found in --out from their last checkpoints.
    #[arg(long)]
    pub resume: bool,
    /// Evaluate on the validation split only (for tuning; the test split is for final numbers).
    #[arg(long)]
    pub val_only: bool,
    /// Train the ablation's four stage-2 arms (control, optimality only, score only, both)
    /// instead of the main run's two (control, both).
    #[arg(long)]
    pub ablation: bool,
    /// Also train the oracle arm: consistency with the frames' xTB forces as
    /// score consistency's teacher (the ceiling of the learned teacher).
    #[arg(long)]
    pub oracle: bool,
    /// Change one setting of the preset for a study, by its key in the settings'
    /// TOML (repeatable): e.g. `--set kt=0.05 --set plan.stage2.score=0.5 --set
    /// optimality=descent --set score_t=1..=10`. `--print-settings` lists every key.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    pub set: Vec<(String, String)>,
    /// Print the settings (preset and --set applied, validated) as TOML and exit.
    #[arg(long)]
    pub print_settings: bool,
    #[command(flatten)]
    pub gen: GenArgs,
    #[command(flatten)]
    pub threads: Threads,
}

impl TrainArgs {
    /// The stage-2 arms this run trains, in order.
    pub fn arms(&self) -> Vec<Arm> {
        let mut arms = if self.ablation {
            Arm::ABLATION.to_vec()
        } else {
            Arm::MAIN.to_vec()
        };
        if self.oracle {
            arms.push(Arm::Oracle);
        }
        arms
    }
}

/// Every arm of `settings` on one split, each from its checkpoint, with the seed's generator.
fn evaluate_arms(
    arms: &ArmCheckpoints,
    settings: &Settings,
    split: &Dataset,
    gen: &GenArgs,
    schedule: &NoiseSchedule,
    seed: u64,
) -> Result<SplitScores> {
    let scores = arms
        .0
        .iter()
        .map(|(arm, checkpoint)| {
            let trained = load_model(checkpoint, Some(settings))?;
            let e = evaluate(
                &trained.model,
                split,
                gen.samples(),
                gen.generation(),
                schedule,
                seed,
            )?;
            Ok((*arm, e))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SplitScores(scores))
}

/// `train`: every seed's arms, evaluated, plotted (first seed) and reported.
pub fn train(args: &TrainArgs) -> Result<()> {
    let settings = Settings::with_overrides(args.preset, &args.set)?;
    if args.print_settings {
        print!("{}", settings.to_text());
        return Ok(());
    }
    // Checked before hours of training, not at the evaluation after them.
    check_generation(&args.gen, settings.diffusion_steps)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(args.preset.name()));
    let splits = Splits::read_dir(&args.data)?;
    let data = TrainData::new(&splits.train)?;
    let schedule = NoiseSchedule::cosine(settings.diffusion_steps)?;
    let started = Instant::now();
    let mut results: Vec<SeedResult> = Vec::new();
    for &seed in &args.seeds {
        let t0 = Instant::now();
        let arms = train_all(
            &settings,
            seed,
            &data,
            &out.join(format!("seed-{seed}")),
            args.resume,
            &args.arms(),
        )?;
        let wall_seconds = t0.elapsed().as_secs_f64();
        let val = Some(evaluate_arms(
            &arms,
            &settings,
            &splits.val,
            &args.gen,
            &schedule,
            seed,
        )?);
        let test = if args.val_only {
            None
        } else {
            Some(evaluate_arms(
                &arms,
                &settings,
                &splits.test,
                &args.gen,
                &schedule,
                seed,
            )?)
        };
        match &test {
            Some(t) => {
                if seed == args.seeds[0] {
                    write_plots(&out, seed, t)?;
                }
                let rmsd: Vec<String> =
                    t.0.iter()
                        .map(|(arm, e)| format!("{} {:.4}", arm.name(), e.model.rmsd_mean))
                        .collect();
                println!(
                    "seed {seed}: trained {} arms in {wall_seconds:.0} s; test RMSD {} (MMFF {:.4})",
                    t.0.len(),
                    rmsd.join(", "),
                    t.0.first().map_or(f64::NAN, |(_, e)| e.baseline.rmsd_mean)
                );
            }
            None => println!(
                "seed {seed}: trained {} arms in {wall_seconds:.0} s; test not evaluated",
                args.arms().len()
            ),
        }
        results.push(SeedResult {
            seed,
            val,
            test,
            wall_seconds,
        });
    }
    let text = report(
        &settings,
        &args.seeds,
        &results,
        &args.gen.generation().describe(),
        args.gen.samples(),
        started.elapsed().as_secs_f64(),
    );
    print!("{text}");
    Ok(write_atomic(&out.join("report.md"), text.as_bytes())?)
}
