//! Geometry on ragged batches: atom pairs within molecules and distances whose
//! gradients stay finite.

use tch::{Device, Tensor};

use crate::batch::BatchLayout;
use crate::check;
use crate::error::Result;

/// All unordered atom pairs `i < j` within each molecule, as two index tensors `[P]` (i64).
///
/// `P = sum_b n_b (n_b - 1) / 2`: quadratic in molecule size, which suits
/// molecules of tens of atoms; larger systems need a radius cutoff.
///
/// # Errors
/// A libtorch error moving the indices to the layout's device.
pub fn pairs_within(layout: &BatchLayout) -> Result<(Tensor, Tensor)> {
    let batch = Vec::<i64>::try_from(&layout.batch().f_to_device(Device::Cpu)?)?;
    let mut members: Vec<Vec<i64>> = vec![Vec::new(); layout.num_molecules() as usize];
    for (atom, &m) in batch.iter().enumerate() {
        members[m as usize].push(atom as i64);
    }
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for atoms in &members {
        for (k, &i) in atoms.iter().enumerate() {
            for &j in &atoms[k + 1..] {
                first.push(i);
                second.push(j);
            }
        }
    }
    let device = layout.device();
    Ok((
        Tensor::from_slice(&first).f_to_device(device)?,
        Tensor::from_slice(&second).f_to_device(device)?,
    ))
}

/// Distances `|r_i - r_j|` `[P]` (Å) for index pairs, with a finite gradient everywhere.
///
/// The norm of a zero vector has a NaN gradient; coincident atoms get
/// distance 0 with gradient 0 instead.
///
/// # Errors
/// The `pos` checks ([`crate::Error::Shape`], ...); [`crate::Error::Shape`] when `i`, `j` differ in length.
pub fn distances(pos: &Tensor, i: &Tensor, j: &Tensor, layout: &BatchLayout) -> Result<Tensor> {
    check::atoms3("pos", pos, layout)?;
    check::shape("j", j, &i.size(), "the shape of i")?;
    let diff = pos.f_index_select(0, i)?.f_sub(&pos.f_index_select(0, j)?)?;
    safe_norm(&diff)
}

/// Row norms of `[P, 3]` with a zero (not NaN) gradient at the zero vector.
pub(crate) fn safe_norm(diff: &Tensor) -> Result<Tensor> {
    let sq = diff.f_square()?.f_sum_dim_intlist(1, false, diff.kind())?;
    let positive = sq.f_gt(0.0)?;
    let safe = sq.f_where_self(&positive, &sq.f_ones_like()?)?;
    Ok(safe.f_sqrt()?.f_where_self(&positive, &sq.f_zeros_like()?)?)
}
