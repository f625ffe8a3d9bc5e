//! The controller's modules import one another in one direction only: the
//! shared pieces (context, run registry, SLO reader, budget maths) at the
//! bottom, the engine and reconcilers above them, the binaries' commands on
//! top. A circle makes a newcomer read everything to change anything, so
//! this test reads `src/` and fails naming the circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module of each file under `src/`, with its source (tests cut).
fn modules(src: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("under src");
                let top = rel
                    .components()
                    .next()
                    .and_then(|c| c.as_os_str().to_str())
                    .map(|s| s.trim_end_matches(".rs").to_owned())
                    .expect("a name");
                if top == "lib" || top == "main" {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("read file");
                // Test modules may reach anywhere.
                let text = text
                    .split("#[cfg(test)]\nmod tests")
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                out.entry(top).or_default().push_str(&text);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

/// `crate::x` references of each module to the other top-level modules.
fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let path = regex::Regex::new(r"crate::([a-z_][a-z0-9_]*)").expect("regex");
    let group = regex::Regex::new(r"crate::\{([^}]*)\}").expect("regex");
    let comment = regex::Regex::new(r"//[^\n]*").expect("regex");
    let mut out = BTreeMap::new();
    for (name, text) in mods {
        let text = comment.replace_all(text, "");
        let mut to = BTreeSet::new();
        for c in path.captures_iter(&text) {
            to.insert(c[1].to_owned());
        }
        for c in group.captures_iter(&text) {
            for item in c[1].split(',') {
                if let Some(first) = item.trim().split("::").next() {
                    to.insert(first.trim().to_owned());
                }
            }
        }
        to.retain(|t| t != name && mods.contains_key(t));
        out.insert(name.clone(), to);
    }
    out
}

/// A path back to `start`, if one exists.
fn circle(
    edges: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    at: &str,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> bool {
    for next in edges.get(at).into_iter().flatten() {
        if next == start {
            return true;
        }
        if seen.insert(next.clone()) {
            path.push(next.clone());
            if circle(edges, start, next, path, seen) {
                return true;
            }
            path.pop();
        }
    }
    false
}

#[test]
fn no_import_circle_between_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    assert!(mods.contains_key("engine") && mods.contains_key("context"));
    let edges = edges(&mods);
    for start in mods.keys() {
        let mut path = vec![start.clone()];
        if circle(&edges, start, start, &mut path, &mut BTreeSet::new()) {
            path.push(start.clone());
            panic!("import circle: {}", path.join(" -> "));
        }
    }
}

#[test]
fn the_checker_finds_a_circle() {
    let mods: BTreeMap<String, String> = [
        ("a", "use crate::b::X;"),
        ("b", "use crate::{c::Y, d};"),
        ("c", "fn f() { crate::a::g() }"),
        ("d", "// crate::a is only named in a comment"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let edges = edges(&mods);
    let mut path = vec!["a".to_owned()];
    assert!(circle(&edges, "a", "a", &mut path, &mut BTreeSet::new()));
    assert_eq!(path, ["a", "b", "c"]);
    let mut path = vec!["d".to_owned()];
    assert!(!circle(&edges, "d", "d", &mut path, &mut BTreeSet::new()));
}
