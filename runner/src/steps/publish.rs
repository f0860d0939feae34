//! `publish`: the second half of the publish pod, in the one container that
//! mounts the push credentials, and it never mounts the repo volume. It takes
//! in the verified copy `verify` wrote (each object re-checked in Rust before
//! libgit2 sees it: `git::verified`), fetches the base branch from the remote
//! (push credentials; through the gateway's egress proxy with `--proxy-dir`),
//! checks that the reviewed commit is complete and descends from the base,
//! then merges (always a merge commit Hermes authors, naming the task and the
//! reviewed commit; a conflict pushes nothing) or pushes the task branch. A
//! refused push is a result (`pushed: false`), not a failure.
//!
//! Checks, in order: the verified copy is well-formed and holds the reviewed
//! commit; the remote base still contains the base commit (it moved only
//! forward); the reviewed commit descends from the base commit; every object
//! it reaches is in the copy or came from the remote.

use std::collections::HashSet;

use git2::{MergeOptions, ObjectType, Oid, Repository};
use hermes_results::{PublishMode, Published};

use crate::cli::{Mode, PublishArgs};
use crate::credentials::Credentials;
use crate::git::proxy::Proxy;
use crate::git::{self, parse_commit_id, remote, verified};
use crate::steps::{branch_arg, collect::task_name, empty_dir};
use crate::{Error, Result};

/// The local ref pushed from.
const PUBLISH_REF: &str = "refs/hermes/publish";

/// Runs `publish`; `Ok(Published{pushed: false, ..})` when the push failed.
pub fn run(args: &PublishArgs, creds: &Credentials, proxy: Option<&Proxy>) -> Result<Published> {
    remote::validate_url(&args.url)?;
    branch_arg("--base-ref", &args.base_ref)?;
    branch_arg("--branch", &args.branch)?;
    task_name(&args.task_name)?;
    let base = parse_commit_id("--base-commit", &args.base_commit)?;
    let reviewed = parse_commit_id("--reviewed-commit", &args.reviewed_commit)?;
    empty_dir("--work-dir", &args.work_dir)?;

    // The verified copy first, into a clone of this step's own: nothing is
    // fetched or sent before it checks out.
    let clone = git::init_private(&args.work_dir.join("clone.git"), true)?;
    let imported = verified::import(&args.verified_dir, &clone)?;
    tracing::info!(
        objects = imported.ids.len(),
        bytes = imported.bytes,
        "took in the verified copy"
    );
    if reviewed != base && !imported.ids.contains(&reviewed) {
        return Err(Error::CommitMismatch(format!(
            "the reviewed commit {reviewed} is not in the verified copy"
        )));
    }

    let remote_base = remote::fetch_branch(&clone, &args.url, &args.base_ref, creds, proxy, false)?;
    let has_base = clone.odb().is_ok_and(|o| o.exists(base));
    if remote_base != base
        && !(has_base
            && clone
                .graph_descendant_of(remote_base, base)
                .unwrap_or(false))
    {
        return Err(Error::CommitMismatch(format!(
            "the remote base branch {} no longer contains the base commit {base}: it was rewritten",
            args.base_ref
        )));
    }
    if reviewed != base
        && !clone.graph_descendant_of(reviewed, base).map_err(|e| {
            Error::CommitMismatch(format!("the reviewed commit {reviewed}: {}", e.message()))
        })?
    {
        return Err(Error::CommitMismatch(format!(
            "the reviewed commit {reviewed} does not descend from the base commit {base}"
        )));
    }
    complete(&clone, &imported.ids, reviewed, base)?;

    let (mode, target, dst) = match args.mode {
        Mode::Branch => (
            PublishMode::Branch,
            reviewed,
            format!("refs/heads/{}", args.branch),
        ),
        Mode::Merge => {
            let merged = merge(&clone, remote_base, reviewed, &args.task_name)?;
            (
                PublishMode::Merge,
                merged,
                format!("refs/heads/{}", args.base_ref),
            )
        }
    };
    clone
        .reference(PUBLISH_REF, target, true, "hermes publish")
        .map_err(Error::git("recording the commit to push"))?;
    let scrubber = match proxy {
        Some(p) => creds.scrubber().with(p.scrubber()),
        None => creds.scrubber(),
    };
    let pushed = remote::push(&clone, &args.url, PUBLISH_REF, &dst, creds, proxy)?;
    let merge_commit = (mode == PublishMode::Merge).then(|| target.to_string());
    Ok(match pushed {
        Ok(()) => Published {
            mode,
            merge_commit,
            pushed: true,
            push_error: None,
        },
        Err(text) => {
            let text = scrubber.scrub(&text);
            tracing::warn!(error = %text, "push failed");
            Published {
                mode,
                merge_commit,
                pushed: false,
                push_error: Some(text),
            }
        }
    })
}

/// Every object the reviewed commits reach is in the clone: the range's
/// commits, trees and blobs from the verified copy, the rest fetched from the
/// remote (complete by the fetch's own checks, so not walked). A copy that
/// left an object out fails here, before anything is pushed.
fn complete(repo: &Repository, imported: &HashSet<Oid>, reviewed: Oid, base: Oid) -> Result<()> {
    let odb = repo
        .odb()
        .map_err(Error::git("opening the clone's objects"))?;
    let missing = |oid: Oid, what: &str| Error::ObjectInvalid {
        oid: oid.to_string(),
        problem: format!(
            "{what} the reviewed commit reaches is neither in the verified copy nor on the remote"
        ),
    };
    let mut walk = repo
        .revwalk()
        .map_err(Error::git("walking the reviewed commits"))?;
    walk.push(reviewed)
        .map_err(Error::git("walking the reviewed commits"))?;
    walk.hide(base)
        .map_err(Error::git("walking the reviewed commits"))?;
    let mut checked = HashSet::new();
    for oid in walk {
        let oid = oid.map_err(|_| missing(reviewed, "a commit"))?;
        let commit = repo
            .find_commit(oid)
            .map_err(|_| missing(oid, "a commit"))?;
        let mut stack = vec![commit.tree_id()];
        while let Some(tree_id) = stack.pop() {
            if !checked.insert(tree_id) {
                continue;
            }
            if !imported.contains(&tree_id) {
                // Fetched from the remote: complete already.
                if odb.exists(tree_id) {
                    continue;
                }
                return Err(missing(tree_id, "a tree"));
            }
            let tree = repo
                .find_tree(tree_id)
                .map_err(|_| missing(tree_id, "a tree"))?;
            for entry in tree.iter() {
                match entry.kind() {
                    Some(ObjectType::Tree) => stack.push(entry.id()),
                    Some(ObjectType::Blob) if !odb.exists(entry.id()) => {
                        return Err(missing(entry.id(), "a blob"));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Merges the reviewed commit into the remote base with a merge commit, also
/// when a fast-forward would do: the base branch then shows, in one commit
/// Hermes authored, where a reviewed task entered it and which commit was
/// reviewed (`Hermes-Reviewed-Commit`), and `git revert -m 1` undoes the whole
/// task. Nothing to merge (the base already is the reviewed commit) merges
/// nothing. Conflicts fail the step.
fn merge(repo: &Repository, remote_base: Oid, reviewed: Oid, task: &str) -> Result<Oid> {
    if remote_base == reviewed
        || repo
            .graph_descendant_of(remote_base, reviewed)
            .map_err(Error::git("checking ancestry"))?
    {
        return Ok(remote_base);
    }
    let ours = repo
        .find_commit(remote_base)
        .map_err(Error::git("reading the base"))?;
    let theirs = repo
        .find_commit(reviewed)
        .map_err(Error::git("reading the reviewed commit"))?;
    let sig = git::hermes_signature()?;
    let message = format!(
        "Merge hermes task {task}\n\nHermes-Task: {task}\nHermes-Reviewed-Commit: {reviewed}\n"
    );
    // The base did not move: the merge's tree is the reviewed tree, as is
    // (no index, no checkout of anything the agent wrote).
    if repo
        .graph_descendant_of(reviewed, remote_base)
        .map_err(Error::git("checking ancestry"))?
    {
        let tree = theirs
            .tree()
            .map_err(Error::git("reading the reviewed tree"))?;
        return repo
            .commit(None, &sig, &sig, &message, &tree, &[&ours, &theirs])
            .map_err(Error::git("committing the merge"));
    }
    let mut opts = MergeOptions::new();
    opts.fail_on_conflict(false);
    let mut index = repo
        .merge_commits(&ours, &theirs, Some(&opts))
        .map_err(Error::git("merging"))?;
    if index.has_conflicts() {
        let mut paths = Vec::new();
        if let Ok(conflicts) = index.conflicts() {
            for c in conflicts.flatten().take(20) {
                let entry = c.our.or(c.their).or(c.ancestor);
                if let Some(e) = entry {
                    paths.push(String::from_utf8_lossy(&e.path).into_owned());
                }
            }
        }
        return Err(Error::MergeConflict { paths });
    }
    let tree_id = index
        .write_tree_to(repo)
        .map_err(Error::git("writing the merged tree"))?;
    let tree = repo
        .find_tree(tree_id)
        .map_err(Error::git("reading the merged tree"))?;
    repo.commit(None, &sig, &sig, &message, &tree, &[&ours, &theirs])
        .map_err(Error::git("committing the merge"))
}
