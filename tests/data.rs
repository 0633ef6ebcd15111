//! Extended-XYZ I/O and datasets: ASE-written fixtures parse, each malformed
//! fixture gives its error at its line, write-then-read is exact, and no
//! input (arbitrary bytes, mutated files) makes the parser panic.

mod common;

use std::path::{Path, PathBuf};

use physcon::data::{
    format_extxyz, format_extxyz_with_info, parse_extxyz, read_extxyz, write_extxyz, Dataset, Frame, Splits,
};
use physcon::{Error, ParseError};
use proptest::prelude::*;
use tch::{Device, Kind};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/extxyz")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("physcon-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn ase_fixture_parses_with_labels_and_masks() {
    let frames = read_extxyz(fixture("valid_small.extxyz")).unwrap();
    assert_eq!(frames.len(), 4);
    let ids: Vec<&str> = frames.iter().map(|f| f.mol_id.as_str()).collect();
    assert_eq!(ids, ["nci-04846", "nci-04846", "nci-03004", "nci-03004"]);
    let levels: Vec<&str> = frames.iter().map(|f| f.level.as_deref().unwrap()).collect();
    assert_eq!(levels, ["mmff", "xtb-opt", "mmff", "xtb-perturbed"]);
    let formic = &frames[0];
    assert_eq!(formic.smiles.as_deref(), Some("O=CO"));
    assert_eq!(formic.species, [8, 6, 8, 1, 1]);
    assert_eq!(formic.energy, Some(-306.9620250400583));
    assert_eq!(formic.pos[0], [-0.56969649, 1.18785455, 0.09368405]);
    assert_eq!(
        formic.forces.as_ref().unwrap()[4],
        [0.14410981, -0.45273504, -0.03786733]
    );
    assert_eq!(formic.bonds, [(0, 1, 2), (1, 2, 1), (1, 3, 1), (2, 4, 1)]);
    assert!(
        frames[1].forces.is_none(),
        "the xtb-opt frame has no forces column"
    );
    assert_eq!(frames[2].smiles.as_deref(), Some("N=c1nn[nH][nH]1"));
    assert!(
        frames[2].bonds.iter().any(|b| b.2 == 4),
        "aromatic bonds are order 4"
    );
    assert_eq!(read_extxyz(fixture("valid_small.extxyz.gz")).unwrap(), frames);
}

#[test]
fn malformed_fixtures_name_file_and_line() {
    type IsKind = fn(&ParseError) -> bool;
    let cases: [(&str, usize, IsKind); 9] = [
        ("truncated_frame.extxyz", 26, |k| {
            matches!(
                k,
                ParseError::Truncated {
                    expected: 9,
                    found: 6
                }
            )
        }),
        ("wrong_atom_count.extxyz", 8, |k| {
            matches!(k, ParseError::Columns { got: 1, .. })
        }),
        (
            "unknown_element.extxyz",
            11,
            |k| matches!(k, ParseError::UnknownElement(s) if s == "Xx"),
        ),
        (
            "nonfinite_number.extxyz",
            17,
            |k| matches!(k, ParseError::NonFinite(f) if f == "pos"),
        ),
        ("missing_key.extxyz", 9, |k| {
            matches!(k, ParseError::MissingKey("mol_id"))
        }),
        (
            "bad_bonds_index.extxyz",
            2,
            |k| matches!(k, ParseError::Bonds(r) if r.contains("index 5")),
        ),
        (
            "bad_bonds_length.extxyz",
            16,
            |k| matches!(k, ParseError::Bonds(r) if r.contains("26 entries")),
        ),
        (
            "properties_width_wraps_pos.extxyz",
            2,
            |k| matches!(k, ParseError::Header(r) if r.contains("column counts")),
        ),
        (
            "properties_width_wraps_species.extxyz",
            2,
            |k| matches!(k, ParseError::Header(r) if r.contains("column counts")),
        ),
    ];
    for (name, expected_line, is_kind) in cases {
        match read_extxyz(fixture(name)) {
            Err(Error::Parse { path, line, kind }) => {
                assert_eq!(path, fixture(name));
                assert_eq!(line, expected_line, "{name}: {kind}");
                assert!(is_kind(&kind), "{name}: unexpected {kind:?}");
                let message = Error::Parse { path, line, kind }.to_string();
                assert!(
                    message.contains(name) && message.contains(&format!(":{expected_line}:")),
                    "{message}"
                );
            }
            other => panic!("{name}: expected a parse error, got {other:?}"),
        }
    }
}

/// A frame whose atom count is smaller than its atom lines is refused at the
/// first atom line beyond the count, never read cut short; the frames after
/// it are still read.
#[test]
fn a_short_atom_count_is_refused_not_cut() {
    let text = std::fs::read_to_string(fixture("valid_small.extxyz")).unwrap();
    let short = text.replacen("5\n", "3\n", 1);
    let frames = physcon::data::parse_extxyz_frames(&short, Path::new("short.extxyz"));
    assert_eq!(frames.len(), 4);
    match &frames[0] {
        (1, Err(Error::Parse { line: 6, kind, .. })) => {
            let message = kind.to_string();
            for words in [
                "is an atom line",
                "the atom count (line 1) declares 3 atoms",
                "5 atom lines",
            ] {
                assert!(message.contains(words), "`{words}`: {message}");
            }
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(frames[1].0, 8);
    assert!(frames[1..].iter().all(|(_, f)| f.is_ok()));
    assert!(parse_extxyz(&short, Path::new("short.extxyz")).is_err());
    // The same on the file's last frame, and with an atomic-number column.
    let last = text.replacen(
        "9\nProperties=species:S:1:pos:R:3:forces:R:3 mol_id=nci-03004 smiles=\"N=c1nn[nH][nH]1\" level=xtb",
        "7\nProperties=species:S:1:pos:R:3:forces:R:3 mol_id=nci-03004 smiles=\"N=c1nn[nH][nH]1\" level=xtb",
        1,
    );
    assert_ne!(last, text);
    let frames = physcon::data::parse_extxyz_frames(&last, Path::new("last.extxyz"));
    assert!(
        matches!(frames.last(), Some((26, Err(Error::Parse { line: 35, .. })))),
        "{frames:?}"
    );
    let numbered = "2\nProperties=Z:I:1:pos:R:3 mol_id=hcl\n17 0 0 0\n1 1.27 0 0\n1 2.5 0 0\n";
    let frames = physcon::data::parse_extxyz_frames(numbered, Path::new("z.extxyz"));
    assert!(
        matches!(&frames[..], [(1, Err(Error::Parse { line: 5, .. }))]),
        "{frames:?}"
    );
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let path = fixture("does_not_exist.extxyz");
    assert!(matches!(read_extxyz(&path), Err(Error::Io { path: p, .. }) if p == path));
    let nowhere = Path::new("/nonexistent-dir/out.extxyz");
    let frames = read_extxyz(fixture("valid_small.extxyz")).unwrap();
    assert!(matches!(write_extxyz(nowhere, &frames), Err(Error::Io { .. })));
}

#[test]
fn write_then_read_is_exact_plain_and_gzip() {
    let frames = read_extxyz(fixture("valid_small.extxyz")).unwrap();
    let mut odd = frames[0].clone();
    odd.mol_id = "with space \"and quote\" \\ slash".into();
    odd.smiles = Some("F/C=C\\F".into());
    odd.pos[0] = [1.0 / 3.0, -2.0e-12, 123456.789012345];
    odd.energy = Some(-0.1 - 0.2);
    let frames: Vec<Frame> = frames.into_iter().chain([odd]).collect();
    let dir = scratch("roundtrip");
    for name in ["out.extxyz", "out.extxyz.gz"] {
        let path = dir.join(name);
        write_extxyz(&path, &frames).unwrap();
        assert_eq!(read_extxyz(&path).unwrap(), frames, "{name}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "no temporary files left: {leftovers:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn writer_rejects_what_it_could_not_read_back() {
    let mut frame = read_extxyz(fixture("valid_small.extxyz")).unwrap().remove(0);
    frame.pos[1][2] = f64::NAN;
    assert!(matches!(
        format_extxyz(&[frame.clone()]),
        Err(Error::InvalidArgument { arg: "frames", .. })
    ));
    frame.pos[1][2] = 0.0;
    frame.bonds.push((0, 9, 1));
    assert!(format_extxyz(&[frame.clone()]).is_err());
    frame.bonds.pop();
    frame.species[0] = 200;
    assert!(format_extxyz(&[frame]).is_err());
}

/// Extra comment-line keys are written after the frame's own, quoted where ASE
/// needs it, and read back as the same frames; keys that would clash or not
/// parse, and lists that do not match the frames, are refused.
#[test]
fn extra_keys_are_written_and_read_back() {
    let frames = read_extxyz(fixture("valid_small.extxyz")).unwrap();
    let two = &frames[..2];
    let info = vec![
        vec![("physcon_refined".to_owned(), "T".to_owned())],
        vec![
            ("note".to_owned(), "two words".to_owned()),
            ("dE".to_owned(), "-0.25".to_owned()),
        ],
    ];
    let text = format_extxyz_with_info(two, &info).unwrap();
    let comments: Vec<&str> = text.lines().filter(|l| l.starts_with("Properties=")).collect();
    assert!(
        comments[0].ends_with(" physcon_refined=T pbc=\"F F F\""),
        "{}",
        comments[0]
    );
    assert!(
        comments[1].contains(" note=\"two words\" dE=-0.25 pbc="),
        "{}",
        comments[1]
    );
    assert_eq!(parse_extxyz(&text, Path::new("extra.extxyz")).unwrap(), two);
    assert_eq!(
        format_extxyz_with_info(two, &[]).unwrap(),
        format_extxyz(two).unwrap()
    );
    let refused = |info: &[Vec<(String, String)>]| {
        matches!(
            format_extxyz_with_info(two, info),
            Err(Error::InvalidArgument { arg: "info", .. })
        )
    };
    assert!(refused(&info[..1]));
    for key in ["energy", "pbc", "mol_id", "2x", "a-b", ""] {
        assert!(
            refused(&[vec![(key.to_owned(), "1".to_owned())], vec![]]),
            "{key}"
        );
    }
}

#[test]
fn shipped_dataset_reads_and_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let splits = Splits::read_dir(&dir).unwrap();
    for (name, split) in [
        ("train", &splits.train),
        ("val", &splits.val),
        ("test", &splits.test),
    ] {
        assert!(!split.is_empty(), "{name}");
        assert!(
            split
                .frames()
                .iter()
                .all(|f| f.energy.is_some() && !f.bonds.is_empty()),
            "{name}"
        );
    }
    assert!(
        splits.train.with_level("xtb-opt").is_empty(),
        "train holds only cheap-level structures"
    );
    assert_eq!(
        splits.test.with_level("xtb-opt").len(),
        splits.test.with_level("mmff").len()
    );
    let ids = |d: &Dataset| {
        d.molecule_ids()
            .into_iter()
            .map(str::to_owned)
            .collect::<std::collections::HashSet<_>>()
    };
    assert!(
        ids(&splits.train).is_disjoint(&ids(&splits.test))
            && ids(&splits.val).is_disjoint(&ids(&splits.test))
    );
    let path = scratch("shipped").join("test.extxyz.gz");
    write_extxyz(&path, splits.test.frames()).unwrap();
    assert_eq!(read_extxyz(&path).unwrap(), splits.test.frames());
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn batches_cover_every_frame_once_and_are_seeded() {
    let data = Dataset::read(fixture("valid_small.extxyz")).unwrap();
    let a = data.batches(3, 7).unwrap();
    assert_eq!(a, data.batches(3, 7).unwrap());
    assert_eq!(a.iter().map(Vec::len).collect::<Vec<_>>(), [3, 1]);
    let mut all: Vec<usize> = a.concat();
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2, 3]);
    let orders: std::collections::HashSet<Vec<usize>> =
        (0..20).map(|s| data.batches(4, s).unwrap().concat()).collect();
    assert!(orders.len() > 1, "different seeds shuffle differently");
    assert!(matches!(
        data.batches(0, 1),
        Err(Error::InvalidArgument {
            arg: "batch_size",
            ..
        })
    ));
}

#[test]
fn labelled_batches_mask_absent_labels() {
    let data = Dataset::read(fixture("valid_small.extxyz")).unwrap();
    let b = data.batch(&[1, 2, 0], Kind::Float, Device::Cpu).unwrap();
    assert_eq!(b.batch.num_molecules(), 3);
    assert_eq!(b.batch.num_atoms(), 5 + 9 + 5);
    assert_eq!(Vec::<bool>::try_from(&b.force_mask).unwrap(), [false, true, true]);
    assert_eq!(Vec::<bool>::try_from(&b.energy_mask).unwrap(), [true, true, true]);
    assert!(
        b.forces.narrow(0, 0, 5).isnan().all().int64_value(&[]) == 1,
        "absent forces are NaN, not zeros"
    );
    assert!(b.forces.narrow(0, 5, 14).isfinite().all().int64_value(&[]) == 1);
    assert_eq!(b.mol_ids, ["nci-04846", "nci-03004", "nci-04846"]);
    assert_eq!(b.energy.kind(), Kind::Float);
    let bonds = b.batch.bonds().unwrap();
    // Bonds are renumbered into the batch: the first frame's 4 bonds, then 9 aromatic-ring ones offset by 5.
    assert_eq!(bonds.index().size(), [4 + 9 + 4, 2]);
    assert_eq!(bonds.index().int64_value(&[4, 0]), 5);
    assert!(matches!(
        data.batch(&[9], Kind::Float, Device::Cpu),
        Err(Error::IndexOutOfRange { .. })
    ));
}

#[test]
fn frames_of_one_molecule_must_agree() {
    let text = std::fs::read_to_string(fixture("valid_small.extxyz")).unwrap();
    // Frame 2 of nci-04846 with its first two atoms swapped (O, C -> C, O).
    let lines: Vec<&str> = text.lines().collect();
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited.swap(9, 10);
    let path = scratch("inconsistent").join("bad.extxyz");
    std::fs::write(&path, edited.join("\n")).unwrap();
    match Dataset::read(&path) {
        Err(Error::Parse {
            line: 8,
            kind: ParseError::Inconsistent(_),
            ..
        }) => {}
        other => panic!("expected an inconsistency at line 8, got {other:?}"),
    }
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

fn valid_text() -> String {
    std::fs::read_to_string(fixture("valid_small.extxyz")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_extxyz(&String::from_utf8_lossy(&bytes), Path::new("fuzz"));
    }

    /// `Properties` whose declared column counts disagree with the atom
    /// lines: small counts, counts near `usize::MAX` (their sum wraps), and
    /// atom lines of any width. Whatever parses has every column in range.
    #[test]
    fn properties_that_disagree_with_the_data_never_panic(
        columns in prop::collection::vec(
            (
                prop::sample::select(vec!["species", "Z", "pos", "forces", "x"]),
                prop::sample::select(vec!["S", "R", "I", "L"]),
                prop_oneof![
                    1usize..5,
                    (0usize..5).prop_map(|k| usize::MAX - k),
                    (0usize..4).prop_map(|k| usize::MAX / 2 + k),
                ],
            ),
            1..6,
        ),
        fields in prop::collection::vec(prop::sample::select(vec!["O", "H", "8", "1.5", "-0.25", "x"]), 0..9),
        atoms in 1usize..3,
    ) {
        let spec: Vec<String> = columns.iter().map(|(n, t, w)| format!("{n}:{t}:{w}")).collect();
        let mut text = format!("{atoms}\nProperties={} mol_id=m0\n", spec.join(":"));
        for _ in 0..atoms {
            text.push_str(&fields.join(" "));
            text.push('\n');
        }
        if let Ok(frames) = parse_extxyz(&text, Path::new("fuzz")) {
            prop_assert_eq!(frames[0].pos.len(), atoms);
        }
    }

    /// Mutations of a valid file: byte edits, deleted and duplicated lines.
    /// Whatever parses must survive a format-parse round trip unchanged.
    #[test]
    fn mutated_files_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        drop_line in prop::option::of(any::<prop::sample::Index>()),
        dup_line in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let text = common::mutate(valid_text().into_bytes(), edits, drop_line, dup_line);
        if let Ok(frames) = parse_extxyz(&text, Path::new("fuzz")) {
            if let Ok(text) = format_extxyz(&frames) {
                prop_assert_eq!(parse_extxyz(&text, Path::new("again")).unwrap(), frames);
            }
        }
    }
}

/// Every fixture (extended XYZ, SDF, the user corpus), read record by record
/// from its file in bounded memory, gives what parsing its whole text gives,
/// whatever the read buffer's size; a file read_text refuses ends its lines
/// with read_text's error.
#[test]
fn records_read_one_at_a_time_are_the_whole_texts_records() {
    use physcon::data::{
        parse_extxyz_frames, parse_sdf_records, read_text, ExtxyzFrames, SdfRecords, TextLines,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files = Vec::new();
    for dir in ["extxyz", "sdf", "userio"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    files.sort();
    let mut compared = 0;
    for path in &files {
        for capacity in [3, 64 << 10] {
            let lines = || TextLines::open_with(path, physcon::data::MAX_TEXT_BYTES, capacity).unwrap();
            let whole = read_text(path);
            // The records, then the lines after them: a fault of the whole text shows at the end.
            let mut sdf = SdfRecords::new(lines(), path);
            let sdf = sdf
                .by_ref()
                .collect::<physcon::Result<Vec<_>>>()
                .and_then(|r| sdf.into_lines().collect::<physcon::Result<Vec<_>>>().map(|_| r));
            let mut xyz = ExtxyzFrames::new(lines(), path);
            let xyz = xyz
                .by_ref()
                .collect::<physcon::Result<Vec<_>>>()
                .and_then(|r| xyz.into_lines().collect::<physcon::Result<Vec<_>>>().map(|_| r));
            match whole {
                Ok(text) => {
                    let name = path.display();
                    assert_eq!(
                        format!("{:?}", parse_sdf_records(&text, path)),
                        format!("{:?}", sdf.unwrap()),
                        "{name}"
                    );
                    assert_eq!(
                        format!("{:?}", parse_extxyz_frames(&text, path)),
                        format!("{:?}", xyz.unwrap()),
                        "{name}"
                    );
                    compared += 1;
                }
                Err(e) => {
                    assert_eq!(e.to_string(), sdf.unwrap_err().to_string());
                    assert_eq!(e.to_string(), xyz.unwrap_err().to_string());
                }
            }
        }
    }
    assert!(compared > 100, "{compared}");
}
