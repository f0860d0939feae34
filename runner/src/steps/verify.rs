//! `verify`: the first half of publish, in an init container of the publish
//! pod that mounts the repo volume (read-only) and no Secret, and takes the
//! network away from itself before it reads a byte (`sandbox`). It checks
//! the volume's shape, that the reviewed commit is there and descends from
//! the base commit, and copies the range's objects, each hash-verified and
//! format-checked, into a fresh [verified copy](crate::git::verified) for
//! the pushing container, which never mounts the volume.
//!
//! Everything here that parses the agent's bytes (libgit2's pack, delta and
//! zlib readers, the revwalk) runs where there is nothing to steal and no
//! way to send it.

use git2::Oid;

use crate::cli::VerifyArgs;
use crate::git::{copy, parse_commit_id, verified, volume};
use crate::steps::empty_dir;
use crate::{Error, Result};

/// Runs `verify`; returns the objects and bytes copied.
pub fn run(args: &VerifyArgs) -> Result<(usize, u64)> {
    let base = parse_commit_id("--base-commit", &args.base_commit)?;
    let reviewed = parse_commit_id("--reviewed-commit", &args.reviewed_commit)?;
    empty_dir("--out-dir", &args.out_dir)?;
    empty_dir("--work-dir", &args.work_dir)?;

    let vol = volume::check(&args.repo_dir)?;
    let src = volume::open_objects(&vol, &args.work_dir.join("volume-objects.git"))?;
    let unreadable = |oid: Oid| {
        move |e: git2::Error| {
            if e.code() == git2::ErrorCode::NotFound {
                Error::CommitMismatch(format!("commit {oid} is not in the volume's objects"))
            } else {
                Error::ObjectInvalid {
                    oid: oid.to_string(),
                    problem: e.message().to_owned(),
                }
            }
        }
    };
    src.find_commit(reviewed).map_err(unreadable(reviewed))?;
    if reviewed != base
        && !src
            .graph_descendant_of(reviewed, base)
            .map_err(unreadable(reviewed))?
    {
        return Err(Error::CommitMismatch(format!(
            "the reviewed commit {reviewed} does not descend from the base commit {base}"
        )));
    }
    let mut out = verified::Writer::create(&args.out_dir)?;
    copy::copy_range(&src, &mut out, reviewed, base)?;
    let (objects, bytes) = out.written();
    tracing::info!(objects, bytes, %reviewed, "copied the reviewed objects out of the volume");
    Ok((objects, bytes))
}
