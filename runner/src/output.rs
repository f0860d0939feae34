//! Writing the step's one result to the termination-message path.

use std::path::{Path, PathBuf};

use hermes_results::{Failure, FailureReason, Step, StepResult};

use crate::{Error, Result};

/// Environment variable naming the termination-message path.
pub const TERMINATION_PATH_ENV: &str = "HERMES_TERMINATION_PATH";

/// The termination-message path: `$HERMES_TERMINATION_PATH`, else the
/// Kubernetes default.
pub fn termination_path() -> PathBuf {
    std::env::var_os(TERMINATION_PATH_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(
            || PathBuf::from(hermes_results::TERMINATION_MESSAGE_PATH),
            PathBuf::from,
        )
}

/// Encodes the result to fit and writes it to `path`.
pub fn write_result(path: &Path, result: StepResult) -> Result<()> {
    let step_text = match hermes_results::encode_fitting(result) {
        Ok(t) => t,
        Err(e) => {
            // The only result that cannot be cut to fit: say so in one that does.
            tracing::error!(error = %e, "result does not fit");
            hermes_results::encode_fitting(StepResult::Failed(Failure {
                step: Step::Prepare,
                reason: FailureReason::Internal,
                message: format!("the result could not be encoded: {e}"),
            }))
            .map_err(Error::Encode)?
        }
    };
    std::fs::write(path, step_text).map_err(|source| Error::WriteOutput {
        what: "termination message",
        path: path.to_owned(),
        source,
    })
}

/// Writes a JSON file of the review bundle.
pub fn write_json<T: serde::Serialize>(path: &Path, what: &'static str, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(|source| Error::Json { what, source })?;
    std::fs::write(path, text).map_err(|source| Error::WriteOutput {
        what,
        path: path.to_owned(),
        source,
    })
}
