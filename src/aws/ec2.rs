//! What the VPC already has: its CIDR, the route tables of the chosen subnets, and the VPC
//! endpoints that exist (a second interface endpoint with private DNS for the same service
//! would fail, so those are skipped).

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::Filter;

use crate::error::{Error, Result};
use crate::net::aws::sdk_error;

pub struct Ec2 {
    client: Client,
}

impl Ec2 {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Ec2 {
            client: Client::new(config),
        }
    }

    pub async fn vpc_cidr(&self, vpc_id: &str) -> Result<String> {
        let out = self
            .client
            .describe_vpcs()
            .vpc_ids(vpc_id)
            .send()
            .await
            .map_err(|e| sdk_error("EC2", "DescribeVpcs", e))?;
        out.vpcs()
            .first()
            .and_then(|v| v.cidr_block())
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::invalid(format!("VPC {vpc_id} not found in this account and region"))
            })
    }

    /// The first two available availability zones of the region.
    pub async fn two_zones(&self) -> Result<[String; 2]> {
        let out = self
            .client
            .describe_availability_zones()
            .send()
            .await
            .map_err(|e| sdk_error("EC2", "DescribeAvailabilityZones", e))?;
        let mut zones: Vec<String> = out
            .availability_zones()
            .iter()
            .filter(|z| z.state().map(|s| s.as_str()) == Some("available"))
            .filter_map(|z| z.zone_name().map(str::to_owned))
            .collect();
        zones.sort();
        match zones.as_slice() {
            [a, b, ..] => Ok([a.clone(), b.clone()]),
            _ => Err(Error::invalid(
                "the region has fewer than two available availability zones",
            )),
        }
    }

    /// The route tables the subnets use (their own, or the VPC's main table).
    pub async fn route_tables(&self, vpc_id: &str, subnet_ids: &[String]) -> Result<Vec<String>> {
        let out = self
            .client
            .describe_route_tables()
            .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
            .send()
            .await
            .map_err(|e| sdk_error("EC2", "DescribeRouteTables", e))?;
        let mut tables = Vec::new();
        let mut main = None;
        let mut unassociated = subnet_ids.to_vec();
        for table in out.route_tables() {
            let Some(id) = table.route_table_id() else {
                continue;
            };
            for association in table.associations() {
                if association.main() == Some(true) {
                    main = Some(id.to_owned());
                }
                if let Some(subnet) = association.subnet_id()
                    && subnet_ids.iter().any(|s| s == subnet)
                {
                    unassociated.retain(|s| s != subnet);
                    if !tables.iter().any(|t| t == id) {
                        tables.push(id.to_owned());
                    }
                }
            }
        }
        if !unassociated.is_empty() {
            match main {
                Some(main) if !tables.contains(&main) => tables.push(main),
                Some(_) => {}
                None => {
                    return Err(Error::invalid(format!(
                        "no route table found for subnets {} in {vpc_id}",
                        unassociated.join(", ")
                    )));
                }
            }
        }
        tables.sort();
        Ok(tables)
    }

    /// Short service names (`ecr.api`, `s3`) of the endpoints that exist in the VPC and are
    /// not being deleted.
    pub async fn existing_endpoints(&self, vpc_id: &str, region: &str) -> Result<Vec<String>> {
        let out = self
            .client
            .describe_vpc_endpoints()
            .filters(Filter::builder().name("vpc-id").values(vpc_id).build())
            .send()
            .await
            .map_err(|e| sdk_error("EC2", "DescribeVpcEndpoints", e))?;
        let prefix = format!("com.amazonaws.{region}.");
        let mut services: Vec<String> = out
            .vpc_endpoints()
            .iter()
            .filter(|e| {
                // The SDK does not know every state name; compare the text.
                let state = e
                    .state()
                    .map(|s| s.as_str().to_ascii_lowercase())
                    .unwrap_or_default();
                !matches!(
                    state.as_str(),
                    "deleted" | "deleting" | "failed" | "rejected" | "expired"
                )
            })
            .filter_map(|e| e.service_name())
            .filter_map(|name| name.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        services.sort();
        services.dedup();
        Ok(services)
    }
}
