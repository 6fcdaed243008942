//! The module graph of `src/`: imports run one way. No two modules import
//! each other, directly or through others, and the layers keep their places:
//! `api` imports nothing of ours, `db` nothing above it, the engine's pure half
//! no database step, and the operator never the command line.
//!
//! Read from the source text: every `use` tree and every `crate::`, `super::`
//! and `self::` path outside the test modules, resolved to the module that
//! defines the name (following `pub use` re-exports of facade modules).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module file of the library, by module path (`engine::plan::sql`; the
/// crate root is ``).
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    let mut out = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src()).unwrap().with_extension("");
        let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if parts == ["main"] {
            continue;
        }
        if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
            parts.pop();
        }
        out.insert(parts.join("::"), production_code(&std::fs::read_to_string(&file).unwrap()));
    }
    out
}

/// The text before the test module, without comment lines.
fn production_code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Expands a `use` tree (`a::{b, c::{d, e as f}}`) into full paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap().trim();
        return vec![path.to_string()];
    };
    let prefix = tree[..open].trim_end_matches("::").trim();
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand)
        .map(|p| if p == "self" { prefix.to_string() } else { format!("{prefix}::{p}") })
        .collect()
}

/// Every path a module's code names: its `use` trees and inline paths.
fn paths_in(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut statement: Option<String> = None;
    for line in code.lines() {
        let trimmed = line.trim_start();
        match statement.as_mut() {
            Some(text) => text.push_str(trimmed),
            None => {
                let visibility = ["pub(crate) ", "pub(super) ", "pub ", ""];
                let Some(tree) = visibility.iter().find_map(|v| trimmed.strip_prefix(v)?.strip_prefix("use ")) else {
                    continue;
                };
                statement = Some(tree.to_string());
            }
        }
        if let Some(text) = statement.take_if(|s| s.contains(';')) {
            out.extend(expand(text.split(';').next().unwrap_or_default()));
        }
    }
    let bytes = code.as_bytes();
    for prefix in ["crate::", "super::", "self::"] {
        for (at, _) in code.match_indices(prefix) {
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b':') {
                continue;
            }
            let len =
                code[at..].find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(code.len() - at);
            out.push(code[at..at + len].trim_end_matches(':').to_string());
        }
    }
    out
}

/// The module a path names, from inside `module`; `None` for other crates.
fn resolve(path: &str, module: &str, mods: &BTreeMap<String, String>) -> Option<String> {
    let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: Vec<String> = match segs.first().copied() {
        Some("crate") => {
            segs.remove(0);
            Vec::new()
        }
        Some("super") | Some("self") => {
            let mut base: Vec<String> = module.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
            while let Some(&seg) = segs.first() {
                match seg {
                    "super" => {
                        base.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                segs.remove(0);
            }
            base
        }
        Some(first) => {
            // A path relative to the module itself (`use child::X` in a mod.rs).
            let child = if module.is_empty() { first.to_string() } else { format!("{module}::{first}") };
            if !mods.contains_key(&child) {
                return None;
            }
            module.split("::").filter(|s| !s.is_empty()).map(String::from).collect()
        }
        None => return None,
    };
    for seg in &segs {
        let candidate = if base.is_empty() { seg.to_string() } else { format!("{}::{seg}", base.join("::")) };
        if mods.contains_key(&candidate) {
            base.push(seg.to_string());
            continue;
        }
        // Not a module: an item of `base`, perhaps re-exported from a child.
        let here = base.join("::");
        return Some(reexport_origin(&here, seg, mods).unwrap_or(here));
    }
    Some(base.join("::"))
}

/// Where `name`, re-exported by `module` with `pub use`, is defined.
fn reexport_origin(module: &str, name: &str, mods: &BTreeMap<String, String>) -> Option<String> {
    let code = mods.get(module)?;
    for line in code.split(';') {
        let Some(tree) = line.trim().strip_prefix("pub use ") else { continue };
        for path in expand(tree) {
            let last = path.rsplit("::").next().unwrap_or_default();
            let defines = |m: &str| {
                let text = mods.get(m).map(String::as_str).unwrap_or_default();
                ["fn", "struct", "enum", "const", "type", "trait", "static", "async fn"]
                    .iter()
                    .any(|kw| text.contains(&format!("pub {kw} {name}")))
            };
            if last == name {
                return resolve(&path, module, mods);
            }
            if last == "*" {
                let origin = resolve(path.trim_end_matches("::*"), module, mods)?;
                if defines(&origin) {
                    return Some(origin);
                }
            }
        }
    }
    None
}

fn graph() -> Graph {
    let mods = modules();
    let mut graph = Graph::new();
    for (module, code) in &mods {
        let edges = graph.entry(module.clone()).or_default();
        for path in paths_in(code) {
            if let Some(target) = resolve(&path, module, &mods)
                && &target != module
                && !target.is_empty()
            {
                edges.insert(target);
            }
        }
    }
    graph
}

/// A cycle through `start`, if any: the modules on it in order.
fn cycle_from(graph: &Graph, start: &str) -> Option<Vec<String>> {
    fn dfs(graph: &Graph, at: &str, start: &str, path: &mut Vec<String>, seen: &mut BTreeSet<String>) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if dfs(graph, next, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    dfs(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

fn under(module: &str, layer: &str) -> bool {
    module == layer || module.starts_with(&format!("{layer}::"))
}

#[test]
fn no_two_modules_import_each_other() {
    let graph = graph();
    assert!(graph.len() > 40, "the source tree was read: {} modules", graph.len());
    let cycles: Vec<String> =
        graph.keys().filter_map(|m| cycle_from(&graph, m)).map(|c| format!("{} -> {}", c.join(" -> "), c[0])).collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn layers_import_only_downwards() {
    let graph = graph();
    let forbidden: &[(&str, &[&str])] = &[
        ("api", &["db", "engine", "controller", "cli", "http", "metrics"]),
        ("db", &["engine", "controller", "cli", "http", "metrics"]),
        ("engine", &["controller", "cli", "http", "metrics"]),
        ("engine::plan", &["engine::steps", "engine::migration", "engine::status_keeper", "db::connect"]),
        ("controller", &["cli"]),
    ];
    let mut wrong = Vec::new();
    for (module, edges) in &graph {
        for (layer, never) in forbidden {
            if !under(module, layer) {
                continue;
            }
            for target in edges {
                if never.iter().any(|n| under(target, n)) {
                    wrong.push(format!("{module} imports {target}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle_and_a_wrong_layer() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle_from(&graph, "a"), Some(vec!["a".to_string(), "b".to_string(), "c".to_string()]));
    graph.get_mut("c").unwrap().clear();
    assert_eq!(cycle_from(&graph, "a"), None);

    let mods: BTreeMap<String, String> = [
        ("engine", "pub mod job;\npub use job::{Job, Outcome};"),
        ("engine::job", "pub struct Job;"),
        ("engine::plan", ""),
        ("engine::plan::sql", "use super::shape::TableName;\nuse crate::engine::Job;"),
        ("engine::plan::shape", "pub struct TableName;"),
    ]
    .into_iter()
    .map(|(m, c)| (m.to_string(), c.to_string()))
    .collect();
    let paths = paths_in(&mods["engine::plan::sql"]);
    let targets: BTreeSet<String> = paths.iter().filter_map(|p| resolve(p, "engine::plan::sql", &mods)).collect();
    assert_eq!(targets, BTreeSet::from(["engine::plan::shape".to_string(), "engine::job".to_string()]));
    assert_eq!(expand("a::{b, c::{d, e as f}, self}"), vec!["a::b", "a::c::d", "a::c::e", "a"]);
}
