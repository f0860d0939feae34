//! `kubectl-hermes`: the Hermes kubectl plugin. On `PATH`, `kubectl hermes
//! <command>` runs it.
//!
//! ```text
//!   TASK.md ──(front matter + flags, checked with hermes-crds' rules)──> HermesTask
//!      │ run / batch: server-side apply (field manager kubectl-hermes), or -o yaml for GitOps
//!      ▼
//!   operator ── prepare → implement → review → [AwaitingApproval] → publish
//!      ▲                                              │
//!      │ approve / reject / cancel / retry-publish: the annotations the operator reads,
//!      │   approval bound to status.review.reviewedCommit
//!   status (table, detail) · logs (every phase pod, every container, in order)
//!   diff: a short-lived runner pod reads base..reviewed from the repo volume, read-only
//! ```
//!
//! The library holds every command ([`Error`] per failure site); `main`
//! only parses, dispatches and turns outcomes into exit codes. Validation
//! uses the API's own rules (`hermes_crds::validation`) and bounds (a test
//! holds them equal to the generated CRD), so a task the plugin accepts is
//! one the API server accepts, and a refusal names the field and the line of
//! the task file (or the flag) that set it.

pub mod args;
pub mod batch;
pub mod client;
pub mod decide;
pub mod diff;
pub mod error;
pub mod logs;
pub mod manifest;
pub mod naming;
pub mod run;
pub mod status;
pub mod taskfile;
pub mod watch;

pub use error::{Error, Result};

use std::io::Write;

use clap::CommandFactory;

/// Writes the completion script for `shell` to `out`.
pub fn completion(shell: clap_complete::Shell, out: &mut impl Write) {
    let mut cmd = args::Cli::command();
    clap_complete::generate(shell, &mut cmd, "kubectl-hermes", out);
}
