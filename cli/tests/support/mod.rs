//! Running the built plugin as a user would: the binary itself, and
//! `kubectl hermes` with the binary's folder on `PATH`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hermes_e2e::Cluster;

/// The plugin binary cargo built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubectl-hermes"))
}

/// `PATH` with the plugin's folder first.
pub fn path_with_plugin() -> std::ffi::OsString {
    let dir = binary().parent().map(Path::to_path_buf).unwrap_or_default();
    let mut paths = vec![dir];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success; the standard output.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "failed: {self:#?}");
        &self.stdout
    }

    /// Asserts failure with exit code `code`; the standard error.
    pub fn failed(&self, code: i32) -> &str {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}: {self:#?}"
        );
        &self.stderr
    }
}

/// Runs `cmd` with `stdin`.
pub fn run_with_stdin(mut cmd: Command, stdin: Option<&str>) -> Ran {
    use std::io::Write as _;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).unwrap();
    }
    Ran::from(child.wait_with_output().unwrap())
}

/// The plugin against `cluster` in namespace `ns` (`--kubeconfig`, `-n`).
pub fn hermes<I, S>(cluster: &Cluster, ns: &str, args: I) -> Ran
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .arg("-n")
        .arg(ns)
        .env_remove("KUBECONFIG");
    run_with_stdin(cmd, None)
}

/// `kubectl hermes <args>` with the plugin on `PATH`; KUBECONFIG names the
/// cluster (kubectl refuses flags before a plugin's name).
pub fn kubectl_hermes<I, S>(cluster: &Cluster, args: I) -> Ran
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(cluster.kubectl_binary());
    cmd.arg("hermes")
        .args(args)
        .env("PATH", path_with_plugin())
        .env("KUBECONFIG", cluster.kubeconfig_path());
    run_with_stdin(cmd, None)
}

/// The cluster's kubectl with `stdin`.
pub fn kubectl_stdin(cluster: &Cluster, args: &[&str], stdin: &str) -> Ran {
    let mut cmd = Command::new(cluster.kubectl_binary());
    cmd.arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(args);
    run_with_stdin(cmd, Some(stdin))
}

/// Writes `text` to `dir/name`; its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A task file with front matter.
pub fn task_file(name: &str, url: &str, review: &str, extra: &str) -> String {
    format!(
        "---\nname: {name}\nrepo:\n  url: {url}\n  baseRef: main\nscope:\n  - src/**\nreview: {review}\n{extra}---\n\n# Punctuate the greeting\n\n`src/greet.sh` prints `Hello NAME`. Make it print `Hello, NAME!` and run the tests (`sh test.sh`).\n"
    )
}
