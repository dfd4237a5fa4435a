//! HTTP as every client of the tool speaks it: one client builder, and the errors a
//! response or a broken connection becomes (transient or not, with `Retry-After`). Registries,
//! package indexes, the plugin marketplace and Dify's console all go through here.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{self, HeaderMap};
use reqwest::{Response, StatusCode};

use crate::error::{Error, Result};

/// An HTTP client for plain web servers (package indexes, the marketplace, Dify itself):
/// our user agent, a 20 s connect timeout, and `read_timeout` between bytes.
pub fn client(read_timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("dify-bundle/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(20))
        .read_timeout(read_timeout)
        .build()
        .map_err(|e| Error::invalid(format!("cannot set up the HTTP client: {e}")))
}

/// Describes a transport error with its causes (`connection refused`, `timed out`, …).
pub fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut message = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

pub fn transport_error(what: &str, e: &reqwest::Error) -> Error {
    Error::Http {
        what: what.to_owned(),
        message: describe_reqwest(e),
        status: None,
        transient: true,
        retry_after: None,
    }
}

pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Turns an unsuccessful response into an error that says what the server (`service`:
/// "registry", "marketplace", …) said.
pub async fn status_error(what: &str, service: &str, response: Response) -> Error {
    let status = response.status();
    let wait = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    let detail: String = body.chars().take(300).collect();
    let detail = detail.trim();
    let message = if detail.is_empty() {
        format!("{service} answered {status}")
    } else {
        format!("{service} answered {status}: {detail}")
    };
    match status {
        StatusCode::NOT_FOUND => Error::NotFound {
            what: what.to_owned(),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Auth {
            what: what.to_owned(),
            message,
        },
        s => Error::Http {
            what: what.to_owned(),
            message,
            status: Some(s.as_u16()),
            transient: s == StatusCode::TOO_MANY_REQUESTS
                || s == StatusCode::REQUEST_TIMEOUT
                || s.is_server_error(),
            retry_after: wait,
        },
    }
}

/// A response body as a blob stream whose failures say the connection was lost.
pub fn body_stream(response: Response, what: String) -> BoxStream<'static, Result<Bytes>> {
    response
        .bytes_stream()
        .map_err(move |e| Error::connection_lost(what.clone(), describe_reqwest(&e)))
        .boxed()
}
