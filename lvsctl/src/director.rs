//! `lvsctl director start|stop|status` (issue 3): the seed's `lvs-dr` init
//! script, without its `ipvsadm -C`.
//!
//! - `start` puts each VIP as /32 (/128) on its interface and reconciles the
//!   virtual services it owns with the configuration ([`ipvs::reconcile::plan`]
//!   with [`Scope::Owned`], applied in bulk with [`ipvs::Ipvs::apply`]); a
//!   service it did not create is never changed or deleted.
//! - `stop` deletes exactly the services and addresses start created.
//! - `status` reads the kernel and compares it with what start configured.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ipvs::reconcile::{plan, DesiredService, Scope};
use ipvs::{DestinationEntry, Ipvs, Op, ServiceEntry, ServiceKey, Stats};
use serde::Serialize;

use crate::config::{self, Config, DirectorConfig, DirectorSpec, IfName, Origin, RealConfig, ServiceConfig};
use crate::host::addr::{host_prefix, Rtnl};
use crate::host::{require_root, sysctl};
use crate::state::{self, AddressRecord, DirectorState, Role};
use crate::CliError;

/// Arguments of `lvsctl director`.
#[derive(Debug, clap::Args)]
pub(crate) struct DirectorArgs {
    #[command(subcommand)]
    cmd: DirectorCmd,
}

#[derive(Debug, clap::Subcommand)]
enum DirectorCmd {
    /// Put the VIPs on their interface and create the virtual services and
    /// their real servers; run again to reconcile (prints what it changed).
    Start(StartArgs),
    /// Remove exactly what start created (its services and VIPs); never flushes.
    Stop,
    /// Compare the kernel with what start configured. Exit status: 0 running,
    /// 1 degraded (prints what is missing), 3 not running, 4 not permitted.
    Status(StatusArgs),
    /// Run as a daemon: apply the config like start, then health-check every
    /// real server and act (weight 0 or removal, sorry server); SIGHUP
    /// reloads, SIGTERM/SIGINT stop (see README, "Health-checking daemon").
    Run(crate::daemon::RunArgs),
    /// Connect to ADDR:PORT COUNT times and print each answer (for scripts/demo).
    #[command(hide = true)]
    DemoConnect {
        /// Where to connect.
        #[arg(long)]
        to: SocketAddr,
        /// How many connections, one after the other.
        #[arg(long, default_value_t = 6)]
        count: u32,
    },
    /// Failover: the standby weights, straight in the kernel (keepalived runs
    /// this when the host leaves MASTER; see src/ha).
    #[command(hide = true)]
    HaStandby {
        /// Where to log what is done.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Nothing is done while this process (`director run`) lives: it
        /// handles the roles itself.
        #[arg(long, value_name = "PID")]
        unless_pid: Option<u32>,
        /// First wait for this process (keepalived) to end.
        #[arg(long, value_name = "PID")]
        wait_pid: Option<u32>,
        /// Do it in this process (else in a detached copy of it, which
        /// keepalived cannot kill when it stops right after running it).
        #[arg(long)]
        foreground: bool,
        /// The VIPs of the services to adjust.
        vips: Vec<IpAddr>,
    },
}

/// `director start` flags (or `--config FILE`).
#[derive(Debug, Default, clap::Args)]
pub(crate) struct StartArgs {
    /// TOML configuration with a [director] section (see README); excludes the other flags.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Virtual IP address (IPv4 or IPv6).
    #[arg(long, value_name = "ADDR")]
    vip: Option<String>,
    /// Port of the virtual service, 1..65535; 0 = every port (needs --persistence).
    #[arg(long, value_name = "N")]
    port: Option<String>,
    /// Interface the VIP goes on (facing clients and real servers).
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// A real server (repeatable); the port defaults to the service's, weight to 1.
    #[arg(long = "real", value_name = "ADDR[:PORT][,weight=N]")]
    reals: Vec<String>,
    /// Scheduler: rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos.
    #[arg(long, value_name = "NAME")]
    scheduler: Option<String>,
    /// Protocol of the virtual service.
    #[arg(long, value_name = "tcp|udp|sctp")]
    protocol: Option<String>,
    /// Persistence timeout in seconds.
    #[arg(long, value_name = "SECS")]
    persistence: Option<String>,
    /// Forwarding method to the real servers.
    #[arg(long, value_name = "dr|tunnel|nat")]
    forward: Option<String>,
}

/// `status` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: DirectorArgs) -> Result<ExitCode, CliError> {
    match args.cmd {
        DirectorCmd::Start(a) => start(a).await,
        DirectorCmd::Stop => stop().await,
        DirectorCmd::Status(a) => status(a).await,
        DirectorCmd::Run(a) => crate::daemon::run(a).await,
        DirectorCmd::DemoConnect { to, count } => demo_connect(to, count),
        DirectorCmd::HaStandby { state_dir, unless_pid, wait_pid, foreground, vips } => {
            crate::ha::standby(state_dir.as_deref(), unless_pid, wait_pid, foreground, &vips).await
        }
    }
}

// ---------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------

/// The validated spec from `--config` or the flags. Touches nothing.
pub(crate) fn start_spec(a: &StartArgs) -> Result<DirectorSpec, CliError> {
    let usage = |e: config::ConfigError| CliError::usage(e.0);
    if let Some(path) = &a.config {
        let extra: Vec<&str> = [
            ("--vip", a.vip.is_some()),
            ("--port", a.port.is_some()),
            ("--iface", a.iface.is_some()),
            ("--real", !a.reals.is_empty()),
            ("--scheduler", a.scheduler.is_some()),
            ("--protocol", a.protocol.is_some()),
            ("--persistence", a.persistence.is_some()),
            ("--forward", a.forward.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect();
        if !extra.is_empty() {
            return Err(CliError::usage(format!("--config cannot be combined with {}", extra.join(", "))));
        }
        return Config::load(path).and_then(|c| c.director()).map_err(usage);
    }
    let missing: Vec<&str> = [("--vip", a.vip.is_none()), ("--port", a.port.is_none()), ("--iface", a.iface.is_none())]
        .into_iter()
        .filter_map(|(n, m)| m.then_some(n))
        .collect();
    if !missing.is_empty() {
        return Err(CliError::usage(format!("director start needs {} (or --config FILE)", missing.join(", "))));
    }
    let vip_s = a.vip.as_deref().unwrap_or_default();
    let vip: IpAddr = vip_s
        .parse()
        .map_err(|_| CliError::usage(format!("malformed VIP {vip_s:?}: expected an IPv4 or IPv6 address")))?;
    let port_s = a.port.as_deref().unwrap_or_default();
    let port: u16 = port_s
        .parse()
        .map_err(|_| CliError::usage(format!("invalid port {port_s:?}: expected 1..65535 (0 = every port)")))?;
    let iface: IfName = a.iface.as_deref().unwrap_or_default().parse().map_err(CliError::usage)?;
    let protocol = match &a.protocol {
        Some(p) => p.parse().map_err(|e: ipvs::Error| CliError::usage(e.to_string()))?,
        None => ipvs::Protocol::Tcp,
    };
    let scheduler = match &a.scheduler {
        Some(s) => s.parse().map_err(CliError::usage)?,
        None => config::SchedulerName::default(),
    };
    let persistence = match &a.persistence {
        Some(p) => Some(p.parse::<u32>().ok().filter(|t| *t > 0).ok_or_else(|| {
            CliError::usage(format!("invalid persistence {p:?}: expected a number of seconds, at least 1"))
        })?),
        None => None,
    };
    let forward = match &a.forward {
        Some(f) => f.parse().map_err(CliError::usage)?,
        None => config::ForwardMethod::Dr,
    };
    for r in &a.reals {
        RealConfig::parse(r).map_err(CliError::usage)?;
    }
    // The same service as a [[director.service]] table would give (so every
    // key the file may have keeps its default here too).
    let mut t = toml::Table::new();
    t.insert("vip".into(), vip.to_string().into());
    t.insert("port".into(), i64::from(port).into());
    t.insert("protocol".into(), protocol.name().into());
    t.insert("scheduler".into(), scheduler.0.name().into());
    if let Some(p) = persistence {
        t.insert("persistence".into(), i64::from(p).into());
    }
    t.insert("forward".into(), toml::Value::try_from(forward).map_err(|e| CliError::failure(e.to_string()))?);
    t.insert("iface".into(), iface.to_string().into());
    t.insert("real".into(), toml::Value::Array(a.reals.iter().map(|r| r.as_str().into()).collect()));
    let text = toml::to_string(&t).map_err(|e| CliError::failure(e.to_string()))?;
    let svc: ServiceConfig = toml::from_str(&text).map_err(|e| CliError::usage(e.message()))?;
    #[allow(clippy::needless_update)] // robust to keys added for `director run`
    let d = DirectorConfig { iface: Some(iface), services: vec![toml::Spanned::new(0..0, svc)], ..Default::default() };
    config::validate_director(&d, &Origin::flags(), None).map_err(usage)
}

fn ipvsadm_key(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Inet { protocol, addr } => {
            let p = match protocol {
                ipvs::Protocol::Tcp => "-t",
                ipvs::Protocol::Udp => "-u",
                ipvs::Protocol::Sctp => "--sctp-service",
            };
            format!("{p} {addr}")
        }
        ServiceKey::Fwmark { mark, .. } => format!("-f {mark}"),
    }
}

// ---------------------------------------------------------------------------
// start
// ---------------------------------------------------------------------------

async fn start(args: StartArgs) -> Result<ExitCode, CliError> {
    let spec = start_spec(&args)?;
    require_root("lvsctl director start")?;
    apply(&spec, &spec.desired_services()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Make the host match `spec` with the virtual services `desired` (normally
/// `spec.desired_services()`; `director run` passes them adjusted for health):
/// VIPs on their interfaces, services reconciled within the ones lvsctl owns,
/// in one [`Ipvs::apply`] batch. Prints every change. Checks everything it
/// can before the first change; refuses to take over a service it did not
/// create. Records what it did in the state file, under the lock.
pub(crate) async fn apply(spec: &DirectorSpec, desired: &[DesiredService]) -> Result<(), CliError> {
    require_root("lvsctl director")?;
    let desired = desired.to_vec();
    let (nsvc, nreal) = (desired.len(), desired.iter().map(|d| d.destinations.len()).sum::<usize>());
    // Everything that can be checked is checked before the first change.
    let rtnl = Rtnl::connect()?;
    let mut index: HashMap<String, u32> = HashMap::new();
    for (_, iface) in spec.vips() {
        if !index.contains_key(iface.as_str()) {
            let i = rtnl
                .link_index(iface.as_str())
                .await?
                .ok_or_else(|| CliError::usage(format!("no such interface {iface}")))?;
            index.insert(iface.to_string(), i);
        }
    }
    let ipvs = Ipvs::connect().await?;
    let dir = state::dir();
    let _lock = state::lock(&dir)?;
    let path = state::path(&dir, Role::Director)?;
    let prev: Option<DirectorState> = state::read(&path)?;
    let table = ipvs.dump().await?;
    let present = |k: &ServiceKey| table.iter().any(|(s, _)| s.service.key == *k);
    let prev_owned: Vec<ServiceKey> = prev.as_ref().map(|p| p.owned.clone()).unwrap_or_default();
    for d in &desired {
        let k = d.service.key;
        if present(&k) && !prev_owned.contains(&k) {
            return Err(CliError::usage(format!(
                "virtual service {k} already exists and lvsctl did not create it: delete it first (ipvsadm -D {}) or leave it out",
                ipvsadm_key(&k)
            )));
        }
    }
    let ops = plan(&table, &desired, &Scope::Owned(prev_owned.clone()));
    let prev_sysctls = prev.as_ref().map(|p| p.sysctls.clone()).unwrap_or_default();
    let sysctl_plan = sysctl::plan(&forwarding_sysctls(spec), &prev_sysctls)?;

    let prev_addrs: Vec<AddressRecord> = prev.as_ref().map(|p| p.addresses.clone()).unwrap_or_default();
    let mut records = Vec::new();
    let mut adds = Vec::new();
    for (ip, iface) in spec.vips() {
        let idx = index[iface.as_str()];
        let ours = prev_addrs.iter().any(|r| r.addr == ip && r.iface == iface.as_str() && r.created);
        let rec = AddressRecord { addr: ip, prefix_len: host_prefix(ip), iface: iface.to_string(), created: ours };
        if rtnl.has_address(idx, ip).await? {
            records.push(rec);
        } else {
            adds.push((idx, rec));
        }
    }
    let dels: Vec<AddressRecord> = prev_addrs
        .iter()
        .filter(|r| r.created && !spec.vips().iter().any(|(ip, i)| *ip == r.addr && i.as_str() == r.iface))
        .cloned()
        .collect();

    let mut owned: Vec<ServiceKey> = prev_owned.iter().copied().filter(|k| present(k)).collect();
    // Write ahead: if this run dies half-way, the state already claims what it
    // is about to create, so the next start or stop can finish or undo it.
    if !ops.is_empty() || !adds.is_empty() || !dels.is_empty() || !sysctl_plan.is_empty() {
        let mut claim = owned.clone();
        for op in &ops {
            if let Op::AddService(s) = op {
                if !claim.contains(&s.key) {
                    claim.push(s.key);
                }
            }
        }
        let mut addresses = records.clone();
        addresses.extend(adds.iter().map(|(_, r)| AddressRecord { created: true, ..r.clone() }));
        addresses.extend(dels.iter().cloned());
        let sysctls = sysctl_plan.claim();
        state::write(
            &path,
            &DirectorState { format: state::FORMAT, services: desired.clone(), owned: claim, addresses, sysctls },
        )?;
    }

    // IPVS, in one batch.
    let mut first_err: Option<CliError> = None;
    let mut changes = 0usize;
    if !ops.is_empty() {
        let results = match ipvs.apply(&ops).await {
            Ok(r) => r,
            Err(e) => {
                put_back(&path, prev)?;
                return Err(e.into());
            }
        };
        let mut added_now = Vec::new();
        for (op, r) in ops.iter().zip(results) {
            match r {
                Ok(()) => {
                    println!("director: {op}");
                    changes += 1;
                    match op {
                        Op::AddService(s) => {
                            owned.push(s.key);
                            added_now.push(s.key);
                        }
                        Op::DeleteService(k) => owned.retain(|x| x != k),
                        _ => {}
                    }
                }
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(CliError::from(e));
                    }
                }
            }
        }
        if let Some(e) = first_err {
            // Undo the services this run added; leave addresses alone.
            let undo: Vec<Op> = added_now.iter().map(|k| Op::DeleteService(*k)).collect();
            if let Ok(res) = ipvs.apply(&undo).await {
                for (op, r) in undo.iter().zip(res) {
                    if r.is_ok() {
                        println!("director: undone: {op}");
                        if let Op::DeleteService(k) = op {
                            owned.retain(|x| x != k);
                        }
                    }
                }
            }
            match prev {
                Some(p) => state::write(&path, &DirectorState { owned, ..p })?,
                None if !owned.is_empty() => {
                    let st = DirectorState {
                        format: state::FORMAT,
                        services: desired,
                        owned,
                        addresses: vec![],
                        sysctls: vec![],
                    };
                    state::write(&path, &st)?;
                }
                None => state::remove(&path)?,
            }
            return Err(e);
        }
    }

    // Addresses.
    let mut result = Ok(());
    let mut kept_dels = Vec::new();
    for r in dels {
        let Some(idx) = rtnl.link_index(&r.iface).await? else { continue };
        match rtnl.del_address(idx, &r.iface, r.addr, r.prefix_len).await {
            Ok(()) => {
                println!("director: removed {}/{} from {}", r.addr, r.prefix_len, r.iface);
                changes += 1;
            }
            Err(e) => {
                // Still ours: stop tries again.
                kept_dels.push(r);
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
    }
    for (idx, mut r) in adds {
        match rtnl.add_address(idx, &r.iface, r.addr, r.prefix_len).await {
            Ok(()) => {
                println!("director: added {}/{} to {}", r.addr, r.prefix_len, r.iface);
                changes += 1;
                r.created = true;
                records.push(r);
            }
            Err(e) => {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
    }
    records.extend(kept_dels);
    // The forwarding NAT needs.
    let sysctl_result = sysctl::apply(&sysctl_plan, "director", &mut changes);
    let sysctls = sysctl_plan.kept(sysctl_result.is_err());
    let st = DirectorState { format: state::FORMAT, services: desired, owned, addresses: records, sysctls };
    state::write(&path, &st)?;
    result?;
    sysctl_result?;
    if changes == 0 {
        println!("director: already running as configured; nothing changed");
    } else {
        println!("director: running ({nsvc} virtual services, {nreal} real servers)");
    }
    Ok(())
}

/// The sysctls the configured services need: forwarding on (in the family
/// of their addresses) when a real server is reached by NAT, whose replies
/// the director must route back through itself. Direct routing and
/// tunnelling need none.
fn forwarding_sysctls(spec: &DirectorSpec) -> Vec<sysctl::Want> {
    let mut out: Vec<sysctl::Want> = Vec::new();
    for s in &spec.services {
        for d in &s.desired.destinations {
            if d.forward == ipvs::Forward::Masq {
                let want = (d.addr.is_ipv6(), "all".to_owned(), "forwarding", "1");
                if !out.contains(&want) {
                    out.push(want);
                }
            }
        }
    }
    out
}

/// Put the state file back as it was before this run (none: remove it).
fn put_back(path: &std::path::Path, prev: Option<DirectorState>) -> Result<(), CliError> {
    match prev {
        Some(p) => state::write(path, &p),
        None => state::remove(path),
    }
}

// ---------------------------------------------------------------------------
// stop
// ---------------------------------------------------------------------------

async fn stop() -> Result<ExitCode, CliError> {
    require_root("lvsctl director stop")?;
    teardown().await?;
    Ok(ExitCode::SUCCESS)
}

/// Undo what [`apply`] did: delete the services lvsctl owns and the VIPs it
/// added; nothing else. Without a state file there is nothing to undo.
pub(crate) async fn teardown() -> Result<(), CliError> {
    require_root("lvsctl director")?;
    let dir = state::dir();
    if !dir.exists() {
        // Never started on this host (not even a lock file): nothing to stop, nothing to create.
        println!("director: not running; nothing to stop");
        return Ok(());
    }
    let _lock = state::lock(&dir)?;
    let path = state::path(&dir, Role::Director)?;
    let Some(mut st) = state::read::<DirectorState>(&path)? else {
        println!("director: not running; nothing to stop");
        return Ok(());
    };
    let ipvs = Ipvs::connect().await?;
    let services = ipvs.services().await?;
    let ops: Vec<Op> = st
        .owned
        .iter()
        .filter(|k| services.iter().any(|s| s.service.key == **k))
        .map(|k| Op::DeleteService(*k))
        .collect();
    let mut first_err: Option<CliError> = None;
    let results = if ops.is_empty() { Vec::new() } else { ipvs.apply(&ops).await? };
    let mut deleted = Vec::new();
    for (op, r) in ops.iter().zip(results) {
        match r {
            Ok(()) => {
                println!("director: {op}");
                if let Op::DeleteService(k) = op {
                    deleted.push(*k);
                }
            }
            Err(e) => {
                first_err.get_or_insert(CliError::from(e));
            }
        }
    }
    // Services that are gone are not ours any more, whoever deleted them.
    st.owned.retain(|k| services.iter().any(|s| s.service.key == *k) && !deleted.contains(k));

    let rtnl = Rtnl::connect()?;
    let (left, err) = rtnl.remove_created(std::mem::take(&mut st.addresses), "director").await;
    st.addresses = left;
    if let Some(e) = err {
        first_err.get_or_insert(e);
    }
    let (left, err) = sysctl::restore_all(&st.sysctls, "director");
    st.sysctls = left;
    if let Some(e) = err {
        first_err.get_or_insert(e);
    }
    state::finish_stop(&path, &st, first_err)?;
    println!("director: stopped");
    Ok(())
}

// ---------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------

/// `director status --json`.
#[derive(Debug, Serialize)]
struct DirectorStatus {
    role: &'static str,
    /// `running`, `degraded` or `not running`.
    status: &'static str,
    /// The exit status (LSB).
    exit_code: u8,
    /// What is missing or differs.
    problems: Vec<String>,
    addresses: Vec<AddrStatus>,
    /// The forwarding sysctls start set for NAT.
    sysctls: Vec<sysctl::SysctlStatus>,
    services: Vec<ServiceStatus>,
    /// The health of every real server, while `director run` runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<crate::daemon::report::HealthReport>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AddrStatus {
    pub(crate) addr: IpAddr,
    pub(crate) prefix_len: u8,
    pub(crate) iface: String,
    pub(crate) present: bool,
}

#[derive(Debug, Serialize)]
struct ServiceStatus {
    protocol: String,
    address: String,
    scheduler: String,
    persistence: Option<u32>,
    present: bool,
    stats: Option<Stats>,
    real_servers: Vec<RealStatus>,
}

#[derive(Debug, Serialize)]
struct RealStatus {
    address: SocketAddr,
    /// As the kernel reports it (`Route`, `Local`, ...), or the configured one when missing.
    forward: &'static str,
    weight: u32,
    /// Configured by start (false: added by someone else).
    configured: bool,
    present: bool,
    active_conns: u32,
    inactive_conns: u32,
    stats: Option<Stats>,
}

fn problem_of(op: &Op) -> String {
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

async fn status(args: StatusArgs) -> Result<ExitCode, CliError> {
    // The kernel first: without the right to read IPVS, the answer is 4 (not
    // permitted), whatever the state file says.
    let ipvs = Ipvs::connect().await?;
    let table = ipvs.dump().await?;
    let dir = state::dir();
    let path = state::path(&dir, Role::Director)?;
    let Some(st) = state::read::<DirectorState>(&path)? else {
        let s = DirectorStatus {
            role: "director",
            status: "not running",
            exit_code: 3,
            problems: vec![],
            addresses: vec![],
            sysctls: vec![],
            services: vec![],
            health: None,
        };
        print_status(&s, args.json, None);
        return Ok(ExitCode::from(3));
    };
    let info = ipvs.info().await.ok();
    let rtnl = Rtnl::connect()?;
    let mut problems = Vec::new();
    let mut addresses = Vec::new();
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
        addresses.push(AddrStatus { addr: r.addr, prefix_len: r.prefix_len, iface: r.iface.clone(), present });
    }
    let sysctls = sysctl::status(&st.sysctls, &mut problems);
    problems.extend(plan(&table, &st.services, &Scope::Owned(vec![])).iter().map(problem_of));
    let services = st.services.iter().map(|d| service_status(d, &table)).collect();
    let (status, code) = if problems.is_empty() { ("running", 0) } else { ("degraded", 1) };
    let health = crate::daemon::report::read_running()?;
    let s =
        DirectorStatus { role: "director", status, exit_code: code, problems, addresses, sysctls, services, health };
    print_status(&s, args.json, info);
    Ok(ExitCode::from(code))
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

/// Width of the left part of the table lines (ipvsadm's `-Ln` columns).
const LEFT: usize = 70;

fn stats_cols(s: Option<&Stats>) -> String {
    match s {
        Some(s) => format!(" {:>8} {:>8} {:>8} {:>8} {:>8}", s.conns, s.in_pkts, s.out_pkts, s.in_bytes, s.out_bytes),
        None => String::new(),
    }
}

fn print_status(s: &DirectorStatus, json: bool, info: Option<ipvs::Info>) {
    if json {
        println!("{}", serde_json::to_string_pretty(s).unwrap_or_default());
    } else {
        print!("{}", render(s, info));
    }
}

/// The human status: state, problems, VIPs, then the table of `ipvsadm -Ln
/// --stats` with forwarding method, weight and connection columns.
fn render(s: &DirectorStatus, info: Option<ipvs::Info>) -> String {
    let mut out = String::new();
    match s.problems.len() {
        0 => out.push_str(&format!("director: {}\n", s.status)),
        n => {
            out.push_str(&format!("director: {} ({n} problem{})\n", s.status, if n == 1 { "" } else { "s" }));
            for p in &s.problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
    }
    if s.exit_code == 3 {
        return out;
    }
    for a in &s.addresses {
        let what = if a.present { "present" } else { "MISSING" };
        out.push_str(&format!("VIP {}/{} on {}: {what}\n", a.addr, a.prefix_len, a.iface));
    }
    for c in &s.sysctls {
        out.push_str(&c.line());
        out.push('\n');
    }
    if let Some(i) = info {
        out.push_str(&format!("IP Virtual Server version {} (size={})\n", i.version_string(), i.conn_table_size));
    }
    out.push_str(&format!(
        "{:<LEFT$} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        "Prot LocalAddress:Port Scheduler Flags", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
    ));
    out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
    for svc in &s.services {
        let mut left = format!("{:<4} {} {}", svc.protocol, svc.address, svc.scheduler);
        if let Some(p) = svc.persistence {
            left.push_str(&format!(" persistent {p}"));
        }
        if !svc.present {
            left.push_str(" (MISSING)");
        }
        out.push_str(format!("{left:<LEFT$}{}", stats_cols(svc.stats.as_ref())).trim_end());
        out.push('\n');
        for r in &svc.real_servers {
            let mut left = format!(
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                r.address.to_string(),
                r.forward,
                r.weight,
                r.active_conns,
                r.inactive_conns
            );
            if !r.present {
                left = format!("  -> {:<28} (MISSING)", r.address.to_string());
            } else if !r.configured {
                left.push_str(" (not configured)");
            }
            out.push_str(format!("{left:<LEFT$}{}", stats_cols(r.stats.as_ref())).trim_end());
            out.push('\n');
        }
    }
    if let Some(h) = &s.health {
        out.push_str(&h.render());
    }
    out
}

// ---------------------------------------------------------------------------
// demo client
// ---------------------------------------------------------------------------

fn demo_connect(to: SocketAddr, count: u32) -> Result<ExitCode, CliError> {
    for i in 1..=count {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .map_err(|e| CliError::failure(format!("connection {i} to {to}: {e}")))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let _ = s.write_all(b"hello\n");
        let mut answer = String::new();
        s.read_to_string(&mut answer).map_err(|e| CliError::failure(format!("connection {i} to {to}: {e}")))?;
        println!("connection {i} to {to}: answered by {}", answer.trim());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut StartArgs)) -> StartArgs {
        let mut a = StartArgs {
            vip: Some("10.19.70.166".into()),
            port: Some("15858".into()),
            iface: Some("enp1s0".into()),
            reals: vec!["10.18.68.186".into(), "10.18.68.187".into()],
            ..Default::default()
        };
        f(&mut a);
        a
    }

    fn err(a: StartArgs) -> CliError {
        start_spec(&a).unwrap_err()
    }

    #[test]
    fn seed_flags() {
        let s = start_spec(&args(|_| {})).unwrap();
        assert_eq!(s.services.len(), 1);
        let d = &s.services[0].desired;
        assert_eq!(d.service.key, ServiceKey::tcp("10.19.70.166:15858".parse().unwrap()));
        assert_eq!(d.service.scheduler, ipvs::Scheduler::Rr);
        assert_eq!(d.destinations.len(), 2);
        assert!(d.destinations.iter().all(|x| x.weight == 1 && x.forward == ipvs::Forward::Route));
    }

    #[test]
    fn only_nat_needs_forwarding_in_the_family_of_its_real_servers() {
        assert!(forwarding_sysctls(&start_spec(&args(|_| {})).unwrap()).is_empty());
        for f in ["dr", "tunnel"] {
            assert!(forwarding_sysctls(&start_spec(&args(|a| a.forward = Some(f.into()))).unwrap()).is_empty());
        }
        let nat = start_spec(&args(|a| a.forward = Some("nat".into()))).unwrap();
        assert_eq!(forwarding_sysctls(&nat), vec![(false, "all".to_owned(), "forwarding", "1")]);
        let nat6 = start_spec(&args(|a| {
            a.forward = Some("nat".into());
            a.vip = Some("2001:db8::10".into());
            a.reals = vec!["2001:db8::11".into(), "2001:db8::12".into()];
        }))
        .unwrap();
        assert_eq!(forwarding_sysctls(&nat6), vec![(true, "all".to_owned(), "forwarding", "1")]);
    }

    #[test]
    fn bad_flags_are_usage_errors_of_one_line() {
        for (a, want) in [
            (args(|a| a.vip = Some("10.19.70.1666".into())), "malformed VIP"),
            (args(|a| a.reals.push("10.18.68".into())), "malformed real server address"),
            (args(|a| a.scheduler = Some("fastest".into())), "unknown scheduler \"fastest\""),
            (args(|a| a.reals.push("10.18.68.188,weight=65536".into())), "weight 65536 is out of range"),
            (args(|a| a.reals.push("2001:db8::1".into())), "address families must match"),
            (args(|a| a.port = Some("65536".into())), "invalid port"),
            (args(|a| a.port = Some("0".into())), "needs persistence"),
            (args(|a| a.protocol = Some("icmp".into())), "unknown protocol"),
            (args(|a| a.forward = Some("magic".into())), "unknown forwarding method"),
            (args(|a| a.iface = Some("a/b".into())), "invalid interface name"),
            (args(|a| a.vip = None), "needs --vip"),
            (args(|a| a.config = Some("/x.toml".into())), "--config cannot be combined"),
            (args(|a| a.reals.push("10.18.68.186".into())), "listed twice"),
        ] {
            let e = err(a);
            assert_eq!(e.code, 2, "{}", e.msg);
            assert!(e.msg.contains(want), "{:?} does not contain {want:?}", e.msg);
            assert!(!e.msg.contains('\n'));
        }
        let e = err(StartArgs { config: Some("/nonexistent/lvsctl.toml".into()), ..Default::default() });
        assert!(e.msg.starts_with("cannot read config file /nonexistent/lvsctl.toml"), "{}", e.msg);
    }

    #[test]
    fn human_status_lines_up_like_ipvsadm_stats() {
        let stats = |conns, pkts, bytes| Stats {
            conns,
            in_pkts: pkts,
            out_pkts: pkts,
            in_bytes: bytes,
            out_bytes: bytes,
            ..Stats::default()
        };
        let real = |a: &str, present, n| RealStatus {
            address: a.parse().unwrap(),
            forward: "Route",
            weight: 1,
            configured: true,
            present,
            active_conns: 1,
            inactive_conns: 2,
            stats: present.then(|| stats(n, 10, 1000)),
        };
        let s = DirectorStatus {
            role: "director",
            status: "degraded",
            exit_code: 1,
            problems: vec!["real server 10.18.68.187:15858 of tcp 10.19.70.166:15858 is missing".into()],
            addresses: vec![AddrStatus {
                addr: "10.19.70.166".parse().unwrap(),
                prefix_len: 32,
                iface: "enp1s0".into(),
                present: true,
            }],
            sysctls: vec![],
            services: vec![ServiceStatus {
                protocol: "TCP".into(),
                address: "10.19.70.166:15858".into(),
                scheduler: "rr".into(),
                persistence: None,
                present: true,
                stats: Some(stats(5, 16, 2918)),
                real_servers: vec![real("10.18.68.186:15858", true, 5), real("10.18.68.187:15858", false, 0)],
            }],
            health: None,
        };
        let want = "\
director: degraded (1 problem)
  - real server 10.18.68.187:15858 of tcp 10.19.70.166:15858 is missing
VIP 10.19.70.166/32 on enp1s0: present
Prot LocalAddress:Port Scheduler Flags                                    Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.19.70.166:15858 rr                                                    5       16       16     2918     2918
  -> 10.18.68.186:15858           Route   1      1          2                 5       10       10     1000     1000
  -> 10.18.68.187:15858           (MISSING)
";
        assert_eq!(render(&s, None), want);
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["services"][0]["real_servers"][0]["stats"]["conns"], 5);
        assert_eq!(v["services"][0]["real_servers"][1]["present"], false);
    }

    #[test]
    fn port_zero_with_persistence_is_fine() {
        let s = start_spec(&args(|a| {
            a.port = Some("0".into());
            a.persistence = Some("300".into());
        }))
        .unwrap();
        assert_eq!(s.services[0].desired.destinations[0].addr.port(), 0);
    }
}
