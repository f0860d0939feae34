//! The verified copy: how publish's verifying container hands the reviewed
//! commit's objects to its pushing container, which never mounts the volume.
//!
//! The format is the runner's own and as plain as a store of git objects
//! can be: one file per object, `objects/<40 hex digits>`, holding git's
//! loose-object header and the object's bytes, uncompressed
//! (`<kind> <size>\0<bytes>`). Nothing else may be in the directory. The
//! pushing container reads it with Rust alone: the name, the header, a hash
//! that must give the name, and [`strict`](super::strict) checks of every
//! commit and tree. Only then does an object reach libgit2, written into the
//! pushing container's own clone. No pack, index, delta or zlib stream
//! written by the verifier is ever parsed where the push credential is.

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository};

use super::strict;
use crate::{Error, Result};

/// The subdirectory the objects are in.
const OBJECTS: &str = "objects";

/// The largest object the copy carries (the verifier refuses a larger one
/// with its reason). A runner container's memory limit is 256 MiB by
/// default and publish holds one object at a time; git hosts refuse larger
/// files too (GitHub at 100 MiB).
pub const MAX_OBJECT_BYTES: usize = 100 << 20;

/// The most objects the copy carries.
pub const MAX_OBJECTS: usize = 1_000_000;

/// The longest header: `commit 104857600\0`.
const MAX_HEADER: usize = 32;

fn invalid(problem: impl Into<String>) -> Error {
    Error::VerifiedCopyInvalid(problem.into())
}

fn kind_name(kind: ObjectType) -> Option<&'static str> {
    match kind {
        ObjectType::Commit => Some("commit"),
        ObjectType::Tree => Some("tree"),
        ObjectType::Blob => Some("blob"),
        _ => None,
    }
}

/// Writes objects into a fresh verified copy (the verifying container).
#[derive(Debug)]
pub struct Writer {
    objects: PathBuf,
    written: usize,
    bytes: u64,
}

impl Writer {
    /// Starts a copy in `dir`, which must be empty.
    pub fn create(dir: &Path) -> Result<Self> {
        let objects = dir.join(OBJECTS);
        std::fs::create_dir(&objects).map_err(|source| Error::WriteOutput {
            what: "the verified copy",
            path: objects.clone(),
            source,
        })?;
        Ok(Self {
            objects,
            written: 0,
            bytes: 0,
        })
    }

    /// Objects and bytes written.
    pub fn written(&self) -> (usize, u64) {
        (self.written, self.bytes)
    }

    /// Writes one object, whose id the caller has verified.
    pub fn put(&mut self, oid: Oid, kind: ObjectType, data: &[u8]) -> Result<()> {
        let name = kind_name(kind).ok_or_else(|| Error::ObjectInvalid {
            oid: oid.to_string(),
            problem: format!("a {kind} has no place in a reviewed range"),
        })?;
        if data.len() > MAX_OBJECT_BYTES {
            return Err(Error::ObjectInvalid {
                oid: oid.to_string(),
                problem: format!(
                    "{} bytes, more than the {MAX_OBJECT_BYTES} publish copies",
                    data.len()
                ),
            });
        }
        if self.written >= MAX_OBJECTS {
            return Err(Error::TooLarge {
                what: "the reviewed range (in objects)",
                limit: MAX_OBJECTS as u64,
            });
        }
        let path = self.objects.join(oid.to_string());
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            write!(f, "{name} {}\0", data.len())?;
            f.write_all(data)?;
            f.sync_data()
        };
        write().map_err(|source| Error::WriteOutput {
            what: "an object of the verified copy",
            path: path.clone(),
            source,
        })?;
        self.written += 1;
        self.bytes += data.len() as u64;
        Ok(())
    }
}

/// Parses `<kind> <size>\0`; returns the kind and where the bytes start.
fn header(buf: &[u8]) -> std::result::Result<(ObjectType, usize, usize), String> {
    let nul = buf
        .iter()
        .take(MAX_HEADER)
        .position(|&b| b == 0)
        .ok_or("no object header")?;
    let text = std::str::from_utf8(&buf[..nul]).map_err(|_| "the header is not text")?;
    let (kind, size) = text.split_once(' ').ok_or("the header has no size")?;
    let kind = match kind {
        "commit" => ObjectType::Commit,
        "tree" => ObjectType::Tree,
        "blob" => ObjectType::Blob,
        other => return Err(format!("an object of kind {other:?}")),
    };
    let canonical = size.bytes().all(|b| b.is_ascii_digit())
        && !size.is_empty()
        && (size == "0" || !size.starts_with('0'));
    let size: usize = size
        .parse()
        .ok()
        .filter(|_| canonical)
        .ok_or("the size is not a plain decimal number")?;
    Ok((kind, size, nul + 1))
}

/// What [`import`] brought in.
#[derive(Debug, Default)]
pub struct Imported {
    /// Every object written, each verified by name, hash and format.
    pub ids: HashSet<Oid>,
    /// Their bytes.
    pub bytes: u64,
}

/// Reads the verified copy in `dir` into `repo`'s object database (the
/// pushing container), checking everything first: the directory holds
/// `objects/` and only that, which holds regular files named by 40 hex
/// digits and only those; each file is a header and exactly the size it
/// declares; the bytes hash to the file's name; commits and trees pass the
/// [`strict`] checks. The first problem fails the import, and nothing read
/// before it is used.
pub fn import(dir: &Path, repo: &Repository) -> Result<Imported> {
    let entries = list(dir, |name, ft| {
        (name == OBJECTS && ft.is_dir())
            .then_some(())
            .ok_or_else(|| invalid(format!("{name:?} has no place in it")))
    })?;
    if entries.is_empty() {
        return Err(invalid("it holds no objects directory"));
    }
    let objects = dir.join(OBJECTS);
    let mut names = Vec::new();
    list(&objects, |name, ft| {
        let ok = ft.is_file()
            && name.len() == 40
            && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            return Err(invalid(format!(
                "objects/{name:?} is not a regular file named by an object id"
            )));
        }
        if names.len() >= MAX_OBJECTS {
            return Err(invalid(format!("more than {MAX_OBJECTS} objects")));
        }
        names.push(name.to_owned());
        Ok(())
    })?;
    let odb = repo
        .odb()
        .map_err(Error::git("opening the clone's objects"))?;
    let mut imported = Imported::default();
    let mut buf = Vec::new();
    for name in names {
        let oid = Oid::from_str(&name).map_err(|_| invalid(format!("objects/{name}")))?;
        let bad = |problem: String| invalid(format!("objects/{name}: {problem}"));
        buf.clear();
        let path = objects.join(&name);
        // No symlink followed and no FIFO waited on, should one have taken
        // a listed file's place; what opened must be a regular file.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| bad(e.to_string()))?;
        let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        file.take((MAX_OBJECT_BYTES + MAX_HEADER + 1) as u64)
            .read_to_end(&mut buf)
            .map_err(|e| bad(e.to_string()))?;
        let (kind, size, start) = header(&buf).map_err(&bad)?;
        let data = &buf[start..];
        if size > MAX_OBJECT_BYTES || data.len() != size {
            return Err(bad(format!(
                "declares {size} bytes and holds {} (at most {MAX_OBJECT_BYTES})",
                data.len()
            )));
        }
        let hashed = Oid::hash_object(kind, data).map_err(|e| bad(e.message().to_owned()))?;
        if hashed != oid {
            return Err(bad(format!("its bytes hash to {hashed}")));
        }
        match kind {
            ObjectType::Commit => strict::commit(data).map(drop),
            ObjectType::Tree => strict::tree(data).map(drop),
            _ => Ok(()),
        }
        .map_err(&bad)?;
        let written = odb
            .write(kind, data)
            .map_err(|e| bad(format!("not accepted: {}", e.message())))?;
        if written != oid {
            return Err(bad(format!("written as {written}")));
        }
        imported.ids.insert(oid);
        imported.bytes += size as u64;
    }
    Ok(imported)
}

/// Lists `dir` (no symlink followed), calling `check` on each entry.
fn list(
    dir: &Path,
    mut check: impl FnMut(&str, std::fs::FileType) -> Result<()>,
) -> Result<Vec<String>> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| invalid(e.to_string()))?;
    if !meta.is_dir() {
        return Err(invalid(format!("{} is not a directory", dir.display())));
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| invalid(e.to_string()))? {
        let entry = entry.map_err(|e| invalid(e.to_string()))?;
        let ft = entry.file_type().map_err(|e| invalid(e.to_string()))?;
        let name = entry.file_name();
        let name = name
            .to_str()
            .ok_or_else(|| invalid("an entry whose name is not UTF-8"))?;
        check(name, ft)?;
        names.push(name.to_owned());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_canonical_or_refused() {
        assert_eq!(header(b"blob 3\0abc").unwrap(), (ObjectType::Blob, 3, 7));
        assert_eq!(header(b"tree 0\0").unwrap().1, 0);
        for bad in [
            &b"blob 03\0abc"[..],
            b"blob +3\0abc",
            b"blob\0",
            b"tag 3\0abc",
            b"blob 3",
            b"blob 99999999999999999999999999999999\0",
        ] {
            assert!(header(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
