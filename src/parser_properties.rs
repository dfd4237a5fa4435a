//! Property tests of the parsers of untrusted input: bundle.json, image manifests and
//! indexes, media parts (tar headers and pack.json), the `.difypkg` zip reader, recipes and
//! stack-config. For arbitrary bytes and for valid samples with bytes changed or cut, no
//! parser panics, and every refusal names the input. Cases are few and inputs small, so the
//! whole set runs in about a second.

use proptest::prelude::*;

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A valid sample with one byte replaced and the result cut at some point.
fn mutated(sample: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = sample.len();
    (0..len, any::<u8>(), 0..=len).prop_map(move |(at, byte, cut)| {
        let mut bytes = sample.clone();
        bytes[at] = byte;
        bytes.truncate(cut.max(at + 1));
        bytes
    })
}

fn input(sample: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        mutated(sample)
    ]
}

fn bundle_json() -> Vec<u8> {
    format!(
        r#"{{"format":"{format}","name":"b","created":"2026-01-01T00:00:00Z",
        "tool":{{"name":"dify-bundle","version":"0.1.0"}},"dify_version":"1.0.0",
        "recipe":{{"name":"b","dify_version":"1.0.0","images":[{{"role":"api","image":"a/b:1"}}]}},
        "platforms":["linux/amd64"],
        "images":[{{"role":"api","source":"a/b:1","source_digest":"sha256:{HEX}",
          "digest":"sha256:{HEX}","media_type":"application/vnd.oci.image.index.v1+json",
          "platforms":[],"size":1}}],
        "files":[{{"path":"blobs/sha256/{HEX}","size":1,"sha256":"{HEX}"}},
                 {{"path":"index.json","size":2,"sha256":"{HEX}"}}]}}"#,
        format = crate::bundle::format::FORMAT_V1
    )
    .into_bytes()
}

fn index_json() -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
        "manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "digest":"sha256:{HEX}","size":418,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
    )
    .into_bytes()
}

fn image_manifest() -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{HEX}","size":2}},
        "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{HEX}","size":9}}]}}"#
    )
    .into_bytes()
}

fn part() -> Vec<u8> {
    let bundle = bundle_json();
    let list = format!(
        r#"{{"format":"{}","bundle":"b","bundle_sha256":"{}","part":1,"parts":1,
        "entries":[{{"entry":"blobs/sha256/{HEX}","path":"blobs/sha256/{HEX}","offset":0,"length":1,"sha256":"{HEX}"}}]}}"#,
        crate::bundle::source::parts::PARTS_FORMAT_V1,
        crate::digest::Digest::of(&bundle).hex()
    );
    let mut builder = tar::Builder::new(Vec::new());
    for (name, bytes) in [
        ("bundle.json".to_owned(), bundle),
        (format!("blobs/sha256/{HEX}"), b"x".to_vec()),
        ("pack.json".to_owned(), list.into_bytes()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, &name, bytes.as_slice())
            .expect("tar");
    }
    builder.into_inner().expect("tar")
}

fn zip() -> Vec<u8> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, method) in [
        ("manifest.yaml", zip::CompressionMethod::Deflated),
        ("main.py", zip::CompressionMethod::Stored),
    ] {
        writer
            .start_file(
                name,
                zip::write::SimpleFileOptions::default().compression_method(method),
            )
            .expect("zip");
        writer.write_all(b"version: 0.0.1\nname: p\n").expect("zip");
    }
    let _ = writer.set_comment("signed");
    writer.finish().expect("zip").into_inner()
}

const RECIPE: &str = "name = \"dify-1.0.0\"\ndify_version = \"1.0.0\"\n\n[[images]]\nrole = \"api\"\nimage = \"docker.io/langgenius/dify-api:1.0.0\"\n\n[[plugins]]\nid = \"langgenius/agent\"\nversion = \"0.0.1\"\n";

const STACK_CONFIG: &str = "[environment.api]\nLOG_LEVEL = \"INFO\"\nMAIL = { ssm = \"/mail\" }\n[environment.all]\nX = { secret = \"arn:x\", field = \"k\" }\n";

/// The samples the mutations start from are accepted, so the properties below start from
/// inputs that reach deep into each parser.
#[test]
fn the_samples_are_valid() {
    crate::bundle::BundleManifest::parse(&bundle_json(), "sample").expect("bundle.json");
    crate::oci::Manifest::parse(&index_json(), "", "sample").expect("index");
    crate::oci::Manifest::parse(&image_manifest(), "", "sample").expect("manifest");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("b.part001.tar");
    std::fs::write(&path, part()).expect("write");
    crate::bundle::source::parts::PartsSource::open_parts(&[path], true).expect("part");
    let bytes = zip();
    let archive = crate::plugins::archive::Archive::read(&bytes).expect("zip");
    assert_eq!(archive.entries.len(), 2);
    for entry in &archive.entries {
        archive.content(entry, 1 << 20).expect("entry");
    }
    crate::recipe::Recipe::parse(RECIPE, "sample").expect("recipe");
    let path = dir.path().join("stack.toml");
    std::fs::write(&path, STACK_CONFIG).expect("write");
    crate::stack::app::StackSettings::load(&path).expect("stack-config");
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn bundle_json_never_panics_and_names_the_input(bytes in input(bundle_json())) {
        if let Err(e) = crate::bundle::BundleManifest::parse(&bytes, "prop-origin") {
            prop_assert!(e.to_string().contains("prop-origin"), "{e}");
        }
    }

    #[test]
    fn manifests_and_indexes_never_panic(
        bytes in prop_oneof![input(index_json()), input(image_manifest())],
        media_type in prop_oneof![
            Just(""),
            Just(crate::oci::OCI_INDEX),
            Just(crate::oci::OCI_MANIFEST),
            Just("application/x-other"),
        ],
    ) {
        if let Err(e) = crate::oci::Manifest::parse(&bytes, media_type, "prop-manifest") {
            prop_assert!(e.to_string().contains("prop-manifest"), "{e}");
        }
    }

    #[test]
    fn parts_never_panic_and_name_the_file(bytes in input(part())) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.part001.tar");
        std::fs::write(&path, &bytes).expect("write");
        if let Err(e) = crate::bundle::source::parts::PartsSource::open_parts(std::slice::from_ref(&path), true) {
            let message = e.to_string();
            prop_assert!(message.contains("b.part001.tar"), "{message}");
            prop_assert!(!message.chars().any(|c| c.is_control() && c != '\n'), "{message:?}");
        }
    }

    #[test]
    fn the_package_zip_reader_never_panics(bytes in input(zip())) {
        if let Ok(archive) = crate::plugins::archive::Archive::read(&bytes) {
            for entry in &archive.entries {
                let _ = archive.content(entry, 1 << 20);
            }
        }
    }

    #[test]
    fn recipes_never_panic_and_name_the_input(bytes in input(RECIPE.as_bytes().to_vec())) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = crate::recipe::Recipe::parse(&text, "prop-recipe") {
            prop_assert!(e.to_string().contains("prop-recipe"), "{e}");
        }
    }

    #[test]
    fn stack_configs_never_panic_and_name_the_file(bytes in input(STACK_CONFIG.as_bytes().to_vec())) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stack.toml");
        std::fs::write(&path, &bytes).expect("write");
        if let Err(e) = crate::stack::app::StackSettings::load(&path) {
            prop_assert!(e.to_string().contains("stack.toml"), "{e}");
        }
    }
}
