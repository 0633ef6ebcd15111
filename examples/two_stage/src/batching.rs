//! How molecules are split into batches that fit in memory: `predict`,
//! evaluation and the teacher's accuracy all batch with [`batches`].

use std::ops::Range;

/// Directed atom pairs (`n (n - 1)` per molecule) in one batch at most. The
/// model is fully connected within a molecule and holds a few `[pairs, hidden]`
/// tensors per layer: at this budget FIRE on a batch took 0.45 GB above the
/// process's own 0.6 GB with the quick preset, about 1.4 GB with `cpu`
/// (BENCHMARKS.md, section 5).
pub const MAX_PAIRS: usize = 1 << 18;

/// Molecules in one batch at most.
pub const MAX_MOLECULES: usize = 32;

/// Directed atom pairs of a molecule of `n` atoms.
pub fn pairs(n: usize) -> usize {
    n.saturating_mul(n.saturating_sub(1))
}

/// Consecutive ranges of `sizes` (atoms per molecule) with at most
/// [`MAX_MOLECULES`] molecules and [`MAX_PAIRS`] pairs each (a molecule larger
/// than the budget alone gets a batch of its own; [`crate::checks::Screener`] refuses those).
pub fn batches(sizes: &[usize]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut batcher, mut start) = (Batcher::default(), 0);
    for (k, &n) in sizes.iter().enumerate() {
        if batcher.push(n) {
            out.push(start..k);
            start = k;
        }
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// [`batches`] one molecule at a time, for molecules read as a stream
/// (`predict`): the batches are [`batches`]'s of all the sizes pushed, so
/// what is generated does not depend on how the input is read.
#[derive(Debug, Default, Clone)]
pub struct Batcher {
    /// Molecules in the open batch.
    molecules: usize,
    /// Their pairs.
    pairs: usize,
}

impl Batcher {
    /// Takes a molecule of `n` atoms: `true` when the molecules taken before it
    /// are a batch, closed by this one (which opens the next).
    pub fn push(&mut self, n: usize) -> bool {
        let p = pairs(n);
        let full = self.molecules > 0
            && (self.molecules == MAX_MOLECULES || self.pairs.saturating_add(p) > MAX_PAIRS);
        if full {
            *self = Self::default();
        }
        self.molecules += 1;
        self.pairs = self.pairs.saturating_add(p);
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_to_the_molecule_and_pair_budgets() {
        assert_eq!(batches(&[]), Vec::<Range<usize>>::new());
        assert_eq!(batches(&[5; 70]), [0..32, 32..64, 64..70]);
        // 300 atoms are 89 700 pairs: two fit the budget, the third starts a batch.
        assert_eq!(batches(&[300, 300, 300, 3]), [0..2, 2..4]);
        // A molecule over the budget gets a batch of its own, never an empty one.
        assert_eq!(batches(&[3, 10_001, 3]), [0..1, 1..2, 2..3]);
    }

    /// Molecules pushed one at a time close the batches `batches` cuts from all of them at once.
    #[test]
    fn the_batcher_cuts_the_batches_of_the_whole_list() {
        for seed in 0..200u64 {
            let mut state = seed;
            let sizes: Vec<usize> = (0..seed % 120)
                .map(|_| {
                    state = physcon::data::splitmix64(state);
                    [1, 5, 20, 90, 300, 512, 600][(state % 7) as usize]
                })
                .collect();
            let mut batcher = Batcher::default();
            let mut closed: Vec<usize> = (0..sizes.len()).filter(|&k| batcher.push(sizes[k])).collect();
            closed.push(sizes.len());
            let expected: Vec<usize> = batches(&sizes)
                .iter()
                .skip(1)
                .map(|r| r.start)
                .chain([sizes.len()])
                .collect();
            assert_eq!(closed, expected, "{sizes:?}");
        }
    }
}
