//! The application stack's parameters — everything chosen at install time rather than at
//! build time — and the conditions derived from them. Names are constants so the installer
//! and the template cannot disagree.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::stack::{Template, equals, reference};

pub const VPC_ID: &str = "VpcId";
pub const SUBNET_IDS: &str = "SubnetIds";
/// `AllowedCidr1` … `AllowedCidr5`: who may reach the load balancer.
pub const ALLOWED_CIDR: &str = "AllowedCidr";
pub const MAX_ALLOWED_CIDRS: usize = 5;
pub const CERTIFICATE_ARN: &str = "CertificateArn";
pub const PUBLIC_URL: &str = "PublicUrl";
pub const REDIS_MULTI_AZ: &str = "RedisMultiAz";
pub const AURORA_SCALE_TO_ZERO: &str = "AuroraScaleToZero";
pub const FARGATE_SPOT: &str = "FargateSpot";
pub const API_CPU: &str = "ApiCpu";
pub const API_MEMORY: &str = "ApiMemory";
pub const WEB_CPU: &str = "WebCpu";
pub const WEB_MEMORY: &str = "WebMemory";
pub const API_MIN_TASKS: &str = "ApiMinTasks";
pub const API_MAX_TASKS: &str = "ApiMaxTasks";
pub const WEB_MIN_TASKS: &str = "WebMinTasks";
pub const WEB_MAX_TASKS: &str = "WebMaxTasks";
pub const LOG_RETENTION_DAYS: &str = "LogRetentionDays";
pub const CPU_ARCHITECTURE: &str = "CpuArchitecture";
/// `false` creates (or keeps) everything but runs no task.
pub const START: &str = "Start";

/// The ECR repository parameter of an image role (`plugin-daemon` → `PluginDaemonRepository`).
pub fn repository(role: &str) -> String {
    let mut name = String::new();
    for part in role.split('-') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.extend(first.to_uppercase());
            name.push_str(chars.as_str());
        }
    }
    name + "Repository"
}

pub fn allowed_cidr(n: usize) -> String {
    format!("{ALLOWED_CIDR}{n}")
}

pub const HAS_CERTIFICATE: &str = "HasCertificate";
pub const HAS_PUBLIC_URL: &str = "HasPublicUrl";
pub const MULTI_AZ_REDIS: &str = "MultiAzRedis";
pub const SCALE_TO_ZERO: &str = "ScaleAuroraToZero";
pub const USE_SPOT: &str = "UseFargateSpot";
pub const STARTED: &str = "Started";

pub fn has_allowed_cidr(n: usize) -> String {
    format!("Has{ALLOWED_CIDR}{n}")
}

const RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];
const CIDR_PATTERN: &str = r"^(\d{1,3}\.){3}\d{1,3}/\d{1,2}$";

/// Fargate's CPU units and the memory (MiB) each allows, Linux tasks (AWS ECS developer
/// guide, "Task CPU and memory": 256 → 512-2048; 512 → 1-4 GB; 1024 → 2-8 GB; 2048 → 4-16 GB;
/// 4096 → 8-30 GB, in 1 GB steps).
pub fn fargate_memory(cpu: u32) -> Vec<u32> {
    match cpu {
        256 => vec![512, 1024, 2048],
        512 => (1..=4).map(|g| g * 1024).collect(),
        1024 => (2..=8).map(|g| g * 1024).collect(),
        2048 => (4..=16).map(|g| g * 1024).collect(),
        4096 => (8..=30).map(|g| g * 1024).collect(),
        _ => Vec::new(),
    }
}
pub const FARGATE_CPUS: [u32; 5] = [256, 512, 1024, 2048, 4096];
/// Task counts a service may be given (the bounds of its autoscaling).
pub const MAX_TASKS: u32 = 10;
/// `(cpu, memory)` parameter pairs and `(min, max)` task-count pairs.
pub const SIZES: [(&str, &str); 2] = [(API_CPU, API_MEMORY), (WEB_CPU, WEB_MEMORY)];
pub const COUNTS: [(&str, &str); 2] = [
    (API_MIN_TASKS, API_MAX_TASKS),
    (WEB_MIN_TASKS, WEB_MAX_TASKS),
];

fn boolean(t: &mut Template, name: &str, description: &str, default: &str) {
    t.parameter(name, "String", description, Some(default))
        .allowed_values = vec!["true".into(), "false".into()];
}

fn number(t: &mut Template, name: &str, description: &str, default: &str, allowed: &[&str]) {
    let p = t.parameter(name, "Number", description, Some(default));
    p.allowed_values = allowed.iter().map(|s| s.to_string()).collect();
}

/// Declares every parameter and condition; `roles` are the images the stack runs and
/// `architectures` the CPU architectures the bundle has images for.
pub fn declare(t: &mut Template, roles: &[&str], architectures: &[&str]) {
    t.parameter(
        VPC_ID,
        "AWS::EC2::VPC::Id",
        "The VPC (no internet needed)",
        None,
    );
    t.parameter(
        SUBNET_IDS,
        "List<AWS::EC2::Subnet::Id>",
        "Private subnets in at least two availability zones for the load balancer, the database and the cache; tasks run in the first two, which must be in different zones (each gets an EFS mount target)",
        None,
    );
    for n in 1..=MAX_ALLOWED_CIDRS {
        let p = t.parameter(
            &allowed_cidr(n),
            "String",
            "A client network allowed to reach the load balancer",
            (n > 1).then_some(""),
        );
        p.allowed_pattern = Some(if n == 1 {
            CIDR_PATTERN.to_owned()
        } else {
            format!("^$|{}", CIDR_PATTERN.trim_start_matches('^'))
        });
        if n > 1 {
            t.condition(
                &has_allowed_cidr(n),
                json!({ "Fn::Not": [equals(&allowed_cidr(n), "")] }),
            );
        }
    }
    for role in roles {
        t.parameter(
            &repository(role),
            "String",
            &format!("ECR repository holding the {role} image"),
            None,
        );
    }
    t.parameter(
        CERTIFICATE_ARN,
        "String",
        "ACM certificate for an HTTPS listener; empty: HTTP only",
        Some(""),
    );
    t.parameter(
        PUBLIC_URL,
        "String",
        "The URL users open (e.g. https://dify.example.internal); empty: the load balancer's own name",
        Some(""),
    );
    boolean(
        t,
        REDIS_MULTI_AZ,
        "Valkey with a replica in a second AZ",
        "true",
    );
    boolean(
        t,
        AURORA_SCALE_TO_ZERO,
        "Let Aurora pause when idle (0 ACU)",
        "false",
    );
    boolean(t, FARGATE_SPOT, "Run tasks on Fargate Spot", "false");
    boolean(
        t,
        START,
        "Run the services (false: create everything, run nothing)",
        "true",
    );
    let cpus: Vec<String> = FARGATE_CPUS.iter().map(u32::to_string).collect();
    let cpus: Vec<&str> = cpus.iter().map(String::as_str).collect();
    let mut memories: Vec<u32> = FARGATE_CPUS
        .iter()
        .flat_map(|c| fargate_memory(*c))
        .collect();
    memories.sort_unstable();
    memories.dedup();
    let memories: Vec<String> = memories.iter().map(u32::to_string).collect();
    let memories: Vec<&str> = memories.iter().map(String::as_str).collect();
    number(t, API_CPU, "CPU units of the api task", "1024", &cpus);
    number(
        t,
        API_MEMORY,
        "Memory (MiB) of the api task, valid for its CPU; 2048 crash-loops with plugins",
        "4096",
        &memories,
    );
    number(t, WEB_CPU, "CPU units of the web task", "256", &cpus);
    number(
        t,
        WEB_MEMORY,
        "Memory (MiB) of the web task, valid for its CPU",
        "512",
        &memories,
    );
    for (name, default) in [
        (API_MIN_TASKS, "1"),
        (API_MAX_TASKS, "1"),
        (WEB_MIN_TASKS, "1"),
        (WEB_MAX_TASKS, "1"),
    ] {
        let p = t.parameter(
            name,
            "Number",
            "Service autoscaling bound (tasks)",
            Some(default),
        );
        p.min_value = Some(1);
        p.max_value = Some(MAX_TASKS);
    }
    let retention: Vec<String> = RETENTION_DAYS.iter().map(u32::to_string).collect();
    let retention: Vec<&str> = retention.iter().map(String::as_str).collect();
    number(
        t,
        LOG_RETENTION_DAYS,
        "Days the logs are kept",
        "90",
        &retention,
    );
    let first = architectures.first().copied().unwrap_or("X86_64");
    let p = t.parameter(
        CPU_ARCHITECTURE,
        "String",
        "CPU architecture of the tasks (the bundle holds images for these)",
        Some(first),
    );
    p.allowed_values = architectures.iter().map(|a| a.to_string()).collect();

    t.condition(
        HAS_CERTIFICATE,
        json!({ "Fn::Not": [equals(CERTIFICATE_ARN, "")] }),
    );
    t.condition(
        HAS_PUBLIC_URL,
        json!({ "Fn::Not": [equals(PUBLIC_URL, "")] }),
    );
    t.condition(MULTI_AZ_REDIS, equals(REDIS_MULTI_AZ, "true"));
    t.condition(SCALE_TO_ZERO, equals(AURORA_SCALE_TO_ZERO, "true"));
    t.condition(USE_SPOT, equals(FARGATE_SPOT, "true"));
    t.condition(STARTED, equals(START, "true"));
    rules(t);
}

/// What CloudFormation checks before it changes anything, so a template deployed without
/// the installer refuses what would fail late (or roll back) instead.
fn rules(t: &mut Template) {
    t.rule(
        "CertificateNeedsPublicUrl",
        json!({
            "RuleCondition": { "Fn::Not": [equals(CERTIFICATE_ARN, "")] },
            "Assertions": [{
                "Assert": { "Fn::Not": [equals(PUBLIC_URL, "")] },
                "AssertDescription": "With a CertificateArn, give the PublicUrl (https://a name on the certificate): the load balancer's own DNS name is not on any certificate",
            }],
        }),
    );
    for (cpu_parameter, memory_parameter) in SIZES {
        for cpu in FARGATE_CPUS {
            let memories: Vec<String> = fargate_memory(cpu).iter().map(u32::to_string).collect();
            t.rule(
                &format!("{memory_parameter}For{cpu}Cpu"),
                json!({
                    "RuleCondition": equals(cpu_parameter, &cpu.to_string()),
                    "Assertions": [{
                        "Assert": { "Fn::Contains": [memories, reference(memory_parameter)] },
                        "AssertDescription": format!("Fargate gives {cpu_parameter} {cpu} one of these {memory_parameter} values: {}", memories.join(", ")),
                    }],
                }),
            );
        }
    }
    for (min_parameter, max_parameter) in COUNTS {
        for min in 2..=MAX_TASKS {
            let below: Vec<String> = (1..min).map(|n| n.to_string()).collect();
            t.rule(
                &format!("{max_parameter}AtLeast{min}"),
                json!({
                    "RuleCondition": equals(min_parameter, &min.to_string()),
                    "Assertions": [{
                        "Assert": { "Fn::Not": [{ "Fn::Contains": [below, reference(max_parameter)] }] },
                        "AssertDescription": format!("{max_parameter} must be at least {min_parameter}"),
                    }],
                }),
            );
        }
    }
}

/// Checks the parameters given, with the same rules as the template's `Rules`, so the plan
/// refuses them before anything is deployed. A parameter not given may keep an earlier value,
/// so only what is given is checked; CloudFormation checks the rest.
pub fn validate(parameters: &BTreeMap<String, String>) -> Result<()> {
    let given = |name: &str| parameters.get(name).map(String::as_str);
    if given(CERTIFICATE_ARN).is_some_and(|c| !c.is_empty()) && given(PUBLIC_URL) == Some("") {
        return Err(Error::invalid(format!(
            "{CERTIFICATE_ARN} is set but {PUBLIC_URL} is empty: give the https:// URL whose name is on the certificate"
        )));
    }
    let number = |name: &str| -> Result<Option<u32>> {
        given(name)
            .map(|v| {
                v.trim().parse::<u32>().map_err(|_| {
                    Error::invalid(format!("stack setting {name}: {v:?} is not a whole number"))
                })
            })
            .transpose()
    };
    for (cpu_parameter, memory_parameter) in SIZES {
        if let (Some(cpu), Some(memory)) = (number(cpu_parameter)?, number(memory_parameter)?) {
            let allowed = fargate_memory(cpu);
            if !allowed.contains(&memory) {
                return Err(Error::invalid(format!(
                    "{cpu_parameter}={cpu} with {memory_parameter}={memory} is not a Fargate size; with {cpu} CPU units the memory is one of {}",
                    allowed
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    for (min_parameter, max_parameter) in COUNTS {
        for name in [min_parameter, max_parameter] {
            if let Some(n) = number(name)?
                && !(1..=MAX_TASKS).contains(&n)
            {
                return Err(Error::invalid(format!(
                    "{name}={n}: a service runs 1 to {MAX_TASKS} tasks"
                )));
            }
        }
        if let (Some(min), Some(max)) = (number(min_parameter)?, number(max_parameter)?)
            && min > max
        {
            return Err(Error::invalid(format!(
                "{min_parameter}={min} is above {max_parameter}={max}"
            )));
        }
    }
    Ok(())
}

/// The URL Dify is reached at: the public URL when given, else the load balancer's name.
pub fn base_url() -> Value {
    crate::stack::if_(
        HAS_PUBLIC_URL,
        reference(PUBLIC_URL),
        crate::stack::if_(
            HAS_CERTIFICATE,
            crate::stack::sub("https://${LoadBalancer.DNSName}"),
            crate::stack::sub("http://${LoadBalancer.DNSName}"),
        ),
    )
}
