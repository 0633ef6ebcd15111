//! [`Frame`]: one structure of a data file, whatever its format.

use ndarray::{aview2, ArrayView2};

use crate::batch::Molecule;

/// One structure of a data file.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The molecule's identifier; frames that share it share the atom order.
    pub mol_id: String,
    /// SMILES, if given.
    pub smiles: Option<String>,
    /// Level of theory of the structure (`mmff`, `xtb-opt`, `xtb-perturbed`, ...), if given.
    pub level: Option<String>,
    /// Energy label in eV, if given.
    pub energy: Option<f64>,
    /// Atomic numbers.
    pub species: Vec<i64>,
    /// Positions in Å.
    pub pos: Vec<[f64; 3]>,
    /// Force labels in eV/Å, if given.
    pub forces: Option<Vec<[f64; 3]>>,
    /// Bonds `(i, j, order)`, 0-based; order 1, 2, 3, aromatic = 4.
    pub bonds: Vec<(usize, usize, u8)>,
}

impl Frame {
    /// Number of atoms.
    pub fn num_atoms(&self) -> usize {
        self.species.len()
    }

    /// Positions `[n, 3]` (Å) as a view, without a copy.
    pub fn pos_view(&self) -> ArrayView2<'_, f64> {
        aview2(&self.pos)
    }

    /// Force labels `[n, 3]` (eV/Å) as a view, without a copy, if given.
    pub fn forces_view(&self) -> Option<ArrayView2<'_, f64>> {
        self.forces.as_deref().map(aview2)
    }

    /// The structure as a host [`Molecule`] (species, positions, bonds).
    pub fn molecule(&self) -> Molecule {
        Molecule {
            species: self.species.clone(),
            pos: self.pos.clone(),
            bonds: self.bonds.clone(),
        }
    }
}
