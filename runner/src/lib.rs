//! `hermes-runner`: the in-pod steps of a Hermes task, on libgit2, with no git
//! CLI and no shell.
//!
//! ```text
//!  prepare pod   prepare  ── clone baseRef (read creds), create task branch ──> repo volume
//!  implement pod agent → collect ── commit what is left (advisory report) ───> repo volume
//!  review pod    context  ── volume read AS DATA: refs parsed by hand, objects
//!                            through a private repository, policy checks ──> bundle dir
//!                reviewer → verdict ── strict verdict JSON + policy findings
//!  publish pod   verify   ── volume read AS DATA, no Secret, no network (seccomp):
//!                            reviewed objects hash- and format-checked ──> verified copy
//!                publish  ── no volume: the copy re-checked in Rust into a fresh
//!                            clone (push creds), merge or branch, push
//!  every step ── one versioned JSON result ──> termination message (hermes-results)
//!  install / exec ── the agent's wrapper: prompt on stdin, output and exit code to files,
//!                    model Secret files → env of the CLI alone (no result of their own)
//! ```
//!
//! Once the agent has run, the repo volume is hostile. `context` and
//! `verify` never open it as a repository: they check its shape (`.git` a
//! real directory, no alternates, only plain files under `objects/`), read
//! branch heads from the ref files themselves, and look objects up through a
//! fresh repository of the runner's own whose object database borrows the
//! volume's object directory. No config, hook, attribute, ref or alternate
//! of the volume is ever read by libgit2 there. The container that pushes
//! never mounts it: it takes only `verify`'s copy, each object re-checked
//! (`git::verified`, `git::strict`). `git::init::harden` empties
//! every libgit2 config search path and turns on hash verification first
//! thing in `main`; credentials live only in memory (`credentials`) and every
//! text that leaves the pod goes through `scrub`. With `--proxy-dir`,
//! prepare and publish reach an `https://` git host by name through the
//! gateway's egress proxy (`git::proxy`), the proxy credential scrubbed too.

pub mod agent;
pub mod cli;
pub mod credentials;
pub mod error;
pub mod git;
pub mod output;
pub mod sandbox;
pub mod scope;
pub mod scrub;
pub mod steps;
pub mod wrap;

pub use error::{Error, Result};
