//! `prepare`: clone the base branch (single branch, read credentials; through
//! the gateway's egress proxy with `--proxy-dir`), create
//! the task branch at the base commit and check it out; optionally read the
//! task file from the base commit's tree.

use git2::build::CheckoutBuilder;
use hermes_results::Prepared;
use sha2::{Digest, Sha256};

use crate::cli::PrepareArgs;
use crate::credentials::Credentials;
use crate::git::proxy::Proxy;
use crate::git::{self, remote};
use crate::steps::{branch_arg, empty_dir};
use crate::{Error, Result};

/// Largest task file read from the repository.
const MAX_TASK_FILE: usize = 1 << 20;

/// Runs `prepare`.
pub fn run(args: &PrepareArgs, creds: &Credentials, proxy: Option<&Proxy>) -> Result<Prepared> {
    remote::validate_url(&args.url)?;
    branch_arg("--base-ref", &args.base_ref)?;
    branch_arg("--branch", &args.branch)?;
    if args.branch == args.base_ref {
        return Err(Error::arg("--branch", "must differ from --base-ref"));
    }
    let task_path = args.task_path.as_deref().map(repo_path).transpose()?;
    empty_dir("--repo-dir", &args.repo_dir)?;

    let repo = git::init_private(&args.repo_dir, false)?;
    // The remote is recorded with its plain URL; credentials never touch the disk.
    repo.remote_with_fetch(
        "origin",
        &args.url,
        &format!("+refs/heads/{0}:refs/remotes/origin/{0}", args.base_ref),
    )
    .map_err(Error::git("recording the remote"))?;
    tracing::info!(base = %args.base_ref, proxy = proxy.map(Proxy::address), "fetching the base branch");
    let base = remote::fetch_branch(&repo, &args.url, &args.base_ref, creds, proxy, true)?;
    let commit = repo
        .find_commit(base)
        .map_err(Error::git("reading the base commit"))?;

    let branch_ref = format!("refs/heads/{}", args.branch);
    repo.branch(&args.branch, &commit, false)
        .map_err(Error::git("creating the task branch"))?;
    repo.set_head(&branch_ref)
        .map_err(Error::git("setting HEAD"))?;
    repo.checkout_head(Some(CheckoutBuilder::new().force()))
        .map_err(Error::git("checking out the task branch"))?;
    tracing::info!(%base, branch = %args.branch, "task branch created");

    let task_file_sha256 = match (task_path, &args.task_out) {
        (Some(path), Some(out)) => {
            let tree = commit.tree().map_err(Error::git("reading the base tree"))?;
            let entry = tree
                .get_path(std::path::Path::new(&path))
                .map_err(|_| Error::TaskFileNotFound(path.clone()))?;
            let blob = entry
                .to_object(&repo)
                .and_then(|o| o.peel_to_blob())
                .map_err(|_| Error::TaskFileNotFound(path.clone()))?;
            if blob.size() > MAX_TASK_FILE {
                return Err(Error::arg(
                    "--task-path",
                    "the task file is larger than 1 MiB",
                ));
            }
            std::fs::write(out, blob.content()).map_err(|source| Error::WriteOutput {
                what: "task file",
                path: out.clone(),
                source,
            })?;
            Some(hex(&Sha256::digest(blob.content())))
        }
        _ => None,
    };
    Ok(Prepared {
        base_commit: base.to_string(),
        branch: args.branch.clone(),
        task_file_sha256,
    })
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Checks a repository-relative path: no `..`, no `.git`, not absolute.
fn repo_path(p: &str) -> Result<String> {
    let bad = p.is_empty()
        || p.starts_with('/')
        || p.contains('\\')
        || p.chars().any(char::is_control)
        || p.split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.eq_ignore_ascii_case(".git"));
    if bad {
        Err(Error::arg(
            "--task-path",
            "must be a relative path inside the repository",
        ))
    } else {
        Ok(p.to_owned())
    }
}
