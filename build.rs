//! Names the commit the binary was built from (`dify-bundle --version`): `DIFY_BUNDLE_COMMIT`
//! when the builder sets it (a source tarball has no git), else `git rev-parse`.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=DIFY_BUNDLE_COMMIT");
    let commit = std::env::var("DIFY_BUNDLE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // Rebuilt when HEAD moves: HEAD itself, and the branch file it points at (worktrees keep
    // HEAD in their own git dir, branches in the common one).
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let head = PathBuf::from(&git_dir).join("HEAD");
        println!("cargo:rerun-if-changed={}", head.display());
        if let (Some(branch), Some(common)) = (
            git(&["symbolic-ref", "-q", "HEAD"]),
            git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]),
        ) {
            let reference = PathBuf::from(common).join(branch);
            if reference.exists() {
                println!("cargo:rerun-if-changed={}", reference.display());
            }
        }
    }
    println!("cargo:rustc-env=DIFY_BUNDLE_COMMIT={commit}");
}
