//! SDF/MOL I/O: RDKit-written fixtures (V2000, V3000, gzip, a MOL file) read
//! with their atoms, bonds and data items; new positions written into a
//! record change nothing else; malformed records name their line; no input
//! makes the reader panic.

mod common;

use std::path::{Path, PathBuf};

use physcon::data::{format_sdf, parse_sdf, read_sdf, SdfRecord};
use physcon::{Error, ParseError};
use proptest::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sdf")
        .join(name)
}

fn parse(text: &str) -> physcon::Result<Vec<SdfRecord>> {
    parse_sdf(text, Path::new("test.sdf"))
}

#[test]
fn rdkit_fixture_reads_with_bonds_and_properties() {
    let records = read_sdf(fixture("rdkit_small.sdf")).unwrap();
    let ids: Vec<&str> = records.iter().map(|r| r.frame.mol_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "ethanol",
            "acetate",
            "4-chlorofluorobenzene",
            "methanesulfonamide"
        ]
    );
    let ethanol = &records[0].frame;
    assert_eq!(ethanol.species, [6, 6, 8, 1, 1, 1, 1, 1, 1]);
    assert_eq!(ethanol.pos[0], [-0.8544, 0.2235, 0.2418]);
    // 1-based in the file, 0-based in a frame.
    assert_eq!(&ethanol.bonds[..2], [(0, 1, 1), (1, 2, 1)]);
    assert_eq!(records[0].line, 1);
    assert_eq!(records[0].atom_lines[0], 5);
    assert_eq!(records[0].properties[0], ("SMILES".into(), "CCO".into()));
    assert_eq!(records[2].frame.species.iter().filter(|&&z| z == 17).count(), 1);
    // RDKit writes Kekulé bonds: the ring has alternating single and double bonds.
    assert!(records[2].frame.bonds.iter().any(|b| b.2 == 2));

    let v3000 = read_sdf(fixture("rdkit_small_v3000.sdf")).unwrap();
    assert!(v3000[0].is_v3000() && !records[0].is_v3000());
    for (a, b) in records.iter().zip(&v3000) {
        assert_eq!(a.frame.mol_id, b.frame.mol_id);
        assert_eq!(a.frame.species, b.frame.species);
        assert_eq!(a.frame.bonds, b.frame.bonds);
        assert_eq!(a.properties, b.properties);
        for (p, q) in a.frame.pos.iter().flatten().zip(b.frame.pos.iter().flatten()) {
            assert!((p - q).abs() <= 5e-5, "{p} {q}");
        }
    }
    assert_eq!(read_sdf(fixture("rdkit_small.sdf.gz")).unwrap(), records);
    let mol = read_sdf(fixture("ethanol.mol")).unwrap();
    assert_eq!(mol.len(), 1);
    assert_eq!(mol[0].frame, records[0].frame);
}

#[test]
fn new_positions_change_nothing_else() {
    for name in ["rdkit_small.sdf", "rdkit_small_v3000.sdf"] {
        let records = read_sdf(fixture(name)).unwrap();
        let moved: Vec<SdfRecord> = records
            .iter()
            .map(|r| {
                let pos: Vec<[f64; 3]> = r
                    .frame
                    .pos
                    .iter()
                    .map(|p| [p[0] + 1.25, p[1] - 0.5, -p[2]])
                    .collect();
                r.with_positions(&pos)
                    .unwrap()
                    .with_property("physcon_sample", "3")
            })
            .collect();
        let text = format_sdf(&moved);
        let again = parse(&text).unwrap();
        for ((a, b), r) in again.iter().zip(&moved).zip(&records) {
            assert_eq!(a.frame.species, r.frame.species, "{name}");
            assert_eq!(a.frame.bonds, r.frame.bonds, "{name}");
            assert_eq!(a.frame.mol_id, r.frame.mol_id, "{name}");
            assert_eq!(a.properties[..r.properties.len()], r.properties[..], "{name}");
            assert_eq!(
                a.properties.last().unwrap(),
                &("physcon_sample".into(), "3".into())
            );
            for (p, q) in a.frame.pos.iter().flatten().zip(b.frame.pos.iter().flatten()) {
                assert!((p - q).abs() <= 5e-5, "{name}: {p} {q}");
            }
        }
        // Read and written back as they are, the records are the file's bytes;
        // new positions change the atom lines and nothing else.
        let original = std::fs::read_to_string(fixture(name)).unwrap();
        assert_eq!(format_sdf(&records), original, "{name}");
        for r in &records {
            let pos: Vec<[f64; 3]> = r.frame.pos.iter().map(|p| [p[0] + 1.0, p[1], p[2]]).collect();
            let moved = r.with_positions(&pos).unwrap().to_text();
            let text = r.to_text();
            let changed = text.lines().zip(moved.lines()).filter(|(a, b)| a != b).count();
            assert_eq!(changed, r.frame.num_atoms(), "{name}");
            assert_eq!(text.lines().count(), moved.lines().count());
        }
    }
    let record = &read_sdf(fixture("ethanol.mol")).unwrap()[0];
    assert!(matches!(
        record.with_positions(&[[0.0; 3]]),
        Err(Error::InvalidArgument { arg: "pos", .. })
    ));
    let mut far = record.frame.pos.clone();
    far[0][0] = 2e5;
    assert!(record.with_positions(&far).is_err());
}

#[test]
fn malformed_records_name_their_line() {
    let good = std::fs::read_to_string(fixture("ethanol.mol")).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let edit = |k: usize, new: &str| {
        let mut l = lines.clone();
        l[k] = new;
        l.join("\n")
    };
    let cases: Vec<(String, usize, &str)> = vec![
        (
            edit(3, "  x  8  0  0  0  0  0  0  0  0999 V2000"),
            4,
            "atom count",
        ),
        (
            edit(3, " 12  8  0  0  0  0  0  0  0  0999 V2000"),
            4,
            "only 17 lines",
        ),
        (
            edit(4, "   -0.8544    0.2235    0.2418 Xx  0  0"),
            5,
            "unknown element `Xx`",
        ),
        (
            edit(4, "   -0.8544       nan    0.2418 C   0  0"),
            5,
            "not finite",
        ),
        (edit(4, "   -0.8544    0.2235"), 5, "V2000 columns"),
        (edit(13, "  1 12  1  0"), 14, "1..=9"),
        (edit(13, "  1  1  1  0"), 14, "bonded to itself"),
        (edit(14, "  1  2  1  0"), 15, "bonded twice"),
        (edit(13, "  1  2  8  0"), 14, "bond type `8`"),
        (lines[..10].join("\n"), 10, "M  END"),
        (format!("{good}\nnot a data item\n"), lines.len() + 2, "data item"),
    ];
    for (text, line, words) in cases {
        match parse(&text) {
            Err(Error::Parse { line: l, kind, .. }) => {
                assert_eq!(l, line, "{words}: {kind}");
                assert!(kind.to_string().contains(words), "{words}: {kind}");
            }
            other => panic!("{words}: expected a parse error, got {other:?}"),
        }
    }
    assert_eq!(parse("").unwrap(), []);
    assert_eq!(parse("\n \n").unwrap(), []);
    // A second record's faults are located in the file, not in the record.
    let two = format!(
        "{good}$$$$\n{}",
        edit(4, "   -0.8544    0.2235    0.2418 Q   0  0")
    );
    let at = lines.len() + 2 + 4;
    assert!(
        matches!(parse(&two), Err(Error::Parse { line, kind: ParseError::UnknownElement(_), .. }) if line == at)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse(&String::from_utf8_lossy(&bytes));
    }

    /// Mutations of RDKit's files: byte edits, deleted and duplicated lines.
    /// Whatever parses must survive a write-read round trip unchanged.
    #[test]
    fn mutated_files_never_panic(
        v3000 in any::<bool>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        drop_line in prop::option::of(any::<prop::sample::Index>()),
        dup_line in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let name = if v3000 { "rdkit_small_v3000.sdf" } else { "rdkit_small.sdf" };
        let text = common::mutate(std::fs::read(fixture(name)).unwrap(), edits, drop_line, dup_line);
        if let Ok(records) = parse(&text) {
            for r in &records {
                if let Ok(moved) = r.with_positions(&r.frame.pos) {
                    let again = parse(&moved.to_text()).unwrap();
                    prop_assert_eq!(&again[0].frame.species, &r.frame.species);
                    prop_assert_eq!(&again[0].frame.bonds, &r.frame.bonds);
                }
            }
        }
    }
}
