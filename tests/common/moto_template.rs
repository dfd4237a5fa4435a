//! moto's CloudFormation cannot create every resource type of the application stack. This
//! turns the bundle's template into the largest part moto can deploy — the same ECS, load
//! balancer, IAM, log group, S3 and security group resources — by removing the types it
//! lacks and putting stand-in values where they were referenced. The removed types are
//! covered by unit tests on the full template and by cfn-lint.

use std::collections::BTreeSet;

use serde_json::{Value, json};

/// Resource types moto 5.2.5's CloudFormation cannot create (Aurora instances crash it).
pub const UNSUPPORTED: [&str; 9] = [
    "AWS::RDS::DBCluster",
    "AWS::RDS::DBInstance",
    "AWS::ElastiCache::ReplicationGroup",
    "AWS::ElastiCache::SubnetGroup",
    "AWS::SecretsManager::Secret",
    "AWS::SecretsManager::SecretTargetAttachment",
    "AWS::ApplicationAutoScaling::ScalableTarget",
    "AWS::ApplicationAutoScaling::ScalingPolicy",
    "AWS::S3::BucketPolicy",
];

fn replace(value: &Value, gone: &BTreeSet<String>) -> Value {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(name)) = map.get("Ref")
                && gone.contains(name)
            {
                return json!(format!(
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}"
                ));
            }
            if let Some(Value::Array(args)) = map.get("Fn::GetAtt")
                && args
                    .first()
                    .and_then(Value::as_str)
                    .is_some_and(|n| gone.contains(n))
            {
                return json!("stand-in");
            }
            if let Some(Value::String(text)) = map.get("Fn::Sub") {
                let mut text = text.clone();
                for name in gone {
                    while let Some(start) = text.find(&format!("${{{name}")) {
                        let end = text[start..]
                            .find('}')
                            .map_or(text.len(), |e| start + e + 1);
                        text.replace_range(start..end, "stand-in");
                    }
                }
                return json!({ "Fn::Sub": text });
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), replace(v, gone)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| replace(v, gone)).collect()),
        other => other.clone(),
    }
}

/// The moto-deployable part of `template`.
pub fn reduce(template: &Value) -> Value {
    let mut t = template.clone();
    let resources = t["Resources"].as_object().cloned().unwrap_or_default();
    let gone: BTreeSet<String> = resources
        .iter()
        .filter(|(_, r)| UNSUPPORTED.contains(&r["Type"].as_str().unwrap_or_default()))
        .map(|(name, _)| name.clone())
        .collect();
    let mut kept = serde_json::Map::new();
    for (name, resource) in resources {
        if gone.contains(&name) {
            continue;
        }
        let mut resource = replace(&resource, &gone);
        if let Some(Value::Array(deps)) = resource.get_mut("DependsOn") {
            deps.retain(|d| !d.as_str().is_some_and(|d| gone.contains(d)));
        }
        // moto passes Number parameters on as text, which its ECS service cannot count.
        if resource["Type"] == "AWS::ECS::Service" {
            resource["Properties"]["DesiredCount"] = json!({ "Fn::If": ["Started", 1, 0] });
        }
        kept.insert(name, resource);
    }
    t["Resources"] = Value::Object(kept);
    t["Outputs"] = replace(&t["Outputs"], &gone);
    t
}
