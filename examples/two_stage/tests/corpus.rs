//! `predict` as a new user meets it: a corpus of malformed, hostile and
//! unusual inputs (`tests/fixtures/userio/`, README there) and flags, run
//! through the command line's own entry point in this process.
//!
//! Every refusal: no panic, an error naming the file and line or the flag,
//! nothing left in the output folder, the input untouched. Every valid input
//! (SDF V2000/V3000/gzip/MOL, extended XYZ, CRLF, BOM) round-trips with its
//! atom order, ids, bonds and data items kept.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use clap::Parser;
use physcon::data::{read_extxyz, read_sdf, Frame};
use tch::nn::VarStore;
use tch::Device;
use two_stage::checkpoint::{save, CheckpointMeta};
use two_stage::cli::{predict as predict_command, run, Cli, Command, Predicted};
use two_stage::model::Model;
use two_stage::objective::Arm;
use two_stage::optim::Adam;
use two_stage::settings::{Preset, Settings};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn corpus(name: &str) -> PathBuf {
    repo().join("tests/fixtures/userio").join(name)
}

fn fixture(dir: &str, name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(dir).join(name)
}

/// A freshly initialised quick-preset model as a checkpoint (`nan`: one weight NaN).
fn checkpoint(dir: &Path, nan: bool) -> PathBuf {
    if nan {
        broken_checkpoint(dir, "nan", "eps1.weight", f64::NAN)
    } else {
        broken_checkpoint(dir, "model", "", 0.0)
    }
}

/// A freshly initialised quick-preset model as `<name>.safetensors`, with the
/// variable `var` (if any) filled with `value`.
fn broken_checkpoint(dir: &Path, name: &str, var: &str, value: f64) -> PathBuf {
    let settings = Settings::preset(Preset::Quick).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let _model = Model::new(&vs.root(), settings.model, settings.diffusion_steps);
    if !var.is_empty() {
        let vars = vs.variables();
        let mut w = vars[var].shallow_clone();
        tch::no_grad(|| {
            let _ = w.fill_(value);
        });
    }
    let adam = Adam::new(&vs.trainable_variables());
    let path = dir.join(format!("{name}.safetensors"));
    let meta = CheckpointMeta {
        arm: Arm::Consistency,
        step: 0,
        adam_steps: 0,
        seed: 0,
        settings,
    };
    save(&path, &vs, &adam, &meta).unwrap();
    path
}

/// `two_stage predict` with `args` and the test's generation defaults.
fn argv<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec!["two_stage", "predict"];
    for (flag, value) in [
        ("--generation", "refine"),
        ("--samples", "2"),
        ("--start", "10"),
        ("--ddim-steps", "5"),
        // Tests run in parallel threads; libtorch's count is process-wide.
        ("--threads", "1"),
    ] {
        if !args.contains(&flag) {
            argv.extend([flag, value]);
        }
    }
    argv.extend_from_slice(args);
    argv
}

/// Runs `two_stage predict` with `args`; a panic fails the test, naming the case.
fn predict(case: &str, args: &[&str]) -> Result<(), String> {
    let argv = argv(args);
    match catch_unwind(AssertUnwindSafe(|| {
        Cli::try_parse_from(&argv)
            .map_err(|e| e.to_string())
            .and_then(|cli| run(cli).map_err(|e| e.to_string()))
    })) {
        Ok(result) => result,
        Err(_) => panic!("{case}: predict panicked"),
    }
}

/// Runs `two_stage predict` with `args` and returns what it reported with
/// its exit status (`Err`: what `main` prints); a panic fails the test.
fn predict_report(case: &str, args: &[&str]) -> Result<(Predicted, Result<(), String>), String> {
    let argv = argv(args);
    let run = || {
        let cli = Cli::try_parse_from(&argv).map_err(|e| e.to_string())?;
        let Some(Command::Predict(p)) = cli.command else {
            panic!("{case}: not predict")
        };
        p.threads.apply().map_err(|e| e.to_string())?;
        let out = predict_command(&p).map_err(|e| e.to_string())?;
        let status = out.status(&p).map_err(|e| e.to_string());
        Ok((out, status))
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(result) => result,
        Err(_) => panic!("{case}: predict panicked"),
    }
}

/// Fails unless one of the report's skipped lines names `at` (`file:line:`) and holds `words`.
fn assert_skipped(report: &Predicted, at: &str, words: &str) {
    assert!(
        report.skipped.iter().any(|l| l.contains(at) && l.contains(words)),
        "{at} with `{words}` not among {:?}",
        report.skipped
    );
}

/// The names in `dir`.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("physcon-corpus-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Inputs `predict` must refuse: (file, line the message names, words it contains).
const REFUSED: &[(&str, usize, &str)] = &[
    ("empty.extxyz", 1, "nothing to predict"),
    ("whitespace_only.xyz", 1, "only blank lines"),
    ("whitespace_only.sdf", 1, "nothing to predict"),
    ("nul_bytes.extxyz", 2, "NUL byte"),
    ("not_utf8.sdf", 1, "not UTF-8"),
    ("binary.sdf", 1, "NUL byte"),
    ("png_header.extxyz", 3, "NUL byte"),
    ("properties_wraps_pos.extxyz", 2, "column counts"),
    ("properties_wraps_species.extxyz", 2, "column counts"),
    ("properties_too_wide.extxyz", 3, "expected 7 columns"),
    ("truncated.sdf.gz", 0, "gzip stream"),
    ("truncated.extxyz.gz", 0, "gzip stream"),
    ("bonds_out_of_range.extxyz", 2, "index 9 outside 0..5"),
    ("bonds_negative.extxyz", 2, "index -4"),
    ("bonds_not_triples.extxyz", 2, "not `i j order` triples"),
    ("bonds_repeated.extxyz", 2, "bonded twice"),
    ("bonds_self.extxyz", 2, "bonded to itself"),
    ("bonds_order_zero.extxyz", 2, "bond order 0"),
    ("bonds_out_of_range.sdf", 14, "not an atom number in 1..=9"),
    ("bonds_repeated.sdf", 15, "bonded twice"),
    ("bonds_query_type.sdf", 14, "bond type `8`"),
    ("huge_coordinate.extxyz", 3, "out of range"),
    ("huge_coordinate.sdf", 5, "out of range"),
    ("nan_coordinate.sdf", 5, "not finite"),
    ("no_atoms.extxyz", 1, "has no atoms"),
    ("no_atoms.sdf", 1, "has no atoms"),
    ("unknown_symbol.sdf", 5, "unknown element `Xx`"),
    ("no_m_end.sdf", 12, "M  END"),
    ("atom_count_too_large.sdf", 4, "declares 99 atoms and 8 bonds"),
    ("short_atom_line.sdf", 5, "V2000 columns"),
    ("v3000_counts_mismatch.sdf", 6, "COUNTS declares 10 atoms"),
    ("truncated_frame.extxyz", 1, "ends after 3"),
    ("missing_mol_id.extxyz", 2, "missing key `mol_id`"),
    // Issue 17: what a reader following the counts line would drop or copy silently.
    ("bond_count_short.sdf", 20, "declares 6 bonds"),
    ("bad_m_chg.sdf", 18, "`M  CHG` line"),
    ("bad_m_iso.sdf", 22, "`12` is not an atom number in 1..=9"),
    ("junk_before_m_end.sdf", 22, "neither a bond"),
    ("v3000_no_end_ctab.sdf", 5, "BEGIN CTAB` is never closed"),
    // Formats predict does not read, by name and by content.
    ("molecule.mol2", 1, "MOL2"),
    ("mol2_named.sdf", 1, "MOL2"),
    ("protein.pdb", 1, "a PDB file"),
    ("pdb_content.dat", 1, "a PDB file"),
    ("ligands.smi", 1, "a SMILES file"),
    ("smiles_content.txt", 1, "a SMILES file"),
    // Issue 25: a count short of the atom lines is refused, never read cut (both formats alike).
    (
        "count_smaller.extxyz",
        6,
        "is an atom line, but the atom count (line 1) declares 3 atoms, all read before it",
    ),
    (
        "count_smaller.sdf",
        12,
        "is an atom line, but the counts line (line 4) declares 7 atoms, all read before it",
    ),
    // An input whose own geometry is broken is named as the input, before the model runs.
    (
        "input_bond_too_long.extxyz",
        1,
        "the input structure itself has bond 3-5 (O-H) 2.02 Å long",
    ),
    (
        "input_overlap.sdf",
        1,
        "the input structure itself has atoms 3 and 9 (O, H) 0.10 Å apart",
    ),
    // Line endings and encodings are named, with the way out.
    ("cr_only.sdf", 1, "CR-only (classic Mac) line endings"),
    (
        "cr_only.extxyz",
        1,
        "CR-only (classic Mac) line endings: the lines end in a carriage return",
    ),
    (
        "utf16.sdf",
        1,
        "UTF-16 (byte-order mark FF FE, little-endian) text: save it as UTF-8",
    ),
    (
        "utf16.extxyz",
        1,
        "UTF-16 (byte-order mark FE FF, big-endian) text: save it as UTF-8",
    ),
];

#[test]
fn every_refusal_names_file_and_line_or_flag_and_leaves_nothing() {
    tch::set_num_threads(1);
    let scratch = Scratch::new("refused");
    let ckpt_dir = Scratch::new("refused-ckpt");
    let ckpt = checkpoint(&ckpt_dir.0, false);
    let ckpt = ckpt.to_str().unwrap();
    let out = scratch.0.join("out.sdf");
    let out_xyz = scratch.0.join("out.extxyz");
    // A 10 MB token, written here rather than kept in the repository.
    let long = scratch.0.join("input-long_token.extxyz");
    std::fs::write(&long, format!("{}\n", "x".repeat(10_000_000))).unwrap();
    let mut messages = Vec::new();
    let mut cases: Vec<(PathBuf, usize, &str)> = REFUSED
        .iter()
        .map(|&(name, line, words)| (corpus(name), line, words))
        .collect();
    cases.push((long.clone(), 1, "expected an atom count"));
    cases.push((corpus("gzip_bomb.extxyz.gz"), 1, "expected an atom count"));
    let (mut refused, mut partial) = (0, 0);
    for (input, line, words) in &cases {
        let name = input.file_name().unwrap().to_str().unwrap();
        let target = if name.contains("xyz") { &out_xyz } else { &out };
        let before = std::fs::read(input).unwrap();
        let args = [
            "--checkpoint",
            ckpt,
            "--input",
            input.to_str().unwrap(),
            "--output",
            target.to_str().unwrap(),
        ];
        let names_the_fault = |message: &str| {
            assert!(message.contains(name), "{name}: the file is not named: {message}");
            if *line > 0 {
                assert!(
                    message.contains(&format!("{name}:{line}:")),
                    "{name}: line {line} is not named: {message}"
                );
            } else {
                assert!(
                    message.contains(&format!("{name}:")),
                    "{name}: no line: {message}"
                );
            }
            assert!(message.contains(words), "{name}: `{words}` missing: {message}");
            assert!(message.len() < 600, "{name}: {} bytes of message", message.len());
        };
        // --strict refuses the file at the fault and writes nothing.
        let mut strict = args.to_vec();
        strict.push("--strict");
        let message = predict(name, &strict).expect_err(name);
        names_the_fault(&message);
        assert_eq!(
            listing(&scratch.0),
            ["input-long_token.extxyz"],
            "{name}: leftovers"
        );
        // By default the other records are predicted, the bad one named, and the status is an error.
        match predict_report(name, &args) {
            Err(message) => {
                names_the_fault(&message);
                assert_eq!(
                    listing(&scratch.0),
                    ["input-long_token.extxyz"],
                    "{name}: leftovers"
                );
                refused += 1;
            }
            Ok((report, status)) => {
                assert_skipped(&report, &format!("{name}:{line}:"), words);
                assert!(report.written > 0, "{name}");
                let status = status.expect_err(name);
                assert!(status.contains("--skip-bad"), "{name}: {status}");
                std::fs::remove_file(target).unwrap();
                partial += 1;
            }
        }
        assert_eq!(std::fs::read(input).unwrap(), before, "{name}: input changed");
        messages.push(message);
    }
    // Whole-file faults and single-record files are refused; the rest predict their good records:
    // the six bond faults, a huge coordinate and a missing `mol_id` among extended-XYZ frames,
    // V3000 COUNTS that disagree in one of four records, a short atom count (extended XYZ and
    // SDF) and a broken input geometry (extended XYZ and SDF) beside a good record.
    assert_eq!((refused, partial), (cases.len() - 13, 13));
    for m in &messages {
        println!("{m}");
    }
}

#[test]
fn flags_and_files_around_the_input_are_checked_before_the_model_runs() {
    tch::set_num_threads(1);
    let scratch = Scratch::new("flags");
    let dir = &scratch.0;
    let ckpt = checkpoint(dir, false);
    let nan = checkpoint(dir, true);
    let input = dir.join("mine.sdf");
    std::fs::copy(fixture("sdf", "rdkit_small.sdf"), &input).unwrap();
    let original = std::fs::read(&input).unwrap();
    let output = dir.join("predicted.sdf");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["--checkpoint", &s(&ckpt), "--input", &s(&input)]
            .map(str::to_owned)
            .to_vec();
        v.extend(extra.iter().map(|e| e.to_string()));
        v
    };
    let refused = |case: &str, args: Vec<String>, words: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let message = predict(case, &args).expect_err(case);
        for w in words {
            assert!(message.contains(w), "{case}: `{w}` missing: {message}");
        }
        message
    };
    let out = s(&output);
    let flags: [(&str, &str, &[&str]); 8] = [
        ("--threads", "0", &["--threads", "at least 1"]),
        ("--start", "0", &["--start", "1..=1000"]),
        ("--start", "5000", &["--start", "1..=1000"]),
        ("--ddim-steps", "11", &["--ddim-steps", "1..=10", "--start"]),
        ("--ddim-steps", "0", &["--ddim-steps"]),
        ("--samples", "0", &["--samples", "1..=1000"]),
        ("--samples", "1000000", &["--samples", "1..=1000"]),
        ("--samples", "x", &["--samples"]),
    ];
    for (flag, value, words) in flags {
        refused(
            &format!("{flag} {value}"),
            base(&["--output", &out, flag, value]),
            words,
        );
    }
    refused(
        "--samples 3 with --generation relax",
        base(&["--output", &out, "--generation", "relax", "--samples", "3"]),
        &["--samples", "--generation relax", "same structure"],
    );
    let m = refused(
        "output is input",
        base(&["--output", &s(&input)]),
        &["--output", "mine.sdf", "is the --input file", "--force"],
    );
    assert!(!m.contains(".tmp"));
    std::fs::write(&output, "keep me").unwrap();
    refused(
        "output exists",
        base(&["--output", &out]),
        &["--output", "predicted.sdf", "--force"],
    );
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "keep me");
    let missing = dir.join("no-such-folder/out.sdf");
    let m = refused(
        "missing folder",
        base(&["--output", &s(&missing)]),
        &["--output", "no-such-folder/out.sdf", "does not exist"],
    );
    assert!(!m.contains(".tmp"), "{m}");
    refused(
        "output is a folder",
        base(&["--output", &s(dir)]),
        &["--output", "is a folder"],
    );
    refused(
        "output in another format",
        base(&["--output", &s(&dir.join("p.extxyz"))]),
        &["--output", "p.extxyz", "extended XYZ", "SDF"],
    );
    let mut args = base(&["--output", &s(&dir.join("n.sdf"))]);
    args[1] = s(&nan);
    refused("NaN weights", args, &["nan.safetensors", "eps1.weight", "NaN"]);
    let mut args = base(&["--output", &s(&dir.join("n.sdf"))]);
    args[1] = s(&dir.join("missing.safetensors"));
    refused("missing checkpoint", args, &["missing.safetensors"]);
    let bromine = s(&fixture("sdf", "with_bromine.sdf"));
    let mut args = base(&["--output", &s(&dir.join("n.sdf")), "--strict"]);
    args[3] = bromine.clone();
    refused(
        "--strict",
        args,
        &[
            "--strict",
            "with_bromine.sdf:",
            "`bromobenzene`",
            "element Br",
            "1 such",
        ],
    );
    let mut args = base(&["--output", &s(&dir.join("n.sdf"))]);
    args[3] = s(&corpus("only_unknown_elements.sdf"));
    refused(
        "only unknown elements",
        args,
        &["--input", "only_unknown_elements.sdf", "none of its 1"],
    );
    // Nothing was written, and the input is as it was.
    assert_eq!(std::fs::read(&input).unwrap(), original);
    let mut left = listing(dir);
    left.retain(|n| !n.ends_with(".safetensors"));
    assert_eq!(left, ["mine.sdf", "predicted.sdf"]);
    // --force replaces an existing output (here: the one written above).
    predict(
        "--force",
        &base(&["--output", &out, "--force"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(read_sdf(&output).unwrap().len(), 4 * 2);
    // A legal name of 250 bytes (of the 255 a file system takes) is written, atomically,
    // with nothing left beside it.
    let long = dir.join(format!("{}.sdf", "p".repeat(246)));
    predict(
        "250-byte output name",
        &base(&["--output", &s(&long)])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(read_sdf(&long).unwrap().len(), 4 * 2);
    let mut left = listing(dir);
    left.retain(|n| !n.ends_with(".safetensors"));
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left.iter().all(|n| !n.contains(".tmp")), "{left:?}");
}

/// Reads what `predict` wrote: the frames, and for SDF the data items too.
fn read_back(path: &Path, sdf: bool) -> Vec<(Frame, Vec<(String, String)>)> {
    if sdf {
        read_sdf(path)
            .unwrap()
            .into_iter()
            .map(|r| (r.frame, r.properties))
            .collect()
    } else {
        read_extxyz(path)
            .unwrap()
            .into_iter()
            .map(|f| (f, Vec::new()))
            .collect()
    }
}

#[test]
fn valid_inputs_round_trip_with_order_ids_and_bonds() {
    tch::set_num_threads(1);
    let scratch = Scratch::new("valid");
    let dir = &scratch.0;
    let ckpt = checkpoint(dir, false);
    let cases: [(PathBuf, &str, bool); 12] = [
        (fixture("sdf", "rdkit_small.sdf"), "a.sdf", true),
        (fixture("sdf", "rdkit_small_v3000.sdf"), "b.sdf", true),
        (fixture("sdf", "rdkit_small.sdf.gz"), "c.sdf.gz", true),
        (fixture("sdf", "ethanol.mol"), "d.sdf", true),
        (fixture("extxyz", "valid_small.extxyz"), "e.extxyz", false),
        (fixture("extxyz", "valid_small.extxyz.gz"), "f.extxyz.gz", false),
        (corpus("crlf.extxyz"), "g.extxyz", false),
        (corpus("bom.extxyz"), "h.extxyz", false),
        (corpus("crlf_bom.sdf"), "i.sdf", true),
        (corpus("no_trailing_newline.sdf"), "j.sdf", true),
        (corpus("single_atom.extxyz"), "k.extxyz", false),
        (corpus("molecules.dat"), "l.out", true),
    ];
    for (input, name, sdf) in &cases {
        let output = dir.join(name);
        let case = input.file_name().unwrap().to_str().unwrap();
        predict(
            case,
            &[
                "--checkpoint",
                ckpt.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
            ],
        )
        .unwrap_or_else(|e| panic!("{case}: {e}"));
        let inputs = read_back(input, *sdf);
        let outputs = read_back(&output, *sdf);
        assert_eq!(outputs.len(), 2 * inputs.len(), "{case}");
        for (k, (out, props)) in outputs.iter().enumerate() {
            let (inp, inp_props) = &inputs[k / 2];
            assert_eq!(out.mol_id, inp.mol_id, "{case}");
            assert_eq!(out.species, inp.species, "{case}: atom order");
            assert_eq!(out.bonds, inp.bonds, "{case}");
            assert!(out.pos.iter().flatten().all(|x| x.is_finite()));
            if *sdf {
                assert_eq!(props[..inp_props.len()], inp_props[..], "{case}");
                assert!(
                    props.contains(&("physcon_sample".into(), (k % 2).to_string())),
                    "{case}"
                );
                // The guard's verdict travels with each record, and never raises the energy.
                let item = |key: &str| props.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
                assert!(
                    matches!(item("physcon_refined").as_deref(), Some("T" | "F")),
                    "{case}"
                );
                let change: f64 = item("physcon_energy_change").unwrap().parse().unwrap();
                assert!(change <= 0.0, "{case}: {change}");
            }
            // The input's placement is kept: centroids agree.
            let centroid = |p: &[[f64; 3]]| {
                (0..3)
                    .map(|d| p.iter().map(|x| x[d]).sum::<f64>() / p.len() as f64)
                    .collect::<Vec<_>>()
            };
            for (a, b) in centroid(&out.pos).iter().zip(centroid(&inp.pos)) {
                assert!((a - b).abs() < 1e-3, "{case}: centroid {a} vs {b}");
            }
        }
    }
    // A 1-atom molecule comes back where it was, not at the origin.
    let single = read_extxyz(dir.join("k.extxyz")).unwrap();
    assert!((single[0].pos[0][0] - 1.5).abs() < 1e-6, "{:?}", single[0].pos);
    // Molecules with elements the model does not know are skipped; the rest
    // predicted, and the status says so unless --skip-bad.
    let output = dir.join("bromine.sdf");
    let bromine = fixture("sdf", "with_bromine.sdf");
    let args = [
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--input",
        bromine.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ];
    let status = predict("with_bromine.sdf", &args).unwrap_err();
    assert!(
        status.contains("1 of 3 records") && status.contains("--skip-bad"),
        "{status}"
    );
    let mut skip = args.to_vec();
    skip.extend(["--skip-bad", "--force"]);
    predict("with_bromine.sdf --skip-bad", &skip).unwrap();
    let ids: Vec<String> = read_sdf(&output)
        .unwrap()
        .into_iter()
        .map(|r| r.frame.mol_id)
        .collect();
    assert_eq!(ids, ["methanol", "methanol", "formamide", "formamide"]);
}

/// The `.npz` flags `predict` wrote: `exploded [M, K]`, `flat_input [M]`, `implicit_hydrogens [M]`.
fn npz_flags(path: &Path) -> (Vec<Vec<bool>>, Vec<bool>, Vec<bool>) {
    use physcon::ndarray::{Array1, Array2};
    let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let exploded: Array2<bool> = npz.by_name("exploded").unwrap();
    let flat: Array1<bool> = npz.by_name("flat_input").unwrap();
    let implicit: Array1<bool> = npz.by_name("implicit_hydrogens").unwrap();
    (
        exploded.outer_iter().map(|r| r.to_vec()).collect(),
        flat.to_vec(),
        implicit.to_vec(),
    )
}

/// One boolean key of a `.npz` file `predict` wrote, flattened.
fn npz_bools(path: &Path, key: &str) -> Vec<bool> {
    let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let flags: physcon::ndarray::ArrayD<bool> = npz.by_name(key).unwrap();
    flags.iter().copied().collect()
}

/// Issue 17's cases, each with its expected outcome: records skipped one by
/// one with their lines, pseudo-atoms and isotopes, 2D and hydrogen-less
/// input told apart, exploded and unwritable structures kept out of the
/// output, a molecule too large for memory refused, Kekulé rings read as the
/// training data writes them.
#[test]
fn users_files_are_predicted_record_by_record_and_findings_named() {
    tch::set_num_threads(1);
    let scratch = Scratch::new("users");
    let dir = &scratch.0;
    let ckpt = checkpoint(dir, false);
    let ckpt = ckpt.to_str().unwrap().to_owned();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let run = |case: &str, input: &Path, output: &str, extra: &[&str]| {
        let output = dir.join(output);
        let _ = std::fs::remove_file(&output);
        let (i, o) = (s(input), s(&output));
        let mut args = vec!["--checkpoint", &ckpt, "--input", &i, "--output", &o];
        args.extend_from_slice(extra);
        predict_report(case, &args)
    };

    // A 30-record file with 3 bad records: 27 predicted, all 3 named by line.
    let thirty = corpus("three_bad_of_30.sdf");
    let (report, status) = run("three_bad_of_30", &thirty, "30.sdf", &[]).unwrap();
    assert_eq!(report.written, 27 * 2);
    assert_eq!(report.skipped.len(), 3, "{:?}", report.skipped);
    for (line, words) in [(206, "not an atom number"), (504, "x.xxxx"), (745, "M  END")] {
        assert_skipped(&report, &format!("three_bad_of_30.sdf:{line}:"), words);
    }
    let status = status.unwrap_err();
    assert!(
        status.contains("3 of 30 records") && status.contains("--skip-bad"),
        "{status}"
    );
    assert_eq!(read_sdf(dir.join("30.sdf")).unwrap().len(), 54);
    let (_, status) = run("three_bad_of_30 --skip-bad", &thirty, "30.sdf", &["--skip-bad"]).unwrap();
    status.unwrap();
    let message = run("three_bad_of_30 --strict", &thirty, "30s.sdf", &["--strict"]).unwrap_err();
    assert!(
        message.contains("--strict")
            && message.contains("three_bad_of_30.sdf:206:")
            && message.contains("3 such"),
        "{message}"
    );
    assert!(!dir.join("30s.sdf").exists());

    // Pseudo-atoms are skipped like unknown elements, one line each, naming the symbol.
    let pseudo = corpus("pseudo_atoms.sdf");
    let (report, status) = run("pseudo_atoms", &pseudo, "p.sdf", &[]).unwrap();
    assert_eq!(report.written, 2);
    assert!(status.is_err());
    for (line, symbol) in [(5, "*"), (33, "R#"), (61, "A"), (89, "Q"), (117, "LP")] {
        let words = format!("pseudo-atom `{symbol}`");
        assert_skipped(&report, &format!("pseudo_atoms.sdf:{line}:"), &words);
    }
    let message = run("pseudo_atoms --strict", &pseudo, "ps.sdf", &["--strict"]).unwrap_err();
    assert!(
        message.contains("pseudo-atom `*`") && message.contains("5 such"),
        "{message}"
    );

    // D and T are hydrogen (as RDKit reads them); the output keeps the file's symbols.
    let isotopes = corpus("deuterium_tritium.sdf");
    let (report, status) = run("deuterium_tritium", &isotopes, "dt.sdf", &[]).unwrap();
    status.unwrap();
    assert!(report.skipped.is_empty() && report.notes.is_empty(), "{report:?}");
    let written = read_sdf(dir.join("dt.sdf")).unwrap();
    assert_eq!(written[0].frame.species, [6, 6, 8, 1, 1, 1, 1, 1, 1]);
    assert_eq!(written[0].atom_symbol(8), Some("D"));

    // 2D and hydrogen-less input are predicted, told per molecule with the way out, and flagged.
    let npz = dir.join("flags.npz");
    let flat = corpus("flat_2d.sdf");
    let (report, status) = run("flat_2d", &flat, "flat.sdf", &["--npz", &s(&npz)]).unwrap();
    status.unwrap();
    assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
    let note = &report.notes[0];
    for words in [
        "flat_2d.sdf:1:",
        "`ethanol-2d`",
        "flat",
        "EmbedMolecule",
        "--generation noise",
    ] {
        assert!(note.contains(words), "`{words}` missing: {note}");
    }
    assert_eq!(npz_flags(&npz), (vec![vec![false; 2]], vec![true], vec![false]));
    std::fs::remove_file(&npz).unwrap();
    // Only the file says 2D: the header's code, or without a code every z exactly 0 (as drawing
    // programs write it). A header that says 3D is believed, and a z of 0.0001 Å is a coordinate:
    // a planar molecule (the ring of kekule_ring.sdf laid in z = 0) is no drawing.
    let ring = std::fs::read_to_string(corpus("kekule_ring.sdf")).unwrap();
    let in_plane: Vec<String> = ring
        .lines()
        .enumerate()
        .map(|(k, l)| match k {
            4..=15 => format!("{}    0.0000{}", &l[..20], &l[30..]),
            _ => l.to_owned(),
        })
        .collect();
    let planar = in_plane.join("\n") + "\n";
    let lifted = planar.replacen("    0.0000 F", "    0.0001 F", 1);
    assert_ne!(lifted, planar);
    for (code, text, note) in [
        (
            "  ",
            &planar,
            Some("every z is 0 and the header's dimensional code"),
        ),
        ("2D", &planar, Some("its header says 2D")),
        ("3D", &planar, None),
        ("  ", &lifted, None),
    ] {
        let variant = dir.join("flat-variant.sdf");
        std::fs::write(
            &variant,
            text.replace("RDKit          3D", &format!("RDKit          {code}")),
        )
        .unwrap();
        let (report, status) = run("flat variant", &variant, "flat-v.sdf", &[]).unwrap();
        status.unwrap();
        match note {
            Some(words) => assert!(
                report.notes.len() == 1 && report.notes[0].contains(words),
                "{:?}",
                report.notes
            ),
            None => assert!(report.notes.is_empty(), "{code:?}: {:?}", report.notes),
        }
    }
    // The projected ethanol of flat_2d.sdf marked 3D is believed, and so its atoms on top of
    // each other are the input's fault, named before the model runs.
    let text = std::fs::read_to_string(&flat).unwrap();
    let variant = dir.join("flat-3D.sdf");
    std::fs::write(&variant, text.replace("RDKit          2D", "RDKit          3D")).unwrap();
    let message = run("flat 3D", &variant, "flat-v.sdf", &[]).unwrap_err();
    assert!(
        message
            .contains("flat-3D.sdf:1: molecule `ethanol-2d`: the input structure itself has atoms 1 and 6"),
        "{message}"
    );
    // Issue 25: planar and linear molecules in a 3D format are no drawing: no word, no flag.
    let planar = corpus("planar_linear.extxyz");
    let (report, status) = run("planar_linear", &planar, "planar.extxyz", &["--npz", &s(&npz)]).unwrap();
    status.unwrap();
    assert!(report.notes.is_empty() && report.skipped.is_empty(), "{report:?}");
    assert_eq!(npz_bools(&npz, "flat_input"), [false; 3]);
    assert_eq!(read_extxyz(dir.join("planar.extxyz")).unwrap().len(), 3 * 2);
    std::fs::remove_file(&npz).unwrap();
    // A charged carbon ([C-]#[N+]C), charged in the atom block or by `M  CHG`: no word.
    let isocyanide = corpus("methyl_isocyanide.sdf");
    let (report, status) = run("methyl_isocyanide", &isocyanide, "mic.sdf", &[]).unwrap();
    status.unwrap();
    assert!(report.notes.is_empty() && report.skipped.is_empty(), "{report:?}");
    // A carbon with five bonds, a nitrogen with four and no charge, and the isocyanide
    // without its charges: each named by its atom's line, predicted, flagged in the .npz.
    let hyper = corpus("hypervalent.sdf");
    let (report, status) = run("hypervalent", &hyper, "hyper.sdf", &["--npz", &s(&npz)]).unwrap();
    status.unwrap();
    assert_eq!(report.written, 3 * 2);
    assert_eq!(report.notes.len(), 4, "{:#?}", report.notes);
    for (k, words) in [
        (
            0,
            "hypervalent.sdf:5: molecule `pentavalent-carbon`: atom 1 (C, uncharged) has bond orders \
             adding up to 5, more than the 4 such an atom takes",
        ),
        (
            1,
            "hypervalent.sdf:22: molecule `uncharged-ammonium`: atom 1 (N, uncharged) has bond orders \
             adding up to 4, more than the 3 such an atom takes",
        ),
        (
            2,
            "hypervalent.sdf:33: molecule `methyl-isocyanide-uncharged` has carbon atom 1 (uncharged) \
             with bond orders adding up to 3 of 4",
        ),
        (
            3,
            "hypervalent.sdf:38: molecule `methyl-isocyanide-uncharged`: atom 2 (N, uncharged) has bond \
             orders adding up to 4, more than the 3",
        ),
    ] {
        assert!(
            report.notes[k].contains(words),
            "`{words}` missing: {}",
            report.notes[k]
        );
        if k != 2 {
            assert!(report.notes[k].contains("`M  CHG`"), "{}", report.notes[k]);
        }
    }
    assert_eq!(npz_bools(&npz, "hypervalent"), [true, true, true]);
    assert_eq!(npz_bools(&npz, "implicit_hydrogens"), [false, false, true]);
    std::fs::remove_file(&npz).unwrap();

    let heavy = corpus("no_hydrogens.sdf");
    let (report, status) = run("no_hydrogens", &heavy, "heavy.sdf", &["--npz", &s(&npz)]).unwrap();
    status.unwrap();
    assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
    let note = &report.notes[0];
    for words in ["no_hydrogens.sdf:1:", "no hydrogen atoms", "Chem.AddHs"] {
        assert!(note.contains(words), "`{words}` missing: {note}");
    }
    assert_eq!(npz_flags(&npz), (vec![vec![false; 2]], vec![false], vec![true]));
    std::fs::remove_file(&npz).unwrap();

    // A structure that would not fit V2000's columns is left out and named, never written
    // wide (unguarded: the guard may hand back the input, which fits).
    let far = corpus("far_from_origin.sdf");
    let (report, status) = run("far_from_origin", &far, "far.sdf", &["--guard", "off"]).unwrap();
    assert_eq!(report.written, 2, "{:?}", report.skipped);
    assert_eq!(report.skipped.len(), 2);
    for l in &report.skipped {
        assert!(
            l.contains("far_from_origin.sdf:29:") && l.contains("`ring-far`") && l.contains("10-column"),
            "{l}"
        );
    }
    assert!(status.unwrap_err().contains("--skip-bad"));
    let text = std::fs::read_to_string(dir.join("far.sdf")).unwrap();
    assert!(!text.contains("ring-far"));

    // Exploded structures: skipped by name and sample, flagged in the .npz, kept out of the output.
    let exploding = broken_checkpoint(dir, "exploding", "eps2.bias", 1e6);
    let mix = corpus("exploding_mix.extxyz");
    let (i, o, n) = (s(&mix), s(&dir.join("mix.extxyz")), s(&npz));
    let args = [
        "--checkpoint",
        exploding.to_str().unwrap(),
        "--input",
        &i,
        "--output",
        &o,
        "--npz",
        &n,
        "--generation",
        "noise",
    ];
    let (report, status) = predict_report("exploding_mix", &args).unwrap();
    assert_eq!(report.written, 2, "{:?}", report.skipped);
    assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
    for (k, l) in report.skipped.iter().enumerate() {
        for words in [
            "exploding_mix.extxyz:1:".to_owned(),
            "`nci-04846`".to_owned(),
            format!("sample {k}"),
            "exploded".to_owned(),
            "--generation".to_owned(),
        ] {
            assert!(l.contains(&words), "`{words}` missing: {l}");
        }
    }
    assert!(status.unwrap_err().contains("--skip-bad"));
    let written = read_extxyz(dir.join("mix.extxyz")).unwrap();
    assert!(written.iter().all(|f| f.mol_id == "chloride"));
    assert_eq!(
        npz_flags(&npz),
        (
            vec![vec![true; 2], vec![false; 2]],
            vec![false; 2],
            vec![false; 2]
        )
    );
    // The same on SDF: every structure exploded, so nothing is written, and the message names the record.
    let sdf = fixture("sdf", "rdkit_small.sdf");
    let (i, o) = (s(&sdf), s(&dir.join("boom.sdf")));
    let mut args = args.to_vec();
    args[3] = &i;
    args[5] = &o;
    args.truncate(6);
    args.extend(["--generation", "noise"]);
    let message = predict_report("exploding sdf", &args).unwrap_err();
    for words in [
        "rdkit_small.sdf:1:",
        "`ethanol`",
        "sample 0",
        "exploded",
        "--generation",
    ] {
        assert!(message.contains(words), "`{words}` missing: {message}");
    }
    assert!(!dir.join("boom.sdf").exists());

    // Issue 25: a structure broken because its input was is not blamed on the model. The 2D
    // drawing (exempt from the check before the model: warned about as a drawing) has atoms on
    // top of each other; with the exploding checkpoint and no guard its structures are broken,
    // and the message says it is the input.
    let (i, o) = (s(&corpus("flat_2d.sdf")), s(&dir.join("flat-boom.sdf")));
    let args = [
        "--checkpoint",
        exploding.to_str().unwrap(),
        "--input",
        &i,
        "--output",
        &o,
        "--guard",
        "off",
    ];
    let message = predict_report("flat_2d exploding", &args).unwrap_err();
    for words in [
        "flat_2d.sdf:1:",
        "`ethanol-2d`",
        "sample 0",
        "from an input that was no sound structure before any model ran: the input itself has atoms 1 \
         and 6 (C, H) 0.08 Å apart",
    ] {
        assert!(message.contains(words), "`{words}` missing: {message}");
    }
    assert!(!message.contains("--ddim-steps"), "{message}");
    // An input whose own bond is 2.02 Å: skipped before the model, naming the input (the REFUSED
    // table has its line); with --generation noise, which does not use its coordinates, it is
    // predicted with a warning.
    let stretched = corpus("input_bond_too_long.extxyz");
    let (report, status) = run("input_bond_too_long", &stretched, "st.extxyz", &[]).unwrap();
    assert_eq!(report.records_skipped, 1);
    assert!(
        report.skipped[0].contains("--generation refine would start from them")
            && !report.skipped[0].contains("exploded"),
        "{:?}",
        report.skipped
    );
    assert!(status.is_err());
    assert!(read_extxyz(dir.join("st.extxyz"))
        .unwrap()
        .iter()
        .all(|f| f.mol_id == "chloride"));
    let noise = ["--generation", "noise"];
    let (report, _) = run("input_bond_too_long noise", &stretched, "stn.extxyz", &noise).unwrap();
    assert_eq!(report.records_skipped, 0, "{:?}", report.skipped);
    assert!(
        report.notes.len() == 1
            && report.notes[0]
                .contains("`formic-acid-stretched`: the input structure has bond 3-5 (O-H) 2.02 Å long")
            && report.notes[0].contains("does not use its coordinates"),
        "{:?}",
        report.notes
    );
    // A count smaller than the atom lines: the record is skipped, never written cut; --skip-bad
    // exits 0 with the other record's structures only.
    let short = corpus("count_smaller.extxyz");
    for extra in [&[][..], &["--skip-bad"][..]] {
        let (report, status) = run("count_smaller", &short, "short.extxyz", extra).unwrap();
        assert_eq!((report.records, report.records_skipped), (2, 1));
        assert_skipped(&report, "count_smaller.extxyz:6:", "declares 3 atoms");
        assert_eq!(status.is_ok(), !extra.is_empty());
        let written = read_extxyz(dir.join("short.extxyz")).unwrap();
        assert_eq!(written.len(), 2);
        assert!(written.iter().all(|f| f.num_atoms() == 5));
    }

    // A molecule too large for memory is refused by name, atom count and limit; no panic.
    let big = dir.join("big.extxyz");
    let mut text = String::from("10001\nProperties=species:S:1:pos:R:3 mol_id=huge\n");
    for a in 0..10_001 {
        text += &format!(
            "C {} {} {}\n",
            (a % 100) as f64 * 1.5,
            (a / 100) as f64 * 1.5,
            0.1 * (a % 7) as f64
        );
    }
    std::fs::write(&big, text).unwrap();
    let message = run("10001 atoms", &big, "big-out.extxyz", &[]).unwrap_err();
    for words in ["big.extxyz:1:", "`huge`", "10001 atoms", "at most 512"] {
        assert!(message.contains(words), "`{words}` missing: {message}");
    }
    assert!(!dir.join("big-out.extxyz").exists());

    // Kekulé and aromatic notation of one ring give the same structure, and predict says it read them so.
    let relax = ["--generation", "relax", "--samples", "1"];
    let mut summaries = Vec::new();
    for (fixture, output) in [("kekule_ring.sdf", "k.sdf"), ("aromatic_ring.sdf", "a.sdf")] {
        let (report, status) = run(fixture, &corpus(fixture), output, &relax).unwrap();
        status.unwrap();
        summaries.push(report.summary);
    }
    let (k, a) = (
        read_sdf(dir.join("k.sdf")).unwrap(),
        read_sdf(dir.join("a.sdf")).unwrap(),
    );
    assert_eq!(k[0].frame.pos, a[0].frame.pos);
    assert!(
        summaries[0].contains("read 6 bonds of Kekulé-written aromatic rings"),
        "{}",
        summaries[0]
    );
    assert!(!summaries[1].contains("Kekulé"), "{}", summaries[1]);
    // The output keeps the file's own (Kekulé) bonds.
    assert!(k[0].frame.bonds.iter().all(|b| b.2 != 4));
}

/// Issue 25: predict streams its input, batch by batch, into a temporary output file. A
/// structure refused in a later batch, after earlier batches were written, fails --strict with
/// nothing left behind; without --strict the same file gives every other structure, in order;
/// gzip output is the same text compressed (compared under relax, which draws no noise: other
/// tests draw from libtorch's one generator meanwhile).
#[test]
fn a_failure_after_batches_were_written_leaves_nothing() {
    tch::set_num_threads(1);
    let scratch = Scratch::new("streamed");
    let dir = &scratch.0;
    let ckpt = checkpoint(dir, false);
    // 40 good molecules (a batch holds 32), then ethanol and ring-far, whose refinement does
    // not fit V2000's columns: the refusal comes in the second batch.
    let good = std::fs::read_to_string(fixture("sdf", "rdkit_small.sdf")).unwrap();
    let far = std::fs::read_to_string(corpus("far_from_origin.sdf")).unwrap();
    let input = dir.join("many.sdf");
    std::fs::write(&input, good.repeat(10) + &far).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let run = |output: &str, extra: &[&str]| {
        let (c, i, o) = (s(&ckpt), s(&input), s(&dir.join(output)));
        let mut args = vec![
            "--checkpoint",
            &c,
            "--input",
            &i,
            "--output",
            &o,
            "--guard",
            "off",
        ];
        args.extend_from_slice(extra);
        predict_report(output, &args)
    };
    let message = run("strict.sdf", &["--strict"]).unwrap_err();
    assert!(
        message.contains(&format!("many.sdf:{}:", 10 * good.lines().count() + 29))
            && message.contains("`ring-far`, sample 0")
            && message.contains("nothing was written"),
        "{message}"
    );
    let mut left = listing(dir);
    left.retain(|n| !n.ends_with(".safetensors"));
    assert_eq!(left, ["many.sdf"], "leftovers");
    let (report, status) = run("all.sdf", &["--skip-bad"]).unwrap();
    status.unwrap();
    assert_eq!(
        (report.records, report.written, report.structures_skipped),
        (42, 41 * 2, 2)
    );
    let ids: Vec<String> = read_sdf(dir.join("all.sdf"))
        .unwrap()
        .into_iter()
        .map(|r| r.frame.mol_id)
        .collect();
    let expected: Vec<String> = read_sdf(&input).unwrap()[..41]
        .iter()
        .flat_map(|r| [r.frame.mol_id.clone(), r.frame.mol_id.clone()])
        .collect();
    assert_eq!(ids, expected);
    let relax = ["--generation", "relax", "--samples", "1"];
    for output in ["relax.sdf", "relax.sdf.gz"] {
        let (report, status) = run(output, &relax).unwrap();
        status.unwrap();
        assert_eq!(report.written, 42);
    }
    let plain = std::fs::read_to_string(dir.join("relax.sdf")).unwrap();
    let packed = physcon::data::read_text(&dir.join("relax.sdf.gz")).unwrap();
    assert!(plain == packed, "relax.sdf.gz holds other text than relax.sdf");
    let mut left = listing(dir);
    left.retain(|n| !n.ends_with(".safetensors"));
    assert_eq!(left, ["all.sdf", "many.sdf", "relax.sdf", "relax.sdf.gz"]);
}
