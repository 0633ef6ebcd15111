//! The import graph: no circle between the top-level modules of the library or
//! of the example crate, and `check` (the ground floor) imports nothing but errors.
//!
//! A module's imports are its `use crate::..` items and inline `crate::x::`
//! paths, outside comments, `#[cfg(test)]` modules and `#[cfg(doc)]` items (doc
//! links are not dependencies). Submodules count as their top-level module, so
//! a parent and its children are one room.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`lib` for the crate root).
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    if first == "mod" {
        "lib".into()
    } else {
        first
    }
}

/// The code of a file without comments, test modules and doc-only items.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut skip_next_item = false;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            // Test modules sit at the end of a file by this crate's convention.
            if lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
            {
                break;
            }
            skip_next_item = true;
            continue;
        }
        if trimmed.starts_with("#[cfg(doc)]") {
            skip_next_item = true;
            continue;
        }
        if skip_next_item {
            // Skip the attributed item up to its end (`;` or a closing brace at its indentation).
            if trimmed.ends_with(';') || trimmed.starts_with('}') {
                skip_next_item = false;
            }
            continue;
        }
        let without_comment = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(without_comment);
        out.push('\n');
    }
    out
}

/// The top-level modules named by `use crate::..` items and `crate::x::` paths in `code`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // `use crate::{a::X, b, c::{..}}`: the first identifier of each top-level entry.
            let mut depth = 0;
            let mut entry_start = true;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => entry_start = true,
                    c if entry_start && !c.is_whitespace() => {
                        found.insert(ident(&group[k..]));
                        entry_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(after));
        }
        rest = after;
    }
    // Items of the crate root (`crate::Result`) are not modules.
    found.retain(|m| m.chars().next().is_some_and(|c| c.is_lowercase()));
    found
}

fn graph(root: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let mut g = Graph::new();
    for file in files {
        let module = module_of(root, &file);
        let deps = imports(&code(&fs::read_to_string(&file).unwrap()));
        let entry = g.entry(module.clone()).or_default();
        entry.extend(deps.into_iter().filter(|d| *d != module));
    }
    g
}

/// The strongly connected components with more than one module (Tarjan).
fn circles(g: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for w in s.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.stack.contains(&w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_parser_sees_groups_paths_and_skips_comments_tests_and_doc_items() {
    let text = "use crate::batch::BatchLayout;\nuse crate::{check, error::{Error, Result}};\n\
                // use crate::losses;\n#[cfg(doc)]\nuse crate::{data::Frame,\n    metrics};\n\
                fn f() { crate::energy::leaf_copy(); crate::Result::Ok(()) }\n\
                #[cfg(test)]\nmod tests {\n    use crate::testing;\n}\n";
    let got: Vec<String> = imports(&code(text)).into_iter().collect();
    assert_eq!(got, ["batch", "check", "energy", "error"]);
    let mut g = Graph::new();
    g.insert("a".into(), ["b".into()].into());
    g.insert("b".into(), ["c".into()].into());
    g.insert("c".into(), ["a".into()].into());
    g.insert("d".into(), ["a".into()].into());
    assert_eq!(circles(&g), vec![vec!["a".to_owned(), "b".into(), "c".into()]]);
}

#[test]
fn the_library_has_no_import_circle() {
    let g = graph(&repo().join("src"));
    assert!(g.len() > 10, "{g:?}");
    assert_eq!(circles(&g), Vec::<Vec<String>>::new(), "{g:#?}");
    // The ground floor: every other module may use the checks, so they use nothing but errors.
    let check: Vec<&String> = g["check"].iter().collect();
    assert_eq!(check, ["error"], "check imports {check:?}");
}

#[test]
fn the_example_has_no_import_circle() {
    let g = graph(&repo().join("examples/two_stage/src"));
    assert!(g.contains_key("cli") && g.contains_key("generation"), "{g:?}");
    assert_eq!(circles(&g), Vec::<Vec<String>>::new(), "{g:#?}");
    // The readers, writers and checks of users' files take the generation flags from
    // `generation`, never from the command line that calls them.
    for module in ["io", "checks", "eval"] {
        assert!(!g[module].contains("cli"), "{module} imports cli");
    }
}
