//! A step's own network, taken away: a seccomp filter, installed by the
//! runner on itself before it reads a byte of the volume, that refuses every
//! `socket(2)`, `socketpair(2)` and `io_uring_setup(2)` (whose ring can open
//! sockets without the syscall) with `EACCES`. On x86-64 the same calls by
//! their x32 numbers are refused too (a kernel that enables the x32 ABI
//! would otherwise let them through under the same architecture); a call
//! of another architecture (the i386 `socketcall` entry) kills the process,
//! as every seccompiler filter does.
//!
//! Kubernetes gives a pod one network namespace for all of its containers,
//! and the NetworkPolicy that lets publish's pushing container reach the
//! remote lets the verifying container reach it too. The filter is what
//! gives the steps that parse the agent's bytes no network at all: it is
//! inherited by every thread (`TSYNC`) and cannot be removed, so code that
//! gained control of the process through a parser bug has no way out but
//! the files it may write. `no_new_privs` is set first, as the kernel
//! requires of an unprivileged filter (the pods set
//! `allowPrivilegeEscalation: false`, which sets it already).

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

use crate::{Error, Result};

/// The syscalls refused (each with `EACCES`, whatever its arguments).
const REFUSED: [i64; 3] = [
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_io_uring_setup,
];

/// The x32 ABI's syscall numbers: the x86-64 ones with this bit set.
#[cfg(target_arch = "x86_64")]
const X32_BIT: i64 = 0x4000_0000;

fn refused() -> Vec<i64> {
    let mut nrs = REFUSED.to_vec();
    #[cfg(target_arch = "x86_64")]
    nrs.extend(REFUSED.iter().map(|nr| nr | X32_BIT));
    nrs
}

fn failed(problem: impl std::fmt::Display) -> Error {
    Error::Sandbox(problem.to_string())
}

/// Takes every socket away from this process and its threads, for good.
pub fn no_network() -> Result<()> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(failed)?;
    let rules: BTreeMap<i64, Vec<SeccompRule>> =
        refused().into_iter().map(|nr| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES.unsigned_abs()),
        arch,
    )
    .map_err(failed)?;
    let bpf: BpfProgram = filter.try_into().map_err(failed)?;
    seccompiler::apply_filter_all_threads(&bpf).map_err(failed)?;
    tracing::debug!("sockets refused to this process");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// Runs this test binary again, filtered, in a child process: a filter
    /// cannot be taken off the test runner itself.
    #[test]
    fn a_filtered_process_can_open_no_socket_and_still_reads_files() {
        if std::env::var_os("HERMES_SANDBOX_CHILD").is_some() {
            super::no_network().unwrap();
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap_err();
            assert_eq!(tcp.raw_os_error(), Some(libc::EACCES), "{tcp}");
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_err();
            assert_eq!(udp.raw_os_error(), Some(libc::EACCES), "{udp}");
            let unix = std::os::unix::net::UnixStream::pair().unwrap_err();
            assert_eq!(unix.raw_os_error(), Some(libc::EACCES), "{unix}");
            // A thread started afterwards is filtered too.
            std::thread::spawn(|| {
                assert!(std::net::TcpStream::connect("127.0.0.1:9").is_err());
            })
            .join()
            .unwrap();
            assert!(std::fs::read("/proc/self/status").is_ok());
            return;
        }
        let me = std::env::current_exe().unwrap();
        let out = Command::new(me)
            .args([
                "--exact",
                "sandbox::tests::a_filtered_process_can_open_no_socket_and_still_reads_files",
                "--nocapture",
            ])
            .env("HERMES_SANDBOX_CHILD", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "the child ran no test: {text}");
        // And this process, unfiltered, still can.
        assert!(std::net::TcpListener::bind("127.0.0.1:0").is_ok());
    }
}
