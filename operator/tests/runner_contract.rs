//! The contract between the pod builders and the runner: every runner
//! command line the operator writes into a pod spec parses with the runner's
//! own CLI, for every phase and the task shapes that change the arguments.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use clap::Parser;
use hermes_crds::profile::HermesProfile;
use hermes_crds::{HermesTask, RunPhase};
use hermes_operator::builders::{BuildInput, PhaseFacts, job, paths};
use hermes_operator::narrowing::effective;
use hermes_runner::cli::{Cli, Command};
use serde_json::json;

fn task(extra: serde_json::Value) -> HermesTask {
    let mut spec = json!({
        "repo": {"url": "https://git.example.com/o/r.git", "baseRef": "main"},
        "task": "do it",
        "scope": ["src/**", "docs/*.md"],
        "review": {"instructions": "Check --flags and 'quotes'."},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesTask",
        "metadata": {"name": "t", "namespace": "ns", "uid": "u"}, "spec": spec,
    }))
    .unwrap()
}

/// A profile with the model keys and git Secrets (`secrets`), through the
/// gateway (`gateway`), and with the git phases too through its proxy
/// (`git_hosts`).
fn profile(secrets: bool, gateway: bool, git_hosts: bool) -> HermesProfile {
    let mut p: HermesProfile = serde_json::from_value(json!({
        "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesProfile", "metadata": {"name": "default"},
        "spec": {
            "agent": {"image": "a:1", "command": ["claude", "-p", "--output-format", "json"]},
            "reviewer": {"image": "r:1", "command": ["claude", "-p"]},
            "runner": {"image": "x:1"},
            "secrets": if secrets { json!({"model": "m", "gitRead": "r", "gitPush": "p"}) } else { json!({}) },
            "policy": {"outOfScope": "warn"},
        }
    }))
    .unwrap();
    if gateway {
        p.spec.model = Some(
            serde_json::from_value(
                json!({"agent": {"url": "https://api.example.com", "credential": "c"}}),
            )
            .unwrap(),
        );
    }
    if git_hosts {
        let git: Vec<hermes_crds::hosts::HostRule> =
            serde_json::from_value(json!([{"name": "git.example.com"}])).unwrap();
        p.spec.egress.hosts.prepare = git.clone();
        p.spec.egress.hosts.publish = git;
    }
    p
}

/// Where the gateway is, for the profiles that use it.
fn endpoint() -> hermes_operator::gateway::Endpoint {
    hermes_operator::gateway::Endpoint {
        address: "10.96.0.40".into(),
        model_port: 8080,
        proxy_port: 3128,
        namespace: "hermes-system".into(),
        pod_labels: [("app".to_owned(), "gw".to_owned())].into(),
        model_target_port: 8080,
        proxy_target_port: 3128,
    }
}

/// Every runner invocation in a Job: (container, argv).
fn runner_invocations(job: &k8s_openapi::api::batch::v1::Job) -> Vec<(String, Vec<String>)> {
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let mut out = Vec::new();
    for c in pod
        .init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter())
    {
        let command = c.command.clone().unwrap_or_default();
        let args = c.args.clone().unwrap_or_default();
        let Some(first) = command.first() else {
            continue;
        };
        if first == paths::RUNNER || first == &format!("{}/hermes-runner", paths::BIN) {
            let mut argv = command.clone();
            argv.extend(args);
            out.push((c.name.clone(), argv));
        }
    }
    out
}

#[test]
fn every_runner_command_line_in_every_phase_parses() {
    let tasks = [
        task(json!({})),
        task(json!({"task": null, "taskRef": {"repoPath": "tasks/t.md"}})),
        task(
            json!({"publish": {"mode": "branch"}, "repo": {"url": "git@git.example.com:o/r.git", "baseRef": "main", "branch": "feature/x"}}),
        ),
    ];
    let mut parsed = 0;
    let gw = endpoint();
    for (secrets, gateway, git_hosts) in [
        (true, false, false),
        (false, false, false),
        (false, true, false),
        (true, true, true),
    ] {
        let p = profile(secrets, gateway, git_hosts);
        for t in &tasks {
            // Through the proxy, only an https:// remote it lists.
            let Ok(e) = effective(&t.spec, &p.spec) else {
                assert!(git_hosts && !t.spec.repo.url.0.starts_with("https://"));
                continue;
            };
            let input = BuildInput {
                task: t,
                profile: &p.spec,
                effective: &e,
                gateway: gateway.then_some(&gw),
                cluster: &[],
            };
            let facts = PhaseFacts {
                base_commit: Some("89abcdef0123456789abcdef0123456789abcdef".into()),
                reviewed_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            };
            for phase in RunPhase::ALL {
                let job = job(&input, phase, 1, &facts);
                let invocations = runner_invocations(&job);
                assert!(!invocations.is_empty(), "{phase:?} runs the runner");
                for (container, argv) in invocations {
                    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| {
                        panic!("{phase:?}/{container}: {argv:?} does not parse:\n{e}")
                    });
                    let expected = match container.as_str() {
                        "prepare" => matches!(cli.command, Command::Prepare(_)),
                        "collect" => matches!(cli.command, Command::Collect(_)),
                        "context" => matches!(cli.command, Command::Context(_)),
                        "verdict" => matches!(cli.command, Command::Verdict(_)),
                        "verify" => matches!(cli.command, Command::Verify(_)),
                        "publish" => matches!(cli.command, Command::Publish(_)),
                        "install-runner" => matches!(cli.command, Command::Install(_)),
                        "agent" | "reviewer" => matches!(cli.command, Command::Exec(_)),
                        other => panic!("unexpected container {other}"),
                    };
                    assert!(
                        expected,
                        "{container} runs the matching subcommand: {argv:?}"
                    );
                    let git_step = matches!(container.as_str(), "prepare" | "publish");
                    assert_eq!(
                        argv.iter().any(|a| a == "--proxy-dir"),
                        git_hosts && git_step,
                        "{container}: {argv:?}"
                    );
                    parsed += 1;
                }
            }
        }
    }
    assert!(parsed >= 80, "parsed {parsed} command lines");
}
