//! The shape of `src/`: layers that use only the layers below them, and no
//! module that reaches back into one that depends on it (an import cycle).
//! Read from the `crate::`, `super::` and `self::` paths each module names
//! outside its tests and comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, lowest first: a module may use its own layer and those
/// before it. Each top-level module of `src/` must be in one.
const LAYERS: &[&[&str]] = &[
    &["crd", "workloadentry", "metrics", "fence"],
    &["core"],
    &["cluster"],
    &["providers", "clouds"],
    &["controller"],
    &["leader", "http", "app", "demo"],
];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> std::path::PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo and nextest set CARGO_MANIFEST_DIR"),
    )
    .join("src")
}

/// Every module's path (`controller::pass::decide`) and its code outside
/// tests. Test-only files (`tests.rs`) are left out.
fn sources() -> BTreeMap<String, String> {
    let root = src();
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts.last().is_some_and(|p| p == "tests")
                || matches!(parts.as_slice(), [p] if p == "lib" || p == "main")
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .to_string();
            out.insert(parts.join("::"), code);
        }
    }
    out
}

/// The paths a line names, made absolute for module `at`: `crate::a::x`,
/// `super::y`, `self::z`, and each of `crate::{a, b::y}` (one line's group).
fn named_paths(at: &str, line: &str) -> Vec<Vec<String>> {
    let ident_path = |s: &str| -> Vec<String> {
        s.trim_start()
            .split("::")
            .map(|seg| {
                seg.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|seg| !seg.is_empty())
            .collect()
    };
    let here: Vec<String> = at.split("::").map(str::to_string).collect();
    let mut out = Vec::new();
    for (start, base) in [
        ("crate::", Vec::new()),
        ("super::", here[..here.len().saturating_sub(1)].to_vec()),
        ("self::", here.clone()),
    ] {
        for (i, _) in line.match_indices(start) {
            // `crate::` inside `$crate::` or a longer word is not a path start.
            if line[..i]
                .ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$' || c == ':')
            {
                continue;
            }
            let rest = &line[i + start.len()..];
            let tails: Vec<Vec<String>> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(ident_path)
                    .collect(),
                None => vec![ident_path(rest)],
            };
            for tail in tails
                .into_iter()
                .filter(|t| !t.is_empty() && t[0] != "self")
            {
                let mut path = base.clone();
                path.extend(tail);
                out.push(path);
            }
        }
    }
    out
}

/// module -> the modules it names (the longest known prefix of each path),
/// without itself and its own submodules.
fn graph() -> Graph {
    let sources = sources();
    let known: BTreeSet<&String> = sources.keys().collect();
    let mut out = Graph::new();
    for (module, code) in &sources {
        let names = out.entry(module.clone()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for path in named_paths(module, line) {
                let target = (1..=path.len())
                    .rev()
                    .map(|n| path[..n].join("::"))
                    .find(|p| known.contains(p));
                if let Some(target) = target
                    && target != *module
                    && !target.starts_with(&format!("{module}::"))
                {
                    names.insert(target);
                }
            }
        }
    }
    out
}

fn layer_of(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap_or_default();
    LAYERS.iter().position(|layer| layer.contains(&top))
}

/// A cycle through `start`, if any: depth-first along the edges.
fn cycle_from(graph: &Graph, start: &str) -> Option<Vec<String>> {
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
    let graph = graph();
    assert!(graph.len() > 30, "read too few modules: {:?}", graph.keys());
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_from(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    let graph = graph();
    let unplaced: Vec<&String> = graph.keys().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "modules in no layer (add them to LAYERS): {unplaced:?}"
    );
    let upward: Vec<String> = graph
        .iter()
        .flat_map(|(from, tos)| tos.iter().map(move |to| (from, to)))
        .filter(|(from, to)| layer_of(to) > layer_of(from))
        .map(|(from, to)| format!("{from} uses {to}"))
        .collect();
    assert!(
        upward.is_empty(),
        "a lower layer uses a higher one:\n{}",
        upward.join("\n")
    );
}

#[test]
fn core_does_no_io() {
    // The pure layer names no client, runtime or clock of its own.
    for (module, code) in sources().iter().filter(|(m, _)| m.starts_with("core")) {
        for io in [
            "kube::Api",
            "kube::Client",
            "tokio::",
            "reqwest",
            "Instant::now",
            "Utc::now",
            "std::fs",
        ] {
            assert!(!code.contains(io), "{module} uses {io}");
        }
    }
}

#[test]
fn paths_are_read_relative_to_their_module() {
    let at = "controller::pass::decide";
    assert_eq!(
        named_paths(at, "use crate::core::plan::X;"),
        [["core", "plan", "X"]]
    );
    assert_eq!(
        named_paths(at, "use super::{gather::Facts, PassError};"),
        [
            vec!["controller", "pass", "gather", "Facts"],
            vec!["controller", "pass", "PassError"]
        ]
    );
    assert_eq!(
        named_paths("controller", "use self::pass::R;"),
        [["controller", "pass", "R"]]
    );
    assert!(named_paths(at, "// nothing").is_empty());
    assert!(named_paths(at, "$crate::x").is_empty());
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let graph: Graph = [
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
