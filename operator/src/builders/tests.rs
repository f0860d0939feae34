use super::*;
use crate::narrowing::effective;
use hermes_crds::profile::HermesProfile;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PodSpec, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;
use std::collections::BTreeMap;

fn task(extra: serde_json::Value) -> HermesTask {
    let mut spec = json!({
        "repo": {"url": "https://git.example.com/tools/fmtcheck.git", "baseRef": "main"},
        "task": "# Add a --verbose flag\n",
        "scope": ["src/**", "tests/**"],
        "review": {"mode": "auto", "instructions": "Check the help text."},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "hermes.dev/v1alpha1",
        "kind": "HermesTask",
        "metadata": {"name": "add-verbose-flag", "namespace": "team-a", "uid": "6b1f0c1e-0000-4000-8000-000000000001"},
        "spec": spec,
    }))
    .expect("task")
}

fn profile() -> HermesProfileSpec {
    let p: HermesProfile = serde_json::from_value(json!({
        "apiVersion": "hermes.dev/v1alpha1",
        "kind": "HermesProfile",
        "metadata": {"name": "default"},
        "spec": {
            "agent": {"image": "hermes/agent:0.1.0", "command": ["claude", "-p", "--output-format", "json"]},
            "reviewer": {"image": "hermes/reviewer:0.1.0", "command": ["claude", "-p", "--output-format", "json"]},
            "runner": {"image": "hermes/runner:0.1.0"},
            "runtimeClassName": "gvisor",
            "egress": {
                "prepare": [{"cidr": "203.0.113.10/32", "ports": [{"port": 443}]}],
                "implement": [{"cidr": "0.0.0.0/0", "ports": [{"port": 443}]}],
                "review": [{"cidr": "198.51.100.20/32", "ports": [{"port": 443}]}],
                "publish": [{"cidr": "203.0.113.10/32", "ports": [{"port": 443}]}]
            },
            "secrets": {"model": "model-key", "gitRead": "git-read", "gitPush": "git-push"},
            "volume": {"size": "2Gi", "storageClassName": "fast"},
            "budget": {"default": {"tokens": 100000, "turns": 40, "costUsd": "2.5"}},
        }
    }))
    .expect("profile");
    p.spec
}

fn build(t: &HermesTask, p: &HermesProfileSpec, phase: RunPhase, attempt: u32) -> Job {
    let e = effective(&t.spec, p).expect("fits");
    let input = BuildInput {
        task: t,
        profile: p,
        effective: &e,
        gateway: None,
        cluster: &[],
    };
    let facts = PhaseFacts {
        base_commit: Some("89abcdef0123456789abcdef0123456789abcdef".into()),
        reviewed_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
    };
    job(&input, phase, attempt, &facts)
}

fn pod(job: &Job) -> PodSpec {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("a pod spec")
}

#[test]
fn prepare_job_snapshot() {
    insta::assert_yaml_snapshot!(build(&task(json!({})), &profile(), RunPhase::Prepare, 1));
}

#[test]
fn implement_job_snapshot() {
    insta::assert_yaml_snapshot!(build(&task(json!({})), &profile(), RunPhase::Implement, 1));
}

#[test]
fn review_job_snapshot() {
    insta::assert_yaml_snapshot!(build(&task(json!({})), &profile(), RunPhase::Review, 1));
}

#[test]
fn publish_job_snapshot() {
    insta::assert_yaml_snapshot!(build(&task(json!({})), &profile(), RunPhase::Publish, 2));
}

#[test]
fn network_policies_snapshot() {
    let (t, p) = (task(json!({})), profile());
    let e = effective(&t.spec, &p).expect("fits");
    insta::assert_yaml_snapshot!(network_policies(&BuildInput {
        task: &t,
        profile: &p,
        effective: &e,
        gateway: None,
        cluster: &[],
    }));
}

#[test]
fn storage_snapshot() {
    let (t, p) = (task(json!({})), profile());
    let e = effective(&t.spec, &p).expect("fits");
    let input = BuildInput {
        task: &t,
        profile: &p,
        effective: &e,
        gateway: None,
        cluster: &[],
    };
    insta::assert_yaml_snapshot!((
        repo_pvc(&input),
        task_configmap(&input, "# Add a --verbose flag\n")
    ));
}

#[test]
fn every_pod_and_container_is_restricted() {
    let (t, p) = (task(json!({})), profile());
    for phase in RunPhase::ALL {
        let job = build(&t, &p, phase, 1);
        let spec = job.spec.as_ref().expect("job spec");
        assert_eq!(spec.backoff_limit, Some(0), "{phase:?}");
        let pod = pod(&job);
        assert_eq!(
            pod.automount_service_account_token,
            Some(false),
            "{phase:?}"
        );
        assert_eq!(pod.enable_service_links, Some(false), "{phase:?}");
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.runtime_class_name.as_deref(), Some("gvisor"));
        assert!(pod.active_deadline_seconds.is_some_and(|d| d > 0));
        assert!(pod.host_network.is_none() && pod.host_pid.is_none() && pod.host_ipc.is_none());
        let sc = pod.security_context.as_ref().expect("pod security context");
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        let containers = pod
            .init_containers
            .iter()
            .flatten()
            .chain(pod.containers.iter());
        for c in containers {
            let sc = c
                .security_context
                .as_ref()
                .expect("container security context");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_eq!(sc.privileged, None, "{}", c.name);
            let caps = sc
                .capabilities
                .as_ref()
                .and_then(|c| c.drop.clone())
                .unwrap_or_default();
            assert_eq!(caps, ["ALL"], "{}", c.name);
            assert!(
                c.resources
                    .as_ref()
                    .and_then(|r| r.limits.as_ref())
                    .is_some(),
                "{} has limits",
                c.name
            );
        }
        for v in pod.volumes.iter().flatten() {
            assert!(v.host_path.is_none(), "no host paths");
        }
    }
}

/// The Secret volumes each phase's pod mounts.
fn secrets_of(job: &Job) -> Vec<String> {
    pod(job)
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.secret.and_then(|s| s.secret_name))
        .collect()
}

#[test]
fn each_secret_is_mounted_only_in_its_phase() {
    let (t, p) = (task(json!({})), profile());
    assert_eq!(
        secrets_of(&build(&t, &p, RunPhase::Prepare, 1)),
        ["git-read"]
    );
    assert_eq!(
        secrets_of(&build(&t, &p, RunPhase::Implement, 1)),
        ["model-key"]
    );
    assert_eq!(
        secrets_of(&build(&t, &p, RunPhase::Review, 1)),
        ["model-key"]
    );
    assert_eq!(
        secrets_of(&build(&t, &p, RunPhase::Publish, 1)),
        ["git-push"]
    );
    // And no container reads a Secret through its environment.
    for phase in RunPhase::ALL {
        let job = build(&t, &p, phase, 1);
        let pod = pod(&job);
        for c in pod
            .init_containers
            .iter()
            .flatten()
            .chain(pod.containers.iter())
        {
            for e in c.env.iter().flatten() {
                assert!(
                    e.value_from.is_none(),
                    "{} reads {} from a reference",
                    c.name,
                    e.name
                );
            }
            assert!(c.env_from.is_none());
        }
    }
}

#[test]
fn the_model_secret_reaches_the_agent_container_only() {
    let (t, p) = (task(json!({})), profile());
    for phase in [RunPhase::Implement, RunPhase::Review] {
        let pod = pod(&build(&t, &p, phase, 1));
        for c in pod
            .init_containers
            .iter()
            .flatten()
            .chain(pod.containers.iter())
        {
            let mounts_model = c
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == paths::MODEL_SECRET);
            assert_eq!(
                mounts_model,
                c.name == "agent" || c.name == "reviewer",
                "{}",
                c.name
            );
        }
    }
}

#[test]
fn the_reviewer_uses_its_own_model_secret_when_the_profile_names_one() {
    let t = task(json!({}));
    let mut p = profile();
    p.secrets.reviewer_model = Some(hermes_crds::validation::ObjectName("review-key".into()));
    assert_eq!(
        secrets_of(&build(&t, &p, RunPhase::Implement, 1)),
        ["model-key"]
    );
    assert_eq!(
        secrets_of(&build(&t, &p, RunPhase::Review, 1)),
        ["review-key"]
    );
}

#[test]
fn review_and_publish_mount_the_repo_volume_read_only() {
    let (t, p) = (task(json!({})), profile());
    for phase in [RunPhase::Review, RunPhase::Publish] {
        let pod = pod(&build(&t, &p, phase, 1));
        let repo = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "repo")
            .expect("repo volume");
        assert_eq!(
            repo.persistent_volume_claim
                .as_ref()
                .and_then(|c| c.read_only),
            Some(true)
        );
        for c in pod
            .init_containers
            .iter()
            .flatten()
            .chain(pod.containers.iter())
        {
            for m in c
                .volume_mounts
                .iter()
                .flatten()
                .filter(|m| m.name == "repo")
            {
                assert_eq!(m.read_only, Some(true), "{} in {phase:?}", c.name);
            }
        }
        // The reviewer never sees the repository, only the bundle.
        if phase == RunPhase::Review {
            let reviewer = pod
                .init_containers
                .iter()
                .flatten()
                .find(|c| c.name == "reviewer")
                .expect("reviewer");
            assert!(
                reviewer
                    .volume_mounts
                    .iter()
                    .flatten()
                    .all(|m| m.name != "repo")
            );
        }
    }
}

/// Publish's split: the container that reads the hostile volume holds no
/// Secret, and the one that holds the push credential (and, with the
/// gateway, its proxy credential) never mounts the volume.
#[test]
fn publish_never_mounts_the_volume_where_the_push_credential_is() {
    let jobs = [
        build(&task(json!({})), &profile(), RunPhase::Publish, 1),
        build_with_gateway(RunPhase::Publish, 1).0,
    ];
    for job in jobs {
        let pod = pod(&job);
        let secrets: Vec<&str> = pod
            .volumes
            .iter()
            .flatten()
            .filter(|v| v.secret.is_some())
            .map(|v| v.name.as_str())
            .collect();
        assert!(secrets.contains(&"git-credentials"), "{secrets:?}");
        let verify = pod
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == "verify")
            .expect("verify");
        let publish = &pod.containers[0];
        assert_eq!(publish.name, "publish");
        let names = |c: &k8s_openapi::api::core::v1::Container| -> Vec<String> {
            c.volume_mounts
                .iter()
                .flatten()
                .map(|m| m.name.clone())
                .collect()
        };
        let (v, p) = (names(verify), names(publish));
        assert!(v.contains(&"repo".to_owned()), "{v:?}");
        assert!(
            v.iter().all(|m| !secrets.contains(&m.as_str())),
            "verify mounts a Secret: {v:?}"
        );
        assert!(
            verify.env_from.is_none(),
            "verify takes environment from elsewhere"
        );
        assert!(
            verify.env.iter().flatten().all(|e| e.value_from.is_none()),
            "verify reads a Secret through its environment"
        );
        assert!(
            !p.contains(&"repo".to_owned()),
            "publish mounts the volume: {p:?}"
        );
        assert!(p.contains(&"git-credentials".to_owned()), "{p:?}");
        // verify's /tmp is its own: nothing it leaves there reaches publish.
        let shared: Vec<&String> = v.iter().filter(|m| p.contains(m)).collect();
        assert_eq!(shared, vec!["verified"], "volumes both containers mount");
        let verified_rw = |c: &k8s_openapi::api::core::v1::Container| {
            c.volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == "verified")
                .and_then(|m| m.read_only)
        };
        assert_eq!(verified_rw(verify), Some(false));
        assert_eq!(verified_rw(publish), Some(true));
    }
}

#[test]
fn job_names_are_deterministic_and_bounded() {
    assert_eq!(job_name("t", RunPhase::Prepare, 1), "t-prepare");
    assert_eq!(job_name("t", RunPhase::Prepare, 3), "t-prepare-3");
    let long = "a".repeat(120);
    let n = job_name(&long, RunPhase::Implement, 2);
    assert!(n.len() <= 52, "{n}");
    assert!(n.ends_with("-implement-2"), "{n}");
    assert_eq!(n, job_name(&long, RunPhase::Implement, 2), "deterministic");
    assert_ne!(
        n,
        job_name(&format!("{long}b"), RunPhase::Implement, 2),
        "distinct tasks, distinct names"
    );
    let label = task_label(&long);
    assert!(label.len() <= 63);
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().expect("cidr")
}

fn excepted(cidr: &str, user: &[&str], cluster: &[&str]) -> Option<Vec<String>> {
    let user: Vec<_> = user.iter().map(|c| net(c)).collect();
    let cluster: Vec<_> = cluster.iter().map(|c| net(c)).collect();
    excepts(net(cidr), &user, &cluster).map(|v| v.iter().map(ToString::to_string).collect())
}

const CLUSTER: [&str; 4] = [
    "10.0.0.5/32",
    "10.96.0.1/32",
    "192.168.7.7/32",
    "2001:db8::5/128",
];

#[test]
fn a_wide_rule_excepts_link_local_metadata_and_the_clusters_addresses() {
    // IPv4: link-local (the metadata address inside it is not repeated),
    // Azure's host, the API server and the node, the other metadata
    // addresses; the IPv6 node address belongs to the other family.
    assert_eq!(
        excepted("0.0.0.0/0", &[], &CLUSTER).expect("kept"),
        [
            "169.254.0.0/16",
            "168.63.129.16/32",
            "10.0.0.5/32",
            "10.96.0.1/32",
            "192.168.7.7/32",
            "100.100.100.200/32",
            "192.0.0.192/32",
        ]
    );
    assert_eq!(
        excepted("::/0", &[], &CLUSTER).expect("kept"),
        [
            "fe80::/10",
            "fd00:ec2::/32",
            "2001:db8::5/128",
            "fd20:ce::254/128"
        ]
    );
    // A narrower rule excepts only what lies inside it; the profile's own
    // excepts come first, and what they cover is not repeated.
    assert_eq!(
        excepted("10.0.0.0/8", &["10.96.0.0/12"], &CLUSTER).expect("kept"),
        ["10.96.0.0/12", "10.0.0.5/32"]
    );
    assert_eq!(
        excepted("203.0.113.0/24", &[], &CLUSTER).expect("kept"),
        Vec::<String>::new()
    );
}

#[test]
fn a_rule_naming_a_guarded_address_reaches_it_but_never_a_metadata_address() {
    // The node itself, or a node-local DNS cache on link-local: named by
    // the rule, so reachable.
    assert_eq!(excepted("10.0.0.5/32", &[], &CLUSTER), Some(vec![]));
    assert_eq!(excepted("169.254.20.10/32", &[], &CLUSTER), Some(vec![]));
    // The whole link-local range named: still not its metadata addresses.
    assert_eq!(
        excepted("169.254.0.0/16", &[], &CLUSTER).expect("kept"),
        [
            "169.254.169.254/32",
            "169.254.170.2/32",
            "169.254.170.23/32"
        ]
    );
    // A rule that is nothing but a metadata address goes.
    for m in METADATA_ADDRESSES {
        assert_eq!(excepted(m, &[], &CLUSTER), None, "{m}");
    }
}

#[test]
fn every_except_lies_strictly_inside_its_rule_and_covers_every_guarded_address() {
    // What the API server requires of an ipBlock (every except inside the
    // cidr), and what the rule promises (no guarded address left reachable
    // unless the rule lies inside it), over rules of every width.
    let rules = [
        "0.0.0.0/0",
        "0.0.0.0/1",
        "128.0.0.0/1",
        "10.0.0.0/8",
        "10.0.0.0/24",
        "168.63.0.0/16",
        "169.254.0.0/16",
        "169.254.169.0/24",
        "100.64.0.0/10",
        "192.0.0.0/24",
        "::/0",
        "fd00::/8",
        "fd00:ec2::/32",
        "fe80::/64",
        "2001:db8::/32",
    ];
    let guarded: Vec<ipnet::IpNet> = GUARDED_RANGES
        .iter()
        .chain(CLUSTER.iter())
        .map(|c| net(c))
        .collect();
    let metadata: Vec<ipnet::IpNet> = METADATA_ADDRESSES.iter().map(|c| net(c)).collect();
    let cluster: Vec<_> = CLUSTER.iter().map(|c| net(c)).collect();
    for rule in rules {
        let rule = net(rule);
        let Some(except) = excepts(rule, &[], &cluster) else {
            continue;
        };
        for e in &except {
            assert!(rule != *e && rule.contains(e), "{e} is not inside {rule}");
        }
        let covered = |g: &ipnet::IpNet| except.iter().any(|e| e.contains(g));
        for g in &guarded {
            if rule.contains(g) && !g.contains(&rule) {
                assert!(covered(g), "{rule} leaves {g} reachable: {except:?}");
            }
        }
        for m in &metadata {
            if rule.contains(m) {
                assert!(covered(m), "{rule} leaves {m} reachable: {except:?}");
            }
        }
    }
}

#[test]
fn the_clusters_addresses_change_a_policy_in_place_never_its_name() {
    let (t, p) = (task(json!({})), profile());
    let e = effective(&t.spec, &p).expect("fits");
    let cluster = [net("10.0.0.5/32")];
    let input = |cluster| BuildInput {
        task: &t,
        profile: &p,
        effective: &e,
        gateway: None,
        cluster,
    };
    let before = egress_policy(&input(&[]), RunPhase::Implement);
    let after = egress_policy(&input(&cluster), RunPhase::Implement);
    assert_eq!(before.metadata.name, after.metadata.name);
    assert_eq!(
        egress_label(&input(&[]), RunPhase::Implement),
        egress_label(&input(&cluster), RunPhase::Implement)
    );
    let text = serde_json::to_string(&after).expect("json");
    assert!(text.contains("\"10.0.0.5/32\""), "{text}");
    assert!(
        !serde_json::to_string(&before)
            .expect("json")
            .contains("10.0.0.5")
    );
    // A profile that names the metadata address itself gets no rule for it.
    let mut p2 = p.clone();
    p2.egress.implement = vec![
        serde_json::from_value(json!({"cidr": "169.254.169.254/32", "ports": [{"port": 80}]}))
            .expect("rule"),
    ];
    let e2 = effective(&t.spec, &p2).expect("fits");
    let policies = network_policies(&BuildInput {
        task: &t,
        profile: &p2,
        effective: &e2,
        gateway: None,
        cluster: &cluster,
    });
    let text = serde_json::to_string(&policies).expect("json");
    assert!(!text.contains("\"cidr\":\"169.254.169.254/32\""), "{text}");
}

#[test]
fn default_deny_covers_ingress_and_egress_of_every_task_pod() {
    let (t, p) = (task(json!({})), profile());
    let e = effective(&t.spec, &p).expect("fits");
    let policies = network_policies(&BuildInput {
        task: &t,
        profile: &p,
        effective: &e,
        gateway: None,
        cluster: &[],
    });
    let deny = &policies[0];
    assert_eq!(deny.metadata.name.as_deref(), Some(DENY_POLICY));
    let spec = deny.spec.as_ref().expect("spec");
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
    );
    assert!(spec.ingress.is_none() && spec.egress.is_none());
    // Every pod with a task label, whatever else it carries (the diff pod
    // has no phase and no allow list).
    let selector = spec.pod_selector.as_ref().expect("selector");
    assert!(selector.match_labels.is_none());
    let exprs = selector.match_expressions.as_ref().expect("expressions");
    assert_eq!(exprs.len(), 1);
    assert_eq!(
        (exprs[0].key.as_str(), exprs[0].operator.as_str()),
        (LABEL_TASK, "Exists")
    );
    // Each allow list denies ingress too, and opens none.
    for np in &policies[1..] {
        let spec = np.spec.as_ref().expect("spec");
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
        );
        assert!(spec.ingress.is_none());
    }
    // prepare and publish share their allow list (the same git host).
    assert_eq!(policies.len(), 4);
}

#[test]
fn each_phase_pod_is_selected_by_the_allow_list_of_exactly_its_rules() {
    let (t, p) = (task(json!({})), profile());
    let e = effective(&t.spec, &p).expect("fits");
    let input = BuildInput {
        task: &t,
        profile: &p,
        effective: &e,
        gateway: None,
        cluster: &[],
    };
    let policies = network_policies(&input);
    for phase in RunPhase::ALL {
        let labels = build(&t, &p, phase, 1)
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.labels)
            .expect("pod labels");
        let selecting: Vec<_> = policies[1..]
            .iter()
            .filter(|np| {
                let sel = np.spec.as_ref().and_then(|s| s.pod_selector.as_ref());
                sel.and_then(|s| s.match_labels.as_ref())
                    .is_some_and(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
            })
            .collect();
        assert_eq!(selecting.len(), 1, "{phase:?}: one allow list");
        let rules =
            serde_json::to_string(&selecting[0].spec.as_ref().and_then(|s| s.egress.clone()))
                .expect("json");
        let own = &p.egress;
        let cidr = match phase {
            RunPhase::Prepare => &own.prepare[0].cidr.0,
            RunPhase::Implement => &own.implement[0].cidr.0,
            RunPhase::Review => &own.review[0].cidr.0,
            RunPhase::Publish => &own.publish[0].cidr.0,
        };
        assert!(
            rules.contains(&format!("\"cidr\":\"{cidr}\"")),
            "{phase:?}: {rules}"
        );
        // The Job itself is not selected (only its pod runs).
        assert!(
            build(&t, &p, phase, 1)
                .metadata
                .labels
                .is_some_and(|l| !l.contains_key(LABEL_EGRESS))
        );
    }
}

#[test]
fn allow_lists_are_shared_by_equal_egress_and_never_across_profiles() {
    let p = profile();
    let label = |t: &HermesTask| {
        let e = effective(&t.spec, &p).expect("fits");
        egress_label(
            &BuildInput {
                task: t,
                profile: &p,
                effective: &e,
                gateway: None,
                cluster: &[],
            },
            RunPhase::Implement,
        )
    };
    let a = task(json!({}));
    let mut b = task(json!({}));
    b.metadata.name = Some("another-task".into());
    assert_eq!(label(&a), label(&b), "same profile, same rules: one policy");
    let narrowed = task(json!({"egress": [{"cidr": "10.1.0.0/16", "ports": [{"port": 443}]}]}));
    assert_ne!(label(&a), label(&narrowed), "a narrowed task has its own");
    let other = task(json!({"profile": "other"}));
    assert_ne!(label(&a), label(&other), "another profile has its own");
    assert_eq!(label(&a).len(), 32);
}

#[test]
fn only_context_can_write_the_review_bundle() {
    let (t, p) = (task(json!({})), profile());
    let pod = pod(&build(&t, &p, RunPhase::Review, 1));
    for c in pod
        .init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter())
    {
        for m in c
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.mount_path == paths::BUNDLE)
        {
            assert_eq!(
                m.read_only,
                Some(c.name != "context"),
                "{} mounts the bundle",
                c.name
            );
        }
    }
    let reviewer = pod
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "reviewer")
        .expect("reviewer");
    assert!(
        reviewer
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == paths::BUNDLE)
    );
}

fn gateway_profile() -> HermesProfileSpec {
    let mut p = profile();
    p.secrets.model = None;
    p.model = Some(
        serde_json::from_value(
            json!({"agent": {"url": "https://api.example.com", "credential": "anthropic"}}),
        )
        .expect("model"),
    );
    p
}

fn gateway_endpoint() -> crate::gateway::Endpoint {
    crate::gateway::Endpoint {
        address: "10.96.0.40".into(),
        model_port: 80,
        proxy_port: 3128,
        namespace: "hermes-system".into(),
        pod_labels: BTreeMap::from([(
            "app.kubernetes.io/name".to_owned(),
            "hermes-gateway".to_owned(),
        )]),
        model_target_port: 8080,
        proxy_target_port: 3128,
    }
}

fn build_with_gateway(phase: RunPhase, attempt: u32) -> (Job, Vec<NetworkPolicy>, Option<Secret>) {
    build_with_gateway_profile(gateway_profile(), phase, attempt)
}

fn build_with_gateway_profile(
    p: HermesProfileSpec,
    phase: RunPhase,
    attempt: u32,
) -> (Job, Vec<NetworkPolicy>, Option<Secret>) {
    let (t, g) = (task(json!({})), gateway_endpoint());
    let e = effective(&t.spec, &p).expect("fits");
    let input = BuildInput {
        task: &t,
        profile: &p,
        effective: &e,
        gateway: Some(&g),
        cluster: &[],
    };
    let facts = PhaseFacts::default();
    (
        job(&input, phase, attempt, &facts),
        network_policies(&input),
        credential_secret(&input, phase, attempt, "hgw1.claims.mac"),
    )
}

#[test]
fn implement_job_with_the_gateway_snapshot() {
    insta::assert_yaml_snapshot!(build_with_gateway(RunPhase::Implement, 2).0);
}

#[test]
fn with_the_gateway_only_the_agent_and_reviewer_containers_mount_their_phases_credential() {
    for (phase, cli) in [
        (RunPhase::Implement, "agent"),
        (RunPhase::Review, "reviewer"),
    ] {
        let (job, _, secret) = build_with_gateway(phase, 2);
        let secret = secret.expect("a credential Secret");
        let name = format!("add-verbose-flag-gw-{}-2", phase.as_str());
        assert_eq!(secret.metadata.name.as_deref(), Some(name.as_str()));
        let pod = pod(&job);
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(&name))
            .expect("the credential volume");
        for c in pod.init_containers.iter().flatten().chain(&pod.containers) {
            let mounts = c
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == volume.name);
            assert_eq!(
                mounts,
                c.name == cli,
                "{} mounts the credential: {mounts}",
                c.name
            );
            assert!(
                !c.volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.mount_path == paths::MODEL_SECRET),
                "no model key anywhere"
            );
            if c.name == cli {
                let cmd = c.command.clone().unwrap_or_default().join(" ");
                assert!(cmd.contains("--env-dir /hermes/secrets/gateway"), "{cmd}");
                let env = c.env.clone().unwrap_or_default();
                assert!(
                    env.iter()
                        .any(|e| e.name == "NO_PROXY" && e.value.as_deref() == Some("10.96.0.40"))
                );
            }
        }
    }
    // Prepare and publish get no gateway credential.
    for phase in [RunPhase::Prepare, RunPhase::Publish] {
        assert!(build_with_gateway(phase, 1).2.is_none());
    }
}

#[test]
fn the_credential_secret_gives_the_cli_the_gateway_and_the_proxy_with_its_credential() {
    let (_, _, secret) = build_with_gateway(RunPhase::Implement, 1);
    let data = secret.and_then(|s| s.string_data).expect("data");
    assert_eq!(
        data.get("ANTHROPIC_API_KEY").map(String::as_str),
        Some("hgw1.claims.mac")
    );
    assert_eq!(
        data.get("ANTHROPIC_BASE_URL").map(String::as_str),
        Some("http://10.96.0.40:80")
    );
    for k in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
        assert_eq!(
            data.get(k).map(String::as_str),
            Some("http://hermes:hgw1.claims.mac@10.96.0.40:3128"),
            "{k}"
        );
    }
}

#[test]
fn with_the_gateway_implement_and_review_may_reach_only_the_gateway_and_no_dns() {
    let (implement, policies, _) = build_with_gateway(RunPhase::Implement, 1);
    let hash = |job: &Job| {
        job.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(LABEL_EGRESS).cloned())
            .expect("egress label")
    };
    let policy_of = |h: &str| {
        policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(&format!("hermes-egress-{h}")))
            .and_then(|p| p.spec.clone())
            .and_then(|s| s.egress)
            .expect("allow list")
    };
    let rules = policy_of(&hash(&implement));
    let text = serde_json::to_string(&rules).expect("json");
    assert!(!text.contains("\"port\":53"), "no DNS: {text}");
    assert!(
        text.contains("hermes-gateway")
            && text.contains("\"port\":8080")
            && text.contains("\"port\":3128"),
        "{text}"
    );
    // The profile's CIDR rule for implement stays (fixed-address endpoints).
    assert!(text.contains("0.0.0.0/0"), "{text}");
    let (prepare, _, _) = build_with_gateway(RunPhase::Prepare, 1);
    let text = serde_json::to_string(&policy_of(&hash(&prepare))).expect("json");
    assert!(
        text.contains("\"port\":53") && !text.contains("hermes-gateway"),
        "{text}"
    );
}

/// The egress rules of `job`'s pod, as JSON text.
fn allow_list_of(job: &Job, policies: &[NetworkPolicy]) -> String {
    let hash = job
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(LABEL_EGRESS).cloned())
        .expect("egress label");
    let rules = policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(&format!("hermes-egress-{hash}")))
        .and_then(|p| p.spec.clone())
        .and_then(|s| s.egress)
        .expect("allow list");
    serde_json::to_string(&rules).expect("json")
}

#[test]
fn with_hosts_for_a_git_phase_its_runner_goes_through_the_proxy_with_a_credential_of_its_own() {
    let mut p = gateway_profile();
    p.egress.hosts.prepare =
        vec![serde_json::from_value(json!({"name": "git.example.com"})).expect("rule")];
    p.egress.prepare.clear();
    for (phase, attempt, name) in [
        (RunPhase::Prepare, 1, "add-verbose-flag-gw-prepare"),
        (RunPhase::Prepare, 2, "add-verbose-flag-gw-prepare-2"),
    ] {
        let (job, policies, secret) = build_with_gateway_profile(p.clone(), phase, attempt);
        // The phase's own credential, with the proxy's URL only: no model
        // API key or URL (the gateway refuses a git phase's credential there).
        let secret = secret.expect("a credential Secret");
        assert_eq!(secret.metadata.name.as_deref(), Some(name));
        let data = secret.string_data.expect("data");
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            ["HTTPS_PROXY", "HTTP_PROXY"]
        );
        assert_eq!(
            data.get("HTTPS_PROXY").map(String::as_str),
            Some("http://hermes:hgw1.claims.mac@10.96.0.40:3128")
        );
        // Mounted into the runner, which is told where to find it.
        let pod = pod(&job);
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(name))
            .expect("the credential volume");
        let runner = &pod.containers[0];
        assert!(
            runner
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == volume.name && m.read_only == Some(true))
        );
        let cmd = runner.command.clone().unwrap_or_default().join(" ");
        let args = runner.args.clone().unwrap_or_default().join(" ");
        assert!(
            format!("{cmd} {args}").contains("--proxy-dir /hermes/secrets/gateway"),
            "{cmd} {args}"
        );
        // Its pod reaches the gateway's proxy port and nothing else: no
        // model port, no DNS, no CIDR rule.
        let text = allow_list_of(&job, &policies);
        assert!(
            text.contains("hermes-gateway")
                && text.contains("\"port\":3128")
                && !text.contains("\"port\":8080")
                && !text.contains("\"port\":53")
                && !text.contains("ipBlock"),
            "{text}"
        );
    }
    // Publish lists no host: it keeps its CIDR rules and DNS, and gets no
    // credential.
    let (publish, policies, secret) = build_with_gateway_profile(p, RunPhase::Publish, 1);
    assert!(secret.is_none());
    let text = allow_list_of(&publish, &policies);
    assert!(
        text.contains("\"port\":53") && !text.contains("hermes-gateway"),
        "{text}"
    );
    let runner = &pod(&publish).containers[0];
    let all = format!(
        "{} {}",
        runner.command.clone().unwrap_or_default().join(" "),
        runner.args.clone().unwrap_or_default().join(" ")
    );
    assert!(!all.contains("--proxy-dir"), "{all}");
}

#[test]
fn a_ca_bundle_reaches_the_runner_of_prepare_and_publish_only() {
    let mut p = profile();
    p.git.ca_bundle = Some(hermes_crds::validation::ObjectName("corp-ca".into()));
    let t = task(json!({}));
    for phase in [
        RunPhase::Prepare,
        RunPhase::Implement,
        RunPhase::Review,
        RunPhase::Publish,
    ] {
        let spec = pod(&build(&t, &p, phase, 1));
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.config_map.as_ref().is_some_and(|c| c.name == "corp-ca"));
        let git_phase = matches!(phase, RunPhase::Prepare | RunPhase::Publish);
        assert_eq!(volume.is_some(), git_phase, "{phase:?}");
        let Some(volume) = volume else { continue };
        let items = volume.config_map.as_ref().and_then(|c| c.items.clone());
        assert_eq!(
            items.map(|i| i.into_iter().map(|k| (k.key, k.path)).collect::<Vec<_>>()),
            Some(vec![("ca.crt".to_owned(), "ca.crt".to_owned())])
        );
        // Mounted read-only in the runner's step container alone (named
        // after its step), which is told the file.
        let containers: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .collect();
        for c in containers {
            let mounted = c
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == volume.name);
            let args = c.args.clone().unwrap_or_default().join(" ");
            if c.name == format!("{phase:?}").to_lowercase() {
                assert_eq!(mounted.and_then(|m| m.read_only), Some(true), "{phase:?}");
                assert!(
                    args.contains("--ca-file /hermes/git-ca/ca.crt"),
                    "{phase:?}: {args}"
                );
            } else {
                assert!(mounted.is_none(), "{phase:?}: {}", c.name);
            }
        }
    }
    // Unset, no phase mounts one or passes the flag.
    let plain = profile();
    for phase in [RunPhase::Prepare, RunPhase::Publish] {
        let spec = pod(&build(&t, &plain, phase, 1));
        let args = spec.containers[0]
            .args
            .clone()
            .unwrap_or_default()
            .join(" ");
        assert!(!args.contains("--ca-file"), "{args}");
    }
}

/// The review's context step gets the built-in protected paths, then the
/// profile's own; only a removal that names one drops it.
#[test]
fn the_review_checks_the_built_in_protected_paths_plus_the_profiles() {
    let protected_of = |p: &HermesProfileSpec| -> Vec<String> {
        let spec = pod(&build(&task(json!({})), p, RunPhase::Review, 1));
        let args: Vec<String> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .filter_map(|c| c.args.clone())
            .find(|a| a.first().is_some_and(|s| s == "context"))
            .expect("a context step");
        args.windows(2)
            .filter(|w| w[0] == "--protected")
            .map(|w| w[1].clone())
            .collect()
    };
    let built_in: Vec<String> = hermes_crds::profile::BuiltInProtectedPath::ALL
        .iter()
        .map(|b| b.glob().to_owned())
        .collect();
    assert!(built_in.iter().any(|g| g == ".github/**"));
    let mut p = profile();
    assert_eq!(protected_of(&p), built_in);
    // Added to, never replaced (a glob already built in is not repeated).
    p.policy.protected_paths = vec!["deploy/**".into(), ".github/**".into()];
    let mut want = built_in.clone();
    want.push("deploy/**".into());
    assert_eq!(protected_of(&p), want);
    // A named removal drops exactly that one (unless the profile lists it
    // itself).
    p.policy.protected_paths = vec!["deploy/**".into()];
    p.policy.remove_built_in_protected_paths =
        vec![hermes_crds::profile::BuiltInProtectedPath::GitHub];
    let got = protected_of(&p);
    assert!(!got.iter().any(|g| g == ".github/**"), "{got:?}");
    assert_eq!(got.len(), want.len() - 1, "{got:?}");
}

/// Every container of every phase runs with CPU, memory and
/// ephemeral-storage limits: the profile's, its requests where it set no
/// limit, or the defaults.
#[test]
fn every_task_container_has_cpu_memory_and_ephemeral_storage_limits() {
    let t = task(json!({}));
    let limits_of = |p: &HermesProfileSpec| -> Vec<(String, BTreeMap<String, String>)> {
        RunPhase::ALL
            .iter()
            .flat_map(|phase| {
                let spec = pod(&build(&t, p, *phase, 1));
                spec.init_containers
                    .into_iter()
                    .flatten()
                    .chain(spec.containers)
                    .map(|c| {
                        let limits = c
                            .resources
                            .and_then(|r| r.limits)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0))
                            .collect();
                        (format!("{phase:?}/{}", c.name), limits)
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let keys = ["cpu", "ephemeral-storage", "memory"];
    for (name, limits) in limits_of(&profile()) {
        assert_eq!(
            limits.keys().map(String::as_str).collect::<Vec<_>>(),
            keys,
            "{name}"
        );
    }
    // A profile that requests without limiting: its requests become limits.
    let mut p = profile();
    p.agent.resources = Some(
        serde_json::from_value(json!({"requests": {"cpu": "3", "memory": "6Gi"}})).expect("r"),
    );
    let agent = limits_of(&p)
        .into_iter()
        .find(|(n, _)| n == "Implement/agent")
        .expect("agent");
    assert_eq!(agent.1["cpu"], "3");
    assert_eq!(agent.1["memory"], "6Gi");
    assert_eq!(agent.1["ephemeral-storage"], AGENT_LIMITS.ephemeral);
    // Its own limits are kept.
    p.agent.resources = Some(
        serde_json::from_value(
            json!({"limits": {"cpu": "2", "memory": "1Gi", "ephemeral-storage": "9Gi"}}),
        )
        .expect("r"),
    );
    let agent = limits_of(&p)
        .into_iter()
        .find(|(n, _)| n == "Implement/agent")
        .expect("agent");
    assert_eq!(agent.1["ephemeral-storage"], "9Gi");
}
