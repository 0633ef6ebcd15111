//! SDF and MOL files (V2000 and V3000 connection tables), gzip read transparently.
//!
//! Most users hold their molecules as SDF (RDKit, Open Babel, PubChem), which
//! carries the bond orders a model needs. A record is read into a [`Frame`]
//! (title line as `mol_id`, elements, positions in Å, bonds with aromatic = 4)
//! and keeps its own text, so [`SdfRecord::with_positions`] writes new
//! coordinates into the user's record and leaves everything else (charges,
//! stereo flags, `M` lines, data items) as it was.

use std::path::Path;

use crate::data::elements::atomic_number;
use crate::data::excerpt;
use crate::data::files::{read_text, write_text};
use crate::data::frame::Frame;
use crate::error::{Error, ParseError, Result};

/// Columns of a V2000 atom line's coordinate field (`%10.4f`).
pub const V2000_COORDINATE_WIDTH: usize = 10;

/// One record of an SDF or MOL file.
#[derive(Debug, Clone, PartialEq)]
pub struct SdfRecord {
    /// The structure: `mol_id` is the title line (or `record <k>` when blank).
    pub frame: Frame,
    /// 1-based line of the record's title line in its file.
    pub line: usize,
    /// 1-based line of each atom, in atom order.
    pub atom_lines: Vec<usize>,
    /// Data items `(name, value)` after `M  END`, in file order (multi-line values joined by `\n`).
    pub properties: Vec<(String, String)>,
    /// The connection table's lines, title to `M  END` inclusive.
    molblock: Vec<String>,
    /// The data-item lines after `M  END`.
    data: Vec<String>,
    /// Index into `molblock` of each atom's (first) line.
    atom_at: Vec<usize>,
    v3000: bool,
}

impl SdfRecord {
    /// Whether the record is a V3000 connection table.
    pub fn is_v3000(&self) -> bool {
        self.v3000
    }

    /// The record with its atoms moved to `pos` (Å, in atom order); nothing
    /// else in its text changes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (`pos`) for another number of atoms, or a
    /// coordinate that is not finite or does not fit the format's columns
    /// (V2000: -9999.9999 to 99999.9999 Å, the `%10.4f` field).
    pub fn with_positions(&self, pos: &[[f64; 3]]) -> Result<Self> {
        let bad = |reason: String| Error::InvalidArgument {
            arg: "pos",
            reason: format!("record `{}`: {reason}", excerpt(&self.frame.mol_id)),
        };
        if pos.len() != self.atom_at.len() {
            return Err(bad(format!(
                "{} positions for {} atoms",
                pos.len(),
                self.atom_at.len()
            )));
        }
        if let Some(x) = pos.iter().flatten().find(|x| !x.is_finite()) {
            return Err(bad(format!("coordinate {x} is not a number SDF can hold")));
        }
        if !self.v3000 {
            // `%10.4f` grows past its 10 columns instead of failing, and a reader
            // then takes the spill-over as part of the next number.
            let wide = pos.iter().enumerate().find_map(|(a, p)| {
                p.iter()
                    .find(|x| format!("{x:10.4}").len() > V2000_COORDINATE_WIDTH)
                    .map(|x| (a, x))
            });
            if let Some((a, x)) = wide {
                return Err(bad(format!(
                    "atom {}: coordinate {x:.4} is wider than V2000's {V2000_COORDINATE_WIDTH}-column field \
                     (-9999.9999 to 99999.9999 Å)",
                    a + 1
                )));
            }
        }
        let mut out = self.clone();
        for (&at, p) in self.atom_at.iter().zip(pos) {
            let line = &self.molblock[at];
            out.molblock[at] = if self.v3000 {
                // `M  V30 index type x y z rest`: the tokens after z are kept.
                let tokens: Vec<&str> = line.split_whitespace().collect();
                let mut fields: Vec<String> = tokens[..4].iter().map(|t| t.to_string()).collect();
                fields.extend(p.iter().map(|x| format!("{x:.6}")));
                fields.extend(tokens[7..].iter().map(|t| t.to_string()));
                format!("M  V30 {}", fields[2..].join(" "))
            } else {
                // Atom lines were checked to be ASCII and at least 30 columns wide.
                format!("{:10.4}{:10.4}{:10.4}{}", p[0], p[1], p[2], &line[30..])
            };
        }
        out.frame.pos = pos.to_vec();
        Ok(out)
    }

    /// The dimensional code of the header's program line (columns 21-22):
    /// `Some("2D")` or `Some("3D")` where the writer says so (RDKit, PubChem and
    /// Open Babel do), `None` where the line is blank or shorter.
    pub fn dimension(&self) -> Option<&str> {
        let code = columns(self.molblock.get(1)?, 20, 22);
        matches!(code, "2D" | "3D").then_some(code)
    }

    /// The formal charge of each atom, in atom order, as the record gives it:
    /// V2000 `M  CHG` lines, which replace every charge of the atom block when
    /// the record has any (as the CTfile format says), else the atom block's
    /// charge column (columns 37-39: 1, 2, 3 for +3, +2, +1; 5, 6, 7 for -1,
    /// -2, -3; 4, a doublet radical, is no charge); V3000 `CHG=` of each atom line.
    pub fn formal_charges(&self) -> Vec<i32> {
        let mut charges = vec![0; self.atom_at.len()];
        if self.v3000 {
            for (a, &at) in self.atom_at.iter().enumerate() {
                // An atom line may continue on the next (`-` at its end).
                let mut text = String::new();
                for line in &self.molblock[at..] {
                    let body = line.strip_prefix("M  V30 ").unwrap_or(line).trim_end();
                    match body.strip_suffix('-') {
                        Some(b) => text.push_str(b),
                        None => {
                            text.push_str(body);
                            break;
                        }
                    }
                }
                charges[a] = text
                    .split_whitespace()
                    .find_map(|t| t.strip_prefix("CHG=")?.parse().ok())
                    .unwrap_or(0);
            }
            return charges;
        }
        let chg: Vec<&String> = self.molblock.iter().filter(|l| l.starts_with("M  CHG")).collect();
        if chg.is_empty() {
            for (a, &at) in self.atom_at.iter().enumerate() {
                charges[a] = match columns(&self.molblock[at], 36, 39) {
                    "1" => 3,
                    "2" => 2,
                    "3" => 1,
                    "5" => -1,
                    "6" => -2,
                    "7" => -3,
                    _ => 0,
                };
            }
        }
        // The entries were checked when the record was read: `aaa vvv` in 4 columns each.
        for line in chg {
            let n = columns(line, 6, 9).parse::<usize>().unwrap_or(0);
            for e in 0..n {
                let a = 9 + 8 * e;
                let atom = columns(line, a, a + 4).parse::<usize>().unwrap_or(0);
                if let (Some(c), Ok(v)) = (
                    atom.checked_sub(1).and_then(|i| charges.get_mut(i)),
                    columns(line, a + 4, a + 8).parse::<i32>(),
                ) {
                    *c = v;
                }
            }
        }
        charges
    }

    /// The symbol of atom `atom` (0-based) as the file writes it (`D`, `R#`, `*`, ...).
    pub fn atom_symbol(&self, atom: usize) -> Option<&str> {
        let line = &self.molblock[*self.atom_at.get(atom)?];
        if self.v3000 {
            line.split_whitespace().nth(3)
        } else {
            Some(columns(line, 31, 34))
        }
    }

    /// The record with a data item `> <name>` appended (after the input's own).
    pub fn with_property(&self, name: &str, value: &str) -> Self {
        let mut out = self.clone();
        // A file may end its last value without the blank line that closes it.
        if out.data.last().is_some_and(|l| !l.trim().is_empty()) {
            out.data.push(String::new());
        }
        out.data.push(format!(">  <{name}>"));
        out.data.extend(value.lines().map(str::to_owned));
        out.data.push(String::new());
        out.properties.push((name.to_owned(), value.to_owned()));
        out
    }

    /// The record as SDF text, ending with its `$$$$` line.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for line in self.molblock.iter().chain(&self.data) {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("$$$$\n");
        text
    }
}

/// Reads every record of an SDF or MOL file, gzip-compressed or not.
///
/// All or nothing: a malformed record gives an error with the file and line.
///
/// # Errors
/// Those of [`read_text`]; [`Error::Parse`] for a malformed record.
pub fn read_sdf(path: impl AsRef<Path>) -> Result<Vec<SdfRecord>> {
    let path = path.as_ref();
    parse_sdf(&read_text(path)?, path)
}

/// Records as SDF text, each ending with `$$$$`.
pub fn format_sdf(records: &[SdfRecord]) -> String {
    records.iter().map(SdfRecord::to_text).collect()
}

/// Writes records to `path` atomically (gzip when it ends in `.gz`).
///
/// # Errors
/// [`Error::Io`] for the file system.
pub fn write_sdf(path: impl AsRef<Path>, records: &[SdfRecord]) -> Result<()> {
    write_text(path.as_ref(), &format_sdf(records))
}

/// Parses SDF or MOL text; `path` only names the source in errors.
///
/// # Errors
/// [`Error::Parse`] with the 1-based line of the first fault.
pub fn parse_sdf(text: &str, path: &Path) -> Result<Vec<SdfRecord>> {
    parse_sdf_records(text, path)
        .into_iter()
        .map(|(_, record)| record)
        .collect()
}

/// Parses every record of SDF or MOL text on its own, so that one malformed
/// record does not hide the others: `(1-based line of its title, the record
/// or the error naming the line of its fault)`, in file order. Records are
/// separated by `$$$$` lines, so a fault never spreads past its record.
/// [`SdfRecords`] reads the same records one at a time.
pub fn parse_sdf_records(text: &str, path: &Path) -> Vec<(usize, Result<SdfRecord>)> {
    // Lines in memory come without an error.
    SdfRecords::new(text.lines().map(Ok::<_, Error>), path)
        .flatten()
        .collect()
}

/// The records of SDF or MOL lines, one at a time, as [`parse_sdf_records`]
/// gives them all: each `Ok((line of its title, the record or its fault))`,
/// holding one record's lines at a time. `lines` are a file's lines
/// ([`crate::data::TextLines`]) or text's; an error of theirs ends the records.
#[derive(Debug)]
pub struct SdfRecords<I> {
    lines: I,
    path: std::path::PathBuf,
    /// 0-based index of the next line.
    next: usize,
    /// Records given so far.
    records: usize,
    done: bool,
}

impl<I> SdfRecords<I> {
    /// The records of `lines`; `path` only names the source in errors.
    pub fn new(lines: I, path: &Path) -> Self {
        Self {
            lines,
            path: path.to_owned(),
            next: 0,
            records: 0,
            done: false,
        }
    }

    /// The lines being read.
    pub fn lines(&self) -> &I {
        &self.lines
    }

    /// The lines not read yet (a line read ahead is dropped).
    pub fn into_lines(self) -> I {
        self.lines
    }
}

impl<I, S> Iterator for SdfRecords<I>
where
    I: Iterator<Item = Result<S>>,
    S: AsRef<str>,
{
    type Item = Result<(usize, Result<SdfRecord>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let start = self.next;
        let mut record: Vec<S> = Vec::new();
        let mut closed = false;
        for line in self.lines.by_ref() {
            let line = match line {
                Ok(line) => line,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            self.next += 1;
            if line.as_ref().trim_end() == "$$$$" {
                closed = true;
                break;
            }
            record.push(line);
        }
        // Only blank lines after the last `$$$$` are no record.
        if !closed {
            self.done = true;
            if record.iter().all(|l| l.as_ref().trim().is_empty()) {
                return None;
            }
        }
        self.records += 1;
        let lines: Vec<&str> = record.iter().map(AsRef::as_ref).collect();
        let parsed = parse_record(&lines, start + 1, self.records).map_err(|(line, kind)| Error::Parse {
            path: self.path.clone(),
            line,
            kind,
        });
        Some(Ok((start + 1, parsed)))
    }
}

type LineResult<T> = std::result::Result<T, (usize, ParseError)>;

fn record_error(line: usize, what: String) -> (usize, ParseError) {
    (line, ParseError::Record(what))
}

/// Columns `a..b` of a fixed-column line, blank where the line is shorter.
fn columns(line: &str, a: usize, b: usize) -> &str {
    line.get(a.min(line.len())..b.min(line.len()))
        .unwrap_or("")
        .trim()
}

fn coordinate(text: &str, line: usize) -> LineResult<f64> {
    let value: f64 = text.parse().map_err(|_| {
        (
            line,
            ParseError::Number {
                field: "coordinate".into(),
                value: excerpt(text),
            },
        )
    })?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err((line, ParseError::NonFinite("coordinate".into())))
    }
}

/// Whether an atom symbol is a pseudo-atom of the format (an attachment point,
/// an R group, a query such as "any atom", a lone pair, an atom list) rather
/// than an element.
pub fn is_pseudo_atom(symbol: &str) -> bool {
    matches!(
        symbol,
        "*" | "A" | "AH" | "Q" | "QH" | "X" | "XH" | "M" | "MH" | "R" | "R#" | "LP" | "L"
    ) || symbol
        .strip_prefix('R')
        .is_some_and(|n| (1..=2).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
}

/// An atom symbol's atomic number: hydrogen for the isotope symbols `D` and
/// `T`, 0 for a pseudo-atom (both as RDKit reads them).
fn element(symbol: &str, line: usize) -> LineResult<i64> {
    match symbol {
        "D" | "T" => Ok(1),
        _ if is_pseudo_atom(symbol) => Ok(0),
        _ => atomic_number(symbol).ok_or_else(|| (line, ParseError::UnknownElement(excerpt(symbol)))),
    }
}

/// A bond type of the file as an order 1, 2, 3 or 4 (aromatic).
fn bond_order(text: &str, line: usize) -> LineResult<u8> {
    match text {
        "1" => Ok(1),
        "2" => Ok(2),
        "3" => Ok(3),
        "4" => Ok(4),
        other => Err(record_error(
            line,
            format!(
                "bond type `{}` has no bond order (1, 2, 3 or aromatic 4) the model can use",
                excerpt(other)
            ),
        )),
    }
}

/// A record's lines (without `$$$$`); `first` is the 1-based line of its title.
fn parse_record(lines: &[&str], first: usize, ordinal: usize) -> LineResult<SdfRecord> {
    let at = |k: usize| first + k;
    let end = lines
        .iter()
        .position(|l| l.trim_end() == "M  END")
        .ok_or_else(|| {
            record_error(
                at(lines.len().saturating_sub(1)),
                "the record has no `M  END` line (not an SDF/MOL connection table?)".into(),
            )
        })?;
    if end < 4 {
        return Err(record_error(
            at(end),
            "`M  END` before the counts line: a record needs a title, program and comment line first".into(),
        ));
    }
    let molblock = &lines[..=end];
    let counts = molblock[3];
    let v3000 = columns(counts, 33, 39) == "V3000" || counts.trim_end().ends_with("V3000");
    let title = molblock[0].trim();
    let mol_id = if title.is_empty() {
        format!("record {ordinal}")
    } else {
        title.to_owned()
    };
    let table = if v3000 {
        v3000_table(molblock, first)?
    } else {
        v2000_table(molblock, first)?
    };
    let data = &lines[end + 1..];
    let properties = data_items(data, at(end + 1))?;
    Ok(SdfRecord {
        frame: Frame {
            mol_id,
            smiles: None,
            level: None,
            energy: None,
            species: table.species,
            pos: table.pos,
            forces: None,
            bonds: table.bonds,
        },
        line: first,
        atom_lines: table.atom_at.iter().map(|&k| at(k)).collect(),
        properties,
        molblock: molblock.iter().map(|l| l.to_string()).collect(),
        data: data.iter().map(|l| l.to_string()).collect(),
        atom_at: table.atom_at,
        v3000,
    })
}

struct Table {
    species: Vec<i64>,
    pos: Vec<[f64; 3]>,
    bonds: Vec<(usize, usize, u8)>,
    atom_at: Vec<usize>,
}

impl Table {
    /// Adds a bond between atoms `i` and `j` (0-based), refusing self and repeated bonds.
    fn bond(&mut self, i: usize, j: usize, order: u8, line: usize) -> LineResult<()> {
        if i == j {
            return Err(record_error(line, format!("atom {} is bonded to itself", i + 1)));
        }
        let (a, b) = (i.min(j), i.max(j));
        if self.bonds.iter().any(|&(p, q, _)| (p.min(q), p.max(q)) == (a, b)) {
            return Err(record_error(
                line,
                format!("atoms {} and {} are bonded twice", a + 1, b + 1),
            ));
        }
        self.bonds.push((i, j, order));
        Ok(())
    }
}

fn v2000_table(molblock: &[&str], first: usize) -> LineResult<Table> {
    let at = |k: usize| first + k;
    let counts = molblock[3];
    let count = |a: usize, what: &str| -> LineResult<usize> {
        columns(counts, a, a + 3).parse().map_err(|_| {
            record_error(
                at(3),
                format!(
                    "counts line `{}`: no {what} count in columns {}-{}",
                    excerpt(counts),
                    a + 1,
                    a + 3
                ),
            )
        })
    };
    let (atoms, bonds) = (count(0, "atom")?, count(3, "bond")?);
    // Lines 4.. up to `M  END` (the last line of the block) hold the atoms, then the bonds.
    let available = molblock.len() - 5;
    if available < atoms + bonds {
        return Err(record_error(
            at(3),
            format!(
                "the counts line declares {atoms} atoms and {bonds} bonds, but only {available} lines come before `M  END`"
            ),
        ));
    }
    let mut table = Table {
        species: Vec::with_capacity(atoms),
        pos: Vec::with_capacity(atoms),
        bonds: Vec::with_capacity(bonds),
        atom_at: Vec::with_capacity(atoms),
    };
    for (k, &line) in molblock.iter().enumerate().skip(4).take(atoms) {
        if !line.is_ascii() || line.len() < 31 {
            return Err(record_error(
                at(k),
                format!(
                    "atom line `{}` is not `x y z symbol` in V2000 columns (ASCII, at least 31 wide)",
                    excerpt(line)
                ),
            ));
        }
        let x = coordinate(columns(line, 0, 10), at(k))?;
        let y = coordinate(columns(line, 10, 20), at(k))?;
        let z = coordinate(columns(line, 20, 30), at(k))?;
        table.species.push(element(columns(line, 31, 34), at(k))?);
        table.pos.push([x, y, z]);
        table.atom_at.push(k);
    }
    // An atom line where the bonds begin: the counts line declares fewer atoms than the
    // block holds, and a reader that follows it would cut the molecule short.
    let k = 4 + atoms;
    if k < molblock.len() - 1 && is_v2000_atom_line(molblock[k]) {
        let lines = (k..molblock.len() - 1)
            .take_while(|&k| is_v2000_atom_line(molblock[k]))
            .count();
        return Err(record_error(
            at(k),
            format!(
                "`{}` is an atom line, but the counts line (line {}) declares {atoms} atoms, all read \
                 before it ({} atom lines follow it): correct the atom count in columns 1-3 of the counts line",
                excerpt(molblock[k].trim_end()),
                at(3),
                atoms + lines
            ),
        ));
    }
    for (k, &line) in molblock.iter().enumerate().skip(4 + atoms).take(bonds) {
        let index = |a: usize| -> LineResult<usize> {
            let text = columns(line, a, a + 3);
            text.parse::<usize>()
                .ok()
                .filter(|i| (1..=atoms).contains(i))
                .map(|i| i - 1)
                .ok_or_else(|| {
                    record_error(
                        at(k),
                        format!(
                            "bond atom `{}` is not an atom number in 1..={atoms}",
                            excerpt(text)
                        ),
                    )
                })
        };
        let (i, j) = (index(0)?, index(3)?);
        let order = bond_order(columns(line, 6, 9), at(k))?;
        table.bond(i, j, order, at(k))?;
    }
    v2000_properties(molblock, first, 4 + atoms + bonds, atoms, bonds)?;
    Ok(table)
}

/// Whether `line` reads as a V2000 atom line: three coordinates in their
/// 10-column fields and a symbol in columns 32-34 (a bond line is shorter).
fn is_v2000_atom_line(line: &str) -> bool {
    let number = |a: usize| columns(line, a, a + 10).parse::<f64>().is_ok();
    let symbol = columns(line, 31, 34);
    line.is_ascii()
        && line.len() >= 34
        && number(0)
        && number(10)
        && number(20)
        && !symbol.is_empty()
        && symbol
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b"*#".contains(&b))
}

/// Whether `line` reads as a V2000 bond line between atoms of 1..=`atoms`.
fn is_bond_line(line: &str, atoms: usize) -> bool {
    let atom = |a: usize| {
        columns(line, a, a + 3)
            .parse::<usize>()
            .is_ok_and(|i| (1..=atoms).contains(&i))
    };
    line.len() >= 9 && atom(0) && atom(3) && columns(line, 6, 9).parse::<u8>().is_ok()
}

/// Checks the lines between the bond block and `M  END`: property lines
/// only. A bond line there means the counts line declares fewer bonds than
/// the record holds, which a reader that follows the counts drops without a
/// word; a malformed `M  CHG`/`M  ISO`/`M  RAD` line makes RDKit refuse the
/// record (and every file it is copied into).
fn v2000_properties(
    molblock: &[&str],
    first: usize,
    from: usize,
    atoms: usize,
    bonds: usize,
) -> LineResult<()> {
    let at = |k: usize| first + k;
    let last = molblock.len() - 1;
    let mut k = from;
    while k < last {
        let line = molblock[k];
        if is_bond_line(line, atoms) {
            return Err(record_error(
                at(k),
                format!(
                    "`{}` is a bond line, but the counts line (line {}) declares {bonds} bonds, all read \
                     before it: correct the bond count in columns 4-6 of the counts line",
                    excerpt(line.trim_end()),
                    at(3)
                ),
            ));
        }
        let prefix = line.get(..6).unwrap_or(line);
        match prefix {
            "M  CHG" | "M  ISO" | "M  RAD" => atom_values(line, at(k), atoms)?,
            // An alias or a group abbreviation is followed by one line of free text.
            _ if line.starts_with("A  ") || line.starts_with("G  ") => k += 1,
            "S  SKP" => {
                k += columns(line, 6, 9).parse::<usize>().map_err(|_| {
                    record_error(
                        at(k),
                        format!("`{}`: no line count in columns 7-9", excerpt(line)),
                    )
                })?
            }
            _ if line.starts_with("M  ") || line.starts_with("V  ") || line.trim().is_empty() => {}
            _ => {
                return Err(record_error(
                    at(k),
                    format!(
                        "`{}` between the bond block and `M  END` is neither a bond the counts line \
                         declares nor a property line (`M  ...`, `A  `, `G  `, `V  `)",
                        excerpt(line.trim_end())
                    ),
                ))
            }
        }
        k += 1;
    }
    Ok(())
}

/// Checks an `M  CHG`, `M  ISO` or `M  RAD` line in its fixed columns (as
/// RDKit reads it): an entry count 1..=8 in columns 7-9, then that many
/// `aaa vvv` pairs of 4 columns each, atoms in 1..=`atoms`, values in range.
fn atom_values(line: &str, at: usize, atoms: usize) -> LineResult<()> {
    let line = line.trim_end();
    let what = &line[3..6];
    let (range, meaning) = match what {
        "CHG" => (-15..=15, "a charge in -15..=15"),
        "ISO" => (1..=999, "a mass number in 1..=999"),
        _ => (0..=3, "a radical state in 0..=3"),
    };
    let bad = |reason: String| record_error(at, format!("`M  {what}` line `{}`: {reason}", excerpt(line)));
    let n = columns(line, 6, 9)
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=8).contains(n))
        .ok_or_else(|| bad("no entry count 1..=8 in columns 7-9".into()))?;
    if line.len() != 9 + 8 * n {
        return Err(bad(format!(
            "{n} entries take columns 1-{} (`aaa vvv` in 4 columns each), the line has {}",
            9 + 8 * n,
            line.len()
        )));
    }
    for e in 0..n {
        let a = 9 + 8 * e;
        let atom = columns(line, a, a + 4);
        if !atom.parse::<usize>().is_ok_and(|i| (1..=atoms).contains(&i)) {
            return Err(bad(format!(
                "entry {}: `{}` is not an atom number in 1..={atoms}",
                e + 1,
                excerpt(atom)
            )));
        }
        let value = columns(line, a + 4, a + 8);
        if !value.parse::<i32>().is_ok_and(|v| range.contains(&v)) {
            return Err(bad(format!(
                "entry {}: `{}` is not {meaning}",
                e + 1,
                excerpt(value)
            )));
        }
    }
    Ok(())
}

/// The `M  V30` lines of a block with continuation lines (ending in `-`)
/// joined: `(index of the first line, text after "M  V30 ")`.
fn v30_lines(molblock: &[&str], first: usize) -> LineResult<Vec<(usize, String)>> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut continued = false;
    for (k, line) in molblock.iter().enumerate() {
        let Some(body) = line.strip_prefix("M  V30 ") else {
            if continued {
                return Err(record_error(
                    first + k,
                    "a V3000 line ends in `-` but no `M  V30` line continues it".into(),
                ));
            }
            continue;
        };
        let (body, more) = match body.trim_end().strip_suffix('-') {
            Some(b) => (b, true),
            None => (body.trim_end(), false),
        };
        match (continued, out.last_mut()) {
            (true, Some(last)) => last.1.push_str(body),
            _ => out.push((k, body.to_owned())),
        }
        continued = more;
    }
    Ok(out)
}

fn v3000_table(molblock: &[&str], first: usize) -> LineResult<Table> {
    let at = |k: usize| first + k;
    let v30 = v30_lines(molblock, first)?;
    let mut table = Table {
        species: Vec::new(),
        pos: Vec::new(),
        bonds: Vec::new(),
        atom_at: Vec::new(),
    };
    let mut declared: Option<(usize, usize, usize)> = None;
    let mut ids: Vec<(String, usize)> = Vec::new();
    let mut block = "";
    let mut bond_count = 0;
    // Open `BEGIN` blocks (name, index): a record cut before `END CTAB` has
    // lost whatever came after, and RDKit refuses it.
    let mut open: Vec<(&str, usize)> = Vec::new();
    let mut ctab = false;
    for (k, body) in &v30 {
        let tokens: Vec<&str> = body.split_whitespace().collect();
        match tokens.as_slice() {
            ["BEGIN", name, ..] => {
                ctab |= *name == "CTAB";
                open.push((name, *k));
                block = if *name == "ATOM" || *name == "BOND" {
                    name
                } else {
                    ""
                }
            }
            ["END", name, ..] => {
                match open.pop() {
                    Some((begun, _)) if begun == *name => {}
                    Some((begun, b)) => {
                        return Err(record_error(
                            at(*k),
                            format!(
                                "`END {}` closes `BEGIN {}` of line {}",
                                excerpt(name),
                                excerpt(begun),
                                at(b)
                            ),
                        ))
                    }
                    None => {
                        return Err(record_error(
                            at(*k),
                            format!("`END {}` without its `BEGIN`", excerpt(name)),
                        ))
                    }
                }
                block = "";
            }
            ["COUNTS", atoms, bonds, ..] => {
                let n = |t: &str| {
                    t.parse::<usize>()
                        .map_err(|_| record_error(at(*k), format!("COUNTS `{}` is not a count", excerpt(t))))
                };
                declared = Some((n(atoms)?, n(bonds)?, *k));
            }
            _ if block == "ATOM" => {
                if !molblock[*k].is_ascii() || molblock[*k].split_whitespace().count() < 8 {
                    return Err(record_error(
                        at(*k),
                        format!(
                            "atom line `{}` is not `M  V30 index type x y z map ...` on one line",
                            excerpt(molblock[*k])
                        ),
                    ));
                }
                let x = coordinate(tokens[2], at(*k))?;
                let y = coordinate(tokens[3], at(*k))?;
                let z = coordinate(tokens[4], at(*k))?;
                table.species.push(element(tokens[1], at(*k))?);
                table.pos.push([x, y, z]);
                table.atom_at.push(*k);
                ids.push((tokens[0].to_owned(), ids.len()));
            }
            _ if block == "BOND" => {
                if tokens.len() < 4 {
                    return Err(record_error(
                        at(*k),
                        format!("bond line `{}` is not `index type atom1 atom2`", excerpt(body)),
                    ));
                }
                let index = |t: &str| {
                    ids.iter()
                        .find(|(id, _)| id == t)
                        .map(|&(_, i)| i)
                        .ok_or_else(|| {
                            record_error(
                                at(*k),
                                format!("bond atom `{}` is no atom of this record", excerpt(t)),
                            )
                        })
                };
                let (i, j) = (index(tokens[2])?, index(tokens[3])?);
                let order = bond_order(tokens[1], at(*k))?;
                table.bond(i, j, order, at(*k))?;
                bond_count += 1;
            }
            _ => {}
        }
    }
    if let Some((name, b)) = open.first() {
        return Err(record_error(
            at(*b),
            format!(
                "`M  V30 BEGIN {}` is never closed: no `M  V30 END {}` before `M  END` (a cut V3000 record)",
                excerpt(name),
                excerpt(name)
            ),
        ));
    }
    if !ctab {
        return Err(record_error(
            at(3),
            "a V3000 record without `M  V30 BEGIN CTAB`".into(),
        ));
    }
    match declared {
        None => Err(record_error(
            at(3),
            "a V3000 record without an `M  V30 COUNTS` line".into(),
        )),
        Some((atoms, bonds, k)) if atoms != table.species.len() || bonds != bond_count => Err(record_error(
            at(k),
            format!(
                "COUNTS declares {atoms} atoms and {bonds} bonds, the record has {} and {bond_count}",
                table.species.len()
            ),
        )),
        Some(_) => Ok(table),
    }
}

/// Data items: a `>` line naming `<name>`, then value lines up to a blank line.
fn data_items(lines: &[&str], first: usize) -> LineResult<Vec<(String, String)>> {
    let mut items = Vec::new();
    let mut k = 0;
    while k < lines.len() {
        let line = lines[k];
        if line.trim().is_empty() {
            k += 1;
            continue;
        }
        if !line.starts_with('>') {
            return Err(record_error(
                first + k,
                format!(
                    "`{}` after `M  END` is not a data item (`> <name>`)",
                    excerpt(line)
                ),
            ));
        }
        let name = line
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map_or("", |(name, _)| name);
        let mut value: Vec<&str> = Vec::new();
        k += 1;
        while k < lines.len() && !lines[k].trim().is_empty() {
            value.push(lines[k]);
            k += 1;
        }
        items.push((name.to_owned(), value.join("\n")));
    }
    Ok(items)
}
