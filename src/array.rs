//! Host arrays at the boundary: molecules in and results out as [`ndarray`] arrays.
//!
//! [`ndarray`] is re-exported as [`crate::ndarray`]; it is the version `tch`
//! itself converts to and from, so a user's arrays and tch's are one type.
//!
//! In, checked as the tensor entry points check tensors:
//! - [`Molecule::from_arrays`]: one molecule, `pos: [n, 3]` and `species: [n]`;
//! - [`MolBatch::from_arrays`]: a ragged batch, `pos: [N, 3]`, `species: [N]`,
//!   `batch: [N]` ([`MolBatch::new`] for host data);
//! - [`LabelledBatch::from_arrays`]: a batch with energy `[B]` and force
//!   `[N, 3]` labels, NaN marking a molecule without the label;
//! - [`Frame::pos_view`], [`Frame::forces_view`] and [`Molecule::pos_view`]:
//!   what a data file holds, lent as `[n, 3]` views without a copy.
//!
//! Out, always `f64` on the host, one device-to-host copy per tensor:
//! - [`molecule_values`]: `[B]` values (the metrics [`crate::metrics::kabsch_rmsd`]
//!   and [`crate::metrics::energy_gap`], per-molecule energies);
//! - [`PerMolecule::to_array`]: a loss's per-molecule values, NaN where unlabelled;
//! - [`atom_vectors`]: `[N, 3]` values (a generated structure, forces), in the
//!   batch's atom order.
//!
//! A user's molecules, held in `ndarray`, through optimality consistency:
//!
//! ```
//! # fn main() -> physcon::Result<()> {
//! use physcon::array::{atom_vectors, molecule_values};
//! use physcon::losses::StationarityLoss;
//! use physcon::metrics::kabsch_rmsd;
//! use physcon::ndarray::{array, Array1};
//! use physcon::tch::{Device, Kind};
//! use physcon::testing::{PairEnergy, PairPotential};
//! use physcon::{MolBatch, Molecule};
//!
//! // H2 stretched to 1.5 Å, and H2 at its rest length of 1 Å.
//! let stretched = Molecule::from_arrays(array![[0.0, 0., 0.], [1.5, 0., 0.]].view(), array![1, 1].view())?;
//! let at_rest = Molecule::from_arrays(array![[0.0, 0., 0.], [0., 1.0, 0.]].view(), array![1, 1].view())?;
//! let batch = MolBatch::from_molecules(&[stretched, at_rest], Kind::Double, Device::Cpu)?;
//! let layout = batch.layout();
//! // E = (k/2)(r - r0)^2: |dE/dR_i| = k |r - r0| = 1 eV/Å on both atoms of the stretched one.
//! let energy = PairEnergy::new(PairPotential::Harmonic { k: 2.0, r0: 1.0 }, layout)?;
//! let per = StationarityLoss::new().forward_per_molecule(&energy, batch.pos(), layout)?;
//! assert_eq!(per.to_array()?, array![1.0, 0.0]); // eV²/Å², one per molecule
//! // Results as host arrays: RMSD [B] and the structure [N, 3], f64.
//! let rmsd = molecule_values(&kabsch_rmsd(batch.pos(), batch.pos(), layout)?, layout)?;
//! assert_eq!(rmsd, Array1::<f64>::zeros(2));
//! assert_eq!(atom_vectors(batch.pos(), layout)?.dim(), (4, 3));
//! # Ok(()) }
//! ```

use ndarray::{Array1, Array2};
use tch::Tensor;

use crate::batch::BatchLayout;
use crate::check;
use crate::convert::host;
use crate::error::Result;
#[cfg(doc)]
use crate::{
    data::{Frame, LabelledBatch},
    losses::PerMolecule,
    MolBatch, Molecule,
};

/// Molecule values `[B]` (any float dtype, any device) as `f64` on the host.
///
/// # Shapes
/// `values`: `[B]`; returns `[B]`, molecule `b` at index `b`.
///
/// # Errors
/// [`crate::Error::Dtype`] unless floating point, [`crate::Error::Shape`] unless `[B]`.
pub fn molecule_values(values: &Tensor, layout: &BatchLayout) -> Result<Array1<f64>> {
    check::float("values", values)?;
    check::shape("values", values, &[layout.num_molecules()], "[B]")?;
    host(values)
}

/// Atom vectors `[N, 3]` (positions in Å, forces in eV/Å; any float dtype, any
/// device) as `f64` on the host, rows in the batch's atom order.
///
/// # Shapes
/// `x`: `[N, 3]`; returns `[N, 3]`.
///
/// # Errors
/// [`crate::Error::Dtype`] unless floating point, [`crate::Error::Shape`] unless `[N, 3]`.
pub fn atom_vectors(x: &Tensor, layout: &BatchLayout) -> Result<Array2<f64>> {
    check::float("x", x)?;
    check::shape("x", x, &[layout.num_atoms(), 3], "[N, 3]")?;
    host(x)
}
