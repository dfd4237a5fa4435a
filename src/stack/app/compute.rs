//! ECS on Fargate: the cluster, one log group per container (with retention), least-privilege
//! IAM roles, the api and web task definitions with every image pinned by ECR digest, the two
//! services (ECS Exec on, no public IP, optional Fargate Spot) and their autoscaling.

use serde_json::{Value, json};

use super::balancer::{
    API_SECURITY_GROUP, API_TARGET, DAEMON_TARGET, RULES, Target, WEB_SECURITY_GROUP, WEB_TARGET,
    rule_id,
};
use super::containers::{Container, PLUGIN_VOLUME, log_group};
use super::data::{self, STORAGE_BUCKET};
use super::params::{
    self, API_MAX_TASKS, API_MIN_TASKS, CPU_ARCHITECTURE, LOG_RETENTION_DAYS, STARTED, SUBNET_IDS,
    USE_SPOT, WEB_MAX_TASKS, WEB_MIN_TASKS,
};
use crate::stack::{Template, get_att, if_, reference, sub};

pub const CLUSTER: &str = "Cluster";
pub const API_SERVICE: &str = "ApiService";
pub const WEB_SERVICE: &str = "WebService";

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
    for container in containers {
        t.resource(
            &log_group(container.name),
            "AWS::Logs::LogGroup",
            json!({
                "LogGroupName": sub(&format!("/dify/${{AWS::StackName}}/{}", container.name)),
                "RetentionInDays": reference(LOG_RETENTION_DAYS),
            }),
        );
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
    for container in containers {
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
    pub role: &'static str,
    pub cpu: &'static str,
    pub memory: &'static str,
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
            "Cpu": reference(task.cpu),
            "Memory": reference(task.memory),
            "RuntimePlatform": { "OperatingSystemFamily": "LINUX", "CpuArchitecture": reference(CPU_ARCHITECTURE) },
            "Volumes": volumes(task.containers),
            "ExecutionRoleArn": get_att("ExecutionRole", "Arn"),
            "TaskRoleArn": get_att(task.role, "Arn"),
            "ContainerDefinitions": definitions,
        }),
    );
}

pub struct Service {
    pub id: &'static str,
    pub task: &'static str,
    pub security_group: &'static str,
    pub targets: &'static [&'static Target],
    pub min: &'static str,
    pub max: &'static str,
    /// Resources that must exist before its tasks start.
    pub after: &'static [&'static str],
}

pub const SERVICES: [Service; 2] = [
    Service {
        id: API_SERVICE,
        task: "ApiTask",
        security_group: API_SECURITY_GROUP,
        targets: &[&API_TARGET, &DAEMON_TARGET],
        min: API_MIN_TASKS,
        max: API_MAX_TASKS,
        after: &data::PLUGIN_FILES_MOUNTS,
    },
    Service {
        id: WEB_SERVICE,
        task: "WebTask",
        security_group: WEB_SECURITY_GROUP,
        targets: &[&WEB_TARGET],
        min: WEB_MIN_TASKS,
        max: WEB_MAX_TASKS,
        after: &[],
    },
];

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
    let rules: Vec<String> = RULES
        .iter()
        .filter(|(_, target, _)| service.targets.iter().any(|t| t.id == target.id))
        .map(|(priority, _, _)| rule_id(*priority))
        .collect();
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    t.resource(
        service.id,
        "AWS::ECS::Service",
        json!({
            "Cluster": reference(CLUSTER),
            "TaskDefinition": reference(service.task),
            "DesiredCount": if_(STARTED, reference(service.min), json!(0)),
            "CapacityProviderStrategy": [{
                "CapacityProvider": if_(USE_SPOT, json!("FARGATE_SPOT"), json!("FARGATE")),
                "Weight": 1,
            }],
            "EnableExecuteCommand": true,
            "PropagateTags": "SERVICE",
            "HealthCheckGracePeriodSeconds": 600,
            "DeploymentConfiguration": {
                "MinimumHealthyPercent": 100,
                "MaximumPercent": 200,
                "DeploymentCircuitBreaker": { "Enable": true, "Rollback": true },
            },
            "NetworkConfiguration": {
                "AwsvpcConfiguration": {
                    "AssignPublicIp": "DISABLED",
                    "Subnets": reference(SUBNET_IDS),
                    "SecurityGroups": [get_att(service.security_group, "GroupId")],
                },
            },
            "LoadBalancers": balancers,
        }),
    )
    .depends_on(&rules)
    .depends_on(service.after);
    let target_id = format!("{}Scaling", service.id);
    t.resource(
        &target_id,
        "AWS::ApplicationAutoScaling::ScalableTarget",
        json!({
            "ServiceNamespace": "ecs",
            "ScalableDimension": "ecs:service:DesiredCount",
            "ResourceId": sub(&format!("service/${{{CLUSTER}}}/${{{}.Name}}", service.id)),
            "MinCapacity": reference(service.min),
            "MaxCapacity": reference(service.max),
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
