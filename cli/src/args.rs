//! The command line (clap derive). `kubectl hermes <command>` runs
//! `kubectl-hermes <command>`: kubectl passes every argument after the
//! plugin's name, so the connection flags go after it too
//! (`kubectl hermes status -n team-a`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hermes_crds::task::{PublishMode, ReviewMode};

use crate::manifest::Overrides;

/// Run markdown task files as HermesTasks, follow them, decide on reviewed
/// changes, and read their logs and diffs.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-hermes",
    bin_name = "kubectl-hermes",
    version,
    about,
    long_about = "kubectl hermes: the Hermes kubectl plugin.\n\n\
Turns a markdown task file (with optional YAML front matter) into a HermesTask, follows it \
phase by phase (prepare → implement → review → publish), approves or rejects the reviewed \
commit, cancels, retries a failed push, and shows a task's status, logs and reviewed diff.\n\n\
Connects like kubectl: KUBECONFIG or ~/.kube/config (or the in-cluster account), \
--kubeconfig, --context, -n/--namespace.",
    after_help = "Exit codes: 0 success; 1 error; 2 usage; with `run --watch`: 3 Failed, 4 Rejected, 5 Cancelled."
)]
pub struct Cli {
    /// Connection flags.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the cluster, as kubectl reads it.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update a HermesTask from a markdown task file.
    #[command(
        long_about = "Create or update a HermesTask from a markdown task file.\n\n\
The markdown body becomes spec.task. Optional YAML front matter between `---` lines at the \
top may set name, repo (url, baseRef, branch), scope, profile, review (auto | manual | {mode, \
instructions}), publish (merge | branch | none), priority, dependsOn, labels, timeouts and budget; \
flags override it. The task is checked with the API server's rules before anything is sent, \
then applied with server-side apply (field manager kubectl-hermes). The name defaults to a \
slug of the file name.",
        after_help = "Examples:\n  kubectl hermes run add-flag.md --watch\n  kubectl hermes run add-flag.md --repo https://git.example.com/org/app.git --base main --scope 'src/**'\n  kubectl hermes run add-flag.md -o yaml > add-flag.yaml    # for GitOps; nothing is sent"
    )]
    Run(RunArgs),
    /// Show one task in detail, or a table of the tasks.
    #[command(
        after_help = "Examples:\n  kubectl hermes status\n  kubectl hermes status -A\n  kubectl hermes status add-flag\n  kubectl hermes status add-flag -o yaml"
    )]
    Status(StatusArgs),
    /// Approve the reviewed commit of a task awaiting approval.
    #[command(
        long_about = "Approve the reviewed commit of a task awaiting approval (review: manual).\n\n\
Reads status.review.reviewedCommit and sets the annotation hermes.dev/approve to that exact \
commit: the operator publishes that commit and no other. Refused when the task is not awaiting \
approval.",
        after_help = "Example:\n  kubectl hermes approve add-flag"
    )]
    Approve(TaskArg),
    /// Reject the reviewed commit of a task awaiting approval.
    #[command(
        long_about = "Reject the reviewed commit of a task awaiting approval (review: manual).\n\n\
Sets hermes.dev/reject to status.review.reviewedCommit; the task ends Rejected. --reason is \
recorded on the task as the annotation hermes.dev/reject-reason, for people (the operator does \
not read it).",
        after_help = "Example:\n  kubectl hermes reject add-flag --reason 'deletes the tests'"
    )]
    Reject(RejectArgs),
    /// Cancel a task: its running Jobs are deleted and it ends Cancelled.
    #[command(after_help = "Example:\n  kubectl hermes cancel add-flag")]
    Cancel(TaskArg),
    /// Run publish again after a failed push.
    #[command(
        long_about = "Run publish again after a failed push.\n\n\
Sets hermes.dev/retry-publish to a new value; each new value runs publish once. Refused when \
the task has no failed push, or its repo volume is gone (set the profile's \
volume.retainAfterCompletion to keep it).",
        after_help = "Example:\n  kubectl hermes retry-publish add-flag"
    )]
    RetryPublish(TaskArg),
    /// Print the logs of a task's pods, phase by phase, every container.
    #[command(
        after_help = "Examples:\n  kubectl hermes logs add-flag\n  kubectl hermes logs add-flag --phase review\n  kubectl hermes logs add-flag -f"
    )]
    Logs(LogsArgs),
    /// Print the reviewed diff (base commit..reviewed commit) of a task.
    #[command(
        long_about = "Print the reviewed diff of a task: from status.baseCommit to \
status.review.reviewedCommit.\n\n\
Runs a short-lived pod with the profile's runner image that mounts the task's repo volume \
read-only, with no credentials, no service-account token and no network, and prints its \
output. Needs the volume: it exists while the task runs (and awaits approval) and after it \
ends only for the profile's volume.retainAfterCompletion.",
        after_help = "Example:\n  kubectl hermes diff add-flag | less"
    )]
    Diff(DiffArgs),
    /// Create one task per markdown file of a folder, as one batch.
    #[command(
        long_about = "Create one task per markdown file (*.md) of a folder, as one batch.\n\n\
Every task is labelled hermes.dev/batch=<batch id> (generated, or --batch-id). Each file is \
checked first; by default the valid files are applied and the invalid ones reported (exit \
code 1). With --atomic, nothing is applied unless every file is valid and the API server \
accepts every task in a server-side dry run.",
        after_help = "Examples:\n  kubectl hermes batch tasks/ --repo https://git.example.com/org/app.git --base main\n  kubectl hermes batch tasks/ --atomic --batch-id release-42\n  kubectl hermes batch tasks/ -o yaml"
    )]
    Batch(BatchArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  kubectl-hermes completion bash > /etc/bash_completion.d/kubectl-hermes"
    )]
    Completion(CompletionArgs),
}

/// Flags that set or override the task's spec.
#[derive(Debug, Clone, Default, Args)]
pub struct SpecFlags {
    /// The repository's git URL (spec.repo.url).
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
    /// The base branch (spec.repo.baseRef).
    #[arg(long, value_name = "BRANCH")]
    pub base: Option<String>,
    /// The task branch (spec.repo.branch; default hermes/<name>).
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
    /// A glob the change may touch (repeatable; replaces the front matter's scope).
    #[arg(long, value_name = "GLOB")]
    pub scope: Vec<String>,
    /// The HermesProfile (default: `default`).
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Who decides on the reviewed change.
    #[arg(long, value_enum)]
    pub review: Option<ReviewArg>,
    /// What happens to an approved change.
    #[arg(long, value_enum)]
    pub publish: Option<PublishArg>,
    /// Admission priority, -1000 to 1000 (higher first).
    #[arg(long, allow_negative_numbers = true, value_name = "N")]
    pub priority: Option<i64>,
}

/// `--review`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReviewArg {
    /// The review Job's verdict decides.
    Auto,
    /// A person approves or rejects the reviewed commit.
    Manual,
}

/// `--publish`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PublishArg {
    /// Merge into the base branch and push.
    Merge,
    /// Push the task branch only.
    Branch,
    /// Push nothing.
    None,
}

impl SpecFlags {
    /// The overrides these flags make.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            repo: self.repo.clone(),
            base: self.base.clone(),
            branch: self.branch.clone(),
            scope: self.scope.clone(),
            profile: self.profile.clone(),
            review: self.review.map(|r| match r {
                ReviewArg::Auto => ReviewMode::Auto,
                ReviewArg::Manual => ReviewMode::Manual,
            }),
            publish: self.publish.map(|p| match p {
                PublishArg::Merge => PublishMode::Merge,
                PublishArg::Branch => PublishMode::Branch,
                PublishArg::None => PublishMode::None,
            }),
            priority: self.priority,
            ..Overrides::default()
        }
    }
}

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

/// `--dry-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum DryRun {
    /// Send for real.
    #[default]
    None,
    /// The API server checks and admits the request, and stores nothing.
    Server,
}

/// `run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The markdown task file.
    #[arg(value_name = "TASK.md")]
    pub file: PathBuf,
    /// The task's name (default: the front matter's, else a slug of the file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Spec flags.
    #[command(flatten)]
    pub spec: SpecFlags,
    /// A task that must have succeeded first (repeatable; replaces the front matter's).
    #[arg(long, value_name = "TASK")]
    pub depends_on: Vec<String>,
    /// Print the resource instead of applying it (nothing is sent), e.g. for GitOps.
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
    /// `server`: have the API server check the task without storing it.
    #[arg(long, value_enum, default_value_t = DryRun::None, value_name = "MODE")]
    pub dry_run: DryRun,
    /// Take over fields another field manager set (as kubectl's --force-conflicts).
    #[arg(long)]
    pub force_conflicts: bool,
    /// Follow the task phase by phase to its end; the exit code says how it ended.
    #[arg(short = 'w', long, conflicts_with_all = ["output", "dry_run"])]
    pub watch: bool,
}

/// `status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The task (omit for a table of all tasks).
    pub task: Option<String>,
    /// Tasks of every namespace.
    #[arg(short = 'A', long, conflicts_with = "task")]
    pub all_namespaces: bool,
    /// Print the resource(s) as YAML or JSON.
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
}

/// A task's name.
#[derive(Debug, Args)]
pub struct TaskArg {
    /// The task.
    pub task: String,
}

/// `reject` arguments.
#[derive(Debug, Args)]
pub struct RejectArgs {
    /// The task.
    pub task: String,
    /// Why, recorded on the task (annotation hermes.dev/reject-reason).
    #[arg(long)]
    pub reason: Option<String>,
}

/// A phase, for `logs --phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PhaseArg {
    /// Clone.
    Prepare,
    /// The agent.
    Implement,
    /// The review.
    Review,
    /// Merge and push.
    Publish,
}

impl PhaseArg {
    /// The phase.
    pub fn phase(self) -> hermes_crds::RunPhase {
        match self {
            PhaseArg::Prepare => hermes_crds::RunPhase::Prepare,
            PhaseArg::Implement => hermes_crds::RunPhase::Implement,
            PhaseArg::Review => hermes_crds::RunPhase::Review,
            PhaseArg::Publish => hermes_crds::RunPhase::Publish,
        }
    }
}

/// `logs` arguments.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The task.
    pub task: String,
    /// Only this phase's pods.
    #[arg(long, value_enum)]
    pub phase: Option<PhaseArg>,
    /// Follow: stream each container as it runs, and the next phases' pods, until the task ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// `diff` arguments.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The task.
    pub task: String,
    /// How long to wait for the diff pod, in seconds.
    #[arg(long, default_value_t = 180, value_name = "SECONDS")]
    pub timeout: u64,
}

/// `batch` arguments.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The folder of markdown task files (*.md, not recursive).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Spec flags, for every task of the batch.
    #[command(flatten)]
    pub spec: SpecFlags,
    /// The batch's id (label hermes.dev/batch); default: generated from the time.
    #[arg(long, value_name = "ID")]
    pub batch_id: Option<String>,
    /// Apply nothing unless every file is valid and the server accepts every task.
    #[arg(long)]
    pub atomic: bool,
    /// Print the resources instead of applying them (nothing is sent).
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
    /// `server`: have the API server check the tasks without storing them.
    #[arg(long, value_enum, default_value_t = DryRun::None, value_name = "MODE")]
    pub dry_run: DryRun,
    /// Take over fields another field manager set.
    #[arg(long)]
    pub force_conflicts: bool,
}

/// `completion` arguments.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_help() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no help", sub.get_name());
        }
    }

    #[test]
    fn negative_priorities_and_global_flags_after_the_command_parse() {
        let cli = Cli::try_parse_from([
            "kubectl-hermes",
            "run",
            "t.md",
            "--priority",
            "-5",
            "-n",
            "team",
            "--context",
            "c",
        ])
        .expect("parses");
        assert_eq!(cli.global.namespace.as_deref(), Some("team"));
        assert_eq!(cli.global.context.as_deref(), Some("c"));
        let Command::Run(run) = cli.command else {
            panic!("run")
        };
        assert_eq!(run.spec.priority, Some(-5));
    }

    #[test]
    fn watch_conflicts_with_output() {
        assert!(
            Cli::try_parse_from(["kubectl-hermes", "run", "t.md", "-w", "-o", "yaml"]).is_err()
        );
    }
}
