//! The VPC endpoints stack: interface endpoints with private DNS behind one security group
//! that allows 443 from the VPC, an S3 gateway endpoint on every route table, and — for a new
//! VPC — the VPC itself with two isolated subnets in two AZs and their route tables.

use serde_json::json;

use super::{Template, get_att, name_tag, reference, sub};

/// Interface endpoints Dify and the installer need inside a VPC without internet.
pub const INTERFACE_SERVICES: [&str; 9] = [
    "ecr.api",
    "ecr.dkr",
    "secretsmanager",
    "ssm",
    "ssmmessages",
    "logs",
    "bedrock",
    "bedrock-runtime",
    "bedrock-agent-runtime",
];
pub const GATEWAY_SERVICE: &str = "s3";

/// Where the endpoints go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    Existing {
        vpc_id: String,
        cidr: String,
        subnet_ids: Vec<String>,
        route_table_ids: Vec<String>,
    },
    New {
        cidr: String,
        /// Two availability zones, and a subnet CIDR in each.
        zones: [String; 2],
        subnets: [String; 2],
    },
}

/// The first two subnets, each one sixteenth of `cidr` (`10.0.0.0/16` → `10.0.0.0/20` and
/// `10.0.16.0/20`), leaving room for more.
pub fn split_cidr(cidr: &str) -> Option<[String; 2]> {
    let (address, bits) = cidr.split_once('/')?;
    let bits: u32 = bits.parse().ok()?;
    if !(8..=24).contains(&bits) {
        return None;
    }
    let octets: Vec<u32> = address
        .split('.')
        .map(|o| o.parse::<u8>().ok().map(u32::from))
        .collect::<Option<_>>()?;
    if octets.len() != 4 {
        return None;
    }
    let base = octets.iter().fold(0u32, |acc, o| (acc << 8) | o) & (u32::MAX << (32 - bits));
    let size = 1u32 << (32 - (bits + 4));
    let show = |a: u32| {
        format!(
            "{}.{}.{}.{}/{}",
            a >> 24,
            (a >> 16) & 255,
            (a >> 8) & 255,
            a & 255,
            bits + 4
        )
    };
    Some([show(base), show(base + size)])
}

/// `ecr.api` → `EcrApiEndpoint`.
pub fn logical_id(service: &str) -> String {
    let mut out = String::new();
    for part in service.split(['.', '-']) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out + "Endpoint"
}

/// The stack for `services` (those not already in the VPC), named `stack` in tags.
pub fn template(stack: &str, network: &Network, interface: &[&str], gateway: bool) -> Template {
    let mut t = Template::new(format!(
        "dify-bundle: VPC endpoints for Dify in a VPC without internet ({stack})"
    ));
    let (vpc, cidr, subnets, route_tables) = match network {
        Network::Existing {
            vpc_id,
            cidr,
            subnet_ids,
            route_table_ids,
        } => (
            json!(vpc_id),
            json!(cidr),
            json!(subnet_ids),
            json!(route_table_ids),
        ),
        Network::New {
            cidr,
            zones,
            subnets,
        } => {
            t.resource(
                "Vpc",
                "AWS::EC2::VPC",
                json!({
                    "CidrBlock": cidr,
                    "EnableDnsSupport": true,
                    "EnableDnsHostnames": true,
                    "Tags": name_tag(stack),
                }),
            );
            for (i, name) in ["SubnetA", "SubnetB"].iter().enumerate() {
                t.resource(
                    name,
                    "AWS::EC2::Subnet",
                    json!({
                        "VpcId": reference("Vpc"),
                        "CidrBlock": subnets[i],
                        "AvailabilityZone": zones[i],
                        "MapPublicIpOnLaunch": false,
                        "Tags": name_tag(&format!("{stack}-isolated-{}", i + 1)),
                    }),
                );
                let table = format!("RouteTable{}", &name[6..]);
                t.resource(
                    &table,
                    "AWS::EC2::RouteTable",
                    json!({ "VpcId": reference("Vpc"), "Tags": name_tag(&format!("{stack}-isolated-{}", i + 1)) }),
                );
                t.resource(
                    &format!("{name}RouteTableAssociation"),
                    "AWS::EC2::SubnetRouteTableAssociation",
                    json!({ "SubnetId": reference(name), "RouteTableId": reference(&table) }),
                );
            }
            t.output("VpcId", "The isolated VPC", reference("Vpc"));
            t.output(
                "SubnetIds",
                "Its two isolated subnets",
                json!({ "Fn::Join": [",", [reference("SubnetA"), reference("SubnetB")]] }),
            );
            (
                reference("Vpc"),
                get_att("Vpc", "CidrBlock"),
                json!([reference("SubnetA"), reference("SubnetB")]),
                json!([reference("RouteTableA"), reference("RouteTableB")]),
            )
        }
    };
    if !interface.is_empty() {
        t.resource(
            "EndpointSecurityGroup",
            "AWS::EC2::SecurityGroup",
            json!({
                "GroupDescription": "HTTPS from the VPC to its interface endpoints",
                "VpcId": vpc,
                "SecurityGroupIngress": [{
                    "IpProtocol": "tcp",
                    "FromPort": 443,
                    "ToPort": 443,
                    "CidrIp": cidr,
                    "Description": "HTTPS from inside the VPC",
                }],
                "Tags": name_tag(&format!("{stack}-endpoints")),
            }),
        );
    }
    for service in interface {
        t.resource(
            &logical_id(service),
            "AWS::EC2::VPCEndpoint",
            json!({
                "ServiceName": sub(&format!("com.amazonaws.${{AWS::Region}}.{service}")),
                "VpcEndpointType": "Interface",
                "VpcId": vpc,
                "SubnetIds": subnets,
                "SecurityGroupIds": [reference("EndpointSecurityGroup")],
                "PrivateDnsEnabled": true,
            }),
        );
    }
    if gateway {
        t.resource(
            &logical_id(GATEWAY_SERVICE),
            "AWS::EC2::VPCEndpoint",
            json!({
                "ServiceName": sub(&format!("com.amazonaws.${{AWS::Region}}.{GATEWAY_SERVICE}")),
                "VpcEndpointType": "Gateway",
                "VpcId": vpc,
                "RouteTableIds": route_tables,
            }),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_vpc_gets_the_missing_endpoints_only() {
        let network = Network::Existing {
            vpc_id: "vpc-1".into(),
            cidr: "10.1.0.0/16".into(),
            subnet_ids: vec!["subnet-a".into(), "subnet-b".into()],
            route_table_ids: vec!["rtb-1".into()],
        };
        let t = template(
            "dify-endpoints",
            &network,
            &["ecr.api", "bedrock-agent-runtime"],
            true,
        );
        let json: serde_json::Value = serde_json::from_str(&t.to_json()).unwrap();
        let resources = json["Resources"].as_object().unwrap();
        assert_eq!(resources.len(), 4, "{resources:?}");
        let api = &resources["EcrApiEndpoint"]["Properties"];
        assert_eq!(
            api["ServiceName"]["Fn::Sub"],
            "com.amazonaws.${AWS::Region}.ecr.api"
        );
        assert_eq!(api["PrivateDnsEnabled"], true);
        assert_eq!(
            api["SubnetIds"],
            serde_json::json!(["subnet-a", "subnet-b"])
        );
        assert!(resources.contains_key("BedrockAgentRuntimeEndpoint"));
        let s3 = &resources["S3Endpoint"]["Properties"];
        assert_eq!(s3["VpcEndpointType"], "Gateway");
        assert_eq!(s3["RouteTableIds"], serde_json::json!(["rtb-1"]));
        let sg = &resources["EndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"][0];
        assert_eq!(sg["CidrIp"], "10.1.0.0/16");
        assert_eq!(sg["FromPort"], 443);
        assert!(!t.to_json().contains("::/0") && !t.to_json().contains("0.0.0.0/0"));
    }

    #[test]
    fn a_new_vpc_is_isolated_in_two_zones() {
        let t = template(
            "dify-endpoints",
            &Network::New {
                cidr: "10.0.0.0/16".into(),
                zones: ["us-east-1a".into(), "us-east-1b".into()],
                subnets: split_cidr("10.0.0.0/16").unwrap(),
            },
            &INTERFACE_SERVICES,
            true,
        );
        let json: serde_json::Value = serde_json::from_str(&t.to_json()).unwrap();
        let resources = json["Resources"].as_object().unwrap();
        assert_eq!(resources["Vpc"]["Properties"]["EnableDnsHostnames"], true);
        assert!(resources.contains_key("SubnetA") && resources.contains_key("SubnetB"));
        assert!(!resources.values().any(
            |r| r["Type"] == "AWS::EC2::InternetGateway" || r["Type"] == "AWS::EC2::NatGateway"
        ));
        assert_eq!(
            resources
                .values()
                .filter(|r| r["Type"] == "AWS::EC2::VPCEndpoint")
                .count(),
            10
        );
        assert!(json["Outputs"]["SubnetIds"].is_object());
        assert_eq!(
            resources["SubnetB"]["Properties"]["CidrBlock"],
            "10.0.16.0/20"
        );
        assert_eq!(
            resources["SubnetB"]["Properties"]["AvailabilityZone"],
            "us-east-1b"
        );
    }

    #[test]
    fn splits_cidrs() {
        assert_eq!(
            split_cidr("10.0.0.0/16").unwrap(),
            ["10.0.0.0/20".to_owned(), "10.0.16.0/20".to_owned()]
        );
        assert_eq!(
            split_cidr("172.16.5.0/24").unwrap(),
            ["172.16.5.0/28".to_owned(), "172.16.5.16/28".to_owned()]
        );
        assert!(split_cidr("10.0.0.0/27").is_none());
        assert!(split_cidr("10.0.0/16").is_none());
        assert!(split_cidr("nonsense").is_none());
    }
}
