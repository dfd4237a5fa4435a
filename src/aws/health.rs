//! Waiting for the application to answer: ECS services stable (running what they should,
//! one finished deployment) and every target group with healthy targets. Bounded, with a
//! progress line each round naming what is still missing.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::net::aws::sdk_error;
use crate::progress::Progress;

const POLL: Duration = Duration::from_secs(10);

/// A service as ECS reports it.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceState {
    pub name: String,
    pub desired: i32,
    pub running: i32,
    pub deployments: usize,
    pub rollout: String,
    /// The task definition the service runs (ARN).
    pub task_definition: String,
}

impl std::fmt::Display for ServiceState {
    /// `service api: 1/1 tasks running, 1 deployments, rollout COMPLETED`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "service {}: {}/{} tasks running, {} deployments, rollout {}",
            self.name,
            self.running,
            self.desired,
            self.deployments,
            if self.rollout.is_empty() {
                "unknown"
            } else {
                &self.rollout
            }
        )
    }
}

/// A target group's health.
#[derive(Clone, Debug, Serialize)]
pub struct TargetState {
    pub name: String,
    pub healthy: usize,
    /// `state (reason)` of every target that is not healthy.
    pub unhealthy: Vec<String>,
}

/// What is still missing; empty when everything is up.
pub fn missing(services: &[ServiceState], targets: &[TargetState]) -> Vec<String> {
    let mut missing = Vec::new();
    for s in services {
        if s.running < s.desired || s.deployments != 1 || s.rollout != "COMPLETED" {
            missing.push(s.to_string());
        }
    }
    for t in targets {
        if t.healthy == 0 || !t.unhealthy.is_empty() {
            missing.push(format!(
                "target group {}: {} healthy{}",
                t.name,
                t.healthy,
                if t.unhealthy.is_empty() {
                    String::new()
                } else {
                    format!(", not healthy: {}", t.unhealthy.join(", "))
                }
            ));
        }
    }
    missing
}

pub struct Health {
    ecs: aws_sdk_ecs::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
}

impl Health {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Health {
            ecs: aws_sdk_ecs::Client::new(config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(config),
        }
    }

    /// The DNS name of a load balancer, by ARN.
    pub async fn load_balancer_dns(&self, arn: &str) -> Result<Option<String>> {
        if arn.is_empty() {
            return Ok(None);
        }
        let out = self
            .elb
            .describe_load_balancers()
            .load_balancer_arns(arn)
            .send()
            .await
            .map_err(|e| sdk_error("ELB", "DescribeLoadBalancers", e))?;
        Ok(out
            .load_balancers()
            .first()
            .and_then(|lb| lb.dns_name())
            .map(str::to_owned))
    }

    pub async fn services(&self, cluster: &str, services: &[String]) -> Result<Vec<ServiceState>> {
        let out = self
            .ecs
            .describe_services()
            .cluster(cluster)
            .set_services(Some(services.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_error("ECS", "DescribeServices", e))?;
        Ok(out
            .services()
            .iter()
            .map(|s| ServiceState {
                name: s.service_name().unwrap_or_default().to_owned(),
                desired: s.desired_count(),
                running: s.running_count(),
                deployments: s.deployments().len(),
                rollout: s
                    .deployments()
                    .first()
                    .and_then(|d| d.rollout_state())
                    .map(|r| r.as_str().to_owned())
                    .unwrap_or_default(),
                task_definition: s.task_definition().unwrap_or_default().to_owned(),
            })
            .collect())
    }

    /// `(container, image)` of every container of a task definition
    /// (ECS DescribeTaskDefinition).
    pub async fn task_images(&self, task_definition: &str) -> Result<Vec<(String, String)>> {
        let out = self
            .ecs
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(|e| sdk_error("ECS", "DescribeTaskDefinition", e))?;
        Ok(out
            .task_definition()
            .map(|t| {
                t.container_definitions()
                    .iter()
                    .map(|c| {
                        (
                            c.name().unwrap_or_default().to_owned(),
                            c.image().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    pub async fn targets(&self, target_groups: &[String]) -> Result<Vec<TargetState>> {
        let mut states = Vec::new();
        for arn in target_groups {
            let out = self
                .elb
                .describe_target_health()
                .target_group_arn(arn)
                .send()
                .await
                .map_err(|e| sdk_error("ELB", "DescribeTargetHealth", e))?;
            let mut state = TargetState {
                name: arn
                    .rsplit_once(":targetgroup/")
                    .map(|(_, n)| n.split('/').next().unwrap_or(n).to_owned())
                    .unwrap_or_else(|| arn.clone()),
                healthy: 0,
                unhealthy: Vec::new(),
            };
            for description in out.target_health_descriptions() {
                let health = description.target_health();
                let value = health
                    .and_then(|h| h.state())
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default();
                if value == "healthy" {
                    state.healthy += 1;
                } else {
                    let target = description
                        .target()
                        .and_then(|t| t.id())
                        .unwrap_or_default();
                    let reason = health.and_then(|h| h.description()).unwrap_or_default();
                    state.unhealthy.push(format!("{target} {value} ({reason})"));
                }
            }
            states.push(state);
        }
        Ok(states)
    }

    /// Polls until nothing is missing or `limit` has passed.
    pub async fn wait(
        &self,
        cluster: &str,
        services: &[String],
        target_groups: &[String],
        limit: Duration,
        progress: &dyn Progress,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            let polled = async {
                Ok::<_, Error>((
                    self.services(cluster, services).await?,
                    self.targets(target_groups).await?,
                ))
            }
            .await;
            let missing = match polled {
                Ok((services_now, targets_now)) => missing(&services_now, &targets_now),
                // Throttling or a lost connection is no verdict on Dify: ask again next round.
                Err(e) if e.is_transient() => vec![format!("an answer from AWS ({e})")],
                Err(e) => return Err(e),
            };
            if missing.is_empty() {
                return Ok(());
            }
            let waited = started.elapsed();
            if waited >= limit {
                return Err(Error::invalid(format!(
                    "Dify is not healthy after {}s; still missing:\n  {}",
                    waited.as_secs(),
                    missing.join("\n  ")
                ))
                .with_hint("look at the ECS service events and the container logs (CloudWatch log groups /dify/<stack>/…), then run install again"));
            }
            progress.note(&format!(
                "waiting for Dify ({}s of at most {}s): {}",
                waited.as_secs(),
                limit.as_secs(),
                missing.join("; ")
            ));
            tokio::time::sleep(POLL.min(limit.saturating_sub(waited))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(running: i32, deployments: usize, rollout: &str) -> ServiceState {
        ServiceState {
            name: "api".into(),
            desired: 1,
            running,
            deployments,
            rollout: rollout.into(),
            task_definition: String::new(),
        }
    }

    #[test]
    fn healthy_only_when_everything_is_up() {
        let healthy = TargetState {
            name: "web".into(),
            healthy: 1,
            unhealthy: vec![],
        };
        assert!(
            missing(
                &[service(1, 1, "COMPLETED")],
                std::slice::from_ref(&healthy)
            )
            .is_empty()
        );
        let cases = [
            missing(
                &[service(0, 1, "IN_PROGRESS")],
                std::slice::from_ref(&healthy),
            ),
            missing(
                &[service(1, 2, "COMPLETED")],
                std::slice::from_ref(&healthy),
            ),
            missing(
                &[service(1, 1, "COMPLETED")],
                &[TargetState {
                    name: "web".into(),
                    healthy: 0,
                    unhealthy: vec![],
                }],
            ),
            missing(
                &[service(1, 1, "COMPLETED")],
                &[TargetState {
                    name: "web".into(),
                    healthy: 1,
                    unhealthy: vec!["10.0.0.5 unhealthy (Health checks failed)".into()],
                }],
            ),
        ];
        for case in &cases {
            assert_eq!(case.len(), 1, "{case:?}");
        }
        assert!(cases[0][0].contains("0/1 tasks running"));
        assert!(cases[3][0].contains("Health checks failed"));
    }
}
