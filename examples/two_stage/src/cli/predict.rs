//! `predict`: generated structures for a user's own SDF/MOL or extended-XYZ file.

use std::path::PathBuf;
use std::time::Instant;

use crate::{Error, Result};
use physcon::array::atom_vectors;
use physcon::data::excerpt;
use physcon::diffusion::NoiseSchedule;
use physcon::MolBatch;
use tch::{Device, Kind};

use crate::eval::{generate, Guard};
use crate::generation::{check_generation, check_samples, GenArgs};
use crate::io;
use crate::model::{Graph, ELEMENTS};
use crate::npz;
use crate::settings::Preset;
use crate::threads::Threads;
use crate::training::load_model;
use crate::{batching, checks};

use super::requested;

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
    /// [`Error::Flag`] (`--skip-bad`) naming the count.
    pub fn status(&self, args: &PredictArgs) -> Result<()> {
        if self.skipped.is_empty() || args.skip_bad {
            return Ok(());
        }
        Err(Error::Flag {
            flag: "--skip-bad",
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
    check_samples(n_samples)?;
    io::check_output("--output", &args.input, &args.output, args.force)?;
    if let Some(path) = &args.npz {
        io::check_output("--npz", &args.input, path, args.force)?;
        if path == &args.output {
            return Err(Error::Flag {
                flag: "--npz",
                reason: format!("`{}` is also the --output file", path.display()),
            });
        }
    }
    let trained = load_model(&args.checkpoint, requested(args.preset)?.as_ref())?;
    check_generation(gen, trained.settings.diffusion_steps)?;
    let mut input = io::Input::read(&args.input)?;
    io::check_output_format(&args.output, &input)?;
    let screened = checks::screen(&input, &ELEMENTS);
    if let (true, Some(first)) = (args.strict, screened.skipped.first()) {
        return Err(Error::Flag {
            flag: "--strict",
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
        return Err(Error::Flag {
            flag: "--input",
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
    let (mut fire_steps, mut unconverged, mut rejected) = (Vec::new(), 0, 0usize);
    let bar = indicatif::ProgressBar::new(kept.len() as u64);
    let mut predictions: Vec<io::Prediction> = Vec::new();
    let sizes: Vec<usize> = kept
        .iter()
        .map(|&k| input.molecules[k].frame.num_atoms())
        .collect();
    for range in batching::batches(&sizes) {
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
            .collect::<physcon::Result<Vec<_>>>()?;
        // Per sample, per molecule of the chunk: (kept, energy change).
        let verdicts: Option<Vec<Vec<(bool, f64)>>> = generated
            .guarded
            .as_ref()
            .map(|per_sample| {
                per_sample
                    .iter()
                    .map(|v| {
                        let kept = Vec::<bool>::try_from(&v.accepted)?;
                        let change = Vec::<f64>::try_from(&v.energy_change.to_kind(Kind::Double))?;
                        Ok(kept.into_iter().zip(change).collect())
                    })
                    .collect::<std::result::Result<Vec<_>, tch::TchError>>()
            })
            .transpose()
            .map_err(physcon::Error::from)?;
        let mut offset = 0;
        for (i, &k) in chunk.iter().enumerate() {
            let m = &input.molecules[k];
            for (s, sample) in samples.iter().enumerate() {
                let pos: Vec<[f64; 3]> = sample
                    .outer_iter()
                    .skip(offset)
                    .take(m.frame.num_atoms())
                    .map(|r| [r[0], r[1], r[2]])
                    .collect();
                let guard = verdicts.as_ref().map(|v| v[s][i]);
                // A refinement the guard refused gives back the input itself, not its
                // round trip through the model's f32.
                let pos = match guard {
                    Some((false, _)) => m.frame.pos.clone(),
                    _ => io::place_like(&m.frame.pos, &pos),
                };
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
                        return Err(Error::Flag {
                            flag: "--strict",
                            reason: format!("{line}; nothing was written"),
                        });
                    }
                    out.skipped.push(format!("skipped: {line}"));
                    out.structures_skipped += 1;
                }
                if let Some((false, _)) = guard {
                    rejected += 1;
                }
                predictions.push(io::Prediction {
                    molecule: k,
                    sample: s as i64,
                    pos,
                    problem,
                    guard,
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
        return Err(Error::Flag {
            flag: "--input",
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
    let why = match gen.generation().guard() {
        Guard::Off => None,
        Guard::Energy => Some("the energy model put every refinement of them higher".to_owned()),
        Guard::EnergyAndMove(d) => Some(format!(
            "the energy model put every refinement of them higher, or it moved an atom over {d} Å"
        )),
    };
    if let Some(why) = why {
        out.summary += &format!(
            "guard: {rejected} of {} structures are the input unchanged ({why}; `physcon_refined=F` in the output)\n",
            predictions.len()
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
