//! ECS on Fargate: the cluster, one log group per container (with retention), least-privilege
//! IAM roles, the task definitions (api, beat, sandbox, web) with every image pinned by ECR
//! digest, their services (no public IP, optional Fargate Spot) and autoscaling.

use serde_json::{Value, json};

use super::balancer::{
    API_SECURITY_GROUP, API_TARGET, DAEMON_TARGET, RULES, SANDBOX_SECURITY_GROUP, SANDBOX_TARGET,
    Target, WEB_SECURITY_GROUP, WEB_TARGET, rule_id,
};
use super::containers::{Container, PLUGIN_VOLUME, log_group};
use super::data::{self, STORAGE_BUCKET};
use super::params::{
    self, API_MAX_TASKS, API_MIN_TASKS, CPU_ARCHITECTURE, LOG_RETENTION_DAYS, STARTED, USE_SPOT,
    WEB_MAX_TASKS, WEB_MIN_TASKS,
};
use crate::stack::{Template, get_att, if_, reference, sub};

pub const CLUSTER: &str = "Cluster";
pub const API_SERVICE: &str = "ApiService";
pub const WEB_SERVICE: &str = "WebService";
pub const BEAT_SERVICE: &str = "BeatService";
pub const SANDBOX_SERVICE: &str = "SandboxService";

/// Bedrock calls Dify's Bedrock plugin makes (models — Converse is authorised as
/// InvokeModel —, rerank, knowledge bases).
pub const BEDROCK_ACTIONS: [&str; 7] = [
    "bedrock:InvokeModel",
    "bedrock:InvokeModelWithResponseStream",
    "bedrock:Rerank",
    "bedrock:Retrieve",
    "bedrock:RetrieveAndGenerate",
    "bedrock:ListFoundationModels",
    "bedrock:GetInferenceProfile",
];
const EXEC_ACTIONS: [&str; 4] = [
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
];

fn role(t: &mut Template, name: &str, statements: Vec<Value>) {
    t.resource(
        name,
        "AWS::IAM::Role",
        json!({
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": { "Service": "ecs-tasks.amazonaws.com" },
                    "Action": "sts:AssumeRole",
                    "Condition": { "StringEquals": { "aws:SourceAccount": reference("AWS::AccountId") } },
                }],
            },
            "Policies": [{
                "PolicyName": "least-privilege",
                "PolicyDocument": { "Version": "2012-10-17", "Statement": statements },
            }],
        }),
    );
}

/// Log groups, roles. `secrets` are what the execution role may read: the stack's secrets
/// and the operator's extra SSM parameters and secrets.
pub fn roles(t: &mut Template, roles: &[&str], containers: &[&Container]) {
    // `migrate` runs in two tasks and logs to one group.
    let mut seen = std::collections::BTreeSet::new();
    let containers: Vec<&Container> = containers
        .iter()
        .copied()
        .filter(|c| seen.insert(c.name))
        .collect();
    for container in &containers {
        t.resource(
            &log_group(container.name),
            "AWS::Logs::LogGroup",
            json!({
                "LogGroupName": sub(&format!("/dify/${{AWS::StackName}}/{}", container.name)),
                "RetentionInDays": reference(LOG_RETENTION_DAYS),
            }),
        )
        // Logs go with the stack: their names are fixed per stack, so kept groups would
        // collide with a stack created again under the same name.
        .keep("Delete");
    }
    let repositories: Vec<Value> = roles
        .iter()
        .map(|role| {
            sub(&format!(
                "arn:${{AWS::Partition}}:ecr:${{AWS::Region}}:${{AWS::AccountId}}:repository/${{{}}}",
                params::repository(role)
            ))
        })
        .collect();
    let log_groups: Vec<Value> = containers
        .iter()
        .map(|c| sub(&format!("${{{}.Arn}}", log_group(c.name))))
        .collect();
    let mut secrets: Vec<Value> = Vec::new();
    let mut parameters: Vec<Value> = Vec::new();
    for container in &containers {
        for from in container.secrets.values() {
            let target = secret_resource(from);
            let list = if is_ssm(&target) {
                &mut parameters
            } else {
                &mut secrets
            };
            if !list.contains(&target) {
                list.push(target);
            }
        }
    }
    let mut execution = vec![
        json!({ "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*" }),
        json!({
            "Effect": "Allow",
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            "Resource": repositories,
        }),
        json!({
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": log_groups,
        }),
        json!({ "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secrets }),
    ];
    if !parameters.is_empty() {
        execution.push(
            json!({ "Effect": "Allow", "Action": "ssm:GetParameters", "Resource": parameters }),
        );
    }
    role(t, "ExecutionRole", execution);
    role(
        t,
        "ApiTaskRole",
        vec![
            json!({
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": get_att(STORAGE_BUCKET, "Arn"),
            }),
            json!({
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                "Resource": sub(&format!("${{{STORAGE_BUCKET}.Arn}}/*")),
            }),
            json!({ "Effect": "Allow", "Action": BEDROCK_ACTIONS, "Resource": "*" }),
            json!({ "Effect": "Allow", "Action": EXEC_ACTIONS, "Resource": "*" }),
        ],
    );
    role(
        t,
        "WebTaskRole",
        vec![json!({ "Effect": "Allow", "Action": EXEC_ACTIONS, "Resource": "*" })],
    );
}

/// The resource an ECS `ValueFrom` points at: a secret's ARN without the `:field::` suffix,
/// or an SSM parameter's ARN.
fn secret_resource(from: &Value) -> Value {
    if let Some(Value::String(text)) = from.get("Fn::Sub")
        && let Some(secret) = text.strip_suffix("::").and_then(|t| t.rsplit_once(':'))
    {
        return sub(secret.0);
    }
    if let Value::String(text) = from {
        let parts: Vec<&str> = text.split(':').collect();
        if parts.len() > 7 && text.ends_with("::") {
            return Value::String(parts[..7].join(":"));
        }
    }
    from.clone()
}

fn is_ssm(target: &Value) -> bool {
    target
        .get("Fn::Sub")
        .and_then(Value::as_str)
        .is_some_and(|s| s.contains(":ssm:"))
        || target.as_str().is_some_and(|s| s.contains(":ssm:"))
}

pub fn cluster(t: &mut Template) {
    t.resource(
        CLUSTER,
        "AWS::ECS::Cluster",
        json!({
            "ClusterSettings": [{ "Name": "containerInsights", "Value": "enabled" }],
            "CapacityProviders": ["FARGATE", "FARGATE_SPOT"],
            "Configuration": { "ExecuteCommandConfiguration": { "Logging": "DEFAULT" } },
        }),
    );
}

pub struct Task<'a> {
    pub id: &'static str,
    /// The task role; `None`: the task's containers get no AWS credentials at all.
    pub role: Option<&'static str>,
    /// CPU units and memory: parameters (`Ref`) or fixed values.
    pub cpu: Value,
    pub memory: Value,
    pub containers: &'a [Container],
    /// Digest (hex) of each container's image, in order.
    pub digests: Vec<String>,
}

/// The task's volumes: the plugin daemon's EFS working directory when a container mounts it.
fn volumes(containers: &[Container]) -> Vec<Value> {
    let mounted = containers
        .iter()
        .any(|c| c.mounts.iter().any(|(v, _)| *v == PLUGIN_VOLUME));
    if !mounted {
        return Vec::new();
    }
    vec![json!({
        "Name": PLUGIN_VOLUME,
        "EFSVolumeConfiguration": {
            "FilesystemId": reference(data::PLUGIN_FILES),
            "TransitEncryption": "ENABLED",
            "AuthorizationConfig": {
                "AccessPointId": reference(data::PLUGIN_FILES_ACCESS_POINT),
                "IAM": "DISABLED",
            },
        },
    })]
}

pub fn task(t: &mut Template, task: &Task) {
    let definitions: Vec<Value> = task
        .containers
        .iter()
        .zip(&task.digests)
        .map(|(c, digest)| c.definition(digest))
        .collect();
    t.resource(
        task.id,
        "AWS::ECS::TaskDefinition",
        json!({
            "Family": sub(&format!("${{AWS::StackName}}-{}", task.id.trim_end_matches("Task").to_lowercase())),
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "Cpu": task.cpu,
            "Memory": task.memory,
            "RuntimePlatform": { "OperatingSystemFamily": "LINUX", "CpuArchitecture": reference(CPU_ARCHITECTURE) },
            "Volumes": volumes(task.containers),
            "ExecutionRoleArn": get_att("ExecutionRole", "Arn"),
            "TaskRoleArn": task.role.map_or_else(crate::stack::no_value, |r| get_att(r, "Arn")),
            "ContainerDefinitions": definitions,
        }),
    );
}

pub struct Service {
    pub id: &'static str,
    pub task: &'static str,
    pub security_group: &'static str,
    pub targets: &'static [&'static Target],
    /// Autoscaling bounds (parameters); `None`: exactly one task.
    pub scaling: Option<(&'static str, &'static str)>,
    /// Deployment bounds (percent of the desired count): `(minimum healthy, maximum)`.
    pub deployment: (u32, u32),
    /// ECS Exec into its containers (needs the task role's ssmmessages permissions).
    pub exec: bool,
    /// Resources that must exist before its tasks start.
    pub after: &'static [&'static str],
}

/// What api-image containers need before they start: the writer instance (the cluster alone
/// does not accept connections) and the secret's `host`/`port` keys, which only the
/// attachment adds; ECS fails the task on a missing key.
const DATABASE_READY: [&str; 2] = [data::DATABASE_WRITER, data::DATABASE_SECRET_ATTACHMENT];

pub const SERVICES: [Service; 4] = [
    Service {
        id: API_SERVICE,
        task: "ApiTask",
        security_group: API_SECURITY_GROUP,
        targets: &[&API_TARGET, &DAEMON_TARGET],
        scaling: Some((API_MIN_TASKS, API_MAX_TASKS)),
        deployment: (100, 200),
        exec: true,
        after: &[
            data::PLUGIN_FILES_MOUNTS[0],
            data::PLUGIN_FILES_MOUNTS[1],
            DATABASE_READY[0],
            DATABASE_READY[1],
        ],
    },
    // Exactly one beat, whatever the api's task count: a service of its own with one task,
    // which a deployment stops before it starts the new one (maximum 100 %, minimum 0 %), so
    // two beats never schedule the same periodic tasks.
    Service {
        id: BEAT_SERVICE,
        task: "BeatTask",
        security_group: API_SECURITY_GROUP,
        targets: &[],
        scaling: None,
        deployment: (0, 100),
        exec: true,
        after: &DATABASE_READY,
    },
    Service {
        id: SANDBOX_SERVICE,
        task: "SandboxTask",
        security_group: SANDBOX_SECURITY_GROUP,
        targets: &[&SANDBOX_TARGET],
        scaling: None,
        deployment: (100, 200),
        exec: false,
        after: &[],
    },
    Service {
        id: WEB_SERVICE,
        task: "WebTask",
        security_group: WEB_SECURITY_GROUP,
        targets: &[&WEB_TARGET],
        scaling: Some((WEB_MIN_TASKS, WEB_MAX_TASKS)),
        deployment: (100, 200),
        exec: true,
        after: &[],
    },
];

/// The subnets tasks run in: the first two, each of which has an EFS mount target (ECS
/// would otherwise place api tasks in a third subnet whose zone cannot mount the plugin
/// files). Two subnets in one zone fail when the second mount target is created.
fn task_subnets() -> Value {
    json!([
        { "Fn::Select": [0, reference(params::SUBNET_IDS)] },
        { "Fn::Select": [1, reference(params::SUBNET_IDS)] },
    ])
}

pub fn service(t: &mut Template, service: &Service) {
    let balancers: Vec<Value> = service
        .targets
        .iter()
        .map(|target| {
            json!({
                "ContainerName": target.container,
                "ContainerPort": target.port,
                "TargetGroupArn": reference(target.id),
            })
        })
        .collect();
    let mut after: Vec<String> = RULES
        .iter()
        .filter(|(_, target, _)| service.targets.iter().any(|t| t.id == target.id))
        .map(|(priority, _, _)| rule_id(*priority))
        .collect();
    if service.targets.iter().any(|t| t.id == SANDBOX_TARGET.id) {
        after.push("SandboxListener".to_owned());
    }
    let after: Vec<&str> = after.iter().map(String::as_str).collect();
    let desired = match service.scaling {
        Some((min, _)) => reference(min),
        None => json!(1),
    };
    let mut properties = json!({
        "Cluster": reference(CLUSTER),
        "TaskDefinition": reference(service.task),
        "DesiredCount": if_(STARTED, desired, json!(0)),
        "CapacityProviderStrategy": [{
            "CapacityProvider": if_(USE_SPOT, json!("FARGATE_SPOT"), json!("FARGATE")),
            "Weight": 1,
        }],
        "EnableExecuteCommand": service.exec,
        "DeploymentConfiguration": {
            "MinimumHealthyPercent": service.deployment.0,
            "MaximumPercent": service.deployment.1,
            "DeploymentCircuitBreaker": { "Enable": true, "Rollback": true },
        },
        "NetworkConfiguration": {
            "AwsvpcConfiguration": {
                "AssignPublicIp": "DISABLED",
                "Subnets": task_subnets(),
                "SecurityGroups": [get_att(service.security_group, "GroupId")],
            },
        },
    });
    if !balancers.is_empty() {
        properties["LoadBalancers"] = json!(balancers);
        properties["HealthCheckGracePeriodSeconds"] = json!(600);
    }
    t.resource(service.id, "AWS::ECS::Service", properties)
        .depends_on(&after)
        .depends_on(service.after);
    let Some((min, max)) = service.scaling else {
        return;
    };
    let target_id = format!("{}Scaling", service.id);
    t.resource(
        &target_id,
        "AWS::ApplicationAutoScaling::ScalableTarget",
        json!({
            "ServiceNamespace": "ecs",
            "ScalableDimension": "ecs:service:DesiredCount",
            "ResourceId": sub(&format!("service/${{{CLUSTER}}}/${{{}.Name}}", service.id)),
            "MinCapacity": reference(min),
            "MaxCapacity": reference(max),
        }),
    )
    .only_if(STARTED);
    t.resource(
        &format!("{}CpuPolicy", service.id),
        "AWS::ApplicationAutoScaling::ScalingPolicy",
        json!({
            "PolicyName": sub(&format!("${{AWS::StackName}}-{}-cpu", service.id)),
            "PolicyType": "TargetTrackingScaling",
            "ScalingTargetId": reference(&target_id),
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": 70,
                "PredefinedMetricSpecification": { "PredefinedMetricType": "ECSServiceAverageCPUUtilization" },
                "ScaleInCooldown": 300,
                "ScaleOutCooldown": 60,
            },
        }),
    )
    .only_if(STARTED);
}
