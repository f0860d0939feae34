//! `hermes-runner` entry point: harden libgit2, parse the command line, run
//! one step, write its one result, exit non-zero on failure.

use std::process::ExitCode;

use clap::Parser;
use hermes_results::{Failure, FailureReason, Step, StepResult};
use hermes_runner::cli::{Cli, Command};
use hermes_runner::credentials::Credentials;
use hermes_runner::git::proxy::Proxy;
use hermes_runner::scrub::Scrubber;
use hermes_runner::{Error, git, output, steps};

fn main() -> ExitCode {
    // First: no gitconfig outside the runner's own repositories, verified objects.
    let hardened = git::init::harden(git::init::empty_config_dir());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            if e.use_stderr()
                && let Some(step) = std::env::args().nth(1).as_deref().and_then(step_named)
            {
                let failure = Failure {
                    step,
                    reason: FailureReason::InvalidInput,
                    message: e.kind().to_string(),
                };
                let _ =
                    output::write_result(&output::termination_path(), StepResult::Failed(failure));
                return ExitCode::from(2);
            }
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match &cli.command {
        Command::ReviewerInstruction => {
            print!("{}", steps::verdict::INSTRUCTION);
            return ExitCode::SUCCESS;
        }
        Command::Diff(a) => return diff(hardened, a),
        Command::Verify(a) => return verify(hardened, a),
        Command::Install(a) => {
            return match hermes_runner::wrap::install(a) {
                Ok(dest) => {
                    tracing::info!(dest = %dest.display(), "installed");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!(error = %e.chain(), "install failed");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Exec(a) => {
            // The wrapped CLI's own failure is reported by the step after it
            // (collect or verdict), which still has to run: exit 0 then.
            return match hardened.and_then(|()| hermes_runner::wrap::exec(a)) {
                // exec logs the exit code and how long the command ran.
                Ok(_code) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e.chain(), "could not run the wrapped command");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let step = step_of(&cli.command);
    let mut scrubber = Scrubber::default();
    let result = hardened.and_then(|()| run(&cli.command, &mut scrubber));
    let (result, code) = match result {
        Ok(r) => (r, ExitCode::SUCCESS),
        Err(e) => {
            let message = scrubber.scrub(&e.chain());
            tracing::error!(reason = ?e.reason(), %message, "step failed");
            let failure = Failure {
                step,
                reason: e.reason(),
                message,
            };
            (StepResult::Failed(failure), ExitCode::FAILURE)
        }
    };
    match output::write_result(&output::termination_path(), result) {
        Ok(()) => code,
        Err(e) => {
            tracing::error!(error = %scrubber.scrub(&e.chain()), "writing the result");
            ExitCode::FAILURE
        }
    }
}

fn run(command: &Command, scrubber: &mut Scrubber) -> Result<StepResult, Error> {
    Ok(match command {
        Command::Prepare(a) => {
            git::init::trust(a.ca_file.as_deref())?;
            git::init::network_timeouts(a.network_timeout)?;
            let creds = Credentials::load(a.credentials_dir.as_deref())?;
            *scrubber = creds.scrubber();
            let proxy = Proxy::load(a.proxy_dir.as_deref(), &a.url)?;
            *scrubber = step_scrubber(&creds, proxy.as_ref());
            StepResult::Prepared(steps::prepare::run(a, &creds, proxy.as_ref())?)
        }
        Command::Collect(a) => StepResult::Collected(steps::collect::run(a)?),
        // Steps that read what the agent or the reviewer wrote and need no
        // network give it up first, as `verify` does.
        Command::Context(a) => {
            hermes_runner::sandbox::no_network()?;
            StepResult::Context(steps::context::run(a)?)
        }
        Command::Verdict(a) => {
            hermes_runner::sandbox::no_network()?;
            StepResult::Verdict(steps::verdict::run(a)?)
        }
        Command::Publish(a) => {
            git::init::trust(a.ca_file.as_deref())?;
            git::init::network_timeouts(a.network_timeout)?;
            let creds = Credentials::load(a.credentials_dir.as_deref())?;
            *scrubber = creds.scrubber();
            let proxy = Proxy::load(a.proxy_dir.as_deref(), &a.url)?;
            *scrubber = step_scrubber(&creds, proxy.as_ref());
            StepResult::Published(steps::publish::run(a, &creds, proxy.as_ref())?)
        }
        Command::ReviewerInstruction
        | Command::Diff(_)
        | Command::Verify(_)
        | Command::Install(_)
        | Command::Exec(_) => {
            return Err(Error::arg("command", "this command writes no result"));
        }
    })
}

/// The scrubber of a step holding git credentials and maybe a proxy credential.
fn step_scrubber(creds: &Credentials, proxy: Option<&Proxy>) -> Scrubber {
    let s = creds.scrubber();
    match proxy {
        Some(p) => s.with(p.scrubber()),
        None => s,
    }
}

fn step_of(command: &Command) -> Step {
    match command {
        Command::Prepare(_)
        | Command::ReviewerInstruction
        | Command::Diff(_)
        | Command::Install(_)
        | Command::Exec(_) => Step::Prepare,
        Command::Collect(_) => Step::Collect,
        Command::Context(_) => Step::Context,
        Command::Verdict(_) => Step::Verdict,
        Command::Publish(_) | Command::Verify(_) => Step::Publish,
    }
}

fn step_named(name: &str) -> Option<Step> {
    Some(match name {
        "prepare" => Step::Prepare,
        "collect" => Step::Collect,
        "context" => Step::Context,
        "verdict" => Step::Verdict,
        "publish" | "verify" => Step::Publish,
        _ => return None,
    })
}

/// `verify`: no result of its own on success (the pod's result is
/// publish's); a failure is publish's failure, in this container's
/// termination message. Sockets go first, before the volume is read.
fn verify(hardened: hermes_runner::Result<()>, args: &hermes_runner::cli::VerifyArgs) -> ExitCode {
    let done = hardened
        .and_then(|()| hermes_runner::sandbox::no_network())
        .and_then(|()| steps::verify::run(args));
    match done {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            let message = e.chain();
            tracing::error!(reason = ?e.reason(), %message, "step failed");
            let failure = Failure {
                step: Step::Publish,
                reason: e.reason(),
                message,
            };
            match output::write_result(&output::termination_path(), StepResult::Failed(failure)) {
                Ok(()) => ExitCode::FAILURE,
                Err(e) => {
                    tracing::error!(error = %e.chain(), "writing the result");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `diff`: the patch on standard output and nothing else (its reader takes
/// the pod's whole log as the patch); on failure, the reason on standard
/// error and, as plain text, in the termination message.
fn diff(hardened: hermes_runner::Result<()>, args: &hermes_runner::cli::DiffArgs) -> ExitCode {
    use std::io::Write as _;
    let done = hardened
        .and_then(|()| hermes_runner::sandbox::no_network())
        .and_then(|()| steps::diff::run(args));
    match done {
        Ok(patch) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(&patch).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hermes-runner diff: writing the patch: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            let message = e.chain();
            eprintln!("hermes-runner diff: {message}");
            let _ = std::fs::write(output::termination_path(), &message);
            ExitCode::FAILURE
        }
    }
}
