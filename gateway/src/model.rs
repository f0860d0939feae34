//! The model API proxy: a task's agent (or reviewer) sends Messages
//! requests here with its gateway credential; they go to the profile's
//! upstream with the real key, and the replies stream back unbuffered while
//! their usage is counted.
//!
//! ```text
//!   request ─ credential ─> grant (implement|review, phase live)
//!           ─ body (≤ 32 MiB) → model, stream
//!           ─ POST …/v1/messages is a turn: budget judged, then forwarded
//!   reply   ─ each chunk forwarded as it comes ─> client
//!             └ copy fed to the SSE / JSON counter → priced at the end
//! ```

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hermes_crds::gateway::{Claims, meters_total};
use hermes_crds::{HermesProfile, RunPhase};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::keys::AuthScheme;
use crate::meter::{self, judge};
use crate::server::{Body, Gateway, full};
use crate::upstream::{Origin, Pooled};
use crate::usage::{JsonUsage, Observed, SseUsage};

/// Largest request body accepted.
pub const MAX_REQUEST: usize = 32 << 20;

/// A response in the model API's error shape.
pub fn api_error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Headers that describe one hop, not the message.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
    ] {
        headers.remove(name);
    }
}

fn phase_label(phase: RunPhase) -> &'static str {
    phase.as_str()
}

/// Serves one model API request.
pub async fn handle(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    if matches!(*req.method(), Method::GET | Method::HEAD) && req.uri().path() == "/" {
        let mut resp = Response::new(full(r#"{"server":"hermes-gateway"}"#));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(resp);
    }
    let token = crate::auth::model_credential(req.headers());
    let grant = match gw.auth.authorize(token.as_deref()).await {
        Ok(g) => g,
        Err(refusal) => {
            gw.metrics.request("none", "unauthorized");
            tracing::info!(
                reason = refusal.as_str(),
                path = req.uri().path(),
                "model request refused"
            );
            return Ok(api_error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                refusal.message(),
            ));
        }
    };
    let claims = grant.claims;
    let label = phase_label(claims.phase);
    if !matches!(claims.phase, RunPhase::Implement | RunPhase::Review) {
        gw.metrics.request(label, "forbidden");
        return Ok(api_error(
            StatusCode::FORBIDDEN,
            "permission_error",
            "Hermes gateway: the model API serves the implement and review phases only",
        ));
    }
    let profile_name = grant.task.spec.profile.0.clone();
    let Some(profile) = gw.directory.profile(&claims.namespace, &profile_name) else {
        gw.metrics.request(label, "forbidden");
        return Ok(api_error(
            StatusCode::FORBIDDEN,
            "permission_error",
            &format!("Hermes gateway: the task's profile {profile_name:?} is not there"),
        ));
    };
    let Some(spec) = profile.spec.model.as_ref() else {
        gw.metrics.request(label, "forbidden");
        return Ok(api_error(
            StatusCode::FORBIDDEN,
            "permission_error",
            &format!(
                "Hermes gateway: the profile {profile_name:?} has no model section, so the gateway has no upstream for it"
            ),
        ));
    };
    let upstream = spec.upstream(claims.phase);
    let Some((origin, base_path)) = Origin::parse(&upstream.url) else {
        gw.metrics.request(label, "upstream-error");
        return Ok(api_error(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "Hermes gateway: the profile's upstream URL is not usable",
        ));
    };
    let Some(credential) = gw.credentials.get(&upstream.credential.0) else {
        gw.metrics.request(label, "upstream-error");
        tracing::warn!(credential = %upstream.credential.0, "model credential not mounted or empty");
        return Ok(api_error(
            StatusCode::BAD_GATEWAY,
            "api_error",
            &format!(
                "Hermes gateway: the model credential {:?} is not available to the gateway",
                upstream.credential.0
            ),
        ));
    };

    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_REQUEST).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            gw.metrics.request(label, "invalid");
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return Ok(if too_large {
                api_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_too_large",
                    "Hermes gateway: the request body is larger than 32 MiB",
                )
            } else {
                api_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "Hermes gateway: the request body could not be read",
                )
            });
        }
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let request_model = parsed
        .as_ref()
        .and_then(|v| v.get("model"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let path = parts.uri.path();
    let is_turn = parts.method == Method::POST && path.ends_with("/v1/messages");

    if is_turn {
        let recorded = grant
            .task
            .status
            .as_ref()
            .and_then(|s| s.usage.as_ref())
            .map(|u| meters_total(&u.meters, claims.phase, Some(&gw.instance)))
            .unwrap_or_default();
        let used = recorded.plus(&gw.meters.live(&claims));
        if let Err(refusal) = judge(&claims.budget, &used, request_model.as_deref(), spec) {
            gw.meters.add_refusal(&claims);
            if matches!(refusal, meter::BudgetRefusal::Spent(_)) {
                gw.metrics
                    .budget_refusals
                    .get_or_create(&crate::metrics::PhaseLabels { phase: label })
                    .inc();
            }
            gw.metrics.request(label, "budget");
            tracing::info!(
                namespace = %claims.namespace, task = %claims.task, phase = label,
                "model turn refused: {}", refusal.message()
            );
            return Ok(api_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &refusal.message(),
            ));
        }
    }

    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let target = format!("{base_path}{path_and_query}");
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    for name in [
        "x-api-key",
        "authorization",
        "host",
        "content-length",
        "accept-encoding",
    ] {
        headers.remove(name);
    }
    // The counter reads the reply as sent: no compression.
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let Ok(host) = HeaderValue::from_str(&origin.host_header()) else {
        gw.metrics.request(label, "upstream-error");
        return Ok(api_error(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "Hermes gateway: bad upstream host",
        ));
    };
    headers.insert(header::HOST, host);
    let auth = match credential.scheme {
        AuthScheme::ApiKey => HeaderValue::from_str(&credential.key).map(|v| ("x-api-key", v)),
        AuthScheme::Bearer => HeaderValue::from_str(&format!("Bearer {}", credential.key))
            .map(|v| ("authorization", v)),
    };
    let Ok((auth_name, mut auth_value)) = auth else {
        gw.metrics.request(label, "upstream-error");
        return Ok(api_error(
            StatusCode::BAD_GATEWAY,
            "api_error",
            "Hermes gateway: the model credential is not a valid header value",
        ));
    };
    auth_value.set_sensitive(true);
    headers.insert(auth_name, auth_value);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));

    let mut builder = Request::builder().method(parts.method.clone()).uri(target);
    if let Some(h) = builder.headers_mut() {
        *h = headers;
    }
    let Ok(up_req) = builder.body(Full::new(body)) else {
        gw.metrics.request(label, "invalid");
        return Ok(api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "Hermes gateway: the request path is not valid",
        ));
    };

    let (resp, pooled) = match gw.upstreams.send(&origin, up_req).await {
        Ok(r) => r,
        Err(e) => {
            gw.metrics.request(label, "upstream-error");
            tracing::warn!(error = %e, namespace = %claims.namespace, task = %claims.task, "model upstream failed");
            return Ok(api_error(
                StatusCode::BAD_GATEWAY,
                "api_error",
                "Hermes gateway: the model upstream could not be reached",
            ));
        }
    };
    gw.metrics
        .model_latency
        .get_or_create(&crate::metrics::PhaseLabels { phase: label })
        .observe(start.elapsed().as_secs_f64());
    gw.metrics.request(label, "forwarded");
    if is_turn {
        gw.meters.add_turn(&claims);
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let encoded = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.eq_ignore_ascii_case("identity"));
    let counter = if !is_turn {
        Counter::None
    } else if encoded {
        tracing::warn!("model reply is compressed; its usage cannot be counted");
        Counter::None
    } else if content_type.starts_with("text/event-stream") {
        Counter::Sse(Box::default())
    } else if content_type.contains("json") {
        Counter::Json(JsonUsage::new())
    } else {
        Counter::None
    };
    let mut metered = Metered {
        inner: body,
        counter,
        done: Some(Done {
            gw,
            claims,
            profile,
            request_model,
            pooled: Some(pooled),
            counts: is_turn,
            status: parts.status.as_u16(),
            start,
        }),
    };
    if metered.inner.is_end_stream() {
        metered.finish(true);
    }
    Ok(Response::from_parts(parts, metered.boxed_unsync()))
}

enum Counter {
    None,
    Sse(Box<SseUsage>),
    Json(JsonUsage),
}

impl Counter {
    fn feed(&mut self, data: &[u8]) {
        match self {
            Counter::None => {}
            Counter::Sse(s) => s.feed(data),
            Counter::Json(j) => j.feed(data),
        }
    }

    fn finish(&mut self) -> Observed {
        match self {
            Counter::None => Observed::default(),
            Counter::Sse(s) => s.finish(),
            Counter::Json(j) => j.finish(),
        }
    }
}

struct Done {
    gw: Arc<Gateway>,
    claims: Claims,
    profile: Arc<HermesProfile>,
    request_model: Option<String>,
    pooled: Option<Pooled>,
    counts: bool,
    status: u16,
    start: Instant,
}

/// The upstream's reply body on its way to the client, counted.
struct Metered {
    inner: Incoming,
    counter: Counter,
    done: Option<Done>,
}

impl Metered {
    fn finish(&mut self, whole: bool) {
        let Some(mut done) = self.done.take() else {
            return;
        };
        if whole && let Some(p) = done.pooled.take() {
            p.release();
        }
        if !done.counts {
            return;
        }
        let observed = self.counter.finish();
        let model = observed.model.or(done.request_model.take());
        let row = done
            .profile
            .spec
            .model
            .as_ref()
            .and_then(|m| model.as_deref().and_then(|name| m.price(name)));
        let figures = meter::price(&observed.tokens, row);
        done.gw.meters.add(&done.claims, &figures);
        let phase = done.claims.phase.as_str();
        for (kind, n) in [
            ("input", figures.input_tokens),
            ("output", figures.output_tokens),
            ("cache_read", figures.cache_read_tokens),
            ("cache_creation", figures.cache_creation_tokens),
        ] {
            if n > 0 {
                done.gw
                    .metrics
                    .model_tokens
                    .get_or_create(&crate::metrics::TokenLabels { phase, kind })
                    .inc_by(n);
            }
        }
        tracing::info!(
            namespace = %done.claims.namespace,
            task = %done.claims.task,
            phase,
            status = done.status,
            model = model.as_deref().unwrap_or(""),
            input_tokens = figures.input_tokens,
            output_tokens = figures.output_tokens,
            cache_read_tokens = figures.cache_read_tokens,
            cache_creation_tokens = figures.cache_creation_tokens,
            cost_usd = %figures.cost_usd(),
            unpriced_tokens = figures.unpriced_tokens,
            complete = whole,
            millis = done.start.elapsed().as_millis() as u64,
            "model turn"
        );
    }
}

impl hyper::body::Body for Metered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.counter.feed(data);
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.finish(false);
    }
}
