//! The library's layers, as go-containerregistry keeps its own (`cmd/crane/depcheck_test.go`):
//! each top-level module may use only modules of its own layer or below. A `use` that reaches
//! upwards fails this test, naming the file, the module it reached and both layers.

use std::collections::BTreeMap;
use std::path::Path;

/// Lowest first. `stack` is the typed CloudFormation of the application — a format, which
/// the build signs into the bundle; `aws` and `dify` are the clients install drives.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundations",
        &["error", "digest", "units", "retry", "progress", "lock"],
    ),
    (
        "formats and network",
        &["oci", "reference", "derive", "recipe", "stack"],
    ),
    ("stores and signing", &["store", "signing"]),
    ("the copy engine", &["copy"]),
    ("python and plugins", &["python", "plugins"]),
    ("the bundle, its build and carriage", &["bundle"]),
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
