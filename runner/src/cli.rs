//! The command line: the contract with the operator's pod builders.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// hermes-runner: the in-pod git steps of a Hermes task.
#[derive(Debug, Parser)]
#[command(name = "hermes-runner", version, about)]
pub struct Cli {
    /// The step to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The steps.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Clone the base branch and create the task branch (prepare pod).
    Prepare(PrepareArgs),
    /// Commit what the agent left and summarize the change (implement pod).
    Collect(CollectArgs),
    /// Recompute the change from the volume, as data, and write the review bundle.
    Context(ContextArgs),
    /// Turn the reviewer's output and the policy findings into a verdict.
    Verdict(VerdictArgs),
    /// Copy the reviewed commit's objects out of the volume, verified, with
    /// no credential and no socket (publish pod, before publish).
    Verify(VerifyArgs),
    /// Fetch the base, take in the verified copy, merge or branch, push.
    Publish(PublishArgs),
    /// Print the reviewed change (base..commit) as a patch, reading the volume as data.
    Diff(DiffArgs),
    /// Print the instruction the reviewer is given (the verdict schema).
    ReviewerInstruction,
    /// Copy this binary into a shared folder, for wrapping the agent.
    Install(crate::wrap::InstallArgs),
    /// Run the agent or reviewer CLI: prompt on stdin, output and exit code to files.
    Exec(crate::wrap::ExecArgs),
}

/// `prepare` arguments.
#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// The remote, without credentials.
    #[arg(long)]
    pub url: String,
    /// The base branch to clone.
    #[arg(long)]
    pub base_ref: String,
    /// The task branch to create at the base commit.
    #[arg(long)]
    pub branch: String,
    /// Where to clone (empty or absent).
    #[arg(long)]
    pub repo_dir: PathBuf,
    /// The mounted Secret with git read credentials.
    #[arg(long)]
    pub credentials_dir: Option<PathBuf>,
    /// The mounted gateway Secret of this phase: the git traffic goes
    /// through the gateway's egress proxy named by its `HTTPS_PROXY` file,
    /// `http://hermes:<credential>@<gateway>:3128`. The remote must be
    /// https:// (libgit2 proxies nothing else).
    #[arg(long)]
    pub proxy_dir: Option<PathBuf>,
    /// A CA bundle (PEM) an https remote's certificate may chain to, added
    /// to the system's roots (the profile's `git.caBundle`).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Seconds libgit2 waits to connect to the remote (or the proxy), and
    /// for each read or write of it, before the step fails `CloneFailed`
    /// (1 to 3600).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub network_timeout: u32,
    /// A task file inside the repository, read from the base commit.
    #[arg(long, requires = "task_out")]
    pub task_path: Option<String>,
    /// Where to write the task file read from the repository.
    #[arg(long, requires = "task_path")]
    pub task_out: Option<PathBuf>,
}

/// What a change outside the scope is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OutOfScopePolicy {
    /// A reject finding.
    #[default]
    Reject,
    /// A warn finding.
    Warn,
}

/// `collect` arguments.
#[derive(Debug, clap::Args)]
pub struct CollectArgs {
    /// The repo volume's work tree.
    #[arg(long)]
    pub repo_dir: PathBuf,
    /// The base commit prepare reported.
    #[arg(long)]
    pub base_commit: String,
    /// The task branch.
    #[arg(long)]
    pub branch: String,
    /// The task's name (the `Hermes-Task:` trailer).
    #[arg(long)]
    pub task_name: String,
    /// Paths the change may touch (globs; repeatable).
    #[arg(long = "scope")]
    pub scope: Vec<String>,
    /// The agent CLI's JSON result (Claude Code `--output-format json`).
    #[arg(long)]
    pub agent_output: Option<PathBuf>,
    /// The agent process's exit code, when the pod knows it.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub agent_exit_code: i32,
    /// A file holding the agent's exit code (written by `exec`); wins over
    /// `--agent-exit-code`. A missing or unreadable file counts as a failure.
    #[arg(long)]
    pub agent_exit_code_file: Option<PathBuf>,
}

/// `context` arguments.
#[derive(Debug, clap::Args)]
pub struct ContextArgs {
    /// The repo volume (read-only, hostile).
    #[arg(long)]
    pub repo_dir: PathBuf,
    /// The base commit, from the operator (never read from the volume).
    #[arg(long)]
    pub base_commit: String,
    /// The task branch.
    #[arg(long)]
    pub branch: String,
    /// Paths the change may touch (globs; repeatable).
    #[arg(long = "scope")]
    pub scope: Vec<String>,
    /// Paths no change may touch (globs; repeatable).
    #[arg(long = "protected")]
    pub protected: Vec<String>,
    /// Largest file the change may add or grow to.
    #[arg(long)]
    pub max_file_bytes: u64,
    /// The task file (copied into the bundle).
    #[arg(
        long,
        required_unless_present = "task_path",
        conflicts_with = "task_path"
    )]
    pub task_file: Option<PathBuf>,
    /// The task file as a path in the repository, read from the base commit's
    /// objects (hash-verified), never from the agent-touched work tree.
    #[arg(long)]
    pub task_path: Option<String>,
    /// Where to write the review bundle.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Whether out-of-scope paths reject or warn.
    #[arg(long, value_enum, default_value_t = OutOfScopePolicy::Reject)]
    pub out_of_scope: OutOfScopePolicy,
    /// Extra review instructions from the task, added to the reviewer's prompt.
    #[arg(long)]
    pub review_instructions: Option<String>,
}

/// `verdict` arguments.
#[derive(Debug, clap::Args)]
pub struct VerdictArgs {
    /// The review bundle context wrote.
    #[arg(long)]
    pub bundle_dir: PathBuf,
    /// The reviewer CLI's output.
    #[arg(long)]
    pub reviewer_output: PathBuf,
}

/// How to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Merge into the base branch and push it.
    Merge,
    /// Push the task branch.
    Branch,
}

/// `publish` arguments.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The remote, without credentials.
    #[arg(long)]
    pub url: String,
    /// The base branch.
    #[arg(long)]
    pub base_ref: String,
    /// The task branch.
    #[arg(long)]
    pub branch: String,
    /// Merge or branch.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// The verified copy `verify` wrote (read-only; the volume itself is
    /// not mounted here).
    #[arg(long)]
    pub verified_dir: PathBuf,
    /// The base commit prepare reported.
    #[arg(long)]
    pub base_commit: String,
    /// The commit the review approved.
    #[arg(long)]
    pub reviewed_commit: String,
    /// The mounted Secret with git push credentials.
    #[arg(long)]
    pub credentials_dir: Option<PathBuf>,
    /// The mounted gateway Secret of this phase: the git traffic goes
    /// through the gateway's egress proxy named by its `HTTPS_PROXY` file,
    /// `http://hermes:<credential>@<gateway>:3128`. The remote must be
    /// https:// (libgit2 proxies nothing else).
    #[arg(long)]
    pub proxy_dir: Option<PathBuf>,
    /// A CA bundle (PEM) an https remote's certificate may chain to, added
    /// to the system's roots (the profile's `git.caBundle`).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Seconds libgit2 waits to connect to the remote (or the proxy), and
    /// for each read or write of it, before the step fails `CloneFailed`
    /// (1 to 3600).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub network_timeout: u32,
    /// A writable, empty directory for the fresh clone.
    #[arg(long)]
    pub work_dir: PathBuf,
    /// The task's name (merge commit trailer).
    #[arg(long)]
    pub task_name: String,
}

/// `verify` arguments.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The repo volume (read-only, hostile).
    #[arg(long)]
    pub repo_dir: PathBuf,
    /// The base commit prepare reported.
    #[arg(long)]
    pub base_commit: String,
    /// The commit the review approved.
    #[arg(long)]
    pub reviewed_commit: String,
    /// An empty directory for the verified copy, which publish reads.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// A writable, empty directory of this step's own (its private
    /// repository over the volume's objects).
    #[arg(long)]
    pub work_dir: PathBuf,
}

/// `diff` arguments.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The repo volume (read-only, hostile).
    #[arg(long)]
    pub repo_dir: PathBuf,
    /// The base commit (from the task's status, never read from the volume).
    #[arg(long)]
    pub base_commit: String,
    /// The commit to compare with it (the reviewed commit, from the status).
    #[arg(long)]
    pub commit: String,
    /// A writable, empty (or absent) directory for a scratch repository.
    #[arg(long)]
    pub scratch_dir: PathBuf,
    /// The largest patch printed; a larger one is an error.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_bytes: u64,
}
