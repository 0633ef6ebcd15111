//! Shared fixtures: random molecules in shuffled ragged layouts, and a Morse
//! energy whose parameters are tensors (so gradients into the energy model can
//! be checked).
#![allow(dead_code)]

use physcon::geometry::{distances, pairs_within};
use physcon::{BatchLayout, Result};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor};

/// A random batch: 1-4 molecules of 1-12 atoms on a jittered lattice (no two
/// atoms closer than ~0.8 Å), atoms shuffled across the batch.
#[derive(Debug)]
pub struct Case {
    pub layout: BatchLayout,
    /// Positions `[N, 3]`.
    pub pos: Tensor,
    /// Two unrelated random atom-level fields `[N, 3]` in [-1, 1].
    pub u: Tensor,
    pub v: Tensor,
    /// Two random molecule-level values `[B]`.
    pub p: Tensor,
    pub q: Tensor,
    /// A random label mask `[B]`.
    pub mask: Tensor,
    /// The molecule of each atom, on the host.
    pub batch: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct RawCase {
    counts: Vec<usize>,
    perm: Vec<usize>,
    jitter: Vec<f64>,
    u: Vec<f64>,
    v: Vec<f64>,
    p: Vec<f64>,
    q: Vec<f64>,
    mask: Vec<bool>,
}

pub fn raw_case(max_atoms: usize) -> impl Strategy<Value = RawCase> {
    prop::collection::vec(1..=max_atoms, 1..=4).prop_flat_map(|counts| {
        let n: usize = counts.iter().sum();
        let b = counts.len();
        (
            Just(counts),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            prop::collection::vec(-0.25..0.25f64, 3 * n),
            prop::collection::vec(-1.0..1.0f64, 3 * n),
            prop::collection::vec(-1.0..1.0f64, 3 * n),
            prop::collection::vec(-3.0..3.0f64, b),
            prop::collection::vec(-3.0..3.0f64, b),
            prop::collection::vec(any::<bool>(), b),
        )
            .prop_map(|(counts, perm, jitter, u, v, p, q, mask)| RawCase {
                counts,
                perm,
                jitter,
                u,
                v,
                p,
                q,
                mask,
            })
    })
}

fn atoms(values: &[f64], n: usize) -> Tensor {
    Tensor::from_slice(values).reshape([n as i64, 3])
}

impl Case {
    /// A fixed batch of 3, 1 and 4 atoms with interleaved atoms and
    /// deterministic fields, for tests that need no random search.
    pub fn fixed() -> Case {
        let counts = vec![3, 1, 4];
        let n = 8;
        let b = counts.len();
        let wave = |k: usize, f: f64| (k as f64 * f).sin();
        RawCase {
            counts,
            perm: vec![5, 0, 7, 2, 4, 1, 6, 3],
            jitter: (0..3 * n).map(|k| 0.2 * wave(k, 1.7)).collect(),
            u: (0..3 * n).map(|k| wave(k, 2.3)).collect(),
            v: (0..3 * n).map(|k| wave(k, 0.9)).collect(),
            p: (0..b).map(|k| 2.0 * wave(k, 1.1)).collect(),
            q: (0..b).map(|k| 2.0 * wave(k, 0.4) + 0.5).collect(),
            mask: vec![true, false, true],
        }
        .build()
    }
}

impl RawCase {
    pub fn build(&self) -> Case {
        let n = self.perm.len();
        let mut mol_of = Vec::with_capacity(n);
        let mut lattice = Vec::with_capacity(3 * n);
        for (m, &c) in self.counts.iter().enumerate() {
            for k in 0..c {
                mol_of.push(m as i64);
                lattice.extend([
                    (k % 3) as f64 * 1.3,
                    ((k / 3) % 3) as f64 * 1.3,
                    (k / 9) as f64 * 1.3,
                ]);
            }
        }
        let mut pos = vec![0.0; 3 * n];
        let mut batch = vec![0; n];
        for (p, &orig) in self.perm.iter().enumerate() {
            batch[p] = mol_of[orig];
            for d in 0..3 {
                pos[3 * p + d] = lattice[3 * orig + d] + self.jitter[3 * orig + d];
            }
        }
        let layout = BatchLayout::new(&Tensor::from_slice(&batch), self.counts.len() as i64).unwrap();
        Case {
            layout,
            pos: atoms(&pos, n),
            u: atoms(&self.u, n),
            v: atoms(&self.v, n),
            p: Tensor::from_slice(&self.p),
            q: Tensor::from_slice(&self.q),
            mask: Tensor::from_slice(&self.mask),
            batch,
        }
    }
}

/// Morse pair energy `sum_{i<j} d (1 - exp(-a (r - r0)))^2` with `params = [d, a, r0]`.
pub struct Morse {
    layout: BatchLayout,
    i: Tensor,
    j: Tensor,
    pair_mol: Tensor,
    pub params: Tensor,
}

impl Morse {
    pub fn new(layout: &BatchLayout, params: &Tensor) -> Self {
        let (i, j) = pairs_within(layout).unwrap();
        let pair_mol = layout.batch().index_select(0, &i);
        Self {
            layout: layout.clone(),
            i,
            j,
            pair_mol,
            params: params.shallow_clone(),
        }
    }

    pub fn default_params() -> Tensor {
        Tensor::from_slice(&[0.7f64, 1.3, 1.4])
    }
}

impl physcon::EnergyModel for Morse {
    fn energy(&self, pos: &Tensor) -> Result<Tensor> {
        let r = distances(pos, &self.i, &self.j, &self.layout)?;
        let (d, a, r0) = (self.params.get(0), self.params.get(1), self.params.get(2));
        let phi = (-(r - r0) * a).exp().neg().g_add_scalar(1.0).square() * d;
        let zeros = Tensor::zeros([self.layout.num_molecules()], (pos.kind(), pos.device()));
        // Keeps single-atom molecules in the graph at zero energy.
        Ok(zeros.index_add(0, &self.pair_mol, &phi) + pos.sum(pos.kind()) * 0.0)
    }
}

/// A rotation matrix `[3, 3]` from a (non-zero) quaternion.
pub fn rotation(qw: f64, qx: f64, qy: f64, qz: f64) -> Tensor {
    physcon::testing::rotation([qw, qx, qy, qz]).unwrap()
}

/// One libtorch thread: cargo runs tests in parallel threads, and libtorch's
/// pool is process-wide.
pub fn single_thread() {
    tch::set_num_threads(1);
}

/// One thread, the process-wide generator locked for the test and seeded:
/// draws are reproducible and no other seeded test interleaves with them.
/// Keep the guard for the whole test (`let _rng = seeded(7);`).
pub fn seeded(seed: i64) -> std::sync::MutexGuard<'static, ()> {
    let guard = physcon::testing::rng_lock();
    single_thread();
    tch::manual_seed(seed);
    guard
}

pub fn cpu_f64() -> (Kind, Device) {
    (Kind::Double, Device::Cpu)
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// A tensor's values as f64, flattened.
pub fn vals(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.detach().to_kind(Kind::Double).reshape([-1])).expect("f64 values")
}

/// The contiguous batch vector of molecules with these atom counts.
pub fn batch_from_counts(counts: &[i64]) -> Vec<i64> {
    counts
        .iter()
        .enumerate()
        .flat_map(|(m, &c)| std::iter::repeat_n(m as i64, c as usize))
        .collect()
}

/// Molecules in a batch vector whose molecules are `0..=max`.
pub fn num_molecules(batch: &[i64]) -> i64 {
    batch.iter().copied().max().unwrap_or(0) + 1
}

/// The layout of a batch vector in which every molecule `0..=max` appears.
pub fn layout_of(batch: &[i64]) -> BatchLayout {
    BatchLayout::new(&Tensor::from_slice(batch), num_molecules(batch)).expect("valid layout")
}

/// Molecules with these atom counts, their atoms interleaved by a seeded shuffle.
pub fn shuffled_layout(counts: &[i64], seed: u64) -> Result<BatchLayout> {
    let batch = shuffled_batch_vector(counts, seed);
    BatchLayout::new(&Tensor::from_slice(&batch), counts.len() as i64)
}

/// The batch vector of [`shuffled_layout`].
pub fn shuffled_batch_vector(counts: &[i64], seed: u64) -> Vec<i64> {
    let contiguous = batch_from_counts(counts);
    shuffled(contiguous.len() as i64, seed)
        .into_iter()
        .map(|i| contiguous[i as usize])
        .collect()
}

/// A permutation of `0..n` from a seed.
pub fn shuffled(n: i64, seed: u64) -> Vec<i64> {
    physcon::data::shuffled_indices(n as usize, seed)
        .into_iter()
        .map(|i| i as i64)
        .collect()
}

/// A file's text after byte edits `(where, new byte)`, then one line deleted
/// and one duplicated (each optional): the mutations the parsers' proptests apply.
pub fn mutate(
    mut bytes: Vec<u8>,
    edits: Vec<(prop::sample::Index, u8)>,
    drop_line: Option<prop::sample::Index>,
    dup_line: Option<prop::sample::Index>,
) -> String {
    for (at, byte) in edits {
        let i = at.index(bytes.len());
        bytes[i] = byte;
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let mut lines: Vec<&str> = text.lines().collect();
    if let Some(at) = drop_line {
        let i = at.index(lines.len());
        lines.remove(i);
    }
    if let Some(at) = dup_line {
        let i = at.index(lines.len());
        let l = lines[i];
        lines.insert(i, l);
    }
    lines.join("\n")
}
