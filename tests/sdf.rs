//! SDF/MOL I/O: RDKit-written fixtures (V2000, V3000, gzip, a MOL file) read
//! with their atoms, bonds and data items; new positions written into a
//! record change nothing else; malformed records name their line; no input
//! makes the reader panic.

mod common;

use std::path::{Path, PathBuf};

use physcon::data::{format_sdf, parse_sdf, parse_sdf_records, read_sdf, SdfRecord};
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
    far[0][0] = -10000.0157;
    assert!(record.with_positions(&far).is_err());
}

/// Each `(text, line, words)` is refused at `line` with a message holding `words`.
fn refused_at_their_lines(cases: Vec<(String, usize, &str)>) {
    for (text, line, words) in cases {
        match parse(&text) {
            Err(Error::Parse { line: l, kind, .. }) => {
                assert_eq!(l, line, "{words}: {kind}");
                assert!(kind.to_string().contains(words), "{words}: {kind}");
            }
            other => panic!("{words}: expected a parse error, got {other:?}"),
        }
    }
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
    refused_at_their_lines(cases);
    assert_eq!(parse("").unwrap(), []);
    assert_eq!(parse("\n \n").unwrap(), []);
    // A second record's faults are located in the file, not in the record.
    let two = format!(
        "{good}$$$$\n{}",
        edit(4, "   -0.8544    0.2235    0.2418 Xx  0  0")
    );
    let at = lines.len() + 2 + 4;
    assert!(
        matches!(parse(&two), Err(Error::Parse { line, kind: ParseError::UnknownElement(_), .. }) if line == at)
    );
    // Read record by record, the good records survive a bad one, and each fault keeps its line.
    let three = format!(
        "{good}$$$$
{}
$$$$
{good}$$$$
",
        edit(13, "  1 12  1  0")
    );
    let each = parse_sdf_records(&three, Path::new("test.sdf"));
    assert_eq!(each.len(), 3);
    assert!(each[0].1.is_ok() && each[2].1.is_ok());
    assert_eq!((each[1].0, each[2].0), (lines.len() + 2, 2 * lines.len() + 3));
    assert!(matches!(&each[1].1, Err(Error::Parse { line, .. }) if *line == lines.len() + 2 + 13));
}

/// What a reader that follows the counts line or the fixed columns would
/// drop or copy without a word is refused at its line.
#[test]
fn silent_changes_are_refused_at_their_line() {
    let good = std::fs::read_to_string(fixture("ethanol.mol")).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let end = lines.iter().position(|l| *l == "M  END").unwrap();
    let insert = |new: &str| {
        let mut l = lines.clone();
        l.insert(end, new);
        l.join("\n")
    };
    let mut fewer = lines.clone();
    fewer[3] = "  9  6  0  0  0  0  0  0  0  0999 V2000";
    // Fewer atoms than the block holds: the first left over is named, never a bond misread.
    let mut short = lines.clone();
    short[3] = "  7  8  0  0  0  0  0  0  0  0999 V2000";
    let cases: Vec<(String, usize, &str)> = vec![
        (fewer.join("\n"), 4 + 9 + 6 + 1, "declares 6 bonds"),
        (
            short.join("\n"),
            4 + 7 + 1,
            "is an atom line, but the counts line (line 4) declares 7 atoms, all read before it (9 atom lines",
        ),
        (
            insert("M  CHG  2   1  -1"),
            end + 1,
            "2 entries take columns 1-25",
        ),
        (
            insert("M  CHG  1  10  -1"),
            end + 1,
            "`10` is not an atom number in 1..=9",
        ),
        (insert("M  CHG  1   1  99"), end + 1, "not a charge"),
        (insert("M  ISO  1   1   0"), end + 1, "not a mass number"),
        (insert("M  RAD  0"), end + 1, "no entry count"),
        (insert("garbage"), end + 1, "neither a bond"),
    ];
    refused_at_their_lines(cases);
    // Well-formed property lines, aliases with their text line, and blank lines pass.
    for ok in [
        "M  CHG  1   3  -1",
        "M  ISO  2   1  13   2  13",
        "A    1\nalias",
        "",
    ] {
        parse(&insert(ok)).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
    }
    // A V3000 record cut before `END CTAB` (or with blocks crossed) is refused.
    let v3000 = std::fs::read_to_string(fixture("rdkit_small_v3000.sdf")).unwrap();
    let first = v3000.split("$$$$\n").next().unwrap();
    let cut = first.replace("M  V30 END CTAB\n", "");
    assert!(
        matches!(parse(&cut), Err(Error::Parse { line: 5, kind, .. }) if kind.to_string().contains("never closed"))
    );
    let crossed = first.replace("M  V30 END BOND", "M  V30 END ATOM");
    assert!(
        matches!(parse(&crossed), Err(Error::Parse { kind, .. }) if kind.to_string().contains("closes `BEGIN BOND`"))
    );
}

/// Pseudo-atoms read as atomic number 0 and D, T as hydrogen, as RDKit reads them.
#[test]
fn pseudo_atoms_and_hydrogen_isotopes() {
    let good = std::fs::read_to_string(fixture("ethanol.mol")).unwrap();
    for (symbol, z) in [
        ("*  ", 0),
        ("R# ", 0),
        ("A  ", 0),
        ("Q  ", 0),
        ("LP ", 0),
        ("R1 ", 0),
        ("D  ", 1),
        ("T  ", 1),
    ] {
        let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
        lines[12].replace_range(31..34, symbol);
        let record = &parse(&lines.join("\n")).unwrap()[0];
        assert_eq!(record.frame.species[8], z, "{symbol}");
        assert_eq!(record.atom_symbol(8), Some(symbol.trim()));
    }
    assert!(!physcon::data::is_pseudo_atom("Rb") && !physcon::data::is_pseudo_atom("C"));
}

/// A coordinate is written only where V2000's `%10.4f` field holds it.
#[test]
fn coordinates_wider_than_v2000_columns_are_refused() {
    let record = &read_sdf(fixture("ethanol.mol")).unwrap()[0];
    let mut pos = record.frame.pos.clone();
    for (x, fits) in [
        (-9999.9999, true),
        (99999.9999, true),
        (-10000.0157, false),
        (-9999.99996, false),
        (1e5, false),
    ] {
        pos[0][0] = x;
        let written = record.with_positions(&pos);
        assert_eq!(written.is_ok(), fits, "{x}: {written:?}");
        // Read back, a written coordinate is itself: no field spilled into the next.
        if let Ok(r) = written {
            assert_eq!(read_back(&r)[0][0], (x * 1e4).round() / 1e4, "{x}");
        }
    }
}

fn read_back(r: &SdfRecord) -> Vec<[f64; 3]> {
    parse(&r.to_text()).unwrap()[0].frame.pos.clone()
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

/// Formal charges come from `M  CHG` lines, which replace the atom block's
/// charge column, or else from that column; V3000 from `CHG=`.
#[test]
fn formal_charges_from_the_atom_block_or_m_chg() {
    let good = std::fs::read_to_string(fixture("ethanol.mol")).unwrap();
    let record = |text: &str| parse(text).unwrap().remove(0);
    assert_eq!(record(&good).formal_charges(), [0; 9]);
    // Atom block: code 3 is +1, 5 is -1, 4 (a doublet radical) no charge.
    let block = good
        .replacen("0.2418 C   0  0", "0.2418 C   0  5", 1)
        .replacen("-0.0073 O   0  0", "-0.0073 O   0  3", 1)
        .replacen("-0.4015 C   0  0", "-0.4015 C   0  4", 1);
    let mut expected = [0; 9];
    (expected[0], expected[2]) = (-1, 1);
    assert_eq!(record(&block).formal_charges(), expected);
    // `M  CHG` replaces every charge of the atom block.
    let chg = block.replace("M  END", "M  CHG  2   2  -1   9   1\nM  END");
    let mut expected = [0; 9];
    (expected[1], expected[8]) = (-1, 1);
    assert_eq!(record(&chg).formal_charges(), expected);
    // V3000: `CHG=` on the atom line, also where the line continues.
    let v3000 = std::fs::read_to_string(fixture("rdkit_small_v3000.sdf")).unwrap();
    let first = v3000.split("$$$$\n").next().unwrap();
    let lines: Vec<&str> = first.lines().collect();
    let atom = lines
        .iter()
        .position(|l| l.starts_with("M  V30 BEGIN ATOM"))
        .unwrap()
        + 1;
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited[atom] = format!("{} CHG=-1", lines[atom]);
    edited[atom + 2] = format!("{} -\nM  V30 CHG=1", lines[atom + 2]);
    let charges = record(&(edited.join("\n") + "\n")).formal_charges();
    assert_eq!(&charges[..3], [-1, 0, 1]);
    assert!(charges[3..].iter().all(|&c| c == 0));
}
