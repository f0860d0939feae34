//! The Hermes operator: reconciles each `HermesTask` into its chain of phase
//! Jobs under its `HermesProfile`, and records every outcome on the task.
//!
//! ```text
//!  watch HermesTask ─┐
//!  watch HermesProfile (→ tasks naming it) ─┼─> controller::reconcile(task)
//!  watch owned Jobs, pods of task Jobs ─────┘        │
//!      1. narrowing: effective settings = profile ∩ task, or ProfileViolation
//!      2. children (builders, pure): ConfigMap <task>-task, PVC <task>-repo,
//!         NetworkPolicies hermes-deny + hermes-egress-<hash> (shared),
//!         Job <task>-<phase>[-<attempt>]  (server-side apply, ownerReferences)
//!      3. observe the current phase's Job and pod; read its result
//!         (termination message, strict decode) → facts in status
//!      4. status: server-side apply on the status subresource, skipped when
//!         unchanged; an Event per transition
//! ```
//!
//! Level-triggered: the next step is derived from the task's status (the
//! facts already recorded) and the children that exist, never from memory,
//! so a reconcile can run twice, be interrupted, or run in a fresh process
//! without creating anything twice. The operator never mounts a volume and
//! never writes a task's spec, labels or annotations.

pub mod builders;
pub mod cluster_addresses;
pub mod controller;
pub mod gateway;
pub mod leader;
pub mod metrics;
pub mod narrowing;

/// The field manager of every object and status the operator writes.
pub const FIELD_MANAGER: &str = "hermes.dev/operator";
/// The reporter name on the operator's Events.
pub const EVENT_REPORTER: &str = "hermes-operator";

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action}")]
    Kube {
        /// What was being done.
        action: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// An object could not be serialized for the API.
    #[error("serializing {what}")]
    Serialize {
        /// Which object.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The object has no namespace or name (never true for objects from the API).
    #[error("object without {0}")]
    MissingMetadata(&'static str),
    /// The watch caches did not fill in time (the API server is unreachable
    /// or refuses the operator's watches).
    #[error(
        "the watch caches of Jobs, pods, ConfigMaps, claims, profiles and the cluster's addresses (nodes, the API server's Service and EndpointSlice) did not fill within 60s"
    )]
    CachesNotReady,
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a failed API call with what was being done: `.map_err(Error::kube("reading X"))`.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// A bounded label for metrics: never object names or error text.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(s) if s.code == 409 => "conflict",
                kube::Error::Api(s) if s.code == 404 => "not_found",
                kube::Error::Api(s) if s.code == 422 => "invalid",
                kube::Error::Api(_) => "api",
                _ => "transport",
            },
            Error::Serialize { .. } => "serialize",
            Error::MissingMetadata(_) => "metadata",
            Error::CachesNotReady => "caches",
        }
    }
}
