//! The file side of every reader and writer: text in (gzip told by its magic
//! bytes, a size limit, binary refused, faults at their line), whole
//! ([`read_text`]) or line by line in bounded memory ([`TextLines`]), and out
//! (gzip by extension, atomic: a temporary file, fsync, rename, fsync of the
//! folder), whole ([`write_text`], [`write_atomic`]) or piece by piece
//! ([`TextFile`], [`AtomicFile`]).

use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::error::{Error, ParseError, Result};

/// The most bytes [`read_text`] and [`TextLines`] take from one file, after
/// decompression: a small gzip file can expand without bound (a "gzip bomb"),
/// and [`read_text`] holds the text in memory.
pub const MAX_TEXT_BYTES: u64 = 4 << 30;

/// The text of a data file: gzip (told by its magic bytes) decompressed, a
/// UTF-8 byte-order mark dropped; binary content refused.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Parse`] for a
/// truncated gzip stream, text that is not UTF-8, NUL bytes, or more than
/// [`MAX_TEXT_BYTES`] of text, at the line where the fault starts.
pub fn read_text(path: &Path) -> Result<String> {
    read_text_at_most(path, MAX_TEXT_BYTES)
}

/// A content fault of `path` at `line`.
fn content_error(path: &Path, line: usize, what: &str) -> Error {
    Error::Parse {
        path: path.to_owned(),
        line,
        kind: ParseError::Content(what.to_owned()),
    }
}

/// The message for text beyond `limit` bytes (`what`: "the file holds", "the gzip stream expands to").
fn too_long_message(what: &str, limit: u64) -> String {
    format!("{what} more than {limit} bytes of text; split it into smaller files")
}

/// The message for a gzip stream that ends early or is damaged.
fn gzip_message(e: &std::io::Error) -> String {
    format!("the gzip stream is damaged or cut short ({e})")
}

fn lines_in(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count() + 1
}

fn read_text_at_most(path: &Path, limit: u64) -> Result<String> {
    let fail = |line: usize, what: &str| content_error(path, line, what);
    let too_long = |bytes: &[u8], what: &str| {
        // The line where the limit falls.
        fail(lines_in(&bytes[..limit as usize]), &too_long_message(what, limit))
    };
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut raw = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut raw))
        .map_err(io)?;
    if raw.len() as u64 > limit {
        return Err(too_long(&raw, "the file holds"));
    }
    let bytes = if raw.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::new();
        // What was decompressed before the fault stays in `out`: it locates the fault.
        if let Err(e) = MultiGzDecoder::new(raw.as_slice())
            .take(limit + 1)
            .read_to_end(&mut out)
        {
            return Err(fail(lines_in(&out), &gzip_message(&e)));
        }
        if out.len() as u64 > limit {
            return Err(too_long(&out, "the gzip stream expands to"));
        }
        out
    } else {
        raw
    };
    let mut scan = Scan::default();
    scan.feed(&bytes);
    scan.finish(path)?;
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        fail(lines_in(valid), NOT_UTF8)
    })?;
    // Windows editors put a byte-order mark first; it is not part of the first line's content.
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const UTF8_BOM: &[u8] = "\u{feff}".as_bytes();
const NOT_UTF8: &str = "not UTF-8 text";
/// The bytes [`wide_encoding`] looks at.
const HEAD: usize = 512;

/// What makes bytes no text file, gathered in one pass over them in pieces
/// (each piece whole lines, the last perhaps without its line feed), in bounded
/// memory: the first bytes (for the encoding), the line of the first NUL byte,
/// of the first byte that is not UTF-8 and of the first lone carriage return,
/// and how many lone carriage returns and line feeds there are.
/// [`Scan::finish`] judges them in one order, whether the text was read whole
/// or line by line, so both give the same message for the same file.
#[derive(Debug, Default)]
struct Scan {
    head: Vec<u8>,
    /// Line feeds so far.
    feeds: usize,
    nul: Option<usize>,
    not_utf8: Option<usize>,
    first_lone_cr: Option<usize>,
    lone_crs: usize,
    /// The line of a carriage return that ended the last piece: lone unless the next byte is CR or LF.
    pending_cr: Option<usize>,
}

impl Scan {
    fn feed(&mut self, piece: &[u8]) {
        if piece.is_empty() {
            return;
        }
        if self.head.len() < HEAD {
            let n = (HEAD - self.head.len()).min(piece.len());
            self.head.extend_from_slice(&piece[..n]);
        }
        if let Some(line) = self.pending_cr.take() {
            if !matches!(piece[0], b'\n' | b'\r') {
                self.lone_cr(line);
            }
        }
        if self.not_utf8.is_none() {
            if let Err(e) = std::str::from_utf8(piece) {
                self.not_utf8 = Some(self.feeds + lines_in(&piece[..e.valid_up_to()]));
            }
        }
        let mut line = self.feeds + 1;
        for (k, &b) in piece.iter().enumerate() {
            match b {
                b'\n' => line += 1,
                b'\r' => match piece.get(k + 1) {
                    Some(b'\n' | b'\r') => {}
                    Some(_) => self.lone_cr(line),
                    None => self.pending_cr = Some(line),
                },
                0 if self.nul.is_none() => self.nul = Some(line),
                _ => {}
            }
        }
        self.feeds = line - 1;
    }

    fn lone_cr(&mut self, line: usize) {
        self.lone_crs += 1;
        self.first_lone_cr.get_or_insert(line);
    }

    /// The fault of the whole text, if any: a wide encoding, then NUL bytes,
    /// then CR-only line endings, then bytes that are not UTF-8.
    fn finish(&mut self, path: &Path) -> Result<()> {
        if let Some(line) = self.pending_cr.take() {
            self.lone_cr(line);
        }
        let fail = |line: usize, what: &str| Err(content_error(path, line, what));
        if let Some(encoding) = wide_encoding(&self.head) {
            let from = if encoding.contains("UTF-32") {
                "UTF-32"
            } else {
                "UTF-16"
            };
            return fail(
                1,
                &format!("{encoding}: save it as UTF-8 (e.g. `iconv -f {from} -t UTF-8 in > out`)"),
            );
        }
        if let Some(line) = self.nul {
            return fail(line, "NUL byte: this is a binary file, not text");
        }
        // Lines end in a lone carriage return (classic Mac OS): no line feed at
        // all, or more lone carriage returns than line feeds. A stray carriage
        // return inside a file of LF or CRLF lines is left to the reader.
        if let (Some(line), true) = (self.first_lone_cr, self.lone_crs > self.feeds) {
            return fail(
                line,
                "CR-only (classic Mac) line endings: the lines end in a carriage return without a line \
                 feed; convert to LF (e.g. `tr '\\r' '\\n' < in > out`, or your editor's \"Unix (LF)\" line endings)",
            );
        }
        if let Some(line) = self.not_utf8 {
            return fail(line, NOT_UTF8);
        }
        Ok(())
    }
}

/// The encoding of text stored two or four bytes a character (UTF-16 or
/// UTF-32, as Windows tools save "Unicode" text), told by its byte-order mark
/// or, without one, by NUL bytes in every other position of ASCII text.
fn wide_encoding(bytes: &[u8]) -> Option<String> {
    // UTF-32's marks begin with UTF-16's: look for them first.
    let marks: [(&[u8], &str); 4] = [
        (
            &[0xff, 0xfe, 0, 0],
            "UTF-32 (byte-order mark FF FE 00 00, little-endian)",
        ),
        (
            &[0, 0, 0xfe, 0xff],
            "UTF-32 (byte-order mark 00 00 FE FF, big-endian)",
        ),
        (&[0xff, 0xfe], "UTF-16 (byte-order mark FF FE, little-endian)"),
        (&[0xfe, 0xff], "UTF-16 (byte-order mark FE FF, big-endian)"),
    ];
    if let Some((_, name)) = marks.iter().find(|(m, _)| bytes.starts_with(m)) {
        return Some(format!("the file is {name} text"));
    }
    // Without a mark: ASCII text in UTF-16 has a NUL beside every character.
    let head = &bytes[..bytes.len().min(HEAD) & !1];
    let pairs = || head.chunks_exact(2);
    let ascii = |b: u8| b.is_ascii_graphic() || b" \t\r\n".contains(&b);
    let wide = |order: &str, nul: usize| {
        (head.len() >= 4 && pairs().all(|p| p[nul] == 0 && ascii(p[1 - nul])))
            .then(|| format!("the file is UTF-16 text without a byte-order mark ({order})"))
    };
    wide("little-endian", 1).or_else(|| wide("big-endian", 0))
}

/// The lines of a text file, read one at a time in bounded memory (a line at a
/// time, whatever the file's size): gzip told by its magic bytes, a UTF-8
/// byte-order mark dropped, lines split as [`str::lines`] splits them (at `\n`
/// or `\r\n`).
///
/// The file is judged as [`read_text`] judges it, with the same messages:
/// more than [`MAX_TEXT_BYTES`] of text, or a damaged gzip stream, ends the
/// lines with that error where it is found; a fault of the text as a whole
/// (UTF-16 or UTF-32, NUL bytes, CR-only line endings, bytes that are not
/// UTF-8) is an error in place of the end, once every line has been read (a
/// line that is not UTF-8 comes before it with its faulty bytes replaced by
/// U+FFFD). So reading every line, then acting on them only when the end came
/// without an error, is [`read_text`] in bounded memory.
pub struct TextLines {
    path: PathBuf,
    source: Box<dyn BufRead>,
    gzip: bool,
    limit: u64,
    /// Bytes of text read so far.
    read: u64,
    scan: Scan,
    buf: Vec<u8>,
    done: bool,
}

impl std::fmt::Debug for TextLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextLines")
            .field("path", &self.path)
            .field("gzip", &self.gzip)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl TextLines {
    /// Opens `path`; nothing but its first two bytes is read yet.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or read; [`Error::Parse`]
    /// for a gzip file larger than [`MAX_TEXT_BYTES`] itself.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, MAX_TEXT_BYTES, 64 << 10)
    }

    /// [`Self::open`] with a limit and a read buffer of `capacity` bytes (the
    /// lines do not depend on it).
    #[doc(hidden)]
    pub fn open_with(path: &Path, limit: u64, capacity: usize) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = fs::File::open(path).map_err(io)?;
        let mut magic = Vec::with_capacity(2);
        (&mut file).take(2).read_to_end(&mut magic).map_err(io)?;
        let gzip = magic == GZIP_MAGIC;
        if gzip {
            // As read_text: a compressed file over the limit is refused before it is decompressed.
            let size = file.metadata().map_err(io)?.len();
            if size > limit {
                file.seek(SeekFrom::Start(0)).map_err(io)?;
                let mut counted = BufReader::new(file.take(limit));
                let (mut feeds, mut piece) = (0, Vec::new());
                while counted.read_until(b'\n', &mut piece).map_err(io)? > 0 {
                    feeds += usize::from(piece.ends_with(b"\n"));
                    piece.clear();
                }
                return Err(content_error(
                    path,
                    feeds + 1,
                    &too_long_message("the file holds", limit),
                ));
            }
        }
        let raw = std::io::Cursor::new(magic).chain(file);
        let source: Box<dyn BufRead> = if gzip {
            Box::new(BufReader::with_capacity(
                capacity,
                MultiGzDecoder::new(raw).take(limit + 1),
            ))
        } else {
            Box::new(BufReader::with_capacity(capacity, raw.take(limit + 1)))
        };
        Ok(Self {
            path: path.to_owned(),
            source,
            gzip,
            limit,
            read: 0,
            scan: Scan::default(),
            buf: Vec::new(),
            done: false,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of text read so far (after decompression).
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// The next line (without its `\n` or `\r\n`), `None` at the end of a sound file.
    ///
    /// # Errors
    /// As [`read_text`], each once, after which there are no more lines.
    pub fn next_line(&mut self) -> Result<Option<String>> {
        if self.done {
            return Ok(None);
        }
        let result = self.read_line();
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn read_line(&mut self) -> Result<Option<String>> {
        loop {
            self.buf.clear();
            let n = match self.source.read_until(b'\n', &mut self.buf) {
                Ok(n) => n,
                Err(e) if self.gzip => {
                    // The line the decompressed text had reached.
                    return Err(content_error(&self.path, self.scan.feeds + 1, &gzip_message(&e)));
                }
                Err(source) => {
                    return Err(Error::Io {
                        path: self.path.clone(),
                        source,
                    })
                }
            };
            if n == 0 {
                self.scan.finish(&self.path)?;
                return Ok(None);
            }
            let before = self.read;
            self.read += n as u64;
            if self.read > self.limit {
                let within = (self.limit - before) as usize;
                let what = if self.gzip {
                    "the gzip stream expands to"
                } else {
                    "the file holds"
                };
                return Err(content_error(
                    &self.path,
                    self.scan.feeds + lines_in(&self.buf[..within]),
                    &too_long_message(what, self.limit),
                ));
            }
            self.scan.feed(&self.buf);
            // As str::lines: `\n` ends a line, and a `\r` before it goes with it.
            let mut line = &self.buf[..];
            if let Some(l) = line.strip_suffix(b"\n") {
                line = l.strip_suffix(b"\r").unwrap_or(l);
            }
            if before == 0 {
                // A byte-order mark is no part of the first line; alone, it is no line at all.
                if self.buf == UTF8_BOM {
                    continue;
                }
                line = line.strip_prefix(UTF8_BOM).unwrap_or(line);
            }
            return Ok(Some(String::from_utf8_lossy(line).into_owned()));
        }
    }
}

impl Iterator for TextLines {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_line().transpose()
    }
}

/// Writes `text` through [`write_atomic`], gzip-compressed when `path` ends in `.gz`.
///
/// # Errors
/// [`Error::Io`] naming `path`.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    let mut file = TextFile::create(path)?;
    file.write(text)?;
    file.commit()
}

/// The temporary file [`write_atomic`] writes beside `path`: `.physcon-<hash>.tmp`,
/// 30 bytes whatever the length of the name (a legal name of 255 bytes
/// leaves no room for a suffix): a hash of the name, this process's id and a
/// count of the writes it made, so that two writers never share one.
fn temporary_beside(path: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::hash::DefaultHasher::new();
    path.file_name().hash(&mut hasher);
    std::process::id().hash(&mut hasher);
    WRITES.fetch_add(1, Ordering::Relaxed).hash(&mut hasher);
    path.with_file_name(format!(".physcon-{:016x}.tmp", hasher.finish()))
}

fn io_error(p: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: p.to_owned(),
        source,
    }
}

/// Writes `bytes` to a temporary file beside `path` (a short name of its own, so
/// any name the file system takes for `path` works), syncs it, renames it over
/// `path` and syncs the folder: a crash leaves the old file or the new one, never a part.
///
/// # Errors
/// [`Error::Io`] naming the file that failed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).map_err(io_error(file.temporary()))?;
    file.commit()
}

/// A file written piece by piece as [`write_atomic`] writes one whole: into a
/// temporary file beside `path`, put in place by [`AtomicFile::commit`].
/// Dropped without a commit (an error on the way), the temporary file is
/// deleted and `path` is as it was: a failure leaves nothing behind.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    /// `None` once committed.
    file: Option<fs::File>,
}

impl AtomicFile {
    /// Creates the temporary file beside `path`.
    ///
    /// # Errors
    /// [`Error::Io`] naming `path` (a missing folder, no permission).
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = temporary_beside(path);
        // The temporary name is ours, not the caller's: a missing folder is reported with `path`.
        let file = fs::File::create(&tmp).map_err(io_error(path))?;
        Ok(Self {
            path: path.to_owned(),
            tmp,
            file: Some(file),
        })
    }

    /// The temporary file being written (for messages about a failed write).
    pub fn temporary(&self) -> &Path {
        &self.tmp
    }

    fn file(&mut self) -> std::io::Result<&mut fs::File> {
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the file was committed"))
    }

    /// Syncs the temporary file, renames it over `path` and syncs the folder:
    /// a crash leaves the old file or the new one, never a part.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file that failed; the temporary file is deleted.
    pub fn commit(mut self) -> Result<()> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let (path, tmp) = (&self.path, &self.tmp);
        let result = (|| {
            file.sync_all().map_err(io_error(tmp))?;
            drop(file);
            fs::rename(tmp, path).map_err(io_error(path))?;
            // The rename itself is durable only once the folder's entry is on disk.
            let folder = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            fs::File::open(folder)
                .and_then(|f| f.sync_all())
                .map_err(io_error(folder))
        })();
        if result.is_err() {
            let _ = fs::remove_file(tmp);
        }
        result
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file()?.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file()?.flush()
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file()?.seek(pos)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Text written piece by piece to a file that appears whole or not at all
/// ([`AtomicFile`]), gzip-compressed when `path` ends in `.gz`: the same bytes
/// [`write_text`] writes for the whole text at once.
pub struct TextFile {
    tmp: PathBuf,
    out: TextSink,
}

enum TextSink {
    Plain(BufWriter<AtomicFile>),
    Gzip(GzEncoder<BufWriter<AtomicFile>>),
}

impl std::fmt::Debug for TextFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextFile")
            .field("tmp", &self.tmp)
            .finish_non_exhaustive()
    }
}

impl TextFile {
    /// Creates the temporary file beside `path`.
    ///
    /// # Errors
    /// [`Error::Io`] naming `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let file = AtomicFile::create(path)?;
        let tmp = file.temporary().to_owned();
        let out = BufWriter::with_capacity(256 << 10, file);
        let out = if path.extension().is_some_and(|e| e == "gz") {
            TextSink::Gzip(GzEncoder::new(out, Compression::default()))
        } else {
            TextSink::Plain(out)
        };
        Ok(Self { tmp, out })
    }

    /// Appends `text`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the temporary file.
    pub fn write(&mut self, text: &str) -> Result<()> {
        match &mut self.out {
            TextSink::Plain(w) => w.write_all(text.as_bytes()),
            TextSink::Gzip(w) => w.write_all(text.as_bytes()),
        }
        .map_err(io_error(&self.tmp))
    }

    /// Ends the text (and its gzip stream) and puts the file in place ([`AtomicFile::commit`]).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file that failed; nothing is left behind.
    pub fn commit(self) -> Result<()> {
        let tmp = self.tmp;
        let out = match self.out {
            TextSink::Plain(w) => w,
            TextSink::Gzip(w) => w.finish().map_err(io_error(&tmp))?,
        };
        out.into_inner()
            .map_err(|e| io_error(&tmp)(e.into_error()))?
            .commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file, plain or gzip, that holds more text than the limit is refused by
    /// name and line before it is all in memory; one at the limit is read.
    #[test]
    fn text_beyond_the_limit_is_refused() {
        let dir = std::env::temp_dir().join(format!("physcon-text-limit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let text = "1\n".repeat(500);
        let plain = dir.join("big.extxyz");
        fs::write(&plain, &text).unwrap();
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let packed = gz.finish().unwrap();
        assert!(packed.len() < 100, "the gzip file is small: {}", packed.len());
        let bomb = dir.join("big.extxyz.gz");
        fs::write(&bomb, packed).unwrap();
        for (path, what) in [(&plain, "the file holds"), (&bomb, "the gzip stream expands to")] {
            match read_text_at_most(path, 999) {
                Err(Error::Parse {
                    path: p,
                    line,
                    kind: ParseError::Content(reason),
                }) => {
                    assert_eq!(&p, path);
                    assert_eq!(line, 500, "{reason}");
                    assert!(reason.contains(what) && reason.contains("999 bytes"), "{reason}");
                }
                other => panic!("{}: {other:?}", path.display()),
            }
            assert_eq!(read_text_at_most(path, 1000).unwrap(), text);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A file named with 250 bytes (of 255 a file system takes) is written
    /// atomically: the temporary name beside it is short, and nothing is left.
    #[test]
    fn a_long_legal_name_is_written() {
        let dir = std::env::temp_dir().join(format!("physcon-long-name-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.sdf", "n".repeat(246)));
        assert_eq!(path.file_name().unwrap().len(), 250);
        write_text(&path, "text\n").unwrap();
        write_text(&path, "again\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "again\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        assert!(temporary_beside(&path).file_name().unwrap().len() <= 30);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// CR-only line endings and UTF-16/32 text are named, with the way out;
    /// CRLF, a stray CR and doubled CRs before LF are read as before.
    #[test]
    fn line_endings_and_wide_encodings_are_named() {
        let dir = std::env::temp_dir().join(format!("physcon-encodings-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let utf16 = |big: bool, mark: bool| {
            let mut out: Vec<u8> = if !mark {
                vec![]
            } else if big {
                vec![0xfe, 0xff]
            } else {
                vec![0xff, 0xfe]
            };
            for u in "1\nProperties=species:S:1:pos:R:3 mol_id=x\nH 0 0 0\n".encode_utf16() {
                out.extend(if big { u.to_be_bytes() } else { u.to_le_bytes() });
            }
            out
        };
        let cases: [(&str, Vec<u8>, usize, &str); 6] = [
            (
                "mac",
                b"a\rb\rc\r".to_vec(),
                1,
                "CR-only (classic Mac) line endings",
            ),
            ("mac-late", b"a\nb\rc\rd\r".to_vec(), 2, "convert to LF"),
            (
                "le",
                utf16(false, true),
                1,
                "UTF-16 (byte-order mark FF FE, little-endian)",
            ),
            (
                "be",
                utf16(true, true),
                1,
                "UTF-16 (byte-order mark FE FF, big-endian)",
            ),
            (
                "bare",
                utf16(false, false),
                1,
                "UTF-16 text without a byte-order mark",
            ),
            ("utf32", vec![0xff, 0xfe, 0, 0, b'1', 0, 0, 0], 1, "UTF-32"),
        ];
        for (name, bytes, at, words) in cases {
            let path = dir.join(name);
            fs::write(&path, bytes).unwrap();
            match read_text(&path) {
                Err(Error::Parse {
                    line,
                    kind: ParseError::Content(reason),
                    ..
                }) => {
                    assert_eq!(line, at, "{name}: {reason}");
                    assert!(reason.contains(words), "{name}: {reason}");
                    assert!(
                        reason.contains("UTF-8") || reason.contains("LF"),
                        "{name}: {reason}"
                    );
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        for (name, text) in [
            ("crlf", "a\r\nb\r\n"),
            ("stray", "a\rx\nb\nc\n"),
            ("doubled", "a\r\r\nb\r\r\n"),
        ] {
            let path = dir.join(name);
            fs::write(&path, text).unwrap();
            assert_eq!(read_text(&path).unwrap(), text, "{name}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Every line of [`TextLines`], or its error: what [`read_text`] gives,
    /// line by line.
    fn streamed(path: &Path, limit: u64, capacity: usize) -> Result<Vec<String>> {
        TextLines::open_with(path, limit, capacity)?.collect()
    }

    /// Read line by line, whatever the read buffer's size, a file gives the
    /// lines `read_text(path)?.lines()` gives, or the same error: plain and
    /// gzip, CRLF, a byte-order mark, no final line feed, blank lines, each
    /// fault of the whole text, and the size limit.
    #[test]
    fn lines_read_one_by_one_are_read_text_lines() {
        let dir = std::env::temp_dir().join(format!("physcon-text-lines-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let gzip = |bytes: &[u8]| {
            let mut gz = GzEncoder::new(Vec::new(), Compression::default());
            gz.write_all(bytes).unwrap();
            gz.finish().unwrap()
        };
        let mut utf16 = vec![0xff, 0xfe];
        for u in "1\nx\n".encode_utf16() {
            utf16.extend(u.to_le_bytes());
        }
        let long: Vec<u8> = "x".repeat(70_000).into_bytes();
        let mut cut = gzip(&"line\n".repeat(20_000).into_bytes());
        cut.truncate(cut.len() / 2);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("blank", b"\n\n  \n".to_vec()),
            ("plain", b"a\nb\n\nc".to_vec()),
            ("crlf", b"a\r\nb\r\n".to_vec()),
            ("stray", b"a\rx\nb\nc\n".to_vec()),
            ("doubled", b"a\r\r\nb\r\r\n".to_vec()),
            ("cr-last", b"a\nb\r".to_vec()),
            ("bom", b"\xef\xbb\xbfa\nb\n".to_vec()),
            ("bom-only", b"\xef\xbb\xbf".to_vec()),
            ("bom-line", b"\xef\xbb\xbf\nb".to_vec()),
            ("long", long.clone()),
            ("mac", b"a\rb\rc\r".to_vec()),
            ("mac-late", b"a\nb\rc\rd\r".to_vec()),
            ("nul", b"a\nb\0\nc\n".to_vec()),
            ("latin1", b"a\nb\nd\xe9j\xe0\n".to_vec()),
            ("cut-utf8", b"a\n\xe2\x82".to_vec()),
            ("utf16", utf16),
            ("gz", gzip(b"a\r\nb\n")),
            ("gz-bom", gzip(b"\xef\xbb\xbf1\n2")),
            ("gz-nul", gzip(b"a\nb\n\0")),
            ("gz-cut", cut),
        ];
        for (name, bytes) in &cases {
            let path = dir.join(name);
            fs::write(&path, bytes).unwrap();
            for (limit, capacity) in [
                (MAX_TEXT_BYTES, 1),
                (MAX_TEXT_BYTES, 7),
                (MAX_TEXT_BYTES, 64 << 10),
                (99, 5),
            ] {
                let whole =
                    read_text_at_most(&path, limit).map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>());
                let lines = streamed(&path, limit, capacity);
                match (&whole, &lines) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{name}, capacity {capacity}"),
                    (Err(a), Err(b)) => {
                        assert_eq!(a.to_string(), b.to_string(), "{name}, capacity {capacity}")
                    }
                    _ => panic!("{name}, limit {limit}, capacity {capacity}: {whole:?} against {lines:?}"),
                }
            }
        }
        // A gzip file over the limit itself is refused before it is decompressed, as read_text refuses it.
        let path = dir.join("gz");
        let (a, b) = (
            read_text_at_most(&path, 10).unwrap_err(),
            streamed(&path, 10, 8).unwrap_err(),
        );
        assert!(a.to_string().contains("the file holds more than 10 bytes"), "{a}");
        assert_eq!(a.to_string(), b.to_string());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Text written piece by piece is the file write_text writes whole, gzip
    /// too; a file dropped before its commit leaves nothing, not even over an
    /// old file of the name.
    #[test]
    fn text_written_in_pieces_is_the_whole_text_or_nothing() {
        let dir = std::env::temp_dir().join(format!("physcon-text-file-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let pieces: Vec<String> = (0..5000)
            .map(|k| format!("record {k}\n{}\n$$$$\n", "x".repeat(k % 97)))
            .collect();
        for name in ["out.sdf", "out.sdf.gz"] {
            let (whole, pieced) = (dir.join(format!("whole-{name}")), dir.join(name));
            write_text(&whole, &pieces.concat()).unwrap();
            let mut file = TextFile::create(&pieced).unwrap();
            for p in &pieces {
                file.write(p).unwrap();
            }
            file.commit().unwrap();
            assert_eq!(fs::read(&whole).unwrap(), fs::read(&pieced).unwrap(), "{name}");
            if name.ends_with(".gz") {
                let mut gz = GzEncoder::new(Vec::new(), Compression::default());
                gz.write_all(pieces.concat().as_bytes()).unwrap();
                assert_eq!(fs::read(&pieced).unwrap(), gz.finish().unwrap());
            }
            // Dropped before its commit: the old file stays, nothing is beside it.
            let mut file = TextFile::create(&pieced).unwrap();
            file.write("half a record").unwrap();
            drop(file);
            assert_eq!(fs::read(&whole).unwrap(), fs::read(&pieced).unwrap(), "{name}");
        }
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["out.sdf", "out.sdf.gz", "whole-out.sdf", "whole-out.sdf.gz"]
        );
        let fresh = dir.join("never.sdf");
        drop(TextFile::create(&fresh).unwrap());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 4);
        fs::remove_dir_all(&dir).unwrap();
    }
}
