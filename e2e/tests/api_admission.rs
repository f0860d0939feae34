#![allow(clippy::expect_used, clippy::unwrap_used)] // Tests: a failed expectation is the report.

//! Tier A: the CRDs install on a real API server, and admission (OpenAPI
//! bounds plus CEL rules) accepts good resources and refuses bad ones with a
//! message that names the offending field.

use hermes_crds::vectors;
use hermes_e2e::TierA;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

fn task_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("hermes.dev", "v1alpha1", "HermesTask"),
        "hermestasks",
    )
}

fn profile_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("hermes.dev", "v1alpha1", "HermesProfile"),
        "hermesprofiles",
    )
}

fn valid_task(name: &str) -> Value {
    json!({
        "apiVersion": "hermes.dev/v1alpha1",
        "kind": "HermesTask",
        "metadata": {"name": name},
        "spec": {
            "repo": {"url": "https://git.example.com/org/repo.git", "baseRef": "main"},
            "task": "# Add a --verbose flag\n\nDone when `cargo test` passes.",
            "scope": ["src/**", "tests/**"],
        }
    })
}

fn valid_profile(name: &str) -> Value {
    json!({
        "apiVersion": "hermes.dev/v1alpha1",
        "kind": "HermesProfile",
        "metadata": {"name": name},
        "spec": {
            "agent": {"image": "hermes/agent:0.1.0", "command": ["claude", "-p"]},
            "reviewer": {"image": "hermes/reviewer:0.1.0", "command": ["claude", "-p"]},
            "runner": {"image": "hermes/runner:0.1.0"},
            "egress": {"implement": [{"cidr": "10.20.0.0/16", "ports": [{"port": 443}]}]},
            "timeouts": {"implement": {"default": "30m", "max": "2h"}},
            "budget": {"default": {"tokens": 100000}, "max": {"tokens": 1000000}},
        }
    })
}

/// Sets (or, with `None`, removes) the value at a JSON pointer, creating objects on the way.
fn set(doc: &mut Value, pointer: &str, value: Option<Value>) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let mut cur = &mut *doc;
    for part in parent.split('/').skip(1) {
        cur = match cur {
            Value::Array(a) => &mut a[part.parse::<usize>().expect("array index")],
            other => other
                .as_object_mut()
                .expect("an object on the path")
                .entry(part)
                .or_insert_with(|| json!({})),
        };
    }
    match (value, cur) {
        (Some(v), Value::Array(a)) => {
            let i: usize = key.parse().expect("array index");
            a[i] = v;
        }
        (Some(v), c) => c[key] = v,
        (None, Value::Object(o)) => {
            o.remove(key);
        }
        (None, _) => panic!("cannot remove {pointer}"),
    }
}

/// Creates `doc` with dry-run: the server runs every admission check and stores nothing.
async fn dry_run_create(api: &Api<DynamicObject>, doc: &Value) -> Result<(), kube::Error> {
    let obj: DynamicObject = serde_json::from_value(doc.clone()).expect("a DynamicObject");
    api.create(
        &PostParams {
            dry_run: true,
            field_manager: Some(hermes_e2e::TEST_FIELD_MANAGER.into()),
        },
        &obj,
    )
    .await
    .map(|_| ())
}

fn invalid_message(result: Result<(), kube::Error>, what: &str) -> String {
    match result {
        Ok(()) => panic!("{what}: the API server accepted it"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                status.code, 422,
                "{what}: expected 422 Invalid, got {status:?}"
            );
            status.message.clone()
        }
        Err(e) => panic!("{what}: unexpected error {e}"),
    }
}

#[tokio::test]
async fn crds_install_and_become_established() {
    let Some(cluster) = TierA::connect().await else {
        return;
    };
    let names = cluster.install_crds().await.expect("CRDs install");
    assert_eq!(
        names,
        ["hermesprofiles.hermes.dev", "hermestasks.hermes.dev"]
    );
    // Installing again is a no-op, not an error.
    cluster.install_crds().await.expect("CRDs re-apply");
}

#[tokio::test]
async fn valid_task_and_profile_are_accepted_with_defaults_filled_in() {
    let Some(cluster) = TierA::connect().await else {
        return;
    };
    cluster.install_crds().await.expect("CRDs install");
    let ns = cluster.namespace("valid").await.expect("namespace");
    let tasks: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), &ns.name, &task_resource());
    let profiles: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), &ns.name, &profile_resource());

    let created = tasks
        .create(
            &PostParams::default(),
            &serde_json::from_value(valid_task("ok")).expect("object"),
        )
        .await
        .expect("a valid task is accepted");
    let spec = &created.data["spec"];
    assert_eq!(spec["profile"], "default");
    assert_eq!(spec["review"]["mode"], "auto");
    assert_eq!(spec["publish"]["mode"], "merge");
    assert_eq!(spec["priority"], 0);

    let created = profiles
        .create(
            &PostParams::default(),
            &serde_json::from_value(valid_profile("default")).expect("object"),
        )
        .await
        .expect("a valid profile is accepted");
    let spec = &created.data["spec"];
    assert_eq!(spec["concurrency"]["maxRunning"], 10);
    assert_eq!(spec["concurrency"]["maxAwaitingReview"], 20);
    assert_eq!(spec["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        spec["egress"]["implement"][0]["ports"][0]["protocol"],
        "TCP"
    );
    // The built-in protected paths are the operator's, not a default the
    // profile could replace: nothing is stored for them.
    assert!(spec["policy"].get("protectedPaths").is_none(), "{spec}");
    assert_eq!(spec["policy"]["outOfScope"], "reject", "{spec}");

    // The typed Rust view reads back what the server stored.
    let typed: Api<hermes_crds::HermesTask> = Api::namespaced(cluster.client.clone(), &ns.name);
    let task = typed.get("ok").await.expect("typed read");
    assert_eq!(task.work_branch().as_str(), "hermes/ok");
}

/// One resource the server must refuse.
struct Case {
    what: &'static str,
    pointer: &'static str,
    value: Option<Value>,
    /// The field path the server's message must name.
    field: &'static str,
    /// A fragment of the message the server must give.
    says: &'static str,
}

fn case(
    what: &'static str,
    pointer: &'static str,
    value: Value,
    field: &'static str,
    says: &'static str,
) -> Case {
    Case {
        what,
        pointer,
        value: Some(value),
        field,
        says,
    }
}

fn task_cases() -> Vec<Case> {
    vec![
        case(
            "task and taskRef both set",
            "/spec/taskRef",
            json!({"repoPath": "tasks/a.md"}),
            "spec.task",
            "exactly one of spec.task",
        ),
        Case {
            what: "neither task nor taskRef",
            pointer: "/spec/task",
            value: None,
            field: "spec.task",
            says: "exactly one of spec.task",
        },
        case(
            "whitespace-only task",
            "/spec/task",
            json!(" \n\t "),
            "spec.task",
            "must not be empty",
        ),
        case(
            "task over 64 KiB",
            "/spec/task",
            json!("x".repeat(65_537)),
            "spec.task",
            "Too long",
        ),
        case(
            "token in the URL",
            "/spec/repo/url",
            json!("https://oauth2:ghp_abc@git.example.com/o/r.git"),
            "spec.repo.url",
            "must not embed credentials",
        ),
        case(
            "ext:: remote helper",
            "/spec/repo/url",
            json!("ext::sh -c touch% /tmp/pwned"),
            "spec.repo.url",
            "remote helpers",
        ),
        case(
            "file:// URL",
            "/spec/repo/url",
            json!("file:///srv/git/repo.git"),
            "spec.repo.url",
            "file://",
        ),
        case(
            "option-like URL",
            "/spec/repo/url",
            json!("--upload-pack=touch /tmp/x"),
            "spec.repo.url",
            "must not start with '-'",
        ),
        case(
            "local path URL",
            "/spec/repo/url",
            json!("/srv/git/repo.git"),
            "spec.repo.url",
            "scheme https, http or ssh",
        ),
        case(
            "baseRef with '..'",
            "/spec/repo/baseRef",
            json!("main..x"),
            "spec.repo.baseRef",
            "'..' is not allowed",
        ),
        case(
            "baseRef with a space",
            "/spec/repo/baseRef",
            json!("my branch"),
            "spec.repo.baseRef",
            "no spaces",
        ),
        case(
            "baseRef ending .lock",
            "/spec/repo/baseRef",
            json!("main.lock"),
            "spec.repo.baseRef",
            ".lock",
        ),
        case(
            "option-like branch",
            "/spec/repo/branch",
            json!("-f"),
            "spec.repo.branch",
            "must not start with '-'",
        ),
        case(
            "branch equal to baseRef",
            "/spec/repo/branch",
            json!("main"),
            "spec.repo.branch",
            "must differ from spec.repo.baseRef",
        ),
        case(
            "branch with '@{'",
            "/spec/repo/branch",
            json!("x@{1}"),
            "spec.repo.branch",
            "'@{'",
        ),
        case(
            "empty scope",
            "/spec/scope",
            json!([]),
            "spec.scope",
            "at least 1 items",
        ),
        case(
            "absolute scope glob",
            "/spec/scope",
            json!(["/etc/**"]),
            "spec.scope[0]",
            "no leading '/'",
        ),
        case(
            "scope glob with '..'",
            "/spec/scope",
            json!(["src/../../etc"]),
            "spec.scope[0]",
            "no '..' segments",
        ),
        case(
            "duplicate scope glob",
            "/spec/scope",
            json!(["src/**", "src/**"]),
            "spec.scope[1]",
            "Duplicate value",
        ),
        case(
            "scope glob into .git",
            "/spec/scope",
            json!([".git/hooks/*"]),
            "spec.scope[0]",
            "'.git'",
        ),
        case(
            "unknown review mode",
            "/spec/review",
            json!({"mode": "yolo"}),
            "spec.review.mode",
            "Unsupported value",
        ),
        case(
            "unknown publish mode",
            "/spec/publish",
            json!({"mode": "force-push"}),
            "spec.publish.mode",
            "Unsupported value",
        ),
        case(
            "zero timeout",
            "/spec/timeouts",
            json!({"implement": "0s"}),
            "spec.timeouts.implement",
            "more than 0s",
        ),
        case(
            "timeout over 24h",
            "/spec/timeouts",
            json!({"review": "48h"}),
            "spec.timeouts.review",
            "at most 24h",
        ),
        case(
            "timeout in words",
            "/spec/timeouts",
            json!({"prepare": "5 minutes"}),
            "spec.timeouts.prepare",
            "hours, minutes and seconds",
        ),
        case(
            "zero token budget",
            "/spec/budget",
            json!({"tokens": 0}),
            "spec.budget.tokens",
            "greater than or equal to 1",
        ),
        case(
            "negative cost budget",
            "/spec/budget",
            json!({"costUsd": "-1"}),
            "spec.budget.costUsd",
            "US dollars",
        ),
        case(
            "too many turns",
            "/spec/budget",
            json!({"turns": 100_000}),
            "spec.budget.turns",
            "less than or equal to 10000",
        ),
        case(
            "priority out of range",
            "/spec/priority",
            json!(5000),
            "spec.priority",
            "less than or equal to 1000",
        ),
        case(
            "taskRef with both sources",
            "/spec/taskRef",
            json!({"repoPath": "a.md", "configMapKeyRef": {"name": "t", "key": "task.md"}}),
            "spec.taskRef",
            "exactly one of configMapKeyRef and repoPath",
        ),
        case(
            "absolute taskRef path",
            "/spec/taskRef",
            json!({"repoPath": "/etc/passwd"}),
            "spec.taskRef.repoPath",
            "no leading '/'",
        ),
        case(
            "bad egress CIDR",
            "/spec/egress",
            json!([{"cidr": "10.0.0.0/33", "ports": [{"port": 443}]}]),
            "spec.egress[0].cidr",
            "must be a CIDR",
        ),
        case(
            "egress port out of range",
            "/spec/egress",
            json!([{"cidr": "10.0.0.0/8", "ports": [{"port": 70000}]}]),
            "spec.egress[0].ports[0].port",
            "less than or equal to 65535",
        ),
        case(
            "egress rule without ports",
            "/spec/egress",
            json!([{"cidr": "10.0.0.0/8", "ports": []}]),
            "spec.egress[0].ports",
            "at least 1 items",
        ),
        case(
            "profile name not a DNS name",
            "/spec/profile",
            json!("Default_Profile"),
            "spec.profile",
            "Kubernetes object name",
        ),
        case(
            "dependency name not a DNS name",
            "/spec/dependsOn",
            json!(["Other Task"]),
            "spec.dependsOn[0]",
            "Kubernetes object name",
        ),
    ]
}

fn profile_cases() -> Vec<Case> {
    vec![
        case(
            "the gateway and a model key for the agent at once",
            "/spec",
            json!({
                "agent": {"image": "hermes/agent:0.1.0", "command": ["claude", "-p"]},
                "reviewer": {"image": "hermes/reviewer:0.1.0", "command": ["claude", "-p"]},
                "runner": {"image": "hermes/runner:0.1.0"},
                "model": {"agent": {"url": "https://api.example.com", "credential": "anthropic"}},
                "secrets": {"model": "model-key"},
            }),
            "spec.model",
            "no task pod holds a model key",
        ),
        case(
            "host names without the gateway",
            "/spec/egress/hosts",
            json!({"implement": [{"name": "registry.npmjs.org"}]}),
            "spec.egress.hosts",
            "needs model",
        ),
        case(
            "a host rule naming an address",
            "/spec/egress/hosts",
            json!({"implement": [{"name": "169.254.169.254"}]}),
            "spec.egress.hosts.implement[0].name",
            "must be a host name",
        ),
        case(
            "empty agent image",
            "/spec/agent/image",
            json!(""),
            "spec.agent.image",
            "at least 1 chars long",
        ),
        case(
            "agent image with a space",
            "/spec/agent/image",
            json!("hermes/agent :1"),
            "spec.agent.image",
            "no spaces",
        ),
        case(
            "empty agent command",
            "/spec/agent/command",
            json!([]),
            "spec.agent.command",
            "at least 1 items",
        ),
        case(
            "egress CIDR with host bits",
            "/spec/egress/implement/0/cidr",
            json!("10.20.3.4/16"),
            "spec.egress.implement[0].cidr",
            "network address",
        ),
        case(
            "egress port zero",
            "/spec/egress/implement/0/ports",
            json!([{"port": 0}]),
            "spec.egress.implement[0].ports[0].port",
            "greater than or equal to 1",
        ),
        case(
            "unknown egress protocol",
            "/spec/egress/implement/0/ports",
            json!([{"port": 53, "protocol": "ICMP"}]),
            "spec.egress.implement[0].ports[0].protocol",
            "Unsupported value",
        ),
        case(
            "maxRunning zero",
            "/spec/concurrency",
            json!({"maxRunning": 0}),
            "spec.concurrency.maxRunning",
            "greater than or equal to 1",
        ),
        case(
            "maxAwaitingReview zero",
            "/spec/concurrency",
            json!({"maxAwaitingReview": 0}),
            "spec.concurrency.maxAwaitingReview",
            "greater than or equal to 1",
        ),
        case(
            "default timeout above its cap",
            "/spec/timeouts/implement",
            json!({"default": "3h", "max": "2h"}),
            "spec.timeouts.implement.default",
            "must not exceed max",
        ),
        case(
            "default tokens above the cap",
            "/spec/budget/default/tokens",
            json!(2_000_000),
            "spec.budget.default.tokens",
            "must not exceed budget.max.tokens",
        ),
        case(
            "default cost above the cap",
            "/spec/budget",
            json!({"default": {"costUsd": "20"}, "max": {"costUsd": "5.5"}}),
            "spec.budget.default.costUsd",
            "must not exceed budget.max.costUsd",
        ),
        case(
            "too many retries",
            "/spec/infrastructureRetries",
            json!(11),
            "spec.infrastructureRetries",
            "less than or equal to 10",
        ),
        case(
            "secret name not a DNS name",
            "/spec/secrets",
            json!({"model": "Model_Key"}),
            "spec.secrets.model",
            "Kubernetes object name",
        ),
        case(
            "unknown out-of-scope policy",
            "/spec/policy",
            json!({"outOfScope": "ignore"}),
            "spec.policy.outOfScope",
            "Unsupported value",
        ),
        case(
            "absolute protected path",
            "/spec/policy",
            json!({"protectedPaths": ["/etc/**"]}),
            "spec.policy.protectedPaths[0]",
            "no leading '/'",
        ),
        case(
            "a built-in protected path removed that is not built in",
            "/spec/policy",
            json!({"removeBuiltInProtectedPaths": ["src/**"]}),
            "spec.policy.removeBuiltInProtectedPaths[0]",
            "Unsupported value",
        ),
        case(
            "unknown pull policy",
            "/spec/imagePullPolicy",
            json!("Sometimes"),
            "spec.imagePullPolicy",
            "Unsupported value",
        ),
    ]
}

async fn assert_refused(api: &Api<DynamicObject>, base: &Value, cases: Vec<Case>) -> usize {
    let mut failures = Vec::new();
    let n = cases.len();
    for c in cases {
        let mut doc = base.clone();
        set(&mut doc, c.pointer, c.value);
        let result = dry_run_create(api, &doc).await;
        let message = match result {
            Ok(()) => {
                failures.push(format!("{}: accepted", c.what));
                continue;
            }
            Err(kube::Error::Api(s)) if s.code == 422 => s.message.clone(),
            Err(e) => {
                failures.push(format!("{}: {e}", c.what));
                continue;
            }
        };
        let names_field = message.contains(&format!("{}: ", c.field));
        if !names_field || !message.contains(c.says) {
            failures.push(format!(
                "{}: expected `{}` and `{}` in: {message}",
                c.what, c.field, c.says
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    n
}

#[tokio::test]
async fn invalid_resources_are_refused_with_a_message_naming_the_field() {
    let Some(cluster) = TierA::connect().await else {
        return;
    };
    cluster.install_crds().await.expect("CRDs install");
    let ns = cluster.namespace("invalid").await.expect("namespace");
    let tasks = Api::namespaced_with(cluster.client.clone(), &ns.name, &task_resource());
    let profiles = Api::namespaced_with(cluster.client.clone(), &ns.name, &profile_resource());

    // The bases are valid, so each refusal below is the case's own doing.
    dry_run_create(&tasks, &valid_task("t"))
        .await
        .expect("the base task is valid");
    dry_run_create(&profiles, &valid_profile("p"))
        .await
        .expect("the base profile is valid");

    let refused = assert_refused(&tasks, &valid_task("t"), task_cases()).await
        + assert_refused(&profiles, &valid_profile("p"), profile_cases()).await;
    assert!(refused >= 25, "the table holds {refused} cases");
}

#[tokio::test]
async fn server_and_rust_agree_on_every_string_rule_vector() {
    let Some(cluster) = TierA::connect().await else {
        return;
    };
    cluster.install_crds().await.expect("CRDs install");
    let ns = cluster.namespace("vectors").await.expect("namespace");
    let tasks = Api::namespaced_with(cluster.client.clone(), &ns.name, &task_resource());

    let mut disagreements = Vec::new();
    let mut check = async |pointer: &str, value: &str, expect_ok: bool| {
        let mut doc = valid_task("v");
        set(&mut doc, pointer, Some(json!(value)));
        if pointer == "/spec/repo/baseRef" {
            // Keep the default branch distinct from the value under test.
            set(
                &mut doc,
                "/spec/repo/branch",
                Some(json!("hermes/vector-test")),
            );
        }
        let got = dry_run_create(&tasks, &doc).await;
        if got.is_ok() != expect_ok {
            disagreements.push(format!(
                "{pointer} = {value:?}: Rust says {expect_ok}, server says {got:?}"
            ));
        }
    };
    for (v, ok) in vectors::BRANCH_NAMES {
        check("/spec/repo/baseRef", v, *ok).await;
    }
    for (v, ok) in vectors::REPO_URLS {
        check("/spec/repo/url", v, *ok).await;
    }
    for (v, ok) in vectors::SCOPE_GLOBS {
        check("/spec/scope/0", v, *ok).await;
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

#[tokio::test]
async fn fields_that_define_a_run_are_immutable_and_the_rest_are_not() {
    let Some(cluster) = TierA::connect().await else {
        return;
    };
    cluster.install_crds().await.expect("CRDs install");
    let ns = cluster.namespace("immutable").await.expect("namespace");
    let tasks: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), &ns.name, &task_resource());
    tasks
        .create(
            &PostParams::default(),
            &serde_json::from_value(valid_task("t")).expect("object"),
        )
        .await
        .expect("created");

    let edits = [
        (
            json!({"spec": {"task": "# Something else entirely"}}),
            "spec.task is immutable",
        ),
        (
            json!({"spec": {"scope": ["**"]}}),
            "spec.scope is immutable",
        ),
        (
            json!({"spec": {"repo": {"url": "https://git.example.com/other/repo.git"}}}),
            "spec.repo is immutable",
        ),
        (
            json!({"spec": {"repo": {"baseRef": "develop"}}}),
            "spec.repo is immutable",
        ),
        (
            json!({"spec": {"profile": "unrestricted"}}),
            "spec.profile is immutable",
        ),
        (
            json!({"spec": {"task": null, "taskRef": {"repoPath": "tasks/other.md"}}}),
            "is immutable",
        ),
    ];
    for (patch, says) in edits {
        let got = tasks
            .patch("t", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ());
        let message = invalid_message(got, &patch.to_string());
        assert!(message.contains(says), "{patch}: {message}");
    }
    // Stored spec is unchanged by the refused edits.
    let stored = tasks.get("t").await.expect("read back");
    assert_eq!(stored.data["spec"]["task"], valid_task("t")["spec"]["task"]);

    // Fields that do not define the run may change (priority, for a queued task).
    tasks
        .patch(
            "t",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"priority": 50}})),
        )
        .await
        .expect("priority is mutable");
}

#[tokio::test]
async fn kubectl_explain_prints_the_doc_comments() {
    let Some(cluster) = TierA::connect().await else {
        return;
    };
    cluster.install_crds().await.expect("CRDs install");
    // Discovery of a new CRD can lag a moment behind Established.
    let mut out = cluster.kubectl(["explain", "hermestask.spec.scope"]);
    for _ in 0..20 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        out = cluster.kubectl(["explain", "hermestask.spec.scope"]);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        squash(&text).contains(&squash(
            "Globs of the paths the change may touch, relative to the repository root (`src/parser/**`, `docs/*.md`)."
        )),
        "{text}"
    );
    let out = cluster.kubectl([
        "explain",
        "hermesprofile.spec.concurrency.maxAwaitingReview",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        squash(&text).contains("work nobody can review is not worth starting"),
        "{text}"
    );
}

#[tokio::test]
async fn kubectl_get_shows_phase_verdict_branch_age_and_wide_columns() {
    let Some(cluster) = TierA::connect().await else {
        return;
    };
    cluster.install_crds().await.expect("CRDs install");
    let ns = cluster.namespace("columns").await.expect("namespace");
    let tasks: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), &ns.name, &task_resource());
    tasks
        .create(
            &PostParams::default(),
            &serde_json::from_value(valid_task("cols")).expect("object"),
        )
        .await
        .expect("created");
    let head = "0123456789abcdef0123456789abcdef01234567";
    let status = json!({
        "apiVersion": "hermes.dev/v1alpha1",
        "kind": "HermesTask",
        "status": {
            "phase": "AwaitingApproval",
            "branch": "hermes/cols",
            "headCommit": head,
            "review": {"verdict": "approve", "reviewedCommit": head},
        }
    });
    tasks
        .patch_status(
            "cols",
            &PatchParams::apply(hermes_e2e::TEST_FIELD_MANAGER),
            &Patch::Apply(&status),
        )
        .await
        .expect("status is written through the status subresource");

    let out = cluster.kubectl(["get", "ht", "-n", &ns.name]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "PHASE", "VERDICT", "BRANCH", "AGE"],
        "{text}"
    );
    assert_eq!(
        lines[1][..4],
        ["cols", "AwaitingApproval", "approve", "hermes/cols"],
        "{text}"
    );

    let out = cluster.kubectl(["get", "hermestasks", "-n", &ns.name, "-o", "wide"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME", "PHASE", "VERDICT", "BRANCH", "AGE", "PROFILE", "HEAD"
        ],
        "{text}"
    );
    assert_eq!(lines[1][5..], ["default", head], "{text}");
}

#[tokio::test]
async fn status_is_validated_too() {
    let Some(cluster) = TierA::connect().await else {
        return;
    };
    cluster.install_crds().await.expect("CRDs install");
    let ns = cluster.namespace("status").await.expect("namespace");
    let tasks: Api<DynamicObject> =
        Api::namespaced_with(cluster.client.clone(), &ns.name, &task_resource());
    tasks
        .create(
            &PostParams::default(),
            &serde_json::from_value(valid_task("s")).expect("object"),
        )
        .await
        .expect("created");
    let bad = json!({
        "apiVersion": "hermes.dev/v1alpha1",
        "kind": "HermesTask",
        "status": {"phase": "Done", "headCommit": "not-a-commit"}
    });
    let got = tasks
        .patch_status(
            "s",
            &PatchParams::apply(hermes_e2e::TEST_FIELD_MANAGER),
            &Patch::Apply(&bad),
        )
        .await
        .map(|_| ());
    let message = invalid_message(got, "bad status");
    assert!(message.contains("status.phase"), "{message}");
    assert!(message.contains("status.headCommit"), "{message}");
}
