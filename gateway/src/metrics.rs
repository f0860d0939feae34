//! The gateway's Prometheus metrics. Labels are bounded `&'static str`:
//! phases, outcomes, reasons, directions, token kinds; never a task or a
//! host name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of egress connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    /// The phase (`none` before a credential was verified).
    pub phase: &'static str,
    /// `allowed` or `refused`.
    pub outcome: &'static str,
    /// The refusal reason, `none` when allowed.
    pub reason: &'static str,
}

/// Labels of egress bytes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// The phase.
    pub phase: &'static str,
    /// `up` (client to destination) or `down`.
    pub direction: &'static str,
}

/// Labels of model requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The phase (`none` before a credential was verified).
    pub phase: &'static str,
    /// `forwarded`, `unauthorized`, `forbidden`, `budget`, `invalid`,
    /// `upstream-error`.
    pub outcome: &'static str,
}

/// Labels of counted tokens.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// The phase.
    pub phase: &'static str,
    /// `input`, `output`, `cache_read`, `cache_creation`.
    pub kind: &'static str,
}

/// A phase label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// The phase.
    pub phase: &'static str,
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// Egress connections by outcome.
    pub egress_connections: Family<ConnLabels, Counter>,
    /// Egress bytes relayed.
    pub egress_bytes: Family<BytesLabels, Counter>,
    /// Model API requests by outcome.
    pub model_requests: Family<RequestLabels, Counter>,
    /// Tokens counted.
    pub model_tokens: Family<TokenLabels, Counter>,
    /// Turns refused for the budget.
    pub budget_refusals: Family<PhaseLabels, Counter>,
    /// Time from a model request's arrival to the upstream's response head.
    pub model_latency: Family<PhaseLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hermes_gateway");
        let egress_connections = Family::<ConnLabels, Counter>::default();
        let egress_bytes = Family::<BytesLabels, Counter>::default();
        let model_requests = Family::<RequestLabels, Counter>::default();
        let model_tokens = Family::<TokenLabels, Counter>::default();
        let budget_refusals = Family::<PhaseLabels, Counter>::default();
        let model_latency = Family::<PhaseLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 16))) as fn() -> Histogram,
        );
        registry.register(
            "egress_connections",
            "Egress proxy connections and requests, by outcome",
            egress_connections.clone(),
        );
        registry.register(
            "egress_bytes",
            "Bytes relayed by the egress proxy",
            egress_bytes.clone(),
        );
        registry.register(
            "model_requests",
            "Model API requests, by outcome",
            model_requests.clone(),
        );
        registry.register(
            "model_tokens",
            "Tokens counted in model replies",
            model_tokens.clone(),
        );
        registry.register(
            "budget_refusals",
            "Model turns refused because the budget was spent",
            budget_refusals.clone(),
        );
        registry.register(
            "model_request_duration_seconds",
            "Time from a model request's arrival to the upstream's response head",
            model_latency.clone(),
        );
        Self {
            registry,
            egress_connections,
            egress_bytes,
            model_requests,
            model_tokens,
            budget_refusals,
            model_latency,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Counts a model request.
    pub fn request(&self, phase: &'static str, outcome: &'static str) {
        self.model_requests
            .get_or_create(&RequestLabels { phase, outcome })
            .inc();
    }
}
