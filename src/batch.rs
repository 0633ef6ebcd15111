//! Ragged molecular batches (the PyTorch Geometric convention, no padding).
//!
//! Atoms of all molecules are stacked: `pos: [N, 3]` (Å), `species: [N]`
//! (atomic numbers, i64), `batch: [N]` (i64, the molecule of each atom, in
//! `0..B`, any order). Molecule-level tensors are `[B]`. [`BatchLayout`] is
//! the validated `batch` vector alone: losses take it to reduce per molecule
//! first, then over molecules, so a big molecule does not outweigh a small one.

use ndarray::{aview2, ArrayView1, ArrayView2};
use tch::{Device, Kind, Tensor};

use crate::check;
use crate::convert;
use crate::error::{Error, Result};

/// Which molecule each atom belongs to, validated.
///
/// Guarantees: `batch` is a 1-D i64 tensor, every index lies in
/// `0..num_molecules`, and every molecule has at least one atom.
#[derive(Debug)]
pub struct BatchLayout {
    batch: Tensor,
    num_molecules: i64,
    counts: Tensor,
    // The counts as the two training dtypes, made once: every per-molecule mean
    // divides by them, and a cast per call costs as much as a small kernel.
    counts_f32: Tensor,
    counts_f64: Tensor,
    counts_host: Vec<i64>,
}

impl Clone for BatchLayout {
    fn clone(&self) -> Self {
        Self {
            batch: self.batch.shallow_clone(),
            num_molecules: self.num_molecules,
            counts: self.counts.shallow_clone(),
            counts_f32: self.counts_f32.shallow_clone(),
            counts_f64: self.counts_f64.shallow_clone(),
            counts_host: self.counts_host.clone(),
        }
    }
}

impl check::Extent for BatchLayout {
    fn device(&self) -> Device {
        BatchLayout::device(self)
    }

    fn num_atoms(&self) -> i64 {
        BatchLayout::num_atoms(self)
    }

    fn num_molecules(&self) -> i64 {
        BatchLayout::num_molecules(self)
    }
}

impl BatchLayout {
    /// Validates a batch vector `[N]` (i64) for `num_molecules` molecules.
    ///
    /// # Errors
    /// [`Error::Dtype`] unless i64, [`Error::Shape`] unless 1-D with N > 0,
    /// [`Error::IndexOutOfRange`] for an index outside `0..num_molecules`,
    /// [`Error::EmptyMolecule`] for a molecule without atoms.
    pub fn new(batch: &Tensor, num_molecules: i64) -> Result<Self> {
        check::int64("batch", batch)?;
        let size = batch.size();
        if size.len() != 1 || size[0] == 0 {
            return Err(Error::Shape {
                arg: "batch",
                expected: "[N] with N >= 1".into(),
                got: size,
            });
        }
        if num_molecules < 1 {
            return Err(Error::InvalidArgument {
                arg: "num_molecules",
                reason: format!("must be at least 1, got {num_molecules}"),
            });
        }
        check::values_in("batch", batch, 0, num_molecules)?;
        let counts = batch.f_bincount::<Tensor>(None, num_molecules)?;
        let counts_host = Vec::<i64>::try_from(&counts.f_to_device(Device::Cpu)?)?;
        if let Some(molecule) = counts_host.iter().position(|&c| c == 0) {
            return Err(Error::EmptyMolecule {
                molecule: molecule as i64,
                num_molecules,
            });
        }
        Ok(Self {
            batch: batch.detach(),
            num_molecules,
            counts_f32: counts.f_to_kind(Kind::Float)?,
            counts_f64: counts.f_to_kind(Kind::Double)?,
            counts,
            counts_host,
        })
    }

    /// A contiguous layout: molecule 0 owns the first `counts[0]` atoms, and so on.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty `counts`, [`Error::EmptyMolecule`]
    /// for a zero count.
    pub fn from_counts(counts: &[i64], device: Device) -> Result<Self> {
        if counts.is_empty() {
            return Err(Error::InvalidArgument {
                arg: "counts",
                reason: "at least one molecule is needed".into(),
            });
        }
        if let Some(molecule) = counts.iter().position(|&c| c <= 0) {
            return Err(Error::EmptyMolecule {
                molecule: molecule as i64,
                num_molecules: counts.len() as i64,
            });
        }
        let batch: Vec<i64> = counts
            .iter()
            .enumerate()
            .flat_map(|(m, &c)| std::iter::repeat_n(m as i64, c as usize))
            .collect();
        Self::new(
            &Tensor::from_slice(&batch).f_to_device(device)?,
            counts.len() as i64,
        )
    }

    /// The batch vector `[N]` (i64).
    pub fn batch(&self) -> &Tensor {
        &self.batch
    }

    /// Number of molecules B.
    pub fn num_molecules(&self) -> i64 {
        self.num_molecules
    }

    /// Number of atoms N.
    pub fn num_atoms(&self) -> i64 {
        self.batch.size()[0]
    }

    /// Atoms per molecule `[B]` (i64), on the layout's device.
    pub fn counts(&self) -> &Tensor {
        &self.counts
    }

    /// Atoms per molecule, on the host.
    pub fn counts_host(&self) -> &[i64] {
        &self.counts_host
    }

    /// The device of the batch vector; every tensor used with this layout must live there.
    pub fn device(&self) -> Device {
        self.batch.device()
    }

    /// Per-molecule sum of atom-level values: `[N, ...] -> [B, ...]`.
    ///
    /// Differentiable to any order.
    ///
    /// # Errors
    /// [`Error::Shape`] unless the leading dimension is N, [`Error::Device`] on another device.
    pub fn sum(&self, values: &Tensor) -> Result<Tensor> {
        self.check_atom_leading("values", values)?;
        self.sum_unchecked(values)
    }

    /// Per-molecule mean of atom-level values: `[N, ...] -> [B, ...]`.
    ///
    /// # Errors
    /// As [`BatchLayout::sum`].
    pub fn mean(&self, values: &Tensor) -> Result<Tensor> {
        self.check_atom_leading("values", values)?;
        self.mean_unchecked(values)
    }

    /// Broadcasts molecule-level values to their atoms: `[B, ...] -> [N, ...]`.
    ///
    /// # Errors
    /// [`Error::Shape`] unless the leading dimension is B, [`Error::Device`] on another device.
    pub fn expand(&self, values: &Tensor) -> Result<Tensor> {
        let size = values.size();
        if size.first() != Some(&self.num_molecules) {
            return Err(Error::Shape {
                arg: "values",
                expected: format!("[B, ...] with B = {}", self.num_molecules),
                got: size,
            });
        }
        check::device("values", values, self)?;
        Ok(values.f_index_select(0, &self.batch)?)
    }

    /// Removes each molecule's centroid from `[N, 3]` coordinates.
    ///
    /// The centroid (unweighted mean) is the centre used by coordinate diffusion
    /// models: isotropic noise projected to zero centroid stays isotropic within
    /// the subspace.
    ///
    /// # Errors
    /// As [`BatchLayout::sum`], and [`Error::Shape`] unless `[N, 3]`.
    pub fn centre(&self, x: &Tensor) -> Result<Tensor> {
        check::shape("x", x, &[self.num_atoms(), 3], "[N, 3]")?;
        check::device("x", x, self)?;
        check::float("x", x)?;
        self.centre_unchecked(x)
    }

    fn check_atom_leading(&self, arg: &'static str, values: &Tensor) -> Result<()> {
        let size = values.size();
        if size.first() != Some(&self.num_atoms()) {
            return Err(Error::Shape {
                arg,
                expected: format!("[N, ...] with N = {}", self.num_atoms()),
                got: size,
            });
        }
        check::device(arg, values, self)
    }

    pub(crate) fn sum_unchecked(&self, values: &Tensor) -> Result<Tensor> {
        let mut size = values.size();
        size[0] = self.num_molecules;
        let zeros = Tensor::f_zeros(&size, (values.kind(), values.device()))?;
        Ok(zeros.f_index_add(0, &self.batch, values)?)
    }

    /// Atoms per molecule as floats of `kind`, shaped to broadcast against `[B, ...]` of `ndim` dims.
    pub(crate) fn counts_as(&self, kind: Kind, ndim: usize) -> Result<Tensor> {
        let counts = match kind {
            Kind::Float => self.counts_f32.shallow_clone(),
            Kind::Double => self.counts_f64.shallow_clone(),
            _ => self.counts.f_to_kind(kind)?,
        };
        if ndim <= 1 {
            return Ok(counts);
        }
        let mut shape = vec![self.num_molecules];
        shape.resize(ndim, 1);
        Ok(counts.f_reshape(&shape)?)
    }

    pub(crate) fn mean_unchecked(&self, values: &Tensor) -> Result<Tensor> {
        let sum = self.sum_unchecked(values)?;
        let counts = self.counts_as(values.kind(), values.dim())?;
        Ok(sum.f_div(&counts)?)
    }

    pub(crate) fn expand_unchecked(&self, values: &Tensor) -> Result<Tensor> {
        Ok(values.f_index_select(0, &self.batch)?)
    }

    pub(crate) fn centre_unchecked(&self, x: &Tensor) -> Result<Tensor> {
        let mean = self.mean_unchecked(x)?;
        Ok(x.f_sub(&self.expand_unchecked(&mean)?)?)
    }
}

/// Bonds of a batch: atom pairs (indices into the batch's atoms) and bond orders.
#[derive(Debug)]
pub struct Bonds {
    index: Tensor,
    order: Tensor,
}

impl Bonds {
    /// Atom pairs `[E, 2]` (i64, indices into the batch, both ends in one molecule).
    pub fn index(&self) -> &Tensor {
        &self.index
    }

    /// Bond orders `[E]` (i64: 1, 2, 3; aromatic = 4).
    pub fn order(&self) -> &Tensor {
        &self.order
    }
}

/// One molecule on the host: what a data file holds, before batching.
#[derive(Debug, Clone, PartialEq)]
pub struct Molecule {
    /// Atomic numbers.
    pub species: Vec<i64>,
    /// Positions in Å.
    pub pos: Vec<[f64; 3]>,
    /// Bonds `(i, j, order)` with 0-based atom indices; order 1, 2, 3, aromatic = 4.
    pub bonds: Vec<(usize, usize, u8)>,
}

impl Molecule {
    /// A molecule from host arrays, checked as [`MolBatch::new`] checks a batch.
    ///
    /// Any memory layout (a transposed or strided view too); the values are
    /// copied once. Bonds start empty: set [`Molecule::bonds`].
    ///
    /// # Shapes
    /// `pos: [n, 3]` (Å), `species: [n]` (atomic numbers 1..=118), n >= 1.
    ///
    /// # Errors
    /// [`Error::Shape`] for an empty `species` or a `pos` that is not `[n, 3]`,
    /// [`Error::NonFinite`] for `pos`, [`Error::IndexOutOfRange`] for an atomic
    /// number outside 1..=118.
    pub fn from_arrays(pos: ArrayView2<'_, f64>, species: ArrayView1<'_, i64>) -> Result<Self> {
        let n = species.len() as i64;
        if n == 0 {
            return Err(Error::Shape {
                arg: "species",
                expected: "[n] with n >= 1".into(),
                got: vec![0],
            });
        }
        check::array_shape("pos", pos.shape(), &[n, 3], "[n, 3]")?;
        if !pos.iter().all(|x| x.is_finite()) {
            return Err(Error::NonFinite { arg: "pos" });
        }
        if let Some(&index) = species.iter().find(|z| !(1..Z_BOUND).contains(*z)) {
            return Err(Error::IndexOutOfRange {
                arg: "species",
                index,
                bound: Z_BOUND,
            });
        }
        Ok(Self {
            species: species.to_vec(),
            pos: pos.rows().into_iter().map(|r| [r[0], r[1], r[2]]).collect(),
            bonds: Vec::new(),
        })
    }

    /// Positions `[n, 3]` (Å) as a view, without a copy.
    pub fn pos_view(&self) -> ArrayView2<'_, f64> {
        aview2(&self.pos)
    }
}

/// One past the largest atomic number (118).
const Z_BOUND: i64 = 119;

/// A validated ragged batch: positions, species, layout and optional bonds.
#[derive(Debug)]
pub struct MolBatch {
    layout: BatchLayout,
    pos: Tensor,
    species: Tensor,
    bonds: Option<Bonds>,
}

impl MolBatch {
    /// Builds and validates a batch.
    ///
    /// # Shapes
    /// `pos: [N, 3]` float (Å), `species: [N]` i64 (atomic numbers 1..=118),
    /// `batch: [N]` i64 in `0..num_molecules`.
    ///
    /// # Errors
    /// Those of [`BatchLayout::new`]; [`Error::Shape`], [`Error::Dtype`],
    /// [`Error::Device`] or [`Error::NonFinite`] for `pos`; [`Error::IndexOutOfRange`]
    /// for an atomic number outside 1..=118.
    pub fn new(pos: &Tensor, species: &Tensor, batch: &Tensor, num_molecules: i64) -> Result<Self> {
        let layout = BatchLayout::new(batch, num_molecules)?;
        check::atoms3("pos", pos, &layout)?;
        check::int64("species", species)?;
        check::device("species", species, &layout)?;
        check::shape("species", species, &[layout.num_atoms()], "[N]")?;
        check::values_in("species", species, 1, Z_BOUND)?;
        Ok(Self {
            layout,
            pos: pos.shallow_clone(),
            species: species.shallow_clone(),
            bonds: None,
        })
    }

    /// [`MolBatch::new`] for host arrays: one copy to `device`, positions cast to
    /// `kind` (a float kind) before they are checked.
    ///
    /// Any memory layout (a transposed or strided view too).
    ///
    /// # Shapes
    /// `pos: [N, 3]` (Å), `species: [N]` (atomic numbers 1..=118), `batch: [N]`
    /// in `0..num_molecules`.
    ///
    /// # Errors
    /// [`Error::Dtype`] for a `kind` that is not floating point; the errors of
    /// [`MolBatch::new`] (a `pos` that is not finite in `kind` included).
    pub fn from_arrays(
        pos: ArrayView2<'_, f64>,
        species: ArrayView1<'_, i64>,
        batch: ArrayView1<'_, i64>,
        num_molecules: i64,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        check::float_kind("kind", kind)?;
        let pos = convert::tensor(&pos)?.f_to_kind(kind)?.f_to_device(device)?;
        let species = convert::tensor(&species)?.f_to_device(device)?;
        let batch = convert::tensor(&batch)?.f_to_device(device)?;
        Self::new(&pos, &species, &batch, num_molecules)
    }

    /// Stacks host molecules into one batch of `kind` (a float kind) on `device`.
    ///
    /// Bonds are renumbered into batch indices.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no molecules or a molecule whose `pos` and
    /// `species` lengths differ; the errors of [`MolBatch::from_arrays`] and
    /// [`MolBatch::with_bonds`].
    pub fn from_molecules(molecules: &[Molecule], kind: Kind, device: Device) -> Result<Self> {
        if molecules.is_empty() {
            return Err(Error::InvalidArgument {
                arg: "molecules",
                reason: "at least one molecule is needed".into(),
            });
        }
        let (mut pos, mut species, mut batch) = (Vec::new(), Vec::new(), Vec::new());
        let (mut pairs, mut orders) = (Vec::new(), Vec::new());
        for (m, mol) in molecules.iter().enumerate() {
            if mol.pos.len() != mol.species.len() {
                return Err(Error::InvalidArgument {
                    arg: "molecules",
                    reason: format!(
                        "molecule {m} has {} positions but {} species",
                        mol.pos.len(),
                        mol.species.len()
                    ),
                });
            }
            let offset = species.len() as i64;
            for &(i, j, order) in &mol.bonds {
                pairs.extend([offset + i as i64, offset + j as i64]);
                orders.push(i64::from(order));
            }
            pos.extend_from_slice(&mol.pos);
            species.extend_from_slice(&mol.species);
            batch.extend(std::iter::repeat_n(m as i64, mol.species.len()));
        }
        let this = Self::from_arrays(
            aview2(&pos),
            ArrayView1::from(&species),
            ArrayView1::from(&batch),
            molecules.len() as i64,
            kind,
            device,
        )?;
        let e = orders.len() as i64;
        let index = Tensor::from_slice(&pairs)
            .f_reshape([e, 2])?
            .f_to_device(device)?;
        let order = Tensor::from_slice(&orders).f_to_device(device)?;
        this.with_bonds(&index, &order)
    }

    /// Attaches a bond list.
    ///
    /// # Shapes
    /// `index: [E, 2]` i64 (batch atom indices), `order: [E]` i64 (1, 2, 3, aromatic 4).
    ///
    /// # Errors
    /// [`Error::Dtype`], [`Error::Shape`], [`Error::Device`]; [`Error::IndexOutOfRange`]
    /// for an atom index outside `0..N` or an order outside 1..=4;
    /// [`Error::InvalidArgument`] for a self bond or a bond across molecules.
    pub fn with_bonds(mut self, index: &Tensor, order: &Tensor) -> Result<Self> {
        for (arg, t) in [("bond index", index), ("bond order", order)] {
            check::int64(arg, t)?;
            check::device(arg, t, &self.layout)?;
        }
        let e = order.size().first().copied().unwrap_or(-1);
        check::shape("bond order", order, &[e.max(0)], "[E]")?;
        check::shape("bond index", index, &[e.max(0), 2], "[E, 2]")?;
        if e > 0 {
            check::values_in("bond index", index, 0, self.layout.num_atoms())?;
            check::values_in("bond order", order, 1, 5)?;
            let (i, j) = (index.f_select(1, 0)?, index.f_select(1, 1)?);
            if bool::try_from(i.f_eq_tensor(&j)?.f_any()?)? {
                return Err(Error::InvalidArgument {
                    arg: "bond index",
                    reason: "an atom is bonded to itself".into(),
                });
            }
            let mol_i = self.layout.batch().f_index_select(0, &i)?;
            let mol_j = self.layout.batch().f_index_select(0, &j)?;
            if bool::try_from(mol_i.f_ne_tensor(&mol_j)?.f_any()?)? {
                return Err(Error::InvalidArgument {
                    arg: "bond index",
                    reason: "a bond joins atoms of two molecules".into(),
                });
            }
        }
        self.bonds = Some(Bonds {
            index: index.shallow_clone(),
            order: order.shallow_clone(),
        });
        Ok(self)
    }

    /// The same molecules at other positions (e.g. a generated structure).
    ///
    /// # Errors
    /// As for `pos` in [`MolBatch::new`].
    pub fn with_pos(&self, pos: &Tensor) -> Result<Self> {
        check::atoms3("pos", pos, &self.layout)?;
        Ok(Self {
            layout: self.layout.clone(),
            pos: pos.shallow_clone(),
            species: self.species.shallow_clone(),
            bonds: self.bonds.as_ref().map(|b| Bonds {
                index: b.index.shallow_clone(),
                order: b.order.shallow_clone(),
            }),
        })
    }

    /// The layout (batch vector and atom counts).
    pub fn layout(&self) -> &BatchLayout {
        &self.layout
    }

    /// Positions `[N, 3]` in Å.
    pub fn pos(&self) -> &Tensor {
        &self.pos
    }

    /// Atomic numbers `[N]` (i64).
    pub fn species(&self) -> &Tensor {
        &self.species
    }

    /// The bond list, if one was attached.
    pub fn bonds(&self) -> Option<&Bonds> {
        self.bonds.as_ref()
    }

    /// Number of molecules B.
    pub fn num_molecules(&self) -> i64 {
        self.layout.num_molecules()
    }

    /// Number of atoms N.
    pub fn num_atoms(&self) -> i64 {
        self.layout.num_atoms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_divides_by_the_atom_counts_in_every_float_kind_and_rank() -> Result<()> {
        // Molecule 0 owns atoms 0 and 2, molecule 1 atoms 1, 3 and 4.
        let layout = BatchLayout::new(&Tensor::from_slice(&[0i64, 1, 0, 1, 1]), 2)?.clone();
        let values = Tensor::from_slice(&[1.0f64, 2., 3., 4., 6.]);
        for kind in [Kind::Half, Kind::BFloat16, Kind::Float, Kind::Double] {
            let flat = layout.mean(&values.to_kind(kind))?;
            assert_eq!(flat.kind(), kind);
            assert_eq!(Vec::<f64>::try_from(flat.to_kind(Kind::Double))?, vec![2.0, 4.0]);
            let wide = layout.mean(&values.to_kind(kind).unsqueeze(1).expand([5, 3], false))?;
            assert_eq!(wide.size(), vec![2, 3]);
            let wide = Vec::<f64>::try_from(wide.to_kind(Kind::Double).reshape([-1]))?;
            assert_eq!(wide, vec![2.0, 2.0, 2.0, 4.0, 4.0, 4.0]);
        }
        Ok(())
    }
}
