//! Commit and tree objects checked in Rust, byte by byte, before libgit2
//! parses them: the format `git fsck` enforces, and nothing looser. Used on
//! both sides of publish's split: the verifying container refuses a
//! malformed object with its reason, and the pushing container checks every
//! object of the verified copy again, because it trusts no file it did not
//! write (a verifier taken over through a parser bug writes what it likes).
//!
//! What is checked:
//! - commit: `tree <id>`, then `parent <id>` lines, then `author` and
//!   `committer` identities (`Name <email> <seconds> <±hhmm>`), then other
//!   headers with their continuation lines, then an optional blank line and
//!   the message; no NUL anywhere in the headers;
//! - tree: entries `<mode> <name>\0<20-byte id>` with a mode git writes, a
//!   name that is not empty, `.`, `..`, a `.git` in any case, and holds no
//!   `/` or NUL, in git's order and without duplicates.

use git2::Oid;

/// The id length of the object format the runner supports (SHA-1).
const ID_LEN: usize = 20;

/// What an entry of a tree points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A blob (file or symlink).
    Blob,
    /// A subtree.
    Tree,
    /// A commit of another repository (a submodule): not copied.
    Gitlink,
}

/// A checked commit: what it references.
#[derive(Debug, PartialEq, Eq)]
pub struct Commit {
    /// Its tree.
    pub tree: Oid,
    /// Its parents, in order.
    pub parents: Vec<Oid>,
}

fn hex_id(field: &str, hex: &[u8]) -> Result<Oid, String> {
    let ok = hex.len() == 2 * ID_LEN && hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !ok {
        return Err(format!("the {field} id is not 40 lowercase hex digits"));
    }
    std::str::from_utf8(hex)
        .ok()
        .and_then(|h| Oid::from_str(h).ok())
        .ok_or_else(|| format!("the {field} id does not parse"))
}

/// `Name <email> <seconds> <±hhmm>`, as git writes it.
fn identity(field: &str, value: &[u8]) -> Result<(), String> {
    let bad = |why: &str| Err(format!("the {field} identity {why}"));
    let Some(lt) = value.iter().position(|&b| b == b'<') else {
        return bad("has no <email>");
    };
    let Some(gt) = value[lt..].iter().position(|&b| b == b'>').map(|i| lt + i) else {
        return bad("has no closing >");
    };
    if value[..lt].contains(&b'>') || value[lt + 1..gt].contains(&b'<') {
        return bad("has a stray < or >");
    }
    let rest = &value[gt + 1..];
    let Some(rest) = rest.strip_prefix(b" ") else {
        return bad("has no date");
    };
    let mut parts = rest.split(|&b| b == b' ');
    let (Some(secs), Some(tz), None) = (parts.next(), parts.next(), parts.next()) else {
        return bad("date is not `<seconds> <zone>`");
    };
    if secs.is_empty() || secs.len() > 20 || !secs.iter().all(u8::is_ascii_digit) {
        return bad("date is not a number of seconds");
    }
    let zone_ok =
        tz.len() == 5 && matches!(tz[0], b'+' | b'-') && tz[1..].iter().all(u8::is_ascii_digit);
    if !zone_ok {
        return bad("time zone is not ±hhmm");
    }
    Ok(())
}

/// Checks a commit object's bytes; returns what it references.
pub fn commit(data: &[u8]) -> Result<Commit, String> {
    // Headers end at the first blank line or at the end of the object.
    let (headers, _message) = match find(data, b"\n\n") {
        Some(i) => (&data[..=i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    if headers.contains(&0) {
        return Err("a NUL byte in the commit's headers".into());
    }
    if !headers.ends_with(b"\n") {
        return Err("the commit's headers do not end with a newline".into());
    }
    let mut lines = headers[..headers.len() - 1]
        .split(|&b| b == b'\n')
        .peekable();
    let tree = match lines.next().and_then(|l| l.strip_prefix(b"tree ")) {
        Some(hex) => hex_id("tree", hex)?,
        None => return Err("the commit does not start with its tree".into()),
    };
    let mut parents = Vec::new();
    while let Some(hex) = lines.peek().and_then(|l| l.strip_prefix(b"parent ")) {
        parents.push(hex_id("parent", hex)?);
        lines.next();
    }
    for field in ["author", "committer"] {
        let prefix = format!("{field} ");
        match lines.next().and_then(|l| l.strip_prefix(prefix.as_bytes())) {
            Some(value) => identity(field, value)?,
            None => return Err(format!("the commit has no {field} where git puts it")),
        }
    }
    // Other headers (encoding, gpgsig, mergetag, ...): `key value`, and
    // continuation lines starting with a space.
    for line in lines {
        if line.starts_with(b" ") {
            continue;
        }
        let key = line.split(|&b| b == b' ').next().unwrap_or_default();
        let key_ok = !key.is_empty()
            && key
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !key_ok || line.len() == key.len() {
            return Err("a commit header is not `key value`".into());
        }
        if matches!(key, b"tree" | b"parent" | b"author" | b"committer") {
            return Err(format!(
                "a second or misplaced {} header",
                String::from_utf8_lossy(key)
            ));
        }
    }
    Ok(Commit { tree, parents })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `name` is `.git` in any case, or a name some file systems fold
/// to it (`.git.`, `.git ` and NTFS's `git~1` short name), as fsck refuses.
fn is_dot_git(name: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    let trimmed = {
        let mut n = lower.as_slice();
        while let [rest @ .., b'.' | b' '] = n {
            n = rest;
        }
        n
    };
    trimmed == b".git" || lower == b"git~1"
}

/// git's tree order: names compared as bytes, a subtree's as if it ended
/// with `/`.
fn tree_order(a: &[u8], a_tree: bool, b: &[u8], b_tree: bool) -> std::cmp::Ordering {
    let end = |tree: bool| if tree { Some(b'/') } else { None };
    let n = a.len().min(b.len());
    match a[..n].cmp(&b[..n]) {
        std::cmp::Ordering::Equal => {}
        other => return other,
    }
    let ca = a.get(n).copied().or(end(a_tree));
    let cb = b.get(n).copied().or(end(b_tree));
    ca.cmp(&cb)
}

/// Checks a tree object's bytes; returns its entries' ids and kinds.
pub fn tree(data: &[u8]) -> Result<Vec<(Oid, EntryKind)>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut previous: Option<(&[u8], bool)> = None;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("a tree entry has no mode")?;
        let kind = match &rest[..space] {
            b"100644" | b"100755" | b"120000" => EntryKind::Blob,
            b"40000" => EntryKind::Tree,
            b"160000" => EntryKind::Gitlink,
            mode => {
                return Err(format!(
                    "a tree entry has mode {:?}, which git does not write",
                    String::from_utf8_lossy(&mode[..mode.len().min(8)])
                ));
            }
        };
        rest = &rest[space + 1..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or("a tree entry's name does not end")?;
        let name = &rest[..nul];
        if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
            return Err("a tree entry has an empty, `.`, `..` or slashed name".into());
        }
        if is_dot_git(name) {
            return Err("a tree entry is named .git (in some spelling)".into());
        }
        rest = &rest[nul + 1..];
        if rest.len() < ID_LEN {
            return Err("a tree entry's id is cut short".into());
        }
        let id = Oid::from_bytes(&rest[..ID_LEN]).map_err(|e| e.message().to_owned())?;
        rest = &rest[ID_LEN..];
        let is_tree = kind == EntryKind::Tree;
        if let Some((prev, prev_tree)) = previous {
            match tree_order(prev, prev_tree, name, is_tree) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Err("a tree has duplicate entries".into()),
                std::cmp::Ordering::Greater => {
                    return Err("a tree's entries are not in git's order".into());
                }
            }
            if prev == name {
                return Err("a tree has duplicate entries".into());
            }
        }
        previous = Some((name, is_tree));
        out.push((id, kind));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
    const P: &str = "0123456789abcdef0123456789abcdef01234567";

    fn who(field: &str) -> String {
        format!("{field} A U Thor <a@example.org> 1700000000 +0100\n")
    }

    #[test]
    fn commits_as_git_writes_them_pass() {
        let plain = format!(
            "tree {T}\nparent {P}\n{}{}\nmessage\n",
            who("author"),
            who("committer")
        );
        let c = commit(plain.as_bytes()).unwrap();
        assert_eq!(c.tree.to_string(), T);
        assert_eq!(c.parents.len(), 1);
        let signed = format!(
            "tree {T}\n{}{}encoding UTF-8\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n abc\n -----END PGP SIGNATURE-----\n\nroot\n",
            who("author"),
            who("committer")
        );
        assert!(commit(signed.as_bytes()).unwrap().parents.is_empty());
        let no_message = format!("tree {T}\n{}{}", who("author"), who("committer"));
        assert!(commit(no_message.as_bytes()).is_ok());
    }

    #[test]
    fn malformed_commits_are_refused_with_a_reason() {
        let a = who("author");
        let c = who("committer");
        for (bad, why) in [
            (format!("parent {P}\ntree {T}\n{a}{c}\nm"), "start"),
            (format!("tree {}\n{a}{c}\nm", T.to_uppercase()), "hex"),
            (format!("tree {T}\n{c}{a}\nm"), "author"),
            (format!("tree {T}\n{a}\nm"), "committer"),
            (format!("tree {T}\nauthor nobody 1 +0000\n{c}\nm"), "email"),
            (format!("tree {T}\nauthor A <a> x +0000\n{c}\nm"), "seconds"),
            (format!("tree {T}\nauthor A <a> 1 0100\n{c}\nm"), "zone"),
            (format!("tree {T}\n{a}{c}tree {T}\n\nm"), "second"),
            (format!("tree {T}\n{a}{c}bad\0header x\n\nm"), "NUL"),
            (format!("tree {T}\n{a}{c}novalue\n\nm"), "key value"),
        ] {
            let e = commit(bad.as_bytes()).unwrap_err();
            assert!(
                e.to_lowercase().contains(&why.to_lowercase()),
                "{why}: {e} for {bad:?}"
            );
        }
    }

    fn entry(mode: &str, name: &[u8]) -> Vec<u8> {
        let mut e = format!("{mode} ").into_bytes();
        e.extend_from_slice(name);
        e.push(0);
        e.extend_from_slice(&[7u8; 20]);
        e
    }

    #[test]
    fn trees_in_git_order_pass_and_name_their_entries() {
        // "a.txt" < "a" as a tree ("a/") < "a0": git's order, not plain bytes.
        let data = [
            entry("100644", b"a.txt"),
            entry("40000", b"a"),
            entry("100755", b"a0"),
            entry("120000", b"link"),
            entry("160000", b"sub"),
        ]
        .concat();
        let entries = tree(&data).unwrap();
        let kinds: Vec<_> = entries.iter().map(|(_, k)| *k).collect();
        use EntryKind::*;
        assert_eq!(kinds, [Blob, Tree, Blob, Blob, Gitlink]);
        assert!(tree(b"").unwrap().is_empty());
    }

    #[test]
    fn malformed_trees_are_refused_with_a_reason() {
        let cut = {
            let mut e = entry("100644", b"x");
            e.truncate(e.len() - 3);
            e
        };
        for (data, why) in [
            (entry("100664", b"x"), "mode"),
            (entry("040000", b"x"), "mode"),
            (entry("100644", b""), "empty"),
            (entry("100644", b".."), "empty"),
            (entry("40000", b".GIT"), ".git"),
            (entry("40000", b".git."), ".git"),
            (entry("40000", b"GIT~1"), ".git"),
            (entry("100644", b"a/b"), "slashed"),
            (
                [entry("100644", b"b"), entry("100644", b"a")].concat(),
                "order",
            ),
            (
                [entry("100644", b"a"), entry("100644", b"a")].concat(),
                "duplicate",
            ),
            (
                [entry("100644", b"a"), entry("40000", b"a")].concat(),
                "duplicate",
            ),
            (cut, "cut short"),
            (b"100644 no-nul".to_vec(), "does not end"),
        ] {
            let e = tree(&data).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
