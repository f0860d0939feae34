//! From a request's credential to a live grant: verify the MAC with the
//! signing key, then check that the task's status shows the credential's
//! phase and attempt running. A cache that disagrees (it lags right after
//! a transition) is double-checked with one direct read of the task, at
//! most once a second per task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hermes_crds::HermesTask;
use hermes_crds::gateway::{Claims, PROXY_USER};
use hyper::HeaderMap;

use crate::directory::Directory;
use crate::keys::KeySource;
use crate::policy::phase_live;

/// Least time between two direct reads of one task.
pub const FETCH_EVERY: Duration = Duration::from_secs(1);

/// Why a request was not authorized (bounded: these are log reasons too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credential in the request.
    NoCredential,
    /// A credential this key did not sign (or junk), or no key loaded.
    BadCredential,
    /// A valid credential whose phase is not running (ended, another
    /// attempt, a task deleted and recreated).
    PhaseEnded,
}

impl Refusal {
    /// The reason as logs and metrics say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoCredential => "no-credential",
            Refusal::BadCredential => "bad-credential",
            Refusal::PhaseEnded => "phase-ended",
        }
    }

    /// What the client is told (never the credential).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NoCredential => "Hermes gateway: no credential in the request",
            Refusal::BadCredential => "Hermes gateway: the credential is not valid",
            Refusal::PhaseEnded => {
                "Hermes gateway: the credential's task phase is not running (it ended, or another attempt runs)"
            }
        }
    }
}

/// A verified credential of a running phase, and the task as read.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The credential's claims.
    pub claims: Claims,
    /// The task, as the check read it.
    pub task: Arc<HermesTask>,
}

/// The model API's credential: `x-api-key`, else `Authorization: Bearer`.
pub fn model_credential(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_owned());
    }
    let auth = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The proxy's credential: `Proxy-Authorization: Basic base64(hermes:<token>)`.
/// `Err(())` for a header that is there but not of that form.
#[allow(clippy::result_unit_err)]
pub fn proxy_credential(headers: &HeaderMap) -> Result<Option<String>, ()> {
    let Some(v) = headers.get(hyper::header::PROXY_AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| ())?;
    let (scheme, b64) = v.trim().split_once(' ').ok_or(())?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(());
    }
    let decoded = STANDARD.decode(b64.trim()).map_err(|_| ())?;
    let text = String::from_utf8(decoded).map_err(|_| ())?;
    let (user, token) = text.split_once(':').ok_or(())?;
    if user != PROXY_USER {
        return Err(());
    }
    Ok(Some(token.to_owned()))
}

/// A direct read of a task: when, what the cache held then, and what the
/// read returned.
struct Fetched {
    at: Instant,
    cached: Option<Arc<HermesTask>>,
    read: Option<Arc<HermesTask>>,
}

fn same(a: Option<&Arc<HermesTask>>, b: Option<&Arc<HermesTask>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Verifies credentials and checks their phase against the directory.
pub struct Authorizer {
    keys: KeySource,
    directory: Arc<dyn Directory>,
    fetched: Mutex<HashMap<(String, String), Fetched>>,
}

impl Authorizer {
    /// An authorizer over `keys` and `directory`.
    pub fn new(keys: KeySource, directory: Arc<dyn Directory>) -> Self {
        Self {
            keys,
            directory,
            fetched: Mutex::new(HashMap::new()),
        }
    }

    /// The key source.
    pub fn keys(&self) -> &KeySource {
        &self.keys
    }

    /// The task as a direct read shows it: the read made less than
    /// [`FETCH_EVERY`] ago (while the cache still holds what it held then:
    /// a cache that moved since is newer than that read), or a new one.
    async fn fetch(
        &self,
        namespace: &str,
        name: &str,
        cached: Option<&Arc<HermesTask>>,
    ) -> Option<Arc<HermesTask>> {
        let k = (namespace.to_owned(), name.to_owned());
        {
            let mut map = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if map.len() > 4096 {
                map.retain(|_, f| now.duration_since(f.at) < FETCH_EVERY);
            }
            if let Some(f) = map.get(&k)
                && now.duration_since(f.at) < FETCH_EVERY
            {
                return if same(f.cached.as_ref(), cached) {
                    f.read.clone()
                } else {
                    None
                };
            }
            // Claimed now, so concurrent requests do not read it again.
            map.insert(
                k.clone(),
                Fetched {
                    at: now,
                    cached: cached.cloned(),
                    read: None,
                },
            );
        }
        let read = self.directory.fetch_task(namespace, name).await;
        let mut map = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(
            k,
            Fetched {
                at: Instant::now(),
                cached: cached.cloned(),
                read: read.clone(),
            },
        );
        read
    }

    /// The grant of `token`, or why there is none.
    pub async fn authorize(&self, token: Option<&str>) -> Result<Grant, Refusal> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::NoCredential)?;
        let key = self.keys.current().ok_or(Refusal::BadCredential)?;
        let claims = key.verify(token).map_err(|_| Refusal::BadCredential)?;
        let cached = self.directory.task(&claims.namespace, &claims.task);
        if let Some(task) = &cached
            && phase_live(task, &claims)
        {
            return Ok(Grant {
                claims,
                task: task.clone(),
            });
        }
        if let Some(task) = self
            .fetch(&claims.namespace, &claims.task, cached.as_ref())
            .await
            && phase_live(&task, &claims)
        {
            return Ok(Grant { claims, task });
        }
        Err(Refusal::PhaseEnded)
    }
}
