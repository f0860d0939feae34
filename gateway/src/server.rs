//! The gateway's shared state and its three listeners: the model API, the
//! egress proxy and the admin endpoints (probes, metrics, `/v1/usage`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::addr::DenySet;
use crate::auth::Authorizer;
use crate::directory::{Directory, Resolver, SystemResolver};
use crate::keys::{Credentials, KeySource};
use crate::meter::Meters;
use crate::metrics::Metrics;
use crate::upstream::Upstreams;

/// The body of every response the gateway sends.
pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// A whole body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// What a gateway is built from.
pub struct Settings {
    /// The signing key.
    pub keys: KeySource,
    /// The model credentials.
    pub credentials: Credentials,
    /// Tasks and profiles.
    pub directory: Arc<dyn Directory>,
    /// Host names to addresses (egress).
    pub resolver: Arc<dyn Resolver>,
    /// Addresses refused (egress).
    pub deny: DenySet,
    /// TLS settings of https upstreams.
    pub tls: Arc<rustls::ClientConfig>,
    /// This instance's id; `None`: 96 random bits, hex.
    pub instance: Option<String>,
}

impl Settings {
    /// Settings with the system resolver, no model credentials, no extra
    /// denied ranges and the system's TLS roots.
    pub fn new(keys: KeySource, directory: Arc<dyn Directory>) -> Result<Self, crate::Error> {
        Ok(Self {
            keys,
            credentials: Credentials::new(None),
            directory,
            resolver: Arc::new(SystemResolver),
            deny: DenySet::default(),
            tls: crate::upstream::tls_config(None)?,
            instance: None,
        })
    }
}

/// 96 random bits, hex.
pub fn random_instance() -> Result<String, crate::Error> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 12];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| crate::Error::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The running gateway's state, shared by every connection.
pub struct Gateway {
    /// This instance's id (in every usage report).
    pub instance: String,
    pub(crate) auth: Authorizer,
    pub(crate) directory: Arc<dyn Directory>,
    pub(crate) resolver: Arc<dyn Resolver>,
    pub(crate) credentials: Credentials,
    pub(crate) deny: DenySet,
    /// The counters.
    pub meters: Meters,
    /// The metrics.
    pub metrics: Metrics,
    pub(crate) upstreams: Arc<Upstreams>,
}

impl Gateway {
    /// A gateway from its settings.
    pub fn new(s: Settings) -> Result<Arc<Self>, crate::Error> {
        let instance = match s.instance {
            Some(i) => i,
            None => random_instance()?,
        };
        Ok(Arc::new(Self {
            instance,
            auth: Authorizer::new(s.keys, s.directory.clone()),
            directory: s.directory,
            resolver: s.resolver,
            credentials: s.credentials,
            deny: s.deny,
            meters: Meters::default(),
            metrics: Metrics::default(),
            upstreams: Upstreams::new(s.tls),
        }))
    }

    /// Whether the gateway can serve: the key loaded and the caches synced.
    pub fn ready(&self) -> bool {
        self.auth.keys().current().is_some() && self.directory.ready()
    }

    /// Serves the model API on `listener` until the process ends.
    pub async fn serve_model(self: Arc<Self>, listener: TcpListener) {
        serve(listener, self, false, |gw, req| {
            crate::model::handle(gw, req)
        })
        .await
    }

    /// Serves the egress proxy on `listener`.
    pub async fn serve_proxy(self: Arc<Self>, listener: TcpListener) {
        serve(listener, self, true, |gw, req| {
            crate::egress::handle(gw, req)
        })
        .await
    }

    /// Serves the admin endpoints on `listener`.
    pub async fn serve_admin(self: Arc<Self>, listener: TcpListener) {
        serve(listener, self, false, admin).await
    }

    /// Drops, every minute, the counters of tasks ended or gone and idle
    /// for ten minutes.
    pub async fn evict_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let dir = self.directory.clone();
            let n = self.meters.evict(Instant::now(), |ns, task, uid| {
                !crate::policy::ended(dir.task(ns, task).as_deref(), uid)
            });
            if n > 0 {
                tracing::info!(evicted = n, "usage counters of ended tasks dropped");
            }
        }
    }
}

async fn serve<F, Fut>(listener: TcpListener, gw: Arc<Gateway>, upgrades: bool, handler: F)
where
    F: Fn(Arc<Gateway>, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gw = gw.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handler(gw.clone(), req));
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30));
            let io = TokioIo::new(stream);
            let result = if upgrades {
                builder.serve_connection(io, service).with_upgrades().await
            } else {
                builder.serve_connection(io, service).await
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>, kind: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    resp
}

async fn admin(gw: Arc<Gateway>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET only\n",
            "text/plain",
        ));
    }
    Ok(match path {
        "/healthz" => text(StatusCode::OK, "ok\n", "text/plain"),
        "/readyz" if gw.ready() => text(StatusCode::OK, "ok\n", "text/plain"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n", "text/plain"),
        "/metrics" => text(
            StatusCode::OK,
            gw.metrics.render(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        "/v1/usage" => usage(&gw, &req),
        _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
    })
}

fn usage(gw: &Gateway, req: &Request<Incoming>) -> Response<Body> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let key = gw.auth.keys().current();
    let allowed = match (key, token) {
        (Some(k), Some(t)) => k.is_usage_reader(t),
        _ => false,
    };
    if !allowed {
        let mut resp = text(
            StatusCode::UNAUTHORIZED,
            "the usage reader's token is required\n",
            "text/plain",
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    }
    let uid = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "uid")
            .map(|(_, v)| v.to_owned())
    });
    let report = gw.meters.report(&gw.instance, uid.as_deref());
    match serde_json::to_string(&report) {
        Ok(body) => text(StatusCode::OK, body, "application/json"),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "report failed\n",
            "text/plain",
        ),
    }
}
