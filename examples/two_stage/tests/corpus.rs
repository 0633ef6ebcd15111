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
use two_stage::cli::{run, Cli};
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
    let settings = Settings::preset(Preset::Quick).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let _model = Model::new(&vs.root(), settings.model, settings.diffusion_steps);
    if nan {
        let vars = vs.variables();
        let mut w = vars["eps1.weight"].shallow_clone();
        tch::no_grad(|| {
            let _ = w.fill_(f64::NAN);
        });
    }
    let adam = Adam::new(&vs.trainable_variables());
    let path = dir.join(if nan {
        "nan.safetensors"
    } else {
        "model.safetensors"
    });
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

/// Runs `two_stage predict` with `args`; a panic fails the test, naming the case.
fn predict(case: &str, args: &[&str]) -> Result<(), String> {
    let mut argv = vec!["two_stage", "predict"];
    for (flag, value) in [
        ("--generation", "refine"),
        ("--samples", "2"),
        ("--start", "10"),
        ("--ddim-steps", "5"),
    ] {
        if !args.contains(&flag) {
            argv.extend([flag, value]);
        }
    }
    argv.extend_from_slice(args);
    match catch_unwind(AssertUnwindSafe(|| {
        Cli::try_parse_from(&argv)
            .map_err(|e| e.to_string())
            .and_then(|cli| run(cli).map_err(|e| e.to_string()))
    })) {
        Ok(result) => result,
        Err(_) => panic!("{case}: predict panicked"),
    }
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
    for (input, line, words) in &cases {
        let name = input.file_name().unwrap().to_str().unwrap();
        let target = if name.contains("xyz") { &out_xyz } else { &out };
        let before = std::fs::read(input).unwrap();
        let message = predict(
            name,
            &[
                "--checkpoint",
                ckpt,
                "--input",
                input.to_str().unwrap(),
                "--output",
                target.to_str().unwrap(),
            ],
        )
        .expect_err(name);
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
        assert_eq!(
            listing(&scratch.0),
            ["input-long_token.extxyz"],
            "{name}: leftovers"
        );
        assert_eq!(std::fs::read(input).unwrap(), before, "{name}: input changed");
        messages.push(message);
    }
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
    let flags: [(&str, &str, &[&str]); 7] = [
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
    // Molecules with elements the model does not know are skipped; the rest predicted.
    let output = dir.join("bromine.sdf");
    predict(
        "with_bromine.sdf",
        &[
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--input",
            fixture("sdf", "with_bromine.sdf").to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ],
    )
    .unwrap();
    let ids: Vec<String> = read_sdf(&output)
        .unwrap()
        .into_iter()
        .map(|r| r.frame.mol_id)
        .collect();
    assert_eq!(ids, ["methanol", "methanol", "formamide", "formamide"]);
}
