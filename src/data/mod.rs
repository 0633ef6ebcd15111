//! Molecular data: extended-XYZ I/O and datasets of labelled frames.
//!
//! A frame is one structure of one molecule (`mol_id`) at one level of theory,
//! with optional energy and force labels. Labels that are absent stay absent:
//! batches carry masks for them, never zeros.

mod dataset;
mod elements;
mod extxyz;

pub use dataset::{shuffled_indices, splitmix64, Dataset, LabelledBatch, Splits};
pub use elements::{atomic_number, symbol};
pub use extxyz::{format_extxyz, parse_extxyz, read_extxyz, write_atomic, write_extxyz, Frame};
