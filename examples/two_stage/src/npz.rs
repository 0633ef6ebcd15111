//! NumPy `.npz` files of `predict` and `evaluate` (`--npz PATH`), for analysis in Python.
//!
//! M molecules, N atoms over all of them in molecule order, K samples per molecule:
//!
//! | key | dtype | shape | what |
//! |---|---|---|---|
//! | `mol_id` | `<U16`, `<U64` or `<U256` | `[M]` | the molecules' ids (the narrowest that holds the longest) |
//! | `species` | int64 | `[N]` | atomic numbers |
//! | `batch` | int64 | `[N]` | the molecule of each atom (an index into `mol_id`) |
//! | `positions` | float64 | `[K, N, 3]` | the generated structures (Å) |
//!
//! and from `predict` also, for what to trust:
//!
//! | key | dtype | shape | what |
//! |---|---|---|---|
//! | `exploded` | bool | `[M, K]` | the sample is no structure (exploded, or not writable to the SDF): left out of --output |
//! | `flat_input` | bool | `[M]` | the input is a 2D drawing (its SDF header says 2D, or without a code every z is 0) |
//! | `implicit_hydrogens` | bool | `[M]` | a carbon of the input is short of the bonds its charge leaves it (hydrogens not explicit) |
//! | `hypervalent` | bool | `[M]` | an atom of the input has more bonds than its element and formal charge take |
//!
//! and from `evaluate` also, judged against the split's GFN2-xTB minima:
//!
//! | key | dtype | shape | what |
//! |---|---|---|---|
//! | `reference_positions` | float64 | `[N, 3]` | the minima (Å) |
//! | `rmsd` | float64 | `[M, K]` | Kabsch RMSD of each sample (Å) |
//! | `egap` | float64 | `[M, K]` | energy gap `E(sample) - E(minimum)` under the model (eV) |
//! | `baseline_rmsd` | float64 | `[M]` | RMSD of the cheap (MMFF) structure (Å) |
//! | `baseline_egap` | float64 | `[M]` | energy gap of the cheap structure under the model (eV) |
//! | `energy_ref` | float64 | `[M]` | the model's energy at the minimum (eV) |
//!
//! Files are uncompressed (as `numpy.savez` writes them) and written atomically, straight
//! into a temporary file beside their name (no copy of the archive in memory).

use std::io::{BufWriter, Read, Seek, Write};
use std::path::Path;

use crate::{Error, Result};
use ndarray_npy::{
    NpzReader, NpzWriter, ReadDataError, ReadableElement, WritableElement, WriteDataError, WriteNpzError,
};
use physcon::data::AtomicFile;
use physcon::ndarray::{Array1, Array2, Array3, ShapeError};
use py_literal::Value as PyValue;

use crate::checks::Screen;
use crate::eval::{MoleculeResults, Structures};
use crate::io::{InputMolecule, Prediction};

/// Writes structures alone (the keys `mol_id`, `species`, `batch`, `positions`) to `path`, atomically.
///
/// # Errors
/// [`Error::Invalid`] for a `mol_id` longer than 256 characters;
/// [`Error::Io`] for the archive or the file system.
pub fn write_structures(path: &Path, structures: &Structures) -> Result<()> {
    write_npz(path, structures, |_| Ok(()))
}

/// `predict`'s arrays, gathered molecule by molecule as the structures are
/// predicted, and written at the end ([`PredictedArrays::write`]): every sample
/// of each predicted molecule (in input order), with the findings about each as
/// flags. Only what the file holds is kept, as compact as the arrays: the
/// positions (`K × 3` float64 per atom), species, ids and flags; not the
/// molecules, their records or their text.
#[derive(Debug, Clone)]
pub struct PredictedArrays {
    samples: usize,
    mol_ids: Vec<String>,
    species: Vec<i64>,
    /// Atoms of each molecule.
    atoms: Vec<usize>,
    /// Per sample, the positions of every atom so far (`[N, 3]` flattened).
    positions: Vec<Vec<f64>>,
    /// `[M, K]` flattened.
    exploded: Vec<bool>,
    /// The guard's verdicts `[M, K]` flattened, while every structure has one.
    verdicts: Option<(Vec<bool>, Vec<f64>)>,
    flat: Vec<bool>,
    implicit_h: Vec<bool>,
    hypervalent: Vec<bool>,
}

impl PredictedArrays {
    /// Arrays for `samples` structures per molecule.
    pub fn new(samples: usize) -> Self {
        Self {
            samples,
            mol_ids: Vec::new(),
            species: Vec::new(),
            atoms: Vec::new(),
            positions: vec![Vec::new(); samples],
            exploded: Vec::new(),
            verdicts: Some((Vec::new(), Vec::new())),
            flat: Vec::new(),
            implicit_h: Vec::new(),
            hypervalent: Vec::new(),
        }
    }

    /// Takes the `samples` structures predicted for `m`, and what was found about it.
    ///
    /// # Errors
    /// [`Error::Invalid`] for another number of structures, or of atoms.
    pub fn push(&mut self, m: &InputMolecule, screen: &Screen, predictions: &[Prediction]) -> Result<()> {
        let atoms = m.frame.num_atoms();
        if predictions.len() != self.samples || predictions.iter().any(|p| p.pos.len() != atoms) {
            return Err(Error::Invalid {
                name: "predictions",
                reason: format!(
                    "{} structures of `{}` for {} samples of {atoms} atoms",
                    predictions.len(),
                    m.frame.mol_id,
                    self.samples
                ),
            });
        }
        self.mol_ids.push(m.frame.mol_id.clone());
        self.species.extend_from_slice(&m.frame.species);
        self.atoms.push(atoms);
        for (k, p) in predictions.iter().enumerate() {
            self.positions[k].extend(p.pos.iter().flatten());
            self.exploded.push(p.problem.is_some());
            self.verdicts = self.verdicts.take().and_then(|(mut kept, mut change)| {
                let (k, c) = p.guard?;
                kept.push(k);
                change.push(c);
                Some((kept, change))
            });
        }
        self.flat.push(screen.flat);
        self.implicit_h.push(screen.implicit_h);
        self.hypervalent.push(screen.hypervalent);
        Ok(())
    }

    /// Writes the arrays to `path`, atomically.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a `mol_id` longer than 256 characters;
    /// [`Error::Io`] for the archive or the file system.
    pub fn write(self, path: &Path) -> Result<()> {
        let shape = (self.mol_ids.len(), self.samples);
        let n = self.species.len();
        let invalid = |e: ShapeError| Error::Invalid {
            name: "predictions",
            reason: e.to_string(),
        };
        // [K, N, 3]: the samples one after the other, behind the first (one sample: no copy).
        let mut samples = self.positions.into_iter();
        let mut positions = samples.next().unwrap_or_default();
        positions.reserve_exact(self.samples.saturating_sub(1) * n * 3);
        for sample in samples {
            positions.extend(sample);
        }
        let structures = Structures {
            mol_ids: self.mol_ids,
            batch: self
                .atoms
                .iter()
                .enumerate()
                .flat_map(|(m, &a)| std::iter::repeat_n(m as i64, a))
                .collect(),
            species: Array1::from(self.species),
            positions: Array3::from_shape_vec((self.samples, n, 3), positions).map_err(invalid)?,
        };
        let exploded = Array2::from_shape_vec(shape, self.exploded).map_err(invalid)?;
        let verdicts = self
            .verdicts
            .map(|(kept, change)| {
                Ok::<_, Error>((
                    Array2::from_shape_vec(shape, kept).map_err(invalid)?,
                    Array2::from_shape_vec(shape, change).map_err(invalid)?,
                ))
            })
            .transpose()?;
        let (flat, implicit_h, hypervalent) = (
            Array1::from(self.flat),
            Array1::from(self.implicit_h),
            Array1::from(self.hypervalent),
        );
        write_npz(path, &structures, |npz| {
            if let Some((refined, energy_change)) = &verdicts {
                npz.add_array("refined", refined)?;
                npz.add_array("energy_change", energy_change)?;
            }
            npz.add_array("exploded", &exploded)?;
            npz.add_array("flat_input", &flat)?;
            npz.add_array("implicit_hydrogens", &implicit_h)?;
            npz.add_array("hypervalent", &hypervalent)
        })
    }
}

/// Writes `evaluate`'s per-molecule results to `path`, atomically.
///
/// # Errors
/// As [`write_structures`].
pub fn write_evaluation(path: &Path, results: &MoleculeResults) -> Result<()> {
    write_npz(path, &results.generated, |npz| {
        npz.add_array("reference_positions", &results.reference)?;
        npz.add_array("rmsd", &results.rmsd)?;
        npz.add_array("egap", &results.egap)?;
        npz.add_array("baseline_rmsd", &results.baseline_rmsd)?;
        npz.add_array("baseline_egap", &results.baseline_egap)?;
        npz.add_array("energy_ref", &results.energy_ref)
    })
}

/// Reads the `mol_id` array of an `.npz` file written here.
///
/// # Errors
/// [`Error::Invalid`] when the file has no `mol_id` of a width written here.
pub fn read_mol_ids<R: Read + Seek>(npz: &mut NpzReader<R>) -> Result<Vec<String>> {
    fn read<const W: usize, R: Read + Seek>(npz: &mut NpzReader<R>) -> Option<Vec<String>> {
        let ids: Array1<Unicode<W>> = npz.by_name("mol_id").ok()?;
        ids.iter().map(Unicode::text).collect()
    }
    read::<16, R>(npz)
        .or_else(|| read::<64, R>(npz))
        .or_else(|| read::<256, R>(npz))
        .ok_or_else(|| Error::Invalid {
            name: "npz",
            reason: "no `mol_id` array of dtype <U16, <U64 or <U256".into(),
        })
}

type Writer = NpzWriter<BufWriter<AtomicFile>>;

/// Writes the archive (the structures' keys, then what `more` adds) into a
/// temporary file beside `path` that takes its name once complete
/// ([`AtomicFile`]): a crash leaves the old file or the new one, never a part,
/// and a failure leaves nothing.
fn write_npz(
    path: &Path,
    s: &Structures,
    more: impl FnOnce(&mut Writer) -> Result<(), WriteNpzError>,
) -> Result<()> {
    fn ids<const W: usize>(npz: &mut Writer, ids: &[String]) -> Result<(), WriteNpzError> {
        npz.add_array(
            "mol_id",
            &ids.iter().map(|id| Unicode::<W>::new(id)).collect::<Array1<_>>(),
        )
    }
    let longest = s.mol_ids.iter().map(|id| id.chars().count()).max().unwrap_or(0);
    if longest > 256 {
        return Err(Error::Invalid {
            name: "mol_id",
            reason: format!("{longest} characters; the .npz output holds at most 256"),
        });
    }
    let file = AtomicFile::create(path)?;
    let mut npz = NpzWriter::new(BufWriter::with_capacity(1 << 20, file));
    let written = match longest {
        0..=16 => ids::<16>(&mut npz, &s.mol_ids),
        17..=64 => ids::<64>(&mut npz, &s.mol_ids),
        _ => ids::<256>(&mut npz, &s.mol_ids),
    }
    .and_then(|()| npz.add_array("species", &s.species))
    .and_then(|()| npz.add_array("batch", &s.batch))
    .and_then(|()| npz.add_array("positions", &s.positions))
    .and_then(|()| more(&mut npz))
    .and_then(|()| npz.finish());
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let file = written
        .map_err(|e| io(std::io::Error::other(e)))?
        .into_inner()
        .map_err(|e| io(e.into_error()))?;
    Ok(file.commit()?)
}

/// A string as NumPy's fixed-width unicode `<U{W}`: UTF-32LE code points, NUL-padded.
#[derive(Debug, Clone)]
struct Unicode<const W: usize>([u32; W]);

impl<const W: usize> Unicode<W> {
    /// `text`, which the caller has checked fits in W characters.
    fn new(text: &str) -> Self {
        let mut points = [0; W];
        for (p, c) in points.iter_mut().zip(text.chars()) {
            *p = u32::from(c);
        }
        Self(points)
    }

    /// The text without its padding; `None` for a code point that is no character.
    fn text(&self) -> Option<String> {
        self.0
            .iter()
            .take_while(|&&p| p != 0)
            .map(|&p| char::from_u32(p))
            .collect()
    }

    fn descriptor() -> PyValue {
        PyValue::String(format!("<U{W}"))
    }
}

impl<const W: usize> WritableElement for Unicode<W> {
    fn type_descriptor() -> PyValue {
        Self::descriptor()
    }

    fn write<Wr: Write>(&self, mut writer: Wr) -> Result<(), WriteDataError> {
        for p in self.0 {
            writer.write_all(&p.to_le_bytes())?;
        }
        Ok(())
    }

    fn write_slice<Wr: Write>(slice: &[Self], mut writer: Wr) -> Result<(), WriteDataError> {
        slice.iter().try_for_each(|s| s.write(&mut writer))
    }
}

impl<const W: usize> ReadableElement for Unicode<W> {
    fn read_to_end_exact_vec<R: Read>(
        mut reader: R,
        type_desc: &PyValue,
        len: usize,
    ) -> Result<Vec<Self>, ReadDataError> {
        if *type_desc != Self::descriptor() {
            return Err(ReadDataError::WrongDescriptor(type_desc.clone()));
        }
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        let want = 4 * W * len;
        if bytes.len() < want {
            return Err(ReadDataError::MissingData);
        }
        if bytes.len() > want {
            return Err(ReadDataError::ExtraBytes(bytes.len() - want));
        }
        Ok(bytes
            .chunks_exact(4 * W)
            .map(|item| {
                let mut points = [0; W];
                for (p, b) in points.iter_mut().zip(item.chunks_exact(4)) {
                    *p = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
                Self(points)
            })
            .collect())
    }
}
