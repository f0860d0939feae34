//! The plugin's one error type: a variant per failure site, each with a
//! message a person can act on.

use std::path::PathBuf;

use crate::taskfile::Problem;

/// Result with the plugin's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A task file (or the flags given with it) is invalid; nothing was sent.
    #[error("{} is not a valid task:\n{}", path.display(), list(problems))]
    InvalidTask {
        /// The task file.
        path: PathBuf,
        /// Every problem found, each naming the field and where it was set.
        problems: Vec<Problem>,
    },
    /// Some files of a batch are invalid.
    #[error("{invalid} of {total} task files are invalid{}", if *applied { "; the valid ones were applied" } else { "; nothing was applied" })]
    InvalidBatch {
        /// How many are invalid.
        invalid: usize,
        /// How many files the batch has.
        total: usize,
        /// Whether the valid ones were applied anyway.
        applied: bool,
    },
    /// A batch folder holds no task file.
    #[error("{} holds no task file (*.md)", path.display())]
    EmptyBatch {
        /// The folder.
        path: PathBuf,
    },
    /// A command-line value is invalid (beyond what the parser checks).
    #[error("{flag}: {message}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No kubeconfig or in-cluster configuration could be loaded.
    #[error("loading the Kubernetes configuration: {0}")]
    Config(String),
    /// A call to the API server failed.
    #[error("{what}: {}", api_message(source))]
    Api {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The task does not exist.
    #[error("hermestask {name:?} not found in namespace {namespace:?}")]
    TaskNotFound {
        /// The task's name.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// The command does not apply to the task in its current state.
    #[error("{0}")]
    Refused(String),
    /// A watched task was deleted.
    #[error("hermestask {0:?} was deleted while being watched")]
    Deleted(String),
    /// The watch stream ended with an error.
    #[error("watching hermestask {name:?}: {message}")]
    Watch {
        /// The task.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The task has no pods to read logs from.
    #[error("{0}")]
    NoLogs(String),
    /// The reviewed diff cannot be produced (no review, volume gone, ...).
    #[error("{0}")]
    DiffUnavailable(String),
    /// The pod that computes the diff failed.
    #[error("computing the diff failed: {0}")]
    DiffFailed(String),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Output could not be serialized.
    #[error("serializing the output: {0}")]
    Serialize(String),
    /// Output could not be written.
    #[error("writing the output")]
    Write(#[source] std::io::Error),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The API server's own message when there is one (it names the field),
/// else the client error.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

impl Error {
    /// Shorthand for [`Error::Api`].
    pub fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let what = what.into();
        move |source| Error::Api { what, source }
    }

    /// The HTTP status code of an API error, if this is one.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Error::Api {
                source: kube::Error::Api(s),
                ..
            } => Some(s.code),
            _ => None,
        }
    }
}
