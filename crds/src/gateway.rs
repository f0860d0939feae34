//! The contract between the operator and `hermes-gateway`: the credential
//! the operator mints for one phase of one task, which the gateway verifies
//! without any lookup, and the usage report the gateway serves, which the
//! operator records in the task's status.
//!
//! ```text
//!   operator ── mint(key, claims) ──> Secret <task>-gw-<phase>[-n] ──> agent container
//!                                                                       │ x-api-key / Proxy-Authorization
//!   gateway  <─────────────────────────────────────────────────────────┘
//!     verify(key, token) → claims → task status says the phase runs? → forward, count
//!   operator <── GET /v1/usage (per gateway instance) ── counters by (task uid, phase)
//! ```
//!
//! A credential is `hgw1.<claims>.<mac>`: the claims as base64url JSON and an
//! HMAC-SHA256 over them under the key the operator and the gateway share.
//! It is deterministic for a (task uid, phase, attempt), so re-applying the
//! Secret on every reconcile never changes it, and unforgeable without the
//! key (256 bits of MAC). It is useless once its phase has ended: the gateway
//! honours it only while the task's status shows that phase and attempt.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::shared::RunPhase;
use crate::status::{UsageFigures, UsageMeter};

/// The first field of every credential: the format's version.
pub const CREDENTIAL_PREFIX: &str = "hgw1";
/// The user name a proxy credential carries (`http://hermes:<token>@gateway:port`).
pub const PROXY_USER: &str = "hermes";
/// Shortest signing key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;
/// Longest credential accepted (the claims are small; anything longer is junk).
pub const MAX_CREDENTIAL_LEN: usize = 2048;
/// The purpose string whose MAC is the bearer token of `/v1/usage`.
const USAGE_READER: &[u8] = b"hermes-gateway usage reader v1";

type HmacSha256 = Hmac<Sha256>;

/// The key both sides hold (a Secret the chart creates).
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// Why a key or a credential was refused. Never carries the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The signing key is shorter than [`MIN_KEY_BYTES`].
    #[error("the gateway signing key has {0} bytes, at least {MIN_KEY_BYTES} are required")]
    KeyTooShort(usize),
    /// Not of the form `hgw1.<claims>.<mac>`.
    #[error("not a Hermes gateway credential")]
    Malformed,
    /// The MAC does not match: forged, or minted under another key.
    #[error("the credential's signature does not match")]
    BadSignature,
    /// The claims are not the JSON this version expects.
    #[error("the credential's claims do not parse")]
    BadClaims,
}

impl SigningKey {
    /// A key from the bytes of its file (surrounding whitespace dropped).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CredentialError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_KEY_BYTES {
            return Err(CredentialError::KeyTooShort(trimmed.len()));
        }
        Ok(Self(trimmed.to_vec()))
    }

    fn mac(&self, data: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(data);
        mac
    }

    /// The credential for `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        // Serializing a struct of strings and numbers cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let body = format!("{CREDENTIAL_PREFIX}.{}", URL_SAFE_NO_PAD.encode(json));
        let tag = self.mac(body.as_bytes()).finalize().into_bytes();
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The claims of `token`, if this key signed it.
    pub fn verify(&self, token: &str) -> Result<Claims, CredentialError> {
        if token.len() > MAX_CREDENTIAL_LEN {
            return Err(CredentialError::Malformed);
        }
        let (body, tag) = token.rsplit_once('.').ok_or(CredentialError::Malformed)?;
        let claims_b64 = body
            .strip_prefix(CREDENTIAL_PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .ok_or(CredentialError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| CredentialError::Malformed)?;
        // Constant-time comparison.
        self.mac(body.as_bytes())
            .verify_slice(&tag)
            .map_err(|_| CredentialError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(claims_b64)
            .map_err(|_| CredentialError::BadClaims)?;
        serde_json::from_slice(&json).map_err(|_| CredentialError::BadClaims)
    }

    /// The bearer token that reads `/v1/usage` (the operator's; never a task's).
    pub fn usage_reader_token(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(USAGE_READER).finalize().into_bytes())
    }

    /// Whether `token` is the usage reader's token (constant time).
    pub fn is_usage_reader(&self, token: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(token)
            .is_ok_and(|tag| self.mac(USAGE_READER).verify_slice(&tag).is_ok())
    }
}

/// What a credential stands for: one phase and attempt of one task, and the
/// budget the operator computed for it (the task narrowed by its profile).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Claims {
    /// The task's namespace.
    pub namespace: String,
    /// The task's name.
    pub task: String,
    /// The task's uid: a task deleted and created again under the same name
    /// is another task.
    pub uid: String,
    /// The phase whose pod holds the credential.
    pub phase: RunPhase,
    /// The phase's infrastructure attempt (status.attempt), from 1.
    pub attempt: u32,
    /// The limits the gateway enforces on this task's phase.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub budget: Limits,
}

/// Budget limits as the gateway enforces them: each one, if set, is reached
/// when the counted figure is at least the limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Most tokens: input, cache reads and writes, and output together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Most cost, in millionths of a US dollar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micros: Option<u64>,
    /// Most model requests (turns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns: Option<u64>,
}

/// The budget figure that ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Spent {
    /// Tokens.
    Tokens,
    /// Cost.
    Cost,
    /// Turns.
    Turns,
}

impl Spent {
    /// The figure's name as messages write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Spent::Tokens => "tokens",
            Spent::Cost => "cost",
            Spent::Turns => "turns",
        }
    }
}

impl Limits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_none() && self.cost_micros.is_none() && self.turns.is_none()
    }

    /// The first limit `used` has reached, if any.
    pub fn reached(&self, used: &Figures) -> Option<Spent> {
        if self.tokens.is_some_and(|t| used.tokens() >= t) {
            return Some(Spent::Tokens);
        }
        if self
            .cost_micros
            .is_some_and(|c| used.cost_pico_usd >= c.saturating_mul(PICO_PER_MICRO))
        {
            return Some(Spent::Cost);
        }
        if self.turns.is_some_and(|t| used.turns >= t) {
            return Some(Spent::Turns);
        }
        None
    }

    /// "tokens 1200 of 1000" for the figure `spent`, as messages say it.
    pub fn describe(&self, spent: Spent, used: &Figures) -> String {
        match spent {
            Spent::Tokens => format!(
                "tokens {} of {}",
                used.tokens(),
                self.tokens.unwrap_or_default()
            ),
            Spent::Cost => format!(
                "cost {} of {} USD",
                used.cost_usd(),
                format_pico(self.cost_micros.unwrap_or_default() * PICO_PER_MICRO)
            ),
            Spent::Turns => format!("turns {} of {}", used.turns, self.turns.unwrap_or_default()),
        }
    }
}

/// Picodollars in a microdollar.
pub const PICO_PER_MICRO: u64 = 1_000_000;

/// Counted usage: exact integers (cost in picodollars, 10⁻¹² USD), never floats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Figures {
    /// Model requests (turns).
    #[serde(default)]
    pub turns: u64,
    /// Input tokens, cache reads and writes excluded.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_creation_tokens: u64,
    /// Cost in picodollars, priced by the profile's table.
    #[serde(default)]
    pub cost_pico_usd: u64,
    /// Tokens of models the price table does not list (not in the cost).
    #[serde(default)]
    pub unpriced_tokens: u64,
}

impl Figures {
    /// Every token: input, cache reads and writes, output.
    pub fn tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_creation_tokens)
    }

    /// The sum of two counts, field by field (saturating).
    pub fn plus(&self, o: &Figures) -> Figures {
        Figures {
            turns: self.turns.saturating_add(o.turns),
            input_tokens: self.input_tokens.saturating_add(o.input_tokens),
            output_tokens: self.output_tokens.saturating_add(o.output_tokens),
            cache_read_tokens: self.cache_read_tokens.saturating_add(o.cache_read_tokens),
            cache_creation_tokens: self
                .cache_creation_tokens
                .saturating_add(o.cache_creation_tokens),
            cost_pico_usd: self.cost_pico_usd.saturating_add(o.cost_pico_usd),
            unpriced_tokens: self.unpriced_tokens.saturating_add(o.unpriced_tokens),
        }
    }

    /// The cost as a decimal string of US dollars with at most nine
    /// decimals, rounded up (a bill is never understated).
    pub fn cost_usd(&self) -> String {
        format_pico(self.cost_pico_usd)
    }
}

/// Picodollars as a decimal string of dollars, at most nine decimals, rounded up.
pub fn format_pico(pico: u64) -> String {
    let nano = pico.div_ceil(1_000);
    let whole = nano / 1_000_000_000;
    let frac = nano % 1_000_000_000;
    if frac == 0 {
        whole.to_string()
    } else {
        let frac = format!("{frac:09}");
        format!("{whole}.{}", frac.trim_end_matches('0'))
    }
}

/// What one gateway instance counted for one phase of one task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageEntry {
    /// The task's namespace.
    pub namespace: String,
    /// The task's name.
    pub task: String,
    /// The task's uid.
    pub uid: String,
    /// The phase.
    pub phase: RunPhase,
    /// What this instance forwarded and counted, since it started.
    pub figures: Figures,
    /// Requests this instance refused because the budget was spent.
    #[serde(default)]
    pub refused_for_budget: u64,
}

/// The body of `GET /v1/usage`: one instance's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageReport {
    /// This gateway process (random per start): counts of different
    /// instances add up; one instance's count only grows.
    pub instance: String,
    /// Every phase this instance counted for and still remembers.
    #[serde(default)]
    pub entries: Vec<UsageEntry>,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl UsageMeter {
    /// The meter of `instance` for `phase` holding `figures`.
    pub fn new(
        instance: &str,
        phase: RunPhase,
        figures: &Figures,
        refused_for_budget: u64,
    ) -> Self {
        UsageMeter {
            instance: instance.to_owned(),
            phase,
            turns: to_i64(figures.turns),
            input_tokens: to_i64(figures.input_tokens),
            output_tokens: to_i64(figures.output_tokens),
            cache_read_tokens: to_i64(figures.cache_read_tokens),
            cache_creation_tokens: to_i64(figures.cache_creation_tokens),
            cost_pico_usd: to_i64(figures.cost_pico_usd),
            unpriced_tokens: to_i64(figures.unpriced_tokens),
            refused_for_budget: to_i64(refused_for_budget),
        }
    }

    /// The figures this meter holds.
    pub fn figures(&self) -> Figures {
        Figures {
            turns: to_u64(self.turns),
            input_tokens: to_u64(self.input_tokens),
            output_tokens: to_u64(self.output_tokens),
            cache_read_tokens: to_u64(self.cache_read_tokens),
            cache_creation_tokens: to_u64(self.cache_creation_tokens),
            cost_pico_usd: to_u64(self.cost_pico_usd),
            unpriced_tokens: to_u64(self.unpriced_tokens),
        }
    }
}

/// The sum of `meters` for `phase`, leaving out `except` (an instance whose
/// live count the caller holds itself).
pub fn meters_total(meters: &[UsageMeter], phase: RunPhase, except: Option<&str>) -> Figures {
    meters
        .iter()
        .filter(|m| m.phase == phase && Some(m.instance.as_str()) != except)
        .fold(Figures::default(), |acc, m| acc.plus(&m.figures()))
}

impl From<&Figures> for UsageFigures {
    fn from(f: &Figures) -> Self {
        UsageFigures {
            turns: to_i64(f.turns),
            input_tokens: to_i64(f.input_tokens),
            output_tokens: to_i64(f.output_tokens),
            cache_read_tokens: to_i64(f.cache_read_tokens),
            cache_creation_tokens: to_i64(f.cache_creation_tokens),
            cost_usd: Some(f.cost_usd()),
        }
    }
}

/// Keys of the per-phase credential Secret, each a file the runner's `exec`
/// turns into an environment variable of the agent CLI alone.
pub mod secret_keys {
    /// The model API key the CLI sends (`x-api-key`): the gateway credential.
    pub const API_KEY: &str = "ANTHROPIC_API_KEY";
    /// The gateway's model API, as the CLI's base URL.
    pub const BASE_URL: &str = "ANTHROPIC_BASE_URL";
    /// The egress proxy with the credential, for HTTPS.
    pub const HTTPS_PROXY: &str = "HTTPS_PROXY";
    /// The egress proxy with the credential, for plain HTTP.
    pub const HTTP_PROXY: &str = "HTTP_PROXY";
    /// Lower-case forms (curl reads `http_proxy` only in lower case).
    pub const HTTPS_PROXY_LOWER: &str = "https_proxy";
    /// Lower-case form of [`HTTP_PROXY`].
    pub const HTTP_PROXY_LOWER: &str = "http_proxy";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn claims() -> Claims {
        Claims {
            namespace: "team-a".into(),
            task: "fix-parser".into(),
            uid: "0d7c4f1e-1111-2222-3333-444455556666".into(),
            phase: RunPhase::Implement,
            attempt: 1,
            budget: Limits {
                tokens: Some(1000),
                cost_micros: Some(2_500_000),
                turns: Some(5),
            },
        }
    }

    #[test]
    fn a_minted_credential_verifies_to_its_claims_and_is_deterministic() {
        let t = key().mint(&claims());
        assert!(t.starts_with("hgw1."));
        assert_eq!(key().verify(&t), Ok(claims()));
        assert_eq!(t, key().mint(&claims()));
    }

    #[test]
    fn a_credential_under_another_key_or_edited_is_refused() {
        let t = key().mint(&claims());
        let other = SigningKey::from_bytes(&[8u8; 32]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(other.verify(&t), Err(CredentialError::BadSignature));
        // Claims swapped for another task's, MAC kept.
        let mut c = claims();
        c.task = "other".into();
        let forged_body = key().mint(&c);
        let (body, _) = forged_body.rsplit_once('.').unwrap_or_default();
        let (_, tag) = t.rsplit_once('.').unwrap_or_default();
        assert_eq!(
            key().verify(&format!("{body}.{tag}")),
            Err(CredentialError::BadSignature)
        );
        for junk in ["", "hgw1", "hgw1..", "sk-ant-xyz", "hgw2.e30.AAAA"] {
            assert!(key().verify(junk).is_err(), "{junk:?}");
        }
        assert_eq!(
            key().verify(&"a".repeat(MAX_CREDENTIAL_LEN + 1)),
            Err(CredentialError::Malformed)
        );
    }

    #[test]
    fn a_short_key_is_refused() {
        assert_eq!(
            SigningKey::from_bytes(b"  short \n").map(|_| ()),
            Err(CredentialError::KeyTooShort(5))
        );
    }

    #[test]
    fn the_usage_reader_token_is_not_a_task_credential() {
        let k = key();
        assert!(k.is_usage_reader(&k.usage_reader_token()));
        assert!(!k.is_usage_reader(&k.mint(&claims())));
        assert!(k.verify(&k.usage_reader_token()).is_err());
    }

    #[test]
    fn limits_are_reached_at_the_limit_not_before() {
        let l = claims().budget;
        let mut f = Figures {
            input_tokens: 600,
            output_tokens: 399,
            ..Figures::default()
        };
        assert_eq!(l.reached(&f), None);
        f.output_tokens = 400;
        assert_eq!(l.reached(&f), Some(Spent::Tokens));
        assert_eq!(l.describe(Spent::Tokens, &f), "tokens 1000 of 1000");
        let f = Figures {
            cost_pico_usd: 2_500_000 * PICO_PER_MICRO,
            ..Figures::default()
        };
        assert_eq!(l.reached(&f), Some(Spent::Cost));
        assert_eq!(l.describe(Spent::Cost, &f), "cost 2.5 of 2.5 USD");
        let f = Figures {
            turns: 5,
            ..Figures::default()
        };
        assert_eq!(l.reached(&f), Some(Spent::Turns));
    }

    #[test]
    fn cost_is_formatted_exactly_and_rounded_up() {
        assert_eq!(format_pico(0), "0");
        assert_eq!(format_pico(3_000_000), "0.000003");
        assert_eq!(format_pico(1), "0.000000001");
        assert_eq!(format_pico(1_000_000_000_000), "1");
        assert_eq!(format_pico(12_345_678_901_234), "12.345678902");
    }
}
