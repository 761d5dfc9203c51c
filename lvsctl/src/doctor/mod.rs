//! `lvsctl doctor [director|realserver]`: look for what makes LVS fail
//! silently on this host and say, for each problem, what is wrong, why it
//! matters and the command that fixes it.
//!
//! What the host is meant to be comes from the state `lvsctl director start`
//! and `lvsctl realserver start` recorded for this network namespace, from
//! `--config`, from `--vip`/`--iface`/`--port`/`--tun`, from the VIPs on
//! `lo` (a real server's) and from the IPVS table (a director's). The checks
//! themselves are [`rules::check`], a pure function of what [`observe`] read
//! (plus, for the director, an ARP probe per VIP: [`arp`]).
//!
//! Exit status: 0 when nothing is wrong, 1 when something is (an error or a
//! warning), 2 for bad usage, 4 when the host cannot be read (not permitted).

mod arp;
mod observe;
pub(crate) mod rules;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ipvs::{Forward, Protocol, ServiceKey};
use serde::Serialize;

use crate::CliError;
use lvsctl::config::Config;
use lvsctl::state::{self, DirectorState, RealserverState, Role};
use rules::{DirectorIntent, Finding, Intent, Port, RealserverIntent};

/// Which role to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RoleArg {
    /// The director: VIPs, forwarding, the net.ipv4.vs sysctls against the IPVS table.
    Director,
    /// The real server: VIPs on lo, ARP and rp_filter sysctls, listeners, the tunnel.
    Realserver,
}

// Arguments of `lvsctl doctor`.
#[derive(Debug, clap::Args)]
pub(crate) struct DoctorArgs {
    /// Check only this role (default: both).
    role: Option<RoleArg>,
    /// TOML configuration (see docs/configuration.md): its VIPs, interfaces, ports and forwarding methods.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A VIP this host serves (repeatable); added to those of the state, the config and lo.
    #[arg(long = "vip", value_name = "ADDR")]
    vips: Vec<IpAddr>,
    /// The real server's interface facing the clients and the director (default: every
    /// interface with an IPv4 address that does ARP).
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// A port the service listens on at each VIP: PORT (TCP) or PORT/udp (repeatable).
    #[arg(long = "port", value_name = "PORT[/udp]", value_parser = parse_port)]
    ports: Vec<Port>,
    /// The real server receives its traffic through an IPIP tunnel (LVS-TUN).
    #[arg(long)]
    tun: bool,
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_port(s: &str) -> Result<Port, String> {
    let (p, proto) = match s.split_once('/') {
        None => (s, Protocol::Tcp),
        Some((p, "tcp")) => (p, Protocol::Tcp),
        Some((p, "udp")) => (p, Protocol::Udp),
        Some(_) => return Err("expected PORT, PORT/tcp or PORT/udp".into()),
    };
    match p.parse::<u16>() {
        Ok(port) if port > 0 => Ok(Port { proto, port }),
        _ => Err(format!("{p:?} is not a port (1..65535)")),
    }
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// A service a config or state describes: its VIP, its key, and whether a
/// real server of it is reached through a tunnel.
type KnownService = (IpAddr, ServiceKey, bool);

/// What the host is meant to be, from the flags, the config and the state.
fn intent(a: &DoctorArgs) -> Result<Intent, CliError> {
    let mut rs = RealserverIntent { iface: a.iface.clone(), tun: a.tun, ..Default::default() };
    let mut dir = DirectorIntent::default();
    for v in &a.vips {
        push_unique(&mut rs.vips, *v);
    }
    // Ports and forwarding of every VIP a config or state describes.
    let mut services: Vec<KnownService> = Vec::new();
    if let Some(path) = &a.config {
        from_config(path, &mut rs, &mut dir, &mut services)?;
    }
    from_state(&mut rs, &mut dir, &mut services)?;
    ports_of_services(&mut rs, &services);
    for p in &a.ports {
        push_unique(&mut rs.ports, *p);
    }
    Ok(Intent {
        realserver: (a.role != Some(RoleArg::Director)).then_some(rs),
        director: (a.role != Some(RoleArg::Realserver)).then_some(dir),
    })
}

/// Add what the config at `path` says of each role: the director's VIPs and
/// services, the real server's VIPs and interface (unless one is given).
fn from_config(
    path: &std::path::Path,
    rs: &mut RealserverIntent,
    dir: &mut DirectorIntent,
    services: &mut Vec<KnownService>,
) -> Result<(), CliError> {
    let c = Config::load(path).map_err(|e| CliError::usage(e.0))?;
    if c.director.is_some() {
        let d = c.director().map_err(|e| CliError::usage(e.0))?;
        for (vip, iface) in d.vips() {
            push_unique(&mut dir.vips, (vip, Some(iface.to_string())));
        }
        for s in &d.services {
            let tun = s.desired.destinations.iter().any(|d| matches!(d.forward, Forward::Tunnel(_)));
            services.push((s.vip, s.desired.service.key, tun));
        }
    }
    if c.realserver.is_some() {
        let r = c.realserver().map_err(|e| CliError::usage(e.0))?;
        for v in r.vips {
            push_unique(&mut rs.vips, v);
        }
        if rs.iface.is_none() {
            rs.iface = r.iface.map(|i| i.to_string());
        }
    }
    Ok(())
}

/// Add what `lvsctl realserver start` and `lvsctl director start` recorded
/// for this network namespace.
fn from_state(
    rs: &mut RealserverIntent,
    dir: &mut DirectorIntent,
    services: &mut Vec<KnownService>,
) -> Result<(), CliError> {
    let dir_path = state::dir();
    if let Some(st) = state::read::<RealserverState>(&state::path(&dir_path, Role::Realserver)?)? {
        for r in &st.addresses {
            push_unique(&mut rs.vips, r.addr);
        }
        if rs.iface.is_none() {
            rs.iface = st.iface;
        }
    }
    if let Some(st) = state::read::<DirectorState>(&state::path(&dir_path, Role::Director)?)? {
        for r in &st.addresses {
            push_unique(&mut dir.vips, (r.addr, Some(r.iface.clone())));
        }
        for s in &st.services {
            if let ServiceKey::Inet { addr, .. } = s.service.key {
                let tun = s.destinations.iter().any(|d| matches!(d.forward, Forward::Tunnel(_)));
                services.push((addr.ip(), s.service.key, tun));
            }
        }
    }
    Ok(())
}

/// The ports of the configured services whose VIP this real server serves,
/// and the tunnel when one of them forwards through it.
fn ports_of_services(rs: &mut RealserverIntent, services: &[KnownService]) {
    for (vip, key, tun) in services {
        if !rs.vips.contains(vip) {
            continue;
        }
        if let ServiceKey::Inet { protocol: proto @ (Protocol::Tcp | Protocol::Udp), addr } = key {
            if addr.port() != 0 {
                push_unique(&mut rs.ports, Port { proto: *proto, port: addr.port() });
            }
        }
        rs.tun |= *tun;
    }
}

/// How long to wait for answers to an ARP probe.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Probe each IPv4 VIP of the director (known or in the table) that is on an
/// interface doing ARP: does another host answer for it?
fn probe_vips(host: &rules::Host, d: &DirectorIntent, hw: &observe::Hardware) -> Vec<rules::ArpProbe> {
    let mut vips: Vec<IpAddr> = d.vips.iter().map(|(v, _)| *v).collect();
    if let Some(i) = &host.ipvs {
        for (s, _) in &i.table {
            if let ServiceKey::Inet { addr, .. } = s.service.key {
                push_unique(&mut vips, addr.ip());
            }
        }
    }
    let mut out = Vec::new();
    for vip in vips {
        let IpAddr::V4(v4) = vip else { continue };
        for a in host.addrs.iter().filter(|a| a.ip == vip) {
            let Some(link) = host.links.iter().find(|l| l.name == a.iface) else { continue };
            if !link.up || link.noarp {
                continue;
            }
            let Some((index, Some(mac))) = hw.get(&a.iface) else { continue };
            let answers = arp::probe(*index, *mac, v4, PROBE_WAIT)
                .map(|macs| macs.iter().map(arp::mac_text).collect())
                .map_err(|e| e.to_string());
            out.push(rules::ArpProbe { vip, iface: a.iface.clone(), answers });
        }
    }
    out
}

/// The JSON form.
#[derive(Debug, Serialize)]
struct Output<'a> {
    ok: bool,
    findings: &'a [Finding],
    notes: &'a [String],
}

pub(crate) async fn run(a: DoctorArgs) -> Result<ExitCode, CliError> {
    let mut want = intent(&a)?;
    let (mut host, hw) = observe::observe().await?;
    if let Some(d) = &want.director {
        host.arp = probe_vips(&host, d, &hw);
    }
    // A real server's VIPs are on lo: every address there but loopback ones.
    if let Some(rs) = &mut want.realserver {
        for ad in host.addrs.iter().filter(|x| x.iface == "lo" && !x.ip.is_loopback()) {
            push_unique(&mut rs.vips, ad.ip);
        }
        // The director's own services for those VIPs: their ports too, when
        // one of the real servers is this host.
        if let Some(i) = &host.ipvs {
            for (s, ds) in &i.table {
                let ServiceKey::Inet { protocol: proto @ (Protocol::Tcp | Protocol::Udp), addr } = s.service.key else {
                    continue;
                };
                let local = ds.iter().any(|d| host.addrs.iter().any(|x| x.ip == d.destination.addr.ip()));
                if rs.vips.contains(&addr.ip()) && local && addr.port() != 0 {
                    push_unique(&mut rs.ports, Port { proto, port: addr.port() });
                }
            }
        }
    }
    let report = rules::check(&host, &want);
    let ok = report.findings.is_empty();
    if a.json {
        let o = Output { ok, findings: &report.findings, notes: &report.notes };
        let s = serde_json::to_string_pretty(&o).map_err(|e| CliError::failure(format!("encoding JSON: {e}")))?;
        println!("{s}");
    } else {
        print!("{}", text(&report));
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The human form: notes, then each finding with its why and fix.
fn text(r: &rules::Report) -> String {
    let mut s = String::new();
    for n in &r.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    for f in &r.findings {
        s.push_str(&format!("\n{} [{}] {}: {}\n", f.severity.name(), f.id, f.role, f.what));
        s.push_str(&format!("  why: {}\n", f.why));
        s.push_str(&format!("  fix: {}\n", f.fix));
    }
    if r.findings.is_empty() {
        s.push_str("no problems found\n");
    } else {
        let errors = r.findings.iter().filter(|f| f.severity == rules::Severity::Error).count();
        s.push_str(&format!(
            "\n{} problem(s): {errors} error(s), {} warning(s)\n",
            r.findings.len(),
            r.findings.len() - errors
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse() {
        assert_eq!(parse_port("15858").unwrap(), Port { proto: Protocol::Tcp, port: 15858 });
        assert_eq!(parse_port("53/udp").unwrap(), Port { proto: Protocol::Udp, port: 53 });
        assert!(parse_port("0").is_err());
        assert!(parse_port("80/sctp").is_err());
    }

    #[test]
    fn text_says_what_why_and_fix() {
        let r = rules::Report {
            findings: vec![Finding {
                id: "rs-arp-ignore",
                severity: rules::Severity::Error,
                role: "realserver",
                what: "arp_ignore on eth0 is 0".into(),
                why: "because".into(),
                fix: "sysctl -w net.ipv4.conf.eth0.arp_ignore=1".into(),
            }],
            notes: vec!["realserver: VIPs 10.0.0.1".into()],
        };
        let t = text(&r);
        assert!(
            t.contains("error [rs-arp-ignore] realserver: arp_ignore on eth0 is 0\n  why: because\n  fix: sysctl"),
            "{t}"
        );
        assert!(t.ends_with("1 problem(s): 1 error(s), 0 warning(s)\n"), "{t}");
        assert!(text(&rules::Report::default()).ends_with("no problems found\n"));
    }
}
