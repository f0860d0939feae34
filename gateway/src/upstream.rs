//! Connections to model API upstreams: plain TCP or TLS (rustls, ring,
//! the system's roots plus `--upstream-ca-file`), HTTP/1.1 through hyper's
//! client connection, kept in a small idle pool per origin and handed back
//! only once a response body has been read to its end.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::Error;

/// Longest wait for a TCP connect or a TLS handshake upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a pooled connection to be ready for its next request.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
/// Most idle connections kept per origin.
const MAX_IDLE: usize = 256;

/// Where requests go: scheme, host and port.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Origin {
    /// https or http.
    pub tls: bool,
    /// The host (name or address literal, brackets stripped).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Origin {
    /// The origin of an upstream base URL, and its path (no trailing `/`).
    pub fn parse(url: &str) -> Option<(Origin, String)> {
        let uri: Uri = url.parse().ok()?;
        let tls = match uri.scheme_str()? {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let auth = uri.authority()?;
        if auth.as_str().contains('@') {
            return None;
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = uri.path().trim_end_matches('/').to_owned();
        Some((
            Origin {
                tls,
                host: host.to_owned(),
                port,
            },
            path,
        ))
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// The TLS settings for https upstreams: the system's roots, and the
/// certificates of `extra_ca` (a PEM bundle) when given.
pub fn tls_config(extra_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| Error::CaFile {
                path: path.to_owned(),
                reason: e.to_string(),
            })?
            .collect::<Result<_, _>>()
            .map_err(|e| Error::CaFile {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        for cert in certs {
            roots.add(cert).map_err(|e| Error::CaFile {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A connection borrowed from the pool; [`Pooled::release`] gives it back.
pub struct Pooled {
    pool: Arc<Upstreams>,
    origin: Origin,
    sender: SendRequest<Full<Bytes>>,
}

impl Pooled {
    /// Returns the connection to the pool (its last response was read whole).
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = self.pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(self.origin).or_default();
        if list.len() < MAX_IDLE {
            list.push(self.sender);
        }
    }
}

/// The upstream client: TLS settings and idle connections.
pub struct Upstreams {
    tls: Arc<rustls::ClientConfig>,
    idle: Mutex<HashMap<Origin, Vec<SendRequest<Full<Bytes>>>>>,
}

impl Upstreams {
    /// A client with these TLS settings.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Arc<Self> {
        Arc::new(Self {
            tls,
            idle: Mutex::new(HashMap::new()),
        })
    }

    fn take_idle(&self, origin: &Origin) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(origin)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    async fn connect(&self, origin: &Origin) -> Result<SendRequest<Full<Bytes>>, Error> {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((origin.host.as_str(), origin.port)),
        )
        .await
        .map_err(|_| Error::Upstream("connect timed out".into()))?
        .map_err(|e| Error::Upstream(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        if origin.tls {
            let name = ServerName::try_from(origin.host.clone())
                .map_err(|_| Error::Upstream("not a TLS server name".into()))?;
            let tls = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp),
            )
            .await
            .map_err(|_| Error::Upstream("TLS handshake timed out".into()))?
            .map_err(|e| Error::Upstream(format!("TLS: {e}")))?;
            handshake(tls).await
        } else {
            handshake(tcp).await
        }
    }

    /// Sends `req` to `origin` on an idle or new connection.
    pub async fn send(
        self: &Arc<Self>,
        origin: &Origin,
        req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Pooled), Error> {
        // An idle connection the server closed meanwhile fails before the
        // request is written; the request is then sent on a new connection.
        let mut req = req;
        while let Some(mut sender) = self.take_idle(origin) {
            // A pooled connection has read its last response whole; ready()
            // returns once its dispatcher has seen that too (at once, or
            // with an error when the server closed it meanwhile).
            if !matches!(
                tokio::time::timeout(READY_TIMEOUT, sender.ready()).await,
                Ok(Ok(()))
            ) {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.pooled(origin, sender))),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(Error::Upstream(format!("request: {}", e.into_error()))),
                },
            }
        }
        self.send_new(origin, req).await
    }

    async fn send_new(
        self: &Arc<Self>,
        origin: &Origin,
        req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Pooled), Error> {
        let mut sender = self.connect(origin).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Error::Upstream(format!("request: {e}")))?;
        Ok((resp, self.pooled(origin, sender)))
    }

    fn pooled(self: &Arc<Self>, origin: &Origin, sender: SendRequest<Full<Bytes>>) -> Pooled {
        Pooled {
            pool: self.clone(),
            origin: origin.clone(),
            sender,
        }
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| Error::Upstream(format!("handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_give_origin_and_path() {
        let (o, p) = Origin::parse("https://api.anthropic.com").unwrap_or_else(|| panic!());
        assert_eq!(
            (o.tls, o.host.as_str(), o.port, p.as_str()),
            (true, "api.anthropic.com", 443, "")
        );
        assert_eq!(o.host_header(), "api.anthropic.com");
        let (o, p) =
            Origin::parse("http://127.0.0.1:8080/s/implementer-happy/").unwrap_or_else(|| panic!());
        assert_eq!(
            (o.tls, o.port, p.as_str()),
            (false, 8080, "/s/implementer-happy")
        );
        assert_eq!(o.host_header(), "127.0.0.1:8080");
        let (o, _) = Origin::parse("http://[::1]:81").unwrap_or_else(|| panic!());
        assert_eq!(o.host, "::1");
        assert_eq!(o.host_header(), "[::1]:81");
        assert!(Origin::parse("ftp://x").is_none());
        assert!(Origin::parse("http://user:pw@x").is_none());
    }
}
