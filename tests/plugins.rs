//! `dify-bundle plugin verify` on a real Dify package signed with Dify's official key, on
//! tampered copies, and on a package signed by a third party (Python `cryptography` signs it,
//! independently of our code).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_success, dify_bundle, run, stderr};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/plugins/langgenius-agent_0.0.14.difypkg")
}

fn verify(file: &Path, extra: &[&str]) -> std::process::Output {
    run(dify_bundle()
        .args(["plugin", "verify"])
        .arg(file)
        .args(extra))
}

#[test]
fn the_official_package_verifies_and_prints_its_identifier() {
    let out = verify(&fixture(), &[]);
    assert_success(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "langgenius/agent:0.0.14@26958a0e80a10655ce73812bdb7c35a66ce7b16f5ac346d298bda17ff85efd1e"
    );
    assert!(stderr(&out).contains("signature: good, by the official key"));
    let json = common::json(&verify(&fixture(), &["--json"]));
    assert_eq!(json["signature"]["status"], "verified");
    assert_eq!(json["manifest"]["author"], "langgenius");
}

#[test]
fn a_tampered_copy_is_refused_naming_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // One byte of one file, changed inside the zip (stored sizes kept, so it still unzips).
    let bytes = std::fs::read(fixture()).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&bytes)).unwrap();
    let comment = archive.comment().to_vec();
    let mut out = zip::ZipWriter::new(std::fs::File::create(dir.path().join("t.difypkg")).unwrap());
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().unwrap().into_owned();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        if name == "requirements.txt" {
            content = b"dify_plugin==0.0.1b76".to_vec();
        }
        out.start_file(&name, zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut out, &content).unwrap();
    }
    out.set_raw_comment(comment.into()).unwrap();
    out.finish().unwrap();
    let refused = verify(&dir.path().join("t.difypkg"), &[]);
    assert_eq!(refused.status.code(), Some(1));
    let err = stderr(&refused);
    assert!(
        err.contains("refused: the signature does not match"),
        "{err}"
    );

    let truncated = dir.path().join("cut.difypkg");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let refused = verify(&truncated, &[]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("not a plugin package"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn a_third_party_signature_needs_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let signed = dir.path().join("third.difypkg");
    let prefix = dir.path().join("vendor");
    assert_success(&run(Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/sign_plugin.py"))
        .arg(fixture())
        .arg(&signed)
        .arg(&prefix)));
    let public = prefix.with_extension("public.pem");
    let refused = verify(&signed, &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("under any trusted key (official)"),
        "{}",
        stderr(&refused)
    );
    let accepted = verify(&signed, &["--pubkey", public.to_str().unwrap()]);
    assert_success(&accepted);
    assert!(stderr(&accepted).contains(&format!("by the {} key", public.display())));
    // Same files, same checksum: the identifier does not depend on who signed.
    assert_eq!(
        String::from_utf8_lossy(&accepted.stdout).trim(),
        String::from_utf8_lossy(&verify(&fixture(), &[]).stdout).trim()
    );
}
