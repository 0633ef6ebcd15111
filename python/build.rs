//! Takes the Python docstrings of the losses and functions from the library's
//! own rustdoc (the formula, units and shapes), so the text is written once.
//!
//! For each item, the `///` block above `pub struct NAME` / `pub fn NAME` in
//! the library's source is rewritten for Python readers: Rust examples and the
//! `# Errors` section (Rust variants; the bindings raise `ValueError` and
//! `TypeError`) are dropped, `text` blocks (the formulas) are kept indented,
//! and intra-doc links become plain names (`GradientFlow::ToStructure` becomes
//! `GradientFlow.TO_STRUCTURE`). The result lands in `$OUT_DIR/doc_NAME.md`,
//! which `src/lib.rs` includes with `#[doc = ...]`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

/// (item, file under the library's `src/`).
const ITEMS: &[(&str, &str)] = &[
    ("EnergyLoss", "losses/supervised.rs"),
    ("ForceLoss", "losses/supervised.rs"),
    ("DenoisingLoss", "losses/denoising.rs"),
    ("StationarityLoss", "losses/optimality.rs"),
    ("EnergyDescentLoss", "losses/optimality.rs"),
    ("ScoreConsistency", "losses/score.rs"),
    ("NoiseSchedule", "diffusion/schedule.rs"),
    ("q_sample", "diffusion/mod.rs"),
    ("energy_and_forces", "energy.rs"),
    ("kabsch_rmsd", "metrics.rs"),
    ("energy_gap", "metrics.rs"),
    ("energy_mae", "metrics.rs"),
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let library = manifest.join("..").join("src");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (name, file) in ITEMS {
        let path = library.join(file);
        println!("cargo:rerun-if-changed={}", path.display());
        let doc = python_doc(&rustdoc_of(&path, name));
        fs::write(out.join(format!("doc_{name}.md")), doc).expect("OUT_DIR is writable");
    }
}

/// The `///` lines (without the slashes) directly above `pub struct|fn|enum name`.
fn rustdoc_of(path: &Path, name: &str) -> Vec<String> {
    let source = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<&str> = source.lines().collect();
    let is_item = |line: &str| {
        ["pub struct ", "pub fn ", "pub enum "].iter().any(|kw| {
            line.strip_prefix(kw).is_some_and(|rest| {
                rest.starts_with(name)
                    && !rest[name.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            })
        })
    };
    let at = lines
        .iter()
        .position(|l| is_item(l))
        .unwrap_or_else(|| panic!("{}: no `pub` item `{name}`", path.display()));
    let mut doc = Vec::new();
    for line in lines[..at].iter().rev() {
        let line = line.trim_start();
        if line.starts_with("#[") {
            continue;
        }
        match line.strip_prefix("///") {
            Some(text) => doc.push(text.strip_prefix(' ').unwrap_or(text).to_string()),
            None => break,
        }
    }
    doc.reverse();
    assert!(!doc.is_empty(), "{}: `{name}` has no doc comment", path.display());
    doc
}

/// Rustdoc text rewritten for a Python docstring (see the module doc).
fn python_doc(rustdoc: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut fence: Option<bool> = None; // Some(keep) inside a code block
    let mut skipping_section = false;
    for line in rustdoc {
        if let Some(keep) = fence {
            if line.trim_start().starts_with("```") {
                fence = None;
            } else if keep {
                out.push(format!("    {line}"));
            }
            continue;
        }
        if let Some(info) = line.trim_start().strip_prefix("```") {
            fence = Some(info.trim() == "text");
            continue;
        }
        if let Some(header) = line.strip_prefix("# ") {
            skipping_section = matches!(header.trim(), "Errors" | "Example" | "Examples");
            if !skipping_section {
                out.push(format!("{}:", header.trim()));
            }
            continue;
        }
        if !skipping_section {
            out.push(unlink(line));
        }
    }
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
    }
    out.join("\n") + "\n"
}

/// Intra-doc links ``[`path`]``, ``[`path`](target)`` and ``[`path`][target]`` as
/// plain Python names in backticks.
fn unlink(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find("[`") {
        let Some(len) = rest[start + 2..].find("`]") else {
            break;
        };
        out.push_str(&rest[..start]);
        let path = &rest[start + 2..start + 2 + len];
        out.push('`');
        out.push_str(&python_name(path));
        rest = &rest[start + 2 + len + 2..];
        // Drop an explicit link target.
        for (open, close) in [('(', ')'), ('[', ']')] {
            if rest.starts_with(open) {
                if let Some(end) = rest.find(close) {
                    rest = &rest[end + 1..];
                }
            }
        }
        // A link followed by code (``[`NoiseLevel::new`]`(a, s)` ``) reads as one span.
        match rest.strip_prefix('`') {
            Some(code) => rest = code,
            None => out.push('`'),
        }
    }
    out.push_str(rest);
    python_words(&out)
}

/// Rust names in code spans that have other names in Python.
fn python_words(line: &str) -> String {
    [
        ("`ToStructure`", "`TO_STRUCTURE`"),
        ("`ToEnergy`", "`TO_ENERGY`"),
        ("`Both`", "`BOTH`"),
        ("`Temperature`", "`kelvin_to_kt`"),
    ]
    .iter()
    .fold(line.to_string(), |text, (rust, python)| {
        text.replace(rust, python)
    })
}

/// `crate::losses::GradientFlow::ToStructure` -> `GradientFlow.TO_STRUCTURE`,
/// `NoiseLevel::new` -> `NoiseLevel`, `crate::diffusion::q_sample` -> `q_sample`.
fn python_name(path: &str) -> String {
    let path = path.trim_start_matches("mod@");
    let segments: Vec<&str> = path.split("::").collect();
    // From the last type (capitalised segment) on; a free function keeps its name.
    let first = segments
        .iter()
        .rposition(|s| s.starts_with(char::is_uppercase))
        .map(|i| {
            if i > 0 && segments[i - 1].starts_with(char::is_uppercase) {
                i - 1
            } else {
                i
            }
        })
        .unwrap_or(segments.len() - 1);
    let mut parts: Vec<String> = segments[first..].iter().map(|s| s.to_string()).collect();
    if parts.len() == 2 && parts[1] == "new" {
        parts.pop();
    }
    if parts.len() == 2 && parts[0] == "GradientFlow" {
        parts[1] = upper_snake(&parts[1]);
    }
    parts.join(".")
}

fn upper_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
