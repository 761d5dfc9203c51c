//! Director failover for `director run` with `[director.ha]`: keepalived's
//! VRRP moves the VIPs between two directors, the kernel's sync daemons
//! copy the connections, and lvsctl keeps its IPVS table right for the
//! VRRP role.
//!
//! The seam with the daemon ([`crate::daemon`]) is narrow: [`Ha::start`]
//! before the table is first applied, [`Ha::adjust`] on every table the
//! daemon is about to apply, [`Ha::take_events`] as one more source of its
//! events (a role change: log it with [`Ha::on_event`] and reconcile again
//! through the daemon's one [`crate::director::Director`] handle),
//! [`Ha::report`] for the status, [`Ha::stop`] on exit. This module never
//! uses the daemon; the daemon uses it.
//!
//! # Why weights and not `backup_only`
//!
//! When both directors are also real servers of the VIP, the MASTER forwards
//! some connections to the BACKUP as a real server. The BACKUP's table would
//! schedule such a packet again, possibly back to the MASTER: a loop. The
//! usual cure, `net.ipv4.vs.backup_only` = 1 on the BACKUP, makes a director
//! that has just lost the VIP answer with resets the packets that still
//! reach it before the new MASTER's gratuitous ARP (IPVS ignores them, the
//! local TCP stack has no socket for them). So lvsctl never sets it. Instead,
//! while this host is not MASTER, every real server of a service that is not
//! this host gets weight 0 here when this host is itself one of the service's
//! real servers: a packet forwarded here for a new connection is served
//! locally, never forwarded again; packets of known connections (its own or
//! synced ones) are still forwarded by the table. On MASTER the configured
//! (health-checked) weights come back. keepalived also runs
//! `lvsctl director ha-standby` when this host leaves MASTER, and a guard
//! process waits beside each keepalived, so the same happens when
//! `director run` itself is gone.

mod keepalived;
mod sync;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ipvs::reconcile::DesiredService;
use ipvs::{Ipvs, ServiceKey, SyncDaemon};
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use crate::health::report::{HaReport, Role};
use crate::health::{report, standby_weights};
use crate::host::is_local;
use crate::spec::{DirectorSpec, HaSpec};
use crate::{state, Error};
pub use keepalived::RoleEvent;
use keepalived::{Files, Supervisor};

/// The running failover part of `director run`: keepalived (supervised),
/// the sync daemons lvsctl started, and the role.
pub struct Ha {
    spec: HaSpec,
    vips: Vec<IpAddr>,
    priority: u8,
    role: Role,
    since: SystemTime,
    reason: String,
    keepalived_version: String,
    files: Files,
    sync_record: PathBuf,
    sync_owned: Vec<SyncDaemon>,
    supervisor: Supervisor,
    /// The role events, until the daemon takes them ([`Self::take_events`]).
    rx: Option<mpsc::UnboundedReceiver<RoleEvent>>,
}

impl Ha {
    /// Check keepalived (a clear error before anything changes), start the
    /// sync daemons, write keepalived.conf and start keepalived. The role is
    /// BACKUP until keepalived says otherwise. `None` without `[director.ha]`.
    /// The sync daemons are started over `ipvs` (the daemon's connection).
    pub async fn start(director: &DirectorSpec, ipvs: &Ipvs) -> Result<Option<Self>, Error> {
        let Some(mut spec) = director.ha.clone() else { return Ok(None) };
        // One shared file lists both directors: this host's own address is no peer.
        spec.peers.retain(|p| !is_local(*p));
        let (program, version) = keepalived::check().await.map_err(Error::Invalid)?;
        let priority = spec.priority_here(is_local).map_err(Error::Invalid)?;
        let vips = director.ha_vips();
        let dir = state::dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Io { what: format!("cannot create the state folder {}", dir.display()), source: e })?;
        let ns = state::netns_id()?;
        let files = Files::new(&dir, &ns);
        let standby = standby_command(&dir, &vips);
        let conf = keepalived::render(&spec, priority, &vips, &files.fifo, standby.as_deref());
        std::fs::write(&files.conf, conf)
            .map_err(|e| Error::Io { what: format!("cannot write {}", files.conf.display()), source: e })?;
        let sync_record = sync::record_path(&dir)?;
        let sync_owned = sync::start(ipvs, &spec, &sync_record).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let guard = guard_args(&dir, &vips);
        let supervisor = Supervisor::start(program, files.clone(), guard, tx).map_err(Error::Failed)?;
        info!(
            keepalived = %version,
            interface = %spec.interface,
            virtual_router_id = spec.virtual_router_id,
            priority,
            preempt = spec.preempt,
            conf = %files.conf.display(),
            "failover: keepalived runs VRRP; BACKUP until it says otherwise"
        );
        Ok(Some(Self {
            spec,
            vips,
            priority,
            role: Role::Backup,
            since: SystemTime::now(),
            reason: "starting: BACKUP until keepalived reports a state".to_owned(),
            keepalived_version: version,
            files,
            sync_record,
            sync_owned,
            supervisor,
            rx: Some(rx),
        }))
    }

    /// The role events keepalived reports (once; `None` after the first
    /// call): the daemon merges them into its other events.
    pub fn take_events(&mut self) -> Option<mpsc::UnboundedReceiver<RoleEvent>> {
        self.rx.take()
    }

    /// Take a role event: true when the role changed (then the table must be
    /// reconciled again). Each change is logged once, with its reason.
    pub fn on_event(&mut self, e: RoleEvent) -> bool {
        if e.role == self.role {
            return false;
        }
        let from = self.role;
        self.role = e.role;
        self.since = SystemTime::now();
        self.reason = e.reason;
        let action = match e.role {
            Role::Master => "the peer's real server gets its weight back",
            _ => "the peer's real server gets weight 0 here (served locally, never forwarded back)",
        };
        if e.role == Role::Master {
            info!(from = from.name(), to = e.role.name(), reason = %self.reason, action, "failover: role change");
        } else {
            warn!(from = from.name(), to = e.role.name(), reason = %self.reason, action, "failover: role change");
        }
        true
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Adjust the table the daemon is about to apply for the role.
    pub fn adjust(&self, desired: &mut [DesiredService]) {
        if self.role != Role::Master {
            standby_weights(desired, is_local);
        }
    }

    /// The status section.
    pub fn report(&self) -> HaReport {
        HaReport {
            role: self.role,
            since: report::epoch(self.since),
            reason: self.reason.clone(),
            interface: self.spec.interface.to_string(),
            virtual_router_id: self.spec.virtual_router_id,
            priority: self.priority,
            preempt: self.spec.preempt,
            peers: self.spec.peers.clone(),
            vips: self.vips.clone(),
            sync_daemons: self.sync_owned.clone(),
            backup_only: std::fs::read_to_string("/proc/sys/net/ipv4/vs/backup_only").ok().map(|s| s.trim().to_owned()),
            keepalived: self.keepalived_version.clone(),
        }
    }

    /// Stop keepalived (it gives the VIPs up), leave the table in its standby
    /// form, stop the sync daemons lvsctl started, and remove the files
    /// (over `ipvs`, the daemon's connection).
    pub async fn stop(&mut self, ipvs: &Ipvs) {
        self.supervisor.stop().await;
        // No longer MASTER: the peer may forward to this host's real server
        // still, so the table stays in its standby form.
        match standby_kernel(ipvs, &self.vips).await {
            Ok(done) => done.iter().for_each(|l| info!("{l}")),
            Err(e) => warn!(reason = %e, "cannot set the standby weights"),
        }
        sync::stop(ipvs, &self.sync_owned, &self.sync_record).await;
        self.files.remove();
        info!("failover: keepalived and the sync daemons lvsctl started are stopped");
    }
}

/// The command keepalived runs when this host leaves MASTER: this very
/// program's `director ha-standby` with the state folder and the VIPs.
fn standby_command(dir: &Path, vips: &[IpAddr]) -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let (exe, dir) = (exe.to_str()?, dir.to_str()?);
    if [exe, dir].iter().any(|s| s.contains(['"', ' ', '\'', '\\'])) {
        return None;
    }
    let v: Vec<String> = vips.iter().map(ToString::to_string).collect();
    let pid = std::process::id();
    // keepalived kills the scripts still running when it stops, which is
    // when this one matters most: util-linux's `setsid --fork` (not
    // busybox's, which has no --fork) runs it in a session of its own.
    let setsid = ["/usr/bin/setsid", "/bin/setsid"]
        .into_iter()
        .find(|p| std::fs::canonicalize(p).is_ok_and(|r| r.file_name().is_some_and(|n| n != "busybox")));
    let setsid = setsid.map(|s| format!("{s} --fork ")).unwrap_or_default();
    Some(format!("{setsid}{exe} director ha-standby --state-dir {dir} --unless-pid {pid} {}", v.join(" ")))
}

/// The command line of the guard `director run` starts beside each
/// keepalived (`--wait-pid KEEPALIVED` is added): once keepalived is gone
/// and `director run` too, it sets the standby weights. keepalived's own
/// `notify_stop` may be killed with keepalived; the guard is not.
fn guard_args(dir: &Path, vips: &[IpAddr]) -> Option<Vec<std::ffi::OsString>> {
    let exe = std::env::current_exe().ok()?;
    let mut a: Vec<std::ffi::OsString> = vec![exe.into(), "director".into(), "ha-standby".into()];
    a.extend(["--state-dir".into(), dir.as_os_str().to_owned()]);
    a.extend(["--unless-pid".into(), std::process::id().to_string().into(), "--foreground".into()]);
    a.extend(vips.iter().map(|v| v.to_string().into()));
    Some(a)
}

/// Whether the process `pid` exists and is not a zombie (a killed
/// `director run` its parent has not reaped yet is gone).
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        if stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')) {
            return false;
        }
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// `lvsctl director ha-standby [--state-dir DIR] [--unless-pid PID]
/// [--wait-pid PID] [--foreground] VIP...` (run by keepalived on BACKUP,
/// FAULT and STOP, and as the guard beside each keepalived): unless
/// `director run` is alive (it handles the roles itself), set the standby
/// weights straight in the kernel, and log what was done in DIR (keepalived
/// discards a script's output). Without `foreground` it starts a detached
/// copy of the running program with the same arguments plus `--foreground`
/// and returns.
pub async fn standby(
    dir: Option<&Path>,
    unless_pid: Option<u32>,
    wait_pid: Option<u32>,
    foreground: bool,
    vips: &[IpAddr],
) -> Result<(), Error> {
    if !foreground {
        // keepalived kills the scripts still running when it stops, which is
        // exactly when this one matters: carry on in a new session.
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().map_err(|e| Error::Io { what: "cannot find lvsctl".into(), source: e })?;
        let mut c = std::process::Command::new(exe);
        c.args(std::env::args_os().skip(1)).arg("--foreground");
        c.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        // SAFETY: setsid is async-signal-safe.
        #[allow(unsafe_code)]
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        c.spawn().map_err(|e| Error::Io { what: "cannot start ha-standby".into(), source: e })?;
        return Ok(());
    }
    let log = |line: &str| {
        println!("{line}");
        if let Some(d) = dir {
            if let Ok(ns) = state::netns_id() {
                use std::io::Write;
                let p = d.join(format!("ha-standby-netns{ns}.log"));
                if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(p) {
                    let _ = writeln!(f, "{} {line}", report::utc(report::epoch(SystemTime::now())));
                }
            }
        }
    };
    if let Some(pid) = wait_pid {
        // The guard of one keepalived: outlive a stop of the service's
        // processes (systemd's SIGTERM to all of them) long enough to act
        // when keepalived is gone.
        // SAFETY: setting signal dispositions to SIG_IGN.
        #[allow(unsafe_code)]
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGINT, libc::SIG_IGN);
        }
        while alive(pid) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    if let Some(pid) = unless_pid.filter(|p| alive(*p)) {
        log(&format!("ha-standby: director run (pid {pid}) runs and handles the role itself"));
        return Ok(());
    }
    let ipvs = Ipvs::connect().await?;
    for line in standby_kernel(&ipvs, vips).await? {
        log(&line);
    }
    Ok(())
}

/// In every IPVS service on `vips` that has this host as a real server, set
/// every other real server to weight 0; returns what changed.
async fn standby_kernel(ipvs: &Ipvs, vips: &[IpAddr]) -> Result<Vec<String>, Error> {
    let mut done = Vec::new();
    for (svc, dests) in ipvs.dump().await? {
        let ServiceKey::Inet { addr, .. } = svc.service.key else { continue };
        if !vips.contains(&addr.ip()) || !dests.iter().any(|d| is_local(d.destination.addr.ip())) {
            continue;
        }
        for d in dests {
            if !is_local(d.destination.addr.ip()) && d.destination.weight != 0 {
                let mut x = d.destination.clone();
                x.weight = 0;
                ipvs.update_destination(&svc.service.key, &x).await?;
                done.push(format!("ha-standby: {} -> {}: weight 0 (this host is not MASTER)", svc.service.key, x.addr));
            }
        }
    }
    if done.is_empty() {
        done.push("ha-standby: the standby weights were already in place".to_owned());
    }
    Ok(done)
}
