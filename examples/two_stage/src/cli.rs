//! The command line: `train` (default), `evaluate`, `predict`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use physcon::array::atom_vectors;
use physcon::data::{excerpt, write_atomic, Dataset, Splits};
use physcon::diffusion::NoiseSchedule;
use physcon::{Error, MolBatch, Result};
use tch::{Device, Kind};

use crate::checks;
use crate::data::TrainData;
use crate::eval::{evaluate, generate, Generation};
use crate::io;
use crate::model::{Graph, ELEMENTS};
use crate::npz;
use crate::objective::Arm;
use crate::relax::Fire;
use crate::report::{report, table, write_plots, SeedResult, SplitScores};
use crate::settings::{Preset, Settings};
use crate::threads::Threads;
use crate::training::{load_model, train_all, ArmCheckpoints};

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

#[derive(Clone, Copy, ValueEnum)]
pub enum SplitName {
    Val,
    Test,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
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
}

impl GenerationName {
    /// The value `--generation` takes.
    pub fn name(self) -> &'static str {
        match self {
            GenerationName::Relax => "relax",
            GenerationName::Refine => "refine",
            GenerationName::Noise => "noise",
            GenerationName::Fire => "fire",
        }
    }
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
            },
            GenerationName::Relax => Generation::Relax {
                start: self.start,
                steps: self.ddim_steps,
            },
            GenerationName::Noise => Generation::Noise {
                steps: self.ddim_steps,
            },
            GenerationName::Fire => Generation::Fire(Fire {
                fmax: self.fmax,
                max_steps: self.max_steps,
            }),
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
    #[arg(long, value_delimiter = ',', default_values_t = [0u64])]
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

#[derive(clap::Args, Clone)]
pub struct PredictArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Refuse a checkpoint not trained with this preset's settings (default: the checkpoint's own).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Molecules: SDF/MOL (V2000/V3000) or extended XYZ, gzip or not.
    #[arg(long)]
    pub input: PathBuf,
    /// Where the predictions go, in the input's format (`.gz`: compressed).
    #[arg(long)]
    pub output: PathBuf,
    /// Replace --output if it exists (even when it is the --input file).
    #[arg(long)]
    pub force: bool,
    /// Refuse the whole input at its first record that cannot be predicted (malformed,
    /// an element or pseudo-atom the model does not know, too many atoms) or whose
    /// structure explodes; nothing is written (default: skip such records, one line each,
    /// and predict the rest).
    #[arg(long, conflicts_with = "skip_bad")]
    pub strict: bool,
    /// Exit with status 0 although records were skipped (default: the predictions of the
    /// other records are written, then predict fails naming how many were skipped).
    #[arg(long)]
    pub skip_bad: bool,
    #[command(flatten)]
    pub gen: GenArgs,
    /// Also write the structures to this NumPy .npz file (keys in the README).
    #[arg(long)]
    pub npz: Option<PathBuf>,
    #[command(flatten)]
    pub threads: Threads,
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
    io::check_generation(&args.gen, settings.diffusion_steps)?;
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
    write_atomic(&out.join("report.md"), text.as_bytes())
}

/// `evaluate`: one checkpoint's scores on a split beside the cheap structures'.
pub fn evaluate_checkpoint(args: &EvaluateArgs) -> Result<()> {
    let trained = load_model(&args.checkpoint, requested(args.preset)?.as_ref())?;
    let splits = Splits::read_dir(&args.data)?;
    let split = match args.split {
        SplitName::Val => &splits.val,
        SplitName::Test => &splits.test,
    };
    io::check_generation(&args.gen, trained.settings.diffusion_steps)?;
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

/// What `predict` did: the lines to show, and what was skipped.
#[derive(Debug, Default)]
pub struct Predicted {
    /// One `skipped: file:line: ...` line per record or structure not written, in file order.
    pub skipped: Vec<String>,
    /// One `warning: file:line: ...` line per finding about a predicted molecule.
    pub notes: Vec<String>,
    /// The closing lines (counts, speed), each ending in a newline.
    pub summary: String,
    /// Structures written to --output.
    pub written: usize,
    /// Records in the input.
    pub records: usize,
    /// Records not predicted (malformed, unknown elements, too large).
    pub records_skipped: usize,
    /// Structures of predicted molecules not written (exploded, too wide for the format).
    pub structures_skipped: usize,
}

impl Predicted {
    /// The exit status: an error when anything was skipped, unless --skip-bad.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`--skip-bad`) naming the count.
    pub fn status(&self, args: &PredictArgs) -> Result<()> {
        if self.skipped.is_empty() || args.skip_bad {
            return Ok(());
        }
        Err(Error::InvalidArgument {
            arg: "--skip-bad",
            reason: format!(
                "{} of {} records of {} could not be predicted and {} predicted structures were left \
                 out (listed above); the other {} structures were written to {}. Pass --skip-bad to \
                 accept that (exit status 0), or --strict to write nothing unless every record is predicted",
                self.records_skipped,
                self.records,
                args.input.display(),
                self.structures_skipped,
                self.written,
                args.output.display()
            ),
        })
    }
}

/// `predict`: `--samples` generated structures per molecule of `--input`, written to `--output`
/// in the input's format. Everything the user typed is checked before the model runs; records
/// that cannot be predicted and structures that explode are skipped, each named with its line
/// (`--strict`: refused at the first, nothing written).
pub fn predict(args: &PredictArgs) -> Result<Predicted> {
    let gen = &args.gen;
    let n_samples = gen.samples();
    io::check_samples(n_samples)?;
    io::check_output("--output", &args.input, &args.output, args.force)?;
    if let Some(path) = &args.npz {
        io::check_output("--npz", &args.input, path, args.force)?;
        if path == &args.output {
            return Err(Error::InvalidArgument {
                arg: "--npz",
                reason: format!("`{}` is also the --output file", path.display()),
            });
        }
    }
    let trained = load_model(&args.checkpoint, requested(args.preset)?.as_ref())?;
    io::check_generation(gen, trained.settings.diffusion_steps)?;
    let mut input = io::Input::read(&args.input)?;
    io::check_output_format(&args.output, &input)?;
    let screened = checks::screen(&input, &ELEMENTS);
    if let (true, Some(first)) = (args.strict, screened.skipped.first()) {
        return Err(Error::InvalidArgument {
            arg: "--strict",
            reason: format!(
                "{} ({} such records in all)",
                first.message,
                screened.skipped.len()
            ),
        });
    }
    if screened.kept.is_empty() {
        // One record: its own message; several: each on its line, then how many, and the first.
        if screened.skipped.len() > 1 {
            for s in &screened.skipped {
                eprintln!("skipped: {}", s.message);
            }
        }
        if let ([_], Some(r)) = (screened.skipped.as_slice(), input.rejected.pop()) {
            return Err(r.error);
        }
        return Err(Error::InvalidArgument {
            arg: "--input",
            reason: format!(
                "{}: none of its {} records can be predicted; the first: {}",
                args.input.display(),
                input.records(),
                screened.skipped.first().map_or("", |s| s.message.as_str())
            ),
        });
    }
    let kept = &screened.kept;
    let mut out = Predicted {
        skipped: screened
            .skipped
            .iter()
            .map(|s| format!("skipped: {}", s.message))
            .collect(),
        notes: screened.notes.iter().map(|n| format!("warning: {n}")).collect(),
        records: input.records(),
        records_skipped: screened.skipped.len(),
        ..Default::default()
    };
    let kekule: usize = kept.iter().map(|&k| input.molecules[k].kekule_bonds()).sum();
    let schedule = NoiseSchedule::cosine(trained.settings.diffusion_steps)?;
    tch::manual_seed(0);
    let started = Instant::now();
    let (mut fire_steps, mut unconverged) = (Vec::new(), 0);
    let bar = indicatif::ProgressBar::new(kept.len() as u64);
    let mut predictions: Vec<io::Prediction> = Vec::new();
    let sizes: Vec<usize> = kept
        .iter()
        .map(|&k| input.molecules[k].frame.num_atoms())
        .collect();
    for range in checks::batches(&sizes) {
        let chunk = &kept[range];
        let molecules: Vec<_> = chunk.iter().map(|&k| input.molecules[k].molecule()).collect();
        let batch = MolBatch::from_molecules(&molecules, Kind::Float, Device::Cpu)?;
        let g = Graph::new(&batch, Kind::Float)?;
        let generated = generate(
            &trained.model,
            &g,
            batch.pos(),
            n_samples,
            gen.generation(),
            &schedule,
        )?;
        if let Some((steps, converged)) = &generated.fire {
            fire_steps.extend(steps);
            unconverged += converged.iter().filter(|c| !**c).count();
        }
        let samples = generated
            .samples
            .iter()
            .map(|x| atom_vectors(x, &g.layout))
            .collect::<Result<Vec<_>>>()?;
        let mut offset = 0;
        for &k in chunk {
            let m = &input.molecules[k];
            for (s, sample) in samples.iter().enumerate() {
                let pos: Vec<[f64; 3]> = sample
                    .outer_iter()
                    .skip(offset)
                    .take(m.frame.num_atoms())
                    .map(|r| [r[0], r[1], r[2]])
                    .collect();
                let pos = io::place_like(&m.frame.pos, &pos);
                let problem = checks::exploded(m, &pos)
                    .map(|why| format!("{why}: {}", checks::exploded_hint(gen.generation)))
                    .or_else(|| io::unwritable(m, &pos));
                if let Some(why) = &problem {
                    let line = format!(
                        "{}:{}: molecule `{}`, sample {s}: {why}",
                        args.input.display(),
                        m.line,
                        excerpt(&m.frame.mol_id)
                    );
                    if args.strict {
                        return Err(Error::InvalidArgument {
                            arg: "--strict",
                            reason: format!("{line}; nothing was written"),
                        });
                    }
                    out.skipped.push(format!("skipped: {line}"));
                    out.structures_skipped += 1;
                }
                predictions.push(io::Prediction {
                    molecule: k,
                    sample: s as i64,
                    pos,
                    problem,
                });
            }
            offset += m.frame.num_atoms();
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let good: Vec<&io::Prediction> = predictions.iter().filter(|p| p.problem.is_none()).collect();
    if good.is_empty() {
        // Nothing to write: an empty output would read as a prediction of no molecules.
        for line in &out.skipped {
            eprintln!("{line}");
        }
        return Err(Error::InvalidArgument {
            arg: "--input",
            reason: format!(
                "none of the {} structures predicted can be written; the first: {}",
                predictions.len(),
                out.skipped[screened.skipped.len()].trim_start_matches("skipped: ")
            ),
        });
    }
    io::write_predictions(&args.output, &input, &good, trained.arm.name())?;
    out.written = good.len();
    if let Some(path) = &args.npz {
        npz::write_predictions(path, &input, &predictions, &screened, n_samples as usize)?;
    }
    out.summary = format!(
        "wrote {} structures ({n_samples} per molecule, {} molecules) to {}; {}: {:.1} ms per molecule\n",
        good.len(),
        kept.len(),
        args.output.display(),
        gen.generation().describe(),
        1e3 * seconds / kept.len().max(1) as f64
    );
    if kekule > 0 {
        out.summary += &format!(
            "read {kekule} bonds of Kekulé-written aromatic rings as aromatic (order 4), as the model \
             was trained; the output keeps the file's bonds\n"
        );
    }
    if !fire_steps.is_empty() {
        let mean = fire_steps.iter().sum::<usize>() as f64 / fire_steps.len() as f64;
        out.summary += &format!(
            "FIRE: {} of {} molecules converged, {mean:.0} force evaluations per molecule on average\n",
            kept.len() - unconverged,
            kept.len()
        );
    }
    if !out.notes.is_empty() {
        out.summary += &format!(
            "{} warnings about the input (listed above; the structures were written)\n",
            out.notes.len()
        );
    }
    if !out.skipped.is_empty() {
        out.summary += &format!(
            "skipped {} of {} records before the model and {} structures after it (listed above)\n",
            out.records_skipped, out.records, out.structures_skipped
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use physcon::data::read_extxyz;

    /// `--set` reaches the settings through the one schema (its key and value
    /// checks are `settings`' tests).
    #[test]
    fn set_flags_reach_their_settings() {
        let args =
            TrainArgs::try_parse_from(["train", "--set", "plan.stage1.force=1.5", "--set", "kt = 0.05"])
                .unwrap();
        assert_eq!(
            args.set,
            [
                ("plan.stage1.force".to_owned(), "1.5".to_owned()),
                ("kt".into(), "0.05".into())
            ]
        );
        let got = Settings::with_overrides(args.preset, &args.set).unwrap();
        assert_eq!((got.plan.stage1.force, got.kt), (1.5, 0.05));
        assert!(TrainArgs::try_parse_from(["train", "--set", "kt"]).is_err());
    }

    /// The `quick` preset end to end: both arms, evaluation, report, resume and predict.
    #[test]
    fn quick_preset_end_to_end() {
        let _rng = crate::rng_lock();
        tch::set_num_threads(1);
        let root = crate::repo_root();
        let out = std::env::temp_dir().join(format!("physcon-two-stage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let mut argv: Vec<std::ffi::OsString> = [
            "two_stage",
            "--preset",
            "quick",
            "--start",
            "10",
            "--ddim-steps",
            "5",
            "--ablation",
            "--oracle",
        ]
        .map(Into::into)
        .to_vec();
        argv.extend([
            "--data".into(),
            root.join("data").into(),
            "--out".into(),
            out.clone().into(),
        ]);
        // Several samples of a deterministic generation are refused before any training.
        let mut same_samples = argv.clone();
        same_samples.extend(["--samples".into(), "2".into()]);
        assert!(matches!(
            train(&TrainArgs::parse_from(same_samples)),
            Err(Error::InvalidArgument { arg: "--samples", reason }) if reason.contains("--generation refine")
        ));
        assert!(!out.exists());
        let args = TrainArgs::parse_from(argv);
        train(&args).unwrap();
        let report = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(report.contains("consistency") && report.contains("MMFF structure"));
        // The ablation trains and reports all four stage-2 arms, and the oracle.
        for arm in Arm::ABLATION.into_iter().chain([Arm::Oracle]) {
            assert!(
                report.contains(arm.describe()),
                "{} missing from the report",
                arm.name()
            );
            assert!(out.join(format!("seed-0/{}.safetensors", arm.name())).exists());
            assert!(out.join(format!("scatter-{}.svg", arm.name())).exists());
        }
        assert!(out.join("rmsd-paired.svg").exists());
        // A finished run is not overwritten: a fresh --out (or --resume) is required.
        assert!(matches!(
            train(&args),
            Err(Error::InvalidArgument { arg: "--out", .. })
        ));
        let checkpoint = out.join("seed-0/consistency.safetensors");
        let output = out.join("predicted.extxyz");
        // Two samples each, drawn with noise (the default relax is deterministic).
        let refine = GenArgs {
            samples: Some(2),
            generation: GenerationName::Refine,
            ..args.gen.clone()
        };
        let predict_args = |preset: Option<Preset>| PredictArgs {
            checkpoint: checkpoint.clone(),
            preset,
            input: root.join("tests/fixtures/extxyz/valid_small.extxyz"),
            output: output.clone(),
            force: false,
            strict: false,
            skip_bad: false,
            gen: refine.clone(),
            npz: Some(out.join("predicted.npz")),
            threads: Threads::default(),
        };
        // No --preset: the checkpoint's own settings (quick) build the model.
        predict(&predict_args(None)).unwrap();
        let predicted = read_extxyz(&output).unwrap();
        assert_eq!(predicted.len(), 4 * 2);
        assert_eq!(predicted[0].mol_id, "nci-04846");
        assert_eq!(predicted[0].species, [8, 6, 8, 1, 1]);
        assert_eq!(predicted[0].level.as_deref(), Some("physcon-consistency"));
        // The .npz holds the same structures, sample-major.
        let file = std::fs::File::open(out.join("predicted.npz")).unwrap();
        let mut arrays = ndarray_npy::NpzReader::new(file).unwrap();
        let positions: physcon::ndarray::Array3<f64> = arrays.by_name("positions").unwrap();
        assert_eq!(positions.dim(), (2, 5 + 5 + 9 + 9, 3));
        assert_eq!(
            positions.slice(physcon::ndarray::s![1, 5..10, ..]),
            predicted[3].pos_view()
        );
        let ids = npz::read_mol_ids(&mut arrays).unwrap();
        assert_eq!(ids, ["nci-04846", "nci-04846", "nci-03004", "nci-03004"]);
        // Neither output is replaced without --force.
        assert!(matches!(
            predict(&predict_args(None)),
            Err(Error::InvalidArgument { arg: "--output", .. })
        ));
        std::fs::remove_file(&output).unwrap();
        assert!(matches!(
            predict(&predict_args(None)),
            Err(Error::InvalidArgument { arg: "--npz", .. })
        ));
        std::fs::remove_file(out.join("predicted.npz")).unwrap();
        predict(&predict_args(Some(Preset::Quick))).unwrap();
        std::fs::remove_file(&output).unwrap();
        std::fs::remove_file(out.join("predicted.npz")).unwrap();
        // The FIRE reference writes one relaxed structure per molecule by default.
        let mut fire = predict_args(None);
        fire.npz = None;
        fire.gen = GenArgs {
            samples: None,
            generation: GenerationName::Fire,
            max_steps: 20,
            ..args.gen.clone()
        };
        predict(&fire).unwrap();
        assert_eq!(read_extxyz(&output).unwrap().len(), 4);
        std::fs::remove_file(&output).unwrap();
        // A --preset the checkpoint was not trained with is refused, naming the setting.
        let refused = |r: Result<()>| match r {
            Err(Error::InvalidArgument {
                arg: "checkpoint",
                reason,
            }) => reason,
            Err(other) => panic!("unexpected error {other}"),
            Ok(()) => panic!("a mismatching --preset was accepted"),
        };
        let reason = refused(predict(&predict_args(Some(Preset::Cpu))).map(|_| ()));
        assert!(
            reason.contains("written with `checkpoint_every = 10`, but the requested settings have `checkpoint_every = 200`"),
            "{reason}"
        );
        assert!(!output.exists());
        let reason = refused(evaluate_checkpoint(&EvaluateArgs {
            checkpoint: checkpoint.clone(),
            preset: Some(Preset::Paper),
            data: root.join("data"),
            split: SplitName::Val,
            gen: args.gen.clone(),
            npz: None,
            threads: Threads::default(),
        }));
        assert!(reason.contains("`checkpoint_every = 10`"), "{reason}");
        // Another model size alone is named too.
        let mut wider = Settings::preset(Preset::Quick).unwrap();
        wider.model.hidden = 64;
        assert!(matches!(
            load_model(&checkpoint, Some(&wider)),
            Err(Error::InvalidArgument { arg: "checkpoint", reason }) if reason.contains("`model.hidden = 32`")
        ));
        std::fs::remove_dir_all(&out).unwrap();
    }
}
