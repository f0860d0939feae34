//! Path globs of scope and protected paths, compiled as hermes-crds'
//! `ScopeGlob` does: `/` separates components and `*` stays within one.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::{Error, Result};

/// A compiled list of globs.
#[derive(Debug, Clone)]
pub struct Globs {
    set: GlobSet,
    empty: bool,
}

impl Globs {
    /// Compiles the globs; `arg` names the flag in errors.
    pub fn new(arg: &'static str, globs: &[String]) -> Result<Self> {
        let mut b = GlobSetBuilder::new();
        for g in globs {
            let glob = GlobBuilder::new(g)
                .literal_separator(true)
                .backslash_escape(false)
                .build()
                .map_err(|e| Error::arg(arg, format!("{g:?}: {}", e.kind())))?;
            b.add(glob);
        }
        let set = b.build().map_err(|e| Error::arg(arg, e.to_string()))?;
        Ok(Self {
            set,
            empty: globs.is_empty(),
        })
    }

    /// Whether any glob matches `path`.
    pub fn matches(&self, path: &str) -> bool {
        !self.empty && self.set.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stays_within_a_component() {
        let g = Globs::new("--scope", &["src/*.rs".to_owned(), "docs/**".to_owned()]).unwrap();
        assert!(g.matches("src/lib.rs"));
        assert!(!g.matches("src/a/lib.rs"));
        assert!(g.matches("docs/a/b.md"));
        assert!(!g.matches("Cargo.toml"));
    }

    /// A leading `**/` matches at the root too: one built-in glob covers
    /// `CODEOWNERS` and `docs/CODEOWNERS`.
    #[test]
    fn a_leading_double_star_matches_at_the_root() {
        let g = Globs::new("--protected", &["**/CODEOWNERS".to_owned()]).unwrap();
        assert!(g.matches("CODEOWNERS"));
        assert!(g.matches("docs/CODEOWNERS"));
        assert!(!g.matches("CODEOWNERS.md"));
    }
}
