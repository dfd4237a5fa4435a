//! `install --isolated`, the ECR part: moto_server 5.2.5 for STS and ECR's control plane,
//! docker-registry with htpasswd `AWS:<token>` standing in for ECR's data plane, skopeo
//! checking what was pushed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::fixtures::{self, layer};
use common::{
    Auth, Moto, Registry, assert_fails_with, assert_success, dify_bundle, json, run, skopeo, stderr,
};

/// moto's GetAuthorizationToken password for its default account.
const TOKEN: &str = "123456789012-auth-token";

struct World {
    moto: Moto,
    ecr_data: Registry,
    source: Registry,
    work: tempfile::TempDir,
    bundle: PathBuf,
    public: PathBuf,
}

async fn world() -> World {
    let moto = Moto::start();
    let ecr_data = Registry::start(Auth::Htpasswd {
        user: "AWS".into(),
        password: TOKEN.into(),
    });
    let source = Registry::start(Auth::None);
    let work = tempfile::tempdir().unwrap();
    let (bundle, stem) = common::dify_like_bundle(&source, work.path(), "0.0.0-test").await;
    World {
        public: stem.with_extension("pub"),
        moto,
        ecr_data,
        source,
        work,
        bundle,
    }
}

impl World {
    fn install(&self, bundle: &Path, extra: &[&str]) -> Output {
        let mut command = dify_bundle();
        self.moto.env(&mut command);
        run(command
            .args([
                "install",
                "--isolated",
                "--json",
                "--region",
                "us-east-1",
                "--ecr-endpoint",
            ])
            .arg(format!("http://{}", self.ecr_data.host()))
            .arg("--pubkey")
            .arg(&self.public)
            .arg("--bundle")
            .arg(bundle)
            .args(extra)
            .stdin(std::process::Stdio::null()))
    }

    /// `verify --json` of the bundle at `path` with the test key.
    fn verify(&self, path: &Path) -> Output {
        run(dify_bundle()
            .arg("verify")
            .arg(path)
            .arg("--pubkey")
            .arg(&self.public)
            .arg("--json"))
    }

    /// Copies `image` (`REPOSITORY@DIGEST`) from the ECR data plane stand-in into an OCI
    /// layout with skopeo, every blob read back: fails the test when any is missing.
    fn copy_back(&self, image: &str, out: &Path) {
        let back = common::skopeo(&[
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--src-creds",
            &format!("AWS:{TOKEN}"),
            &format!("docker://{}/{image}", self.ecr_data.host()),
            &format!("oci:{}:back", out.display()),
        ]);
        assert!(
            back.status.success(),
            "{image}: {}",
            String::from_utf8_lossy(&back.stderr)
        );
    }

    /// `install` into an existing VPC's subnets, with `extra` flags.
    fn install_into(&self, bundle: &Path, vpc: &str, subnets: &[String], extra: &[&str]) -> Output {
        let subnets = subnets.join(",");
        let network = ["--vpc-id", vpc, "--subnet-ids", subnets.as_str()];
        self.install(bundle, &[&network[..], extra].concat())
    }

    /// `skopeo inspect --raw` of `docker://REGISTRY/<image>` on the ECR data plane stand-in.
    fn ecr_inspect(&self, image: &str) -> Output {
        skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &format!("AWS:{TOKEN}"),
            &format!("docker://{}/{image}", self.ecr_data.host()),
        ])
    }

    async fn create_bucket(&self, name: &str) {
        self.moto
            .s3()
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap();
    }

    /// `dify-bundle upload BUNDLE LOCATION --json` to moto's S3, signature checked.
    fn upload(&self, bundle: &Path, location: &str) -> Output {
        let mut command = dify_bundle();
        self.moto.env(&mut command);
        run(command
            .arg("upload")
            .arg(bundle)
            .arg(location)
            .arg("--pubkey")
            .arg(&self.public)
            .arg("--json"))
    }

    /// Runs a `dify-bundle` command against moto, in us-east-1, with no terminal.
    fn cli(&self, args: &[&str]) -> Output {
        let mut command = dify_bundle();
        self.moto.env(&mut command);
        run(command
            .args(args)
            .args(["--region", "us-east-1"])
            .stdin(std::process::Stdio::null()))
    }

    async fn repositories(&self) -> Vec<String> {
        let out = self
            .moto
            .ecr()
            .describe_repositories()
            .send()
            .await
            .unwrap();
        let mut names: Vec<String> = out
            .repositories()
            .iter()
            .filter_map(|r| r.repository_name().map(str::to_owned))
            .collect();
        names.sort();
        names
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_then_push_then_nothing_to_push() {
    let w = world().await;

    // --plan says everything and changes nothing.
    let planned = w.install(&w.bundle, &["--plan"]);
    assert_success(&planned);
    let plan = json(&planned);
    assert_eq!(
        plan["ecr"]["repositories_to_create"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(plan["ecr"]["blobs_present"], 0);
    assert_eq!(plan["identity"]["account"], "123456789012");
    assert!(stderr(&planned).contains("dify/dify-api:1.0"));
    let endpoints = plan["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 9);
    assert!(
        endpoints.iter().all(|e| e["reachable"] == true),
        "{endpoints:?}"
    );
    assert!(
        w.repositories().await.is_empty(),
        "--plan created repositories"
    );

    // Without --yes and without a terminal to ask on: refused, nothing changed.
    assert_fails_with(&w.install(&w.bundle, &[]), "--yes");
    assert!(w.repositories().await.is_empty());

    let pushed = w.install(&w.bundle, &["--yes"]);
    assert_success(&pushed);
    // A blob shared by several repositories crosses once and is mounted into the others
    // (docker-registry mounts as the distribution spec says; ECR does with BLOB_MOUNTING on).
    let report = json(&pushed);
    let ecr_plan = &report["plan"]["ecr"];
    let copy = &report["push"]["copy"];
    assert!(ecr_plan["blobs_shared"].as_u64().unwrap() > 0, "{ecr_plan}");
    assert!(copy["blobs_mounted"].as_u64().unwrap() > 0, "{copy}");
    assert_eq!(copy["bytes_mounted"], ecr_plan["bytes_shared"], "{copy}");
    assert_eq!(
        copy["bytes_transferred"].as_u64().unwrap(),
        ecr_plan["bytes"].as_u64().unwrap() - ecr_plan["bytes_shared"].as_u64().unwrap(),
        "every distinct blob sent exactly once: {copy} {ecr_plan}"
    );
    assert!(stderr(&pushed).contains("mounted from another repository"));
    assert_eq!(
        w.repositories().await,
        [
            "dify/dify-api",
            "dify/dify-plugin-daemon",
            "dify/dify-sandbox",
            "dify/dify-web"
        ]
    );
    let repo = w
        .moto
        .ecr()
        .describe_repositories()
        .repository_names("dify/dify-api")
        .send()
        .await
        .unwrap();
    let repo = &repo.repositories()[0];
    assert_eq!(
        repo.image_tag_mutability().map(|m| m.as_str()),
        Some("IMMUTABLE")
    );
    assert_eq!(
        repo.image_scanning_configuration()
            .map(|c| c.scan_on_push()),
        Some(true)
    );

    // skopeo finds every image under its tag, with the bundle's digests.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.bundle.join("bundle.json")).unwrap()).unwrap();
    for image in manifest["images"].as_array().unwrap() {
        let name = image["source"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .split(':')
            .next()
            .unwrap();
        let raw = w.ecr_inspect(&format!("dify/{name}:1.0"));
        assert!(
            raw.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&raw.stderr)
        );
        assert_eq!(
            dify_bundle::digest::Digest::of(&raw.stdout).to_string(),
            image["digest"].as_str().unwrap()
        );
        for platform in image["platforms"].as_array().unwrap() {
            let digest = platform["digest"].as_str().unwrap();
            let found = w.ecr_inspect(&format!("dify/{name}@{digest}"));
            assert!(found.status.success(), "{name} {}", platform["platform"]);
        }
    }

    // A second run pushes nothing and says so.
    let again = w.install(&w.bundle, &["--yes"]);
    assert_success(&again);
    assert!(
        stderr(&again).contains("nothing to push"),
        "{}",
        stderr(&again)
    );
    let report = json(&again);
    assert_eq!(report["push"]["copy"]["bytes_transferred"], 0);
    assert_eq!(
        report["plan"]["ecr"]["blobs_present"],
        report["plan"]["ecr"]["blobs"]
    );

    // Media parts install the same way (and find everything there).
    let media = w.work.path().join("media");
    assert_success(&run(dify_bundle()
        .arg("pack")
        .arg(&w.bundle)
        .args(["--split-size", "1MiB", "--allow-unsigned", "--out"])
        .arg(&media)));
    let from_parts = w.install(&media, &["--yes"]);
    assert_success(&from_parts);
    assert!(stderr(&from_parts).contains("nothing to push"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_bundle_is_refused_before_any_change() {
    let w = world().await;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.bundle.join("bundle.json")).unwrap()).unwrap();
    // The bundle's blobs, smallest first.
    let mut blobs: Vec<(u64, String)> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["size"].as_u64().unwrap(),
                f["path"].as_str().unwrap().to_owned(),
            )
        })
        .filter(|(_, path)| path.starts_with("blobs/"))
        .collect();
    blobs.sort();
    // A truncated file is refused by the listing check, before anything is created.
    let small = blobs[0].1.clone();
    let small_path = w.bundle.join(&small);
    let original = std::fs::read(&small_path).unwrap();
    std::fs::write(&small_path, &original[..original.len() - 1]).unwrap();
    let refused = w.install(&w.bundle, &["--yes"]);
    assert_fails_with(&refused, &small);
    assert!(stderr(&refused).contains("nothing was changed"));
    assert!(w.repositories().await.is_empty());
    std::fs::write(&small_path, &original).unwrap();

    // A layer changed in place (same size) is caught as it streams to the registry: the push
    // stops on it, before any manifest or tag, naming it and what to do.
    let layer = blobs[blobs.len() - 1].1.clone();
    let path = w.bundle.join(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let refused = w.install(&w.bundle, &["--yes"]);
    assert_fails_with(&refused, layer.trim_start_matches("blobs/sha256/"));
    assert!(
        stderr(&refused).contains("digest mismatch"),
        "{}",
        stderr(&refused)
    );
    assert!(
        stderr(&refused).contains("dify-bundle verify"),
        "{}",
        stderr(&refused)
    );
    for name in ["dify-api", "dify-web", "dify-sandbox", "dify-plugin-daemon"] {
        let tagged = w.ecr_inspect(&format!("dify/{name}:1.0"));
        assert!(
            !tagged.status.success(),
            "{name} was tagged from a damaged bundle"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_registry_rejects_is_reported() {
    let w = world().await;
    // The data plane no longer accepts moto's token (as with an expired one).
    let other = Registry::start(Auth::Htpasswd {
        user: "AWS".into(),
        password: "something-else".into(),
    });
    let mut command = dify_bundle();
    w.moto.env(&mut command);
    let out = run(command
        .args([
            "install",
            "--isolated",
            "--yes",
            "--region",
            "us-east-1",
            "--ecr-endpoint",
        ])
        .arg(format!("http://{}", other.host()))
        .arg("--pubkey")
        .arg(&w.public)
        .arg("--bundle")
        .arg(&w.bundle));
    assert_fails_with(&out, "rejected the credentials for user `AWS`");

    // An ECR data plane this host cannot reach stops the install at preflight, by name.
    let closed = common::free_port();
    let mut command = dify_bundle();
    w.moto.env(&mut command);
    let out = run(command
        .args([
            "install",
            "--isolated",
            "--yes",
            "--region",
            "us-east-1",
            "--ecr-endpoint",
        ])
        .arg(format!("http://127.0.0.1:{closed}"))
        .arg("--pubkey")
        .arg(&w.public)
        .arg("--bundle")
        .arg(&w.bundle));
    assert_fails_with(&out, &format!("ecr.dkr         127.0.0.1:{closed}"));
    assert!(w.repositories().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_killed_midway_resumes_and_sends_only_the_rest() {
    use common::proxy::{Fault, Proxy};
    let w = world().await;
    let proxy = Proxy::start(w.ecr_data.host()).await;
    // One blob at a time, api's first: the first upload into dify-web hangs.
    proxy.inject("/v2/dify/dify-web/blobs/uploads/", Fault::Stall, 1);
    let mut command = dify_bundle();
    w.moto.env(&mut command);
    command
        .args([
            "install",
            "--isolated",
            "--yes",
            "--concurrency",
            "1",
            "--region",
            "us-east-1",
            "--ecr-endpoint",
        ])
        .arg(format!("http://{}", proxy.host()))
        .arg("--pubkey")
        .arg(&w.public)
        .arg("--bundle")
        .arg(&w.bundle)
        .stderr(std::process::Stdio::null());
    let mut child = tokio::process::Command::from(command).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !proxy
        .requests()
        .iter()
        .any(|r| r.path.starts_with("/v2/dify/dify-web/blobs/uploads/"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the push never reached dify-web"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let resumed = w.install(&w.bundle, &["--yes"]);
    assert_success(&resumed);
    let report = json(&resumed);
    let copy = &report["push"]["copy"];
    assert!(copy["blobs_present"].as_u64().unwrap() > 0, "{copy}");
    assert_eq!(
        copy["bytes_transferred"].as_u64().unwrap()
            + copy["bytes_present"].as_u64().unwrap()
            + copy["bytes_mounted"].as_u64().unwrap(),
        copy["blob_bytes"].as_u64().unwrap()
    );
    assert!(stderr(&w.install(&w.bundle, &["--yes"])).contains("nothing to push"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_straight_from_s3() {
    let w = world().await;
    swap_template(&w, common::moto_template::reduce);
    w.create_bucket("air").await;
    assert_success(&w.upload(&w.bundle, "s3://air/dify"));
    let installed = w.install(Path::new("s3://air/dify/bundles/test-bundle"), &["--yes"]);
    assert_success(&installed);
    assert_eq!(w.repositories().await.len(), 4);
    let report = json(&installed);
    let copy = &report["push"]["copy"];
    assert_eq!(
        copy["bytes_transferred"].as_u64().unwrap() + copy["bytes_mounted"].as_u64().unwrap(),
        copy["blob_bytes"].as_u64().unwrap()
    );
    let raw = w.ecr_inspect("dify/dify-web:1.0");
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );

    // Into an existing VPC, the application stack planned from the template read in place
    // in S3 (a read that once blocked inside the async runtime and panicked).
    let (vpc, subnets) = existing_vpc(&w, "10.53.0.0/16").await;
    let planned = w.install_into(
        Path::new("s3://air/dify/bundles/test-bundle"),
        vpc.as_str(),
        &subnets,
        &["--app-stack", "dify-app", "--plan"],
    );
    assert_success(&planned);
    let plan = json(&planned);
    assert_eq!(plan["app"]["stack"], "dify-app");
    assert_eq!(plan["app"]["parameters"]["SubnetIds"], subnets.join(","));
    assert_eq!(plan["app"]["parameters"]["ApiRepository"], "dify/dify-api");

    // The template read in place in S3 is the signed one the directory holds.
    let template = |bundle: &std::ffi::OsStr| {
        let mut command = dify_bundle();
        w.moto.env(&mut command);
        let printed = run(command
            .arg("template")
            .arg(bundle)
            .arg("--pubkey")
            .arg(&w.public));
        assert_success(&printed);
        printed.stdout
    };
    assert_eq!(
        template("s3://air/dify/bundles/test-bundle".as_ref()),
        template(w.bundle.as_os_str())
    );
}

/// Services (short names) of the endpoints in a VPC.
async fn endpoint_services(w: &World, vpc: &str) -> Vec<String> {
    let out = w
        .moto
        .ec2()
        .describe_vpc_endpoints()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(vpc)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut names: Vec<String> = out
        .vpc_endpoints()
        .iter()
        .filter_map(|e| {
            e.service_name()
                .map(|s| s.trim_start_matches("com.amazonaws.us-east-1.").to_owned())
        })
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_stack_in_an_existing_vpc_skips_what_is_there() {
    let w = world().await;
    let ec2 = w.moto.ec2();
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.42.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    let mut subnets = Vec::new();
    for (cidr, zone) in [
        ("10.42.1.0/24", "us-east-1a"),
        ("10.42.2.0/24", "us-east-1b"),
    ] {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(cidr)
            .availability_zone(zone)
            .send()
            .await
            .unwrap();
        subnets.push(subnet.subnet().unwrap().subnet_id().unwrap().to_owned());
    }
    // Someone already made the logs endpoint.
    ec2.create_vpc_endpoint()
        .vpc_id(&vpc)
        .service_name("com.amazonaws.us-east-1.logs")
        .vpc_endpoint_type(aws_sdk_ec2::types::VpcEndpointType::Interface)
        .subnet_ids(&subnets[0])
        .send()
        .await
        .unwrap();
    let network = [
        "--vpc-id",
        vpc.as_str(),
        "--subnet-ids",
        &subnets.join(","),
        "--no-app",
    ];

    let planned = w.install(&w.bundle, &[&network[..], &["--plan"]].concat());
    assert_success(&planned);
    let plan = json(&planned);
    assert_eq!(plan["network"]["skip"], serde_json::json!(["logs"]));
    assert_eq!(plan["network"]["create"].as_array().unwrap().len(), 9);
    assert_eq!(
        endpoint_services(&w, &vpc).await,
        ["logs"],
        "--plan changed the VPC"
    );

    let installed = w.install(&w.bundle, &[&network[..], &["--yes"]].concat());
    assert_success(&installed);
    let services = endpoint_services(&w, &vpc).await;
    for service in [
        "bedrock",
        "bedrock-agent-runtime",
        "bedrock-runtime",
        "ecr.api",
        "ecr.dkr",
        "logs",
        "s3",
        "secretsmanager",
        "ssm",
        "ssmmessages",
    ] {
        assert!(
            services.iter().any(|s| s == service),
            "{service} missing: {services:?}"
        );
    }
    assert_eq!(
        services.iter().filter(|s| *s == "logs").count(),
        1,
        "a second logs endpoint was made"
    );

    // Again: the stack keeps its own endpoints and has nothing to do; ECR nothing to push.
    let again = w.install(&w.bundle, &[&network[..], &["--yes"]].concat());
    assert_success(&again);
    let err = stderr(&again);
    assert!(
        err.contains("nothing to do") && err.contains("nothing to push"),
        "{err}"
    );
    assert_eq!(endpoint_services(&w, &vpc).await, services);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_isolated_vpc_with_its_endpoints() {
    let w = world().await;
    swap_template(&w, common::moto_template::reduce);
    let installed = w.install(
        &w.bundle,
        &[
            "--new-vpc-cidr",
            "10.0.0.0/16",
            "--endpoints-stack",
            "dify-net",
            "--wait",
            "0",
            "--yes",
        ],
    );
    assert_success(&installed);
    let report = json(&installed);
    assert_eq!(report["network"]["Done"]["status"], "CREATE_COMPLETE");
    // The application's VPC is the one the endpoints stack made, known only after it ran.
    assert_eq!(
        report["plan"]["app"]["parameters"]["VpcId"],
        "(from the endpoints stack)"
    );
    let cfn = aws_sdk_cloudformation::Client::new(&w.moto.sdk_config());
    let app = cfn
        .describe_stacks()
        .stack_name("dify")
        .send()
        .await
        .unwrap();
    let app_vpc = app.stacks()[0]
        .parameters()
        .iter()
        .find(|p| p.parameter_key() == Some("VpcId"))
        .and_then(|p| p.parameter_value())
        .unwrap()
        .to_owned();
    assert_eq!(report["app"]["healthy"], false, "--wait 0 does not wait");
    // (moto reports no stack outputs; the VPC is found by its Name tag.)
    let vpcs = w
        .moto
        .ec2()
        .describe_vpcs()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("tag:Name")
                .values("dify-net")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let vpc = vpcs.vpcs()[0].vpc_id().unwrap();
    assert_eq!(vpcs.vpcs()[0].cidr_block(), Some("10.0.0.0/16"));
    assert_eq!(app_vpc, vpc);
    let subnets = w
        .moto
        .ec2()
        .describe_subnets()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .values(vpc)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let zones: std::collections::BTreeSet<_> = subnets
        .subnets()
        .iter()
        .filter_map(|s| s.availability_zone())
        .collect();
    assert_eq!(zones.len(), 2, "two subnets in two zones");
    let services = endpoint_services(&w, vpc).await;
    assert_eq!(services.len(), 10, "{services:?}");
    let gateways = w
        .moto
        .ec2()
        .describe_internet_gateways()
        .send()
        .await
        .unwrap();
    assert!(
        gateways
            .internet_gateways()
            .iter()
            .all(|g| g.attachments().iter().all(|a| a.vpc_id() != Some(vpc))),
        "the new VPC has an internet gateway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_registry_credentials_take_effect_mid_run() {
    use dify_bundle::store::registry::Registries;
    use dify_bundle::store::registry::auth::Credentials;
    use dify_bundle::store::{BlobSink as _, RegistryOptions};
    let registry = Registry::start(Auth::Htpasswd {
        user: "AWS".into(),
        password: "fresh-token".into(),
    });
    let mut options = RegistryOptions::default();
    options.insecure.insert(registry.host());
    options.credentials.insert(
        registry.host(),
        Credentials {
            username: "AWS".into(),
            password: "expired-token".into(),
        },
    );
    let store = Registries::new(options).unwrap().store(&registry.host());
    let blob = dify_bundle::oci::Descriptor::new(
        "application/octet-stream",
        dify_bundle::digest::Digest::of(b"x"),
        1,
    );
    let refused = store
        .blob_state("dify/x", &blob)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("rejected the credentials"), "{refused}");
    store
        .set_credentials(Credentials {
            username: "AWS".into(),
            password: "fresh-token".into(),
        })
        .await;
    assert_eq!(
        store.blob_state("dify/x", &blob).await.unwrap(),
        dify_bundle::store::BlobState::Absent
    );
}

/// An existing VPC with two subnets in two zones; returns the VPC and subnet IDs.
async fn existing_vpc(w: &World, cidr: &str) -> (String, Vec<String>) {
    let ec2 = w.moto.ec2();
    let vpc = ec2.create_vpc().cidr_block(cidr).send().await.unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    let prefix = cidr.rsplit_once(".0.0/").unwrap().0;
    let mut subnets = Vec::new();
    for (n, zone) in [(1, "us-east-1a"), (2, "us-east-1b")] {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("{prefix}.{n}.0/24"))
            .availability_zone(zone)
            .send()
            .await
            .unwrap();
        subnets.push(subnet.subnet().unwrap().subnet_id().unwrap().to_owned());
    }
    (vpc, subnets)
}

fn bundle_json(bundle: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap()
}

/// Replaces the bundle's stack template by `transform(template)` and signs the bundle again,
/// as a release built with that template would be.
fn swap_template(w: &World, transform: impl Fn(&serde_json::Value) -> serde_json::Value) {
    swap_template_of(w, &w.bundle.clone(), transform)
}

fn swap_template_of(
    w: &World,
    bundle: &Path,
    transform: impl Fn(&serde_json::Value) -> serde_json::Value,
) {
    let mut manifest = bundle_json(bundle);
    let old = manifest["stack"]["digest"].as_str().unwrap().to_owned();
    let old_path = format!("blobs/sha256/{}", old.trim_start_matches("sha256:"));
    let template: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join(&old_path)).unwrap()).unwrap();
    let bytes = serde_json::to_vec_pretty(&transform(&template)).unwrap();
    let digest = dify_bundle::digest::Digest::of(&bytes);
    let path = format!("blobs/sha256/{}", digest.hex());
    std::fs::write(bundle.join(&path), &bytes).unwrap();
    std::fs::remove_file(bundle.join(&old_path)).unwrap();
    manifest["stack"]["digest"] = serde_json::json!(digest.to_string());
    manifest["stack"]["size"] = serde_json::json!(bytes.len());
    let files = manifest["files"].as_array_mut().unwrap();
    files.retain(|f| f["path"] != old_path.as_str());
    files.push(serde_json::json!({"path": path, "size": bytes.len(), "sha256": digest.hex()}));
    std::fs::write(
        bundle.join("bundle.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    assert_success(&run(dify_bundle()
        .arg("sign")
        .arg(bundle)
        .arg("--key")
        .arg(w.public.with_extension("key"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_template_is_signed_in_the_bundle_and_lints_clean() {
    let w = world().await;
    let printed = run(dify_bundle()
        .arg("template")
        .arg(&w.bundle)
        .arg("--pubkey")
        .arg(&w.public));
    assert_success(&printed);
    let template: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();

    // Every container runs its role's image from the bundle, by digest.
    let manifest = bundle_json(&w.bundle);
    let text = String::from_utf8_lossy(&printed.stdout).to_string();
    for image in manifest["images"].as_array().unwrap() {
        let digest = image["digest"].as_str().unwrap();
        assert!(text.contains(&format!("@{digest}")), "{digest} not used");
    }
    let tasks: Vec<&serde_json::Value> = template["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::ECS::TaskDefinition")
        .collect();
    assert_eq!(tasks.len(), 4, "api, beat, sandbox, web");

    // cfn-lint: no errors (exit bit 2) on the template exactly as signed.
    let file = w.work.path().join("app.json");
    std::fs::write(&file, &printed.stdout).unwrap();
    let lint = run(std::process::Command::new("cfn-lint").arg(&file));
    assert_eq!(
        lint.status.code().unwrap_or(-1) & 2,
        0,
        "cfn-lint found errors:\n{}",
        String::from_utf8_lossy(&lint.stdout)
    );

    // A template changed after signing is refused, by digest.
    let digest = manifest["stack"]["digest"].as_str().unwrap();
    let blob = w
        .bundle
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    assert_fails_with(
        &run(dify_bundle()
            .arg("template")
            .arg(&w.bundle)
            .arg("--pubkey")
            .arg(&w.public)),
        "stack template",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_the_application_stack_then_waits_until_healthy() {
    let w = world().await;
    swap_template(&w, common::moto_template::reduce);
    let (vpc, subnets) = existing_vpc(&w, "10.52.0.0/16").await;
    let network = [
        "--vpc-id",
        vpc.as_str(),
        "--subnet-ids",
        &subnets.join(","),
        "--app-stack",
        "dify-app",
        "--app-setting",
        "fargate_spot=true",
    ];

    // The plan refuses what the template's Rules would refuse, before anything changes.
    for (settings, needle) in [
        (["api_cpu=4096", "api_memory=4096"], "not a Fargate size"),
        (
            ["api_min_tasks=3", "api_max_tasks=2"],
            "ApiMinTasks=3 is above ApiMaxTasks=2",
        ),
    ] {
        let refused = w.install(
            &w.bundle,
            &[
                &network[..],
                &[
                    "--app-setting",
                    settings[0],
                    "--app-setting",
                    settings[1],
                    "--plan",
                ],
            ]
            .concat(),
        );
        assert_fails_with(&refused, needle);
    }

    let planned = w.install(&w.bundle, &[&network[..], &["--plan"]].concat());
    assert_success(&planned);
    let plan = json(&planned)["app"].clone();
    assert_eq!(plan["stack"], "dify-app");
    assert!(plan["status"].is_null());
    assert_eq!(plan["parameters"]["AllowedCidr1"], "10.52.0.0/16");
    assert_eq!(plan["parameters"]["FargateSpot"], "true");
    assert_eq!(plan["parameters"]["ApiRepository"], "dify/dify-api");
    assert_eq!(plan["parameters"]["SubnetIds"], subnets.join(","));
    let cfn = aws_sdk_cloudformation::Client::new(&w.moto.sdk_config());
    assert!(
        cfn.describe_stacks()
            .stack_name("dify-app")
            .send()
            .await
            .is_err(),
        "--plan created the stack"
    );

    // moto's services report their tasks running, but no target is registered: not healthy.
    let first = w.install(
        &w.bundle,
        &[&network[..], &["--yes", "--wait", "3s"]].concat(),
    );
    assert_fails_with(&first, "target group");
    let err = stderr(&first);
    // One deploy: nothing waits for an object in the storage bucket.
    assert_eq!(err.matches("deploying stack dify-app").count(), 1, "{err}");
    let stack = cfn
        .describe_stacks()
        .stack_name("dify-app")
        .send()
        .await
        .unwrap();
    let stack = &stack.stacks()[0];
    assert!(
        stack
            .stack_status()
            .unwrap()
            .as_str()
            .ends_with("_COMPLETE"),
        "{:?}",
        stack.stack_status()
    );
    let parameter = |key: &str| {
        stack
            .parameters()
            .iter()
            .find(|p| p.parameter_key() == Some(key))
            .and_then(|p| p.parameter_value())
            .map(str::to_owned)
    };
    assert_eq!(parameter("Start").as_deref(), Some("true"));
    let resource = |id: &'static str| {
        let cfn = cfn.clone();
        async move {
            let out = cfn
                .describe_stack_resources()
                .stack_name("dify-app")
                .send()
                .await
                .unwrap();
            out.stack_resources()
                .iter()
                .find(|r| r.logical_resource_id() == Some(id))
                .and_then(|r| r.physical_resource_id())
                .unwrap()
                .to_owned()
        }
    };
    let storage = resource("StorageBucket").await;
    // The plugin daemon's working directory: EFS with a mount target in each subnet.
    assert!(resource("PluginFiles").await.starts_with("fs-"));
    for mount in ["PluginFilesMountA", "PluginFilesMountB"] {
        assert!(resource(mount).await.starts_with("fsmt-"), "{mount}");
    }
    let s3 = w.moto.s3();
    let stored = s3.list_objects_v2().bucket(&storage).send().await.unwrap();
    assert!(
        stored.contents().is_empty(),
        "the installer wrote into storage"
    );
    let staged = s3
        .list_objects_v2()
        .bucket("dify-bundle-staging-123456789012-us-east-1")
        .send()
        .await
        .unwrap();
    assert_eq!(staged.contents().len(), 1, "one staged template");
    let encryption = s3
        .get_bucket_encryption()
        .bucket("dify-bundle-staging-123456789012-us-east-1")
        .send()
        .await;
    assert!(encryption.is_ok(), "staging bucket not encrypted");

    // Register a task IP in every target group, as ECS does once containers answer.
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&w.moto.sdk_config());
    let groups = elb.describe_target_groups().send().await.unwrap();
    assert_eq!(groups.target_groups().len(), 4);
    for group in groups.target_groups() {
        assert_eq!(
            group.matcher().and_then(|m| m.http_code()),
            Some("200-299,307")
        );
        elb.register_targets()
            .target_group_arn(group.target_group_arn().unwrap())
            .targets(
                aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
                    .id("10.52.1.10")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    let again = w.install(
        &w.bundle,
        &[&network[..], &["--yes", "--wait", "60s"]].concat(),
    );
    assert_success(&again);
    let err = stderr(&again);
    assert!(
        err.contains("nothing to do, stack dify-app is up to date"),
        "{err}"
    );
    assert!(err.contains("Dify is healthy"), "{err}");
    let balancer = elb
        .describe_load_balancers()
        .load_balancer_arns(resource("LoadBalancer").await)
        .send()
        .await
        .unwrap();
    let balancer = &balancer.load_balancers()[0];
    assert_eq!(
        balancer.scheme(),
        Some(&aws_sdk_elasticloadbalancingv2::types::LoadBalancerSchemeEnum::Internal)
    );
    let dns = balancer.dns_name().unwrap();
    assert!(err.contains(&format!("Dify: http://{dns}")), "{err}");
    assert!(err.contains("aws ecs execute-command"), "{err}");
    let report = json(&again);
    assert_eq!(report["app"]["healthy"], true);
    assert_eq!(report["app"]["deploys"], serde_json::json!(["NothingToDo"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_set_runs_only_when_approved() {
    use dify_bundle::aws::cloudformation::{CloudFormation, Deployed, StackRequest};
    use std::sync::{Arc, Mutex};

    let moto = Moto::start();
    let cfn = CloudFormation::new(&moto.sdk_config());
    let template = serde_json::json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": { "Logs": { "Type": "AWS::Logs::LogGroup", "Properties": { "RetentionInDays": 7 } } },
    })
    .to_string();
    let progress = dify_bundle::progress::Silent;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let declined = StackRequest::inline(
        &template,
        Some(Arc::new(move |stack: &str, changes: &[String]| {
            record
                .lock()
                .unwrap()
                .push(format!("{stack}: {}", changes.join("|")));
            false
        })),
    );
    let refused = cfn.deploy("asked", &declined, &progress).await.unwrap_err();
    assert!(refused.to_string().contains("not approved"), "{refused}");
    let asked = seen.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0].contains("AWS::Logs::LogGroup") && asked[0].contains("Logs"),
        "{asked:?}"
    );
    assert!(
        cfn.resources("asked").await.unwrap().is_empty(),
        "nothing was created"
    );

    // Approved (the interrupted create is started over), then nothing to do.
    let approved = StackRequest::inline(&template, Some(Arc::new(|_: &str, _: &[String]| true)));
    match cfn.deploy("asked", &approved, &progress).await.unwrap() {
        Deployed::Done { status, .. } => assert_eq!(status, "CREATE_COMPLETE"),
        other => panic!("{other:?}"),
    }
    assert_eq!(cfn.resources("asked").await.unwrap(), ["Logs"]);
    assert!(matches!(
        cfn.deploy("asked", &approved, &progress).await.unwrap(),
        Deployed::NothingToDo
    ));
}

/// Bundle B: a later release of bundle A's recipe. Its api and web images are new (their
/// own layers differ; the base layer is A's), sandbox and plugin daemon are A's; its Dify
/// version differs. Built, signed, with the moto-deployable template. Returns it and the
/// bytes of its configs and layers that bundle A does not hold.
async fn build_bundle_b(w: &World) -> (PathBuf, u64) {
    build_bundle_b_with(w, common::moto_template::reduce).await
}

async fn build_bundle_b_with(
    w: &World,
    transform: impl Fn(&serde_json::Value) -> serde_json::Value,
) -> (PathBuf, u64) {
    build_bundle_b_as(w, "bundle-b", &[], transform).await
}

/// Bundle B (new api and web images over A's sandbox and plugin daemon) built into `out`
/// with `extra` build flags, its template transformed; and the bytes of its blobs A lacks.
async fn build_bundle_b_as(
    w: &World,
    out: &str,
    extra: &[&str],
    transform: impl Fn(&serde_json::Value) -> serde_json::Value,
) -> (PathBuf, u64) {
    use common::fixtures::{ImageSpec, Style};
    let base = layer(41, 1 << 20);
    let a_blobs = blob_files(&w.bundle);
    let mut new_bytes = 0;
    for (seed, name, style) in [
        (21, "dify-api", Style::Oci),
        (22, "dify-web", Style::Docker),
    ] {
        let pushed = fixtures::push(
            &w.source,
            &ImageSpec {
                repo: &format!("langgenius/{name}"),
                tag: "2.0",
                style,
                arches: &["amd64", "arm64"],
                index: true,
                base: &base,
                own_size: 256 << 10,
                seed,
                attestation: false,
            },
        )
        .await;
        let mut seen = std::collections::BTreeSet::new();
        // The bundle holds the default platform only (linux/amd64).
        for descriptor in &pushed.blobs["amd64"] {
            let path = format!("blobs/sha256/{}", descriptor.digest.hex());
            if !a_blobs.contains_key(&path) && seen.insert(path) {
                new_bytes += descriptor.size;
            }
        }
    }
    let host = w.source.host();
    let dir = w.work.path().join("recipe-b");
    std::fs::create_dir_all(&dir).unwrap();
    let recipe = dir.join("recipe.toml");
    std::fs::write(
        &recipe,
        format!(
            "name = \"test-bundle-b\"\ndify_version = \"0.0.1-test\"\n\n[[images]]\nrole = \"api\"\nimage = \"{host}/langgenius/dify-api:2.0\"\n\n[[images]]\nrole = \"web\"\nimage = \"{host}/langgenius/dify-web:2.0\"\n\n[[images]]\nrole = \"sandbox\"\nimage = \"{host}/langgenius/dify-sandbox:1.0\"\n\n[[images]]\nrole = \"plugin-daemon\"\nimage = \"{host}/langgenius/dify-plugin-daemon:1.0\"\n"
        ),
    )
    .unwrap();
    let bundle = w.work.path().join(out);
    assert_success(&run(dify_bundle()
        .args(["build", "--insecure-registry", &host, "--sign-key"])
        .arg(w.public.with_extension("key"))
        .arg("--recipe")
        .arg(&recipe)
        .arg("--out")
        .arg(&bundle)
        .args(extra)));
    swap_template_of(w, &bundle, transform);
    (bundle, new_bytes)
}

/// The blob files of a bundle (its `blobs/sha256/…` entries in bundle.json).
fn blob_files(bundle: &Path) -> std::collections::BTreeMap<String, u64> {
    bundle_json(bundle)["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["path"].as_str().unwrap().starts_with("blobs/"))
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Every container image of the task definitions of the template `stack` runs (GetTemplate).
/// The ECS side cannot be the oracle here: on a stack update moto 5.2.5 re-registers a task
/// definition from the CloudFormation-cased properties (moto/ecs/models.py,
/// `TaskDefinition.update_from_cloudformation_json`), which leaves it without images, and
/// keeps the services on the old revision.
async fn running_images(w: &World, stack: &str) -> Vec<String> {
    let cfn = aws_sdk_cloudformation::Client::new(&w.moto.sdk_config());
    let out = cfn.get_template().stack_name(stack).send().await.unwrap();
    let template: serde_json::Value = serde_json::from_str(out.template_body().unwrap()).unwrap();
    let mut images = Vec::new();
    for resource in template["Resources"].as_object().unwrap().values() {
        if resource["Type"] != "AWS::ECS::TaskDefinition" {
            continue;
        }
        for container in resource["Properties"]["ContainerDefinitions"]
            .as_array()
            .unwrap()
        {
            images.push(container["Image"].to_string());
        }
    }
    images.sort();
    images
}

async fn stack_parameters(w: &World, stack: &str) -> std::collections::BTreeMap<String, String> {
    let cfn = aws_sdk_cloudformation::Client::new(&w.moto.sdk_config());
    let out = cfn
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .unwrap();
    out.stacks()[0]
        .parameters()
        .iter()
        .map(|p| {
            (
                p.parameter_key().unwrap().to_owned(),
                p.parameter_value().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_keeps_every_operator_choice_and_pushes_only_what_is_new() {
    let w = world().await;
    swap_template(&w, common::moto_template::reduce);
    let (vpc, subnets) = existing_vpc(&w, "10.61.0.0/16").await;
    let subnet_list = subnets.join(",");
    let network = [
        "--vpc-id",
        vpc.as_str(),
        "--subnet-ids",
        subnet_list.as_str(),
        "--app-stack",
        "dify",
    ];
    let chosen = [
        "--allowed-cidr",
        "10.61.0.0/16",
        "--allowed-cidr",
        "192.168.10.0/24",
        "--app-setting",
        "log_retention_days=365",
        "--app-setting",
        "fargate_spot=true",
        "--app-setting",
        "api_memory=4096",
    ];
    let first = w.install(
        &w.bundle,
        &[&network[..], &chosen[..], &["--yes", "--wait", "0"]].concat(),
    );
    assert_success(&first);
    let before = stack_parameters(&w, "dify").await;
    assert_eq!(before["LogRetentionDays"], "365");
    assert_eq!(before["AllowedCidr2"], "192.168.10.0/24");
    let a_images = running_images(&w, "dify").await;

    // status after A: the stack, A's version and template, A's images, the endpoints.
    let status = w.cli(&["status", "--json"]);
    assert_eq!(
        status.status.code(),
        Some(1),
        "moto registers no healthy target"
    );
    let report = json(&status);
    let a_template = bundle_json(&w.bundle)["stack"]["digest"].clone();
    assert_eq!(report["app"]["deployed"]["dify_version"], "0.0.0-test");
    assert_eq!(report["app"]["deployed"]["bundle"], "test-bundle");
    assert_eq!(report["app"]["deployed"]["template"], a_template);
    let images = report["app"]["images"].as_array().unwrap();
    assert!(images.len() >= 4, "{images:?}");
    assert!(images.iter().all(|i| i["expected"] == true), "{images:?}");
    for role in ["dify-api", "dify-web", "dify-sandbox", "dify-plugin-daemon"] {
        assert!(
            images
                .iter()
                .any(|i| i["image"].as_str().unwrap().contains(role)),
            "{role}: {images:?}"
        );
    }
    assert_eq!(report["app"]["services"].as_array().unwrap().len(), 4);
    assert_eq!(report["app"]["targets"].as_array().unwrap().len(), 4);
    assert_eq!(report["endpoints"]["missing"], serde_json::json!([]));
    assert_eq!(report["endpoints"]["present"].as_array().unwrap().len(), 10);
    let problems = report["app"]["problems"].to_string();
    assert!(problems.contains("target group"), "{problems}");
    assert!(stderr(&status).contains("Dify 0.0.0-test from bundle test-bundle"));

    let (b, new_bytes) = build_bundle_b(&w).await;
    // Compared with bundle B before the upgrade: the stack runs another template.
    let b_path = b.to_str().unwrap().to_owned();
    let public = w.public.to_str().unwrap().to_owned();
    let before_b = json(&w.cli(&["status", "--json", "--bundle", &b_path, "--pubkey", &public]));
    assert!(
        before_b["app"]["problems"]
            .to_string()
            .contains("not bundle test-bundle-b"),
        "{}",
        before_b["app"]["problems"]
    );
    assert!(new_bytes > 0);

    // The plan, given only the network: the versions, every earlier choice kept, what changes.
    let planned = w.install(&b, &[&network[..], &["--plan"]].concat());
    assert_success(&planned);
    let err = stderr(&planned);
    assert!(err.contains("Dify 0.0.0-test → 0.0.1-test"), "{err}");
    assert!(err.contains("bundle test-bundle → test-bundle-b"), "{err}");
    let plan = json(&planned)["app"].clone();
    assert_eq!(plan["upgrade"]["version_changes"], true);
    for (key, value) in [
        ("LogRetentionDays", "365"),
        ("AllowedCidr1", "10.61.0.0/16"),
        ("AllowedCidr2", "192.168.10.0/24"),
        ("FargateSpot", "true"),
        ("ApiMemory", "4096"),
    ] {
        assert_eq!(plan["kept"][key], value, "{key}: {}", plan["kept"]);
        assert!(plan["parameters"].get(key).is_none(), "{key} given again");
        assert!(err.contains(&format!("{value}  (kept)")), "{key}: {err}");
    }
    // moto cannot create the Aurora cluster (tests/common/moto_template.rs), so the stack has
    // no database to snapshot: the plan says so instead of naming a snapshot.
    assert!(plan["upgrade"]["snapshot"].is_null());
    assert!(err.contains("no database cluster to snapshot"), "{err}");
    // The change set was worked out and discarded: the task definitions change.
    let changes = plan["upgrade"]["changes"]
        .as_array()
        .expect("a change set preview");
    assert!(
        changes.iter().any(|c| c["logical_id"] == "ApiTask"),
        "{changes:?}"
    );
    let cfn = aws_sdk_cloudformation::Client::new(&w.moto.sdk_config());
    let sets = cfn
        .list_change_sets()
        .stack_name("dify")
        .send()
        .await
        .unwrap();
    // (moto keeps executed change sets listed; AWS removes them on execution.)
    let waiting: Vec<_> = sets
        .summaries()
        .iter()
        .filter(|s| s.execution_status().map(|e| e.as_str()) != Some("EXECUTE_COMPLETE"))
        .collect();
    assert!(
        waiting.is_empty(),
        "the preview left a change set: {waiting:?}"
    );
    assert_eq!(
        running_images(&w, "dify").await,
        a_images,
        "--plan changed the stack"
    );

    let upgraded = w.install(&b, &[&network[..], &["--yes", "--wait", "0"]].concat());
    assert_success(&upgraded);
    let report = json(&upgraded);
    // Only B's new blobs went to ECR; A's were found there.
    assert_eq!(report["push"]["copy"]["bytes_transferred"], new_bytes);
    assert!(report["push"]["copy"]["blobs_present"].as_u64().unwrap() > 0);
    // Every choice is still in place, and the services run B's images, by digest.
    let after = stack_parameters(&w, "dify").await;
    for key in [
        "LogRetentionDays",
        "AllowedCidr1",
        "AllowedCidr2",
        "FargateSpot",
        "ApiMemory",
    ] {
        assert_eq!(after[key], before[key], "{key}");
    }
    let images = running_images(&w, "dify").await;
    for image in bundle_json(&b)["images"].as_array().unwrap() {
        let digest = image["digest"].as_str().unwrap();
        assert!(
            images.iter().any(|i| i.contains(&format!("@{digest}"))),
            "{digest} not running: {images:?}"
        );
    }
    assert_ne!(images, a_images);

    // status after B, against bundle B: B's version and template.
    let after_b = json(&w.cli(&["status", "--json", "--bundle", &b_path, "--pubkey", &public]));
    assert_eq!(after_b["app"]["deployed"]["dify_version"], "0.0.1-test");
    assert_eq!(after_b["app"]["deployed"]["bundle"], "test-bundle-b");
    assert_eq!(
        after_b["app"]["deployed"]["template"],
        bundle_json(&b)["stack"]["digest"]
    );
    assert_eq!(after_b["bundle"]["bundle"], "test-bundle-b");
    assert!(
        !after_b["app"]["problems"]
            .to_string()
            .contains("runs template"),
        "{}",
        after_b["app"]["problems"]
    );

    // The same bundle again: nothing to do.
    let again = w.install(&b, &[&network[..], &["--yes", "--wait", "0"]].concat());
    assert_success(&again);
    assert!(
        stderr(&again).contains("nothing to do, stack dify is up to date"),
        "{}",
        stderr(&again)
    );

    // uninstall: the stack goes, the retained buckets stay and are named, a record is left.
    let storage = {
        let out = cfn
            .describe_stack_resources()
            .stack_name("dify")
            .send()
            .await
            .unwrap();
        out.stack_resources()
            .iter()
            .find(|r| r.logical_resource_id() == Some("StorageBucket"))
            .and_then(|r| r.physical_resource_id())
            .unwrap()
            .to_owned()
    };
    assert_fails_with(&w.cli(&["uninstall"]), "--yes");
    let removed = w.cli(&["uninstall", "--yes", "--json"]);
    assert_success(&removed);
    let report = json(&removed);
    assert_eq!(report["report"]["app_deleted"], true);
    let kept = report["report"]["kept"].to_string();
    assert!(kept.contains(&storage), "{kept}");
    assert!(stderr(&removed).contains(&format!("kept: AWS::S3::Bucket {storage}")));
    assert!(
        cfn.describe_stacks()
            .stack_name("dify")
            .send()
            .await
            .is_err()
    );
    let s3 = w.moto.s3();
    s3.head_bucket()
        .bucket(&storage)
        .send()
        .await
        .expect("the storage bucket is kept");
    s3.head_object()
        .bucket("dify-bundle-staging-123456789012-us-east-1")
        .key("uninstalled/dify.json")
        .send()
        .await
        .expect("a record of what was kept");
    assert_eq!(
        w.repositories().await.len(),
        4,
        "repositories kept unless asked"
    );

    // Again: nothing to do.
    let again = w.cli(&["uninstall", "--yes"]);
    assert_success(&again);
    assert!(
        stderr(&again).contains("nothing to do"),
        "{}",
        stderr(&again)
    );

    // --delete-data needs its own confirmation; with it, the kept data, the repositories and
    // the endpoints stack go.
    assert_fails_with(
        &w.cli(&["uninstall", "--yes", "--delete-data"]),
        "--yes-delete-data",
    );
    s3.head_bucket()
        .bucket(&storage)
        .send()
        .await
        .expect("still kept");
    let purged = w.cli(&[
        "uninstall",
        "--delete-data",
        "--yes-delete-data",
        "--repositories",
        "--endpoints",
        "--json",
    ]);
    assert_success(&purged);
    let report = json(&purged);
    assert!(
        report["report"]["data_deleted"]
            .to_string()
            .contains(&storage),
        "{}",
        report["report"]
    );
    assert!(s3.head_bucket().bucket(&storage).send().await.is_err());
    assert!(w.repositories().await.is_empty());
    assert!(
        cfn.describe_stacks()
            .stack_name("dify-vpc-endpoints")
            .send()
            .await
            .is_err()
    );
    let last = w.cli(&[
        "uninstall",
        "--yes",
        "--delete-data",
        "--yes-delete-data",
        "--endpoints",
        "--repositories",
    ]);
    assert_success(&last);
    assert!(stderr(&last).contains("nothing to do"), "{}", stderr(&last));
}

/// The moto-deployable template with a stand-in for the Aurora cluster: moto's
/// CloudFormation cannot create one (tests/common/moto_template.rs), so `Database` becomes an
/// SSM parameter named after a cluster the test made through moto's RDS API. The installer
/// reads `Database`'s physical ID as the cluster, exactly as on AWS (a DBCluster's physical
/// ID is its identifier), and snapshots it through RDS.
fn with_database(cluster: &str) -> impl Fn(&serde_json::Value) -> serde_json::Value {
    let cluster = cluster.to_owned();
    move |template| {
        let mut t = common::moto_template::reduce(template);
        t["Resources"]["Database"] = serde_json::json!({
            "Type": "AWS::SSM::Parameter",
            "Properties": {"Name": cluster, "Type": "String", "Value": "stand-in"}
        });
        t
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dify_version_change_snapshots_the_database_first() {
    let w = world().await;
    let rds = aws_sdk_rds::Client::new(&w.moto.sdk_config());
    rds.create_db_cluster()
        .db_cluster_identifier("dify-database-standin")
        .engine("aurora-postgresql")
        .master_username("dify")
        .master_user_password("not-a-secret-1")
        .send()
        .await
        .unwrap();
    swap_template(&w, with_database("dify-database-standin"));
    let (vpc, subnets) = existing_vpc(&w, "10.62.0.0/16").await;
    let subnet_list = subnets.join(",");
    let network = [
        "--vpc-id",
        vpc.as_str(),
        "--subnet-ids",
        subnet_list.as_str(),
    ];
    assert_success(&w.install(
        &w.bundle,
        &[&network[..], &["--yes", "--wait", "0"]].concat(),
    ));
    let (b, _) = build_bundle_b_with(&w, with_database("dify-database-standin")).await;

    let planned = w.install(&b, &[&network[..], &["--plan"]].concat());
    assert_success(&planned);
    let snapshot = json(&planned)["app"]["upgrade"]["snapshot"].clone();
    assert_eq!(snapshot["cluster"], "dify-database-standin");
    let name = snapshot["identifier"].as_str().unwrap().to_owned();
    assert!(name.starts_with("dify-dify-0-0-0-test-"), "{name}");
    assert!(
        stderr(&planned).contains("first: snapshot dify-dify-0-0-0-test-"),
        "{}",
        stderr(&planned)
    );
    let listed = rds
        .describe_db_cluster_snapshots()
        .db_cluster_identifier("dify-database-standin")
        .snapshot_type("manual")
        .send()
        .await
        .unwrap();
    assert!(
        listed.db_cluster_snapshots().is_empty(),
        "--plan took a snapshot"
    );

    let upgraded = w.install(&b, &[&network[..], &["--yes", "--wait", "0"]].concat());
    assert_success(&upgraded);
    let taken = json(&upgraded)["app"]["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(taken.starts_with("dify-dify-0-0-0-test-"), "{taken}");
    assert!(stderr(&upgraded).contains(&format!(
        "database snapshot taken before the change: {taken}"
    )));
    let listed = rds
        .describe_db_cluster_snapshots()
        .db_cluster_snapshot_identifier(&taken)
        .send()
        .await
        .unwrap();
    let listed = &listed.db_cluster_snapshots()[0];
    assert_eq!(
        listed.db_cluster_identifier(),
        Some("dify-database-standin")
    );
    assert_eq!(listed.status(), Some("available"));
    assert_eq!(listed.snapshot_type(), Some("manual"));

    // The same version again: no snapshot.
    let again = w.install(&b, &[&network[..], &["--plan"]].concat());
    assert!(json(&again)["app"]["upgrade"]["snapshot"].is_null());
    assert!(
        stderr(&again).contains("Dify 0.0.1-test, unchanged"),
        "{}",
        stderr(&again)
    );

    // uninstall snapshots the cluster before the stack goes, and names it.
    let removed = w.cli(&["uninstall", "--yes", "--json"]);
    assert_success(&removed);
    let kept = json(&removed)["report"]["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(kept.starts_with("dify-uninstall-"), "{kept}");
    assert!(stderr(&removed).contains(&format!("database snapshot: {kept}")));
    let all = rds
        .describe_db_cluster_snapshots()
        .db_cluster_identifier("dify-database-standin")
        .snapshot_type("manual")
        .send()
        .await
        .unwrap();
    assert_eq!(all.db_cluster_snapshots().len(), 2);
    // --delete-data deletes the cluster's snapshots too.
    let purged = w.cli(&["uninstall", "--delete-data", "--yes-delete-data", "--json"]);
    assert_success(&purged);
    let all = rds
        .describe_db_cluster_snapshots()
        .db_cluster_identifier("dify-database-standin")
        .snapshot_type("manual")
        .send()
        .await
        .unwrap();
    assert!(
        all.db_cluster_snapshots().is_empty(),
        "{:?}",
        all.db_cluster_snapshots()
    );
}

/// The copy engine against the real registry, mounting on and off: with mounts, a blob two
/// repositories share crosses once; where the registry is known not to mount (ECR with
/// `BLOB_MOUNTING` off), it is sent to each, and both ways every image is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_blobs_are_mounted_or_sent_to_each_repository() {
    use dify_bundle::copy::{self, CopyOptions, Root};
    use dify_bundle::store::registry::Registries;
    use dify_bundle::store::registry::auth::Credentials;
    use dify_bundle::store::{ImageSource, LayoutStore, ReadWrite, RegistryOptions};
    use std::sync::Arc;

    let w = world().await;
    let host = w.ecr_data.host();
    let layout: Arc<dyn ImageSource> = Arc::new(LayoutStore::open(&w.bundle).unwrap());
    let mut options = RegistryOptions::default();
    options.insecure.insert(host.clone());
    options.credentials.insert(
        host.clone(),
        Credentials {
            username: "AWS".into(),
            password: TOKEN.into(),
        },
    );
    let copy_into = |prefix: &'static str, mounting: bool| {
        let registries = Registries::new(options.clone()).unwrap();
        let store = registries.store(&host);
        store.set_mounting(mounting);
        let layout = layout.clone();
        async move {
            let roots: Vec<Root> = ["api", "web"]
                .iter()
                .map(|role| Root {
                    source: layout.clone(),
                    source_repo: role.to_string(),
                    reference: role.to_string(),
                    dest_repo: format!("{prefix}/{role}"),
                    tag: None,
                    label: role.to_string(),
                })
                .collect();
            let destination: Arc<dyn ReadWrite> = store;
            copy::copy(
                &roots,
                destination,
                &CopyOptions::default(),
                Arc::new(dify_bundle::progress::Silent),
            )
            .await
            .unwrap()
        }
    };
    let sent_to_each = copy_into("off", false).await;
    assert_eq!(sent_to_each.blobs_mounted, 0);
    assert_eq!(sent_to_each.bytes_transferred, sent_to_each.blob_bytes);
    let mounted = copy_into("on", true).await;
    assert!(mounted.blobs_mounted > 0, "{mounted:?}");
    assert_eq!(
        mounted.bytes_transferred + mounted.bytes_mounted,
        mounted.blob_bytes
    );
    for prefix in ["off", "on"] {
        for role in ["api", "web"] {
            let listed = w.ecr_inspect(&format!(
                "{prefix}/{role}@{}",
                sent_to_each.images[if role == "api" { 0 } else { 1 }].digest
            ));
            assert!(listed.status.success(), "{prefix}/{role}");
        }
    }
    // skopeo copies every blob of each image back out: mounted blobs are really there.
    let out = w.work.path().join("copied-back");
    w.copy_back(&format!("on/web@{}", mounted.images[1].digest), &out);
}

/// The config (when `config`) and layers of every manifest under `digest` in a bundle
/// directory (an index's children, every platform, included), read from its blob files.
fn bundle_image_blobs(
    bundle: &Path,
    digest: &str,
    config: bool,
    out: &mut std::collections::BTreeSet<String>,
) {
    let hex = digest.trim_start_matches("sha256:");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("blobs/sha256").join(hex)).unwrap())
            .unwrap();
    if let Some(children) = manifest["manifests"].as_array() {
        for child in children {
            bundle_image_blobs(bundle, child["digest"].as_str().unwrap(), config, out);
        }
        return;
    }
    if config {
        out.insert(manifest["config"]["digest"].as_str().unwrap().to_owned());
    }
    for layer in manifest["layers"].as_array().unwrap() {
        out.insert(layer["digest"].as_str().unwrap().to_owned());
    }
}

/// Each role's image in a bundle (index.json's `ref.name`) and the blobs it is made of.
fn bundle_role_blobs(
    bundle: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    bundle_role_contents(bundle, true)
}

/// Each role's image in a bundle and its layers.
fn bundle_role_layers(
    bundle: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    bundle_role_contents(bundle, false)
}

fn bundle_role_contents(
    bundle: &Path,
    config: bool,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let role = entry["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_owned();
            let mut blobs = std::collections::BTreeSet::new();
            bundle_image_blobs(
                bundle,
                entry["digest"].as_str().unwrap(),
                config,
                &mut blobs,
            );
            (role, blobs)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_names_the_deployed_bundle_and_every_blob_the_destination_holds() {
    let w = world().await;
    let endpoint = format!("http://{}", w.ecr_data.host());
    let out = w.work.path().join("r.json");
    let out_arg = out.to_str().unwrap();

    // Nothing deployed yet: refused, saying so, and no file is written.
    let refused = w.cli(&["receipt", "--out", out_arg, "--ecr-endpoint", &endpoint]);
    assert_fails_with(&refused, "application stack `dify` does not exist");
    assert!(stderr(&refused).contains("hint: nothing deployed: build a full bundle"));
    assert!(!out.exists());

    swap_template(&w, common::moto_template::reduce);
    w.create_bucket("air").await;
    assert_success(&w.upload(&w.bundle, "s3://air/dify"));
    let (vpc, subnets) = existing_vpc(&w, "10.71.0.0/16").await;
    let installed = w.install_into(
        &w.bundle,
        vpc.as_str(),
        &subnets,
        &["--app-stack", "dify", "--yes", "--wait", "0"],
    );
    assert_success(&installed);
    // A key under the blob prefix that is not a blob is no blob.
    w.moto
        .s3()
        .put_object()
        .bucket("air")
        .key("dify/blobs/sha256/not-a-digest")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();

    let taken = w.cli(&[
        "receipt",
        "--out",
        out_arg,
        "--ecr-endpoint",
        &endpoint,
        "--s3",
        "s3://air/dify",
        "--json",
    ]);
    assert_success(&taken);
    let receipt = dify_bundle::bundle::receipt::Receipt::read(&out).unwrap();
    assert_eq!(receipt.format, "dify-bundle/receipt/v1");
    assert_eq!(receipt.stack.as_deref(), Some("dify"));
    assert!(
        receipt.registry.ends_with(".amazonaws.com"),
        "{}",
        receipt.registry
    );
    let deployed = receipt.deployed.clone().expect("the deployed bundle");
    assert_eq!(deployed.bundle.as_deref(), Some("test-bundle"));
    assert_eq!(deployed.dify_version.as_deref(), Some("0.0.0-test"));
    assert_eq!(
        deployed.bundle_json.map(|d| d.to_string()),
        Some(bundle_json_digest(&w.bundle))
    );

    // Each role's repository, as the stack names it, holds exactly that role's image of A.
    let parameters = stack_parameters(&w, "dify").await;
    let roles: Vec<&str> = receipt
        .repositories
        .iter()
        .map(|r| r.role.as_str())
        .collect();
    assert_eq!(roles, ["api", "web", "sandbox", "plugin-daemon"]);
    let expected = bundle_role_blobs(&w.bundle);
    for repository in &receipt.repositories {
        let parameter = match repository.role.as_str() {
            "api" => "ApiRepository",
            "web" => "WebRepository",
            "sandbox" => "SandboxRepository",
            _ => "PluginDaemonRepository",
        };
        assert_eq!(repository.repository, parameters[parameter]);
        let held: std::collections::BTreeSet<String> =
            repository.blobs.iter().map(ToString::to_string).collect();
        let image = &expected[&repository.role];
        assert!(image.len() >= 2, "{}: {image:?}", repository.role);
        assert_eq!(&held, image, "{}", repository.role);
    }

    // The S3 prefix: exactly the bundle's blob files.
    let s3 = receipt.s3.clone().expect("the S3 prefix");
    assert_eq!(s3.location, "s3://air/dify");
    let in_s3: std::collections::BTreeSet<String> =
        s3.blobs.iter().map(|d| d.hex().to_owned()).collect();
    let files: std::collections::BTreeSet<String> = blob_files(&w.bundle)
        .into_keys()
        .map(|p| p.trim_start_matches("blobs/sha256/").to_owned())
        .collect();
    assert_eq!(in_s3, files);

    // The summary: on stdout with --json, for people on stderr.
    let summary = json(&taken);
    assert_eq!(summary["deployed"]["bundle"], "test-bundle");
    assert_eq!(summary["repositories"].as_array().unwrap().len(), 4);
    assert_eq!(summary["s3"]["blobs"].as_u64(), Some(files.len() as u64));
    let err = stderr(&taken);
    assert!(
        err.contains("Dify 0.0.0-test from bundle test-bundle"),
        "{err}"
    );
    assert!(err.contains("dify/dify-api"), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(w.work.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Carried out, the receipt is what the next build leaves out: the same layers as a delta
    // since A itself. Uploaded next to A and installed from there as an upgrade, it runs.
    let (delta, new_bytes) = build_bundle_b_as(
        &w,
        "bundle-b-receipt",
        &["--since", out_arg, "--json"],
        common::moto_template::reduce,
    )
    .await;
    let omitted = left_out(&delta);
    assert!(!omitted.is_empty());
    assert_eq!(omitted, expected_left_out(&w.bundle, &delta));
    let since = &bundle_json(&delta)["delta"]["since"];
    assert_eq!(since["kind"], "receipt");
    assert_eq!(since["bundle"], "test-bundle");
    assert_eq!(since["bundle_json"], bundle_json_digest(&w.bundle));
    let uploaded = w.upload(&delta, "s3://air/dify");
    assert_success(&uploaded);
    let carried = blob_files(&delta).len() - omitted.len();
    assert_eq!(json(&uploaded)["blobs"], carried);
    // Downloaded, it is the delta again: what it carries, verified, the rest said to be left out.
    let copy = w.work.path().join("delta-downloaded");
    let mut download = dify_bundle();
    w.moto.env(&mut download);
    let downloaded = run(download
        .args(["download", "--json", "s3://air/dify/bundles/test-bundle-b"])
        .arg(&copy)
        .arg("--pubkey")
        .arg(&w.public));
    assert_success(&downloaded);
    assert_eq!(json(&downloaded)["blobs"], carried);
    assert_eq!(blob_count(&copy), carried);
    let verified = w.verify(&copy);
    assert_success(&verified);
    assert_eq!(json(&verified)["left_out"], omitted.len());
    let upgraded = w.install_into(
        Path::new("s3://air/dify/bundles/test-bundle-b"),
        vpc.as_str(),
        &subnets,
        &["--app-stack", "dify", "--yes", "--wait", "0"],
    );
    assert_success(&upgraded);
    let report = json(&upgraded);
    assert_eq!(report["plan"]["ecr"]["left_out"]["layers"], omitted.len());
    assert_eq!(report["push"]["copy"]["bytes_transferred"], new_bytes);
    let images = running_images(&w, "dify").await.join(" ");
    for image in bundle_json(&delta)["images"].as_array().unwrap() {
        let digest = image["digest"].as_str().unwrap();
        assert!(
            images.contains(digest),
            "{} not running: {images}",
            image["role"]
        );
    }
}

/// How many blob files a bundle directory holds.
fn blob_count(bundle: &Path) -> usize {
    std::fs::read_dir(bundle.join("blobs/sha256"))
        .unwrap()
        .count()
}

fn bundle_json_digest(bundle: &Path) -> String {
    dify_bundle::digest::Digest::of(&std::fs::read(bundle.join("bundle.json")).unwrap()).to_string()
}

/// The layers a delta of `new` since `old` must leave out, each with its roles: those every
/// role of `new` using it had in `old` already.
fn expected_left_out(
    old: &Path,
    new: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let (old, new) = (bundle_role_layers(old), bundle_role_layers(new));
    let mut roles_of =
        std::collections::BTreeMap::<String, std::collections::BTreeSet<String>>::new();
    for (role, layers) in &new {
        for layer in layers {
            roles_of
                .entry(layer.clone())
                .or_default()
                .insert(role.clone());
        }
    }
    roles_of.retain(|layer, roles| {
        roles
            .iter()
            .all(|r| old.get(r).is_some_and(|l| l.contains(layer)))
    });
    roles_of
}

/// The delta section of a bundle's bundle.json: each left-out layer and its roles.
fn left_out(
    bundle: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    bundle_json(bundle)["delta"]["omitted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            (
                layer["digest"].as_str().unwrap().to_owned(),
                layer["roles"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

/// The paths inside every part in `media` (`tar -tf`).
fn part_entries(media: &Path) -> Vec<String> {
    let mut entries = Vec::new();
    for part in std::fs::read_dir(media).unwrap() {
        let part = part.unwrap().path();
        if part.extension().is_some_and(|e| e == "tar") {
            let listed = run(std::process::Command::new("tar").arg("-tf").arg(&part));
            assert_success(&listed);
            entries.extend(
                String::from_utf8_lossy(&listed.stdout)
                    .lines()
                    .map(str::to_owned),
            );
        }
    }
    entries
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_bundle_carries_only_what_the_destination_lacks_and_proves_the_rest_is_there() {
    let w = world().await;
    let a = w.bundle.to_str().unwrap().to_owned();
    let (delta, new_bytes) = build_bundle_b_as(
        &w,
        "bundle-b-delta",
        &["--since", &a],
        common::moto_template::reduce,
    )
    .await;

    // bundle.json names every blob of B and, apart, the layers A's images brought already,
    // on the grounds of A's identity.
    let manifest = bundle_json(&delta);
    let since = &manifest["delta"]["since"];
    assert_eq!(since["kind"], "bundle");
    assert_eq!(since["bundle"], "test-bundle");
    assert_eq!(since["dify_version"], "0.0.0-test");
    assert_eq!(since["bundle_json"], bundle_json_digest(&w.bundle));
    let omitted = left_out(&delta);
    assert_eq!(omitted, expected_left_out(&w.bundle, &delta));
    let sandbox_layers = &bundle_role_layers(&delta)["sandbox"];
    assert!(
        sandbox_layers.iter().all(|l| omitted.contains_key(l)),
        "the unchanged sandbox travels whole: {omitted:?}"
    );
    let files = blob_files(&delta);
    for layer in omitted.keys() {
        let path = format!("blobs/sha256/{}", layer.trim_start_matches("sha256:"));
        assert!(files.contains_key(&path), "{path} is still named in files");
    }
    let omitted_bytes: u64 = bundle_json(&delta)["delta"]["omitted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert!(omitted_bytes > 0);
    let inspected = run(dify_bundle().arg("inspect").arg(&delta));
    assert_success(&inspected);
    let printed = String::from_utf8_lossy(&inspected.stdout);
    assert!(
        printed.contains(&format!(
            "a delta bundle since test-bundle (Dify 0.0.0-test): {} layers",
            omitted.len()
        )),
        "{printed}"
    );

    // Packed: the left-out layers stay behind, and the parts are smaller by them.
    let media = w.work.path().join("delta-media");
    let packed = run(dify_bundle()
        .arg("pack")
        .arg(&delta)
        .args(["--split-size", "1MiB", "--pubkey"])
        .arg(&w.public)
        .arg("--out")
        .arg(&media));
    assert_success(&packed);
    let entries = part_entries(&media);
    for layer in omitted.keys() {
        let hex = layer.trim_start_matches("sha256:");
        assert!(
            !entries.iter().any(|e| e.contains(hex)),
            "{layer} was packed"
        );
    }
    let full_bytes: u64 = files.values().sum();
    assert!(
        dir_bytes(&media) < full_bytes - omitted_bytes + (1 << 20),
        "parts {} bytes; bundle {full_bytes}, left out {omitted_bytes}",
        dir_bytes(&media)
    );
    // They verify as they are: nothing missing but what was left out, and that said.
    let verified = w.verify(&media);
    assert_success(&verified);
    assert_eq!(json(&verified)["left_out"], omitted.len());
    assert!(stderr(&verified).contains("install checks that the destination holds them"));

    // A destination that never had A: refused before any change, naming what is missing.
    let refused = w.install(&media, &["--yes"]);
    assert_fails_with(&refused, "refused: this delta bundle leaves out");
    let err = stderr(&refused);
    let first = omitted.keys().next().unwrap();
    assert!(err.contains(first.as_str()), "{err}");
    assert!(
        err.contains("of sandbox, not in dify/dify-sandbox"),
        "{err}"
    );
    assert!(
        err.contains(
            "hint: install the bundle this delta was built on first (test-bundle (Dify 0.0.0-test))"
        ),
        "{err}"
    );
    assert!(
        w.repositories().await.is_empty(),
        "a refused delta created repositories"
    );

    // With A's images pushed, the delta installs: only B's new blobs cross, and every
    // image of B is whole in ECR.
    assert_success(&w.install(&w.bundle, &["--yes"]));
    let installed = w.install(&media, &["--yes"]);
    assert_success(&installed);
    let report = json(&installed);
    assert_eq!(report["plan"]["ecr"]["left_out"]["layers"], omitted.len());
    assert_eq!(report["plan"]["ecr"]["left_out"]["in_bundle"], 0);
    assert_eq!(report["push"]["copy"]["bytes_transferred"], new_bytes);
    assert!(
        stderr(&installed).contains("delta bundle:"),
        "{}",
        stderr(&installed)
    );
    for image in bundle_json(&delta)["images"].as_array().unwrap() {
        let role = image["role"].as_str().unwrap();
        let target = report["plan"]["ecr"]["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["role"] == role)
            .unwrap();
        let out = w.work.path().join(format!("back-{role}"));
        w.copy_back(
            &format!(
                "{}@{}",
                target["repository"].as_str().unwrap(),
                image["digest"].as_str().unwrap()
            ),
            &out,
        );
    }

    // Given a full bundle where a delta was built on, nothing is lost: the left-out layers
    // present are checked and pushed like any other.
    let dir_install = w.install(&delta, &["--yes", "--plan"]);
    assert_success(&dir_install);
    assert_eq!(
        json(&dir_install)["ecr"]["left_out"]["in_bundle"],
        omitted.len()
    );
}
