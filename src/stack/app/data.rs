//! Where Dify keeps its state: the storage and access-log buckets (private, TLS only), one
//! Secrets Manager secret per purpose, Aurora PostgreSQL Serverless v2 and Valkey with TLS and
//! an auth token. Nothing secret is ever written into the template or into SSM in plain text.
//!
//! What a stack delete leaves: the storage bucket (users' files, plugin packages, the
//! per-tenant keys under `privkeys/`), the access logs, a final Aurora snapshot, and the two
//! secrets that snapshot and bucket are useless without (the database password, `SECRET_KEY`).
//! Everything else is rebuilt by a new stack: Valkey (queue and sessions), the plugin venvs on
//! EFS (reinstalled from the packages in the bucket), the other keys.

use serde_json::{Value, json};

use super::containers::{
    BROKER_SECRET, DAEMON_SECRET, DB_SECRET, INNER_SECRET, REDIS_SECRET, SANDBOX_SECRET,
    SECRET_KEY_SECRET,
};
use super::params::{MULTI_AZ_REDIS, SCALE_TO_ZERO, SUBNET_IDS};
use crate::stack::{Template, get_att, if_, no_value, reference, sub};

pub const STORAGE_BUCKET: &str = "StorageBucket";
pub const ACCESS_LOG_BUCKET: &str = "AccessLogBucket";
pub const DB_SECURITY_GROUP: &str = "DatabaseSecurityGroup";
pub const PLUGIN_FILES_SECURITY_GROUP: &str = "PluginFilesSecurityGroup";
pub const PLUGIN_FILES: &str = "PluginFiles";
pub const PLUGIN_FILES_ACCESS_POINT: &str = "PluginFilesAccessPoint";
pub const PLUGIN_FILES_MOUNTS: [&str; 2] = ["PluginFilesMountA", "PluginFilesMountB"];
pub const REDIS_SECURITY_GROUP: &str = "RedisSecurityGroup";
pub const DATABASE: &str = "Database";
pub const DATABASE_WRITER: &str = "DatabaseWriter";
pub const DATABASE_SECRET_ATTACHMENT: &str = "DatabaseSecretAttachment";
pub const REDIS: &str = "Redis";
const MONITORING_ROLE: &str = "DatabaseMonitoringRole";

/// Aurora PostgreSQL engine: 15.7 or later can scale to zero.
pub const AURORA_ENGINE_VERSION: &str = "15.10";
pub const VALKEY_ENGINE_VERSION: &str = "8.0";

/// Regions whose load balancers write access logs as a regional ELB account rather than
/// as the log delivery service.
const ELB_ACCOUNTS: [(&str, &str); 22] = [
    ("us-east-1", "127311923021"),
    ("us-east-2", "033677994240"),
    ("us-west-1", "027434742980"),
    ("us-west-2", "797873946194"),
    ("af-south-1", "098369216593"),
    ("ap-east-1", "754344448648"),
    ("ap-southeast-3", "589379963580"),
    ("ap-south-1", "718504428378"),
    ("ap-northeast-3", "383597477331"),
    ("ap-northeast-2", "600734575887"),
    ("ap-southeast-1", "114774131450"),
    ("ap-southeast-2", "783225319266"),
    ("ap-northeast-1", "582318560864"),
    ("ca-central-1", "985666609251"),
    ("eu-central-1", "054676820928"),
    ("eu-west-1", "156460612806"),
    ("eu-west-2", "652711504416"),
    ("eu-south-1", "635631232127"),
    ("eu-west-3", "009996457667"),
    ("eu-north-1", "897822967062"),
    ("me-south-1", "076674570225"),
    ("sa-east-1", "507241528517"),
];
const ELB_ACCOUNT_MAP: &str = "ElbAccounts";
const USES_ELB_ACCOUNT: &str = "RegionUsesElbAccount";

/// A bucket policy statement refusing any request not made over TLS.
fn tls_only(bucket: &str) -> Value {
    json!({
        "Sid": "TlsOnly",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [get_att(bucket, "Arn"), sub(&format!("${{{bucket}.Arn}}/*"))],
        "Condition": { "Bool": { "aws:SecureTransport": false } },
    })
}

fn private_bucket(t: &mut Template, name: &str, extra: Value) {
    let mut properties = json!({
        "BucketEncryption": {
            "ServerSideEncryptionConfiguration": [
                { "ServerSideEncryptionByDefault": { "SSEAlgorithm": "AES256" } }
            ]
        },
        "PublicAccessBlockConfiguration": {
            "BlockPublicAcls": true,
            "BlockPublicPolicy": true,
            "IgnorePublicAcls": true,
            "RestrictPublicBuckets": true,
        },
        "OwnershipControls": { "Rules": [ { "ObjectOwnership": "BucketOwnerEnforced" } ] },
    });
    if let (Some(properties), Value::Object(extra)) = (properties.as_object_mut(), extra) {
        properties.extend(extra);
    }
    t.resource(name, "AWS::S3::Bucket", properties)
        .keep("Retain");
}

pub fn buckets(t: &mut Template) {
    // The only copy of users' files: overwritten or deleted objects stay recoverable for 30
    // days; every request is logged to the access-log bucket.
    private_bucket(
        t,
        STORAGE_BUCKET,
        json!({
            "VersioningConfiguration": { "Status": "Enabled" },
            "LoggingConfiguration": {
                "DestinationBucketName": reference(ACCESS_LOG_BUCKET),
                "LogFilePrefix": "s3/",
            },
            "LifecycleConfiguration": {
                "Rules": [{
                    "Id": "old-versions",
                    "Status": "Enabled",
                    "NoncurrentVersionExpiration": { "NoncurrentDays": 30 },
                    "AbortIncompleteMultipartUpload": { "DaysAfterInitiation": 7 },
                }]
            },
        }),
    );
    t.resource(
        "StorageBucketPolicy",
        "AWS::S3::BucketPolicy",
        json!({
            "Bucket": reference(STORAGE_BUCKET),
            "PolicyDocument": { "Version": "2012-10-17", "Statement": [tls_only(STORAGE_BUCKET)] },
        }),
    );
    private_bucket(
        t,
        ACCESS_LOG_BUCKET,
        json!({
            "LifecycleConfiguration": {
                "Rules": [ { "Id": "expire", "Status": "Enabled", "ExpirationInDays": 365 } ]
            },
        }),
    );
    let map: serde_json::Map<String, Value> = ELB_ACCOUNTS
        .iter()
        .map(|(region, account)| (region.to_string(), json!({ "Account": account })))
        .collect();
    t.mappings
        .insert(ELB_ACCOUNT_MAP.to_owned(), Value::Object(map));
    // Fn::Or takes at most 10 conditions: one per region, grouped.
    let groups: Vec<Value> = ELB_ACCOUNTS
        .chunks(8)
        .map(|chunk| {
            let equals: Vec<Value> = chunk
                .iter()
                .map(|(region, _)| json!({ "Fn::Equals": [reference("AWS::Region"), region] }))
                .collect();
            json!({ "Fn::Or": equals })
        })
        .collect();
    t.condition(USES_ELB_ACCOUNT, json!({ "Fn::Or": groups }));
    let elb_account = json!({ "Fn::Join": ["", [
        "arn:",
        reference("AWS::Partition"),
        ":iam::",
        { "Fn::FindInMap": [ELB_ACCOUNT_MAP, reference("AWS::Region"), "Account"] },
        ":root",
    ]] });
    let writer = if_(
        USES_ELB_ACCOUNT,
        json!({ "AWS": elb_account }),
        json!({ "Service": "logdelivery.elasticloadbalancing.amazonaws.com" }),
    );
    t.resource(
        "AccessLogBucketPolicy",
        "AWS::S3::BucketPolicy",
        json!({
            "Bucket": reference(ACCESS_LOG_BUCKET),
            "PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    tls_only(ACCESS_LOG_BUCKET),
                    {
                        "Sid": "StorageAccessLogs",
                        "Effect": "Allow",
                        "Principal": { "Service": "logging.s3.amazonaws.com" },
                        "Action": "s3:PutObject",
                        "Resource": sub(&format!("${{{ACCESS_LOG_BUCKET}.Arn}}/s3/*")),
                        "Condition": {
                            "ArnLike": { "aws:SourceArn": get_att(STORAGE_BUCKET, "Arn") },
                            "StringEquals": { "aws:SourceAccount": reference("AWS::AccountId") },
                        },
                    },
                    {
                        "Sid": "LoadBalancerLogs",
                        "Effect": "Allow",
                        "Principal": writer,
                        "Action": "s3:PutObject",
                        "Resource": sub(&format!("${{{ACCESS_LOG_BUCKET}.Arn}}/alb/AWSLogs/${{AWS::AccountId}}/*")),
                    }
                ]
            },
        }),
    );
}

/// One secret per purpose; generated by Secrets Manager, never seen by anyone.
pub fn secrets(t: &mut Template) {
    let generated = |template: Option<(&str, &str)>, length: u32| {
        let mut spec = json!({ "PasswordLength": length, "ExcludePunctuation": true });
        if let Some((template, key)) = template {
            spec["SecretStringTemplate"] = json!(template);
            spec["GenerateStringKey"] = json!(key);
        }
        spec
    };
    // Kept on delete: a restored snapshot keeps its master password, and SECRET_KEY signs and
    // encrypts what Dify stored. The others are regenerated harmlessly by a new stack.
    for (name, description, spec, keep) in [
        (
            DB_SECRET,
            "Aurora master user (host and port added once the cluster exists)",
            generated(Some((r#"{"username":"postgres"}"#, "password")), 32),
            "Retain",
        ),
        (
            REDIS_SECRET,
            "Valkey auth token",
            generated(Some(("{}", "token")), 64),
            "Delete",
        ),
        (
            SECRET_KEY_SECRET,
            "Dify SECRET_KEY",
            generated(None, 48),
            "Retain",
        ),
        (
            SANDBOX_SECRET,
            "Sandbox API key",
            generated(None, 40),
            "Delete",
        ),
        (
            DAEMON_SECRET,
            "Plugin daemon server key",
            generated(None, 40),
            "Delete",
        ),
        (
            INNER_SECRET,
            "Inner API key between Dify and the plugin daemon",
            generated(None, 40),
            "Delete",
        ),
    ] {
        t.resource(
            name,
            "AWS::SecretsManager::Secret",
            json!({
                "Description": sub(&format!("${{AWS::StackName}}: {description}")),
                "GenerateSecretString": spec,
            }),
        )
        .keep(keep);
    }
    // The broker URL embeds the token: built by CloudFormation from the token secret, so
    // the token is never written anywhere in plain text.
    t.resource(
        BROKER_SECRET,
        "AWS::SecretsManager::Secret",
        json!({
            "Description": sub("${AWS::StackName}: Celery broker URL"),
            "SecretString": sub(&format!(
                "rediss://:{{{{resolve:secretsmanager:${{{REDIS_SECRET}}}:SecretString:token}}}}@${{Redis.PrimaryEndPoint.Address}}:${{Redis.PrimaryEndPoint.Port}}/1?ssl_cert_reqs=required"
            )),
        }),
    )
    .keep("Delete");
}

pub fn database(t: &mut Template) {
    t.resource(
        "DatabaseSubnets",
        "AWS::RDS::DBSubnetGroup",
        json!({
            "DBSubnetGroupDescription": sub("${AWS::StackName} database subnets"),
            "SubnetIds": reference(SUBNET_IDS),
        }),
    );
    t.resource(
        DATABASE,
        "AWS::RDS::DBCluster",
        json!({
            "Engine": "aurora-postgresql",
            "EngineVersion": AURORA_ENGINE_VERSION,
            "DatabaseName": "main",
            "MasterUsername": sub(&format!("{{{{resolve:secretsmanager:${{{DB_SECRET}}}:SecretString:username}}}}")),
            "MasterUserPassword": sub(&format!("{{{{resolve:secretsmanager:${{{DB_SECRET}}}:SecretString:password}}}}")),
            "DBSubnetGroupName": reference("DatabaseSubnets"),
            "VpcSecurityGroupIds": [get_att(DB_SECURITY_GROUP, "GroupId")],
            "StorageEncrypted": true,
            "BackupRetentionPeriod": 7,
            "CopyTagsToSnapshot": true,
            "ServerlessV2ScalingConfiguration": {
                "MinCapacity": if_(SCALE_TO_ZERO, json!(0), json!(0.5)),
                "MaxCapacity": 2,
                "SecondsUntilAutoPause": if_(SCALE_TO_ZERO, json!(3600), no_value()),
            },
        }),
    )
    .keep("Snapshot");
    // The data is the cluster's; the instance is only compute.
    t.resource(
        DATABASE_WRITER,
        "AWS::RDS::DBInstance",
        json!({
            "DBClusterIdentifier": reference(DATABASE),
            "DBInstanceClass": "db.serverless",
            "Engine": "aurora-postgresql",
            "PubliclyAccessible": false,
            "AutoMinorVersionUpgrade": true,
            // Enhanced monitoring: the instance's OS metrics, published by RDS itself.
            "MonitoringInterval": 60,
            "MonitoringRoleArn": get_att(MONITORING_ROLE, "Arn"),
        }),
    )
    .keep("Delete");
    t.resource(
        MONITORING_ROLE,
        "AWS::IAM::Role",
        json!({
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": { "Service": "monitoring.rds.amazonaws.com" },
                    "Action": "sts:AssumeRole",
                    "Condition": { "StringEquals": { "aws:SourceAccount": reference("AWS::AccountId") } },
                }],
            },
            "ManagedPolicyArns": [sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole")],
        }),
    );
    t.resource(
        DATABASE_SECRET_ATTACHMENT,
        "AWS::SecretsManager::SecretTargetAttachment",
        json!({
            "SecretId": reference(DB_SECRET),
            "TargetId": reference("Database"),
            "TargetType": "AWS::RDS::DBCluster",
        }),
    );
}

pub fn cache(t: &mut Template) {
    t.resource(
        "RedisSubnets",
        "AWS::ElastiCache::SubnetGroup",
        json!({
            "Description": sub("${AWS::StackName} cache subnets"),
            "SubnetIds": reference(SUBNET_IDS),
        }),
    );
    // The queue and sessions only.
    t.resource(
        REDIS,
        "AWS::ElastiCache::ReplicationGroup",
        json!({
            "ReplicationGroupDescription": sub("${AWS::StackName} Valkey"),
            "Engine": "valkey",
            "EngineVersion": VALKEY_ENGINE_VERSION,
            "CacheNodeType": "cache.t4g.micro",
            "NumCacheClusters": if_(MULTI_AZ_REDIS, json!(2), json!(1)),
            "AutomaticFailoverEnabled": if_(MULTI_AZ_REDIS, json!(true), json!(false)),
            "MultiAZEnabled": if_(MULTI_AZ_REDIS, json!(true), json!(false)),
            "TransitEncryptionEnabled": true,
            "AtRestEncryptionEnabled": true,
            "AuthToken": sub(&format!("{{{{resolve:secretsmanager:${{{REDIS_SECRET}}}:SecretString:token}}}}")),
            "CacheSubnetGroupName": reference("RedisSubnets"),
            "SecurityGroupIds": [get_att(REDIS_SECURITY_GROUP, "GroupId")],
            "Port": 6379,
        }),
    )
    .keep("Delete");
}

/// The plugin daemon's working directory on EFS (encrypted, reachable only from the api
/// task): plugin venvs survive task restarts, so the daemon does not reinstall them.
pub fn plugin_files(t: &mut Template) {
    t.resource(
        PLUGIN_FILES,
        "AWS::EFS::FileSystem",
        json!({
            "Encrypted": true,
            "PerformanceMode": "generalPurpose",
            "ThroughputMode": "elastic",
            "FileSystemTags": [{ "Key": "Name", "Value": sub("${AWS::StackName}-plugin-cwd") }],
        }),
    )
    // A cache of plugin venvs, rebuilt from the packages in the storage bucket.
    .keep("Delete");
    for (n, mount) in PLUGIN_FILES_MOUNTS.iter().enumerate() {
        t.resource(
            mount,
            "AWS::EFS::MountTarget",
            json!({
                "FileSystemId": reference(PLUGIN_FILES),
                "SubnetId": { "Fn::Select": [n, reference(SUBNET_IDS)] },
                "SecurityGroups": [get_att(PLUGIN_FILES_SECURITY_GROUP, "GroupId")],
            }),
        );
    }
    t.resource(
        PLUGIN_FILES_ACCESS_POINT,
        "AWS::EFS::AccessPoint",
        json!({
            "FileSystemId": reference(PLUGIN_FILES),
            "PosixUser": { "Uid": "0", "Gid": "0" },
            "RootDirectory": {
                "Path": "/plugin-cwd",
                "CreationInfo": { "OwnerUid": "0", "OwnerGid": "0", "Permissions": "755" },
            },
        }),
    );
}
