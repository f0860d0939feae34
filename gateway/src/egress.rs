//! The egress proxy: the only way out of a task pod. HTTP CONNECT and
//! absolute-form plain HTTP, to host names the phase's rules list, at
//! addresses the gateway resolved itself and found allowed.
//!
//! ```text
//!   CONNECT host:port / GET http://host/…   Proxy-Authorization: Basic hermes:<credential>
//!     grant (any phase, live) → rules of (task, phase) → a name, listed
//!     → resolve once; every address allowed → connect to the first
//!     CONNECT: 200, sniff the ClientHello: SNI ≠ host → close; relay both ways
//!     HTTP:    origin-form to that address, Host kept, Proxy-* dropped
//!   one log line per connection at its end; metrics by phase/outcome/reason
//! ```

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hermes_crds::hosts::{allowed, canonical_host};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth::{Refusal, proxy_credential};
use crate::model::strip_hop_by_hop;
use crate::policy::effective_hosts;
use crate::server::{Body, Gateway, full};
use crate::sni::{MAX_HELLO, Sniff, sniff};

/// How long the first bytes of a tunnel are waited for before a client
/// that does not speak first (a server-first protocol) is let through.
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the destination's TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection was refused (bounded; the log and metric reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No `Proxy-Authorization`.
    NoCredential,
    /// A credential that does not verify.
    BadCredential,
    /// The credential's phase is not running.
    PhaseEnded,
    /// The host is not in the phase's rules (or the port is not).
    NotListed,
    /// The target is an address, not a name.
    AddressLiteral,
    /// The name resolves to a refused address.
    DeniedAddress,
    /// The name does not resolve.
    Unresolvable,
    /// The TLS server name is not the CONNECT host (or cannot be read).
    SniMismatch,
    /// The destination did not accept the connection.
    ConnectFailed,
}

impl Reason {
    /// The reason as logs and metrics say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoCredential => "no-credential",
            Reason::BadCredential => "bad-credential",
            Reason::PhaseEnded => "phase-ended",
            Reason::NotListed => "not-listed",
            Reason::AddressLiteral => "address-literal",
            Reason::DeniedAddress => "denied-address",
            Reason::Unresolvable => "unresolvable",
            Reason::SniMismatch => "sni-mismatch",
            Reason::ConnectFailed => "connect-failed",
        }
    }

    fn from_refusal(r: Refusal) -> Self {
        match r {
            Refusal::NoCredential => Reason::NoCredential,
            Refusal::BadCredential => Reason::BadCredential,
            Refusal::PhaseEnded => Reason::PhaseEnded,
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Reason::NoCredential | Reason::BadCredential => {
                StatusCode::PROXY_AUTHENTICATION_REQUIRED
            }
            Reason::Unresolvable | Reason::ConnectFailed => StatusCode::BAD_GATEWAY,
            _ => StatusCode::FORBIDDEN,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Reason::NoCredential => "Hermes egress proxy: a credential is required",
            Reason::BadCredential => "Hermes egress proxy: the credential is not valid",
            Reason::PhaseEnded => "Hermes egress proxy: the credential's task phase is not running",
            Reason::NotListed => {
                "Hermes egress proxy: the host (or port) is not in this phase's allowlist"
            }
            Reason::AddressLiteral => {
                "Hermes egress proxy: only host names are allowed, not addresses"
            }
            Reason::DeniedAddress => {
                "Hermes egress proxy: the host resolves to an address that is refused"
            }
            Reason::Unresolvable => "Hermes egress proxy: the host does not resolve",
            Reason::SniMismatch => {
                "Hermes egress proxy: the TLS server name is not the host connected to"
            }
            Reason::ConnectFailed => "Hermes egress proxy: the host did not accept the connection",
        }
    }
}

/// One connection's record, logged (and counted) once when it is dropped.
struct Tally {
    gw: Arc<Gateway>,
    kind: &'static str,
    namespace: String,
    task: String,
    phase: &'static str,
    host: String,
    port: u16,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
    refused: Option<Reason>,
    start: Instant,
}

impl Tally {
    fn refuse(mut self, reason: Reason) -> Response<Body> {
        self.refused = Some(reason);
        let mut resp = Response::new(full(format!("{}\n", reason.message())));
        *resp.status_mut() = reason.status();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        if reason.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            resp.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"hermes\""),
            );
        }
        resp
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let up = self.up.load(Ordering::Relaxed);
        let down = self.down.load(Ordering::Relaxed);
        let (outcome, reason) = match self.refused {
            Some(r) => ("refused", r.as_str()),
            None => ("allowed", "none"),
        };
        tracing::info!(
            kind = self.kind,
            namespace = %self.namespace,
            task = %self.task,
            phase = self.phase,
            host = %self.host,
            port = self.port,
            bytes_up = up,
            bytes_down = down,
            outcome,
            reason,
            millis = self.start.elapsed().as_millis() as u64,
            "egress"
        );
        let m = &self.gw.metrics;
        m.egress_connections
            .get_or_create(&crate::metrics::ConnLabels {
                phase: self.phase,
                outcome,
                reason,
            })
            .inc();
        for (direction, n) in [("up", up), ("down", down)] {
            if n > 0 {
                m.egress_bytes
                    .get_or_create(&crate::metrics::BytesLabels {
                        phase: self.phase,
                        direction,
                    })
                    .inc_by(n);
            }
        }
    }
}

/// Whether a request target's host is an address rather than a name.
fn is_address(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok()
        || host.starts_with('[')
        || host
            .trim_end_matches('.')
            .rsplit('.')
            .next()
            .is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
}

/// Serves one proxy request.
pub async fn handle(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let connect = req.method() == Method::CONNECT;
    let target = if connect {
        req.uri()
            .authority()
            .and_then(|a| a.port_u16().map(|p| (a.host().to_owned(), p)))
    } else if req.uri().scheme_str() == Some("http") {
        req.uri()
            .authority()
            .map(|a| (a.host().to_owned(), a.port_u16().unwrap_or(80)))
    } else {
        None
    };
    let Some((host, port)) = target else {
        let mut resp = Response::new(full(
            "Hermes egress proxy: send CONNECT host:port, or an absolute http:// URL\n",
        ));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(resp);
    };
    let tally = Tally {
        gw: gw.clone(),
        kind: if connect { "connect" } else { "http" },
        namespace: String::new(),
        task: String::new(),
        phase: "none",
        host: host.chars().take(256).collect(),
        port,
        up: Arc::default(),
        down: Arc::default(),
        refused: None,
        start: Instant::now(),
    };
    let token = match proxy_credential(req.headers()) {
        Ok(t) => t,
        Err(()) => return Ok(tally.refuse(Reason::BadCredential)),
    };
    let grant = match gw.auth.authorize(token.as_deref()).await {
        Ok(g) => g,
        Err(r) => return Ok(tally.refuse(Reason::from_refusal(r))),
    };
    let mut tally = tally;
    tally.namespace = grant.claims.namespace.clone();
    tally.task = grant.claims.task.clone();
    tally.phase = grant.claims.phase.as_str();

    if is_address(&host) {
        return Ok(tally.refuse(Reason::AddressLiteral));
    }
    let Some(name) = canonical_host(&host) else {
        return Ok(tally.refuse(Reason::NotListed));
    };
    let profile = gw
        .directory
        .profile(&grant.claims.namespace, &grant.task.spec.profile.0);
    let (rules, allow_private) = match &profile {
        Some(p) => (
            effective_hosts(&p.spec, &grant.task.spec, grant.claims.phase),
            p.spec
                .egress
                .hosts
                .allow_private
                .iter()
                .filter_map(|c| c.0.parse::<IpNet>().ok())
                .collect::<Vec<_>>(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    if !allowed(&rules, &name, port) {
        return Ok(tally.refuse(Reason::NotListed));
    }
    let addrs: Vec<SocketAddr> = match gw.resolver.resolve(&name, port).await {
        Ok(a) if !a.is_empty() => a,
        _ => return Ok(tally.refuse(Reason::Unresolvable)),
    };
    if let Some((addr, why)) = addrs
        .iter()
        .find_map(|a| gw.deny.check(a.ip(), &allow_private).map(|w| (a, w)))
    {
        tracing::debug!(%addr, why = why.as_str(), "egress address refused");
        return Ok(tally.refuse(Reason::DeniedAddress));
    }
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addrs[0])).await {
        Ok(Ok(s)) => s,
        _ => return Ok(tally.refuse(Reason::ConnectFailed)),
    };
    let _ = stream.set_nodelay(true);

    if connect {
        let upgrade = hyper::upgrade::on(req);
        tokio::spawn(tunnel(upgrade, stream, tally, name));
        let mut resp = Response::new(full(Bytes::new()));
        resp.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(
                b"Connection established",
            ));
        return Ok(resp);
    }
    Ok(forward(req, stream, tally).await)
}

async fn forward(req: Request<Incoming>, stream: TcpStream, tally: Tally) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let host_header = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    strip_hop_by_hop(&mut parts.headers);
    let Ok(host) = HeaderValue::from_str(&host_header) else {
        return tally.refuse(Reason::NotListed);
    };
    parts.headers.insert(header::HOST, host);
    let Ok(uri) = path.parse() else {
        return tally.refuse(Reason::NotListed);
    };
    parts.uri = uri;
    let up_body = Counted {
        inner: body,
        bytes: tally.up.clone(),
        tally: None,
    };
    let request = Request::from_parts(parts, up_body);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(_) => return tally.refuse(Reason::ConnectFailed),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = match sender.send_request(request).await {
        Ok(r) => r,
        Err(_) => return tally.refuse(Reason::ConnectFailed),
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let down = tally.down.clone();
    let body = Counted {
        inner: body,
        bytes: down,
        tally: Some(tally),
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// A body passed through, its bytes counted; the tally (if held) is logged
/// when the body is done.
struct Counted {
    inner: Incoming,
    bytes: Arc<AtomicU64>,
    tally: Option<Tally>,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                if this.inner.is_end_stream() {
                    this.tally.take();
                }
            }
            Poll::Ready(_) => {
                this.tally.take();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

async fn copy_counted<R, W>(mut from: R, mut to: W, bytes: &AtomicU64)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }
    let _ = to.shutdown().await;
}

/// What the first bytes of a tunnel allow.
enum Verdict {
    Pass,
    Refuse,
}

fn judge_sni(buf: &[u8], host: &str) -> Option<Verdict> {
    match sniff(buf) {
        Sniff::NotTls => Some(Verdict::Pass),
        Sniff::Incomplete if buf.len() < MAX_HELLO => None,
        Sniff::Incomplete | Sniff::Malformed => Some(Verdict::Refuse),
        Sniff::ClientHello { sni: None } => Some(Verdict::Pass),
        Sniff::ClientHello { sni: Some(name) } => {
            if canonical_host(&name).as_deref() == Some(host) {
                Some(Verdict::Pass)
            } else {
                Some(Verdict::Refuse)
            }
        }
    }
}

async fn tunnel(
    upgrade: hyper::upgrade::OnUpgrade,
    upstream: TcpStream,
    mut tally: Tally,
    host: String,
) {
    let Ok(upgraded) = upgrade.await else {
        return;
    };
    let (mut client_read, client_write) = tokio::io::split(TokioIo::new(upgraded));
    let (upstream_read, mut upstream_write) = upstream.into_split();
    let down_bytes = tally.down.clone();
    // The destination may speak first: its bytes flow while the client's
    // first bytes are judged.
    let down = tokio::spawn(async move {
        copy_counted(upstream_read, client_write, &down_bytes).await;
    });
    let mut buf = Vec::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + SNIFF_TIMEOUT;
    let mut chunk = vec![0u8; 16 * 1024];
    let verdict = loop {
        if !buf.is_empty()
            && let Some(v) = judge_sni(&buf, &host)
        {
            break v;
        }
        match tokio::time::timeout_at(deadline, client_read.read(&mut chunk)).await {
            // Nothing sent in time: a protocol where the server speaks first.
            Err(_) if buf.is_empty() => break Verdict::Pass,
            // A TLS handshake that never completed: its name is unknown.
            Err(_) => break Verdict::Refuse,
            Ok(Ok(0)) | Ok(Err(_)) => {
                if buf.is_empty() {
                    let _ = upstream_write.shutdown().await;
                    let _ = down.await;
                    return;
                }
                break judge_sni(&buf, &host).unwrap_or(Verdict::Refuse);
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    if let Verdict::Refuse = verdict {
        down.abort();
        tally.refused = Some(Reason::SniMismatch);
        return;
    }
    if !buf.is_empty() {
        if upstream_write.write_all(&buf).await.is_err() {
            down.abort();
            return;
        }
        tally.up.fetch_add(buf.len() as u64, Ordering::Relaxed);
    }
    let up_bytes = tally.up.clone();
    copy_counted(client_read, upstream_write, &up_bytes).await;
    let _ = down.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sni::client_hello;

    #[test]
    fn address_targets_are_told_from_names() {
        for a in [
            "10.0.0.1",
            "[::1]",
            "::1",
            "127.1",
            "2130706433",
            "1.2.3.4.",
        ] {
            assert!(is_address(a), "{a}");
        }
        for n in ["github.com", "a1.example", "0x7f.example", "localhost"] {
            assert!(!is_address(n), "{n}");
        }
    }

    #[test]
    fn the_server_name_must_be_the_connect_host() {
        let ok = client_hello(Some("Registry.NPMJS.org."), 16384);
        assert!(matches!(
            judge_sni(&ok, "registry.npmjs.org"),
            Some(Verdict::Pass)
        ));
        let other = client_hello(Some("evil.com"), 16384);
        assert!(matches!(
            judge_sni(&other, "registry.npmjs.org"),
            Some(Verdict::Refuse)
        ));
        let none = client_hello(None, 16384);
        assert!(matches!(
            judge_sni(&none, "registry.npmjs.org"),
            Some(Verdict::Pass)
        ));
        assert!(judge_sni(&ok[..20], "registry.npmjs.org").is_none());
        assert!(matches!(
            judge_sni(b"SSH-2.0-x\r\n", "github.com"),
            Some(Verdict::Pass)
        ));
        let addr = client_hello(Some("10.0.0.1"), 16384);
        assert!(matches!(
            judge_sni(&addr, "github.com"),
            Some(Verdict::Refuse)
        ));
    }
}
