//! Retrying transient failures with exponential backoff, honouring a server's `Retry-After`.

use std::future::Future;
use std::time::Duration;

use crate::error::Result;

/// How often and how patiently to retry.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// The longest `Retry-After` we are willing to wait.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 5,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based), unless the server said otherwise.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_retry_after);
        }
        let backoff = self.first_delay.saturating_mul(1 << attempt.min(16));
        // A little jitter so concurrent retries do not arrive together.
        let jitter = Duration::from_millis(u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_millis() % 100)
                .unwrap_or(0),
        ));
        backoff.min(self.max_delay) + jitter
    }

    /// Runs `op` until it succeeds, fails permanently, or runs out of retries.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if e.is_transient() && attempt < self.retries => {
                    tokio::time::sleep(self.delay(attempt, e.retry_after())).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn transient() -> Error {
        Error::Http {
            what: "x".into(),
            message: "503".into(),
            status: Some(503),
            transient: true,
            retry_after: Some(Duration::from_millis(1)),
        }
    }

    #[tokio::test]
    async fn retries_transient_then_gives_up() {
        let policy = RetryPolicy {
            retries: 2,
            ..RetryPolicy::default()
        };
        let mut calls = 0;
        let result: Result<()> = policy
            .run(|| {
                calls += 1;
                async { Err(transient()) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let mut calls = 0;
        let result: Result<()> = RetryPolicy::default()
            .run(|| {
                calls += 1;
                async { Err(Error::invalid("bad")) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }

    #[test]
    fn retry_after_is_capped_and_backoff_grows() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(999))),
            p.max_retry_after
        );
        assert!(p.delay(3, None) >= Duration::from_secs(2));
        assert!(p.delay(30, None) <= p.max_delay + Duration::from_millis(100));
    }
}
