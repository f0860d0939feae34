//! Benchmark: the runner's `prepare` and `publish` against the git CLI doing
//! the same clone and push, in the same run, on a generated repository of
//! about 100 MB in 10,000 files served over loopback smart HTTP with basic
//! auth (the tests' server, the `hermes-git-server` crate).
//!
//! ```text
//! cargo bench -p hermes-runner --bench git_steps
//! ```
//!
//! It prints figures and asserts nothing but success. The repository is
//! generated deterministically (a seeded PRNG, no network) with the git CLI
//! as the fixture builder. `HERMES_BENCH_RUNS` (default 3) sets how many
//! times each pair is timed; the table shows the median, runner first then
//! git CLI alternating with git first, so that neither always runs warm.
//!
//! What is compared:
//! - prepare (clone of `main` over HTTP with the read user, task branch
//!   created and checked out) vs `git clone --single-branch --branch main`;
//! - publish in branch mode (a fresh clone of the remote's base with the
//!   push user, the reviewed commit's objects copied out of the volume
//!   hash-verified by `verify` and imported from that copy, push) vs
//!   `git push` of the same commit from the volume.
//!   Publish fetches the base again by design (it never trusts the volume),
//!   so this ratio is mostly that fetch.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hermes_git_server::{
    GitServer, PUSH_USER, READ_USER, git, init_bare, with_userinfo, write_credentials,
};

/// Files in the generated repository.
const FILES: usize = 10_000;
/// Their total size, about.
const TOTAL_BYTES: usize = 100 << 20;
/// Files the published commit changes.
const CHANGED: usize = 5;

/// splitmix64: small, seeded, good enough for fixtures.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Writes the work tree: `FILES` files in 100 directories, sizes uniform
/// around `TOTAL_BYTES / FILES`, text-like content (lines of words from a
/// generated vocabulary, so it compresses like source rather than noise).
/// Returns the bytes written.
fn generate(dir: &Path, rng: &mut Rng) -> usize {
    let vocabulary: Vec<String> = (0..4096)
        .map(|_| {
            let len = 2 + rng.below(9);
            (0..len)
                .map(|_| char::from(b'a' + rng.below(26) as u8))
                .collect()
        })
        .collect();
    let mean = TOTAL_BYTES / FILES;
    let mut total = 0;
    for i in 0..FILES {
        let sub = dir.join(format!("src/m{:02}", i % 100));
        std::fs::create_dir_all(&sub).unwrap();
        let size = mean / 8 + rng.below(mean * 7 / 4);
        let mut text = String::with_capacity(size + 64);
        while text.len() < size {
            for _ in 0..(4 + rng.below(10)) {
                text.push_str(&vocabulary[rng.below(vocabulary.len())]);
                text.push(' ');
            }
            text.push('\n');
        }
        total += text.len();
        std::fs::write(sub.join(format!("f{i:05}.txt")), text).unwrap();
    }
    total
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                dir_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// Runs the runner binary as a pod would (clean environment) and checks
/// that it succeeded and wrote a result that decodes.
fn runner(tmp: &Path, args: &[&str]) -> Duration {
    let term = tmp.join("termination");
    let _ = std::fs::remove_file(&term);
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_hermes-runner"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", tmp.join("home"))
        .env("HERMES_TERMINATION_PATH", &term)
        .output()
        .unwrap();
    let took = start.elapsed();
    let message = std::fs::read_to_string(&term).unwrap_or_default();
    // `verify` writes a result only when it fails.
    let result = if args[0] == "verify" && message.is_empty() {
        Ok(None)
    } else {
        hermes_results::decode(&message).map(Some)
    };
    assert!(
        out.status.success() && result.is_ok(),
        "runner {args:?}: {result:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Ok(Some(hermes_results::StepResult::Published(p))) = &result {
        assert!(p.pushed, "publish did not push: {p:?}");
    }
    took
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("HERMES_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(3);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::create_dir_all(t.join("home")).unwrap();

    // The fixture: one base commit of FILES files, then a second commit
    // touching 1% of them, so the history has some depth.
    eprintln!(
        "git_steps: generating {FILES} files (~{} MiB)",
        TOTAL_BYTES >> 20
    );
    let setup = Instant::now();
    let mut rng = Rng(0x4845_524d_4553);
    let seed = t.join("seed");
    let bytes = generate(&seed, &mut rng);
    git(&seed, &["init", "-q", "-b", "main"]);
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "-q", "-m", "base"]);
    for i in (0..FILES).step_by(100) {
        let f = seed.join(format!("src/m{:02}/f{i:05}.txt", i % 100));
        let mut text = std::fs::read_to_string(&f).unwrap();
        text.push_str("an appended line\n");
        std::fs::write(&f, text).unwrap();
    }
    git(
        &seed,
        &["commit", "-q", "-a", "-m", "touch one file in a hundred"],
    );
    let root = t.join("srv");
    let remote = root.join("repo.git");
    init_bare(&remote).unwrap();
    git(&seed, &["push", "-q", remote.to_str().unwrap(), "main"]);
    git(&remote, &["gc", "-q"]);
    let base = git(&remote, &["rev-parse", "main"]);
    let packed = dir_bytes(&remote.join("objects"));
    eprintln!("git_steps: fixture ready in {:.1?}", setup.elapsed());

    let server = GitServer::loopback(&root).unwrap();
    let url = server.url("repo.git");
    let read = write_credentials(&t.join("read-creds"), READ_USER).unwrap();
    let push = write_credentials(&t.join("push-creds"), PUSH_USER).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_owned();

    let mut prepare = Vec::new();
    let mut clone = Vec::new();
    let mut publish = Vec::new();
    let mut push_cli = Vec::new();
    for run in 0..runs {
        let volume = t.join(format!("volume-{run}"));
        let git_clone = t.join(format!("git-clone-{run}"));
        let runner_first = run % 2 == 0;
        let time_prepare = || {
            runner(
                t,
                &[
                    "prepare",
                    "--url",
                    &url,
                    "--base-ref",
                    "main",
                    "--branch",
                    "hermes/bench",
                    "--repo-dir",
                    &s(&volume),
                    "--credentials-dir",
                    &s(&read),
                ],
            )
        };
        let time_clone = || {
            let dest = s(&git_clone);
            let src = with_userinfo(&url, READ_USER);
            timed(|| {
                git(
                    t,
                    &[
                        "clone",
                        "-q",
                        "--single-branch",
                        "--branch",
                        "main",
                        &src,
                        &dest,
                    ],
                );
            })
        };
        if runner_first {
            prepare.push(time_prepare());
            clone.push(time_clone());
        } else {
            clone.push(time_clone());
            prepare.push(time_prepare());
        }
        std::fs::remove_dir_all(&git_clone).unwrap();

        // The reviewed commit: the agent's change in the volume.
        for k in 0..CHANGED {
            let i = rng.below(FILES);
            let f = volume.join(format!("src/m{:02}/f{i:05}.txt", i % 100));
            let mut text = std::fs::read_to_string(&f).unwrap();
            text.push_str(&format!("run {run}, change {k}\n"));
            std::fs::write(&f, text).unwrap();
        }
        git(&volume, &["commit", "-q", "-a", "-m", "agent change"]);
        let reviewed = git(&volume, &["rev-parse", "HEAD"]);

        // Each push goes to a new branch, deleted on the server right after,
        // so that neither push finds the commit already advertised.
        let runner_branch = format!("hermes/bench-runner-{run}");
        let git_branch = format!("hermes/bench-git-{run}");
        let work = t.join(format!("publish-work-{run}"));
        let verified = t.join(format!("publish-verified-{run}"));
        let verify_work = t.join(format!("publish-verify-work-{run}"));
        let time_publish = || {
            // The publish pod: `verify` out of the volume, then `publish`
            // from the verified copy.
            let verify = runner(
                t,
                &[
                    "verify",
                    "--repo-dir",
                    &s(&volume),
                    "--base-commit",
                    &base,
                    "--reviewed-commit",
                    &reviewed,
                    "--out-dir",
                    &s(&verified),
                    "--work-dir",
                    &s(&verify_work),
                ],
            );
            let took = verify
                + runner(
                    t,
                    &[
                        "publish",
                        "--url",
                        &url,
                        "--base-ref",
                        "main",
                        "--branch",
                        &runner_branch,
                        "--mode",
                        "branch",
                        "--verified-dir",
                        &s(&verified),
                        "--base-commit",
                        &base,
                        "--reviewed-commit",
                        &reviewed,
                        "--credentials-dir",
                        &s(&push),
                        "--work-dir",
                        &s(&work),
                        "--task-name",
                        "bench",
                    ],
                );
            let pushed = git(&remote, &["rev-parse", &runner_branch]);
            assert_eq!(pushed, reviewed);
            git(
                &remote,
                &["update-ref", "-d", &format!("refs/heads/{runner_branch}")],
            );
            took
        };
        let time_push = || {
            let dest = with_userinfo(&url, PUSH_USER);
            let refspec = format!("{reviewed}:refs/heads/{git_branch}");
            let took = timed(|| {
                git(&volume, &["push", "-q", &dest, &refspec]);
            });
            let pushed = git(&remote, &["rev-parse", &git_branch]);
            assert_eq!(pushed, reviewed);
            git(
                &remote,
                &["update-ref", "-d", &format!("refs/heads/{git_branch}")],
            );
            took
        };
        if runner_first {
            publish.push(time_publish());
            push_cli.push(time_push());
        } else {
            push_cli.push(time_push());
            publish.push(time_publish());
        }
        for d in [&work, &verified, &verify_work, &volume] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!();
    println!(
        "git_steps: {FILES} files, {:.1} MiB in the work tree, {:.1} MiB of objects on the server (packed), 2 commits",
        mib(bytes as u64),
        mib(packed),
    );
    println!(
        "git_steps: {runs} run(s) each, median; loopback smart HTTP (git http-backend), basic auth"
    );
    println!();
    println!(
        "{:<42} {:>10} {:>10} {:>12}",
        "step", "runner", "git CLI", "runner/git"
    );
    let secs = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let row = |name: &str, r: Vec<Duration>, g: Vec<Duration>| {
        let samples = format!("  (runs: runner {}; git {})", secs(&r), secs(&g));
        let (r, g) = (median(r), median(g));
        println!(
            "{name:<42} {:>9.2}s {:>9.2}s {:>12.2}{samples}",
            r.as_secs_f64(),
            g.as_secs_f64(),
            r.as_secs_f64() / g.as_secs_f64()
        );
    };
    row("prepare vs git clone --single-branch", prepare, clone);
    row(
        &format!("publish (branch) vs git push ({CHANGED} files)"),
        publish,
        push_cli,
    );
    drop(server);
}
