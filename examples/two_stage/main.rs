//! The two-stage example's command line; everything else is the `two_stage`
//! crate's library beside this file (`src/`), which its tests and benches import too.
//!
//! ```text
//! cargo run --release -p two_stage                      # train --preset cpu --seeds 0
//! cargo run --release -p two_stage -- train --preset quick --seeds 0
//! cargo run --release -p two_stage -- --help
//! ```

fn main() {
    two_stage::cli::main();
}
