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
use crate::training::{load_model, Trained};
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
///
/// The input is streamed: read through once to check it as a whole (and once more with
/// `--strict`, to refuse a bad record anywhere before the model runs), then read, predicted and
/// written one batch ([`batching::Batcher`], the batches of the whole list) at a time, so memory
/// holds one batch and the `--npz` arrays, not the file. The output is a temporary file until
/// every structure is written; an error on the way deletes it.
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
    let input = io::Input::open(&args.input)?;
    io::check_output_format(&args.output, &input)?;
    let screener = checks::Screener::new(&input.path, &ELEMENTS, gen.generation);
    if args.strict {
        refuse_bad_records(&input, &screener)?;
    }
    let schedule = NoiseSchedule::cosine(trained.settings.diffusion_steps)?;
    tch::manual_seed(0);
    let mut run = Run {
        args,
        trained: &trained,
        schedule: &schedule,
        output: io::PredictionWriter::new(&args.output, input.format, trained.arm.name()),
        arrays: args
            .npz
            .as_ref()
            .map(|_| npz::PredictedArrays::new(n_samples as usize)),
        structure_skips: Vec::new(),
        seconds: 0.0,
        fire_steps: (0, 0),
        unconverged: 0,
        rejected: 0,
        predicted: 0,
    };
    let mut records = input.records()?;
    let (mut record_skips, mut notes) = (Vec::new(), Vec::new());
    let mut first_rejected = None;
    let (mut kept, mut kekule) = (0usize, 0usize);
    let mut batcher = batching::Batcher::default();
    let mut batch: Vec<(io::InputMolecule, checks::Screen)> = Vec::new();
    let bar = indicatif::ProgressBar::new(input.text_bytes);
    while let Some(record) = records.next_record()? {
        let m = match record {
            Ok(m) => m,
            Err(r) => {
                record_skips.push(r.error.to_string());
                first_rejected.get_or_insert(r.error);
                continue;
            }
        };
        let mut screen = screener.molecule(&m);
        if let Some(why) = screen.skipped.take() {
            record_skips.push(why);
            continue;
        }
        notes.extend(screen.notes.drain(..).map(|n| format!("warning: {n}")));
        kept += 1;
        kekule += m.kekule_bonds();
        if batcher.push(m.frame.num_atoms()) {
            run.batch(&batch)?;
            batch.clear();
            bar.set_position(records.bytes_read());
        }
        batch.push((m, screen));
    }
    if !batch.is_empty() {
        run.batch(&batch)?;
    }
    drop(batch);
    bar.finish_and_clear();
    let records = records.records();
    if kept == 0 {
        // One record: its own message; several: each on its line, then how many, and the first.
        if record_skips.len() > 1 {
            for s in &record_skips {
                eprintln!("skipped: {s}");
            }
        }
        if let ([_], Some(e)) = (record_skips.as_slice(), first_rejected) {
            return Err(e);
        }
        return Err(Error::Flag {
            flag: "--input",
            reason: format!(
                "{}: none of its {records} records can be predicted; the first: {}",
                args.input.display(),
                record_skips.first().map_or("", String::as_str)
            ),
        });
    }
    let written = run.output.written();
    let mut out = Predicted {
        skipped: record_skips
            .iter()
            .chain(&run.structure_skips)
            .map(|s| format!("skipped: {s}"))
            .collect(),
        notes,
        records,
        records_skipped: record_skips.len(),
        structures_skipped: run.structure_skips.len(),
        written,
        ..Default::default()
    };
    if written == 0 {
        // Nothing to write: an empty output would read as a prediction of no molecules.
        for line in &out.skipped {
            eprintln!("{line}");
        }
        return Err(Error::Flag {
            flag: "--input",
            reason: format!(
                "none of the {} structures predicted can be written; the first: {}",
                run.predicted,
                run.structure_skips.first().map_or("", String::as_str)
            ),
        });
    }
    let predicted = run.predicted;
    let (seconds, fire_steps, unconverged, rejected) =
        (run.seconds, run.fire_steps, run.unconverged, run.rejected);
    run.output.commit()?;
    if let (Some(path), Some(arrays)) = (&args.npz, run.arrays) {
        arrays.write(path)?;
    }
    out.summary = format!(
        "wrote {written} structures ({n_samples} per molecule, {kept} molecules) to {}; {}: {:.1} ms per molecule\n",
        args.output.display(),
        gen.generation().describe(),
        1e3 * seconds / kept as f64
    );
    if kekule > 0 {
        out.summary += &format!(
            "read {kekule} bonds of Kekulé-written aromatic rings as aromatic (order 4), as the model \
             was trained; the output keeps the file's bonds\n"
        );
    }
    if let (steps, molecules @ 1..) = fire_steps {
        let mean = steps as f64 / molecules as f64;
        out.summary += &format!(
            "FIRE: {} of {kept} molecules converged, {mean:.0} force evaluations per molecule on average\n",
            kept - unconverged,
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
            "guard: {rejected} of {predicted} structures are the input unchanged ({why}; `physcon_refined=F` in the output)\n",
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

/// `--strict`: refuses the input at its first record that cannot be predicted, naming how
/// many there are, by reading it through once before the model runs.
fn refuse_bad_records(input: &io::Input, screener: &checks::Screener) -> Result<()> {
    let mut records = input.records()?;
    let (mut first, mut bad) = (None, 0usize);
    while let Some(record) = records.next_record()? {
        let why = match record {
            Ok(m) => screener.molecule(&m).skipped,
            Err(r) => Some(r.error.to_string()),
        };
        if let Some(why) = why {
            bad += 1;
            first.get_or_insert(why);
        }
    }
    match first {
        None => Ok(()),
        Some(first) => Err(Error::Flag {
            flag: "--strict",
            reason: format!("{first} ({bad} such records in all)"),
        }),
    }
}

/// The prediction of a streamed input, batch by batch: the structures go to the output (and
/// the `.npz` arrays) as each batch is predicted, and what the summary needs is counted.
struct Run<'a> {
    args: &'a PredictArgs,
    trained: &'a Trained,
    schedule: &'a NoiseSchedule,
    output: io::PredictionWriter,
    arrays: Option<npz::PredictedArrays>,
    /// One `file:line: ...` line per structure not written, in file order.
    structure_skips: Vec<String>,
    /// Time spent generating and checking (reading and writing excluded).
    seconds: f64,
    /// FIRE: force evaluations in all, and molecules relaxed.
    fire_steps: (usize, usize),
    unconverged: usize,
    /// Structures the guard gave back as the input.
    rejected: usize,
    /// Structures predicted.
    predicted: usize,
}

impl Run<'_> {
    /// Predicts one batch of molecules (with what the screener found about each) and writes
    /// their structures.
    fn batch(&mut self, batch: &[(io::InputMolecule, checks::Screen)]) -> Result<()> {
        let (args, gen) = (self.args, &self.args.gen);
        let started = Instant::now();
        let molecules: Vec<_> = batch.iter().map(|(m, _)| m.molecule()).collect();
        let mol_batch = MolBatch::from_molecules(&molecules, Kind::Float, Device::Cpu)?;
        let g = Graph::new(&mol_batch, Kind::Float)?;
        let generated = generate(
            &self.trained.model,
            &g,
            mol_batch.pos(),
            gen.samples(),
            gen.generation(),
            self.schedule,
        )?;
        if let Some((steps, converged)) = &generated.fire {
            self.fire_steps.0 += steps.iter().sum::<usize>();
            self.fire_steps.1 += steps.len();
            self.unconverged += converged.iter().filter(|c| !**c).count();
        }
        let samples = generated
            .samples
            .iter()
            .map(|x| atom_vectors(x, &g.layout))
            .collect::<physcon::Result<Vec<_>>>()?;
        // Per sample, per molecule of the batch: (kept, energy change).
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
        let mut predictions: Vec<Vec<io::Prediction>> = Vec::with_capacity(batch.len());
        for (i, (m, screen)) in batch.iter().enumerate() {
            let mut of_molecule = Vec::with_capacity(samples.len());
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
                // The model is blamed only for a structure broken where its input was sound.
                let problem = checks::exploded(m, &pos)
                    .map(|why| match &screen.input_geometry {
                        Some(input) => format!(
                            "{why}, from an input that was no sound structure before any model ran: the \
                             input itself {input}; correct the input first"
                        ),
                        None => format!("{why}: {}", checks::exploded_hint(gen.generation)),
                    })
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
                    self.structure_skips.push(line);
                }
                if let Some((false, _)) = guard {
                    self.rejected += 1;
                }
                of_molecule.push(io::Prediction {
                    sample: s as i64,
                    pos,
                    problem,
                    guard,
                });
            }
            offset += m.frame.num_atoms();
            predictions.push(of_molecule);
        }
        self.seconds += started.elapsed().as_secs_f64();
        for ((m, screen), of_molecule) in batch.iter().zip(&predictions) {
            self.predicted += of_molecule.len();
            for p in of_molecule.iter().filter(|p| p.problem.is_none()) {
                self.output.write(m, p)?;
            }
            if let Some(arrays) = &mut self.arrays {
                arrays.push(m, screen, of_molecule)?;
            }
        }
        Ok(())
    }
}
