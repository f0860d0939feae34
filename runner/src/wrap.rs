//! The agent's side of the pod: `install` copies this binary into the pod's
//! shared emptyDir (the Tekton entrypoint pattern), and `exec` wraps the
//! agent or reviewer CLI from there — it feeds the prompt on standard input,
//! saves standard output to a file for `collect` or `verdict`, records the
//! exit code, and turns the model Secret's files into environment variables
//! for the CLI alone (the Secret is mounted as files, never as pod env).
//!
//! Neither writes a termination message: the step after them reports.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// Longest environment value read from the env directory.
const MAX_ENV_VALUE: u64 = 64 * 1024;

/// `exec` arguments.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The file fed to the command's standard input (the prompt).
    #[arg(long)]
    pub stdin: PathBuf,
    /// Where the command's standard output goes.
    #[arg(long)]
    pub stdout: PathBuf,
    /// Where the command's exit code is written.
    #[arg(long)]
    pub exit_code_file: Option<PathBuf>,
    /// The command's working directory.
    #[arg(long)]
    pub workdir: PathBuf,
    /// A directory whose files become environment variables of the command
    /// (file name = variable name, content = value), e.g. a mounted Secret.
    #[arg(long)]
    pub env_dir: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `install` arguments.
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The directory to copy the runner into.
    #[arg(long)]
    pub to: PathBuf,
}

/// A portable environment variable name: a letter or `_`, then letters,
/// digits or `_` (lower case too: curl reads `http_proxy` only so).
fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads `NAME` files of `dir` as variables. Kubernetes mounts Secret keys as
/// symlinks into a `..data` folder of the same mount; hidden entries are skipped.
pub fn read_env_dir(dir: &Path) -> Result<Vec<(String, String)>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::ReadInput {
        what: "--env-dir",
        path: dir.to_owned(),
        source,
    })?;
    let mut vars = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !env_name_ok(&name) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() || meta.len() > MAX_ENV_VALUE {
            continue;
        }
        let value = std::fs::read_to_string(&path).map_err(|source| Error::ReadInput {
            what: "--env-dir file",
            path: path.clone(),
            source,
        })?;
        vars.push((name, value.trim_end_matches(['\n', '\r']).to_owned()));
    }
    vars.sort();
    Ok(vars)
}

/// Runs the wrapped command; returns its exit code (128 + signal when killed).
pub fn exec(args: &ExecArgs) -> Result<i32> {
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| Error::arg("command", "missing after --"))?;
    let stdin = File::open(&args.stdin).map_err(|source| Error::ReadInput {
        what: "--stdin",
        path: args.stdin.clone(),
        source,
    })?;
    let stdout = File::create(&args.stdout).map_err(|source| Error::WriteOutput {
        what: "--stdout",
        path: args.stdout.clone(),
        source,
    })?;
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .current_dir(&args.workdir)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::inherit());
    if let Some(dir) = &args.env_dir {
        for (k, v) in read_env_dir(dir)? {
            cmd.env(k, v);
        }
    }
    let started = std::time::Instant::now();
    let status = cmd.status().map_err(|source| Error::ReadInput {
        what: "the wrapped command",
        path: PathBuf::from(program),
        source,
    })?;
    #[cfg(unix)]
    let code = {
        use std::os::unix::process::ExitStatusExt;
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
    };
    #[cfg(not(unix))]
    let code = status.code().unwrap_or(1);
    // One line for operators and the overhead benchmark: how long the
    // wrapped CLI itself ran (the rest of the pod's time is Hermes').
    tracing::info!(
        exit_code = code,
        seconds = %format!("{:.3}", started.elapsed().as_secs_f64()),
        "the wrapped command exited"
    );
    if let Some(path) = &args.exit_code_file {
        std::fs::write(path, format!("{code}\n")).map_err(|source| Error::WriteOutput {
            what: "--exit-code-file",
            path: path.clone(),
            source,
        })?;
    }
    Ok(code)
}

/// Copies the running binary to `<to>/hermes-runner`, executable.
pub fn install(args: &InstallArgs) -> Result<PathBuf> {
    let me = std::env::current_exe().map_err(|source| Error::ReadInput {
        what: "the runner binary",
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    std::fs::create_dir_all(&args.to).map_err(|source| Error::WriteOutput {
        what: "--to",
        path: args.to.clone(),
        source,
    })?;
    let dest = args.to.join("hermes-runner");
    std::fs::copy(&me, &dest).map_err(|source| Error::WriteOutput {
        what: "the runner copy",
        path: dest.clone(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).map_err(
            |source| Error::WriteOutput {
                what: "the runner copy",
                path: dest.clone(),
                source,
            },
        )?;
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_dir_files_become_variables_and_hidden_or_odd_names_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ANTHROPIC_API_KEY"), "sk-test\n").expect("write");
        std::fs::write(
            dir.path().join("ANTHROPIC_BASE_URL"),
            "http://10.0.0.1:8080",
        )
        .expect("write");
        std::fs::write(dir.path().join("https_proxy"), "http://h:t@10.0.0.1:3128").expect("write");
        std::fs::write(dir.path().join("9LEADING_DIGIT"), "x").expect("write");
        std::fs::write(dir.path().join("..data"), "x").expect("write");
        std::fs::write(dir.path().join("BAD-NAME"), "x").expect("write");
        let vars = read_env_dir(dir.path()).expect("reads");
        assert_eq!(
            vars,
            [
                ("ANTHROPIC_API_KEY".to_owned(), "sk-test".to_owned()),
                (
                    "ANTHROPIC_BASE_URL".to_owned(),
                    "http://10.0.0.1:8080".to_owned()
                ),
                (
                    "https_proxy".to_owned(),
                    "http://h:t@10.0.0.1:3128".to_owned()
                )
            ]
        );
    }

    #[test]
    fn exec_feeds_stdin_saves_stdout_and_records_the_exit_code() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (input, output, code) = (
            dir.path().join("in"),
            dir.path().join("out"),
            dir.path().join("code"),
        );
        std::fs::write(&input, "hello prompt").expect("write");
        let env_dir = dir.path().join("env");
        std::fs::create_dir(&env_dir).expect("mkdir");
        std::fs::write(env_dir.join("HERMES_TEST_SECRET"), "s3cret").expect("write");
        let args = ExecArgs {
            stdin: input,
            stdout: output.clone(),
            exit_code_file: Some(code.clone()),
            workdir: dir.path().to_owned(),
            env_dir: Some(env_dir),
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "cat; printf ' %s %s' \"$HERMES_TEST_SECRET\" \"$(pwd)\"; exit 3".into(),
            ],
        };
        assert_eq!(exec(&args).expect("runs"), 3);
        let out = std::fs::read_to_string(&output).expect("output");
        assert_eq!(out, format!("hello prompt s3cret {}", dir.path().display()));
        assert_eq!(std::fs::read_to_string(&code).expect("code"), "3\n");
    }

    #[test]
    fn install_copies_an_executable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = install(&InstallArgs {
            to: dir.path().join("bin"),
        })
        .expect("installs");
        let meta = std::fs::metadata(&dest).expect("copied");
        assert!(meta.len() > 0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        }
    }
}
