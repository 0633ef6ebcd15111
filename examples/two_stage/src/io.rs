//! Users' own molecules in and out of `predict`: extended XYZ or SDF/MOL
//! (gzip too), told by extension or content, checked before the model runs,
//! and the predictions written in the input's format without replacing a
//! file the user did not ask to replace.
//!
//! Nothing holds the whole file: [`Input::open`] reads it through once to
//! check it as a whole (encoding, line endings, size, format), then
//! [`Input::records`] reads it again one record at a time, and
//! [`PredictionWriter`] writes structure by structure into a temporary file
//! that takes the output's name only once every structure is written.
//!
//! Every refusal names what the user typed: the file and line of a molecule,
//! or the flag.

use std::path::{Path, PathBuf};

use crate::error::{flag, Error, Result};
use physcon::data::{
    excerpt, format_extxyz_with_info, ExtxyzFrames, Frame, SdfRecord, SdfRecords, TextFile, TextLines,
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
        let mut scan = FormatScan::default();
        text.lines().for_each(|l| scan.line(l));
        Self::of_scan(path, &scan)
    }

    /// [`Self::of_file`] from what [`FormatScan`] gathered from the file's lines.
    ///
    /// # Errors
    /// As [`Self::of_file`].
    pub fn of_scan(path: &Path, scan: &FormatScan) -> Result<Self> {
        let found = unsupported_name(path)
            .map(|name| (1, name))
            .or_else(|| scan.unsupported(Self::of_name(path).is_none()));
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
            let first = scan.first.as_ref().map_or("", |(_, l)| l.as_str());
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

/// What a file's lines tell about its format, gathered one line at a time:
/// the first non-blank line, the first `@<TRIPOS>` line, whether every
/// non-blank line reads as SMILES and whether any is `M  END`.
#[derive(Debug, Clone)]
pub struct FormatScan {
    /// Lines seen.
    pub lines: usize,
    /// The first non-blank line: (0-based index, text).
    pub first: Option<(usize, String)>,
    tripos: Option<usize>,
    smiles: bool,
    m_end: bool,
}

impl Default for FormatScan {
    fn default() -> Self {
        Self {
            lines: 0,
            first: None,
            tripos: None,
            smiles: true,
            m_end: false,
        }
    }
}

impl FormatScan {
    /// Takes the file's next line.
    pub fn line(&mut self, line: &str) {
        let k = self.lines;
        self.lines += 1;
        if self.tripos.is_none() && line.starts_with("@<TRIPOS>") {
            self.tripos = Some(k);
        }
        self.m_end |= line.trim_end() == "M  END";
        if line.trim().is_empty() {
            return;
        }
        if self.smiles && !smiles_line(line) {
            self.smiles = false;
        }
        if self.first.is_none() {
            self.first = Some((k, line.to_owned()));
        }
    }

    /// The unsupported format the lines are written in, told by a line only
    /// that format has (`@<TRIPOS>`, PDB records, `data_`), or when the file's
    /// name tells nothing (`unnamed`), lines of SMILES in a file without `M  END`:
    /// `(1-based line, name)`.
    fn unsupported(&self, unnamed: bool) -> Option<(usize, &'static str)> {
        let (k, first) = self.first.as_ref()?;
        if let Some(k) = self.tripos {
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
        (unnamed && self.smiles && !self.m_end).then_some((k + 1, "a SMILES file"))
    }
}

/// Whether a line reads as one of a SMILES file, which holds one molecule per
/// line, the SMILES and perhaps a name; every connection table or XYZ file has
/// lines of more fields.
fn smiles_line(line: &str) -> bool {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let first = tokens.first().map_or(&b""[..], |t| t.as_bytes());
    tokens.len() <= 2
        && first
            .first()
            .is_some_and(|b| b.is_ascii_alphabetic() || b"[*".contains(b))
        && first
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"=#()[]@+-/\\%.*:$~".contains(b))
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
    pub(crate) fn new(frame: Frame, line: usize, atom_lines: Vec<usize>, record: Option<SdfRecord>) -> Self {
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

/// A user's file of molecules: checked as a whole ([`Input::open`]), then read
/// one record at a time ([`Input::records`]), never held whole.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub format: Format,
    /// Bytes of its text (after decompression).
    pub text_bytes: u64,
}

impl Input {
    /// Reads `path` through once, in bounded memory, and tells its format:
    /// everything about the file as a whole is checked here, before any
    /// record is read for the model.
    ///
    /// # Errors
    /// [`Error::Io`] for a file that cannot be read; [`Error::Line`] (or the
    /// readers' [`physcon::Error::Parse`]) naming the file and line for text
    /// that is no structure file of a format predict reads (binary, UTF-16,
    /// CR-only line endings, over 4 GiB, MOL2, PDB, ...), or no molecules at all.
    pub fn open(path: &Path) -> Result<Self> {
        let mut lines = TextLines::open(path)?;
        let mut scan = FormatScan::default();
        while let Some(line) = lines.next_line()? {
            scan.line(&line);
        }
        let format = Format::of_scan(path, &scan)?;
        // Every format reads a record from a file with a non-blank line.
        if scan.first.is_none() {
            return Err(Error::Line {
                path: path.to_owned(),
                line: 1,
                reason: format!(
                    "no molecules ({}): nothing to predict",
                    if scan.lines == 0 {
                        "the file is empty"
                    } else {
                        "the file holds only blank lines"
                    }
                ),
            });
        }
        Ok(Self {
            path: path.to_owned(),
            format,
            text_bytes: lines.bytes_read(),
        })
    }

    /// The file's records from its first, read one at a time.
    ///
    /// # Errors
    /// [`Error::Io`] for a file that cannot be opened.
    pub fn records(&self) -> Result<Records> {
        let lines = TextLines::open(&self.path)?;
        let reader = match self.format {
            Format::Sdf => Reader::Sdf(SdfRecords::new(lines, &self.path)),
            Format::Extxyz => Reader::Extxyz(ExtxyzFrames::new(lines, &self.path)),
        };
        Ok(Records {
            path: self.path.clone(),
            reader,
            records: 0,
        })
    }
}

/// The records of an [`Input`], one at a time.
#[derive(Debug)]
pub struct Records {
    path: PathBuf,
    reader: Reader,
    records: usize,
}

#[derive(Debug)]
enum Reader {
    Sdf(SdfRecords<TextLines>),
    Extxyz(ExtxyzFrames<TextLines, String>),
}

impl Records {
    /// The next record, checked on its own: a molecule, or a record that is
    /// malformed, has no atoms or a coordinate out of range
    /// ([`MAX_COORDINATE`]), with its file and line.
    ///
    /// # Errors
    /// What ends the file's lines: a read error, or (if the file changed
    /// since [`Input::open`]) a fault of its text.
    pub fn next_record(&mut self) -> Result<Option<std::result::Result<InputMolecule, Rejected>>> {
        let record = match &mut self.reader {
            Reader::Sdf(r) => r.next().transpose()?.map(|(line, r)| {
                let m = r.map(|r| InputMolecule::new(r.frame.clone(), r.line, r.atom_lines.clone(), Some(r)));
                (line, m)
            }),
            Reader::Extxyz(r) => r.next().transpose()?.map(|(line, frame)| {
                let m = frame.map(|frame| {
                    let atom_lines = (0..frame.num_atoms()).map(|a| line + 2 + a).collect();
                    InputMolecule::new(frame, line, atom_lines, None)
                });
                (line, m)
            }),
        };
        let Some((line, record)) = record else {
            return Ok(None);
        };
        self.records += 1;
        Ok(Some(
            record
                .map_err(Error::from)
                .and_then(|m| check_molecule(&self.path, m))
                .map_err(|error| Rejected { line, error }),
        ))
    }

    /// Records read so far, read or not.
    pub fn records(&self) -> usize {
        self.records
    }

    /// Bytes of the file's text read so far.
    pub fn bytes_read(&self) -> u64 {
        match &self.reader {
            Reader::Sdf(r) => r.lines().bytes_read(),
            Reader::Extxyz(r) => r.lines().bytes_read(),
        }
    }
}

/// Refuses a molecule without atoms or with a coordinate out of range ([`MAX_COORDINATE`]).
fn check_molecule(path: &Path, m: InputMolecule) -> Result<InputMolecule> {
    let fail = |line: usize, reason: String| Error::Line {
        path: path.to_owned(),
        line,
        reason,
    };
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

/// One predicted structure of a molecule: the sample's index and its positions.
pub struct Prediction {
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

/// A prediction as a frame: its input molecule with the predicted positions,
/// `level` `physcon-<model>`, no energy or forces.
pub fn predicted_frame(m: &InputMolecule, p: &Prediction, model: &str) -> Frame {
    Frame {
        level: Some(format!("physcon-{model}")),
        energy: None,
        forces: None,
        pos: p.pos.clone(),
        ..m.frame.clone()
    }
}

/// Writes predictions in the input's format, one structure at a time (SDF
/// keeps each record's text and adds the data items `physcon_sample` and
/// `physcon_model`), gzip when the path ends in `.gz`: into a temporary file
/// beside it, created with the first structure, that takes the path's name at
/// [`PredictionWriter::commit`]. Dropped without a commit (an error on the
/// way), it leaves nothing behind: no structure is written unless all are.
pub struct PredictionWriter {
    path: PathBuf,
    format: Format,
    model: String,
    file: Option<TextFile>,
    written: usize,
}

impl PredictionWriter {
    /// A writer to `path` of structures in `format` by the model `model`; nothing is created yet.
    pub fn new(path: &Path, format: Format, model: &str) -> Self {
        Self {
            path: path.to_owned(),
            format,
            model: model.to_owned(),
            file: None,
            written: 0,
        }
    }

    /// Appends `p`, a structure of `m`.
    ///
    /// # Errors
    /// The writers' errors; [`Error::Io`] naming the file.
    pub fn write(&mut self, m: &InputMolecule, p: &Prediction) -> Result<()> {
        let text = match self.format {
            Format::Extxyz => {
                format_extxyz_with_info(&[predicted_frame(m, p, &self.model)], &[p.guard_keys()])?
            }
            Format::Sdf => {
                let record = m
                    .record
                    .as_ref()
                    .ok_or_else(|| flag("--input", "an SDF molecule without its record".into()))?;
                let mut record = record
                    .with_positions(&p.pos)?
                    .with_property("physcon_sample", &p.sample.to_string())
                    .with_property("physcon_model", &self.model);
                for (key, value) in p.guard_keys() {
                    record = record.with_property(&key, &value);
                }
                record.to_text()
            }
        };
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(TextFile::create(&self.path)?),
        };
        file.write(&text)?;
        self.written += 1;
        Ok(())
    }

    /// Structures written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Puts the file in place (an empty one if nothing was written).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file that failed; nothing is left behind.
    pub fn commit(self) -> Result<()> {
        let file = match self.file {
            Some(file) => file,
            None => TextFile::create(&self.path)?,
        };
        Ok(file.commit()?)
    }
}
