//! Which AWS endpoints this host can reach: DNS, then a TCP connection, each bounded, with
//! one line per endpoint. Inside a VPC without internet these fail until the VPC endpoints
//! (or the installer's own network path) exist.

use std::time::Duration;

use serde::Serialize;

const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, Serialize)]
pub struct Reachability {
    pub service: String,
    pub host: String,
    pub port: u16,
    pub reachable: bool,
    /// The address connected to, or why not.
    pub detail: String,
}

impl std::fmt::Display for Reachability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.reachable { "ok  " } else { "FAIL" };
        write!(
            f,
            "{verdict} {:<15} {}:{}  {}",
            self.service, self.host, self.port, self.detail
        )
    }
}

/// Splits `https://host[:port]/…` (or a bare host) into host and port.
pub fn host_port(endpoint: &str) -> (String, u16) {
    let default_port = if endpoint.starts_with("http://") {
        80
    } else {
        443
    };
    let rest = endpoint
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => {
            (host.to_owned(), port.parse().unwrap_or(default_port))
        }
        _ => (authority.to_owned(), default_port),
    }
}

/// Checks one endpoint.
pub async fn check(service: &str, endpoint: &str) -> Reachability {
    let (host, port) = host_port(endpoint);
    let mut result = Reachability {
        service: service.to_owned(),
        host: host.clone(),
        port,
        reachable: false,
        detail: String::new(),
    };
    let addresses =
        match tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((host.as_str(), port))).await {
            Ok(Ok(addresses)) => addresses.collect::<Vec<_>>(),
            Ok(Err(e)) => {
                result.detail = format!("DNS: {e}");
                return result;
            }
            Err(_) => {
                result.detail = "DNS: timed out".to_owned();
                return result;
            }
        };
    let Some(address) = addresses.first() else {
        result.detail = "DNS: no address".to_owned();
        return result;
    };
    match tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => {
            result.reachable = true;
            result.detail = address.ip().to_string();
        }
        Ok(Err(e)) => result.detail = format!("TCP to {}: {e}", address.ip()),
        Err(_) => result.detail = format!("TCP to {}: timed out", address.ip()),
    }
    result
}

/// The endpoints the installer needs in `region`, as this host would reach them: the
/// standard names, or the override in `AWS_ENDPOINT_URL[_SERVICE]`.
pub fn installer_endpoints(region: &str, ecr_registry: &str) -> Vec<(String, String)> {
    let services = [
        ("sts", "STS", format!("https://sts.{region}.amazonaws.com")),
        (
            "ecr.api",
            "ECR",
            format!("https://api.ecr.{region}.amazonaws.com"),
        ),
        ("ecr.dkr", "", format!("https://{ecr_registry}")),
        ("s3", "S3", format!("https://s3.{region}.amazonaws.com")),
        (
            "cloudformation",
            "CLOUDFORMATION",
            format!("https://cloudformation.{region}.amazonaws.com"),
        ),
        ("ec2", "EC2", format!("https://ec2.{region}.amazonaws.com")),
        (
            "logs",
            "CLOUDWATCH_LOGS",
            format!("https://logs.{region}.amazonaws.com"),
        ),
        // For waiting on the application: service stability and target health.
        ("ecs", "ECS", format!("https://ecs.{region}.amazonaws.com")),
        (
            "elasticloadbalancing",
            "ELASTIC_LOAD_BALANCING_V2",
            format!("https://elasticloadbalancing.{region}.amazonaws.com"),
        ),
    ];
    services
        .into_iter()
        .map(|(service, variable, standard)| {
            let overridden = (!variable.is_empty())
                .then(|| {
                    std::env::var(format!("AWS_ENDPOINT_URL_{variable}"))
                        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                        .ok()
                })
                .flatten();
            (service.to_owned(), overridden.unwrap_or(standard))
        })
        .collect()
}

/// Checks every endpoint concurrently.
pub async fn check_all(endpoints: &[(String, String)]) -> Vec<Reachability> {
    futures::future::join_all(
        endpoints
            .iter()
            .map(|(service, endpoint)| check(service, endpoint)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_endpoints() {
        assert_eq!(
            host_port("https://sts.us-east-1.amazonaws.com"),
            ("sts.us-east-1.amazonaws.com".into(), 443)
        );
        assert_eq!(
            host_port("http://127.0.0.1:5000/x"),
            ("127.0.0.1".into(), 5000)
        );
        assert_eq!(host_port("http://localhost"), ("localhost".into(), 80));
    }

    #[tokio::test]
    async fn reports_reachable_and_unreachable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ok = check("test", &format!("http://127.0.0.1:{port}")).await;
        assert!(ok.reachable, "{ok}");
        drop(listener);
        let closed = check("test", &format!("http://127.0.0.1:{port}")).await;
        assert!(
            !closed.reachable && closed.detail.contains("TCP"),
            "{closed}"
        );
        let nowhere = check("test", "https://no-such-host.invalid").await;
        assert!(
            !nowhere.reachable && nowhere.detail.starts_with("DNS"),
            "{nowhere}"
        );
    }
}
