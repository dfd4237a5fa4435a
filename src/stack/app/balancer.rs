//! The internal Application Load Balancer and the security groups around it: HTTP (or HTTPS
//! with a certificate) reachable only from the allowed client networks — never `::/0` —,
//! Dify's path rules, one target group per service port, two internal ports (the api for the
//! web task's server-side rendering, the sandbox for the api task), and tasks, database and
//! cache each reachable only from what needs them.

use serde_json::{Value, json};

use super::containers::{INTERNAL_API_PORT, SANDBOX_PORT};
use super::data::{
    ACCESS_LOG_BUCKET, DB_SECURITY_GROUP, PLUGIN_FILES_SECURITY_GROUP, REDIS_SECURITY_GROUP,
};
use super::params::{
    ALLOWED_CIDR, CERTIFICATE_ARN, HAS_CERTIFICATE, MAX_ALLOWED_CIDRS, SUBNET_IDS, VPC_ID,
    allowed_cidr, has_allowed_cidr,
};
use crate::stack::{Template, get_att, if_, reference, sub};

pub const ALB_SECURITY_GROUP: &str = "LoadBalancerSecurityGroup";
pub const API_SECURITY_GROUP: &str = "ApiTaskSecurityGroup";
pub const WEB_SECURITY_GROUP: &str = "WebTaskSecurityGroup";
pub const SANDBOX_SECURITY_GROUP: &str = "SandboxTaskSecurityGroup";

/// A target group: logical ID, port, health check path.
pub struct Target {
    pub id: &'static str,
    pub container: &'static str,
    pub port: u16,
    pub health: &'static str,
}

pub const API_TARGET: Target = Target {
    id: "ApiTargetGroup",
    container: "api",
    port: 5001,
    // langgenius/dify api/extensions/ext_app_metrics.py l.19 (1.13.3): no database involved.
    health: "/health",
};
pub const DAEMON_TARGET: Target = Target {
    id: "PluginDaemonTargetGroup",
    container: "plugin-daemon",
    port: 5002,
    // langgenius/dify-plugin-daemon internal/server/http_server.go (l.35 in 0.5.3, l.44 in
    // 0.6.10).
    health: "/health/check",
};
pub const SANDBOX_TARGET: Target = Target {
    id: "SandboxTargetGroup",
    container: "sandbox",
    port: SANDBOX_PORT,
    // langgenius/dify-sandbox internal/controller/router.go l.19 (0.2.14, 0.2.15).
    health: "/health",
};
pub const WEB_TARGET: Target = Target {
    id: "WebTargetGroup",
    container: "web",
    port: 3000,
    health: "/",
};

/// Listener rules in priority order: (priority, target, path patterns). A rule takes at
/// most five patterns.
pub const RULES: [(u32, &Target, &[&str]); 6] = [
    (
        10,
        &API_TARGET,
        &["/console/api", "/console/api/*", "/api", "/api/*", "/v1"],
    ),
    (
        11,
        &API_TARGET,
        &["/v1/*", "/files", "/files/*", "/triggers", "/triggers/*"],
    ),
    (20, &DAEMON_TARGET, &["/e", "/e/*"]),
    (30, &API_TARGET, &["/mcp", "/mcp/*", "/.well-known/*"]),
    // The CLI surface of 1.16+ (api/controllers/openapi/__init__.py: `url_prefix="/openapi/v1"`,
    // langgenius/dify 1.16.1); in 1.13.3 the api answers 404 as web would.
    (31, &API_TARGET, &["/openapi", "/openapi/*"]),
    (100, &WEB_TARGET, &["/*"]),
];

/// The listener the rules hang on: HTTPS when there is a certificate, else HTTP.
pub fn main_listener() -> Value {
    if_(
        HAS_CERTIFICATE,
        reference("HttpsListener"),
        reference("HttpListener"),
    )
}

/// Client access to the load balancer: port 80 from every allowed network, and 443 when
/// there is a certificate. Rules beyond the first are resources of their own, each created
/// only when its network is given.
fn client_ingress(t: &mut Template) {
    for n in 1..=MAX_ALLOWED_CIDRS {
        for port in [80u16, 443] {
            let condition = match (n, port) {
                (1, 80) => None,
                (1, _) => Some(HAS_CERTIFICATE.to_owned()),
                (_, 80) => Some(has_allowed_cidr(n)),
                _ => {
                    let both = format!("Https{}", has_allowed_cidr(n));
                    t.condition(
                        &both,
                        json!({ "Fn::And": [
                            { "Condition": HAS_CERTIFICATE },
                            { "Condition": has_allowed_cidr(n) },
                        ] }),
                    );
                    Some(both)
                }
            };
            let rule = t.resource(
                &format!("ClientIngress{port}From{n}"),
                "AWS::EC2::SecurityGroupIngress",
                json!({
                    "GroupId": get_att(ALB_SECURITY_GROUP, "GroupId"),
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    "CidrIp": reference(&allowed_cidr(n)),
                    "Description": format!("clients ({ALLOWED_CIDR}{n})"),
                }),
            );
            if let Some(condition) = condition {
                rule.only_if(&condition);
            }
        }
    }
}

fn security_group(t: &mut Template, name: &str, description: &str, ingress: Vec<Value>) {
    let mut properties = json!({
        "GroupDescription": sub(&format!("${{AWS::StackName}} {description}")),
        "VpcId": reference(VPC_ID),
    });
    if !ingress.is_empty() {
        properties["SecurityGroupIngress"] = json!(ingress);
    }
    t.resource(name, "AWS::EC2::SecurityGroup", properties);
}

fn from_group(port: u16, group: &str, description: &str) -> Value {
    json!({
        "IpProtocol": "tcp",
        "FromPort": port,
        "ToPort": port,
        "SourceSecurityGroupId": get_att(group, "GroupId"),
        "Description": description,
    })
}

/// An ingress rule of its own (needed where the source is the group itself, or where two
/// groups would refer to each other).
fn ingress_rule(
    t: &mut Template,
    id: &str,
    group: &str,
    port: u16,
    source: &str,
    description: &str,
) {
    let mut rule = from_group(port, source, description);
    rule["GroupId"] = get_att(group, "GroupId");
    t.resource(id, "AWS::EC2::SecurityGroupIngress", rule);
}

pub fn security_groups(t: &mut Template) {
    security_group(t, ALB_SECURITY_GROUP, "load balancer", Vec::new());
    client_ingress(t);
    security_group(
        t,
        API_SECURITY_GROUP,
        "api task",
        vec![
            from_group(5001, ALB_SECURITY_GROUP, "api from the load balancer"),
            from_group(
                5002,
                ALB_SECURITY_GROUP,
                "plugin daemon from the load balancer",
            ),
        ],
    );
    // Plugin daemons of several tasks check each other's health on their server port
    // (langgenius/dify-plugin-daemon internal/cluster/vote.go l.116, 0.6.10:
    // `http://<node ip>:<port>/health/check`).
    ingress_rule(
        t,
        "ApiTaskIngress5002FromApiTask",
        API_SECURITY_GROUP,
        5002,
        API_SECURITY_GROUP,
        "plugin daemon cluster health checks between api tasks",
    );
    security_group(
        t,
        WEB_SECURITY_GROUP,
        "web task",
        vec![from_group(
            3000,
            ALB_SECURITY_GROUP,
            "web from the load balancer",
        )],
    );
    // The sandbox runs user code. Its group admits only the load balancer on 8194, and no
    // other group admits it: not the database, Valkey, EFS, the api task (inner API, plugin
    // daemon) nor the load balancer's client ports. Its only egress is HTTPS, which the task
    // needs to pull its image, ship logs and read its API key through the VPC endpoints; the
    // task has no task role, so code reaching an endpoint or the task metadata endpoint
    // (169.254.170.2, outside any security group) finds no credentials.
    t.resource(
        SANDBOX_SECURITY_GROUP,
        "AWS::EC2::SecurityGroup",
        json!({
            "GroupDescription": sub("${AWS::StackName} sandbox task"),
            "VpcId": reference(VPC_ID),
            "SecurityGroupIngress": [from_group(
                SANDBOX_PORT,
                ALB_SECURITY_GROUP,
                "sandbox from the load balancer's internal port",
            )],
            "SecurityGroupEgress": [{
                "IpProtocol": "tcp",
                "FromPort": 443,
                "ToPort": 443,
                "CidrIp": "0.0.0.0/0",
                "Description": "HTTPS only: ECR, CloudWatch Logs, Secrets Manager endpoints and the S3 gateway",
            }],
        }),
    );
    ingress_rule(
        t,
        "LoadBalancerIngressSandboxFromApiTask",
        ALB_SECURITY_GROUP,
        SANDBOX_PORT,
        API_SECURITY_GROUP,
        "the sandbox's internal port, for the api task",
    );
    ingress_rule(
        t,
        "LoadBalancerIngressApiFromWebTask",
        ALB_SECURITY_GROUP,
        INTERNAL_API_PORT,
        WEB_SECURITY_GROUP,
        "the api's internal port, for the web task's server-side rendering",
    );
    security_group(
        t,
        DB_SECURITY_GROUP,
        "database",
        vec![from_group(
            5432,
            API_SECURITY_GROUP,
            "PostgreSQL from the api and beat tasks",
        )],
    );
    security_group(
        t,
        PLUGIN_FILES_SECURITY_GROUP,
        "plugin files",
        vec![from_group(
            2049,
            API_SECURITY_GROUP,
            "NFS from the api task",
        )],
    );
    security_group(
        t,
        REDIS_SECURITY_GROUP,
        "cache",
        vec![from_group(
            6379,
            API_SECURITY_GROUP,
            "Valkey from the api and beat tasks",
        )],
    );
}

pub fn load_balancer(t: &mut Template) {
    t.resource(
        "LoadBalancer",
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        json!({
            "Type": "application",
            "Scheme": "internal",
            "Subnets": reference(SUBNET_IDS),
            "SecurityGroups": [get_att(ALB_SECURITY_GROUP, "GroupId")],
            "LoadBalancerAttributes": [
                { "Key": "idle_timeout.timeout_seconds", "Value": "600" },
                { "Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true" },
                { "Key": "access_logs.s3.enabled", "Value": "true" },
                { "Key": "access_logs.s3.bucket", "Value": reference(ACCESS_LOG_BUCKET) },
                { "Key": "access_logs.s3.prefix", "Value": "alb" },
            ],
        }),
    )
    .depends_on(&["AccessLogBucketPolicy"]);
    for target in [&API_TARGET, &DAEMON_TARGET, &SANDBOX_TARGET, &WEB_TARGET] {
        t.resource(
            target.id,
            "AWS::ElasticLoadBalancingV2::TargetGroup",
            json!({
                "TargetType": "ip",
                "Protocol": "HTTP",
                "Port": target.port,
                "VpcId": reference(VPC_ID),
                "HealthCheckPath": target.health,
                "HealthCheckIntervalSeconds": 15,
                "HealthyThresholdCount": 2,
                "UnhealthyThresholdCount": 10,
                "Matcher": { "HttpCode": "200-299,307" },
                "TargetGroupAttributes": [
                    { "Key": "deregistration_delay.timeout_seconds", "Value": "10" }
                ],
            }),
        );
    }
    let refuse = json!([{
        "Type": "fixed-response",
        "FixedResponseConfig": { "StatusCode": "400", "ContentType": "text/plain" },
    }]);
    t.resource(
        "HttpListener",
        "AWS::ElasticLoadBalancingV2::Listener",
        json!({
            "LoadBalancerArn": reference("LoadBalancer"),
            "Port": 80,
            "Protocol": "HTTP",
            "DefaultActions": if_(
                HAS_CERTIFICATE,
                json!([{
                    "Type": "redirect",
                    "RedirectConfig": { "Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301" },
                }]),
                refuse.clone(),
            ),
        }),
    );
    t.resource(
        "HttpsListener",
        "AWS::ElasticLoadBalancingV2::Listener",
        json!({
            "LoadBalancerArn": reference("LoadBalancer"),
            "Port": 443,
            "Protocol": "HTTPS",
            "SslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
            "Certificates": [{ "CertificateArn": reference(CERTIFICATE_ARN) }],
            "DefaultActions": refuse,
        }),
    )
    .only_if(HAS_CERTIFICATE);
    // Internal ports: plain HTTP inside the VPC, admitted only from one task's security group.
    for (id, port, target) in [
        ("InternalApiListener", INTERNAL_API_PORT, &API_TARGET),
        ("SandboxListener", SANDBOX_PORT, &SANDBOX_TARGET),
    ] {
        t.resource(
            id,
            "AWS::ElasticLoadBalancingV2::Listener",
            json!({
                "LoadBalancerArn": reference("LoadBalancer"),
                "Port": port,
                "Protocol": "HTTP",
                "DefaultActions": [{ "Type": "forward", "TargetGroupArn": reference(target.id) }],
            }),
        );
    }
    for (priority, target, paths) in RULES {
        t.resource(
            &rule_id(priority),
            "AWS::ElasticLoadBalancingV2::ListenerRule",
            json!({
                "ListenerArn": main_listener(),
                "Priority": priority,
                "Conditions": [{ "Field": "path-pattern", "PathPatternConfig": { "Values": paths } }],
                "Actions": [{ "Type": "forward", "TargetGroupArn": reference(target.id) }],
            }),
        );
    }
}

pub fn rule_id(priority: u32) -> String {
    format!("ListenerRule{priority}")
}
