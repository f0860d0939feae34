//! Types both resources use: egress rules, budgets, phase names.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::{Cidr, Usd};

/// One destination a phase's pods may open connections to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Destination network, as a CIDR naming a network address (`10.20.0.0/16`,
    /// `203.0.113.7/32`, `2001:db8::/48`). Cloud metadata addresses
    /// (169.254.169.254, fd00:ec2::254) are always excluded by the operator,
    /// whatever this says.
    pub cidr: Cidr,
    /// Addresses inside `cidr` to exclude, as CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub except: Vec<Cidr>,
    /// Destination ports. Empty means no port is allowed: list every port the
    /// phase needs (for example 443 for an HTTPS API).
    #[schemars(length(min = 1, max = 16))]
    pub ports: Vec<EgressPort>,
}

/// A destination port and protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressPort {
    /// Port number, 1 to 65535.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Transport protocol: TCP (default), UDP or SCTP.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A transport protocol, as NetworkPolicy names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Protocol {
    /// TCP.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

/// Limits on what the agent may spend in one implement run. Every field is
/// optional; a missing field means "the profile's value".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// Most model tokens (input plus output) the agent may use, 1 to 1,000,000,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub tokens: Option<i64>,
    /// Most money the agent may spend, in US dollars as a decimal string ("5", "12.50").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<Usd>,
    /// Most agent turns (model round trips), 1 to 10,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub turns: Option<i32>,
}

/// The phases of a task's run, in order. Each runs as its own Job.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum RunPhase {
    /// Clone the base branch into the task's repo volume (git read credentials only).
    Prepare,
    /// Run the agent in the volume (model credentials only; no git credentials).
    Implement,
    /// Check the change against the task and scope; decide or advise.
    Review,
    /// Merge and push the reviewed commit (git push credentials only).
    Publish,
}

impl RunPhase {
    /// Every phase, in run order.
    pub const ALL: [RunPhase; 4] = [
        RunPhase::Prepare,
        RunPhase::Implement,
        RunPhase::Review,
        RunPhase::Publish,
    ];

    /// The lowercase name used in labels and child names.
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Prepare => "prepare",
            RunPhase::Implement => "implement",
            RunPhase::Review => "review",
            RunPhase::Publish => "publish",
        }
    }
}
