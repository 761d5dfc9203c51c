//! Helpers for the privileged tests.
//!
//! Every privileged test is `#[ignore = "privileged: ..."]`, so a plain
//! `cargo test` lists it as ignored instead of passing it. `scripts/privileged-tests`
//! runs them with `--ignored` in the test VM (or directly as root on a host whose
//! kernel has IPVS). A privileged test that is run but cannot do its work
//! (not root, no IPVS) FAILS with a message saying so: it never passes silently.

pub mod bird;
pub mod ecmp_net;
pub mod flows;
pub mod kernel;
pub mod rawnl;
pub mod topology;

use std::future::Future;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Path of iproute2's `ip` (not busybox's applet).
pub fn ip_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LVSCTL_IP") {
        return p.into();
    }
    for p in ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    "ip".into()
}

/// Path of the `lvsctl` binary under test: `$LVSCTL_BIN`, else next to the test binary's target dir.
pub fn lvsctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LVSCTL_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test> -> target/debug/lvsctl
    let p = exe.parent().and_then(|d| d.parent()).map(|d| d.join("lvsctl")).expect("target dir");
    assert!(
        p.exists(),
        "lvsctl binary not found at {}: build it (cargo build -p lvsctl) or set LVSCTL_BIN",
        p.display()
    );
    p
}

/// Run a command, panicking with its output if it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Run a command that must succeed; returns its stdout.
pub fn must(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run iproute2's `ip` with these arguments in the calling thread's netns; must succeed.
pub fn ip(args: &[&str]) -> String {
    must(Command::new(ip_bin()).args(args))
}

/// Fail loudly unless this process can do privileged IPVS work.
pub fn require_privileged() {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!(
            "PRIVILEGED TEST COULD NOT RUN: not root (euid {euid}). Run scripts/privileged-tests, which uses the test VM."
        );
    }
}

/// A unique name for a netns, interface or similar in this test process.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}x{}", std::process::id() % 100000, N.fetch_add(1, Ordering::Relaxed))
}

/// Run `f` on a new thread that has its own fresh network namespace (with
/// `lo` up) and a current-thread tokio runtime. Everything the test creates
/// (IPVS services, addresses, sockets, child processes) lives in that
/// namespace and disappears with it. Panics propagate.
pub fn in_fresh_netns<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    in_fresh_netns_with(|| tokio::runtime::Builder::new_current_thread().enable_all().build(), f)
}

/// [`in_fresh_netns`] with the runtime `runtime` builds (on the new thread,
/// after the namespace change, so its worker threads live in the namespace too).
pub fn in_fresh_netns_with<R, F, Fut>(runtime: R, f: F)
where
    R: FnOnce() -> std::io::Result<tokio::runtime::Runtime> + Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    require_privileged();
    let r = std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread's network namespace.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare(CLONE_NEWNET) failed: {}", std::io::Error::last_os_error());
        ip(&["link", "set", "lo", "up"]);
        runtime().expect("tokio runtime").block_on(f());
    })
    .join();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// Connect to IPVS in the current netns, failing loudly if IPVS is missing.
pub async fn connect() -> ipvs::Ipvs {
    match ipvs::Ipvs::connect().await {
        Ok(h) => h,
        Err(e) => panic!("PRIVILEGED TEST COULD NOT RUN: cannot connect to IPVS: {e}"),
    }
}

/// `ipvsadm` with these arguments in the calling thread's netns; must succeed.
pub fn ipvsadm(args: &[&str]) -> String {
    must(Command::new("ipvsadm").args(args))
}
