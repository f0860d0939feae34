//! hermes-model-server: a scripted stand-in for the model API, so tests and
//! the offline demo can run the *real* agent CLI (Claude Code, `claude -p`)
//! where no model is reachable. It speaks the Messages API as the CLI uses it
//! and replays scenario files; it is the only stand-in the project allows.
//!
//! ```text
//!   claude -p ──ANTHROPIC_BASE_URL=http://host:port/s/<scenario>──┐
//!     HEAD /                         → 200 (reachability check)   │
//!     POST /s/<scenario>/v1/messages → turn N of <scenario>       ▼
//!          N = assistant messages already in the request's history
//!          SSE (stream: true) or a plain Message JSON
//!     POST .../v1/messages, no tools → side reply, no turn used
//!   e2e/scenarios/<scenario>.yaml: turns = [{content, usage, stop_reason}]
//! ```
//!
//! Stateless by design: the turn is derived from the history the CLI sends,
//! so retries and parallel runs of one scenario need no session state. The
//! usage each turn reports is fixed by the scenario, and the CLI prices it,
//! so a run's tokens and cost are known exactly. Tool inputs may say
//! `{{cwd}}`: it is replaced by the working directory the CLI states in its
//! system prompt (Read and Edit want absolute paths).
//!
//! No requests are validated beyond being JSON: the CLI sends `role: system`
//! messages and beta fields the server has no reason to judge.
#![forbid(unsafe_code)]

pub mod api;
pub mod http;
pub mod scenario;
pub mod server;

use std::path::PathBuf;

pub use scenario::{Block, Scenario, Scenarios, Turn, Usage};
pub use server::{Config, Kind, Record, Server};

/// Errors of the model server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A scenario file did not parse.
    #[error("scenario {name}")]
    Scenario {
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: serde_yaml::Error,
    },
    /// A scenario has no turns.
    #[error("scenario {0} has no turns")]
    EmptyScenario(String),
    /// A file or folder could not be read.
    #[error("reading {path}")]
    Io {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
