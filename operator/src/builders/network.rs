//! NetworkPolicies: a default deny for every task pod of the namespace, and
//! one allow list per distinct egress a phase gets. DNS goes only to the
//! cluster resolver; cloud metadata addresses are excluded from every rule,
//! whatever the profile says.
//!
//! The allow lists are shared, not per task: a policy is named by a hash of
//! its profile and its rules (`hermes-egress-<hash>`), it selects the pods
//! labelled `hermes.dev/egress=<hash>`, and each phase pod carries the hash
//! of exactly the rules it may use. A thousand tasks under one profile need
//! a handful of policies instead of five thousand: five thousand writes
//! fewer for the API server and five thousand policies fewer for every
//! node's enforcer. A task that narrows its egress gets policies of its own
//! hash. The deny (`hermes-deny`) selects every pod carrying a task label,
//! so a pod that no allow list selects (the plugin's diff pod) has no
//! network at all, and each allow list denies ingress too.

use std::collections::BTreeMap;

use hermes_crds::{EgressRule, RunPhase};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};
use sha2::{Digest, Sha256};

use super::{BuildInput, LABEL_EGRESS, LABEL_TASK};

/// Cloud metadata addresses no pod may reach.
pub const METADATA_ADDRESSES: [&str; 2] = ["169.254.169.254/32", "fd00:ec2::254/128"];

/// One ipBlock rule, with the metadata addresses it contains excepted. A rule
/// that is nothing but a metadata address is dropped.
fn ip_rule(rule: &EgressRule) -> Option<NetworkPolicyEgressRule> {
    let net: IpNet = rule.cidr.0.parse().ok()?;
    let mut except: Vec<String> = rule.except.iter().map(|c| c.0.clone()).collect();
    for m in METADATA_ADDRESSES {
        let Ok(meta) = m.parse::<IpNet>() else {
            continue;
        };
        if net == meta || meta.contains(&net) {
            return None;
        }
        if net.contains(&meta) && !except.iter().any(|e| e == m) {
            except.push(m.to_owned());
        }
    }
    let ports = rule
        .ports
        .iter()
        .map(|p| NetworkPolicyPort {
            port: Some(IntOrString::Int(p.port)),
            protocol: Some(
                match p.protocol {
                    hermes_crds::Protocol::Tcp => "TCP",
                    hermes_crds::Protocol::Udp => "UDP",
                    hermes_crds::Protocol::Sctp => "SCTP",
                }
                .into(),
            ),
            end_port: None,
        })
        .collect();
    Some(NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: rule.cidr.0.clone(),
                except: (!except.is_empty()).then_some(except),
            }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(ports),
    })
}

fn dns_rule(input: &BuildInput<'_>) -> NetworkPolicyEgressRule {
    let dns = &input.profile.dns;
    let port = |proto: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(53)),
        protocol: Some(proto.into()),
        end_port: None,
    };
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    dns.namespace.0.clone(),
                )])),
                match_expressions: None,
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(dns.pod_labels.clone()),
                match_expressions: None,
            }),
            ip_block: None,
        }]),
        ports: Some(vec![port("UDP"), port("TCP")]),
    }
}

/// The namespace's default deny: every pod carrying a task label.
pub const DENY_POLICY: &str = "hermes-deny";

/// The metadata of a shared policy (labelled as the operator's, so its
/// watch sees it; owned by nothing here: see [`network_policies`]).
fn shared_meta(name: String, namespace: Option<String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace,
        labels: Some(BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "hermes".to_owned()),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "hermes-operator".to_owned(),
            ),
        ])),
        ..ObjectMeta::default()
    }
}

/// Denies ingress and egress to every pod of the namespace with a task label.
pub fn deny_policy(namespace: Option<String>) -> NetworkPolicy {
    NetworkPolicy {
        metadata: shared_meta(DENY_POLICY.to_owned(), namespace),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: LABEL_TASK.to_owned(),
                    operator: "Exists".to_owned(),
                    values: None,
                }]),
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: None,
            egress: None,
        }),
    }
}

/// The gateway's pods: on the model and proxy ports for implement and
/// review, on the proxy port alone for the git phases (no model API).
fn gateway_rule(gateway: &crate::gateway::Endpoint, phase: RunPhase) -> NetworkPolicyEgressRule {
    let ports = match phase {
        RunPhase::Implement | RunPhase::Review => {
            vec![gateway.model_target_port, gateway.proxy_target_port]
        }
        RunPhase::Prepare | RunPhase::Publish => vec![gateway.proxy_target_port],
    };
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_owned(),
                    gateway.namespace.clone(),
                )])),
                match_expressions: None,
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(gateway.pod_labels.clone()),
                match_expressions: None,
            }),
            ip_block: None,
        }]),
        ports: Some(
            ports
                .into_iter()
                .map(|p| NetworkPolicyPort {
                    port: Some(IntOrString::Int(p)),
                    protocol: Some("TCP".into()),
                    end_port: None,
                })
                .collect(),
        ),
    }
}

/// The rules `phase` may use: DNS to the cluster resolver (or, for a phase
/// that uses the gateway, the gateway and no DNS: it resolves names for
/// the pod), then the effective allow list.
fn egress_rules(input: &BuildInput<'_>, phase: RunPhase) -> Vec<NetworkPolicyEgressRule> {
    let mut egress = match input.gateway.filter(|_| input.uses_gateway(phase)) {
        Some(gateway) => vec![gateway_rule(gateway, phase)],
        None => vec![dns_rule(input)],
    };
    egress.extend(input.effective.egress(phase).iter().filter_map(ip_rule));
    egress
}

/// The hash naming `phase`'s allow list: of the profile's name and the
/// rules, so two profiles never share (nor fight over) one policy.
pub fn egress_label(input: &BuildInput<'_>, phase: RunPhase) -> String {
    let rules = serde_json::to_string(&egress_rules(input, phase)).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(input.task.spec.profile.0.as_bytes());
    h.update([0]);
    h.update(rules.as_bytes());
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The allow list of `phase`: selects the pods labelled with its hash.
pub fn egress_policy(input: &BuildInput<'_>, phase: RunPhase) -> NetworkPolicy {
    let hash = egress_label(input, phase);
    NetworkPolicy {
        metadata: shared_meta(format!("hermes-egress-{hash}"), input.namespace()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(LABEL_EGRESS.to_owned(), hash)])),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: None,
            egress: Some(egress_rules(input, phase)),
        }),
    }
}

/// Every policy the task's pods need: the namespace's deny first, then one
/// allow list per distinct egress of its phases. None is owned by the task
/// (others use them); the operator makes the allow lists owned by the
/// profile, so they go with it, and leaves the deny to the namespace.
pub fn network_policies(input: &BuildInput<'_>) -> Vec<NetworkPolicy> {
    let mut out = vec![deny_policy(input.namespace())];
    for phase in RunPhase::ALL {
        let np = egress_policy(input, phase);
        if !out.iter().any(|o| o.metadata.name == np.metadata.name) {
            out.push(np);
        }
    }
    out
}
