//! `lvsctl realserver start|stop|status` (issue 3): the seed's `lvs-rs` init
//! script.
//!
//! - `start` puts each VIP as /32 (/128) on `lo` and, when a VIP is IPv4, sets
//!   `arp_ignore=1` and `arp_announce=2` on `all`, `lo` and the interface,
//!   recording every previous value.
//! - `stop` removes the addresses start added and writes back every previous
//!   sysctl value (the seed wrote 0).
//! - `status` reads the addresses and sysctls and compares them with what
//!   start configured.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::config::{self, Config, IfName, Origin, RealserverSpec};
use crate::director::AddrStatus;
use crate::host::addr::{host_prefix, Rtnl};
use crate::host::{require_root, sysctl};
use crate::state::{self, AddressRecord, RealserverState, Role};
use crate::CliError;

/// The sysctls a DR real server needs, with their values.
const ARP_SYSCTLS: [(&str, &str); 2] = [("arp_ignore", "1"), ("arp_announce", "2")];

/// Arguments of `lvsctl realserver`.
#[derive(Debug, clap::Args)]
pub(crate) struct RealserverArgs {
    #[command(subcommand)]
    cmd: RealserverCmd,
}

#[derive(Debug, clap::Subcommand)]
enum RealserverCmd {
    /// Put the VIPs on lo and set arp_ignore=1, arp_announce=2 (all, lo, the interface).
    Start(StartArgs),
    /// Remove the VIPs start added and restore every sysctl to its previous value.
    Stop,
    /// Compare addresses and sysctls with what start configured. Exit status:
    /// 0 running, 1 degraded (prints what is missing), 3 not running, 4 not permitted.
    Status(StatusArgs),
    /// Answer every TCP connection on PORT with NAME (for scripts/demo).
    #[command(hide = true)]
    DemoServe {
        /// What to answer.
        #[arg(long)]
        name: String,
        /// TCP port to listen on (all addresses).
        #[arg(long)]
        port: u16,
    },
}

/// `realserver start` flags (or `--config FILE`).
#[derive(Debug, Default, clap::Args)]
pub(crate) struct StartArgs {
    /// TOML configuration with a [realserver] section (see README); excludes --vip and --iface.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A virtual IP to accept traffic for (repeatable).
    #[arg(long = "vip", value_name = "ADDR")]
    vips: Vec<String>,
    /// The interface facing clients and the director (its ARP sysctls are set too).
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
}

/// `status` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: RealserverArgs) -> Result<ExitCode, CliError> {
    match args.cmd {
        RealserverCmd::Start(a) => start(a).await,
        RealserverCmd::Stop => stop().await,
        RealserverCmd::Status(a) => status(a).await,
        RealserverCmd::DemoServe { name, port } => demo_serve(&name, port),
    }
}

/// The validated spec from `--config` or the flags. Touches nothing.
pub(crate) fn start_spec(a: &StartArgs) -> Result<RealserverSpec, CliError> {
    if let Some(path) = &a.config {
        if !a.vips.is_empty() || a.iface.is_some() {
            return Err(CliError::usage("--config cannot be combined with --vip or --iface"));
        }
        return Config::load(path).and_then(|c| c.realserver()).map_err(|e| CliError::usage(e.0));
    }
    let mut vips = Vec::new();
    for v in &a.vips {
        vips.push(
            v.parse::<IpAddr>()
                .map_err(|_| CliError::usage(format!("malformed VIP {v:?}: expected an IPv4 or IPv6 address")))?,
        );
    }
    let iface = match &a.iface {
        Some(i) => Some(i.parse::<IfName>().map_err(CliError::usage)?),
        None => None,
    };
    config::validate_realserver(vips, iface, &Origin::flags(), None).map_err(|e| CliError::usage(e.0))
}

/// The interfaces whose ARP sysctls are set: all, lo and the interface; none
/// when every VIP is IPv6 (IPv6 has no ARP).
fn sysctl_targets(spec: &RealserverSpec) -> Vec<String> {
    if !spec.vips.iter().any(|v| v.is_ipv4()) {
        return Vec::new();
    }
    let mut t = vec!["all".to_owned(), "lo".to_owned()];
    if let Some(i) = &spec.iface {
        if !t.iter().any(|x| x == i.as_str()) {
            t.push(i.to_string());
        }
    }
    t
}

async fn start(args: StartArgs) -> Result<ExitCode, CliError> {
    let spec = start_spec(&args)?;
    require_root("lvsctl realserver start")?;
    // Checks and reads first: nothing changes until all of them pass.
    let rtnl = Rtnl::connect()?;
    let lo = rtnl.link_index("lo").await?.ok_or_else(|| CliError::failure("no loopback interface lo"))?;
    if let Some(i) = &spec.iface {
        if rtnl.link_index(i.as_str()).await?.is_none() {
            return Err(CliError::usage(format!("no such interface {i}")));
        }
    }
    let dir = state::dir();
    let _lock = state::lock(&dir).await?;
    let path = state::path(&dir, Role::Realserver)?;
    let prev: Option<RealserverState> = state::read(&path)?;
    let prev_sysctls = prev.as_ref().map(|p| p.sysctls.clone()).unwrap_or_default();
    let wanted: Vec<sysctl::Want> = sysctl_targets(&spec)
        .into_iter()
        .flat_map(|iface| ARP_SYSCTLS.iter().map(move |(name, value)| (false, iface.clone(), *name, *value)))
        .collect();
    let sysctl_plan = sysctl::plan(&wanted, &prev_sysctls)?;
    let prev_addrs = prev.as_ref().map(|p| p.addresses.clone()).unwrap_or_default();
    let mut addrs = Vec::new();
    let mut adds = Vec::new();
    let present = rtnl.addresses(lo).await?;
    for ip in &spec.vips {
        let ours = prev_addrs.iter().any(|r| r.addr == *ip && r.created);
        let rec = AddressRecord { addr: *ip, prefix_len: host_prefix(*ip), iface: "lo".into(), created: ours };
        if present.iter().any(|(a, _)| a == ip) {
            addrs.push(rec);
        } else {
            adds.push(rec);
        }
    }
    let dels: Vec<AddressRecord> =
        prev_addrs.iter().filter(|r| r.created && !spec.vips.contains(&r.addr)).cloned().collect();

    // Write ahead: if this run dies half-way, the state already holds every
    // previous value and every address it is about to add, so stop can undo it.
    if !sysctl_plan.is_empty() || !dels.is_empty() || !adds.is_empty() {
        let sysctls = sysctl_plan.claim();
        let mut addresses = addrs.clone();
        addresses.extend(adds.iter().map(|r| AddressRecord { created: true, ..r.clone() }));
        addresses.extend(dels.iter().cloned());
        let iface = spec.iface.as_ref().map(|i| i.to_string());
        state::write(&path, &RealserverState { format: state::FORMAT, iface, addresses, sysctls })?;
    }

    // Changes. The state is written again whatever happens, so stop can undo them.
    let mut changes = 0usize;
    let res: Result<(), CliError> = async {
        sysctl::apply(&sysctl_plan, "realserver", &mut changes)?;
        for r in &dels {
            rtnl.del_address(lo, "lo", r.addr, r.prefix_len).await?;
            println!("realserver: removed {}/{} from lo", r.addr, r.prefix_len);
            changes += 1;
        }
        for r in &adds {
            rtnl.add_address(lo, "lo", r.addr, r.prefix_len).await?;
            println!("realserver: added {}/{} to lo", r.addr, r.prefix_len);
            changes += 1;
            addrs.push(AddressRecord { created: true, ..r.clone() });
        }
        Ok(())
    }
    .await;
    if res.is_err() {
        // Keep whatever may still need undoing.
        addrs.extend(dels);
    }
    let st = RealserverState {
        format: state::FORMAT,
        iface: spec.iface.as_ref().map(|i| i.to_string()),
        addresses: addrs,
        sysctls: sysctl_plan.kept(res.is_err()),
    };
    state::write(&path, &st)?;
    res?;
    if changes == 0 {
        println!("realserver: already running as configured; nothing changed");
    } else {
        println!("realserver: running ({} VIPs on lo)", spec.vips.len());
    }
    Ok(ExitCode::SUCCESS)
}

async fn stop() -> Result<ExitCode, CliError> {
    require_root("lvsctl realserver stop")?;
    let dir = state::dir();
    if !dir.exists() {
        // Never started on this host (not even a lock file): nothing to stop, nothing to create.
        println!("realserver: not running; nothing to stop");
        return Ok(ExitCode::SUCCESS);
    }
    let _lock = state::lock(&dir).await?;
    let path = state::path(&dir, Role::Realserver)?;
    let Some(mut st) = state::read::<RealserverState>(&path)? else {
        println!("realserver: not running; nothing to stop");
        return Ok(ExitCode::SUCCESS);
    };
    let (left, mut first_err) = sysctl::restore_all(&st.sysctls, "realserver");
    st.sysctls = left;
    let rtnl = Rtnl::connect()?;
    let (left, err) = rtnl.remove_created(std::mem::take(&mut st.addresses), "realserver").await;
    st.addresses = left;
    if let Some(e) = err {
        first_err.get_or_insert(e);
    }
    state::finish_stop(&path, &st, first_err)?;
    println!("realserver: stopped");
    Ok(ExitCode::SUCCESS)
}

/// `realserver status --json`.
#[derive(Debug, Serialize)]
struct RealserverStatus {
    role: &'static str,
    /// `running`, `degraded` or `not running`.
    status: &'static str,
    exit_code: u8,
    problems: Vec<String>,
    addresses: Vec<AddrStatus>,
    sysctls: Vec<sysctl::SysctlStatus>,
}

async fn status(args: StatusArgs) -> Result<ExitCode, CliError> {
    let dir = state::dir();
    let path = state::path(&dir, Role::Realserver)?;
    let Some(st) = state::read::<RealserverState>(&path)? else {
        let s = RealserverStatus {
            role: "realserver",
            status: "not running",
            exit_code: 3,
            problems: vec![],
            addresses: vec![],
            sysctls: vec![],
        };
        print_status(&s, args.json);
        return Ok(ExitCode::from(3));
    };
    let rtnl = Rtnl::connect()?;
    let mut problems = Vec::new();
    let lo = rtnl.link_index("lo").await?;
    let present = match lo {
        Some(i) => rtnl.addresses(i).await?,
        None => Vec::new(),
    };
    let mut addresses = Vec::new();
    for r in &st.addresses {
        let ok = present.iter().any(|(a, _)| *a == r.addr);
        if !ok {
            problems.push(format!("VIP {}/{} is not on lo", r.addr, r.prefix_len));
        }
        addresses.push(AddrStatus { addr: r.addr, prefix_len: r.prefix_len, iface: r.iface.clone(), present: ok });
    }
    let sysctls = sysctl::status(&st.sysctls, &mut problems);
    let (status, code) = if problems.is_empty() { ("running", 0) } else { ("degraded", 1) };
    let s = RealserverStatus { role: "realserver", status, exit_code: code, problems, addresses, sysctls };
    print_status(&s, args.json);
    Ok(ExitCode::from(code))
}

fn print_status(s: &RealserverStatus, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(s).unwrap_or_default());
        return;
    }
    let mut out = String::new();
    match s.problems.len() {
        0 => out.push_str(&format!("realserver: {}\n", s.status)),
        n => {
            out.push_str(&format!("realserver: {} ({n} problem{})\n", s.status, if n == 1 { "" } else { "s" }));
            for p in &s.problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
    }
    for a in &s.addresses {
        let what = if a.present { "present" } else { "MISSING" };
        out.push_str(&format!("VIP {}/{} on {}: {what}\n", a.addr, a.prefix_len, a.iface));
    }
    for c in &s.sysctls {
        out.push_str(&c.line());
        out.push('\n');
    }
    print!("{out}");
}

fn demo_serve(name: &str, port: u16) -> Result<ExitCode, CliError> {
    let l = TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
        .or_else(|_| TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))))
        .map_err(|e| CliError::failure(format!("cannot listen on port {port}: {e}")))?;
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        c.set_read_timeout(Some(Duration::from_millis(200))).ok();
        let mut buf = [0u8; 64];
        let _ = c.read(&mut buf);
        let _ = c.write_all(format!("{name}\n").as_bytes());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_flags_and_targets() {
        let a = StartArgs { vips: vec!["10.19.70.166".into()], iface: Some("enp1s0".into()), ..Default::default() };
        let s = start_spec(&a).unwrap();
        assert_eq!(sysctl_targets(&s), ["all", "lo", "enp1s0"]);
        let a = StartArgs { vips: vec!["2001:db8::1".into()], ..Default::default() };
        assert!(sysctl_targets(&start_spec(&a).unwrap()).is_empty());
    }

    #[test]
    fn bad_flags() {
        for (a, want) in [
            (StartArgs { vips: vec!["10.19.70".into()], ..Default::default() }, "malformed VIP"),
            (StartArgs::default(), "no VIP"),
            (StartArgs { vips: vec!["1.2.3.4".into()], iface: Some("x y".into()), ..Default::default() }, "interface"),
            (StartArgs { vips: vec!["1.2.3.4".into()], config: Some("/c".into()), ..Default::default() }, "--config"),
        ] {
            let e = start_spec(&a).unwrap_err();
            assert_eq!(e.code, 2);
            assert!(e.msg.contains(want), "{} lacks {want}", e.msg);
        }
    }
}
