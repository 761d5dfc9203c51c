//! keepalived as the VRRP engine: its configuration (one `vrrp_instance`,
//! never a `virtual_server`: IPVS stays lvsctl's), the version check, and a
//! supervisor that runs it as a child in this network namespace, turns the
//! lines of its notify FIFO into role events, and restarts it when it dies.

use std::ffi::CString;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Role;
use crate::spec::HaSpec;
use crate::supervise::ChildEvent;

/// The name of the VRRP instance (and keepalived's `-i` config id).
pub(crate) const INSTANCE: &str = "lvsctl";

/// The oldest keepalived whose `vrrp_notify_fifo` and command line lvsctl uses.
const MIN_VERSION: (u32, u32) = (2, 0);

/// What the supervisor reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleEvent {
    /// The new role.
    pub role: Role,
    /// Why (for the log and the status).
    pub reason: String,
}

/// The keepalived program: `$LVSCTL_KEEPALIVED`, else `keepalived` on PATH or in the sbin folders.
pub(crate) fn program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LVSCTL_KEEPALIVED") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.map(|d| d.join("keepalived")).find(|p| p.is_file())
}

/// Parse `Keepalived v2.2.7 (01/16,2022)` into (2, 2, 7).
pub(crate) fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v').filter(|r| r.starts_with(|c: char| c.is_ascii_digit())))?;
    let mut it = v.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse::<u32>().ok());
    Some((it.next()??, it.next().flatten().unwrap_or(0), it.next().flatten().unwrap_or(0)))
}

/// Find keepalived and check its version, before anything changes: a clear
/// error naming the Debian package when it is missing or too old.
pub(crate) async fn check() -> Result<(PathBuf, String), String> {
    let install = "install the Debian package keepalived (apt-get install keepalived)";
    let Some(p) = program() else {
        return Err(format!("[director.ha] needs keepalived, which is not installed: {install}"));
    };
    let out = Command::new(&p)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}: {install}", p.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let first = text.lines().next().unwrap_or("").trim().to_owned();
    match parse_version(&text) {
        Some((a, b, c)) if (a, b) >= MIN_VERSION => Ok((p, format!("{a}.{b}.{c}"))),
        Some((a, b, c)) => Err(format!(
            "keepalived {a}.{b}.{c} at {} is too old (lvsctl needs {}.{} or newer): {install}",
            p.display(),
            MIN_VERSION.0,
            MIN_VERSION.1
        )),
        None => Err(format!("{} --version did not print a keepalived version ({first:?}): {install}", p.display())),
    }
}

/// The files of one instance, in the state folder.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    /// keepalived.conf.
    pub(crate) conf: PathBuf,
    /// `-p`: the main process's pid.
    pub(crate) pid: PathBuf,
    /// `-r`: the VRRP child's pid.
    pub(crate) vrrp_pid: PathBuf,
    /// `vrrp_notify_fifo`.
    pub(crate) fifo: PathBuf,
}

impl Files {
    /// The files of this network namespace (`ns` is its id) under `dir`.
    pub(crate) fn new(dir: &Path, ns: &str) -> Self {
        let f = |ext: &str| dir.join(format!("keepalived-netns{ns}.{ext}"));
        Self { conf: f("conf"), pid: f("pid"), vrrp_pid: f("vrrp.pid"), fifo: f("fifo") }
    }

    /// Remove them all (missing ones are fine).
    pub(crate) fn remove(&self) {
        for p in [&self.conf, &self.pid, &self.vrrp_pid, &self.fifo] {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// keepalived.conf: global settings and one `vrrp_instance`. Every instance
/// starts as BACKUP; with `preempt` off, `nopreempt` keeps a returning
/// higher-priority director from taking the VIP back. `standby` is the
/// command keepalived runs when this host leaves MASTER (also when lvsctl
/// itself is gone), so the table stops forwarding to the peer even then.
pub(crate) fn render(spec: &HaSpec, priority: u8, vips: &[IpAddr], fifo: &Path, standby: Option<&str>) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "# Written by lvsctl director run: VRRP only (IPVS is lvsctl's). Do not edit.");
    let _ = writeln!(c, "global_defs {{");
    let _ = writeln!(c, "    router_id {INSTANCE}_{}", spec.virtual_router_id);
    let _ = writeln!(c, "    vrrp_notify_fifo {}", fifo.display());
    let _ = writeln!(c, "    enable_script_security");
    let _ = writeln!(c, "    script_user root");
    let _ = writeln!(c, "}}");
    let _ = writeln!(c, "vrrp_instance {INSTANCE} {{");
    let _ = writeln!(c, "    state BACKUP");
    let _ = writeln!(c, "    interface {}", spec.interface);
    let _ = writeln!(c, "    virtual_router_id {}", spec.virtual_router_id);
    let _ = writeln!(c, "    priority {priority}");
    let _ = writeln!(c, "    advert_int {}", spec.advert_interval);
    if !spec.preempt {
        let _ = writeln!(c, "    nopreempt");
    }
    if !spec.peers.is_empty() {
        let _ = writeln!(c, "    unicast_peer {{");
        for p in &spec.peers {
            let _ = writeln!(c, "        {p}");
        }
        let _ = writeln!(c, "    }}");
    }
    let _ = writeln!(c, "    virtual_ipaddress {{");
    for v in vips {
        let len = if v.is_ipv4() { 32 } else { 128 };
        let _ = writeln!(c, "        {v}/{len} dev {}", spec.interface);
    }
    let _ = writeln!(c, "    }}");
    if let Some(cmd) = standby {
        for k in ["notify_backup", "notify_fault", "notify_stop"] {
            let _ = writeln!(c, "    {k} \"{cmd}\"");
        }
    }
    let _ = writeln!(c, "}}");
    c
}

/// Parse one FIFO line: `INSTANCE "lvsctl" MASTER 150`.
pub(crate) fn parse_fifo_line(line: &str) -> Option<(Role, String)> {
    let mut w = line.split_whitespace();
    if w.next()? != "INSTANCE" {
        return None;
    }
    let name = w.next()?.trim_matches('"');
    if name != INSTANCE {
        return None;
    }
    let role = match w.next()? {
        "MASTER" => Role::Master,
        "BACKUP" => Role::Backup,
        "FAULT" => Role::Fault,
        "STOP" => Role::Stop,
        _ => return None,
    };
    let prio = w.next().unwrap_or("?");
    Some((role, format!("keepalived: VRRP instance {name} entered {} (priority {prio})", role.name())))
}

/// keepalived, supervised ([`crate::supervise`]), and the reader of its
/// notify FIFO.
pub(crate) struct Supervisor {
    child: crate::supervise::Supervisor,
    fifo: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    /// Make the FIFO and start supervising keepalived: role events (from the
    /// FIFO, and a stop or failure of keepalived itself) go to `tx`.
    pub(crate) fn start(
        program: PathBuf,
        files: Files,
        guard: Option<Vec<std::ffi::OsString>>,
        tx: mpsc::UnboundedSender<RoleEvent>,
    ) -> Result<Self, String> {
        let _ = std::fs::remove_file(&files.fifo);
        let c = CString::new(files.fifo.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        // SAFETY: mkfifo with a valid NUL-terminated path.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        if rc != 0 {
            return Err(format!("cannot make the FIFO {}: {}", files.fifo.display(), std::io::Error::last_os_error()));
        }
        // Read and write: the FIFO never reports end-of-file when keepalived
        // restarts, and opening it does not wait for a writer.
        let rx = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&files.fifo)
            .map_err(|e| format!("cannot open the FIFO {}: {e}", files.fifo.display()))?;
        let fifo = tokio::spawn(read_fifo(rx, tx.clone()));
        let conf = files.conf.clone();
        let spawn_files = files;
        let on_event = move |e: ChildEvent| match e {
            ChildEvent::Started(pid) => {
                info!(pid, conf = %conf.display(), "keepalived started");
                if let Some(g) = &guard {
                    spawn_guard(g, pid);
                }
            }
            ChildEvent::SpawnFailed(why, backoff) => {
                let _ = tx.send(RoleEvent { role: Role::Fault, reason: format!("{why}; retrying in {backoff:?}") });
            }
            ChildEvent::Exited(how, backoff) => {
                let _ = tx.send(RoleEvent { role: Role::Stop, reason: format!("{how}; restarting it in {backoff:?}") });
            }
        };
        let child = crate::supervise::Supervisor::start("keepalived", move || spawn(&program, &spawn_files), on_event);
        Ok(Self { child, fifo })
    }

    /// Stop keepalived (SIGTERM, so it gives the VIP up and tells the peer
    /// with a priority 0 advert; SIGKILL after 10 s) and wait for it.
    pub(crate) async fn stop(&mut self) {
        self.child.stop().await;
        self.fifo.abort();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.fifo.abort();
    }
}

/// Turn the FIFO's lines into role events.
async fn read_fifo(fifo: tokio::net::unix::pipe::Receiver, tx: mpsc::UnboundedSender<RoleEvent>) {
    let mut lines = BufReader::new(fifo).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        if let Some((role, reason)) = parse_fifo_line(&l) {
            if tx.send(RoleEvent { role, reason }).is_err() {
                return;
            }
        }
    }
}

fn spawn(program: &Path, files: &Files) -> std::io::Result<Child> {
    crate::supervise::stop_leftover(&files.pid, "keepalived");
    let _ = std::fs::remove_file(&files.pid);
    let _ = std::fs::remove_file(&files.vrrp_pid);
    let mut cmd = Command::new(program);
    cmd.args(["-n", "-l", "-D", "-f"])
        .arg(&files.conf)
        .arg("-p")
        .arg(&files.pid)
        .arg("-r")
        .arg(&files.vrrp_pid)
        .args(["-i", INSTANCE])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    // No PR_SET_PDEATHSIG: when lvsctl dies, keepalived keeps VRRP going
    // (and runs ha-standby on leaving MASTER); the next director run stops it.
    // Its own process group: a signal to lvsctl's group does not reach it.
    cmd.process_group(0);
    cmd.spawn()
}

/// Start the guard of keepalived `pid` (see `ha::guard_args`) in a session
/// of its own; it is reaped by a task.
fn spawn_guard(args: &[std::ffi::OsString], pid: u32) {
    let Some((exe, rest)) = args.split_first() else { return };
    let mut c = Command::new(exe);
    c.args(rest).arg("--wait-pid").arg(pid.to_string());
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    #[allow(unsafe_code)]
    unsafe {
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    match c.spawn() {
        Ok(mut child) => {
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
        Err(e) => warn!(reason = %e, "cannot start the guard of keepalived"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("Keepalived v2.2.7 (01/16,2022)\n\nCopyright"), Some((2, 2, 7)));
        assert_eq!(parse_version("Keepalived v1.3.5 (03/19,2017), git commit v1.3.5-6"), Some((1, 3, 5)));
        assert_eq!(parse_version("something else"), None);
    }

    #[test]
    fn fifo_lines() {
        assert_eq!(parse_fifo_line("INSTANCE \"lvsctl\" MASTER 150").map(|x| x.0), Some(Role::Master));
        assert_eq!(parse_fifo_line("INSTANCE \"lvsctl\" BACKUP 100").map(|x| x.0), Some(Role::Backup));
        assert_eq!(parse_fifo_line("INSTANCE \"lvsctl\" FAULT 0").map(|x| x.0), Some(Role::Fault));
        assert_eq!(parse_fifo_line("INSTANCE \"other\" MASTER 150"), None);
        assert_eq!(parse_fifo_line("GROUP \"g\" MASTER"), None);
        assert!(parse_fifo_line("INSTANCE \"lvsctl\" MASTER 150").unwrap().1.contains("entered MASTER (priority 150)"));
    }

    #[test]
    fn config_holds_only_the_vrrp_instance() {
        let text = "[director]\niface = \"eth0\"\n[[director.service]]\nvip = \"10.19.70.166\"\nport = 15858\nreal = [\"10.18.68.186\"]\n[director.ha]\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = 100\npeers = [\"10.18.68.187\"]\n";
        let d = crate::config::Config::parse(text, "t").unwrap().director().unwrap();
        let c = render(d.ha.as_ref().unwrap(), 150, &d.ha_vips(), Path::new("/run/lvsctl/k.fifo"), Some("/x standby"));
        for want in [
            "vrrp_notify_fifo /run/lvsctl/k.fifo",
            "vrrp_instance lvsctl {",
            "state BACKUP",
            "interface eth0",
            "virtual_router_id 51",
            "priority 150",
            "advert_int 1",
            "nopreempt",
            "unicast_peer {\n        10.18.68.187\n    }",
            "virtual_ipaddress {\n        10.19.70.166/32 dev eth0\n    }",
            "notify_stop \"/x standby\"",
        ] {
            assert!(c.contains(want), "{want:?} missing from:\n{c}");
        }
        assert!(!c.contains("virtual_server"), "IPVS stays lvsctl's:\n{c}");
    }
}
