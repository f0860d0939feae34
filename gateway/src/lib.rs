//! hermes-gateway: the only way out of a task pod. Task pods hold no model
//! key; each holds a credential the operator minted for one phase of one
//! task. The gateway verifies it, forwards model API calls upstream with the
//! real key, counts their usage authoritatively, stops the phase at its
//! budget, and is the pods' egress proxy by host name.
//!
//! ```text
//!                    ┌──────────────────── hermes-gateway ─────────────────────┐
//!  agent / reviewer  │ :8080 model API   credential → grant (phase live?)      │
//!  x-api-key: hgw1.. ├──────────────────> budget → upstream(phase) + real key ─┼─> model API
//!                    │                   reply streamed back, SSE/JSON counted │
//!  HTTPS_PROXY=      │ :3128 egress      Proxy-Authorization → grant           │
//!  hermes:hgw1..@gw  ├──────────────────> host listed? resolve, every address  ├─> registry.npmjs.org
//!                    │                   allowed? connect; SNI = host?         │
//!                    │ :9090 admin       /healthz /readyz /metrics /v1/usage ◄─┼── operator
//!                    └───────▲──────────────────────────────────────────────────┘
//!                            │ reflectors: HermesTask, HermesProfile (+ one GET on cache lag)
//! ```
//!
//! A credential is honoured only while the task's status shows its phase
//! and attempt running (the uid, too: a task recreated under its name is
//! another task). Counters live in memory per (task uid, phase) and are
//! served to the operator by `/v1/usage`; the operator writes them to the
//! task's status (`usage.meters`), which is how counts of earlier gateway
//! instances reach this one's budget judgement.
//!
//! Why hyper and not a proxy product (Squid, Envoy) or a framework
//! (Pingora): every decision here is per request and needs the task — the
//! credential maps to a task and phase, the SSE reply is parsed in-stream to
//! count tokens, a turn is refused with the model API's own error when the
//! budget is spent, a CONNECT tunnel's TLS server name is checked against
//! the host. A C proxy would need all of that as plugins talking to a
//! sidecar; a large framework brings its own runtime, config and
//! dependencies for a few hundred lines of routing. hyper's client and
//! server connections, rustls, and the reflectors of kube-rs are all it
//! takes.
//!
//! The Kubernetes side sits behind [`directory::Directory`] (tasks and
//! profiles) and [`directory::Resolver`] (names to addresses), so the
//! servers run in tests on loopback against in-memory objects.
#![forbid(unsafe_code)]

use std::path::PathBuf;

pub mod addr;
pub mod auth;
pub mod cluster;
pub mod directory;
pub mod egress;
pub mod keys;
pub mod meter;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod server;
pub mod sni;
pub mod upstream;
pub mod usage;

pub use server::{Gateway, Settings};

/// Errors of the gateway.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The signing key file holds no usable key.
    #[error("the signing key in {path} is not usable")]
    SigningKey {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: hermes_crds::gateway::CredentialError,
    },
    /// No signing key is loaded.
    #[error("no signing key is loaded")]
    NoSigningKey,
    /// The extra CA bundle could not be used.
    #[error("the CA bundle {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS settings could not be built.
    #[error("TLS settings: {0}")]
    Tls(String),
    /// The system's random source failed.
    #[error("the system random source failed")]
    Random,
    /// A model upstream could not be reached or answered badly.
    #[error("model upstream: {0}")]
    Upstream(String),
}
