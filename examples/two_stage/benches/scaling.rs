//! Scaling of the optimality loss (stationarity, `ToStructure`: one energy
//! forward, a create-graph backward, a backward to the structure, the
//! surrogate's backward) with batch size and with molecule size, for the
//! analytic Morse pair energy (`physcon::testing::PairEnergy`) and for the
//! two-stage example's reference model (f32, hidden 64, 3 layers, rbf 16,
//! fully connected within each molecule, no bonds).
//!
//! - batch scan: 8 to 512 molecules of 20 atoms (384 included to locate the
//!   cache cliff of the reference model);
//! - size scan: 10, 20, 50, 100 atoms per molecule at a fixed total of 2000
//!   atoms (200, 100, 40, 20 molecules), so the per-atom cost shows the
//!   all-pairs growth directly.
//!
//! Every configuration runs in a fresh child process (this binary with
//! `--child`), which builds the batch and the energy, resets its peak RSS
//! (`echo 5 > /proc/self/clear_refs`), reads `VmRSS` (the baseline), runs the
//! loss (1 warm-up + timed repetitions) and reads `VmHWM`: the peak is the
//! largest resident set during the loss calls, the working memory is peak
//! minus baseline. One thread (`tch::set_num_threads(1)`) unless `--threads`.
//!
//! `scripts/with-libtorch.sh cargo bench --bench scaling`
//!
//! Writes `<out>/scaling.json` and `<out>/scaling.md`.

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use clap::Parser;
use physcon::losses::StationarityLoss;
use physcon::{EnergyModel, Error, MolBatch, Result};
use tch::{Device, Kind};
use two_stage::model::{Graph, Model, ModelConfig};

#[derive(Parser, Debug)]
#[command(about = "Time and peak memory of the optimality loss against batch and molecule size")]
struct Args {
    /// Run one configuration and print its result line (used by the parent).
    #[arg(long)]
    child: bool,
    /// `pair` (Morse) or `model` (the reference model).
    #[arg(long, default_value = "pair")]
    energy: String,
    /// Molecules in the batch (child).
    #[arg(long, default_value_t = 32)]
    molecules: i64,
    /// Atoms per molecule (child).
    #[arg(long, default_value_t = 20)]
    atoms: i64,
    /// Thread count.
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Timed repetitions at least (after one warm-up call).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Timed seconds at least per configuration (at most 50 repetitions).
    #[arg(long, default_value_t = 2.0)]
    min_seconds: f64,
    /// Which energies to scan, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "pair,model")]
    energies: Vec<String>,
    /// Output folder.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const BATCHES: [i64; 8] = [8, 16, 32, 64, 128, 256, 384, 512];
const SIZES: [i64; 4] = [10, 20, 50, 100];
const TOTAL_ATOMS: i64 = 2000;

/// A field of `/proc/self/status` in MiB.
fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn child(args: &Args) -> Result<()> {
    tch::set_num_threads(args.threads);
    let (layout, pos) = common::batch(args.molecules, args.atoms, 7)?;
    let loss = StationarityLoss::new();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let run = |energy: &dyn EnergyModel| -> Result<(common::Timing, f64, f64, f64)> {
        let call = || -> Result<()> {
            let x = pos.detach().set_requires_grad(true);
            loss.forward(energy, &x, &layout)?.backward();
            Ok(())
        };
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let base = status_mib("VmRSS:").unwrap_or(f64::NAN);
        let timing = common::time_reps(call, 1, args.reps, args.min_seconds, 50)?;
        let peak = status_mib("VmHWM:").unwrap_or(f64::NAN);
        Ok((timing, base, peak, if reset { 1.0 } else { 0.0 }))
    };
    let (timing, base, peak, reset) = match args.energy.as_str() {
        "pair" => run(&common::energy(&layout)?)?,
        "model" => {
            tch::manual_seed(0);
            let net = Model::new(&vs.root(), ModelConfig::default(), 1000);
            let batch = MolBatch::new(
                &pos,
                &common::species(args.molecules, args.atoms),
                layout.batch(),
                args.molecules,
            )?;
            let g = Graph::new(&batch, Kind::Float)?;
            let energy = net.energy_model(&g);
            run(&energy)?
        }
        other => {
            return Err(Error::InvalidArgument {
                arg: "--energy",
                reason: format!("`{other}`: pair or model"),
            })
        }
    };
    println!(
        "RESULT {{\"energy\": \"{}\", \"molecules\": {}, \"atoms\": {}, \"threads\": {}, \"ms\": {:.4}, \
         \"reps\": {}, \"base_mib\": {:.1}, \"peak_mib\": {:.1}, \"hwm_reset\": {}}}",
        args.energy,
        args.molecules,
        args.atoms,
        args.threads,
        timing.median * 1e3,
        timing.reps,
        base,
        peak,
        reset == 1.0
    );
    Ok(())
}

struct Row {
    molecules: i64,
    atoms: i64,
    ms: f64,
    base: f64,
    peak: f64,
    line: String,
}

fn field(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!("\"{key}\": "))? + key.len() + 4;
    let rest = &line[at..];
    let end = rest.find([',', '}'])?;
    rest[..end].trim().trim_matches('"').parse().ok()
}

fn spawn(args: &Args, energy: &str, molecules: i64, atoms: i64) -> Result<Row> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        path: PathBuf::from("current_exe"),
        source,
    })?;
    let output = Command::new(&exe)
        .args([
            "--child",
            "--energy",
            energy,
            "--molecules",
            &molecules.to_string(),
            "--atoms",
            &atoms.to_string(),
            "--threads",
            &args.threads.to_string(),
            "--reps",
            &args.reps.to_string(),
            "--min-seconds",
            &args.min_seconds.to_string(),
        ])
        .output()
        .map_err(|source| Error::Io {
            path: exe.clone(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| Error::InvalidArgument {
            arg: "child",
            reason: format!(
                "{energy} {molecules}x{atoms} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        })?
        .to_owned();
    let get = |k: &str| field(&line, k).unwrap_or(f64::NAN);
    Ok(Row {
        molecules,
        atoms,
        ms: get("ms"),
        base: get("base_mib"),
        peak: get("peak_mib"),
        line,
    })
}

/// Least-squares slope of log y against log x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (lx, ly): (Vec<f64>, Vec<f64>) = points.iter().map(|&(x, y)| (x.ln(), y.ln())).unzip();
    let (mx, my) = (lx.iter().sum::<f64>() / n, ly.iter().sum::<f64>() / n);
    let sxy: f64 = lx.iter().zip(&ly).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = lx.iter().map(|x| (x - mx).powi(2)).sum();
    sxy / sxx
}

fn pairs(molecules: i64, atoms: i64) -> i64 {
    molecules * atoms * (atoms - 1) / 2
}

fn parent(args: &Args) -> Result<()> {
    let out = common::output_dir(&args.out)?;
    let mut md = String::new();
    let mut json = Vec::new();
    let _ = writeln!(
        md,
        "optimality loss (stationarity, ToStructure), forward + backward, f32, {} thread(s); \
         memory = peak RSS during the loss calls (VmHWM after a reset) minus RSS before them\n",
        args.threads
    );
    for energy in &args.energies {
        let header = "| molecules | atoms/mol | pairs | ms | µs/molecule | ns/pair | peak RSS MiB | loss working MiB | bytes/pair |\n\
                      |---:|---:|---:|---:|---:|---:|---:|---:|---:|";
        let mut batch_rows = Vec::new();
        for b in BATCHES {
            let r = spawn(args, energy, b, 20)?;
            eprintln!("{energy} batch {b} x 20: {:.2} ms, peak {:.0} MiB", r.ms, r.peak);
            batch_rows.push(r);
        }
        let mut size_rows = Vec::new();
        for n in SIZES {
            let r = spawn(args, energy, TOTAL_ATOMS / n, n)?;
            eprintln!(
                "{energy} {} x {n}: {:.2} ms, peak {:.0} MiB",
                TOTAL_ATOMS / n,
                r.ms,
                r.peak
            );
            size_rows.push(r);
        }
        let table = |rows: &[Row]| -> String {
            let mut s = String::from(header);
            for r in rows {
                let p = pairs(r.molecules, r.atoms);
                let work = (r.peak - r.base).max(0.0);
                let _ = write!(
                    s,
                    "\n| {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} |",
                    r.molecules,
                    r.atoms,
                    p,
                    r.ms,
                    r.ms * 1e3 / r.molecules as f64,
                    r.ms * 1e6 / p as f64,
                    r.peak,
                    work,
                    work * 1048576.0 / p as f64
                );
            }
            s
        };
        // Growth: time and working memory against batch (B = 32..256: fixed costs amortised, and
        // below the cliff where the [pairs, hidden] tensors of the model outgrow the caches and
        // glibc's largest heap-served allocation, 32 MiB) and per-molecule time and memory
        // against atoms per molecule; the cliff itself as the time per pair of the largest
        // configuration over that of B = 256.
        let fit = |rows: &[&Row], x: &dyn Fn(&Row) -> f64, y: &dyn Fn(&Row) -> f64| {
            slope(&rows.iter().map(|r| (x(r), y(r))).collect::<Vec<_>>())
        };
        let mid: Vec<&Row> = batch_rows
            .iter()
            .filter(|r| (32..=256).contains(&r.molecules))
            .collect();
        let work = |r: &Row| (r.peak - r.base).max(1.0);
        let per_mol = |r: &Row| r.ms / r.molecules as f64;
        let t_b = fit(&mid, &|r| r.molecules as f64, &|r| r.ms);
        let m_b = fit(&mid, &|r| r.molecules as f64, &work);
        let sizes: Vec<&Row> = size_rows.iter().collect();
        let small: Vec<&Row> = size_rows.iter().filter(|r| r.atoms <= 50).collect();
        let t_n = fit(&sizes, &|r| r.atoms as f64, &per_mol);
        let t_n_small = fit(&small, &|r| r.atoms as f64, &per_mol);
        let m_n = fit(&sizes, &|r| r.atoms as f64, &|r| work(r) / r.molecules as f64);
        let per_pair = |r: &Row| r.ms / pairs(r.molecules, r.atoms) as f64;
        let cliff = batch_rows
            .iter()
            .find(|r| r.molecules == 256)
            .zip(batch_rows.last())
            .map(|(a, b)| per_pair(b) / per_pair(a))
            .unwrap_or(f64::NAN);
        let name = if energy == "pair" {
            "Morse pair energy (physcon::testing::PairEnergy)"
        } else {
            "reference model (examples/two_stage/model.rs)"
        };
        let _ = writeln!(
            md,
            "### {name}\n\nbatch scan (20 atoms per molecule):\n\n{}\n",
            table(&batch_rows)
        );
        let _ = writeln!(
            md,
            "size scan ({TOTAL_ATOMS} atoms per batch):\n\n{}\n",
            table(&size_rows)
        );
        let _ = writeln!(
            md,
            "growth: time ∝ B^{t_b:.2} and working memory ∝ B^{m_b:.2} (B = 32..256); time per pair at \
             B = 512 / at B = 256: {cliff:.2}; time per molecule ∝ n^{t_n:.2} over n = 10..100 \
             (n^{t_n_small:.2} over n = 10..50), working memory per molecule ∝ n^{m_n:.2} (n = 10..100)\n"
        );
        for r in batch_rows.iter().chain(&size_rows) {
            json.push(r.line.clone());
        }
    }
    let path = out.join("scaling.md");
    std::fs::write(&path, &md).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let path_json = out.join("scaling.json");
    std::fs::write(&path_json, format!("[\n  {}\n]\n", json.join(",\n  "))).map_err(|source| Error::Io {
        path: path_json.clone(),
        source,
    })?;
    println!("{md}");
    println!("wrote {} and {}", path.display(), path_json.display());
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.child {
        child(&args)
    } else {
        parent(&args)
    }
}
