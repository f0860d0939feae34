//! hermes-git-server: a git smart-HTTP server for Hermes's tests. It is a
//! **test fixture of the project**, not a product: the runner's tests and
//! benchmark start it in-process on loopback, and the end-to-end tests on a
//! real node run its binary on the host, where pods reach it over the node IP.
//!
//! ```text
//!   git client ──HTTP──▶ tiny_http front ──CGI──▶ git http-backend ──▶ ROOT/<repo>.git
//!                        │ basic auth: read user → clone/fetch
//!                        │             push user → clone/fetch/push
//!                        │             anything else → 401 + WWW-Authenticate: Basic
//!                        │ read user pushing → 403
//!                        └ request log: method, path, user, status, Authorization sent?
//! ```
//!
//! The git CLI is the server (`git http-backend`) and the fixture builder
//! ([`git`], [`init_bare`], [`refuse_pushes`]); it is never the code under
//! test. Requests are served one thread each; a malformed request gets a 4xx
//! answer and never stops the server. Repository paths with `.` or `..`
//! segments (also percent-encoded) are refused with 400 before git sees them.
//!
//! ```no_run
//! # fn main() -> Result<(), hermes_git_server::Error> {
//! use hermes_git_server::{GitServer, git, init_bare};
//! let root = std::path::Path::new("/tmp/srv");
//! let server = GitServer::loopback(root)?;
//! init_bare(&root.join("repo.git"))?;
//! let url = server.url("repo.git"); // http://127.0.0.1:PORT/repo.git
//! # let _ = url; Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod fixture;
mod server;
pub mod tls;

use std::path::PathBuf;

pub use fixture::{
    accept_pushes, git, init_bare, refuse_pushes, try_git, with_userinfo, write_credentials,
};
pub use server::{Config, GitServer, Logged, User};

/// The default read user (name, password): may clone and fetch.
pub const READ_USER: (&str, &str) = ("reader", "read-secret-4711");
/// The default push user (name, password): may clone, fetch and push.
pub const PUSH_USER: (&str, &str) = ("pusher", "push-secret-0815");

/// Errors of the git server and its fixture helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file or folder could not be read, written or created.
    #[error("{path}: {source}")]
    Io {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The git CLI could not be run, or failed.
    #[error("git {args:?} in {dir}: {message}")]
    Git {
        /// Its arguments.
        args: Vec<String>,
        /// Where it ran.
        dir: PathBuf,
        /// Its standard error, or why it could not start.
        message: String,
    },
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(String),
}
