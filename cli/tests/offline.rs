//! The plugin without a cluster: help, completions, `-o yaml` (which sends
//! nothing), and refusals of invalid task files before any connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::*;

fn offline(args: &[&str]) -> Ran {
    let mut cmd = Command::new(binary());
    // A kubeconfig that does not exist: any attempt to connect would fail.
    cmd.args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env("HOME", "/nonexistent");
    run_with_stdin(cmd, None)
}

#[test]
fn every_command_has_help() {
    let top = offline(&["--help"]);
    let text = top.ok().to_owned();
    for sub in [
        "run",
        "status",
        "approve",
        "reject",
        "cancel",
        "retry-publish",
        "logs",
        "diff",
        "batch",
        "completion",
    ] {
        assert!(text.contains(sub), "{sub} missing from --help:\n{text}");
        let help = offline(&[sub, "--help"]);
        assert!(
            help.ok().contains("Usage: kubectl-hermes"),
            "{sub}: {help:?}"
        );
        assert!(
            help.ok().contains("Example"),
            "{sub} --help has no example: {help:?}"
        );
    }
}

#[test]
fn completions_generate_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef kubectl-hermes"),
        ("fish", "complete -c kubectl-hermes"),
    ] {
        let out = offline(&["completion", shell]);
        let text = out.ok();
        assert!(text.contains(marker), "{shell}: {text}");
        for sub in ["approve", "retry-publish", "batch"] {
            assert!(text.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    offline(&["completion", "tcsh"]).failed(2);
}

#[test]
fn output_yaml_needs_no_cluster_and_is_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "Add Greeting.md",
        "---\nrepo: {url: 'https://git.example.com/o/r.git', baseRef: main}\nscope: ['src/**']\n---\n# Greet\n",
    );
    let out = offline(&["run", f.to_str().unwrap(), "-o", "yaml", "--priority", "-4"]);
    let doc: serde_json::Value = serde_yaml::from_str(out.ok()).unwrap();
    assert_eq!(doc["apiVersion"], "hermes.dev/v1alpha1");
    assert_eq!(doc["kind"], "HermesTask");
    assert_eq!(doc["metadata"]["name"], "add-greeting");
    assert!(doc["metadata"].get("namespace").is_none(), "{doc}");
    assert!(doc.get("status").is_none(), "{doc}");
    assert_eq!(doc["spec"]["priority"], -4);
    assert_eq!(doc["spec"]["task"], "# Greet\n");
    let out = offline(&["run", f.to_str().unwrap(), "-o", "json", "-n", "team"]);
    let doc: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(doc["metadata"]["namespace"], "team");
}

#[test]
fn an_invalid_task_file_is_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "t.md",
        "---\nname: t\nrepo:\n  url: https://git.example.com/o/r.git\n  baseRef: 'main..x'\nscope: ['/etc/**']\n---\n# Task\n",
    );
    let err = offline(&["run", f.to_str().unwrap()]).failed(1).to_owned();
    assert!(err.contains("t.md is not a valid task"), "{err}");
    assert!(err.contains("line 5: spec.repo.baseRef:"), "{err}");
    assert!(
        err.contains("line 6: spec.scope[0]: must be relative"),
        "{err}"
    );
    assert!(
        !err.contains("kubeconfig"),
        "it must not have tried to connect: {err}"
    );
    let err = offline(&[
        "run",
        f.to_str().unwrap(),
        "--base",
        "main",
        "--scope",
        "src/**",
        "--repo",
        "file:///srv/r.git",
    ])
    .failed(1)
    .to_owned();
    assert!(
        err.contains("--repo: spec.repo.url: must be a git URL"),
        "{err}"
    );
    assert!(
        !err.contains("baseRef"),
        "the flag replaced the bad value: {err}"
    );
    let err = offline(&["run", "/nonexistent/task.md"])
        .failed(1)
        .to_owned();
    assert!(err.contains("reading /nonexistent/task.md"), "{err}");
    offline(&["run"]).failed(2);
    offline(&["run", f.to_str().unwrap(), "--review", "sometimes"]).failed(2);
}

#[test]
fn a_batch_prints_every_valid_file_and_reports_the_invalid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ok = |n: &str| {
        format!(
            "---\nname: {n}\nrepo: {{url: 'https://git.example.com/o/r.git', baseRef: main}}\nscope: ['src/**']\n---\n# {n}\n"
        )
    };
    write(dir.path(), "a.md", &ok("a"));
    write(dir.path(), "b.md", &ok("b"));
    write(dir.path(), "c.md", "---\nname: c\nreop: x\n---\n# c\n");
    let out = offline(&[
        "batch",
        dir.path().to_str().unwrap(),
        "-o",
        "yaml",
        "--batch-id",
        "rel-1",
    ]);
    let err = out.failed(1);
    assert!(
        err.contains("c.md") && err.contains("line 3") && err.contains("unknown field `reop`"),
        "{err}"
    );
    assert!(err.contains("1 of 3 task files are invalid"), "{err}");
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&out.stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let names: Vec<&str> = docs
        .iter()
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(
        docs.iter()
            .all(|d| d["metadata"]["labels"]["hermes.dev/batch"] == "rel-1")
    );
    // --atomic prints nothing when a file is invalid.
    let out = offline(&[
        "batch",
        dir.path().to_str().unwrap(),
        "-o",
        "yaml",
        "--atomic",
    ]);
    out.failed(1);
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = offline(&[
        "batch",
        dir.path().to_str().unwrap(),
        "--batch-id",
        "Not Valid",
    ])
    .failed(1)
    .to_owned();
    assert!(err.contains("--batch-id"), "{err}");
}

/// The krew manifest has the shape krew's `Plugin` requires; its uri and
/// sha256 are placeholders the release process fills.
#[test]
fn the_krew_manifest_is_a_valid_plugin() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("krew/hermes.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let m: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        m["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(m["kind"], "Plugin");
    assert_eq!(m["metadata"]["name"], "hermes", "kubectl hermes");
    let spec = &m["spec"];
    let version = spec["version"].as_str().unwrap();
    assert!(
        version.starts_with('v') && version[1..].split('.').count() == 3,
        "{version}"
    );
    assert_eq!(version[1..], *env!("CARGO_PKG_VERSION"));
    assert!(
        spec["shortDescription"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s.len() < 80)
    );
    assert!(spec["homepage"].as_str().is_some());
    let platforms = spec["platforms"].as_array().unwrap();
    let arches: Vec<&str> = platforms
        .iter()
        .map(|p| {
            assert_eq!(p["selector"]["matchLabels"]["os"], "linux");
            assert_eq!(p["bin"], "kubectl-hermes");
            let uri = p["uri"].as_str().unwrap();
            assert!(
                uri.starts_with("https://") && uri.ends_with(".tar.gz"),
                "{uri}"
            );
            let sha = p["sha256"].as_str().unwrap();
            assert!(
                sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "{sha}"
            );
            assert_eq!(p["files"][0]["from"], "kubectl-hermes");
            p["selector"]["matchLabels"]["arch"].as_str().unwrap()
        })
        .collect();
    assert_eq!(arches, ["amd64", "arm64"]);
    assert!(text.contains("Filled by the release process"));
}
