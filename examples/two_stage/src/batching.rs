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
/// than the budget alone gets a batch of its own; [`crate::checks::screen`] refuses those).
pub fn batches(sizes: &[usize]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0usize);
    for (k, &n) in sizes.iter().enumerate() {
        let p = pairs(n);
        if k > start && (k - start == MAX_MOLECULES || used.saturating_add(p) > MAX_PAIRS) {
            out.push(start..k);
            (start, used) = (k, 0);
        }
        used = used.saturating_add(p);
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
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
}
