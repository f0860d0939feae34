//! One Job per phase and attempt. Sequential steps are init containers
//! followed by the main container; they hand files through an emptyDir. The
//! main container's termination message is the phase's result.
//!
//! | phase     | containers                                    | repo volume | secret   |
//! |-----------|-----------------------------------------------|-------------|----------|
//! | prepare   | prepare                                       | rw          | git read |
//! | implement | install-runner, agent → collect               | rw          | model    |
//! | review    | context, install-runner, reviewer → verdict   | ro          | model    |
//! | publish   | verify → publish                              | ro (verify) | git push (publish) |
//!
//! Publish is split in two containers because the volume is hostile: `verify`
//! mounts it with no Secret and no network (a seccomp filter it installs on
//! itself) and copies the reviewed range out, hash-checked, into the
//! `verified` emptyDir; `publish`, which holds the push credential, never
//! mounts the volume and re-checks every object of that copy in Rust before
//! libgit2 reads it.

use std::collections::BTreeMap;

use hermes_crds::RunPhase;
use hermes_crds::task::PublishMode;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvVar, KeyToPath, PersistentVolumeClaimVolumeSource,
    PodSpec, PodTemplateSpec, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::storage::{repo_pvc_name, task_configmap_name};
use super::{
    ANNOTATION_TASK_NAME, BuildInput, LABEL_ATTEMPT, LABEL_EGRESS, MAX_JOB_NAME, child_name,
    container, empty_dir, labels, mount, paths, pod_security, resources,
};

/// What earlier phases established, as recorded in status.
#[derive(Clone, Debug, Default)]
pub struct PhaseFacts {
    /// The base commit prepare cloned.
    pub base_commit: Option<String>,
    /// The commit review decided on.
    pub reviewed_commit: Option<String>,
}

/// `<task>-<phase>` for the first attempt, `<task>-<phase>-<n>` after.
pub fn job_name(task: &str, phase: RunPhase, attempt: u32) -> String {
    let suffix = if attempt <= 1 {
        phase.as_str().to_owned()
    } else {
        format!("{}-{attempt}", phase.as_str())
    };
    child_name(task, &suffix, MAX_JOB_NAME)
}

const REPO_VOLUME: &str = "repo";
const SCRATCH_VOLUME: &str = "scratch";
const BUNDLE_VOLUME: &str = "bundle";
const TMP_VOLUME: &str = "tmp";
const BIN_VOLUME: &str = "hermes-bin";
const HOME_VOLUME: &str = "home";
const TASK_VOLUME: &str = "task";
const GIT_VOLUME: &str = "git-credentials";
const MODEL_VOLUME: &str = "model-credentials";
const GATEWAY_VOLUME: &str = "gateway-credential";
const GIT_CA_VOLUME: &str = "git-ca";
const VERIFIED_VOLUME: &str = "verified";
const VERIFY_TMP_VOLUME: &str = "verify-tmp";

/// Default limits of a runner container: publish's clone needs room
/// (its scratch emptyDir is 4Gi).
pub const RUNNER_LIMITS: super::Limits = super::Limits {
    cpu: "250m",
    memory: "256Mi",
    ephemeral: "5Gi",
};

/// Default limits of the agent and the reviewer.
pub const AGENT_LIMITS: super::Limits = super::Limits {
    cpu: "1",
    memory: "2Gi",
    ephemeral: "2Gi",
};

fn secret_volume(volume: &str, secret: &str) -> Volume {
    Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            default_mode: Some(0o440),
            optional: Some(false),
            items: None,
        }),
        ..Volume::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// The task file the agent and the reviewer read.
fn task_file(input: &BuildInput<'_>) -> &'static str {
    let in_repo = input
        .task
        .spec
        .task_ref
        .as_ref()
        .is_some_and(|r| r.repo_path.is_some());
    if in_repo {
        paths::TASK_FROM_REPO
    } else {
        paths::TASK_FILE
    }
}

fn task_in_configmap(input: &BuildInput<'_>) -> bool {
    task_file(input) == paths::TASK_FILE
}

struct Pod {
    init: Vec<Container>,
    main: Container,
    volumes: Vec<Volume>,
}

fn runner(
    input: &BuildInput<'_>,
    name: &str,
    args: Vec<String>,
    mounts: Vec<VolumeMount>,
) -> Container {
    let p = input.profile;
    let mut c = container(name, &p.runner.image.0, pull_policy(input));
    c.command = Some(vec![paths::RUNNER.into()]);
    c.args = Some(args);
    c.volume_mounts = Some(mounts);
    c.resources = Some(resources(p.runner.resources.as_ref(), RUNNER_LIMITS));
    c.env = Some(vec![env("TMPDIR", "/tmp"), env("RUST_LOG", "info")]);
    c
}

fn pull_policy(input: &BuildInput<'_>) -> &'static str {
    match input.profile.image_pull_policy {
        hermes_crds::profile::PullPolicy::Always => "Always",
        hermes_crds::profile::PullPolicy::IfNotPresent => "IfNotPresent",
        hermes_crds::profile::PullPolicy::Never => "Never",
    }
}

fn install_runner(input: &BuildInput<'_>) -> Container {
    runner(
        input,
        "install-runner",
        vec!["install".into(), "--to".into(), paths::BIN.into()],
        vec![
            mount(BIN_VOLUME, paths::BIN, false),
            mount(TMP_VOLUME, "/tmp", false),
        ],
    )
}

/// Which agent CLI a pod runs: each has its own model credentials.
#[derive(Clone, Copy)]
enum Role {
    Implementer,
    Reviewer,
}

impl Role {
    fn phase(self) -> RunPhase {
        match self {
            Role::Implementer => RunPhase::Implement,
            Role::Reviewer => RunPhase::Review,
        }
    }
}

/// The model Secret of `role`: the reviewer's own when the profile names
/// one, else the shared one.
fn model_secret<'a>(input: &'a BuildInput<'_>, role: Role) -> Option<&'a str> {
    if input.uses_gateway(role.phase()) {
        return None;
    }
    let secrets = &input.profile.secrets;
    let named = match role {
        Role::Implementer => secrets.model.as_ref(),
        Role::Reviewer => secrets.reviewer_model.as_ref().or(secrets.model.as_ref()),
    };
    named.map(|n| n.0.as_str())
}

/// The agent or reviewer, wrapped by the runner's `exec`: it feeds the prompt
/// on standard input, saves the CLI's output, and turns the model Secret's
/// files into environment variables for the CLI alone.
#[allow(clippy::too_many_arguments)]
fn agent_container(
    input: &BuildInput<'_>,
    role: Role,
    name: &str,
    spec: &hermes_crds::profile::AgentSpec,
    prompt: &str,
    output: &str,
    exit_code: &str,
    workdir: &str,
    mut mounts: Vec<VolumeMount>,
) -> Container {
    let mut c = container(name, &spec.image.0, pull_policy(input));
    let mut command = vec![
        format!("{}/hermes-runner", paths::BIN),
        "exec".into(),
        "--stdin".into(),
        prompt.into(),
        "--stdout".into(),
        output.into(),
        "--exit-code-file".into(),
        exit_code.into(),
        "--workdir".into(),
        workdir.into(),
    ];
    if model_secret(input, role).is_some() {
        command.extend(["--env-dir".into(), paths::MODEL_SECRET.into()]);
        mounts.push(mount(MODEL_VOLUME, paths::MODEL_SECRET, true));
    }
    let gateway = input.gateway.filter(|_| input.uses_gateway(role.phase()));
    if gateway.is_some() {
        command.extend(["--env-dir".into(), paths::GATEWAY_SECRET.into()]);
        mounts.push(mount(GATEWAY_VOLUME, paths::GATEWAY_SECRET, true));
    }
    command.push("--".into());
    command.extend(spec.command.iter().cloned());
    c.command = Some(command);
    c.working_dir = Some(workdir.into());
    mounts.extend([
        mount(BIN_VOLUME, paths::BIN, true),
        mount(HOME_VOLUME, paths::HOME, false),
        mount(TMP_VOLUME, "/tmp", false),
        mount(SCRATCH_VOLUME, paths::SCRATCH, false),
    ]);
    c.volume_mounts = Some(mounts);
    c.resources = Some(resources(spec.resources.as_ref(), AGENT_LIMITS));
    let budget = &input.effective.budget;
    let mut vars = vec![
        env("HOME", paths::HOME),
        env("CLAUDE_CONFIG_DIR", &format!("{}/.claude", paths::HOME)),
        env("TMPDIR", "/tmp"),
        env("DISABLE_AUTOUPDATER", "1"),
        env("DISABLE_TELEMETRY", "1"),
        env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        env("CLAUDE_CODE_MAX_RETRIES", "3"),
    ];
    if let Some(g) = gateway {
        // The model API is the gateway itself, not a host behind its proxy.
        vars.push(env("NO_PROXY", &g.address));
        vars.push(env("no_proxy", &g.address));
    }
    if let Some(t) = budget.tokens {
        vars.push(env("HERMES_BUDGET_TOKENS", &t.to_string()));
    }
    if let Some(t) = budget.turns {
        vars.push(env("HERMES_BUDGET_TURNS", &t.to_string()));
    }
    if let Some(c) = budget.cost_micros {
        vars.push(env(
            "HERMES_BUDGET_COST_USD",
            &hermes_crds::validation::Usd::from_micros(c).0,
        ));
    }
    c.env = Some(vars);
    c
}

fn repo_volume(input: &BuildInput<'_>, read_only: bool) -> Volume {
    Volume {
        name: REPO_VOLUME.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: repo_pvc_name(input.name()),
            read_only: Some(read_only),
        }),
        ..Volume::default()
    }
}

fn task_volume(input: &BuildInput<'_>) -> Volume {
    Volume {
        name: TASK_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: task_configmap_name(input.name()),
            items: Some(vec![KeyToPath {
                key: "task.md".into(),
                path: "task.md".into(),
                mode: Some(0o444),
            }]),
            default_mode: Some(0o444),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

fn scopes(input: &BuildInput<'_>, args: &mut Vec<String>) {
    for g in &input.task.spec.scope {
        args.extend(["--scope".into(), g.0.clone()]);
    }
}

/// `<step> --url U --base-ref B --branch T`: the remote-facing steps' common arguments.
fn remote_args(step: &str, input: &BuildInput<'_>) -> Vec<String> {
    let repo = &input.task.spec.repo;
    vec![
        step.to_owned(),
        "--url".into(),
        repo.url.0.clone(),
        "--base-ref".into(),
        repo.base_ref.0.clone(),
        "--branch".into(),
        input.task.work_branch().0,
    ]
}

/// The git steps' trust and way out: the profile's CA bundle, when it names
/// one; the gateway's egress proxy, when their phase uses it (the phase's
/// credential Secret, mounted into the runner, whose proxy URL the step
/// reads).
fn git_remote_access(
    input: &BuildInput<'_>,
    phase: RunPhase,
    attempt: u32,
    args: &mut Vec<String>,
    mounts: &mut Vec<VolumeMount>,
    volumes: &mut Vec<Volume>,
) {
    if let Some(bundle) = &input.profile.git.ca_bundle {
        // The profile's private CA, for the runner's TLS to the remote.
        args.extend(["--ca-file".into(), paths::GIT_CA_FILE.into()]);
        mounts.push(mount(GIT_CA_VOLUME, paths::GIT_CA, true));
        volumes.push(Volume {
            name: GIT_CA_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: bundle.0.clone(),
                items: Some(vec![KeyToPath {
                    key: "ca.crt".into(),
                    path: "ca.crt".into(),
                    mode: None,
                }]),
                default_mode: Some(0o444),
                optional: Some(false),
            }),
            ..Volume::default()
        });
    }
    if !input.uses_gateway(phase) {
        return;
    }
    args.extend(["--proxy-dir".into(), paths::GATEWAY_SECRET.into()]);
    mounts.push(mount(GATEWAY_VOLUME, paths::GATEWAY_SECRET, true));
    let name = super::credential_secret_name(input.name(), phase, attempt);
    volumes.push(secret_volume(GATEWAY_VOLUME, &name));
}

fn prepare(input: &BuildInput<'_>, attempt: u32) -> Pod {
    let spec = &input.task.spec;
    let mut args = remote_args("prepare", input);
    args.extend(["--repo-dir".into(), paths::REPO.into()]);
    let mut mounts = vec![
        mount(REPO_VOLUME, paths::WORKSPACE, false),
        mount(TMP_VOLUME, "/tmp", false),
    ];
    let mut volumes = vec![repo_volume(input, false), empty_dir(TMP_VOLUME, "256Mi")];
    if let Some(secret) = &input.profile.secrets.git_read {
        args.extend(["--credentials-dir".into(), paths::GIT_SECRET.into()]);
        mounts.push(mount(GIT_VOLUME, paths::GIT_SECRET, true));
        volumes.push(secret_volume(GIT_VOLUME, &secret.0));
    }
    git_remote_access(
        input,
        RunPhase::Prepare,
        attempt,
        &mut args,
        &mut mounts,
        &mut volumes,
    );
    if let Some(path) = spec.task_ref.as_ref().and_then(|r| r.repo_path.as_ref()) {
        args.extend([
            "--task-path".into(),
            path.0.clone(),
            "--task-out".into(),
            paths::TASK_FROM_REPO.into(),
        ]);
    }
    Pod {
        init: vec![],
        main: runner(input, "prepare", args, mounts),
        volumes,
    }
}

/// The volumes of a pod that runs an agent CLI (implement, review): the repo
/// claim, `extra`, the pod's emptyDirs, and where used the task ConfigMap and
/// the model Secret. Also returns the task file's mount, when there is one.
fn agent_pod_volumes(
    input: &BuildInput<'_>,
    role: Role,
    attempt: u32,
    repo_read_only: bool,
    extra: Option<Volume>,
) -> (Vec<Volume>, Option<VolumeMount>) {
    let mut volumes = vec![repo_volume(input, repo_read_only)];
    volumes.extend(extra);
    volumes.extend([
        empty_dir(SCRATCH_VOLUME, "256Mi"),
        empty_dir(TMP_VOLUME, "1Gi"),
        empty_dir(BIN_VOLUME, "128Mi"),
        empty_dir(HOME_VOLUME, "256Mi"),
    ]);
    let task_mount = task_in_configmap(input).then(|| {
        volumes.push(task_volume(input));
        mount(TASK_VOLUME, paths::TASK_DIR, true)
    });
    if let Some(secret) = model_secret(input, role) {
        volumes.push(secret_volume(MODEL_VOLUME, secret));
    }
    if input.uses_gateway(role.phase()) {
        let name = super::credential_secret_name(input.name(), role.phase(), attempt);
        volumes.push(secret_volume(GATEWAY_VOLUME, &name));
    }
    (volumes, task_mount)
}

fn implement(input: &BuildInput<'_>, attempt: u32, facts: &PhaseFacts) -> Pod {
    let agent_output = format!("{}/agent-output.json", paths::SCRATCH);
    let agent_exit = format!("{}/agent-exit-code", paths::SCRATCH);
    let mut agent_mounts = vec![mount(REPO_VOLUME, paths::WORKSPACE, false)];
    let (volumes, task_mount) = agent_pod_volumes(input, Role::Implementer, attempt, false, None);
    agent_mounts.extend(task_mount);
    let agent = agent_container(
        input,
        Role::Implementer,
        "agent",
        &input.profile.agent,
        task_file(input),
        &agent_output,
        &agent_exit,
        paths::REPO,
        agent_mounts,
    );
    let mut args = vec![
        "collect".to_owned(),
        "--repo-dir".into(),
        paths::REPO.into(),
        "--base-commit".into(),
        facts.base_commit.clone().unwrap_or_default(),
        "--branch".into(),
        input.task.work_branch().0,
        "--task-name".into(),
        input.name().to_owned(),
    ];
    scopes(input, &mut args);
    args.extend([
        "--agent-output".into(),
        agent_output,
        "--agent-exit-code-file".into(),
        agent_exit,
    ]);
    let collect = runner(
        input,
        "collect",
        args,
        vec![
            mount(REPO_VOLUME, paths::WORKSPACE, false),
            mount(SCRATCH_VOLUME, paths::SCRATCH, true),
            mount(TMP_VOLUME, "/tmp", false),
        ],
    );
    Pod {
        init: vec![install_runner(input), agent],
        main: collect,
        volumes,
    }
}

fn review(input: &BuildInput<'_>, attempt: u32, facts: &PhaseFacts) -> Pod {
    // The bundle is written by context alone and read-only to the reviewer
    // and to verdict: the reviewer (a model with tools) cannot rewrite the
    // policy findings verdict reads.
    let bundle = paths::BUNDLE.to_owned();
    let reviewer_output = format!("{}/reviewer-output.json", paths::SCRATCH);
    let policy = &input.profile.policy;
    let mut args = vec![
        "context".to_owned(),
        "--repo-dir".into(),
        paths::REPO.into(),
        "--base-commit".into(),
        facts.base_commit.clone().unwrap_or_default(),
        "--branch".into(),
        input.task.work_branch().0,
    ];
    scopes(input, &mut args);
    for g in policy.effective_protected_paths() {
        args.extend(["--protected".into(), g]);
    }
    args.extend([
        "--out-of-scope".into(),
        match policy.out_of_scope {
            hermes_crds::profile::OutOfScope::Reject => "reject",
            hermes_crds::profile::OutOfScope::Warn => "warn",
        }
        .into(),
        "--max-file-bytes".into(),
        policy.max_file_bytes.to_string(),
        "--out-dir".into(),
        bundle.clone(),
    ]);
    // A task file from the repository is read from the base commit's objects:
    // the copy prepare left on the volume is the agent's to touch.
    match input
        .task
        .spec
        .task_ref
        .as_ref()
        .and_then(|r| r.repo_path.as_ref())
    {
        Some(path) => args.extend(["--task-path".into(), path.0.clone()]),
        None => args.extend(["--task-file".into(), paths::TASK_FILE.into()]),
    }
    if let Some(text) = &input.task.spec.review.instructions {
        args.extend(["--review-instructions".into(), text.clone()]);
    }
    let mut context_mounts = vec![
        mount(REPO_VOLUME, paths::WORKSPACE, true),
        mount(BUNDLE_VOLUME, paths::BUNDLE, false),
        mount(TMP_VOLUME, "/tmp", false),
    ];
    let (volumes, task_mount) = agent_pod_volumes(
        input,
        Role::Reviewer,
        attempt,
        true,
        Some(empty_dir(BUNDLE_VOLUME, "1Gi")),
    );
    context_mounts.extend(task_mount);
    let context = runner(input, "context", args, context_mounts);
    // The reviewer sees the bundle only: not the repository, whose planted
    // agent settings (hooks, MCP servers) must not load.
    let reviewer = agent_container(
        input,
        Role::Reviewer,
        "reviewer",
        &input.profile.reviewer,
        &format!("{bundle}/prompt.md"),
        &reviewer_output,
        &format!("{}/reviewer-exit-code", paths::SCRATCH),
        &bundle,
        vec![mount(BUNDLE_VOLUME, paths::BUNDLE, true)],
    );
    let verdict = runner(
        input,
        "verdict",
        vec![
            "verdict".into(),
            "--bundle-dir".into(),
            bundle,
            "--reviewer-output".into(),
            reviewer_output,
        ],
        vec![
            mount(BUNDLE_VOLUME, paths::BUNDLE, true),
            mount(SCRATCH_VOLUME, paths::SCRATCH, true),
            mount(TMP_VOLUME, "/tmp", false),
        ],
    );
    Pod {
        init: vec![context, install_runner(input), reviewer],
        main: verdict,
        volumes,
    }
}

fn publish(input: &BuildInput<'_>, attempt: u32, facts: &PhaseFacts) -> Pod {
    let spec = &input.task.spec;
    let mode = match spec.publish.mode {
        PublishMode::Merge => "merge",
        PublishMode::Branch => "branch",
        PublishMode::None => "none",
    };
    let base_commit = facts.base_commit.clone().unwrap_or_default();
    let reviewed_commit = facts.reviewed_commit.clone().unwrap_or_default();
    // verify: the volume (read-only) and nothing else of value; its own
    // /tmp, so that nothing it leaves there reaches publish.
    let verify = runner(
        input,
        "verify",
        vec![
            "verify".into(),
            "--repo-dir".into(),
            paths::REPO.into(),
            "--base-commit".into(),
            base_commit.clone(),
            "--reviewed-commit".into(),
            reviewed_commit.clone(),
            "--out-dir".into(),
            format!("{}/copy", paths::VERIFIED),
            "--work-dir".into(),
            "/tmp/verify".into(),
        ],
        vec![
            mount(REPO_VOLUME, paths::WORKSPACE, true),
            mount(VERIFIED_VOLUME, paths::VERIFIED, false),
            mount(VERIFY_TMP_VOLUME, "/tmp", false),
        ],
    );
    let mut args = remote_args("publish", input);
    args.extend([
        "--mode".into(),
        mode.into(),
        "--verified-dir".into(),
        format!("{}/copy", paths::VERIFIED),
        "--base-commit".into(),
        base_commit,
        "--reviewed-commit".into(),
        reviewed_commit,
        "--work-dir".into(),
        format!("{}/publish", paths::SCRATCH),
        "--task-name".into(),
        input.name().to_owned(),
    ]);
    // No repo volume here: what publish takes from it is the copy alone.
    let mut mounts = vec![
        mount(VERIFIED_VOLUME, paths::VERIFIED, true),
        mount(SCRATCH_VOLUME, paths::SCRATCH, false),
        mount(TMP_VOLUME, "/tmp", false),
    ];
    let mut volumes = vec![
        repo_volume(input, true),
        empty_dir(VERIFIED_VOLUME, "4Gi"),
        empty_dir(VERIFY_TMP_VOLUME, "256Mi"),
        empty_dir(SCRATCH_VOLUME, "4Gi"),
        empty_dir(TMP_VOLUME, "256Mi"),
    ];
    if let Some(secret) = &input.profile.secrets.git_push {
        args.extend(["--credentials-dir".into(), paths::GIT_SECRET.into()]);
        mounts.push(mount(GIT_VOLUME, paths::GIT_SECRET, true));
        volumes.push(secret_volume(GIT_VOLUME, &secret.0));
    }
    git_remote_access(
        input,
        RunPhase::Publish,
        attempt,
        &mut args,
        &mut mounts,
        &mut volumes,
    );
    Pod {
        init: vec![verify],
        main: runner(input, "publish", args, mounts),
        volumes,
    }
}

/// The Job of one phase and attempt.
pub fn job(input: &BuildInput<'_>, phase: RunPhase, attempt: u32, facts: &PhaseFacts) -> Job {
    let pod = match phase {
        RunPhase::Prepare => prepare(input, attempt),
        RunPhase::Implement => implement(input, attempt, facts),
        RunPhase::Review => review(input, attempt, facts),
        RunPhase::Publish => publish(input, attempt, facts),
    };
    let mut pod_labels = labels(input.name(), Some(phase));
    pod_labels.insert(LABEL_ATTEMPT.to_owned(), attempt.to_string());
    let mut meta = input.meta(job_name(input.name(), phase, attempt), Some(phase));
    meta.labels = Some(pod_labels.clone());
    // The pod (not the Job) is what its allow list selects.
    pod_labels.insert(
        LABEL_EGRESS.to_owned(),
        super::network::egress_label(input, phase),
    );
    let deadline = i64::try_from(input.effective.timeout(phase).as_secs()).unwrap_or(i64::MAX);
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        ANNOTATION_TASK_NAME.to_owned(),
                        input.name().to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    init_containers: (!pod.init.is_empty()).then_some(pod.init),
                    containers: vec![pod.main],
                    volumes: Some(pod.volumes),
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(pod_security()),
                    runtime_class_name: input
                        .profile
                        .runtime_class_name
                        .as_ref()
                        .map(|r| r.0.clone()),
                    active_deadline_seconds: Some(deadline),
                    termination_grace_period_seconds: Some(10),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}
