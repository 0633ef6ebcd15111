//! Users' own molecules in and out of `predict`: extended XYZ or SDF/MOL
//! (gzip too), told by extension or content, checked before the model runs,
//! and the predictions written in the input's format without replacing a
//! file the user did not ask to replace.
//!
//! Every refusal names what the user typed: the file and line of a molecule,
//! or the flag.

use std::path::{Path, PathBuf};

use crate::error::{flag, Error, Result};
use physcon::data::{
    excerpt, format_extxyz_with_info, parse_extxyz_frames, parse_sdf_records, read_text, write_text, Frame,
    SdfRecord,
};

use crate::aromatic::aromatize;

/// The largest |coordinate| (Å) taken from a file. The model computes in f32,
/// where squared distances of larger values lose all precision (and 1e39 is
/// already infinite); SDF's columns end at 1e5.
pub const MAX_COORDINATE: f64 = 1e4;

/// A structure file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Extended XYZ (ASE's layout).
    Extxyz,
    /// SDF or MOL, V2000 or V3000.
    Sdf,
}

impl Format {
    /// The format a file name announces (`.gz` looked through), if any.
    pub fn of_name(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let ext = Path::new(name).extension()?.to_str()?;
        match ext {
            "sdf" | "sd" | "mol" => Some(Format::Sdf),
            "xyz" | "extxyz" => Some(Format::Extxyz),
            _ => None,
        }
    }

    /// The format of `text` read from `path`: its name if that tells, else its
    /// first non-blank line (an atom count starts extended XYZ).
    ///
    /// # Errors
    /// [`Error::Line`] for a file in a format predict does not read (MOL2,
    /// PDB, mmCIF, SMILES, ...), told by its name or its content, naming the
    /// formats it does read.
    pub fn of_file(path: &Path, text: &str) -> Result<Self> {
        let found = unsupported_name(path)
            .map(|name| (1, name))
            .or_else(|| unsupported_content(text, Self::of_name(path).is_none()));
        if let Some((line, name)) = found {
            return Err(Error::Line {
                path: path.to_owned(),
                line,
                reason: format!(
                    "this is {name}, a format predict does not read; it reads {SUPPORTED}. Convert it \
                     first, with explicit hydrogens and 3D coordinates (e.g. `obabel in -O out.sdf -h --gen3d`, \
                     or RDKit: Chem.AddHs, AllChem.EmbedMolecule, Chem.SDWriter)"
                ),
            });
        }
        Ok(Self::of_name(path).unwrap_or_else(|| {
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if first.trim().parse::<usize>().is_ok() {
                Format::Extxyz
            } else {
                Format::Sdf
            }
        }))
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Extxyz => "extended XYZ",
            Format::Sdf => "SDF",
        }
    }
}

/// The formats `predict` reads, for messages.
pub const SUPPORTED: &str =
    "SDF/MOL (V2000 or V3000; .sdf, .sd, .mol) and extended XYZ (.xyz, .extxyz), gzip or not";

/// The format a file name announces that predict does not read.
pub fn unsupported_name(path: &Path) -> Option<&'static str> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    match Path::new(name).extension()?.to_str()? {
        "mol2" | "ml2" => Some("a MOL2 (Tripos) file"),
        "pdb" | "ent" | "pdbqt" => Some("a PDB file"),
        "cif" | "mmcif" => Some("an (mm)CIF file"),
        "smi" | "smiles" | "can" | "ism" => Some("a SMILES file"),
        "cml" => Some("a CML file"),
        "inchi" => Some("an InChI file"),
        _ => None,
    }
}

/// The unsupported format `text` is written in, told by a line only that
/// format has (`@<TRIPOS>`, PDB records, `data_`), or when the file's name
/// tells nothing (`unnamed`), lines of SMILES in a file without `M  END`:
/// `(1-based line, name)`.
fn unsupported_content(text: &str, unnamed: bool) -> Option<(usize, &'static str)> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (k, first) = lines.next()?;
    if let Some((k, _)) = text.lines().enumerate().find(|(_, l)| l.starts_with("@<TRIPOS>")) {
        return Some((k + 1, "a MOL2 (Tripos) file"));
    }
    const PDB: [&str; 8] = [
        "HEADER", "ATOM  ", "HETATM", "REMARK", "CRYST1", "COMPND", "MODEL ", "TITLE ",
    ];
    if PDB.iter().any(|r| first.starts_with(r)) {
        return Some((k + 1, "a PDB file"));
    }
    if first.starts_with("data_") {
        return Some((k + 1, "an (mm)CIF file"));
    }
    // SMILES files hold one molecule per line, the SMILES and perhaps a name;
    // every connection table or XYZ file has lines of more fields.
    let smiles_line = |line: &str| {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let first = tokens.first().map_or(&b""[..], |t| t.as_bytes());
        tokens.len() <= 2
            && first
                .first()
                .is_some_and(|b| b.is_ascii_alphabetic() || b"[*".contains(b))
            && first
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"=#()[]@+-/\\%.*:$~".contains(b))
    };
    let smiles = unnamed
        && smiles_line(first)
        && lines.all(|(_, l)| smiles_line(l))
        && !text.lines().any(|l| l.trim_end() == "M  END");
    smiles.then_some((k + 1, "a SMILES file"))
}

/// A record of the input that could not be read.
#[derive(Debug)]
pub struct Rejected {
    /// 1-based line of the record (title or atom count).
    pub line: usize,
    /// What is wrong, naming the file and line.
    pub error: Error,
}

/// One molecule of the input and where it stands in its file.
#[derive(Debug, Clone)]
pub struct InputMolecule {
    pub frame: Frame,
    /// 1-based line of its first line (atom count or title).
    pub line: usize,
    /// 1-based line of each atom.
    pub atom_lines: Vec<usize>,
    /// Its SDF record, written back with the predicted positions.
    pub record: Option<SdfRecord>,
    /// The bonds the model reads: the file's, with Kekulé-written aromatic
    /// rings as order 4 (the training data's convention; outputs keep the
    /// file's own bonds).
    pub bonds: Vec<(usize, usize, u8)>,
}

impl InputMolecule {
    fn new(frame: Frame, line: usize, atom_lines: Vec<usize>, record: Option<SdfRecord>) -> Self {
        let mut bonds = frame.bonds.clone();
        aromatize(&frame.species, &mut bonds);
        Self {
            frame,
            line,
            atom_lines,
            record,
            bonds,
        }
    }

    /// The structure the model reads: the file's atoms with [`Self::bonds`].
    pub fn molecule(&self) -> physcon::Molecule {
        physcon::Molecule {
            bonds: self.bonds.clone(),
            ..self.frame.molecule()
        }
    }

    /// Bonds whose order [`Self::bonds`] changed from the file's.
    pub fn kekule_bonds(&self) -> usize {
        self.bonds
            .iter()
            .zip(&self.frame.bonds)
            .filter(|(a, b)| a != b)
            .count()
    }
}

/// The molecules of a user's file: those read, and the records that could not be.
#[derive(Debug)]
pub struct Input {
    pub path: PathBuf,
    pub format: Format,
    pub molecules: Vec<InputMolecule>,
    /// Records that could not be read, in file order; the others are in `molecules`.
    pub rejected: Vec<Rejected>,
}

impl Input {
    /// Reads and checks `path`, each record on its own: a malformed record,
    /// a molecule without atoms or with a coordinate out of range
    /// ([`MAX_COORDINATE`]) goes to `rejected` with its file and line, and the
    /// other records are read.
    ///
    /// # Errors
    /// [`Error::Io`] for a file that cannot be read; [`Error::Line`] naming the
    /// file and line for text that is no structure file of a format predict
    /// reads, or no molecules at all.
    pub fn read(path: &Path) -> Result<Self> {
        let text = read_text(path)?;
        let format = Format::of_file(path, &text)?;
        let records: Vec<(usize, physcon::Result<InputMolecule>)> = match format {
            Format::Sdf => parse_sdf_records(&text, path)
                .into_iter()
                .map(|(line, r)| {
                    let m =
                        r.map(|r| InputMolecule::new(r.frame.clone(), r.line, r.atom_lines.clone(), Some(r)));
                    (line, m)
                })
                .collect(),
            Format::Extxyz => parse_extxyz_frames(&text, path)
                .into_iter()
                .map(|(line, frame)| {
                    let m = frame.map(|frame| {
                        let atom_lines = (0..frame.num_atoms()).map(|a| line + 2 + a).collect();
                        InputMolecule::new(frame, line, atom_lines, None)
                    });
                    (line, m)
                })
                .collect(),
        };
        let fail = |line: usize, reason: String| Error::Line {
            path: path.to_owned(),
            line,
            reason,
        };
        if records.is_empty() {
            return Err(fail(
                1,
                format!(
                    "no molecules ({}): nothing to predict",
                    if text.is_empty() {
                        "the file is empty".to_owned()
                    } else if text.trim().is_empty() {
                        "the file holds only blank lines".to_owned()
                    } else {
                        format!("read as {}", format.name())
                    }
                ),
            ));
        }
        let check = |m: InputMolecule| -> Result<InputMolecule> {
            let id = excerpt(&m.frame.mol_id);
            if m.frame.species.is_empty() {
                return Err(fail(m.line, format!("molecule `{id}` has no atoms")));
            }
            for (a, p) in m.frame.pos.iter().enumerate() {
                if let Some(x) = p.iter().find(|x| x.abs() > MAX_COORDINATE) {
                    return Err(fail(
                        m.atom_lines[a],
                        format!(
                            "molecule `{id}`: coordinate {x:e} Å is out of range (|x| ≤ {MAX_COORDINATE:e} Å; the model computes in f32)"
                        ),
                    ));
                }
            }
            Ok(m)
        };
        let (mut molecules, mut rejected) = (Vec::new(), Vec::new());
        for (line, record) in records {
            match record.map_err(Error::from).and_then(check) {
                Ok(m) => molecules.push(m),
                Err(error) => rejected.push(Rejected { line, error }),
            }
        }
        Ok(Self {
            path: path.to_owned(),
            format,
            molecules,
            rejected,
        })
    }

    /// Records in the file, read or not.
    pub fn records(&self) -> usize {
        self.molecules.len() + self.rejected.len()
    }
}

/// Refuses an output file (`arg`: `--output` or `--npz`) that would replace
/// the input or an existing file (unless `force`), that names a folder, or
/// that lies in a folder that does not exist.
///
/// # Errors
/// [`Error::Flag`] naming `arg`.
pub fn check_output(arg: &'static str, input: &Path, output: &Path, force: bool) -> Result<()> {
    let shown = output.display();
    if output.is_dir() {
        return Err(flag(arg, format!("`{shown}` is a folder; name a file")));
    }
    let folder = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(flag(
            arg,
            format!("the folder `{}` of `{shown}` does not exist", folder.display()),
        ));
    }
    if output.exists() && !force {
        let same = matches!(
            (input.canonicalize(), output.canonicalize()),
            (Ok(a), Ok(b)) if a == b
        );
        return Err(flag(
            arg,
            if same {
                format!("`{shown}` is the --input file: the predictions would replace your molecules; choose another {arg} (or pass --force)")
            } else {
                format!("`{shown}` exists; pass --force to replace it, or choose another {arg}")
            },
        ));
    }
    Ok(())
}

/// Refuses an `--output` whose name announces another format than the input's.
///
/// # Errors
/// [`Error::Flag`] (`--output`).
pub fn check_output_format(output: &Path, input: &Input) -> Result<()> {
    if let Some(name) = unsupported_name(output) {
        return Err(flag(
            "--output",
            format!(
                "`{}` names {name}; predict writes the input's format ({})",
                output.display(),
                input.format.name()
            ),
        ));
    }
    match Format::of_name(output) {
        Some(f) if f != input.format => Err(flag(
            "--output",
            format!(
                "`{}` names {}, but `{}` is {}: predictions are written in the input's format",
                output.display(),
                f.name(),
                input.path.display(),
                input.format.name()
            ),
        )),
        _ => Ok(()),
    }
}

/// `sample` moved rigidly so its centroid is the centroid of `input`: the
/// model generates centred structures, the user's placement is kept.
pub fn place_like(input: &[[f64; 3]], sample: &[[f64; 3]]) -> Vec<[f64; 3]> {
    let centroid = |x: &[[f64; 3]]| {
        let n = x.len().max(1) as f64;
        let mut c = [0.0; 3];
        for p in x {
            for d in 0..3 {
                c[d] += p[d] / n;
            }
        }
        c
    };
    let (a, b) = (centroid(input), centroid(sample));
    sample
        .iter()
        .map(|p| [p[0] - b[0] + a[0], p[1] - b[1] + a[1], p[2] - b[2] + a[2]])
        .collect()
}

/// One predicted structure: the input molecule's index, the sample's index and its positions.
pub struct Prediction {
    pub molecule: usize,
    pub sample: i64,
    pub pos: Vec<[f64; 3]>,
    /// Why it is not written to --output (exploded, or wider than the format), if so.
    pub problem: Option<String>,
    /// With the energy guard: whether the refinement was kept, and the energy
    /// model's energy of the written structure minus the input's (eV).
    pub guard: Option<(bool, f64)>,
}

impl Prediction {
    /// The guard's verdict as output keys: `physcon_refined` (`T`/`F`) and
    /// `physcon_energy_change` (eV, the energy model's); none without the guard.
    pub fn guard_keys(&self) -> Vec<(String, String)> {
        self.guard
            .map(|(kept, change)| {
                vec![
                    (
                        "physcon_refined".to_owned(),
                        (if kept { "T" } else { "F" }).to_owned(),
                    ),
                    ("physcon_energy_change".to_owned(), format!("{change:.6}")),
                ]
            })
            .unwrap_or_default()
    }
}

/// Why `pos` cannot be written into the molecule's SDF record, if it cannot
/// (a V2000 coordinate wider than its 10 columns).
pub fn unwritable(m: &InputMolecule, pos: &[[f64; 3]]) -> Option<String> {
    let e = m.record.as_ref()?.with_positions(pos).err()?;
    let reason = match e {
        physcon::Error::InvalidArgument { reason, .. } => reason,
        e => e.to_string(),
    };
    Some(format!(
        "{reason}; move the molecule nearer the origin, or write the input as V3000 (RDKit: \
         Chem.SDWriter with SetForceV3000(True))"
    ))
}

/// The predictions as frames: each its input molecule with the predicted
/// positions, `level` `physcon-<model>`, no energy or forces.
pub fn predicted_frames(input: &Input, predictions: &[&Prediction], model: &str) -> Vec<Frame> {
    predictions
        .iter()
        .map(|p| Frame {
            level: Some(format!("physcon-{model}")),
            energy: None,
            forces: None,
            pos: p.pos.clone(),
            ..input.molecules[p.molecule].frame.clone()
        })
        .collect()
}

/// Writes predictions in the input's format (SDF keeps each record's text
/// and adds the data items `physcon_sample` and `physcon_model`), atomically,
/// gzip when `path` ends in `.gz`.
///
/// # Errors
/// The writers' errors; [`Error::Io`] naming `path`.
pub fn write_predictions(path: &Path, input: &Input, predictions: &[&Prediction], model: &str) -> Result<()> {
    let text = match input.format {
        Format::Extxyz => {
            let info: Vec<_> = predictions.iter().map(|p| p.guard_keys()).collect();
            format_extxyz_with_info(&predicted_frames(input, predictions, model), &info)?
        }
        Format::Sdf => {
            let mut text = String::new();
            for p in predictions {
                let record = input.molecules[p.molecule]
                    .record
                    .as_ref()
                    .ok_or_else(|| flag("--input", "an SDF molecule without its record".into()))?;
                let mut record = record
                    .with_positions(&p.pos)?
                    .with_property("physcon_sample", &p.sample.to_string())
                    .with_property("physcon_model", model);
                for (key, value) in p.guard_keys() {
                    record = record.with_property(&key, &value);
                }
                text.push_str(&record.to_text());
            }
            text
        }
    };
    Ok(write_text(path, &text)?)
}
