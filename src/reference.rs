//! Atomic reference energies fitted by least squares.
//!
//! A molecule's total energy is dominated by a sum of per-element constants;
//! subtracting them leaves the model a small, learnable residual (the
//! "atomic energies" of MACE and SchNetPack).

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use crate::batch::BatchLayout;
use crate::check;
use crate::error::{Error, Result};

/// Per-element reference energies `e_Z` (eV) with `E_mol ≈ sum_i e_{Z_i}`.
#[derive(Debug, Clone, PartialEq)]
pub struct AtomicReferences {
    energies: BTreeMap<i64, f64>,
}

impl AtomicReferences {
    /// Fits `e_Z` by least squares: `min_e sum_m (E_m - sum_Z c_mZ e_Z)^2`,
    /// `c_mZ` the count of element Z in molecule m.
    ///
    /// Solved through the SVD pseudo-inverse (relative cut-off 1e-10), so
    /// compositions that do not pin every element (e.g. all molecules with the
    /// same H:C ratio) give the minimum-norm solution instead of failing.
    ///
    /// ```
    /// # fn main() -> physcon::Result<()> {
    /// use physcon::AtomicReferences;
    /// // H2 = -1, O2 = -4, H2O = -2.5 exactly for e_H = -0.5, e_O = -2.
    /// let refs = AtomicReferences::fit(&[vec![1, 1], vec![8, 8], vec![1, 1, 8]], &[-1.0, -4.0, -3.0])?;
    /// assert!((refs.get(8).unwrap() + 2.0).abs() < 1e-9);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no molecules, lengths that differ, an
    /// empty molecule or an atomic number outside 1..=118; [`Error::NonFinite`]
    /// for a non-finite energy.
    pub fn fit(species: &[Vec<i64>], energies: &[f64]) -> Result<Self> {
        if species.is_empty() || species.len() != energies.len() {
            return Err(Error::InvalidArgument {
                arg: "energies",
                reason: format!(
                    "need one energy per molecule and at least one molecule: {} molecules, {} energies",
                    species.len(),
                    energies.len()
                ),
            });
        }
        if energies.iter().any(|e| !e.is_finite()) {
            return Err(Error::NonFinite { arg: "energies" });
        }
        let mut elements: Vec<i64> = Vec::new();
        for (m, mol) in species.iter().enumerate() {
            if mol.is_empty() {
                return Err(Error::InvalidArgument {
                    arg: "species",
                    reason: format!("molecule {m} has no atoms"),
                });
            }
            if let Some(z) = mol.iter().find(|z| !(1..=118).contains(*z)) {
                return Err(Error::InvalidArgument {
                    arg: "species",
                    reason: format!("molecule {m}: atomic number {z} outside 1..=118"),
                });
            }
            elements.extend(mol);
        }
        elements.sort_unstable();
        elements.dedup();
        let column: BTreeMap<i64, usize> = elements.iter().enumerate().map(|(k, &z)| (z, k)).collect();
        let (rows, cols) = (species.len(), elements.len());
        let mut counts = vec![0.0f64; rows * cols];
        for (m, mol) in species.iter().enumerate() {
            for z in mol {
                counts[m * cols + column[z]] += 1.0;
            }
        }
        let a = Tensor::from_slice(&counts).f_reshape([rows as i64, cols as i64])?;
        let y = Tensor::from_slice(energies).f_reshape([rows as i64, 1])?;
        let (u, s, v) = a.f_svd(true, true)?;
        let cutoff = 1e-10 * s.f_max()?.f_double_value(&[])?;
        let keep = s.f_gt(cutoff)?;
        let inv = s.f_reciprocal()?.f_where_self(&keep, &s.f_zeros_like()?)?;
        let coef = v.f_matmul(&inv.f_unsqueeze(1)?.f_mul(&u.f_transpose(0, 1)?.f_matmul(&y)?)?)?;
        let coef = Vec::<f64>::try_from(coef.f_reshape([-1])?)?;
        Ok(Self {
            energies: elements.into_iter().zip(coef).collect(),
        })
    }

    /// References given directly, element by element (eV).
    pub fn from_map(energies: BTreeMap<i64, f64>) -> Self {
        Self { energies }
    }

    /// The reference energy of element `z`, if fitted.
    pub fn get(&self, z: i64) -> Option<f64> {
        self.energies.get(&z).copied()
    }

    /// All references, by atomic number.
    pub fn as_map(&self) -> &BTreeMap<i64, f64> {
        &self.energies
    }

    /// `sum_i e_{Z_i}` of one molecule (eV).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an element without a reference.
    pub fn molecule_energy(&self, species: &[i64]) -> Result<f64> {
        species.iter().try_fold(0.0, |acc, &z| Ok(acc + self.lookup(z)?))
    }

    /// Per-molecule reference energies `[B]` of `kind` for a batch's species `[N]` (eV).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an element without a reference; shape
    /// or device errors for `species`; [`Error::Dtype`] unless `species` is i64
    /// and `kind` a float kind (an integer `kind` would truncate the energies).
    pub fn batch_energy(&self, species: &Tensor, layout: &BatchLayout, kind: Kind) -> Result<Tensor> {
        check::int64("species", species)?;
        check::float_kind("kind", kind)?;
        check::shape("species", species, &[layout.num_atoms()], "[N]")?;
        check::device("species", species, layout)?;
        let zs = Vec::<i64>::try_from(&species.f_to_device(Device::Cpu)?)?;
        let per_atom = zs.iter().map(|&z| self.lookup(z)).collect::<Result<Vec<f64>>>()?;
        let per_atom = Tensor::from_slice(&per_atom)
            .f_to_kind(kind)?
            .f_to_device(layout.device())?;
        layout.sum_unchecked(&per_atom)
    }

    fn lookup(&self, z: i64) -> Result<f64> {
        self.get(z).ok_or_else(|| Error::InvalidArgument {
            arg: "species",
            reason: format!("no reference energy for element {z}"),
        })
    }
}
