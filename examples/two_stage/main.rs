//! The two-stage example's command line; everything else is the `two_stage`
//! crate beside this file (`src/`), which the benches import too.
//!
//! ```text
//! cargo run --release --example two_stage                      # train --preset cpu --seeds 0
//! cargo run --release --example two_stage -- train --preset quick --seeds 0
//! cargo run --release --example two_stage -- --help
//! ```

fn main() {
    two_stage::cli::main();
}
