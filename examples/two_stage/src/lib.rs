//! The two-stage example of physcon as a library: multi-task training (energy
//! and denoising), then physical consistency (optimality and score) with a
//! force loss, against a control arm without the consistency losses, on the
//! shipped dataset (MMFF structures, GFN2-xTB energies and forces), judged
//! against GFN2-xTB minima.
//!
//! The command line is [`cli`]; `examples/two_stage/main.rs` in the physcon
//! repository runs it:
//!
//! ```text
//! cargo run --release -p two_stage                      # train --preset cpu --seeds 0
//! cargo run --release -p two_stage -- train --preset quick --seeds 0
//! cargo run --release -p two_stage -- evaluate --checkpoint runs/cpu/seed-0/consistency.safetensors
//! cargo run --release -p two_stage -- predict --checkpoint C --input in.extxyz --output out.extxyz --samples 4
//! ```
//!
//! The parts, in the order a training step uses them:
//!
//! - [`plan`]: the two stages' loss terms, weights and learning rate;
//! - [`error`]: the example's errors, naming flags, settings and files;
//! - [`settings`]: presets and overrides, and their `key = value` text;
//! - [`model`]: the reference model (shared encoder, energy and eps heads);
//! - [`data`]: the training frames and the batches of each step;
//! - [`objective`]: the arms and the loss terms of a step;
//! - [`optim`]: Adam with gradient clipping;
//! - [`training`]: the loop, resume, and [`training::train_all`];
//! - [`checkpoint`]: weights, optimiser state and settings in one file;
//! - [`log`]: per-step CSV and the progress bar;
//! - [`eval`] and [`report`]: scores on a split, tables, plots;
//! - [`teacher`]: the energy model's force and energy errors (how good a teacher it is);
//! - [`io`]: users' molecules (SDF/MOL, extended XYZ) in and out of `predict`;
//! - [`checks`]: what `predict` checks about each molecule (size, the input's
//!   own geometry, 2D drawings, valences with formal charges, exploded
//!   structures) and its memory-bounded batches;
//! - [`aromatic`]: Kekulé-written aromatic rings in the training data's convention;
//! - [`threads`]: libtorch's thread count (`--threads`, `OMP_NUM_THREADS`).
//! - [`npz`]: `predict`'s and `evaluate`'s results as NumPy `.npz` files.

pub mod aromatic;
pub mod batching;
pub mod checkpoint;
pub mod checks;
pub mod cli;
pub mod data;
pub mod error;
pub mod eval;
pub mod generation;
pub mod io;
pub mod log;
pub mod model;
pub mod npz;
pub mod objective;
pub mod optim;
pub mod plan;
pub mod relax;
pub mod report;
pub mod settings;
pub mod teacher;
pub mod threads;
pub mod training;

/// libtorch's generator is process-wide: tests that seed it run one at a time.
#[cfg(test)]
use physcon::testing::rng_lock;

/// The physcon repository, which holds the dataset and the test fixtures.
#[cfg(test)]
fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub use error::{Error, Result};
