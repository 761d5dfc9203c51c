//! The health report `director run` keeps in the state folder while it runs
//! (`health-netns<ID>.json`, written atomically after every change), and what
//! `director status` reads from it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ipvs::reconcile::DesiredService;
use ipvs::{ServiceKey, SyncDaemon};
use serde::{Deserialize, Serialize};

pub use crate::health::clock::{epoch, utc};
use crate::health::drain::DrainCause;
use crate::health::OnFailure;
use crate::{state, Error};

/// Version of the report format.
const FORMAT: u32 = 1;

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The report format's version.
    pub format: u32,
    /// The daemon's process id.
    pub pid: u32,
    /// Its config file.
    pub config: PathBuf,
    /// When it started (seconds since the epoch).
    pub started: u64,
    /// Every virtual service it runs.
    pub services: Vec<ServiceHealth>,
    /// Failover (`[director.ha]`): the VRRP role, the peer, the sync daemons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaReport>,
    /// ECMP scale-out (`[director.bgp]`): the VIPs announced, the sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<super::report_bgp::BgpReport>,
    /// The real servers draining (weight 0 until their connections end or
    /// their drain time passes, then deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub draining: Vec<DrainReport>,
}

/// A real server draining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// Its virtual service (as it is in the kernel: it may be one removed
    /// from the config that stays until its real servers are done).
    pub service: ipvs::Service,
    /// The real server (its weight as it was; it is at 0 now).
    pub dest: ipvs::Destination,
    /// Why it drains.
    pub cause: DrainCause,
    /// Since when (seconds since the epoch).
    pub since: u64,
    /// When it is deleted at the latest (seconds since the epoch).
    pub until: u64,
}

impl DrainReport {
    fn render(&self) -> String {
        format!(
            "    -> {:<28} draining since {} ({}), deleted when idle or at {}\n",
            self.dest.addr.to_string(),
            utc(self.since),
            self.cause.describe(),
            utc(self.until)
        )
    }
}

/// The health of one virtual service's real servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// The virtual service.
    pub key: ServiceKey,
    /// Its sorry server, if it has one.
    pub sorry_server: Option<SocketAddr>,
    /// Whether the sorry server is in (every real server is down).
    pub sorry_active: bool,
    /// What happens to a real server that is down.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The sorry server as configured (forwarding method and weight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sorry: Option<ipvs::Destination>,
    /// Its real servers.
    pub real_servers: Vec<RealHealth>,
}

/// The health of one real server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealHealth {
    /// Address and port.
    pub addr: SocketAddr,
    /// The check (`tcp every 2s`, ...), or `None` when it is not checked.
    pub check: Option<String>,
    /// Up (gets traffic) or down.
    pub up: bool,
    /// Since when (seconds since the epoch).
    pub since: u64,
    /// The last failed check's reason.
    pub last_error: Option<String>,
    /// When it failed (seconds since the epoch).
    pub last_error_at: Option<u64>,
    /// The configured weight (restored when it is up).
    pub weight: u32,
    /// The weight a dynamic exec check asked for last (never above `weight`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_weight: Option<u32>,
}

impl RealHealth {
    /// `up since 2026-11-25 07:58:03 UTC` or `down since ... (last error: ...)`,
    /// for status's human output.
    pub fn describe(&self) -> String {
        let mut s = format!("{} since {}", if self.up { "up" } else { "down" }, utc(self.since));
        match (&self.last_error, self.check.is_some()) {
            (_, false) => s = "not checked".to_owned(),
            (Some(e), true) => {
                let at = self.last_error_at.map(|t| format!(" at {}", utc(t))).unwrap_or_default();
                s.push_str(&format!(" (last error{at}: {e})"));
            }
            (None, true) => {}
        }
        s
    }
}

impl HealthReport {
    /// The human-readable section `director status` prints while the daemon runs.
    pub fn render(&self) -> String {
        let mut out = format!(
            "Health checks (lvsctl director run, pid {}, config {}, since {}):\n",
            self.pid,
            self.config.display(),
            utc(self.started)
        );
        for s in &self.services {
            out.push_str(&format!("  {}", s.key));
            if let Some(a) = s.sorry_server {
                let state = if s.sorry_active { "IN: every real server is down" } else { "standing by" };
                out.push_str(&format!(" (sorry server {a}: {state})"));
            }
            out.push('\n');
            for r in &s.real_servers {
                let w = r.dynamic_weight.map(|w| format!(" (dynamic weight {w})")).unwrap_or_default();
                out.push_str(&format!("    -> {:<28} {}{w}\n", r.addr.to_string(), r.describe()));
            }
            self.draining.iter().filter(|d| d.service.key == s.key).for_each(|d| out.push_str(&d.render()));
        }
        let mut removed: Vec<&DrainReport> =
            self.draining.iter().filter(|d| !self.services.iter().any(|s| s.key == d.service.key)).collect();
        removed.sort_by_key(|d| d.service.key.to_string());
        let mut last = None;
        for d in removed {
            if last != Some(d.service.key) {
                out.push_str(&format!("  {} (removed from the config: deleted once drained)\n", d.service.key));
                last = Some(d.service.key);
            }
            out.push_str(&d.render());
        }
        if let Some(ha) = &self.ha {
            out.push_str(&ha.render());
        }
        if let Some(bgp) = &self.bgp {
            out.push_str(&bgp.render());
        }
        out
    }
}

/// The VRRP role of a director with `[director.ha]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Role {
    /// Holds the VIPs and schedules.
    Master,
    /// Standing by (also the role before keepalived said anything).
    Backup,
    /// keepalived sees a fault (its interface is down).
    Fault,
    /// keepalived stopped (or died; it is restarted).
    Stop,
}

impl Role {
    /// `MASTER`, `BACKUP`, `FAULT`, `STOP`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Master => "MASTER",
            Self::Backup => "BACKUP",
            Self::Fault => "FAULT",
            Self::Stop => "STOP",
        }
    }
}

/// The failover part of the report (and of `director status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaReport {
    /// The VRRP role.
    pub role: Role,
    /// Since when (seconds since the epoch).
    pub since: u64,
    /// Why it is in this role.
    pub reason: String,
    /// The VRRP interface.
    pub interface: String,
    /// The virtual router id.
    pub virtual_router_id: u8,
    /// This host's priority.
    pub priority: u8,
    /// Whether preemption is on.
    pub preempt: bool,
    /// The unicast peers (empty: multicast).
    pub peers: Vec<IpAddr>,
    /// The VIPs keepalived moves.
    pub vips: Vec<IpAddr>,
    /// The sync daemons lvsctl runs.
    pub sync_daemons: Vec<SyncDaemon>,
    /// `net.ipv4.vs.backup_only` (lvsctl never sets it).
    pub backup_only: Option<String>,
    /// The keepalived version.
    pub keepalived: String,
}

impl HaReport {
    /// The human section of `director status`.
    pub fn render(&self) -> String {
        let peers = if self.peers.is_empty() {
            "multicast".to_owned()
        } else {
            self.peers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        let syncs: Vec<String> = self
            .sync_daemons
            .iter()
            .map(|d| format!("{} on {} (sync id {})", d.state.name(), d.interface, d.sync_id))
            .collect();
        let vips: Vec<String> = self.vips.iter().map(ToString::to_string).collect();
        format!(
            "Failover (keepalived {}): {} since {} ({})\n  VRRP on {}, virtual router {}, priority {}, preempt {}, peers {}, VIPs {}\n  sync daemons: {}; backup_only = {}\n",
            self.keepalived,
            self.role.name(),
            utc(self.since),
            self.reason,
            self.interface,
            self.virtual_router_id,
            self.priority,
            if self.preempt { "on" } else { "off" },
            peers,
            vips.join(", "),
            if syncs.is_empty() { "none started by lvsctl".to_owned() } else { syncs.join(", ") },
            self.backup_only.as_deref().unwrap_or("?"),
        )
    }
}

/// The table the kernel should have while the daemon of `report` runs: the
/// configured `services` with each real server that is down drained (weight
/// 0) or left out, and the sorry server in where the report says so.
pub fn expected(services: &[DesiredService], report: &HealthReport) -> Vec<DesiredService> {
    let mut out = services.to_vec();
    for d in &mut out {
        let Some(h) = report.services.iter().find(|h| h.key == d.service.key) else { continue };
        let down = |a: &SocketAddr| h.real_servers.iter().any(|r| r.addr == *a && !r.up);
        for r in h.real_servers.iter().filter(|r| r.up) {
            if let (Some(w), Some(x)) = (r.dynamic_weight, d.destinations.iter_mut().find(|x| x.addr == r.addr)) {
                x.weight = w;
            }
        }
        match h.on_failure {
            OnFailure::Drain => d.destinations.iter_mut().filter(|x| down(&x.addr)).for_each(|x| x.weight = 0),
            OnFailure::Remove => d.destinations.retain(|x| !down(&x.addr)),
        }
        if let (true, Some(sorry)) = (h.sorry_active, &h.sorry) {
            if !d.destinations.iter().any(|x| x.addr == sorry.addr) {
                d.destinations.push(sorry.clone());
            }
        }
    }
    for dr in &report.draining {
        let at = match out.iter().position(|d| d.service.key == dr.service.key) {
            Some(i) => i,
            None => {
                out.push(DesiredService { service: dr.service.clone(), destinations: Vec::new() });
                out.len() - 1
            }
        };
        let dests = &mut out[at].destinations;
        match dests.iter_mut().find(|x| x.addr == dr.dest.addr) {
            Some(x) => x.weight = 0,
            None => dests.push(dr.dest.clone().with_weight(0)),
        }
    }
    out
}

/// Where the report of this network namespace lives.
pub fn path(dir: &Path) -> Result<PathBuf, Error> {
    Ok(dir.join(format!("health-netns{}.json", state::netns_id()?)))
}

impl state::StateFile for HealthReport {
    const FORMAT: u32 = FORMAT;
}

/// Write the report atomically.
pub fn write(path: &Path, r: &HealthReport) -> Result<(), Error> {
    state::write(path, r)
}

/// The report of the `director run` daemon of this network namespace, if one
/// runs: `None` when there is no report, or when its process is gone (a
/// daemon that was killed leaves a stale file behind).
pub fn read_running() -> Result<Option<HealthReport>, Error> {
    let p = path(&state::dir())?;
    let Some(r) = state::read::<HealthReport>(&p)? else { return Ok(None) };
    Ok(alive(r.pid).then_some(r))
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // SAFETY: kill with signal 0 only checks that the process exists.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A new report with this process's id.
pub fn new(config: &Path, started: SystemTime) -> HealthReport {
    HealthReport {
        format: FORMAT,
        pid: std::process::id(),
        config: config.to_owned(),
        started: epoch(started),
        services: Vec::new(),
        ha: None,
        bgp: None,
        draining: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe() {
        let mut r = RealHealth {
            addr: "10.18.68.186:15858".parse().unwrap(),
            check: Some("tcp every 2s".into()),
            up: false,
            since: 0,
            last_error: Some("tcp connect to 10.18.68.186:15858: Connection refused (os error 111)".into()),
            last_error_at: Some(1),
            weight: 1,
            dynamic_weight: None,
        };
        assert_eq!(
            r.describe(),
            "down since 1970-01-01 00:00:00 UTC (last error at 1970-01-01 00:00:01 UTC: tcp connect to 10.18.68.186:15858: Connection refused (os error 111))"
        );
        r.check = None;
        assert_eq!(r.describe(), "not checked");
    }

    /// While the daemon runs, status expects the drains (weight 0, a removed
    /// service still there) and the dynamic weights: none of them is drift.
    #[test]
    fn expected_has_the_drains_and_dynamic_weights() {
        use ipvs::{Destination, Forward, Scheduler, Service};
        let svc =
            |port: u16| Service::new(ServiceKey::tcp(format!("10.19.70.166:{port}").parse().unwrap()), Scheduler::Rr);
        let dest = |a: &str| Destination::new(format!("{a}:80").parse().unwrap(), Forward::Route).with_weight(4);
        let configured = vec![DesiredService { service: svc(80), destinations: vec![dest("10.18.68.186")] }];
        let mut r = new(Path::new("/etc/lvsctl.toml"), std::time::UNIX_EPOCH);
        r.services.push(ServiceHealth {
            key: svc(80).key,
            sorry_server: None,
            sorry_active: false,
            on_failure: OnFailure::Drain,
            sorry: None,
            real_servers: vec![RealHealth {
                addr: "10.18.68.186:80".parse().unwrap(),
                check: Some("exec".into()),
                up: true,
                since: 0,
                last_error: None,
                last_error_at: None,
                weight: 4,
                dynamic_weight: Some(2),
            }],
        });
        let drain = |s: Service, a: &str| DrainReport {
            service: s,
            dest: dest(a),
            cause: DrainCause::Removed,
            since: 0,
            until: 30,
        };
        r.draining = vec![drain(svc(80), "10.18.68.187"), drain(svc(81), "10.18.68.186")];
        let e = expected(&configured, &r);
        let weights: Vec<(u16, Vec<(String, u32)>)> = e
            .iter()
            .map(|d| {
                let port = match d.service.key {
                    ServiceKey::Inet { addr, .. } => addr.port(),
                    ServiceKey::Fwmark { .. } => 0,
                };
                (port, d.destinations.iter().map(|x| (x.addr.ip().to_string(), x.weight)).collect())
            })
            .collect();
        assert_eq!(
            weights,
            vec![
                (80, vec![("10.18.68.186".into(), 2), ("10.18.68.187".into(), 0)]),
                (81, vec![("10.18.68.186".into(), 0)]),
            ]
        );
        let text = r.render();
        assert!(text.contains("10.18.68.186:80") && text.contains("(dynamic weight 2)"), "{text}");
        assert!(text.contains("tcp 10.19.70.166:81 (removed from the config: deleted once drained)"), "{text}");
        assert_eq!(text.matches("draining since").count(), 2, "{text}");
    }

    #[test]
    fn stale_reports_are_not_running() {
        assert!(alive(std::process::id()));
        // pid_max is at most 2^22: this process cannot exist.
        assert!(!alive(5_000_000));
    }
}
