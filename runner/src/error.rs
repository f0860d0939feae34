//! The runner's one error type: a variant per failure site.

use std::path::PathBuf;

use hermes_results::FailureReason;

/// Result with the runner's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can make a step fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument is missing, malformed or unsafe.
    #[error("invalid argument {arg}: {problem}")]
    InvalidArgument {
        /// The flag.
        arg: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A mounted input file could not be read.
    #[error("reading {what} {}", path.display())]
    ReadInput {
        /// What the file is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An output file could not be written.
    #[error("writing {what} {}", path.display())]
    WriteOutput {
        /// What the file is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The credentials directory does not hold a usable set of credentials.
    #[error("credentials: {0}")]
    Credentials(String),
    /// libgit2 could not be configured.
    #[error("hardening libgit2")]
    Init(#[source] git2::Error),
    /// A repository of the runner's own could not be created or opened.
    #[error("creating the repository in {}", path.display())]
    CreateRepo {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: git2::Error,
    },
    /// The remote refused the credentials.
    #[error("authentication to the remote failed")]
    Auth(#[source] git2::Error),
    /// Fetching from the remote failed.
    #[error("fetching {what} from the remote")]
    Fetch {
        /// The ref.
        what: String,
        /// Why.
        #[source]
        source: git2::Error,
    },
    /// The gateway's egress proxy refused the git host (its status and
    /// reason, as the proxy gave them when asked: host not listed for the
    /// phase, address refused, credential not valid, phase not running, host
    /// unreachable from the gateway).
    #[error("the gateway's egress proxy refused {target}: {reason} (HTTP {status})")]
    ProxyRefused {
        /// The git host's `host:port`.
        target: String,
        /// The proxy's status.
        status: u16,
        /// The proxy's reason.
        reason: String,
    },
    /// The gateway's egress proxy could not be reached at all.
    #[error("the gateway's egress proxy at {proxy} could not be reached")]
    ProxyUnreachable {
        /// The proxy's `host:port`.
        proxy: String,
        /// Why.
        #[source]
        source: git2::Error,
    },
    /// The base branch is not on the remote.
    #[error("base branch {0} not found on the remote")]
    BaseRefNotFound(String),
    /// The task file is not in the base commit's tree.
    #[error("task file {0} not found at the base commit")]
    TaskFileNotFound(String),
    /// The volume is not safe to read.
    #[error("the repo volume is unsafe to read: {0}")]
    VolumeUnsafe(String),
    /// The task branch is missing from the volume.
    #[error("branch {0} is missing from the repo volume")]
    BranchMissing(String),
    /// A commit is not the one expected or does not descend from the base.
    #[error("{0}")]
    CommitMismatch(String),
    /// An object read from the volume failed verification.
    #[error("object {oid} from the volume is invalid: {problem}")]
    ObjectInvalid {
        /// The object id.
        oid: String,
        /// What is wrong.
        problem: String,
    },
    /// The change does not merge cleanly into the base branch.
    #[error("the reviewed commit does not merge cleanly into the base branch ({} conflicting paths: {})", paths.len(), paths.join(", "))]
    MergeConflict {
        /// The conflicting paths (the first few).
        paths: Vec<String>,
    },
    /// A git operation on a repository of the runner's own failed.
    #[error("git: {op}")]
    Git {
        /// What was being done.
        op: &'static str,
        /// Why.
        #[source]
        source: git2::Error,
    },
    /// An output would be larger than its limit.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// What.
        what: &'static str,
        /// The limit, in bytes.
        limit: u64,
    },
    /// A JSON file could not be written.
    #[error("serializing {what}")]
    Json {
        /// What.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The result could not be encoded.
    #[error("encoding the result")]
    Encode(#[source] hermes_results::Error),
    /// The step could not take the network away from itself.
    #[error("refusing sockets to this step (seccomp): {0}")]
    Sandbox(String),
    /// The verified copy the publish pod's verifying container wrote is not
    /// what it writes: publish reads nothing of it.
    #[error("the verified copy is invalid: {0}")]
    VerifiedCopyInvalid(String),
}

impl Error {
    /// The stable reason the operator turns into a condition.
    pub fn reason(&self) -> FailureReason {
        if self.out_of_room() {
            return FailureReason::VolumeFull;
        }
        match self {
            Error::InvalidArgument { .. } | Error::ReadInput { .. } | Error::Credentials(_) => {
                FailureReason::InvalidInput
            }
            Error::Auth(_) => FailureReason::AuthenticationFailed,
            Error::Fetch { .. } | Error::ProxyUnreachable { .. } => FailureReason::CloneFailed,
            // The proxy refused the step's credential (407): its
            // authentication failed. Every other refusal: the remote could
            // not be reached.
            Error::ProxyRefused { status: 407, .. } => FailureReason::AuthenticationFailed,
            Error::ProxyRefused { .. } => FailureReason::CloneFailed,
            Error::BaseRefNotFound(_) => FailureReason::BaseRefNotFound,
            Error::TaskFileNotFound(_) => FailureReason::TaskFileNotFound,
            Error::VolumeUnsafe(_) => FailureReason::VolumeUnsafe,
            Error::BranchMissing(_) => FailureReason::BranchMissing,
            Error::CommitMismatch(_) => FailureReason::CommitMismatch,
            Error::ObjectInvalid { .. } | Error::VerifiedCopyInvalid(_) => {
                FailureReason::ObjectsInvalid
            }
            Error::MergeConflict { .. } => FailureReason::MergeConflict,
            Error::WriteOutput { .. }
            | Error::Init(_)
            | Error::CreateRepo { .. }
            | Error::Git { .. }
            | Error::TooLarge { .. }
            | Error::Json { .. }
            | Error::Encode(_)
            | Error::Sandbox(_) => FailureReason::Internal,
        }
    }

    /// Whether the step failed because a filesystem it writes to is full
    /// (ENOSPC, or EDQUOT where quotas apply), whatever it was doing: what
    /// libgit2 reports carries the system's wording after its own.
    fn out_of_room(&self) -> bool {
        let io = |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
        let git = |e: &git2::Error| {
            e.class() == git2::ErrorClass::Os
                && ["No space left on device", "Disk quota exceeded"]
                    .iter()
                    .any(|m| e.message().contains(m))
        };
        match self {
            Error::WriteOutput { source, .. } => io(source),
            Error::Init(source)
            | Error::CreateRepo { source, .. }
            | Error::Fetch { source, .. }
            | Error::Git { source, .. } => git(source),
            _ => false,
        }
    }

    /// The error and its sources, joined: the message for a person.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    /// Shorthand for [`Error::Git`].
    pub fn git(op: &'static str) -> impl FnOnce(git2::Error) -> Error {
        move |source| Error::Git { op, source }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn arg(arg: &'static str, problem: impl Into<String>) -> Error {
        Error::InvalidArgument {
            arg,
            problem: problem.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full filesystem is the task's own use, whatever the step was
    /// doing when it hit it; the wording of another OS error is not.
    #[test]
    fn a_full_filesystem_is_volume_full_whatever_the_step_was_doing() {
        let os = |message: &str| {
            git2::Error::new(git2::ErrorCode::GenericError, git2::ErrorClass::Os, message)
        };
        let full = [
            Error::Git {
                op: "writing the index",
                source: os(
                    "failed to write '/workspace/repo/.git/index.lock': No space left on device",
                ),
            },
            Error::Fetch {
                what: "refs/heads/main".into(),
                source: os("failed to write pack: Disk quota exceeded"),
            },
            Error::WriteOutput {
                what: "--output",
                path: "/hermes/scratch/out".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            },
        ];
        for e in full {
            assert_eq!(e.reason(), FailureReason::VolumeFull, "{}", e.chain());
        }
        let other = [
            Error::Git {
                op: "writing the index",
                source: os("failed to write '/x': Permission denied"),
            },
            Error::Git {
                op: "reading",
                // Only the system's own wording, from an OS error, counts.
                source: git2::Error::new(
                    git2::ErrorCode::GenericError,
                    git2::ErrorClass::Reference,
                    "ref 'No space left on device' not found",
                ),
            },
            Error::WriteOutput {
                what: "--output",
                path: "/x".into(),
                source: std::io::Error::from_raw_os_error(libc::EACCES),
            },
        ];
        for e in other {
            assert_ne!(e.reason(), FailureReason::VolumeFull, "{}", e.chain());
        }
    }
}
