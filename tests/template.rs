//! Third-party checks on the application template exactly as a bundle signs it: cfn-lint
//! (errors, warnings and informational rules, experimental ones included) and checkov. Every
//! finding must be listed, with its reason, in `src/stack/template-findings.toml`, and every
//! entry there must still be found: a fixed finding's entry goes too.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Auth, Registry, run};
use serde::Deserialize;

/// One finding: (tool, check, resource or template path).
type Finding = (String, String, String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Suppressions {
    finding: Vec<Suppression>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Suppression {
    tool: String,
    check: String,
    resources: Vec<String>,
    reason: String,
}

fn suppressions() -> BTreeMap<Finding, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/stack/template-findings.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let parsed: Suppressions = toml::from_str(&text).unwrap();
    let mut all = BTreeMap::new();
    for s in parsed.finding {
        assert!(
            ["cfn-lint", "checkov"].contains(&s.tool.as_str()),
            "{}: unknown tool {}",
            path.display(),
            s.tool
        );
        assert!(
            s.reason.len() > 20,
            "{}: {} needs a reason",
            s.tool,
            s.check
        );
        for resource in s.resources {
            all.insert(
                (s.tool.clone(), s.check.clone(), resource),
                s.reason.clone(),
            );
        }
    }
    all
}

/// The template a bundle of Dify `version` signs, as `dify-bundle template` prints it.
async fn signed_template(version: &str, work: &Path) -> PathBuf {
    let source = Registry::start(Auth::None);
    let printed = common::signed_template(&source, work, version).await;
    let file = work.join("app.json");
    std::fs::write(&file, printed).unwrap();
    file
}

fn cfn_lint(template: &Path) -> BTreeSet<Finding> {
    let out = run(Command::new("cfn-lint")
        .args([
            "--format",
            "json",
            "--include-checks",
            "I",
            "--include-experimental",
            "--",
        ])
        .arg(template));
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "cfn-lint (pip install cfn-lint) printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let path: Vec<String> = f["Location"]["Path"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let at = match path.first().map(String::as_str) {
                Some("Resources" | "Parameters" | "Rules" | "Outputs") if path.len() > 1 => {
                    path[1].clone()
                }
                _ => path.join("/"),
            };
            (
                "cfn-lint".to_owned(),
                f["Rule"]["Id"].as_str().unwrap().to_owned(),
                at,
            )
        })
        .collect()
}

/// checkov from `$CHECKOV` (scripts/test.sh installs it in a venv of its own), else PATH.
fn checkov(template: &Path) -> BTreeSet<Finding> {
    let program = std::env::var("CHECKOV").unwrap_or_else(|_| "checkov".into());
    let out = run(Command::new(&program)
        .args(["--framework", "cloudformation", "--output", "json"])
        // No download of guidelines or policies: with this flag checkov 3.3.30 opens no
        // network connection at all (checked with strace -e connect).
        .arg("--skip-download")
        .arg("--file")
        .arg(template));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{program} (pip install checkov==3.3.30) printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let passed = report["summary"]["passed"].as_u64().unwrap_or(0);
    assert!(passed > 50, "checkov ran only {passed} passing checks");
    report["results"]["failed_checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let resource = f["resource"].as_str().unwrap();
            (
                "checkov".to_owned(),
                f["check_id"].as_str().unwrap().to_owned(),
                resource.rsplit('.').next().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scanner_finding_is_fixed_or_listed_with_its_reason() {
    let listed = suppressions();
    let mut seen = BTreeSet::new();
    for version in ["1.13.3", "1.17.1"] {
        let work = tempfile::tempdir().unwrap();
        let template = signed_template(version, work.path()).await;
        let found: BTreeSet<Finding> = cfn_lint(&template)
            .into_iter()
            .chain(checkov(&template))
            .collect();
        let unlisted: Vec<&Finding> = found.iter().filter(|f| !listed.contains_key(*f)).collect();
        assert!(
            unlisted.is_empty(),
            "Dify {version}: findings neither fixed nor listed in src/stack/template-findings.toml:\n{}",
            unlisted
                .iter()
                .map(|(tool, check, at)| format!("  {tool} {check} {at}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        seen.extend(found);
    }
    let stale: Vec<&Finding> = listed.keys().filter(|f| !seen.contains(*f)).collect();
    assert!(
        stale.is_empty(),
        "listed in src/stack/template-findings.toml but no longer found (remove them):\n{}",
        stale
            .iter()
            .map(|(tool, check, at)| format!("  {tool} {check} {at}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
