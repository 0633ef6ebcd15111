//! The two-stage example: multi-task training (energy + denoising), then
//! physical consistency (optimality + score) with a force loss, against a
//! control arm without the consistency losses, on the shipped dataset (MMFF
//! structures, GFN2-xTB energies and forces), judged against GFN2-xTB minima.
//!
//! ```text
//! cargo run --release --example two_stage                      # train --preset cpu --seeds 0
//! cargo run --release --example two_stage -- train --preset quick --seeds 0
//! cargo run --release --example two_stage -- evaluate --checkpoint runs/cpu/seed-0/consistency.safetensors
//! cargo run --release --example two_stage -- predict --checkpoint C --input in.extxyz --output out.extxyz --samples 4
//! ```

mod eval;
mod model;
mod train;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use physcon::data::{read_extxyz, write_atomic, write_extxyz, Dataset, Frame, Splits};
use physcon::diffusion::NoiseSchedule;
use physcon::{Error, MolBatch, Result};
use tch::{Device, Kind};

use eval::{evaluate, generate, scatter_svg, write_svg, Generation, Scores};
use model::Graph;
use train::{load_model, train_all, Settings, TrainData};

#[derive(Parser)]
#[command(
    about = "physcon's two-stage example: physical consistency on MMFF structures with GFN2-xTB labels"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum SplitName {
    Val,
    Test,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum GenerationName {
    /// Refine the input (cheap) structure: noise it to --start, then DDIM.
    Refine,
    /// Generate from pure noise.
    Noise,
}

#[derive(Clone, Copy, ValueEnum)]
enum OptimalityName {
    Stationarity,
    Descent,
}

#[derive(clap::Args, Clone)]
struct GenArgs {
    /// Structures generated per molecule.
    #[arg(long, default_value_t = 4)]
    samples: i64,
    /// How structures are generated.
    #[arg(long, value_enum, default_value_t = GenerationName::Refine)]
    generation: GenerationName,
    /// Diffusion step the refinement starts from.
    #[arg(long, default_value_t = 10)]
    start: i64,
    /// DDIM steps.
    #[arg(long, default_value_t = 10)]
    ddim_steps: i64,
}

impl GenArgs {
    fn generation(&self) -> Generation {
        match self.generation {
            GenerationName::Refine => Generation::Refine {
                start: self.start,
                steps: self.ddim_steps,
            },
            GenerationName::Noise => Generation::Noise {
                steps: self.ddim_steps,
            },
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Stage 1, then both stage-2 arms, evaluated on val and test, per seed.
    Train {
        #[arg(long, default_value = "cpu")]
        preset: String,
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// Output folder (default runs/<preset>).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, value_delimiter = ',', default_values_t = [0u64])]
        seeds: Vec<u64>,
        /// Continue the runs found in --out from their last checkpoints.
        #[arg(long)]
        resume: bool,
        /// Override kT (eV) of score consistency.
        #[arg(long)]
        kt: Option<f64>,
        /// Override the optimality weight of stage 2.
        #[arg(long)]
        optimality_weight: Option<f64>,
        /// Override the score weight of stage 2.
        #[arg(long)]
        score_weight: Option<f64>,
        /// Override the form of optimality consistency.
        #[arg(long, value_enum)]
        optimality: Option<OptimalityName>,
        /// Override the largest step of the one-step generated structure (optimality).
        #[arg(long)]
        optimality_t_max: Option<i64>,
        /// Override the largest step of score consistency.
        #[arg(long)]
        score_t_max: Option<i64>,
        /// Override the stage-1 and stage-2 step counts.
        #[arg(long)]
        stage1_steps: Option<u64>,
        #[arg(long)]
        stage2_steps: Option<u64>,
        /// Override the fraction of denoising samples drawn at small noise (steps 1..=100).
        #[arg(long)]
        small_t_fraction: Option<f64>,
        /// Evaluate on the validation split only (for tuning; the test split is for final numbers).
        #[arg(long)]
        val_only: bool,
        #[command(flatten)]
        gen: GenArgs,
    },
    /// Scores a checkpoint on a split.
    Evaluate {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value = "cpu")]
        preset: String,
        #[arg(long, default_value = "data")]
        data: PathBuf,
        #[arg(long, value_enum, default_value_t = SplitName::Test)]
        split: SplitName,
        #[command(flatten)]
        gen: GenArgs,
    },
    /// Writes K generated structures per molecule of an extended-XYZ file.
    Predict {
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value = "cpu")]
        preset: String,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        #[command(flatten)]
        gen: GenArgs,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    tch::set_num_threads(2);
    // No subcommand means `train` with every default, as clap would parse it.
    let command = match cli.command {
        Some(command) => command,
        None => Cli::parse_from(["two_stage", "train"])
            .command
            .ok_or_else(|| Error::InvalidArgument {
                arg: "command",
                reason: "no default command".into(),
            })?,
    };
    match command {
        Command::Train {
            preset,
            data,
            out,
            seeds,
            resume,
            kt,
            optimality_weight,
            score_weight,
            optimality,
            optimality_t_max,
            score_t_max,
            stage1_steps,
            stage2_steps,
            small_t_fraction,
            val_only,
            gen,
        } => {
            let mut settings = Settings::preset(&preset)?;
            if let Some(kt) = kt {
                settings.kt = physcon::Temperature::from_kt(kt)?.kt();
            }
            if let Some(w) = optimality_weight {
                settings.plan.stage2.optimality = w;
            }
            if let Some(w) = score_weight {
                settings.plan.stage2.score = w;
            }
            if let Some(form) = optimality {
                settings.optimality = match form {
                    OptimalityName::Stationarity => physcon::losses::Optimality::Stationarity,
                    OptimalityName::Descent => physcon::losses::Optimality::EnergyDescent,
                };
            }
            if let Some(t) = optimality_t_max {
                settings.optimality_t = 1..=t;
            }
            if let Some(t) = score_t_max {
                settings.score_t = 1..=t;
            }
            if let Some(n) = stage1_steps {
                settings.plan.stage1_steps = n;
            }
            if let Some(n) = stage2_steps {
                settings.plan.stage2_steps = n;
            }
            if let Some(f) = small_t_fraction {
                settings.small_t_fraction = f;
            }
            let out = out.unwrap_or_else(|| Path::new("runs").join(&preset));
            train_command(&settings, &data, &out, &seeds, resume, &gen, val_only)
        }
        Command::Evaluate {
            checkpoint,
            preset,
            data,
            split,
            gen,
        } => {
            let settings = Settings::preset(&preset)?;
            let splits = Splits::read_dir(&data)?;
            let split = match split {
                SplitName::Val => &splits.val,
                SplitName::Test => &splits.test,
            };
            let (_vs, model, arm) = load_model(&checkpoint, &settings)?;
            let schedule = NoiseSchedule::cosine(settings.diffusion_steps)?;
            let (scores, base) = evaluate(&model, split, gen.samples, gen.generation(), &schedule, 0)?;
            println!(
                "{}",
                table(
                    &[
                        ("MMFF structure (cheap level)", vec![base]),
                        (arm.name(), vec![scores])
                    ],
                    gen.samples
                )
            );
            Ok(())
        }
        Command::Predict {
            checkpoint,
            preset,
            input,
            output,
            gen,
        } => {
            let settings = Settings::preset(&preset)?;
            predict(&settings, &checkpoint, &input, &output, &gen)
        }
    }
}

fn train_command(
    settings: &Settings,
    data: &Path,
    out: &Path,
    seeds: &[u64],
    resume: bool,
    gen: &GenArgs,
    val_only: bool,
) -> Result<()> {
    let splits = Splits::read_dir(data)?;
    let train = TrainData::new(&splits.train)?;
    let schedule = NoiseSchedule::cosine(settings.diffusion_steps)?;
    let started = Instant::now();
    let mut results: Vec<(u64, [Scores; 4], [Scores; 4], f64)> = Vec::new();
    for &seed in seeds {
        let t0 = Instant::now();
        let dir = out.join(format!("seed-{seed}"));
        let [consistency, control] = train_all(settings, seed, &train, &dir, resume)?;
        let wall = t0.elapsed().as_secs_f64();
        let mut per_split = Vec::new();
        let empty = Dataset::default();
        for split in [&splits.val, if val_only { &empty } else { &splits.test }] {
            if split.is_empty() {
                per_split.push(Default::default());
                continue;
            }
            let (_v1, m1, _) = load_model(&consistency, settings)?;
            let (_v2, m2, _) = load_model(&control, settings)?;
            let (s1, base1) = evaluate(&m1, split, gen.samples, gen.generation(), &schedule, seed)?;
            let (s2, base2) = evaluate(&m2, split, gen.samples, gen.generation(), &schedule, seed)?;
            per_split.push([base2, s2, base1, s1]);
        }
        let test = per_split.pop().unwrap_or_default();
        let val = per_split.pop().unwrap_or_default();
        if seed == seeds[0] {
            let energy = ("E(R_ref) under the model (eV)", "E(R_pred) under the model (eV)");
            for (name, s) in [("control", &test[1]), ("consistency", &test[3])] {
                let title = format!("{name} arm, test split, seed {seed}");
                write_svg(
                    &out.join(format!("scatter-{name}.svg")),
                    &scatter_svg(&title, energy.0, energy.1, &s.scatter),
                )?;
            }
            let paired: Vec<(f64, f64)> = test[1]
                .rmsd_per_molecule
                .iter()
                .copied()
                .zip(test[3].rmsd_per_molecule.iter().copied())
                .collect();
            let title = format!("RMSD to the xTB minimum per molecule, test, seed {seed} (below the line: consistency better)");
            write_svg(
                &out.join("rmsd-paired.svg"),
                &scatter_svg(&title, "control (Å)", "consistency (Å)", &paired),
            )?;
        }
        println!("seed {seed}: trained both arms in {wall:.0} s; test RMSD control {:.4} consistency {:.4} (MMFF {:.4})", test[1].rmsd_mean, test[3].rmsd_mean, test[0].rmsd_mean);
        results.push((seed, val, test, wall));
    }
    let report = report(settings, seeds, &results, gen, started.elapsed().as_secs_f64());
    print!("{report}");
    write_atomic(&out.join("report.md"), report.as_bytes())
}

fn mean_std(values: &[f64]) -> String {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return format!("{mean:.4}");
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    format!("{mean:.4} ± {:.4}", var.sqrt())
}

fn table(rows: &[(&str, Vec<Scores>)], samples: i64) -> String {
    let mut s = format!(
        "| structures | RMSD mean (Å) | RMSD min of {samples} (Å) | EGap under the model (eV) | energy MAE on MMFF (eV) | energy MAE on xTB-opt (eV) |\n|---|---|---|---|---|---|\n"
    );
    for (name, scores) in rows {
        let col = |f: fn(&Scores) -> f64| {
            let values: Vec<f64> = scores.iter().map(f).collect();
            if values.iter().all(|v| v.is_nan()) {
                "—".to_owned()
            } else {
                mean_std(&values)
            }
        };
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} |",
            col(|s| s.rmsd_mean),
            col(|s| s.rmsd_min),
            col(|s| s.egap),
            col(|s| s.mae_mmff),
            col(|s| s.mae_opt)
        );
    }
    s
}

fn report(
    settings: &Settings,
    seeds: &[u64],
    results: &[(u64, [Scores; 4], [Scores; 4], f64)],
    gen: &GenArgs,
    total: f64,
) -> String {
    let mut s = String::from("# physcon two-stage example: report\n\n");
    let p = &settings.plan;
    let _ = writeln!(
        s,
        "Preset `{}`: stage 1 {} steps, stage 2 {} steps per arm, batch {}, lr {:.0e}, kT {:.4} eV, model {:?}.\n\
         Seeds {seeds:?}; generation: {}, {} samples per molecule. Wall time {total:.0} s in all.\n\
         Mean ± standard deviation over seeds. RMSD and EGap are against the GFN2-xTB-optimised structures.\n",
        settings.name, p.stage1_steps, p.stage2_steps, p.batch_size, p.lr, settings.kt, settings.model, gen.generation().describe(), gen.samples,
    );
    for (title, pick) in [("Test split", 2usize), ("Validation split", 1)] {
        let col = |k: usize| {
            results
                .iter()
                .map(|r| if pick == 2 { r.2[k].clone() } else { r.1[k].clone() })
                .collect::<Vec<_>>()
        };
        let n = results
            .first()
            .map(|r| {
                if pick == 2 {
                    r.2[0].molecules
                } else {
                    r.1[0].molecules
                }
            })
            .unwrap_or(0);
        if n == 0 {
            let _ = writeln!(s, "## {title}: not evaluated\n");
            continue;
        }
        let _ = writeln!(s, "## {title} ({n} molecules)\n");
        s.push_str(&table(
            &[
                ("MMFF structure (cheap level), control's energy", col(0)),
                ("control (no consistency)", col(1)),
                ("MMFF structure (cheap level), consistency's energy", col(2)),
                ("consistency", col(3)),
            ],
            gen.samples,
        ));
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "Per seed (test RMSD mean: control / consistency; wall time of both arms):\n"
    );
    for (seed, _, test, wall) in results {
        let _ = writeln!(
            s,
            "- seed {seed}: {:.4} / {:.4}; EGap {:.4} / {:.4} eV; {wall:.0} s",
            test[1].rmsd_mean, test[3].rmsd_mean, test[1].egap, test[3].egap
        );
    }
    s.push_str(
        "\nPlots (test split, first seed): `scatter-control.svg`, `scatter-consistency.svg` (E(R_pred) against \
         E(R_ref) under each arm's model), `rmsd-paired.svg` (per-molecule RMSD, control against consistency). \
         Per-step losses: `seed-*/metrics.csv`.\n",
    );
    s
}

fn predict(settings: &Settings, checkpoint: &Path, input: &Path, output: &Path, gen: &GenArgs) -> Result<()> {
    if gen.samples < 1 {
        return Err(Error::InvalidArgument {
            arg: "--samples",
            reason: "must be at least 1".into(),
        });
    }
    let (_vs, model, arm) = load_model(checkpoint, settings)?;
    let frames = Dataset::new(read_extxyz(input)?)?;
    let schedule = NoiseSchedule::cosine(settings.diffusion_steps)?;
    tch::manual_seed(0);
    let mut out: Vec<Frame> = Vec::new();
    for chunk in frames.frames().chunks(32) {
        let molecules: Vec<_> = chunk.iter().map(Frame::molecule).collect();
        let batch = MolBatch::from_molecules(&molecules, Kind::Float, Device::Cpu)?;
        let g = Graph::new(&batch, Kind::Float)?;
        let samples = generate(&model, &g, batch.pos(), gen.samples, gen.generation(), &schedule)?;
        let samples: Vec<Vec<f64>> = samples
            .iter()
            .map(|x| Vec::<f64>::try_from(x.to_kind(Kind::Double).reshape([-1])))
            .collect::<std::result::Result<_, _>>()?;
        let mut offset = 0;
        for frame in chunk {
            for sample in &samples {
                let pos = (0..frame.num_atoms())
                    .map(|a| {
                        [
                            sample[3 * (offset + a)],
                            sample[3 * (offset + a) + 1],
                            sample[3 * (offset + a) + 2],
                        ]
                    })
                    .collect();
                out.push(Frame {
                    level: Some(format!("physcon-{}", arm.name())),
                    energy: None,
                    forces: None,
                    pos,
                    ..frame.clone()
                });
            }
            offset += frame.num_atoms();
        }
    }
    write_extxyz(output, &out)?;
    println!(
        "wrote {} structures ({} per molecule) to {}",
        out.len(),
        gen.samples,
        output.display()
    );
    Ok(())
}

/// libtorch's generator is process-wide: tests that seed it run one at a time.
#[cfg(test)]
static TEST_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    TEST_RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `quick` preset end to end: both arms, evaluation, report, resume and predict.
    #[test]
    fn quick_preset_end_to_end() {
        let _rng = rng_lock();
        tch::set_num_threads(1);
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = std::env::temp_dir().join(format!("physcon-two-stage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let settings = Settings::preset("quick").unwrap();
        let gen = GenArgs {
            samples: 2,
            generation: GenerationName::Refine,
            start: 10,
            ddim_steps: 5,
        };
        train_command(&settings, &root.join("data"), &out, &[0], false, &gen, false).unwrap();
        let report = std::fs::read_to_string(out.join("report.md")).unwrap();
        assert!(report.contains("consistency") && report.contains("MMFF structure"));
        assert!(out.join("scatter-consistency.svg").exists());
        // A finished run resumes to the same weights (nothing left to do), and a fresh --out is required otherwise.
        let again = train_command(&settings, &root.join("data"), &out, &[0], false, &gen, false);
        assert!(matches!(again, Err(Error::InvalidArgument { arg: "--out", .. })));
        let checkpoint = out.join("seed-0/consistency.safetensors");
        let output = out.join("predicted.extxyz");
        predict(
            &settings,
            &checkpoint,
            &root.join("tests/fixtures/extxyz/valid_small.extxyz"),
            &output,
            &gen,
        )
        .unwrap();
        let predicted = read_extxyz(&output).unwrap();
        assert_eq!(predicted.len(), 4 * 2);
        assert_eq!(predicted[0].mol_id, "nci-04846");
        assert_eq!(predicted[0].species, [8, 6, 8, 1, 1]);
        // A checkpoint of another model size is refused with a clear error.
        let paper = Settings {
            model: model::ModelConfig {
                hidden: 64,
                ..settings.model
            },
            ..settings.clone()
        };
        assert!(matches!(
            load_model(&checkpoint, &paper),
            Err(Error::InvalidArgument {
                arg: "checkpoint",
                ..
            })
        ));
        std::fs::remove_dir_all(&out).unwrap();
    }
}
