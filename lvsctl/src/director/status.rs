//! `director status`: the kernel compared with what reconciles configured.

use std::net::SocketAddr;
use std::path::Path;

use ipvs::reconcile::{plan, DesiredService, Scope};
use ipvs::{DestinationEntry, Ipvs, Op, ServiceEntry, ServiceKey, Stats};
use serde::Serialize;

use crate::health::report::{self, HealthReport};
pub use crate::host::addr::AddrStatus;
use crate::host::addr::Rtnl;
use crate::host::sysctl;
use crate::state::{self, DirectorState};
use crate::Error;

/// `director status --json`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// `director`.
    pub role: &'static str,
    /// `running`, `degraded` or `not running`.
    pub status: &'static str,
    /// The exit status (LSB).
    pub exit_code: u8,
    /// What is missing or differs.
    pub problems: Vec<String>,
    /// The VIPs.
    pub addresses: Vec<AddrStatus>,
    /// The forwarding sysctls start set for NAT.
    pub sysctls: Vec<sysctl::SysctlStatus>,
    /// The virtual services, as configured (with the health applied while the daemon runs).
    pub services: Vec<ServiceStatus>,
    /// The health of every real server, while `director run` runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthReport>,
    /// The IPVS version and table size (not in the JSON).
    #[serde(skip)]
    pub info: Option<ipvs::Info>,
}

/// A virtual service in the status.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// `TCP`, `UDP`, `SCTP` or `FWM`.
    pub protocol: String,
    /// Address and port, or the firewall mark.
    pub address: String,
    /// The scheduler (the kernel's when present).
    pub scheduler: String,
    /// The persistence timeout in seconds.
    pub persistence: Option<u32>,
    /// Whether the kernel has it.
    pub present: bool,
    /// Its counters, when present.
    pub stats: Option<Stats>,
    /// Its real servers.
    pub real_servers: Vec<RealStatus>,
}

/// A real server in the status.
#[derive(Debug, Serialize)]
pub struct RealStatus {
    /// Address and port.
    pub address: SocketAddr,
    /// As the kernel reports it (`Route`, `Local`, ...), or the configured one when missing.
    pub forward: &'static str,
    /// The weight (the kernel's when present).
    pub weight: u32,
    /// Configured by start (false: added by someone else).
    pub configured: bool,
    /// Whether the kernel has it.
    pub present: bool,
    /// Active connections.
    pub active_conns: u32,
    /// Inactive connections.
    pub inactive_conns: u32,
    /// Its counters, when present.
    pub stats: Option<Stats>,
}

/// A line naming what `op` would repair.
pub fn problem_of(op: &Op) -> String {
    match op {
        Op::AddService(s) => format!("virtual service {} is missing", s.key),
        Op::UpdateService(s) => {
            format!("virtual service {} differs from the configuration (want scheduler {})", s.key, s.scheduler)
        }
        Op::DeleteService(k) => format!("virtual service {k} should not exist"),
        Op::AddDestination(k, d) => format!("real server {} of {k} is missing", d.addr),
        Op::UpdateDestination(k, d) => format!(
            "real server {} of {k} differs from the configuration (want {}, weight {})",
            d.addr,
            d.forward.name(),
            d.weight
        ),
        Op::DeleteDestination(k, a) => format!("real server {a} of {k} is not in the configuration"),
    }
}

/// Read the kernel, the record at `path` and the daemon's health report.
pub(crate) async fn read(ipvs: &Ipvs, rtnl: &Rtnl, path: &Path) -> Result<Status, Error> {
    // The kernel first: without the right to read IPVS, the answer is "not
    // permitted", whatever the state file says.
    let table = ipvs.dump().await?;
    let Some(st) = state::read::<DirectorState>(path)? else {
        return Ok(Status::not_running());
    };
    let info = ipvs.info().await.ok();
    let mut problems = Vec::new();
    let addresses = addresses(rtnl, &st, &mut problems).await?;
    let sysctls = sysctl::status(&st.sysctls, &mut problems);
    let mut health = report::read_running()?;
    if let Some(b) = health.as_mut().and_then(|h| h.bgp.as_mut()) {
        // The sessions live in BIRD, asked now: the report is written only on changes.
        match crate::host::bird::sessions(&b.socket).await {
            Ok(s) => b.sessions = s,
            Err(e) => b.sessions_error = Some(e),
        }
    }
    let expected = match &health {
        Some(h) => {
            let mut e = report::expected(&st.services, h);
            // A failover director that is not MASTER keeps the other real
            // servers at weight 0 on purpose: that is no drift.
            if h.ha.as_ref().is_some_and(|ha| ha.role != report::Role::Master) {
                crate::health::standby_weights(&mut e, crate::host::is_local);
            }
            e
        }
        None => st.services.clone(),
    };
    problems.extend(plan(&table, &expected, &Scope::Owned(vec![])).iter().map(problem_of));
    let services = expected.iter().map(|d| service_status(d, &table)).collect();
    let (status, code) = if problems.is_empty() { ("running", 0) } else { ("degraded", 1) };
    Ok(Status { role: "director", status, exit_code: code, problems, addresses, sysctls, services, health, info })
}

async fn addresses(rtnl: &Rtnl, st: &DirectorState, problems: &mut Vec<String>) -> Result<Vec<AddrStatus>, Error> {
    let mut out = Vec::new();
    for r in &st.addresses {
        let present = match rtnl.link_index(&r.iface).await? {
            Some(idx) => rtnl.has_address(idx, r.addr).await?,
            None => {
                problems.push(format!("interface {} is gone", r.iface));
                false
            }
        };
        if !present {
            problems.push(format!("VIP {}/{} is not on {}", r.addr, r.prefix_len, r.iface));
        }
        out.push(AddrStatus { addr: r.addr, prefix_len: r.prefix_len, iface: r.iface.clone(), present });
    }
    Ok(out)
}

impl Status {
    fn not_running() -> Self {
        Status {
            role: "director",
            status: "not running",
            exit_code: 3,
            problems: vec![],
            addresses: vec![],
            sysctls: vec![],
            services: vec![],
            health: None,
            info: None,
        }
    }
}

fn service_status(d: &DesiredService, table: &[(ServiceEntry, Vec<DestinationEntry>)]) -> ServiceStatus {
    let (protocol, address) = match d.service.key {
        ServiceKey::Inet { protocol, addr } => (protocol.name().to_uppercase(), addr.to_string()),
        ServiceKey::Fwmark { mark, .. } => ("FWM".to_owned(), mark.to_string()),
    };
    let cur = table.iter().find(|(s, _)| s.service.key == d.service.key);
    let mut reals: Vec<RealStatus> = Vec::new();
    let dests: &[DestinationEntry] = cur.map(|(_, v)| v.as_slice()).unwrap_or(&[]);
    for want in &d.destinations {
        match dests.iter().find(|x| x.destination.addr == want.addr) {
            Some(x) => reals.push(real_status(x, true)),
            None => reals.push(RealStatus {
                address: want.addr,
                forward: want.forward.name(),
                weight: want.weight,
                configured: true,
                present: false,
                active_conns: 0,
                inactive_conns: 0,
                stats: None,
            }),
        }
    }
    for x in dests {
        if !d.destinations.iter().any(|w| w.addr == x.destination.addr) {
            reals.push(real_status(x, false));
        }
    }
    reals.sort_by_key(|r| (r.address.ip(), r.address.port()));
    ServiceStatus {
        protocol,
        address,
        scheduler: cur.map_or_else(|| d.service.scheduler.to_string(), |(s, _)| s.service.scheduler.to_string()),
        persistence: cur.map_or(d.service.persistence, |(s, _)| s.service.persistence).map(|p| p.timeout),
        present: cur.is_some(),
        stats: cur.map(|(s, _)| s.stats),
        real_servers: reals,
    }
}

fn real_status(x: &DestinationEntry, configured: bool) -> RealStatus {
    RealStatus {
        address: x.destination.addr,
        forward: x.destination.forward.name(),
        weight: x.destination.weight,
        configured,
        present: true,
        active_conns: x.active_conns,
        inactive_conns: x.inactive_conns,
        stats: Some(x.stats),
    }
}
