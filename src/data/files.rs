//! The file side of every reader and writer: text in (gzip told by its magic
//! bytes, a size limit, binary refused, faults at their line) and out (gzip by
//! extension, atomic: a temporary file, fsync, rename, fsync of the folder).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use crate::error::{Error, ParseError, Result};

/// The most bytes [`read_text`] takes from one file, after decompression: a small
/// gzip file can expand without bound (a "gzip bomb"), and the text is held in memory.
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

fn read_text_at_most(path: &Path, limit: u64) -> Result<String> {
    let fail = |line: usize, what: &str| Error::Parse {
        path: path.to_owned(),
        line,
        kind: ParseError::Content(what.to_owned()),
    };
    let lines_in = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'\n').count() + 1;
    let too_long = |bytes: &[u8], what: &str| {
        // The line where the limit falls.
        fail(
            lines_in(&bytes[..limit as usize]),
            &format!("{what} more than {limit} bytes of text; split it into smaller files"),
        )
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
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        // What was decompressed before the fault stays in `out`: it locates the fault.
        if let Err(e) = MultiGzDecoder::new(raw.as_slice())
            .take(limit + 1)
            .read_to_end(&mut out)
        {
            return Err(fail(
                lines_in(&out),
                &format!("the gzip stream is damaged or cut short ({e})"),
            ));
        }
        if out.len() as u64 > limit {
            return Err(too_long(&out, "the gzip stream expands to"));
        }
        out
    } else {
        raw
    };
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(fail(
            lines_in(&bytes[..at]),
            "NUL byte: this is a binary file, not text",
        ));
    }
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        fail(lines_in(valid), "not UTF-8 text")
    })?;
    // Windows editors put a byte-order mark first; it is not part of the first line's content.
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// Writes `text` through [`write_atomic`], gzip-compressed when `path` ends in `.gz`.
///
/// # Errors
/// [`Error::Io`] naming `path`.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(text.as_bytes())
            .and_then(|_| gz.finish())
            .map_err(|source| Error::Io {
                path: path.to_owned(),
                source,
            })?
    } else {
        text.as_bytes().to_vec()
    };
    write_atomic(path, &bytes)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, renames it over
/// `path` and syncs the folder: a crash leaves the old file or the new one, never a part.
///
/// # Errors
/// [`Error::Io`] naming the file that failed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    fn io(p: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: p.to_owned(),
            source,
        }
    }
    let result = (|| {
        // The temporary name is ours, not the caller's: a missing folder is reported with `path`.
        let mut file = fs::File::create(&tmp).map_err(io(path))?;
        file.write_all(bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))?;
        // The rename itself is durable only once the folder's entry is on disk.
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs::File::open(folder)
            .and_then(|f| f.sync_all())
            .map_err(io(folder))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
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
}
