//! Shared bench fixtures: batches of ~20-atom molecules and an analytic energy.
#![allow(dead_code)]

use physcon::testing::{PairEnergy, PairPotential};
use physcon::{BatchLayout, Result};
use tch::{Device, Kind, Tensor};

pub const ATOMS: i64 = 20;

/// `molecules` molecules of `atoms` atoms on a jittered lattice (no close contacts), f32.
pub fn batch(molecules: i64, atoms: i64, seed: i64) -> Result<(BatchLayout, Tensor)> {
    tch::manual_seed(seed);
    let layout = BatchLayout::from_counts(&vec![atoms; molecules as usize], Device::Cpu)?;
    let k = Tensor::arange(atoms, (Kind::Int64, Device::Cpu));
    let lattice =
        Tensor::stack(&[k.remainder(3), (&k / 3).remainder(3), &k / 9], 1).to_kind(Kind::Float) * 1.3;
    let pos = lattice.repeat([molecules, 1])
        + Tensor::rand([molecules * atoms, 3], (Kind::Float, Device::Cpu)) * 0.3;
    Ok((layout, pos))
}

/// Atomic numbers of `molecules` synthetic organic-like molecules of `atoms`
/// atoms each: C, H, N, H, O, H, C, H, H, C, C, H, ...
pub fn species(molecules: i64, atoms: i64) -> Tensor {
    let pattern = [6i64, 1, 7, 1, 8, 1, 6, 1, 1, 6];
    let one: Vec<i64> = (0..atoms as usize).map(|k| pattern[k % pattern.len()]).collect();
    Tensor::from_slice(&one).repeat([molecules])
}

/// A Morse pair energy over all pairs of each molecule.
pub fn energy(layout: &BatchLayout) -> Result<PairEnergy> {
    PairEnergy::new(
        PairPotential::Morse {
            d: 1.0,
            a: 1.5,
            r0: 1.4,
        },
        layout,
    )
}

/// Wall-clock statistics of a repeated call, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Median wall time over the timed repetitions.
    pub median: f64,
    /// Fastest repetition (wall time).
    pub min: f64,
    /// Timed repetitions (after the warm-up).
    pub reps: usize,
}

/// CPU seconds the calling thread has used.
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant libc knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The physcon repository (the dataset, `target/`), whatever the working directory.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The bench's output folder (`--out`, relative to the repository root), created.
pub fn output_dir(out: &std::path::Path) -> Result<std::path::PathBuf> {
    let out = repo_root().join(out);
    std::fs::create_dir_all(&out).map_err(|source| physcon::Error::Io {
        path: out.clone(),
        source,
    })?;
    Ok(out)
}

/// Times `f`: `warmup` untimed calls, then at least `min_reps` timed calls and
/// at least `min_seconds` of timed calls (at most `max_reps`).
pub fn time_reps(
    mut f: impl FnMut() -> Result<()>,
    warmup: usize,
    min_reps: usize,
    min_seconds: f64,
    max_reps: usize,
) -> Result<Timing> {
    for _ in 0..warmup {
        f()?;
    }
    let mut samples = Vec::new();
    let started = std::time::Instant::now();
    while samples.len() < min_reps
        || (started.elapsed().as_secs_f64() < min_seconds && samples.len() < max_reps)
    {
        let t = std::time::Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64());
    }
    let reps = samples.len();
    samples.sort_by(f64::total_cmp);
    Ok(Timing {
        median: samples[reps / 2],
        min: samples[0],
        reps,
    })
}
