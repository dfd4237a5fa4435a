//! The internal Application Load Balancer and the security groups around it: HTTP (or HTTPS
//! with a certificate) reachable only from the allowed client networks — never `::/0` —,
//! Dify's path rules, one target group per service port, and tasks, database and cache each
//! reachable only from what needs them.

use serde_json::{Value, json};

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
    health: "/health",
};
pub const DAEMON_TARGET: Target = Target {
    id: "PluginDaemonTargetGroup",
    container: "plugin-daemon",
    port: 5002,
    health: "/health/check",
};
pub const WEB_TARGET: Target = Target {
    id: "WebTargetGroup",
    container: "web",
    port: 3000,
    health: "/",
};

/// Listener rules in priority order: (priority, target, path patterns). A rule takes at
/// most five patterns.
pub const RULES: [(u32, &Target, &[&str]); 5] = [
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
    t.resource(
        name,
        "AWS::EC2::SecurityGroup",
        json!({
            "GroupDescription": sub(&format!("${{AWS::StackName}} {description}")),
            "VpcId": reference(VPC_ID),
            "SecurityGroupIngress": ingress,
        }),
    );
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
    security_group(
        t,
        DB_SECURITY_GROUP,
        "database",
        vec![from_group(
            5432,
            API_SECURITY_GROUP,
            "PostgreSQL from the api task",
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
            "Valkey from the api task",
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
    for target in [&API_TARGET, &DAEMON_TARGET, &WEB_TARGET] {
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
