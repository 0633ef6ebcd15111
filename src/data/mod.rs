//! Molecular data: frames, their files (extended XYZ, SDF/MOL; `files` holds
//! what both formats share: gzip, limits, atomic writes) and datasets of labelled frames.
//!
//! A frame is one structure of one molecule (`mol_id`) at one level of theory,
//! with optional energy and force labels. Labels that are absent stay absent:
//! batches carry masks for them, never zeros.

mod dataset;
mod elements;
mod extxyz;
mod files;
mod frame;
mod sdf;

pub use dataset::{shuffled_indices, splitmix64, Dataset, LabelledBatch, Splits};
pub use elements::{atomic_number, symbol};
pub use extxyz::{
    format_extxyz, format_extxyz_with_info, parse_extxyz, parse_extxyz_frames, read_extxyz, write_extxyz,
    ExtxyzFrames,
};
pub use files::{read_text, write_atomic, write_text, AtomicFile, TextFile, TextLines, MAX_TEXT_BYTES};
pub use frame::Frame;
pub use sdf::{
    format_sdf, is_pseudo_atom, parse_sdf, parse_sdf_records, read_sdf, write_sdf, SdfRecord, SdfRecords,
    V2000_COORDINATE_WIDTH,
};

/// The longest piece of a file's text quoted in an error message, in characters.
pub const EXCERPT_CHARS: usize = 60;

/// `text` cut to [`EXCERPT_CHARS`] characters for an error message, with the
/// length of what was left out: a 10 MB token gives a line, not 10 MB of stderr.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], text.len()),
    }
}
