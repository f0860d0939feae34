//! `kubectl-hermes` entry point: parse, run one command, map its outcome
//! to an exit code (0 success, 1 error, 2 usage; after `run --watch`:
//! 3 Failed, 4 Rejected, 5 Cancelled).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use hermes_crds::TaskPhase;
use kubectl_hermes::args::{Cli, Command};
use kubectl_hermes::decide::Decision;
use kubectl_hermes::run::RunOutcome;
use kubectl_hermes::{batch, decide, diff, logs, run, status};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            let mut text = format!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                // An API error's message is already in the text.
                let api = matches!(s.downcast_ref::<kube::Error>(), Some(kube::Error::Api(_)));
                if !api {
                    text.push_str(&format!(": {s}"));
                }
                source = s.source();
            }
            eprintln!("{text}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let g = &cli.global;
    match &cli.command {
        Command::Run(a) => {
            let outcome = run::run(g, a, &mut out).await?;
            out.flush()?;
            return Ok(match outcome {
                RunOutcome::Done | RunOutcome::Ended(TaskPhase::Succeeded) => ExitCode::SUCCESS,
                RunOutcome::Ended(TaskPhase::Rejected) => ExitCode::from(4),
                RunOutcome::Ended(TaskPhase::Cancelled) => ExitCode::from(5),
                RunOutcome::Ended(_) => ExitCode::from(3),
            });
        }
        Command::Status(a) => status::run(g, a, &mut out).await?,
        Command::Approve(a) => decide::run(g, &a.task, Decision::Approve, &mut out).await?,
        Command::Reject(a) => {
            let d = Decision::Reject {
                reason: a.reason.clone(),
            };
            decide::run(g, &a.task, d, &mut out).await?
        }
        Command::Cancel(a) => decide::run(g, &a.task, Decision::Cancel, &mut out).await?,
        Command::RetryPublish(a) => {
            decide::run(g, &a.task, Decision::RetryPublish, &mut out).await?
        }
        Command::Logs(a) => logs::run(g, a, &mut out).await?,
        Command::Diff(a) => diff::run(g, a, &mut out).await?,
        Command::Batch(a) => {
            let mut err = std::io::stderr();
            batch::run(g, a, &mut out, &mut err).await?
        }
        Command::Completion(a) => kubectl_hermes::completion(a.shell, &mut out),
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
