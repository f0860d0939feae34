//! Safe-git helpers: libgit2 hardening, remotes with in-memory credentials
//! (directly or through the gateway's egress proxy),
//! the volume read as data (shape checks, refs parsed by hand, objects
//! through a private repository), and hash-verified object copies handed
//! from publish's verifying container to its pushing one.

pub mod copy;
pub mod init;
pub mod proxy;
pub mod refs;
pub mod remote;
pub mod strict;
pub mod verified;
pub mod volume;

use std::path::Path;

use git2::{Repository, RepositoryInitOptions};

use crate::{Error, Result};

/// The fixed identity of commits the runner makes.
pub fn hermes_signature() -> Result<git2::Signature<'static>> {
    git2::Signature::now("Hermes", "hermes@hermes.dev")
        .map_err(Error::git("building the signature"))
}

/// Creates a repository of the runner's own at `path`: no template (so no
/// sample hooks), no config but libgit2's defaults.
pub fn init_private(path: &Path, bare: bool) -> Result<Repository> {
    let mut opts = RepositoryInitOptions::new();
    opts.bare(bare)
        .external_template(false)
        .no_reinit(true)
        .mkdir(true)
        .mkpath(true);
    Repository::init_opts(path, &opts).map_err(|source| Error::CreateRepo {
        path: path.to_owned(),
        source,
    })
}

/// Whether `name` is a valid branch name (`refs/heads/<name>` by git's rules).
pub fn valid_branch(name: &str) -> bool {
    !name.starts_with('-') && git2::Reference::is_valid_name(&format!("refs/heads/{name}"))
}

/// Parses a full commit id.
pub fn parse_commit_id(arg: &'static str, s: &str) -> Result<git2::Oid> {
    let hex = s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !(hex && (s.len() == 40 || s.len() == 64)) {
        return Err(Error::arg(arg, "not a full lowercase commit id"));
    }
    git2::Oid::from_str(s).map_err(|_| Error::arg(arg, "not a commit id"))
}
