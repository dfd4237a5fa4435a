//! A fault-injecting HTTP proxy in front of a real registry, for the failures a real server
//! will not produce on demand: 429 with Retry-After, 5xx, bodies cut short, stalls. It also
//! records every request (method, path, Range) so tests can see what crossed the wire.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds, if given) instead of forwarding.
    Status(u16, Option<u64>),
    /// Forward, but close the connection after half the body.
    Truncate,
    /// Forward half the body, then hang.
    Stall,
}

#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
}

#[derive(Default)]
struct State {
    faults: Vec<(String, Fault, usize)>,
    log: Vec<Logged>,
}

pub struct Proxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let state = shared.clone();
                let client = client.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let _ = handle(socket, state, client, upstream).await;
                });
            }
        });
        Proxy { port, state }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The next `times` requests whose path contains `path_contains` get `fault`.
    pub fn inject(&self, path_contains: &str, fault: Fault, times: usize) {
        self.state.lock().expect("proxy state").faults.push((
            path_contains.to_owned(),
            fault,
            times,
        ));
    }

    pub fn clear_faults(&self) {
        self.state.lock().expect("proxy state").faults.clear();
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.state.lock().expect("proxy state").log.clone()
    }
}

async fn handle(
    mut socket: TcpStream,
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
    upstream: String,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = buf[header_end..].to_vec();
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let fault = {
        let mut state = state.lock().expect("proxy state");
        state.log.push(Logged {
            method: method.clone(),
            path: path.clone(),
            range: header("range"),
        });
        let found = state
            .faults
            .iter_mut()
            .find(|(pattern, _, left)| *left > 0 && path.contains(pattern.as_str()));
        found.map(|(_, fault, left)| {
            *left -= 1;
            fault.clone()
        })
    };
    if let Some(Fault::Status(code, retry_after)) = &fault {
        let mut response =
            format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n");
        if let Some(seconds) = retry_after {
            response.push_str(&format!("Retry-After: {seconds}\r\n"));
        }
        response.push_str("\r\n");
        socket.write_all(response.as_bytes()).await?;
        return Ok(());
    }
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = client.request(method.clone(), format!("http://{upstream}{path}"));
    for (k, v) in &headers {
        if !["host", "connection", "content-length"].contains(&k.to_ascii_lowercase().as_str()) {
            request = request.header(k, v);
        }
    }
    let response = match request.body(body).send().await {
        Ok(r) => r,
        Err(_) => {
            socket
                .write_all(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await?;
            return Ok(());
        }
    };
    let status = response.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let upstream_length = response.content_length();
    for (k, v) in response.headers() {
        let k = k.as_str();
        if !["transfer-encoding", "connection", "content-length"].contains(&k) {
            out.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or_default()));
        }
    }
    let bytes = response.bytes().await.unwrap_or_default();
    let length = if method == reqwest::Method::HEAD {
        upstream_length.unwrap_or(0) as usize
    } else {
        bytes.len()
    };
    out.push_str(&format!(
        "Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ));
    socket.write_all(out.as_bytes()).await?;
    match fault {
        Some(Fault::Truncate) => {
            socket.write_all(&bytes[..bytes.len() / 2]).await?;
            socket.flush().await?;
        }
        Some(Fault::Stall) => {
            socket.write_all(&bytes[..bytes.len() / 2]).await?;
            socket.flush().await?;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        _ => socket.write_all(&bytes).await?,
    }
    socket.shutdown().await
}
