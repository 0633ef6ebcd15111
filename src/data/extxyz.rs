//! Extended XYZ as ASE writes it, gzip read transparently.
//!
//! One frame per structure: an atom-count line, a comment line of `key=value`
//! pairs (values may be double-quoted), then one line per atom with the
//! columns the `Properties` key declares. physcon reads the keys `mol_id`
//! (required), `smiles`, `level`, `energy` (eV) and `bonds` (flat `i j order`
//! triples, 0-based, aromatic = 4), and the columns `species:S:1` (or
//! `Z:I:1`), `pos:R:3` (Å) and `forces:R:3` (eV/Å); other keys and columns
//! are skipped.

use std::path::Path;

use crate::data::elements::{atomic_number, symbol};
use crate::data::excerpt;
use crate::data::files::{read_text, write_text};
use crate::data::frame::Frame;
use crate::error::{Error, ParseError, Result};

/// Reads every frame of an extended-XYZ file, gzip-compressed or not (told by its magic bytes).
///
/// All or nothing: a malformed file gives an error with the file and line.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Parse`] for malformed content.
pub fn read_extxyz(path: impl AsRef<Path>) -> Result<Vec<Frame>> {
    let path = path.as_ref();
    let text = read_text(path)?;
    parse_extxyz(&text, path)
}

/// Parses extended-XYZ text; `path` only names the source in errors.
///
/// # Errors
/// [`Error::Parse`] with the 1-based line of the first fault.
pub fn parse_extxyz(text: &str, path: &Path) -> Result<Vec<Frame>> {
    parse_extxyz_frames(text, path)
        .into_iter()
        .map(|(_, frame)| frame)
        .collect()
}

/// Parses every frame of extended-XYZ text on its own: `(1-based line of its
/// atom count, the frame or the error naming the line of its fault)`, in file
/// order. A fault inside a frame leaves the frames after it readable (its
/// atom count says where the next one starts); an atom count that cannot be
/// read, or a file that ends inside a frame, ends the list with its error,
/// since nothing after it can be placed. [`ExtxyzFrames`] reads the same
/// frames one at a time.
pub fn parse_extxyz_frames(text: &str, path: &Path) -> Vec<(usize, Result<Frame>)> {
    // Lines in memory come without an error.
    ExtxyzFrames::new(text.lines().map(Ok::<_, Error>), path)
        .flatten()
        .collect()
}

/// The frames of extended-XYZ lines, one at a time, as [`parse_extxyz_frames`]
/// gives them all: each `Ok((line of its atom count, the frame or its fault))`,
/// holding one frame's lines at a time. `lines` are a file's lines
/// ([`crate::data::TextLines`]) or text's; an error of theirs ends the frames.
#[derive(Debug)]
pub struct ExtxyzFrames<I, S> {
    lines: I,
    /// A line read ahead (the one after a frame's last atom line), not yet taken.
    ahead: Option<S>,
    path: std::path::PathBuf,
    /// 0-based index of the next line to take.
    next: usize,
    done: bool,
}

impl<I, S> ExtxyzFrames<I, S>
where
    I: Iterator<Item = Result<S>>,
    S: AsRef<str>,
{
    /// The frames of `lines`; `path` only names the source in errors.
    pub fn new(lines: I, path: &Path) -> Self {
        Self {
            lines,
            ahead: None,
            path: path.to_owned(),
            next: 0,
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

    /// The next line, counted.
    fn take(&mut self) -> Result<Option<S>> {
        let line = match self.ahead.take() {
            Some(line) => Some(line),
            None => self.lines.next().transpose()?,
        };
        self.next += usize::from(line.is_some());
        Ok(line)
    }

    /// The next line without taking it.
    fn peek(&mut self) -> Result<Option<&S>> {
        if self.ahead.is_none() {
            self.ahead = self.lines.next().transpose()?;
        }
        Ok(self.ahead.as_ref())
    }

    fn fail(&self, line: usize, kind: ParseError) -> Error {
        Error::Parse {
            path: self.path.clone(),
            line,
            kind,
        }
    }

    /// The next frame: `Ok(None)` at the end, `Err` for the lines' own error.
    fn frame(&mut self) -> Result<Option<(usize, Result<Frame>)>> {
        let header = self.next + 1;
        let Some(first) = self.take()? else {
            return Ok(None);
        };
        if first.as_ref().trim().is_empty() {
            // Only blank lines after the last frame are no frame.
            loop {
                match self.take()? {
                    None => return Ok(None),
                    Some(l) if l.as_ref().trim().is_empty() => {}
                    Some(_) => break,
                }
            }
        }
        let end = |frame: Error| {
            // Nothing after this fault can be placed.
            Ok(Some((header, Err(frame))))
        };
        let Ok(count) = first.as_ref().trim().parse::<usize>() else {
            self.done = true;
            return end(self.fail(header, ParseError::AtomCount(excerpt(first.as_ref().trim()))));
        };
        let truncated = |found: usize| ParseError::Truncated {
            expected: count,
            found,
        };
        let Some(comment) = self.take()? else {
            self.done = true;
            return end(self.fail(header, truncated(0)));
        };
        let mut atoms: Vec<S> = Vec::new();
        while atoms.len() < count {
            match self.take()? {
                Some(line) => atoms.push(line),
                None => {
                    self.done = true;
                    return end(self.fail(header, truncated(atoms.len())));
                }
            }
        }
        let atom_lines: Vec<&str> = atoms.iter().map(AsRef::as_ref).collect();
        let mut frame = parse_frame(count, comment.as_ref(), &atom_lines, header + 1)
            .map_err(|(line, kind)| self.fail(line, kind));
        // Atom lines after the frame's last one: the count is short, and the frame
        // would be read cut to its first atoms. The whole run is this frame's.
        let next = self.next + 1;
        let (mut extra, mut first_extra) = (0, None);
        while let Some(line) = self.peek()? {
            if !is_atom_line(line.as_ref(), comment.as_ref()) {
                break;
            }
            let line = self.take()?;
            extra += 1;
            if first_extra.is_none() {
                first_extra = line;
            }
        }
        if let Some(line) = first_extra {
            frame = Err(self.fail(
                next,
                ParseError::Record(format!(
                    "`{}` is an atom line, but the atom count (line {header}) declares {count} atoms, all \
                     read before it ({} atom lines follow the comment line): correct the atom count",
                    excerpt(line.as_ref().trim_end()),
                    count + extra
                )),
            ));
        }
        Ok(Some((header, frame)))
    }
}

impl<I, S> Iterator for ExtxyzFrames<I, S>
where
    I: Iterator<Item = Result<S>>,
    S: AsRef<str>,
{
    type Item = Result<(usize, Result<Frame>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let frame = self.frame();
        if !matches!(frame, Ok(Some(_))) {
            self.done = true;
        }
        frame.transpose()
    }
}

/// Whether `line` reads as an atom line of the frame whose comment line is
/// `comment`: the columns its `Properties` declare (or, where they cannot be
/// read, a symbol and three numbers), the species an element and the
/// positions numbers. An atom count never is one.
fn is_atom_line(line: &str, comment: &str) -> bool {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let layout = parse_comment(comment).ok().and_then(|pairs| {
        let properties = pairs.iter().find(|(k, _)| k == "Properties")?;
        let columns = parse_properties(&properties.1).ok()?;
        let find = |name: &str, kind: char, width: usize| {
            columns
                .iter()
                .find(|c| c.name == name && c.kind == kind && c.width == width)
                .map(|c| c.offset)
        };
        let species = find("species", 'S', 1)
            .map(|o| (o, true))
            .or_else(|| find("Z", 'I', 1).map(|o| (o, false)))?;
        let width = columns.last().map_or(0, |c| c.offset + c.width);
        Some((width, species, find("pos", 'R', 3)?))
    });
    let (width, (species, symbolic), pos) = layout.unwrap_or((fields.len().max(4), (0, true), 1));
    let element = |f: &str| {
        if symbolic {
            atomic_number(f).is_some()
        } else {
            f.parse::<i64>().is_ok_and(|z| symbol(z).is_some())
        }
    };
    fields.len() == width
        && width >= 4
        && element(fields[species])
        && fields[pos..pos + 3].iter().all(|f| f.parse::<f64>().is_ok())
}

type LineResult<T> = std::result::Result<T, (usize, ParseError)>;

/// One column block of `Properties`.
struct Column {
    name: String,
    kind: char,
    width: usize,
    /// Index of its first field on an atom line.
    offset: usize,
}

fn parse_frame(count: usize, comment: &str, atoms: &[&str], comment_line: usize) -> LineResult<Frame> {
    let at = |kind| (comment_line, kind);
    let pairs = parse_comment(comment).map_err(at)?;
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let properties = get("Properties").ok_or(at(ParseError::MissingKey("Properties")))?;
    let columns = parse_properties(properties).map_err(at)?;
    let offset_of = |name: &str, kind: char, width: usize| -> Option<usize> {
        columns
            .iter()
            .find(|c| c.name == name && c.kind == kind && c.width == width)
            .map(|c| c.offset)
    };
    let (species_col, species_is_symbol) = match (offset_of("species", 'S', 1), offset_of("Z", 'I', 1)) {
        (Some(o), _) => (o, true),
        (None, Some(o)) => (o, false),
        (None, None) => {
            return Err(at(ParseError::Header(
                "Properties has no species:S:1 or Z:I:1 column".into(),
            )))
        }
    };
    let pos_col =
        offset_of("pos", 'R', 3).ok_or(at(ParseError::Header("Properties has no pos:R:3 column".into())))?;
    let forces_col = offset_of("forces", 'R', 3);
    let width = columns.last().map_or(0, |c| c.offset + c.width);

    let mut species = Vec::with_capacity(count);
    let mut pos = Vec::with_capacity(count);
    let mut forces = forces_col.map(|_| Vec::with_capacity(count));
    for (a, line) in atoms.iter().enumerate() {
        let line_no = comment_line + 1 + a;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != width {
            return Err((
                line_no,
                ParseError::Columns {
                    expected: width,
                    got: fields.len(),
                    properties: excerpt(properties),
                },
            ));
        }
        let z = if species_is_symbol {
            atomic_number(fields[species_col])
        } else {
            fields[species_col].parse().ok().filter(|z| symbol(*z).is_some())
        };
        species.push(z.ok_or((line_no, ParseError::UnknownElement(excerpt(fields[species_col]))))?);
        pos.push(vector(&fields[pos_col..pos_col + 3], "pos").map_err(|e| (line_no, e))?);
        if let (Some(col), Some(forces)) = (forces_col, forces.as_mut()) {
            forces.push(vector(&fields[col..col + 3], "forces").map_err(|e| (line_no, e))?);
        }
    }
    let mol_id = get("mol_id")
        .ok_or(at(ParseError::MissingKey("mol_id")))?
        .to_owned();
    let energy = get("energy")
        .map(|v| number(v, "energy"))
        .transpose()
        .map_err(at)?;
    let bonds = get("bonds")
        .map(|v| parse_bonds(v, count))
        .transpose()
        .map_err(at)?
        .unwrap_or_default();
    Ok(Frame {
        mol_id,
        smiles: get("smiles").map(str::to_owned),
        level: get("level").map(str::to_owned),
        energy,
        species,
        pos,
        forces,
        bonds,
    })
}

fn number(text: &str, field: &str) -> std::result::Result<f64, ParseError> {
    let value: f64 = text.parse().map_err(|_| ParseError::Number {
        field: field.to_owned(),
        value: excerpt(text),
    })?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ParseError::NonFinite(field.to_owned()))
    }
}

fn vector(fields: &[&str], field: &str) -> std::result::Result<[f64; 3], ParseError> {
    Ok([
        number(fields[0], field)?,
        number(fields[1], field)?,
        number(fields[2], field)?,
    ])
}

/// `key=value` pairs of a comment line; values may be `"quoted"` (with `\"`
/// and `\\` escapes) or `{braced}`; a bare key means `T`.
fn parse_comment(line: &str) -> std::result::Result<Vec<(String, String)>, ParseError> {
    let mut pairs = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            pairs.push((key, "T".to_owned()));
            continue;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        match chars.peek() {
            Some('"') => {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => value.push(c),
                            None => {
                                return Err(ParseError::Header(format!(
                                    "unterminated quote in `{}`",
                                    excerpt(&key)
                                )))
                            }
                        },
                        Some(c) => value.push(c),
                        None => {
                            return Err(ParseError::Header(format!(
                                "unterminated quote in `{}`",
                                excerpt(&key)
                            )))
                        }
                    }
                }
            }
            Some('{') => {
                chars.next();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) => value.push(c),
                        None => {
                            return Err(ParseError::Header(format!(
                                "unterminated brace in `{}`",
                                excerpt(&key)
                            )))
                        }
                    }
                }
            }
            _ => {
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    value.push(c);
                }
            }
        }
        if key.is_empty() {
            return Err(ParseError::Header("a value without a key".into()));
        }
        pairs.push((key, value));
    }
}

fn parse_properties(text: &str) -> std::result::Result<Vec<Column>, ParseError> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() % 3 != 0 {
        return Err(ParseError::Header(format!(
            "Properties `{}` is not name:type:count triples",
            excerpt(text)
        )));
    }
    let mut offset = 0usize;
    let mut columns = Vec::with_capacity(parts.len() / 3);
    for c in parts.chunks(3) {
        let kind = match c[1] {
            "S" | "R" | "I" | "L" => c[1].chars().next().unwrap_or('S'),
            other => {
                return Err(ParseError::Header(format!(
                    "unknown column type `{}` in Properties",
                    excerpt(other)
                )))
            }
        };
        let width: usize = c[2].parse().ok().filter(|w| *w > 0).ok_or_else(|| {
            ParseError::Header(format!("bad column count `{}` in Properties", excerpt(c[2])))
        })?;
        // Declared counts come from the file: their sum must not wrap, or the
        // column offsets would point outside the atom lines.
        let end = offset.checked_add(width).ok_or_else(|| {
            ParseError::Header(format!(
                "Properties column counts add up to more than {}",
                usize::MAX
            ))
        })?;
        columns.push(Column {
            name: c[0].to_owned(),
            kind,
            width,
            offset,
        });
        offset = end;
    }
    Ok(columns)
}

fn parse_bonds(text: &str, atoms: usize) -> std::result::Result<Vec<(usize, usize, u8)>, ParseError> {
    let values = text
        .split_whitespace()
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ParseError::Bonds(format!("`{}` is not an integer", excerpt(v))))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if values.len() % 3 != 0 {
        return Err(ParseError::Bonds(format!(
            "{} entries, not `i j order` triples",
            values.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    values
        .chunks(3)
        .map(|b| {
            let index = |v: i64| {
                usize::try_from(v)
                    .ok()
                    .filter(|&v| v < atoms)
                    .ok_or_else(|| ParseError::Bonds(format!("atom index {v} outside 0..{atoms}")))
            };
            let (i, j) = (index(b[0])?, index(b[1])?);
            if i == j {
                return Err(ParseError::Bonds(format!("atom {i} bonded to itself")));
            }
            if !seen.insert((i.min(j), i.max(j))) {
                return Err(ParseError::Bonds(format!("atoms {i} and {j} bonded twice")));
            }
            let order = u8::try_from(b[2])
                .ok()
                .filter(|o| (1..=4).contains(o))
                .ok_or_else(|| ParseError::Bonds(format!("bond order {} outside 1..=4", b[2])))?;
            Ok((i, j, order))
        })
        .collect()
}

/// Formats frames as extended XYZ (ASE's layout; numbers in Rust's shortest
/// exact form, so reading back gives the same `f64`s).
///
/// # Errors
/// [`Error::InvalidArgument`] for a frame whose lengths disagree, an unknown
/// atomic number, a non-finite number or a bad bond.
pub fn format_extxyz(frames: &[Frame]) -> Result<String> {
    format_extxyz_with_info(frames, &[])
}

/// The comment-line keys [`format_extxyz`] writes itself.
const OWN_KEYS: [&str; 7] = [
    "Properties",
    "mol_id",
    "smiles",
    "level",
    "bonds",
    "energy",
    "pbc",
];

/// Formats frames as [`format_extxyz`] does, with extra comment-line keys:
/// `info[f]` holds frame `f`'s `(key, value)` pairs, written after its own keys
/// (values quoted where ASE needs it). `info` may be empty (no extra keys) or
/// hold one list per frame. ASE reads them into `atoms.info`.
///
/// # Errors
/// Those of [`format_extxyz`]; [`Error::InvalidArgument`] (`info`) for an
/// `info` of neither length, a key that is not an identifier
/// (`[A-Za-z_][A-Za-z0-9_]*`), or a key the frame writes itself.
pub fn format_extxyz_with_info(frames: &[Frame], info: &[Vec<(String, String)>]) -> Result<String> {
    if !info.is_empty() && info.len() != frames.len() {
        return Err(Error::InvalidArgument {
            arg: "info",
            reason: format!("{} lists of keys for {} frames", info.len(), frames.len()),
        });
    }
    let identifier = |k: &str| {
        k.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if let Some((key, _)) = info
        .iter()
        .flatten()
        .find(|(k, _)| !identifier(k) || OWN_KEYS.contains(&k.as_str()))
    {
        return Err(Error::InvalidArgument {
            arg: "info",
            reason: format!("key `{key}` is not an identifier, or is one format_extxyz writes itself"),
        });
    }
    let mut out = String::new();
    for (f, frame) in frames.iter().enumerate() {
        let bad = |reason: String| Error::InvalidArgument {
            arg: "frames",
            reason: format!("frame {f}: {reason}"),
        };
        let n = frame.num_atoms();
        if frame.pos.len() != n || frame.forces.as_ref().is_some_and(|x| x.len() != n) {
            return Err(bad("species, pos and forces lengths differ".into()));
        }
        let finite = |v: &[f64; 3]| v.iter().all(|x| x.is_finite());
        if !frame.pos.iter().all(finite)
            || !frame.forces.iter().flatten().all(finite)
            || !frame.energy.is_none_or(f64::is_finite)
        {
            return Err(bad("non-finite number".into()));
        }
        if let Some(&(i, j, o)) = frame
            .bonds
            .iter()
            .find(|&&(i, j, o)| i >= n || j >= n || i == j || !(1..=4).contains(&o))
        {
            return Err(bad(format!("bad bond ({i}, {j}, {o})")));
        }
        let mut header = String::from("Properties=species:S:1:pos:R:3");
        if frame.forces.is_some() {
            header.push_str(":forces:R:3");
        }
        header.push_str(&format!(" mol_id={}", quote(&frame.mol_id)));
        for (key, value) in [("smiles", &frame.smiles), ("level", &frame.level)] {
            if let Some(value) = value {
                header.push_str(&format!(" {key}={}", quote(value)));
            }
        }
        if !frame.bonds.is_empty() {
            let flat: Vec<String> = frame
                .bonds
                .iter()
                .map(|(i, j, o)| format!("{i} {j} {o}"))
                .collect();
            header.push_str(&format!(" bonds=\"{}\"", flat.join(" ")));
        }
        if let Some(e) = frame.energy {
            header.push_str(&format!(" energy={e:?}"));
        }
        for (key, value) in info.get(f).into_iter().flatten() {
            header.push_str(&format!(" {key}={}", quote(value)));
        }
        header.push_str(" pbc=\"F F F\"");
        out.push_str(&format!("{n}\n{header}\n"));
        for a in 0..n {
            let sym =
                symbol(frame.species[a]).ok_or_else(|| bad(format!("atomic number {}", frame.species[a])))?;
            out.push_str(&format!("{sym:<2}"));
            let forces = frame.forces.as_ref().map(|f| f[a]);
            for x in frame.pos[a].iter().chain(forces.iter().flatten()) {
                out.push_str(&format!(" {x:>16?}"));
            }
            out.push('\n');
        }
    }
    Ok(out)
}

fn quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
    {
        value.to_owned()
    } else {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Writes frames to `path` atomically: a temporary file beside it, then a
/// rename, so a crash never leaves a half-written file. A path ending in
/// `.gz` is gzip-compressed.
///
/// # Errors
/// Those of [`format_extxyz`]; [`Error::Io`] for the file system.
pub fn write_extxyz(path: impl AsRef<Path>, frames: &[Frame]) -> Result<()> {
    write_text(path.as_ref(), &format_extxyz(frames)?)
}
