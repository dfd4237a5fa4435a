//! The library's layers, as go-containerregistry keeps its own (`cmd/crane/depcheck_test.go`):
//! each top-level module may use only modules of its own layer or below. A `use` that reaches
//! upwards fails this test, naming the file, the module it reached and both layers. A second
//! test finds import circles between the modules (files) of the tree.

use std::collections::BTreeMap;
use std::path::Path;

/// Lowest first. `stack` is the typed CloudFormation of the application — a format, which
/// the build signs into the bundle; `aws` and `dify` are the clients install drives.
/// `bundle` is the read side (a bundle handed to you); `build` makes one, `carry` moves one.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundations",
        &["error", "digest", "units", "retry", "progress", "lock"],
    ),
    (
        "formats and network",
        &["oci", "reference", "recipe", "stack", "net"],
    ),
    ("stores and signing", &["store", "signing"]),
    ("the copy engine", &["copy"]),
    ("python and plugins", &["python", "plugins"]),
    ("the bundle", &["bundle"]),
    ("build and carry", &["build", "carry"]),
    ("cloud and Dify clients", &["aws", "dify"]),
    ("install", &["install"]),
];

/// Known exceptions, each to be removed by moving the code to its layer.
const TOLERATED: &[(&str, &str)] = &[];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `crate::NAME` paths a source file uses outside its tests.
fn uses(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.push(name);
        }
        rest = after;
    }
    found
}

#[test]
fn every_module_uses_only_its_layer_and_below() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut unplaced = Vec::new();
    let mut upward = BTreeMap::new();
    for file in &files {
        let relative = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let top = file
            .strip_prefix(&src)
            .unwrap()
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        // The crate roots and the command line sit above every layer; the crate's own
        // property tests (`#[cfg(test)]` in lib.rs) may use any of them.
        if ["lib", "main", "cli", "parser_properties"].contains(&top.as_str()) {
            continue;
        }
        let Some(own) = layer_of(&top) else {
            unplaced.push(top);
            continue;
        };
        for used in uses(&std::fs::read_to_string(file).unwrap()) {
            let Some(theirs) = layer_of(&used) else {
                continue;
            };
            if theirs > own && !TOLERATED.contains(&(relative.as_str(), used.as_str())) {
                upward.insert(
                    (relative.clone(), used.clone()),
                    format!(
                        "{relative} ({}) uses crate::{used} ({})",
                        LAYERS[own].0, LAYERS[theirs].0
                    ),
                );
            }
        }
    }
    unplaced.sort();
    unplaced.dedup();
    assert!(
        unplaced.is_empty(),
        "modules with no layer (add them to LAYERS): {unplaced:?}"
    );
    assert!(
        upward.is_empty(),
        "imports against the layers:\n{}",
        upward.into_values().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_use() {
    // What the test above relies on: uses are found in code, not in tests.
    let text = "use crate::digest::Digest;\nfn f() { crate::install::run(); }\n#[cfg(test)]\nmod tests { use crate::cli; }";
    assert_eq!(uses(text), ["digest", "install"]);
    assert!(layer_of("install") > layer_of("digest"));
    assert_eq!(layer_of("cli"), None);
}

/// A source file's module path: `src/bundle/source/mod.rs` is `bundle::source`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .strip_prefix(src)
        .unwrap()
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The module paths a file's code (not its tests) names: `crate::a::b`, `super::x`,
/// `self::y`, each as far as the path goes (`use a::{b, c}` groups give `a`).
fn module_paths(module: &[String], text: &str) -> Vec<Vec<String>> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut found = Vec::new();
    for (at, _) in code.match_indices(['c', 's']) {
        if at > 0 {
            let before = code[..at].chars().next_back().unwrap_or(' ');
            if before.is_alphanumeric() || before == '_' || before == ':' {
                continue;
            }
        }
        let rest = &code[at..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let segments: Vec<&str> = path.split("::").collect();
        if segments.len() < 2 {
            continue;
        }
        let mut resolved: Vec<String> = match segments[0] {
            "crate" => Vec::new(),
            "self" => module.to_vec(),
            "super" => module[..module.len().saturating_sub(1)].to_vec(),
            _ => continue,
        };
        let mut tail = &segments[1..];
        while tail.first() == Some(&"super") {
            resolved.pop();
            tail = &tail[1..];
        }
        resolved.extend(tail.iter().filter(|s| !s.is_empty()).map(|s| s.to_string()));
        found.push(resolved);
    }
    found
}

#[test]
fn no_import_circle_between_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: Vec<(Vec<String>, std::path::PathBuf)> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let known: std::collections::BTreeSet<Vec<String>> =
        modules.iter().map(|(m, _)| m.clone()).collect();
    // Edges between modules, to the longest known module a path names. A module naming its
    // own descendants (declaring or re-exporting them) or its ancestors (their re-exports)
    // is not an edge: circles are between siblings and cousins.
    let mut edges: BTreeMap<Vec<String>, std::collections::BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, file) in &modules {
        for path in module_paths(module, &std::fs::read_to_string(file).unwrap()) {
            let Some(target) = (0..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|p| known.contains(p))
            else {
                continue;
            };
            if target.starts_with(module) || module.starts_with(&target) {
                continue;
            }
            edges.entry(module.clone()).or_default().insert(target);
        }
    }
    let mut circles = Vec::new();
    for start in edges.keys() {
        // Depth-first from each module, looking for a way back to it.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = std::collections::BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    let mut names: Vec<String> = trail.iter().map(|m| m.join("::")).collect();
                    names.push(start.join("::"));
                    circles.push(names.join(" -> "));
                } else if seen.insert(next.clone()) {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles between modules:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_circle_check_resolves_relative_paths() {
    let module = vec!["bundle".to_owned(), "verify".to_owned()];
    let text = "use super::source::parts::PartsSource;\nuse crate::store::{Store, Tag};\nfn f() { self::inner::g(); }\nuse super::{a, b};\n#[cfg(test)]\nuse crate::cli;";
    let paths: Vec<String> = module_paths(&module, text)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        paths,
        [
            "bundle::source::parts::PartsSource",
            "store",
            "bundle::verify::inner::g",
            "bundle",
        ]
    );
}
