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
//! | `flat_input` | bool | `[M]` | the input's z coordinates all lie within 0.001 Å (a 2D drawing) |
//! | `implicit_hydrogens` | bool | `[M]` | a carbon of the input is short of four bonds (hydrogens not explicit) |
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
//! Files are uncompressed (as `numpy.savez` writes them) and written atomically.

use std::io::{Cursor, Read, Seek, Write};
use std::path::Path;

use crate::{Error, Result};
use ndarray_npy::{
    NpzReader, NpzWriter, ReadDataError, ReadableElement, WritableElement, WriteDataError, WriteNpzError,
};
use physcon::data::write_atomic;
use physcon::data::Frame;
use physcon::ndarray::{Array1, Array2};
use py_literal::Value as PyValue;

use crate::checks::Screened;
use crate::eval::{MoleculeResults, Structures};
use crate::io::{Input, Prediction};

/// Writes structures alone (the keys `mol_id`, `species`, `batch`, `positions`) to `path`, atomically.
///
/// # Errors
/// [`Error::Invalid`] for a `mol_id` longer than 256 characters;
/// [`Error::Io`] for the archive or the file system.
pub fn write_structures(path: &Path, structures: &Structures) -> Result<()> {
    write_npz(path, structures, |_| Ok(()))
}

/// Writes `predict`'s structures to `path`, atomically: every sample of each
/// predicted molecule (`samples` per molecule, in input order), with the
/// findings about each as flags.
///
/// # Errors
/// [`Error::Invalid`] for a `mol_id` longer than 256 characters;
/// [`Error::Io`] for the archive or the file system.
pub fn write_predictions(
    path: &Path,
    input: &Input,
    predictions: &[Prediction],
    screened: &Screened,
    samples: usize,
) -> Result<()> {
    let frames: Vec<Frame> = predictions
        .iter()
        .map(|p| Frame {
            pos: p.pos.clone(),
            ..input.molecules[p.molecule].frame.clone()
        })
        .collect();
    let structures = Structures::from_samples(&frames, samples)?;
    let molecules: Vec<usize> = predictions.iter().step_by(samples).map(|p| p.molecule).collect();
    let exploded = Array2::from_shape_fn((molecules.len(), samples), |(m, k)| {
        predictions[m * samples + k].problem.is_some()
    });
    let per_molecule = |flags: &[bool]| molecules.iter().map(|&m| flags[m]).collect::<Array1<bool>>();
    // The guard's verdicts `[M, K]`, when every structure has one.
    let verdicts: Option<Vec<(bool, f64)>> = predictions.iter().map(|p| p.guard).collect();
    let verdicts = verdicts.map(|v| {
        let shape = (molecules.len(), samples);
        (
            Array2::from_shape_fn(shape, |(m, k)| v[m * samples + k].0),
            Array2::from_shape_fn(shape, |(m, k)| v[m * samples + k].1),
        )
    });
    write_npz(path, &structures, |npz| {
        if let Some((refined, energy_change)) = &verdicts {
            npz.add_array("refined", refined)?;
            npz.add_array("energy_change", energy_change)?;
        }
        npz.add_array("exploded", &exploded)?;
        npz.add_array("flat_input", &per_molecule(&screened.flat))?;
        npz.add_array("implicit_hydrogens", &per_molecule(&screened.implicit_h))
    })
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

type Writer = NpzWriter<Cursor<Vec<u8>>>;

/// Builds the archive in memory (the structures' keys, then what `more` adds),
/// then writes it with [`write_atomic`]: a crash leaves the old file or the
/// new one, never a part.
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
    let mut npz = NpzWriter::new(Cursor::new(Vec::new()));
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
    let bytes = written
        .map_err(|e| Error::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?
        .into_inner();
    Ok(write_atomic(path, &bytes)?)
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
