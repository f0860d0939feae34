//! NetworkPolicies: a default deny for every task pod of the namespace, and
//! one allow list per distinct egress a phase gets. DNS goes only to the
//! cluster resolver; cloud metadata addresses are excluded from every rule,
//! whatever the profile says, and a wide rule (`0.0.0.0/0`) reaches neither
//! link-local addresses, nor the API server, nor a node, unless the rule
//! names them itself ([`excepts`]).
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

/// Cloud metadata and credential-agent addresses no pod may reach, whatever
/// a profile says: a rule naming one is dropped, and every wider rule
/// excepts them. AWS, GCP, Azure, OCI and DigitalOcean (169.254.169.254),
/// ECS task and EKS Pod Identity credentials (169.254.170.2, .23), their
/// IPv6 forms (fd00:ec2::254, ::23), GCP's IPv6 metadata (fd20:ce::254),
/// Alibaba Cloud (100.100.100.200) and OCI's legacy address (192.0.0.192).
pub const METADATA_ADDRESSES: [&str; 8] = [
    "169.254.169.254/32",
    "169.254.170.2/32",
    "169.254.170.23/32",
    "100.100.100.200/32",
    "192.0.0.192/32",
    "fd00:ec2::254/128",
    "fd00:ec2::23/128",
    "fd20:ce::254/128",
];

/// Ranges every rule wider than them excepts, unless the rule names them
/// (lies inside one): link-local in both families (metadata services, node
/// agents such as a node-local DNS cache), AWS's whole IPv6 service range,
/// and Azure's host address (168.63.129.16: DNS, health and the VM agent's
/// channel). The cluster's own addresses (API server, nodes, the platform
/// team's list) are excepted the same way ([`BuildInput::cluster`]).
pub const GUARDED_RANGES: [&str; 4] = [
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::/32",
    "168.63.129.16/32",
];

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().filter_map(|c| c.parse().ok()).collect()
}

/// What `net` excepts: `user`'s list, then every guarded range and cluster
/// address strictly inside `net` (one `net` itself lies in is named by the
/// rule, and stays), then every metadata address strictly inside it. An
/// entry already covered by an earlier one is not repeated. `None`: the
/// rule is nothing but a metadata address, and goes.
pub fn excepts(net: IpNet, user: &[IpNet], cluster: &[IpNet]) -> Option<Vec<IpNet>> {
    let metadata = nets(&METADATA_ADDRESSES);
    if metadata.iter().any(|m| m.contains(&net)) {
        return None;
    }
    let mut out: Vec<IpNet> = user.to_vec();
    let guarded = nets(&GUARDED_RANGES);
    for candidate in guarded.iter().chain(cluster).chain(&metadata) {
        let inside = net != *candidate && net.contains(candidate);
        if inside && !out.iter().any(|e| e.contains(candidate)) {
            out.push(*candidate);
        }
    }
    Some(out)
}

/// One ipBlock rule, with what it must not reach excepted ([`excepts`]). A
/// rule that is nothing but a metadata address is dropped.
fn ip_rule(rule: &EgressRule, cluster: &[IpNet]) -> Option<NetworkPolicyEgressRule> {
    let net: IpNet = rule.cidr.0.parse().ok()?;
    let user: Vec<IpNet> = rule
        .except
        .iter()
        .filter_map(|c| c.0.parse().ok())
        .collect();
    let except: Vec<String> = excepts(net, &user, cluster)?
        .iter()
        .map(ToString::to_string)
        .collect();
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
/// the pod), then the effective allow list, each CIDR rule excepting
/// `cluster` ([`excepts`]).
fn egress_rules(
    input: &BuildInput<'_>,
    phase: RunPhase,
    cluster: &[IpNet],
) -> Vec<NetworkPolicyEgressRule> {
    let mut egress = match input.gateway.filter(|_| input.uses_gateway(phase)) {
        Some(gateway) => vec![gateway_rule(gateway, phase)],
        None => vec![dns_rule(input)],
    };
    egress.extend(
        input
            .effective
            .egress(phase)
            .iter()
            .filter_map(|r| ip_rule(r, cluster)),
    );
    egress
}

/// The hash naming `phase`'s allow list: of the profile's name and the
/// rules, so two profiles never share (nor fight over) one policy. The
/// cluster's addresses are left out of it: a node that joins changes the
/// policy's excepts, not its name, so the pods already running keep the
/// label that selects it and the next phase start updates it in place.
pub fn egress_label(input: &BuildInput<'_>, phase: RunPhase) -> String {
    let rules = serde_json::to_string(&egress_rules(input, phase, &[])).unwrap_or_default();
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
            egress: Some(egress_rules(input, phase, input.cluster)),
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
