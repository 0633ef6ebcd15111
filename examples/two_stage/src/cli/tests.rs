//! The command line end to end.

use crate::Error;
use clap::Parser;
use physcon::data::read_extxyz;

use super::*;
use crate::generation::{GenArgs, GenerationName};
use crate::npz;
use crate::objective::Arm;
use crate::threads::Threads;
use crate::training::load_model;

/// `--set` reaches the settings through the one schema (its key and value
/// checks are `settings`' tests).
#[test]
fn set_flags_reach_their_settings() {
    let args =
        TrainArgs::try_parse_from(["train", "--set", "plan.stage1.force=1.5", "--set", "kt = 0.05"]).unwrap();
    assert_eq!(
        args.set,
        [
            ("plan.stage1.force".to_owned(), "1.5".to_owned()),
            ("kt".into(), "0.05".into())
        ]
    );
    let got = Settings::with_overrides(args.preset, &args.set).unwrap();
    assert_eq!((got.plan.stage1.force, got.kt), (1.5, 0.05));
    assert!(TrainArgs::try_parse_from(["train", "--set", "kt"]).is_err());
    // A seed a checkpoint cannot hold is refused at the flag, not after training.
    assert!(TrainArgs::try_parse_from(["train", "--seeds", "0,9223372036854775808"]).is_err());
    assert!(TrainArgs::try_parse_from(["train", "--seeds", "9223372036854775807"]).is_ok());
}

/// The `quick` preset end to end: both arms, evaluation, report, resume and predict.
#[test]
fn quick_preset_end_to_end() {
    let _rng = crate::rng_lock();
    tch::set_num_threads(1);
    let root = crate::repo_root();
    let out = std::env::temp_dir().join(format!("physcon-two-stage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut argv: Vec<std::ffi::OsString> = [
        "two_stage",
        "--preset",
        "quick",
        "--start",
        "10",
        "--ddim-steps",
        "5",
        "--ablation",
        "--oracle",
    ]
    .map(Into::into)
    .to_vec();
    argv.extend([
        "--data".into(),
        root.join("data").into(),
        "--out".into(),
        out.clone().into(),
    ]);
    // Several samples of a deterministic generation are refused before any training.
    let mut same_samples = argv.clone();
    same_samples.extend(["--samples".into(), "2".into()]);
    assert!(matches!(
        train(&TrainArgs::parse_from(same_samples)),
        Err(Error::Flag { flag: "--samples", reason }) if reason.contains("--generation refine")
    ));
    assert!(!out.exists());
    let args = TrainArgs::parse_from(argv);
    train(&args).unwrap();
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("consistency") && report.contains("MMFF structure"));
    // The ablation trains and reports all four stage-2 arms, and the oracle.
    for arm in Arm::ABLATION.into_iter().chain([Arm::Oracle]) {
        assert!(
            report.contains(arm.describe()),
            "{} missing from the report",
            arm.name()
        );
        assert!(out.join(format!("seed-0/{}.safetensors", arm.name())).exists());
        assert!(out.join(format!("scatter-{}.svg", arm.name())).exists());
    }
    assert!(out.join("rmsd-paired.svg").exists());
    // A finished run is not overwritten: a fresh --out (or --resume) is required.
    assert!(matches!(train(&args), Err(Error::Flag { flag: "--out", .. })));
    let checkpoint = out.join("seed-0/consistency.safetensors");
    let output = out.join("predicted.extxyz");
    // Two samples each, drawn with noise (the default relax is deterministic).
    let refine = GenArgs {
        samples: Some(2),
        generation: GenerationName::Refine,
        ..args.gen.clone()
    };
    let predict_args = |preset: Option<Preset>| PredictArgs {
        checkpoint: checkpoint.clone(),
        preset,
        input: root.join("tests/fixtures/extxyz/valid_small.extxyz"),
        output: output.clone(),
        force: false,
        strict: false,
        skip_bad: false,
        gen: refine.clone(),
        npz: Some(out.join("predicted.npz")),
        threads: Threads::default(),
    };
    // No --preset: the checkpoint's own settings (quick) build the model.
    predict(&predict_args(None)).unwrap();
    let predicted = read_extxyz(&output).unwrap();
    assert_eq!(predicted.len(), 4 * 2);
    // Each structure says whether the energy guard kept its refinement, and how the
    // energy model's energy changed (never up).
    let text = std::fs::read_to_string(&output).unwrap();
    let changes: Vec<f64> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("physcon_energy_change="))
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(changes.len(), 8);
    assert!(changes.iter().all(|c| *c <= 0.0), "{changes:?}");
    assert_eq!(text.matches("physcon_refined=").count(), 8);
    assert_eq!(predicted[0].mol_id, "nci-04846");
    assert_eq!(predicted[0].species, [8, 6, 8, 1, 1]);
    assert_eq!(predicted[0].level.as_deref(), Some("physcon-consistency"));
    // The .npz holds the same structures, sample-major.
    let file = std::fs::File::open(out.join("predicted.npz")).unwrap();
    let mut arrays = ndarray_npy::NpzReader::new(file).unwrap();
    let positions: physcon::ndarray::Array3<f64> = arrays.by_name("positions").unwrap();
    assert_eq!(positions.dim(), (2, 5 + 5 + 9 + 9, 3));
    assert_eq!(
        positions.slice(physcon::ndarray::s![1, 5..10, ..]),
        predicted[3].pos_view()
    );
    let refined: physcon::ndarray::Array2<bool> = arrays.by_name("refined").unwrap();
    let change: physcon::ndarray::Array2<f64> = arrays.by_name("energy_change").unwrap();
    assert_eq!((refined.dim(), change.dim()), ((4, 2), (4, 2)));
    assert!(change.iter().all(|c| *c <= 0.0));
    let ids = npz::read_mol_ids(&mut arrays).unwrap();
    assert_eq!(ids, ["nci-04846", "nci-04846", "nci-03004", "nci-03004"]);
    // Neither output is replaced without --force.
    assert!(matches!(
        predict(&predict_args(None)),
        Err(Error::Flag { flag: "--output", .. })
    ));
    std::fs::remove_file(&output).unwrap();
    assert!(matches!(
        predict(&predict_args(None)),
        Err(Error::Flag { flag: "--npz", .. })
    ));
    std::fs::remove_file(out.join("predicted.npz")).unwrap();
    predict(&predict_args(Some(Preset::Quick))).unwrap();
    std::fs::remove_file(&output).unwrap();
    std::fs::remove_file(out.join("predicted.npz")).unwrap();
    // The FIRE reference writes one relaxed structure per molecule by default.
    let mut fire = predict_args(None);
    fire.npz = None;
    fire.gen = GenArgs {
        samples: None,
        generation: GenerationName::Fire,
        max_steps: 20,
        ..args.gen.clone()
    };
    predict(&fire).unwrap();
    assert_eq!(read_extxyz(&output).unwrap().len(), 4);
    std::fs::remove_file(&output).unwrap();
    // A --preset the checkpoint was not trained with is refused, naming the setting.
    let refused = |r: Result<()>| match r {
        Err(Error::File { reason, .. }) => reason,
        Err(other) => panic!("unexpected error {other}"),
        Ok(()) => panic!("a mismatching --preset was accepted"),
    };
    let reason = refused(predict(&predict_args(Some(Preset::Cpu))).map(|_| ()));
    assert!(
        reason.contains(
            "written with `checkpoint_every = 10`, but the requested settings have `checkpoint_every = 200`"
        ),
        "{reason}"
    );
    assert!(!output.exists());
    let reason = refused(evaluate_checkpoint(&EvaluateArgs {
        checkpoint: checkpoint.clone(),
        preset: Some(Preset::Paper),
        data: root.join("data"),
        split: SplitName::Val,
        gen: args.gen.clone(),
        npz: None,
        threads: Threads::default(),
    }));
    assert!(reason.contains("`checkpoint_every = 10`"), "{reason}");
    // Another model size alone is named too.
    let mut wider = Settings::preset(Preset::Quick).unwrap();
    wider.model.hidden = 64;
    assert!(matches!(
        load_model(&checkpoint, Some(&wider)),
        Err(Error::File { reason, .. }) if reason.contains("`model.hidden = 32`")
    ));
    std::fs::remove_dir_all(&out).unwrap();
}

/// `--guard` and `--rounds` are refused where the generation has no use for them,
/// naming the flag, before any model is read.
#[test]
fn guard_and_rounds_only_where_they_apply() {
    use crate::eval::Guard;
    use crate::generation::check_generation;
    let gen = |extra: &[&str]| {
        let mut argv = vec!["train"];
        argv.extend(extra);
        TrainArgs::try_parse_from(argv).unwrap().gen
    };
    let refused = |extra: &[&str]| match check_generation(&gen(extra), 1000) {
        Err(Error::Flag { flag, reason }) => format!("{flag}: {reason}"),
        other => panic!("{extra:?} accepted: {:?}", other.map(|_| ())),
    };
    assert!(refused(&["--generation", "fire", "--guard", "energy"]).starts_with("--guard:"));
    assert!(refused(&["--generation", "noise", "--guard", "off"]).starts_with("--guard:"));
    assert!(refused(&["--rounds", "0"]).starts_with("--rounds: must lie in 1..=100"));
    assert!(refused(&["--rounds", "2", "--generation", "refine"]).starts_with("--rounds: only"));
    assert!(refused(&["--generation", "descent", "--descent-step", "0"]).starts_with("--descent-step:"));
    assert!(refused(&["--generation", "descent", "--descent-step", "NaN"]).starts_with("--descent-step:"));
    assert!(refused(&["--generation", "descent", "--descent-steps", "0"]).starts_with("--descent-steps:"));
    assert!(refused(&["--generation", "descent", "--guard", "off"]).starts_with("--guard:"));
    assert_eq!(
        gen(&["--generation", "descent"]).generation().guard(),
        Guard::Energy
    );
    for ok in [
        &["--rounds", "3"][..],
        &["--generation", "refine", "--guard", "off"],
        &["--generation", "fire"],
    ] {
        check_generation(&gen(ok), 1000).unwrap();
    }
    // Relax and refine are guarded unless told otherwise; the others have nothing to guard.
    assert_eq!(gen(&[]).generation().guard(), Guard::EnergyAndMove(0.03));
    assert_eq!(gen(&["--max-move", "0"]).generation().guard(), Guard::Energy);
    assert!(refused(&["--max-move=-0.1"]).starts_with("--max-move:"));
    assert_eq!(gen(&["--guard", "off"]).generation().guard(), Guard::Off);
    assert_eq!(gen(&["--generation", "fire"]).generation().guard(), Guard::Off);
}
