//! Copying the objects of a commit range out of the volume, as data, into a
//! [verified copy](super::verified) (publish's verifying container, which
//! holds no credential and no socket). Each object is read raw, its kind
//! checked, re-hashed and compared with its id; commits and trees must pass
//! the [`strict`](super::strict) checks, whose parse (not libgit2's) names
//! what they reference.
//!
//! What the base commit's tree already holds is not copied: the pushing
//! container fetches the base from the remote and has those objects. The
//! base's trees are read from the volume to know their ids; a hash-verified
//! object with an id is that object, whoever stored it.

use std::collections::HashSet;

use git2::{ObjectType, Odb, Oid, Repository};

use super::strict::{self, EntryKind};
use super::verified::Writer;
use crate::{Error, Result};

fn invalid(oid: Oid, problem: impl Into<String>) -> Error {
    Error::ObjectInvalid {
        oid: oid.to_string(),
        problem: problem.into(),
    }
}

struct Copier<'a> {
    src: &'a Odb<'a>,
    dst: &'a mut Writer,
    seen: HashSet<Oid>,
}

impl Copier<'_> {
    /// Copies one object; returns its bytes, or `None` when it was seen.
    fn object(&mut self, oid: Oid, expect: ObjectType) -> Result<Option<Vec<u8>>> {
        if !self.seen.insert(oid) {
            return Ok(None);
        }
        let obj = self
            .src
            .read(oid)
            .map_err(|e| invalid(oid, format!("unreadable: {}", e.message())))?;
        let kind = obj.kind();
        let data = obj.data();
        if kind != expect {
            return Err(invalid(oid, format!("expected a {expect}, found a {kind}")));
        }
        let rehash =
            Oid::hash_object(kind, data).map_err(|e| invalid(oid, e.message().to_owned()))?;
        if rehash != oid {
            return Err(invalid(oid, format!("content hashes to {rehash}")));
        }
        self.dst.put(oid, kind, data)?;
        Ok(Some(data.to_vec()))
    }

    /// Copies a tree and everything under it not seen yet (a stack of its
    /// own: a crafted tree may nest deeper than the thread's stack).
    fn tree(&mut self, oid: Oid) -> Result<()> {
        let mut stack = vec![oid];
        while let Some(oid) = stack.pop() {
            let Some(data) = self.object(oid, ObjectType::Tree)? else {
                continue;
            };
            let entries = strict::tree(&data).map_err(|p| invalid(oid, p))?;
            for (id, kind) in entries {
                match kind {
                    EntryKind::Tree => stack.push(id),
                    EntryKind::Blob => {
                        self.object(id, ObjectType::Blob)?;
                    }
                    // Gitlinks name commits of other repositories: nothing to copy.
                    EntryKind::Gitlink => {}
                }
            }
        }
        Ok(())
    }
}

/// The ids of every tree and blob of `base`'s tree, read from `src`.
fn base_tree_ids(src: &Repository, base: Oid) -> Result<HashSet<Oid>> {
    let commit = src
        .find_commit(base)
        .map_err(|e| invalid(base, format!("the base commit: {}", e.message())))?;
    let mut ids = HashSet::new();
    let mut stack = vec![commit.tree_id()];
    while let Some(oid) = stack.pop() {
        if !ids.insert(oid) {
            continue;
        }
        let tree = src
            .find_tree(oid)
            .map_err(|e| invalid(oid, format!("a tree of the base: {}", e.message())))?;
        for entry in tree.iter() {
            match entry.kind() {
                Some(ObjectType::Tree) => stack.push(entry.id()),
                Some(ObjectType::Blob) => {
                    ids.insert(entry.id());
                }
                _ => {}
            }
        }
    }
    Ok(ids)
}

/// Copies every object reachable from `tip` and not from `base` (nor in
/// `base`'s tree) from `src` (the volume, read through a private repository)
/// into `dst`.
pub fn copy_range(src: &Repository, dst: &mut Writer, tip: Oid, base: Oid) -> Result<()> {
    let src_odb = src
        .odb()
        .map_err(Error::git("opening the volume's objects"))?;
    let seen = base_tree_ids(src, base)?;
    let mut walk = src
        .revwalk()
        .map_err(Error::git("walking the reviewed commits"))?;
    walk.push(tip)
        .map_err(|e| invalid(tip, e.message().to_owned()))?;
    walk.hide(base)
        .map_err(|e| invalid(base, e.message().to_owned()))?;
    let mut copier = Copier {
        src: &src_odb,
        dst,
        seen,
    };
    for oid in walk {
        let oid = oid.map_err(|e| invalid(tip, format!("walking history: {}", e.message())))?;
        let Some(data) = copier.object(oid, ObjectType::Commit)? else {
            continue;
        };
        let commit = strict::commit(&data).map_err(|p| invalid(oid, p))?;
        copier.tree(commit.tree)?;
    }
    Ok(())
}
