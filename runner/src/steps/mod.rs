//! The steps, one module each. Every step returns its result or an
//! [`Error`](crate::Error); `main` writes either as the one termination message.

pub mod collect;
pub mod context;
pub mod diff;
pub mod prepare;
pub mod publish;
pub mod verdict;
pub mod verify;

use std::path::Path;

use crate::{Error, Result};

/// Creates `dir` if needed and checks that it is empty.
pub fn empty_dir(arg: &'static str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::WriteOutput {
        what: "directory",
        path: dir.to_owned(),
        source,
    })?;
    let mut entries = std::fs::read_dir(dir).map_err(|source| Error::WriteOutput {
        what: "directory",
        path: dir.to_owned(),
        source,
    })?;
    if entries.next().is_some() {
        return Err(Error::arg(arg, "must be an empty directory"));
    }
    Ok(())
}

/// Checks a branch argument.
pub fn branch_arg(arg: &'static str, name: &str) -> Result<()> {
    if crate::git::valid_branch(name) {
        Ok(())
    } else {
        Err(Error::arg(arg, "not a valid branch name"))
    }
}
