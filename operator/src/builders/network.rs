//! NetworkPolicies: a default deny for every pod of the task, and one allow
//! list per phase. DNS goes only to the cluster resolver; cloud metadata
//! addresses are excluded from every rule, whatever the profile says.

use std::collections::BTreeMap;

use hermes_crds::{EgressRule, RunPhase};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{BuildInput, LABEL_PHASE, LABEL_TASK, MAX_NAME, child_name, task_label};

/// Cloud metadata addresses no pod may reach.
pub const METADATA_ADDRESSES: [&str; 2] = ["169.254.169.254/32", "fd00:ec2::254/128"];

fn selector(task: &str, phase: Option<RunPhase>) -> LabelSelector {
    let mut m = BTreeMap::from([(LABEL_TASK.to_owned(), task_label(task))]);
    if let Some(p) = phase {
        m.insert(LABEL_PHASE.to_owned(), p.as_str().to_owned());
    }
    LabelSelector {
        match_labels: Some(m),
        match_expressions: None,
    }
}

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

/// The task's NetworkPolicies: `<task>-deny` first, then one per phase.
pub fn network_policies(input: &BuildInput<'_>) -> Vec<NetworkPolicy> {
    let task = input.name();
    let mut out = vec![NetworkPolicy {
        metadata: input.meta(child_name(task, "deny", MAX_NAME), None),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(task, None)),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: None,
            egress: None,
        }),
    }];
    for phase in RunPhase::ALL {
        let mut egress = vec![dns_rule(input)];
        egress.extend(input.effective.egress(phase).iter().filter_map(ip_rule));
        out.push(NetworkPolicy {
            metadata: input.meta(
                child_name(task, &format!("egress-{}", phase.as_str()), MAX_NAME),
                Some(phase),
            ),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(selector(task, Some(phase))),
                policy_types: Some(vec!["Egress".into()]),
                ingress: None,
                egress: Some(egress),
            }),
        });
    }
    out
}
