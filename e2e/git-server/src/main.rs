//! `hermes-git-server`: serves the bare repositories under `--root` over git
//! smart HTTP with basic auth (see the library). A test fixture of the project.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use hermes_git_server::{Config, GitServer, User};

/// A git smart-HTTP server for Hermes's tests: `git http-backend` behind
/// basic auth with a read user (clone, fetch) and a push user (also push).
/// Passwords are read from files (first line), never from flags. Each request
/// is logged as one line to stderr, without credentials. Stops on SIGTERM or
/// SIGINT after answering the requests in flight.
#[derive(Debug, Parser)]
#[command(name = "hermes-git-server")]
struct Args {
    /// Address to bind.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    listen: String,
    /// Folder of the bare repositories (http://ADDR/<repo>.git serves
    /// DIR/<repo>.git); created if missing.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Name of the user who may clone and fetch.
    #[arg(long, value_name = "NAME", default_value = hermes_git_server::READ_USER.0)]
    read_user: String,
    /// File whose first line is the read user's password.
    #[arg(long, value_name = "FILE")]
    read_password_file: PathBuf,
    /// Name of the user who may clone, fetch and push.
    #[arg(long, value_name = "NAME", default_value = hermes_git_server::PUSH_USER.0)]
    push_user: String,
    /// File whose first line is the push user's password.
    #[arg(long, value_name = "FILE")]
    push_password_file: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hermes-git-server: {e}");
            ExitCode::from(2)
        }
    }
}

/// The first line of `file`, without its line ending; never empty.
fn password(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let line = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    if line.is_empty() {
        return Err(format!("{}: no password on its first line", file.display()));
    }
    Ok(line.to_owned())
}

fn run(args: Args) -> Result<(), String> {
    let read = User::new(args.read_user, password(&args.read_password_file)?);
    let push = User::new(args.push_user, password(&args.push_password_file)?);
    let config = Config::new(&args.root, args.listen)
        .users(read, push)
        .log_stderr(true);
    let server = GitServer::start_with(config).map_err(|e| e.to_string())?;
    eprintln!(
        "hermes-git-server: listening on http://{}, serving {}",
        server.addr(),
        server.root().display()
    );
    let signal = wait_for_signal()?;
    eprintln!("hermes-git-server: {signal}, stopping after the requests in flight");
    server.shutdown();
    Ok(())
}

/// Blocks until SIGTERM or SIGINT; returns its name.
fn wait_for_signal() -> Result<&'static str, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("signal runtime: {e}"))?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    })
}
