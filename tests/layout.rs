//! The shape of `src/`: no module reaches back into one that depends on it
//! (an import cycle), read from the `crate::` paths each module names outside
//! its tests and comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// module name (`clouds::aws` as `clouds`) -> the top-level modules it names.
fn modules() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo and nextest set CARGO_MANIFEST_DIR"),
    )
    .join("src");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let top = relative.split(['/', '.']).next().unwrap().to_string();
            if matches!(top.as_str(), "lib" | "main") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let names = out.entry(top.clone()).or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for name in named_modules(line) {
                    if name != top {
                        names.insert(name);
                    }
                }
            }
        }
    }
    out
}

/// The top-level modules a line names: `crate::a::x`, and each of
/// `crate::{a, b::y}` (one line's group).
fn named_modules(line: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    for (i, _) in line.match_indices("crate::") {
        let rest = &line[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or_default();
            out.extend(inner.split(',').map(ident).filter(|n| !n.is_empty()));
        } else {
            out.push(ident(rest));
        }
    }
    out.retain(|n| !n.is_empty() && n != "self");
    out
}

/// A cycle through `start`, if any: depth-first along the edges.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_string());
                return Some(cycle);
            }
            if graph.contains_key(next) && seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn src_has_no_import_cycles() {
    let graph = modules();
    assert!(graph.len() > 20, "read too few modules: {:?}", graph.keys());
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_from(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn grouped_and_plain_paths_are_read() {
    assert_eq!(named_modules("use crate::a::X;"), ["a"]);
    assert_eq!(named_modules("use crate::{b, c::Y};"), ["b", "c"]);
    assert_eq!(
        named_modules("let x = crate::d::f(crate::e::G);"),
        ["d", "e"]
    );
    assert!(named_modules("// nothing").is_empty());
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
    .collect();
    assert_eq!(cycle_from(&graph, "a").unwrap(), ["a", "b", "c", "a"]);
    assert!(cycle_from(&graph, "d").is_none());
}
