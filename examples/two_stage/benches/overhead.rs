//! Overhead of physcon's optimality loss against the floor: a minimal
//! hand-written tch sequence making the same autograd calls (one energy
//! forward on a detached leaf, a create-graph backward, the per-molecule
//! reduction, a backward to the leaf, the surrogate, the final backward).
//! Prints the ratio of median times; target <= 1.05.
//!
//! The two paths alternate call by call (the order rotating through the six
//! permutations of physcon / floor / floor again), so drift in the machine's
//! speed hits all alike; the floor's second copy gives the A/A ratio, the
//! method's own error. Each call is timed three ways: wall clock, the calling
//! thread's CPU time (with one intra-op thread libtorch runs every kernel and
//! the whole CPU autograd engine on the caller, so this is the work itself,
//! blind to other processes taking the core) and the minor page faults it
//! took.
//!
//! Every configuration runs twice, in child processes: with glibc malloc as it
//! comes, and with its mmap and trim thresholds raised (as `BENCH_MALLOC=tuned
//! scripts/bench.sh` runs everything), which keeps freed memory mapped, so the
//! order in which a path frees its tensors cannot show up as page faults.
//!
//! `scripts/with-libtorch.sh cargo bench --bench overhead`

mod common;

use std::process::Command;
use std::time::Instant;

use physcon::losses::StationarityLoss;
use physcon::{EnergyModel, Error, Result};
use tch::{Kind, Tensor};

/// glibc's thresholds in the tuned runs: keep freed memory instead of unmapping it.
const TUNED_MALLOC: [(&str, &str); 2] = [
    ("MALLOC_MMAP_THRESHOLD_", "1073741824"),
    ("MALLOC_TRIM_THRESHOLD_", "1073741824"),
];

/// Cost of one call: wall seconds, thread CPU seconds, minor page faults.
#[derive(Clone, Copy, Default)]
struct Cost {
    wall: f64,
    cpu: f64,
    faults: f64,
}

fn thread_minor_faults() -> f64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten by getrusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD) failed");
    usage.ru_minflt as f64
}

fn measure(f: &mut dyn FnMut() -> Result<()>) -> Result<Cost> {
    let (faults, cpu, wall) = (
        thread_minor_faults(),
        common::thread_cpu_seconds(),
        Instant::now(),
    );
    f()?;
    Ok(Cost {
        wall: wall.elapsed().as_secs_f64(),
        cpu: common::thread_cpu_seconds() - cpu,
        faults: thread_minor_faults() - faults,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Median of each of the three measures.
fn medians(costs: &[Cost]) -> Cost {
    Cost {
        wall: median(costs.iter().map(|c| c.wall).collect()),
        cpu: median(costs.iter().map(|c| c.cpu).collect()),
        faults: median(costs.iter().map(|c| c.faults).collect()),
    }
}

const PERMUTATIONS: [[usize; 3]; 6] = [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 2, 1], [2, 1, 0], [1, 0, 2]];

fn child(molecules: i64, calls: usize) -> Result<()> {
    tch::set_num_threads(1);
    let (layout, pos) = common::batch(molecules, common::ATOMS, 1)?;
    let energy = common::energy(&layout)?;
    let structure = || pos.detach().set_requires_grad(true);
    let counts = layout.counts().to_kind(Kind::Float);
    let mut physcon = || -> Result<()> {
        let x = structure();
        StationarityLoss::new().forward(&energy, &x, &layout)?.backward();
        Ok(())
    };
    let floor = || -> Result<()> {
        let r_hat = structure();
        let leaf = r_hat.detach().set_requires_grad(true);
        let e = energy.energy(&leaf)?;
        let g = Tensor::run_backward(&[e.sum(Kind::Float)], &[&leaf], true, true).remove(0);
        let per_atom = g.square().sum_dim_intlist(1, false, Kind::Float);
        let per_mol = Tensor::zeros([molecules], (Kind::Float, tch::Device::Cpu)).index_add(
            0,
            layout.batch(),
            &per_atom,
        ) / &counts;
        let loss = per_mol.mean(Kind::Float);
        let v = Tensor::run_backward(&[&loss], &[&leaf], false, false).remove(0);
        let surrogate = loss.detach() + (v * (&r_hat - r_hat.detach())).sum(Kind::Float);
        surrogate.backward();
        Ok(())
    };
    let (mut floor_a, mut floor_b) = (floor, floor);
    let mut paths: [&mut dyn FnMut() -> Result<()>; 3] = [&mut physcon, &mut floor_a, &mut floor_b];
    for path in paths.iter_mut() {
        for _ in 0..5 {
            path()?;
        }
    }
    let mut costs = [Vec::new(), Vec::new(), Vec::new()];
    for call in 0..calls {
        for &which in &PERMUTATIONS[call % PERMUTATIONS.len()] {
            costs[which].push(measure(&mut *paths[which])?);
        }
    }
    let [p, f, a] = costs.map(|c| medians(&c));
    println!(
        "{molecules} {} {} {} {} {} {} {} {} {}",
        p.wall, f.wall, a.wall, p.cpu, f.cpu, a.cpu, p.faults, f.faults, a.faults
    );
    Ok(())
}

fn parent() -> Result<()> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        path: "/proc/self/exe".into(),
        source,
    })?;
    println!(
        "optimality loss (stationarity, ToStructure, Morse, 20-atom molecules): physcon vs hand-written tch, 1 thread"
    );
    println!("medians over interleaved calls; ratio = physcon / floor, A/A = floor / floor (the method's own error)");
    println!(
        "{:<8} {:>6} {:>6} | {:>9} {:>9} {:>7} {:>7} | {:>9} {:>9} {:>7} {:>7} | {:>14}",
        "malloc",
        "mols",
        "calls",
        "cpu ms",
        "floor",
        "ratio",
        "A/A",
        "wall ms",
        "floor",
        "ratio",
        "A/A",
        "faults/call"
    );
    for tuned in [false, true] {
        for (molecules, calls) in [(32i64, 1500usize), (256, 200)] {
            let mut cmd = Command::new(&exe);
            cmd.args(["--child", &molecules.to_string(), &calls.to_string()]);
            for (key, value) in TUNED_MALLOC {
                if tuned {
                    cmd.env(key, value);
                } else {
                    cmd.env_remove(key);
                }
            }
            let out = cmd.output().map_err(|source| Error::Io {
                path: exe.clone(),
                source,
            })?;
            if !out.status.success() {
                return Err(Error::InvalidArgument {
                    arg: "child",
                    reason: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            let line = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            let [_, pw, fw, aw, pc, fc, ac, pf, ff, _] = v[..] else {
                return Err(Error::InvalidArgument {
                    arg: "child",
                    reason: format!("unexpected output `{line}`"),
                });
            };
            println!(
                "{:<8} {molecules:>6} {calls:>6} | {:>9.3} {:>9.3} {:>7.3} {:>7.3} | {:>9.3} {:>9.3} {:>7.3} {:>7.3} | {:>6.0} vs {:>4.0}",
                if tuned { "tuned" } else { "default" },
                pc * 1e3,
                fc * 1e3,
                pc / fc,
                ac / fc,
                pw * 1e3,
                fw * 1e3,
                pw / fw,
                aw / fw,
                pf,
                ff,
            );
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--child") {
        Some(i) => {
            let number = |k: usize| args.get(i + k).and_then(|s| s.parse::<usize>().ok());
            match (number(1), number(2)) {
                (Some(molecules), Some(calls)) => child(molecules as i64, calls),
                _ => Err(Error::InvalidArgument {
                    arg: "--child",
                    reason: "expects <molecules> <calls>".into(),
                }),
            }
        }
        None => parent(),
    }
}
