//! The per-phase gateway credential: a Secret owned by the task, mounted
//! only into the container that uses it. For implement and review that is
//! the agent or reviewer container, whose files the runner's `exec` turns
//! into that CLI's environment (the gateway's model URL as its base URL,
//! the credential as its API key and in its proxy URLs); for prepare and
//! publish, the runner's git step, which reads only the proxy URL (those
//! phases have no model API). The credential is minted by the caller (it
//! needs the signing key); the Secret is deterministic for a (task, phase,
//! attempt).

use std::collections::BTreeMap;

use hermes_crds::RunPhase;
use hermes_crds::gateway::secret_keys;
use k8s_openapi::api::core::v1::Secret;

use super::{BuildInput, MAX_NAME, child_name};

/// `<task>-gw-<phase>` for the first attempt, `<task>-gw-<phase>-<n>` after.
pub fn credential_secret_name(task: &str, phase: RunPhase, attempt: u32) -> String {
    let suffix = if attempt <= 1 {
        format!("gw-{}", phase.as_str())
    } else {
        format!("gw-{}-{attempt}", phase.as_str())
    };
    child_name(task, &suffix, MAX_NAME)
}

/// The Secret holding `token`, the credential of `phase`'s attempt, with
/// the environment the agent CLI needs to use the gateway. `None` when the
/// phase does not use the gateway.
pub fn credential_secret(
    input: &BuildInput<'_>,
    phase: RunPhase,
    attempt: u32,
    token: &str,
) -> Option<Secret> {
    if !input.uses_gateway(phase) {
        return None;
    }
    let gateway = input.gateway?;
    let proxy = gateway.proxy_url(token);
    let mut data = BTreeMap::from([
        (secret_keys::HTTPS_PROXY.to_owned(), proxy.clone()),
        (secret_keys::HTTP_PROXY.to_owned(), proxy.clone()),
    ]);
    if matches!(phase, RunPhase::Implement | RunPhase::Review) {
        data.extend([
            (secret_keys::API_KEY.to_owned(), token.to_owned()),
            (secret_keys::BASE_URL.to_owned(), gateway.model_url()),
            (secret_keys::HTTPS_PROXY_LOWER.to_owned(), proxy.clone()),
            (secret_keys::HTTP_PROXY_LOWER.to_owned(), proxy),
        ]);
    }
    Some(Secret {
        metadata: input.meta(
            credential_secret_name(input.name(), phase, attempt),
            Some(phase),
        ),
        string_data: Some(data),
        type_: Some("Opaque".into()),
        immutable: Some(true),
        ..Secret::default()
    })
}
