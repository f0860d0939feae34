//! `HermesProfile`: the boundary a platform team draws around tasks.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use crate::hosts::HostRule;
use crate::rules::{CelRule, add_cel};
use crate::shared::{Budget, EgressRule, RunPhase};
use crate::validation::{Cidr, ImageRef, ObjectName, ScopeGlob, Timeout, Usd};

/// The boundary tasks run in, set by the platform team: images, egress,
/// credentials, isolation, budgets and caps. A HermesTask names a profile and
/// may narrow it, never widen it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "hermes.dev",
    version = "v1alpha1",
    kind = "HermesProfile",
    plural = "hermesprofiles",
    shortname = "hp",
    category = "hermes",
    namespaced,
    derive = "PartialEq",
    doc = "A HermesProfile is the boundary HermesTasks run in, set by the platform team: images, per-phase egress, credentials, isolation, budgets and concurrency caps. Tasks may narrow it, never widen it.",
    printcolumn = r#"{"name":"Agent","type":"string","jsonPath":".spec.agent.image","description":"The agent image."}"#,
    printcolumn = r#"{"name":"Max-Running","type":"integer","jsonPath":".spec.concurrency.maxRunning","description":"Tasks that may run at once."}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = profile_spec_rules)]
pub struct HermesProfileSpec {
    /// The implementing agent: image and command. It runs in the implement
    /// phase with the task file as its prompt.
    pub agent: AgentSpec,

    /// The reviewing agent: image and command. It runs in the review phase
    /// with read-only tools and a prompt of its own ("is this safe to keep?").
    pub reviewer: AgentSpec,

    /// The runner: this project's static binary that does every git step.
    pub runner: RunnerSpec,

    /// Pull policy for every image: Always, IfNotPresent (default) or Never.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,

    /// Where each phase's pods may connect, besides the cluster DNS resolver.
    /// Everything else is denied. Cloud metadata addresses are always denied.
    #[serde(default)]
    pub egress: PhaseEgress,

    /// The cluster DNS resolver the pods may query (and nothing else on port 53).
    /// Pods of phases that use the gateway (implement and review, when `model`
    /// is set) get no DNS at all: the gateway resolves names for them.
    #[serde(default)]
    pub dns: DnsSpec,

    /// The model gateway: where the agent's and the reviewer's model requests
    /// go. Set, the agent and the reviewer never hold a model key: each pod
    /// gets a credential of its own for the Hermes gateway, which holds the
    /// real key, forwards to the upstream named here, counts usage and stops
    /// the run at its budget; their pods may reach the gateway and nothing
    /// else but `egress` CIDR rules. Mutually exclusive with `secrets.model`
    /// and `secrets.reviewerModel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,

    /// Names of Secrets (in the task's namespace) holding credentials. Each is
    /// mounted only in the phase that needs it, as files.
    #[serde(default)]
    pub secrets: ProfileSecrets,

    /// How the git phases (prepare, publish) trust the remote.
    #[serde(default, skip_serializing_if = "GitSpec::is_empty")]
    pub git: GitSpec,

    /// RuntimeClass for every task pod (for example gVisor or Kata), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<ObjectName>,

    /// The per-task repository volume.
    #[serde(default)]
    pub volume: VolumeSpec,

    /// Default and largest timeout of each phase. A missing phase uses the
    /// built-in values (prepare 10m/30m, implement 30m/2h, review 15m/1h,
    /// publish 10m/30m).
    #[serde(default)]
    pub timeouts: ProfileTimeouts,

    /// Default and largest agent budget. Tasks may lower the defaults, never
    /// go above the caps.
    #[serde(default)]
    pub budget: BudgetBounds,

    /// How many times a phase is retried after an infrastructure failure
    /// (eviction, node loss, missing image, deleted pod), 0 to 10; default 2.
    /// Agent failures and timeouts are never retried.
    #[serde(default = "default_infrastructure_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub infrastructure_retries: i32,

    /// How many of this profile's tasks may be in flight.
    #[serde(default)]
    pub concurrency: Concurrency,

    /// The deterministic checks the review applies whatever the model says.
    #[serde(default)]
    pub policy: ReviewPolicy,
}

fn profile_spec_rules(schema: &mut Schema) {
    add_cel(
        schema,
        &[CelRule::new(
            "!has(self.model) || !has(self.secrets) || (!has(self.secrets.model) && !has(self.secrets.reviewerModel))",
            "secrets.model and secrets.reviewerModel must be unset when model is set: with the gateway, no task pod holds a model key",
        )
        .at(".model"),
        CelRule::new(
            "!has(self.egress) || !has(self.egress.hosts) || has(self.model)",
            "egress.hosts needs model: host names are reached through the Hermes gateway's proxy",
        )
        .at(".egress.hosts")],
    );
}

/// The model gateway's routes for a profile's agents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Where the implementing agent's model requests go.
    pub agent: ModelUpstream,
    /// Where the reviewer's go. Unset: the same as `agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<ModelUpstream>,
    /// Prices per million tokens, by model. The gateway prices what it counts
    /// with this table; a cost budget cannot run a model the table lacks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub prices: Vec<ModelPrice>,
}

impl ModelSpec {
    /// The upstream of a phase's agent CLI (review: the reviewer's).
    pub fn upstream(&self, phase: RunPhase) -> &ModelUpstream {
        match phase {
            RunPhase::Review => self.reviewer.as_ref().unwrap_or(&self.agent),
            _ => &self.agent,
        }
    }

    /// The price row of `model`: an exact name first, else the longest
    /// prefix pattern (`claude-sonnet-4-5*`) that matches.
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        self.prices.iter().find(|p| p.model == model).or_else(|| {
            self.prices
                .iter()
                .filter_map(|p| {
                    let prefix = p.model.strip_suffix('*')?;
                    model.starts_with(prefix).then_some((prefix.len(), p))
                })
                .max_by_key(|(n, _)| *n)
                .map(|(_, p)| p)
        })
    }
}

/// One model API upstream of the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelUpstream {
    /// The API's base URL (`https://api.anthropic.com`): http or https, no
    /// user information, no query. Request paths are appended to it.
    #[schemars(
        length(min = 8, max = 2048),
        regex(pattern = r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~%!$&'()*+,;=:@/\-]*)?$")
    )]
    pub url: String,
    /// The name of a model credential the gateway holds (the chart's
    /// `gateway.modelCredentials`): its key is sent upstream in place of the
    /// task's gateway credential.
    pub credential: ObjectName,
}

/// Prices of one model (or of the models a `*` pattern names), in US dollars
/// per million tokens, as decimal strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelPrice {
    /// The model name the API reports (`claude-sonnet-4-5`), or a prefix
    /// ending in `*` (`claude-sonnet-4-5*`); an exact name wins, then the
    /// longest prefix.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9._:@/\-]+\*?$")
    )]
    pub model: String,
    /// Input tokens (cache reads and writes excluded).
    pub input: Usd,
    /// Output tokens.
    pub output: Usd,
    /// Tokens read from the prompt cache.
    pub cache_read: Usd,
    /// Tokens written to the prompt cache.
    pub cache_write: Usd,
}

fn default_infrastructure_retries() -> i32 {
    2
}

/// An agent's image and command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// Container image, by digest in production (`...@sha256:...`).
    pub image: ImageRef,
    /// The command to run, with its arguments (for example `["claude", "-p"]`).
    /// The task file is passed on standard input; the working directory is
    /// the repository.
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 1024)))]
    pub command: Vec<String>,
    /// CPU, memory and ephemeral storage for the container. Every limit left
    /// out is filled in: with the request for it, else the default (1 CPU,
    /// 2Gi memory, 2Gi ephemeral storage). Unset: those limits, CPU and
    /// memory requested as limited, 256Mi of ephemeral storage requested. A
    /// pod that goes over its memory or ephemeral-storage limits ends the
    /// task `ResourceExhausted`, never retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The runner's image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerSpec {
    /// Container image of the runner, by digest in production.
    pub image: ImageRef,
    /// CPU, memory and ephemeral storage for runner containers, filled in as
    /// the agent's are (defaults 250m CPU, 256Mi memory, 5Gi ephemeral
    /// storage: publish clones the base into its scratch space).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// When the node pulls an image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull when the node does not have it.
    #[default]
    IfNotPresent,
    /// Never pull; the node must have it.
    Never,
}

/// Egress allowlists, one per phase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseEgress {
    /// Where the prepare pod may connect: the git host, by address (with the
    /// gateway, `hosts.prepare` reaches it by name instead).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub prepare: Vec<EgressRule>,
    /// Where the implement pod (the agent) may connect: the model API and
    /// whatever else the platform team allows (package mirrors, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub implement: Vec<EgressRule>,
    /// Where the review pod may connect: the model API only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub review: Vec<EgressRule>,
    /// Where the publish pod may connect: the git host, by address (with the
    /// gateway, `hosts.publish` reaches it by name instead).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub publish: Vec<EgressRule>,
    /// Host names each phase's pods may reach through the gateway's egress
    /// proxy (HTTP CONNECT and plain-HTTP forwarding): the way to allow
    /// endpoints behind CDNs whose addresses no CIDR can follow, and the git
    /// host by name for prepare and publish. Needs `model` (the gateway).
    #[serde(default, skip_serializing_if = "PhaseHosts::is_empty")]
    pub hosts: PhaseHosts,
}

/// Host allowlists of the gateway's egress proxy, one per phase, and the
/// private ranges a listed name may resolve into. Implement and review reach
/// their hosts only through the proxy; prepare and publish reach the git
/// host through it by name when their lists name it (their CIDR rules in
/// `egress.prepare` and `egress.publish` stay for hosts with fixed
/// addresses).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseHosts {
    /// Hosts the prepare pod may reach through the gateway's egress proxy:
    /// the git host, by name (`{name: git.example.com, ports: [443]}`). The
    /// runner clones the base branch through the proxy with the prepare
    /// phase's own gateway credential.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub prepare: Vec<HostRule>,
    /// Hosts the implement pod (the agent) may reach: package registries,
    /// documentation sites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub implement: Vec<HostRule>,
    /// Hosts the review pod may reach (usually none: the model API is the
    /// gateway's own route).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub review: Vec<HostRule>,
    /// Hosts the publish pod may reach through the gateway's egress proxy:
    /// the git host, by name. The runner fetches the base branch and pushes
    /// through the proxy with the publish phase's own gateway credential.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub publish: Vec<HostRule>,
    /// Private address ranges (RFC 1918, unique-local, shared) a listed host
    /// may resolve into, for registries inside the company network. The
    /// proxy refuses every other private address, and always loopback,
    /// link-local and metadata addresses, the cluster's own ranges and the
    /// nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub allow_private: Vec<Cidr>,
}

impl PhaseHosts {
    /// Whether no phase lists a host.
    pub fn is_empty(&self) -> bool {
        self.prepare.is_empty()
            && self.implement.is_empty()
            && self.review.is_empty()
            && self.publish.is_empty()
            && self.allow_private.is_empty()
    }

    /// The host allowlist of one phase.
    pub fn get(&self, phase: RunPhase) -> &[HostRule] {
        match phase {
            RunPhase::Prepare => &self.prepare,
            RunPhase::Implement => &self.implement,
            RunPhase::Review => &self.review,
            RunPhase::Publish => &self.publish,
        }
    }
}

impl PhaseEgress {
    /// The allowlist of one phase.
    pub fn get(&self, phase: RunPhase) -> &[EgressRule] {
        match phase {
            RunPhase::Prepare => &self.prepare,
            RunPhase::Implement => &self.implement,
            RunPhase::Review => &self.review,
            RunPhase::Publish => &self.publish,
        }
    }
}

/// The cluster DNS resolver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsSpec {
    /// Namespace of the resolver's pods. Default `kube-system`.
    #[serde(default = "default_dns_namespace")]
    pub namespace: ObjectName,
    /// Labels of the resolver's pods. Default `k8s-app: kube-dns`.
    #[serde(default = "default_dns_labels")]
    pub pod_labels: BTreeMap<String, String>,
}

impl Default for DnsSpec {
    fn default() -> Self {
        Self {
            namespace: default_dns_namespace(),
            pod_labels: default_dns_labels(),
        }
    }
}

fn default_dns_namespace() -> ObjectName {
    ObjectName("kube-system".into())
}

fn default_dns_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())])
}

/// Secret names for each kind of credential.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSecrets {
    /// Model API credentials, mounted in implement and review only (each
    /// file becomes an environment variable of the agent CLI alone, e.g.
    /// `ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ObjectName>,
    /// Model API credentials for the reviewer alone, when review should use
    /// its own key, quota, model or endpoint. Unset: review uses `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer_model: Option<ObjectName>,
    /// Git read credentials, mounted in prepare only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_read: Option<ObjectName>,
    /// Git push credentials, mounted in publish only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_push: Option<ObjectName>,
}

/// How the git phases trust the remote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitSpec {
    /// Name of a ConfigMap (in the task's namespace) whose key `ca.crt` holds
    /// a PEM CA bundle an `https://` remote's certificate may chain to, for a
    /// git host with a private CA. It adds to the runner image's system
    /// roots, never replaces them, and is mounted read-only into the runner
    /// container of prepare and publish only (the agent and the reviewer
    /// never see it). Unset: the system roots alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<ObjectName>,
}

impl GitSpec {
    /// Nothing set.
    pub fn is_empty(&self) -> bool {
        self.ca_bundle.is_none()
    }
}

/// The per-task repository volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Size of the volume. Default `2Gi`.
    #[serde(default = "default_volume_size")]
    pub size: Quantity,
    /// StorageClass of the volume; unset uses the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<ObjectName>,
    /// How long the volume is kept after the task ends, for inspection
    /// (`30m`, `24h`). Unset: deleted when the task ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_after_completion: Option<Timeout>,
}

impl Default for VolumeSpec {
    fn default() -> Self {
        Self {
            size: default_volume_size(),
            storage_class_name: None,
            retain_after_completion: None,
        }
    }
}

fn default_volume_size() -> Quantity {
    Quantity("2Gi".into())
}

/// Timeout bounds for each phase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileTimeouts {
    /// Bounds for cloning the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<TimeoutBounds>,
    /// Bounds for the agent's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implement: Option<TimeoutBounds>,
    /// Bounds for the review Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<TimeoutBounds>,
    /// Bounds for merging and pushing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<TimeoutBounds>,
}

impl ProfileTimeouts {
    /// The bounds of one phase, if set.
    pub fn get(&self, phase: RunPhase) -> Option<&TimeoutBounds> {
        match phase {
            RunPhase::Prepare => self.prepare.as_ref(),
            RunPhase::Implement => self.implement.as_ref(),
            RunPhase::Review => self.review.as_ref(),
            RunPhase::Publish => self.publish.as_ref(),
        }
    }
}

/// A phase's default timeout and the most a task may ask for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = timeout_bounds_rules)]
pub struct TimeoutBounds {
    /// The timeout of a task that sets none.
    pub default: Timeout,
    /// The largest timeout a task may set; at least `default`.
    pub max: Timeout,
}

/// A CEL test that a Timeout string is well formed, so `duration()` is safe.
fn timeout_ok(expr: &str) -> String {
    format!(
        "{expr}.matches(r'{}') && {expr}.matches(r'[0-9]')",
        Timeout::PATTERN
    )
}

fn timeout_bounds_rules(schema: &mut Schema) {
    add_cel(
        schema,
        &[CelRule::new(
            format!(
                "!({} && {}) || duration(self.default) <= duration(self.max)",
                timeout_ok("self.default"),
                timeout_ok("self.max")
            ),
            "the default timeout must not exceed max",
        )
        .at(".default")],
    );
}

/// Default and largest budgets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = budget_bounds_rules)]
pub struct BudgetBounds {
    /// The budget of a task that sets none.
    #[serde(default)]
    pub default: Budget,
    /// The largest budget a task may set, field by field.
    #[serde(default)]
    pub max: Budget,
}

fn budget_bounds_rules(schema: &mut Schema) {
    add_cel(
        schema,
        &[
            CelRule::new(
                "!has(self.default.tokens) || !has(self.max.tokens) || self.default.tokens <= self.max.tokens",
                "budget.default.tokens must not exceed budget.max.tokens",
            )
            .at(".default.tokens"),
            CelRule::new(
                "!has(self.default.turns) || !has(self.max.turns) || self.default.turns <= self.max.turns",
                "budget.default.turns must not exceed budget.max.turns",
            )
            .at(".default.turns"),
            CelRule::new(
                format!(
                    "!has(self.default.costUsd) || !has(self.max.costUsd) || !self.default.costUsd.matches(r'{p}') || !self.max.costUsd.matches(r'{p}') || double(self.default.costUsd) <= double(self.max.costUsd)",
                    p = crate::validation::Usd::PATTERN
                ),
                "budget.default.costUsd must not exceed budget.max.costUsd",
            )
            .at(".default.costUsd"),
        ],
    );
}

/// Concurrency caps of a profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Concurrency {
    /// Tasks of this profile that may run at once (preparing, implementing,
    /// reviewing or publishing); more wait in `Queued`. At least 1; default 10.
    #[serde(default = "default_max_running")]
    #[schemars(range(min = 1, max = 10_000))]
    pub max_running: i32,
    /// Tasks of this profile that may wait for a person's review at once.
    /// While it is full, no new task of this profile starts: work nobody can
    /// review is not worth starting. At least 1; default 20.
    #[serde(default = "default_max_awaiting_review")]
    #[schemars(range(min = 1, max = 10_000))]
    pub max_awaiting_review: i32,
}

impl Default for Concurrency {
    fn default() -> Self {
        Self {
            max_running: default_max_running(),
            max_awaiting_review: default_max_awaiting_review(),
        }
    }
}

fn default_max_running() -> i32 {
    10
}

fn default_max_awaiting_review() -> i32 {
    20
}

/// The review's deterministic checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewPolicy {
    /// What a change outside the task's scope is: `reject` (default) or `warn`.
    #[serde(default)]
    pub out_of_scope: OutOfScope,
    /// Globs of paths no task may change, whatever its scope, added to the
    /// built-in ones (CI configuration, code owners, git hooks managers, dev
    /// containers: see `removeBuiltInProtectedPaths`). Agent settings
    /// (`**/.claude/**`, `**/.mcp.json`, `**/CLAUDE.md`, `**/AGENTS.md` and
    /// the other CLIs' equivalents) and git's own paths are refused by the
    /// review's checks whatever this says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub protected_paths: Vec<ScopeGlob>,
    /// Built-in protected paths this profile lets tasks change, each named
    /// exactly (for a repository whose CI a task is meant to edit, say).
    /// Nothing else removes one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub remove_built_in_protected_paths: Vec<BuiltInProtectedPath>,
    /// Largest file the change may add or grow to, in bytes; default 1 MiB.
    #[serde(default = "default_max_file_bytes")]
    #[schemars(range(min = 1, max = 1_073_741_824))]
    pub max_file_bytes: i64,
}

impl Default for ReviewPolicy {
    fn default() -> Self {
        Self {
            out_of_scope: OutOfScope::default(),
            protected_paths: Vec::new(),
            remove_built_in_protected_paths: Vec::new(),
            max_file_bytes: default_max_file_bytes(),
        }
    }
}

impl ReviewPolicy {
    /// The globs the review checks: the built-in ones this profile did not
    /// remove, then the profile's own, each once.
    pub fn effective_protected_paths(&self) -> Vec<String> {
        let mut out: Vec<String> = BuiltInProtectedPath::ALL
            .iter()
            .filter(|b| !self.remove_built_in_protected_paths.contains(b))
            .map(|b| b.glob().to_owned())
            .collect();
        for g in &self.protected_paths {
            if !out.contains(&g.0) {
                out.push(g.0.clone());
            }
        }
        out
    }
}

/// The built-in protected paths, each a variant whose serialized name is
/// its glob: one list for the schema's enum, the docs and the review.
macro_rules! built_in_protected_paths {
    ($($(#[doc = $doc:literal])* $variant:ident = $glob:literal,)*) => {
        /// A built-in protected path, by its glob.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        pub enum BuiltInProtectedPath {
            $($(#[doc = $doc])* #[serde(rename = $glob)] $variant,)*
        }

        impl BuiltInProtectedPath {
            /// Every built-in protected path, in order.
            pub const ALL: &[Self] = &[$(Self::$variant,)*];

            /// The glob.
            pub fn glob(self) -> &'static str {
                match self {
                    $(Self::$variant => $glob,)*
                }
            }
        }
    };
}

built_in_protected_paths! {
    /// GitHub: workflows, actions, Dependabot, code owners, Copilot's instructions.
    GitHub = ".github/**",
    /// GitLab CI.
    GitLabCi = ".gitlab-ci.yml",
    /// GitLab's templates and CI includes.
    GitLab = ".gitlab/**",
    /// CircleCI.
    CircleCi = ".circleci/**",
    /// Buildkite.
    Buildkite = ".buildkite/**",
    /// Travis CI.
    Travis = ".travis.yml",
    /// Drone.
    Drone = ".drone.yml",
    /// Azure Pipelines.
    AzurePipelines = "azure-pipelines.yml",
    /// Bitbucket Pipelines.
    BitbucketPipelines = "bitbucket-pipelines.yml",
    /// Jenkins, at any depth.
    Jenkinsfile = "**/Jenkinsfile",
    /// Code owners, at any depth (root, `docs/`, `.github/`).
    CodeOwners = "**/CODEOWNERS",
    /// pre-commit's hooks (run on developers' machines).
    PreCommit = ".pre-commit-config.yaml",
    /// Husky's git hooks.
    Husky = ".husky/**",
    /// Dev container definitions (commands run when one is built).
    DevContainer = ".devcontainer/**",
    /// A dev container definition at the root.
    DevContainerJson = ".devcontainer.json",
    /// Git attributes at any depth (filter and diff drivers, export rules).
    GitAttributes = "**/.gitattributes",
}

fn default_max_file_bytes() -> i64 {
    1 << 20
}

/// What a change outside the task's scope is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OutOfScope {
    /// A reject finding: the change cannot be kept.
    #[default]
    Reject,
    /// A warning finding.
    Warn,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::HostPattern;

    fn rule(name: &str) -> HostRule {
        HostRule {
            name: HostPattern(name.into()),
            ports: vec![443],
        }
    }

    #[test]
    fn each_phase_gets_its_own_host_list() {
        let hosts = PhaseHosts {
            prepare: vec![rule("git.example")],
            implement: vec![rule("packages.example.com")],
            review: vec![rule("docs.rs")],
            publish: vec![rule("push.git.example")],
            allow_private: Vec::new(),
        };
        assert_eq!(hosts.get(RunPhase::Prepare), &[rule("git.example")]);
        assert_eq!(
            hosts.get(RunPhase::Implement),
            &[rule("packages.example.com")]
        );
        assert_eq!(hosts.get(RunPhase::Review), &[rule("docs.rs")]);
        assert_eq!(hosts.get(RunPhase::Publish), &[rule("push.git.example")]);
    }

    #[test]
    fn a_prepare_or_publish_list_alone_is_not_empty_and_is_serialized() {
        assert!(PhaseHosts::default().is_empty());
        for hosts in [
            PhaseHosts {
                prepare: vec![rule("git.example")],
                ..Default::default()
            },
            PhaseHosts {
                publish: vec![rule("git.example")],
                ..Default::default()
            },
        ] {
            assert!(!hosts.is_empty());
            let egress = PhaseEgress {
                hosts: hosts.clone(),
                ..Default::default()
            };
            let json = serde_json::to_value(&egress).unwrap_or_else(|e| panic!("{e}"));
            let back: PhaseEgress =
                serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back.hosts, hosts, "{json}");
        }
    }
}
