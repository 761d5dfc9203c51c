//! The checks of `lvsctl doctor`: a pure function from what was observed on
//! a host ([`Host`]) and what the host is meant to be ([`Intent`]) to the
//! problems found ([`Finding`]). Nothing here touches the system, so every
//! rule is tested without root.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipvs::{Forward, Protocol, Scheduler, ServiceKey};
use serde::Serialize;

/// An interface as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    /// Its name.
    pub(crate) name: String,
    /// Administratively up (`IFF_UP`).
    pub(crate) up: bool,
    /// Its MTU.
    pub(crate) mtu: u32,
    /// It does not do ARP (`IFF_NOARP`: lo, tunnels).
    pub(crate) noarp: bool,
}

/// An address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Addr {
    /// The interface.
    pub(crate) iface: String,
    /// The address.
    pub(crate) ip: IpAddr,
    /// Its prefix length.
    pub(crate) prefix: u8,
}

/// A listening socket: a TCP socket in LISTEN, or a bound UDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listener {
    /// TCP or UDP.
    pub(crate) proto: Protocol,
    /// The local address (0.0.0.0 or :: for every address).
    pub(crate) ip: IpAddr,
    /// The local port.
    pub(crate) port: u16,
}

/// The IPVS side of the host, when IPVS is there.
#[derive(Debug, Clone, Default)]
pub(crate) struct IpvsView {
    /// The table (services and real servers).
    pub(crate) table: ipvs::Table,
    /// A backup sync daemon runs.
    pub(crate) backup_daemon: bool,
    /// A sync daemon (master or backup) runs.
    pub(crate) any_daemon: bool,
}

/// An ARP probe for a director's VIP from the interface it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArpProbe {
    /// The VIP asked for.
    pub(crate) vip: IpAddr,
    /// The interface the probe went out of.
    pub(crate) iface: String,
    /// The MAC addresses of the other hosts that answered (`Err`: the probe
    /// could not be sent, with why).
    pub(crate) answers: Result<Vec<String>, String>,
}

/// Everything the rules look at.
#[derive(Debug, Clone, Default)]
pub(crate) struct Host {
    /// Sysctl values by their path under `/proc/sys` (`net/ipv4/conf/all/arp_ignore`).
    pub(crate) sysctls: BTreeMap<String, String>,
    /// The interfaces.
    pub(crate) links: Vec<Link>,
    /// The addresses of every interface.
    pub(crate) addrs: Vec<Addr>,
    /// Listening sockets.
    pub(crate) listeners: Vec<Listener>,
    /// IPVS (`None`: not available, e.g. the module is not loaded).
    pub(crate) ipvs: Option<IpvsView>,
    /// ARP probes for the director's VIPs.
    pub(crate) arp: Vec<ArpProbe>,
    /// Why the IPVS table could not be read, when it could not.
    pub(crate) ipvs_error: Option<String>,
}

/// A service port the real server must answer on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Port {
    /// TCP or UDP (SCTP is not checked).
    pub(crate) proto: Protocol,
    /// The port.
    pub(crate) port: u16,
}

/// What the real-server role of the host is meant to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RealserverIntent {
    /// The VIPs it accepts traffic for.
    pub(crate) vips: Vec<IpAddr>,
    /// The interface facing the clients and the director, when known
    /// (otherwise every interface that does ARP and has an IPv4 address).
    pub(crate) iface: Option<String>,
    /// The ports the service listens on (on every VIP).
    pub(crate) ports: Vec<Port>,
    /// Packets come through an IPIP tunnel (LVS-TUN) instead of DR.
    pub(crate) tun: bool,
}

/// What the director role of the host is meant to do (the VIPs of the IPVS
/// table are added to these).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DirectorIntent {
    /// VIPs with the interface they go on, when known.
    pub(crate) vips: Vec<(IpAddr, Option<String>)>,
}

/// The roles to check and what each is meant to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Intent {
    /// Check the real-server role.
    pub(crate) realserver: Option<RealserverIntent>,
    /// Check the director role.
    pub(crate) director: Option<DirectorIntent>,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Severity {
    /// Traffic is lost or goes where it should not, now.
    Error,
    /// Traffic is lost in some situations (failover, draining, a full table).
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem: what is wrong, why it matters, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Finding {
    /// A stable identifier (`rs-arp-ignore`, `dir-forwarding`, ...).
    pub(crate) id: &'static str,
    /// How bad it is.
    pub(crate) severity: Severity,
    /// `director` or `realserver`.
    pub(crate) role: &'static str,
    /// What is wrong, with the values seen.
    pub(crate) what: String,
    /// Why it matters.
    pub(crate) why: String,
    /// Shell commands that fix it.
    pub(crate) fix: String,
}

/// Everything the rules found, and what they looked at.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Report {
    /// The problems.
    pub(crate) findings: Vec<Finding>,
    /// What was checked (and what could not be), one line each.
    pub(crate) notes: Vec<String>,
}

const RS: &str = "realserver";
const DIR: &str = "director";

/// `net/ipv4/conf/<iface>/<name>`.
pub(crate) fn conf_key(iface: &str, name: &str) -> String {
    format!("net/ipv4/conf/{iface}/{name}")
}

/// The `sysctl -w` spelling of a `/proc/sys` path: slashes become dots, and
/// dots in a component (an interface like `eth0.100`) become slashes, as
/// sysctl(8) reads them.
pub(crate) fn sysctl_name(key: &str) -> String {
    key.split('/').map(|c| c.replace('.', "/")).collect::<Vec<_>>().join(".")
}

fn set_cmd(key: &str, value: &str) -> String {
    format!("sysctl -w {}={value}", sysctl_name(key))
}

impl Host {
    fn num(&self, key: &str) -> Option<i64> {
        self.sysctls.get(key).and_then(|v| v.trim().parse().ok())
    }

    /// A per-interface value the kernel reads as the larger of `all` and the
    /// interface (`arp_ignore`, `arp_announce`, `rp_filter`), with both parts.
    fn conf_max(&self, iface: &str, name: &str) -> Option<(i64, i64, i64)> {
        let all = self.num(&conf_key("all", name))?;
        let one = self.num(&conf_key(iface, name))?;
        Some((all.max(one), all, one))
    }

    fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    fn addrs_of(&self, ip: IpAddr) -> impl Iterator<Item = &Addr> {
        self.addrs.iter().filter(move |a| a.ip == ip)
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        self.addrs.iter().any(|a| a.ip == ip)
    }

    /// The interfaces ARP requests for a VIP can arrive on: up, doing ARP,
    /// with an IPv4 address.
    fn arp_ifaces(&self) -> Vec<String> {
        self.links
            .iter()
            .filter(|l| l.up && !l.noarp && l.name != "lo")
            .filter(|l| self.addrs.iter().any(|a| a.iface == l.name && a.ip.is_ipv4()))
            .map(|l| l.name.clone())
            .collect()
    }

    /// Something answers on `ip:port`: a listener on that address, or on the
    /// wildcard of its family (or `::`, which takes IPv4 too unless the
    /// socket is IPv6-only; /proc does not tell, and the default is dual).
    fn listens(&self, proto: Protocol, ip: IpAddr, port: u16) -> bool {
        self.listeners.iter().any(|l| {
            l.proto == proto
                && l.port == port
                && (l.ip == ip || l.ip.is_unspecified() && (l.ip.is_ipv6() || ip.is_ipv4()))
        })
    }
}

/// Run every rule of the roles in `intent` on `host`.
pub(crate) fn check(host: &Host, intent: &Intent) -> Report {
    let mut r = Report::default();
    if let Some(rs) = &intent.realserver {
        realserver(host, rs, &mut r);
    }
    if let Some(d) = &intent.director {
        director(host, d, &mut r);
    }
    r.findings.sort_by_key(|f| f.severity);
    r
}

fn realserver(host: &Host, rs: &RealserverIntent, r: &mut Report) {
    if rs.vips.is_empty() {
        r.notes.push(
            "realserver: no VIP known (none on lo, no state from `lvsctl realserver start`, no --vip or --config): \
             nothing checked"
                .into(),
        );
        return;
    }
    let vips: Vec<String> = rs.vips.iter().map(|v| v.to_string()).collect();
    r.notes.push(format!("realserver: VIPs {}{}", vips.join(", "), if rs.tun { " (LVS-TUN)" } else { "" }));

    for &vip in &rs.vips {
        r.findings.extend(rs_vip(host, vip));
        r.findings.extend(rs_listeners(host, vip, &rs.ports));
    }

    // ARP: only IPv4 VIPs (IPv6 neighbour discovery has no such sysctls).
    if rs.vips.iter().any(|v| v.is_ipv4()) {
        let ifaces = rs_ifaces(host, rs);
        for i in &ifaces {
            arp(host, i, r);
        }
        rp_filter_dr(host, rs, &ifaces, r);
    }
    if rs.tun {
        tun(host, rs, r);
    }
}

/// The interfaces facing the clients and the director: the one given, or
/// every interface that does ARP.
fn rs_ifaces(host: &Host, rs: &RealserverIntent) -> Vec<String> {
    match &rs.iface {
        Some(i) => vec![i.clone()],
        None => host.arp_ifaces(),
    }
}

/// The real server's VIP `vip` is on the host, and on lo with a full-length
/// prefix.
fn rs_vip(host: &Host, vip: IpAddr) -> Vec<Finding> {
    let mut out = Vec::new();
    let on: Vec<&Addr> = host.addrs_of(vip).collect();
    let full = ipvs_prefix(vip);
    if on.is_empty() {
        out.push(Finding {
            id: "rs-vip-missing",
            severity: Severity::Error,
            role: RS,
            what: format!("VIP {vip} is not on lo (nor on any interface)"),
            why: "with DR and TUN the director forwards packets still addressed to the VIP: a host that does \
                  not own the VIP drops them"
                .into(),
            fix: format!("ip addr add {vip}/{full} dev lo   # or: lvsctl realserver start --vip {vip}"),
        });
    }
    for a in on.iter().filter(|a| a.iface == "lo" && a.prefix != full) {
        out.push(Finding {
            id: "rs-vip-prefix",
            severity: Severity::Error,
            role: RS,
            what: format!("VIP {vip} is on lo as /{} instead of /{full}", a.prefix),
            why: "an address on lo with a shorter prefix makes the whole subnet local: the host answers for \
                  every address in it and can no longer reach the real hosts there"
                .into(),
            fix: format!("ip addr del {vip}/{} dev lo && ip addr add {vip}/{full} dev lo", a.prefix),
        });
    }
    out
}

/// Something listens on each of `ports` at `vip`.
fn rs_listeners(host: &Host, vip: IpAddr, ports: &[Port]) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in ports {
        if !host.listens(p.proto, vip, p.port) {
            let any = if vip.is_ipv4() { "0.0.0.0" } else { "[::]" };
            let addr = if vip.is_ipv4() { vip.to_string() } else { format!("[{vip}]") };
            out.push(Finding {
                id: "rs-no-listener",
                severity: Severity::Error,
                role: RS,
                what: format!("nothing listens on {} {addr}:{} (nor on {any}:{})", p.proto.name(), p.port, p.port),
                why: "the packets arrive addressed to the VIP, not to the real server's own address: a service \
                      bound only to the host's address refuses them (the client sees a reset)"
                    .into(),
                fix: format!("make the service listen on {addr}:{} or {any}:{}", p.port, p.port),
            });
        }
    }
    out
}

/// Whether `want` is met by the effective value `v` of `name`.
fn arp_ok(name: &str, v: i64) -> bool {
    match name {
        // 1: answer only for addresses of the interface asked on; 2: also
        // only from the same subnet; 8: never. 3 still answers for the VIP
        // (it has global scope on lo); 4..7 are reserved and answer.
        "arp_ignore" => matches!(v, 1 | 2 | 8),
        // 2: always announce the best local address of the outgoing interface.
        _ => v >= 2,
    }
}

fn arp(host: &Host, iface: &str, r: &mut Report) {
    for (name, want, why) in [
        (
            "arp_ignore",
            "1",
            "with arp_ignore below 1 the real server answers ARP requests for the VIP it holds on lo: the \
             router then sends clients' packets straight to it, bypassing the director (or to whichever host \
             answered last)",
        ),
        (
            "arp_announce",
            "2",
            "with arp_announce below 2 the real server may use the VIP as the source of its own ARP requests: \
             the neighbours then learn the VIP at this host's MAC and bypass the director",
        ),
    ] {
        let Some((eff, all, one)) = host.conf_max(iface, name) else {
            if host.link(iface).is_none() {
                r.notes.push(format!("realserver: interface {iface} not found: its ARP sysctls were not checked"));
            }
            continue;
        };
        if arp_ok(name, eff) {
            continue;
        }
        let mut fix = Vec::new();
        // The kernel uses the larger of all and the interface: a bad `all`
        // (too high for arp_ignore 3..7) must come down too.
        for (i, v) in [("all", all), (iface, one)] {
            if !arp_ok(name, v) || (name == "arp_ignore" && v > 2 && v != 8) {
                fix.push(set_cmd(&conf_key(i, name), want));
            }
        }
        if fix.is_empty() {
            fix.push(set_cmd(&conf_key(iface, name), want));
        }
        r.findings.push(Finding {
            id: if name == "arp_ignore" { "rs-arp-ignore" } else { "rs-arp-announce" },
            severity: Severity::Error,
            role: RS,
            what: format!("{name} on {iface} is {eff} (the larger of all={all} and {iface}={one}), want {want}"),
            why: why.into(),
            fix: fix.join("; "),
        });
    }
}

fn rp_filter_dr(host: &Host, rs: &RealserverIntent, ifaces: &[String], r: &mut Report) {
    // A single-homed real server passes strict reverse-path filtering: the
    // route back to any client leaves through the interface the packet came
    // in on. With several interfaces the director's packets may come in on
    // one while the route to the client leaves through another.
    if rs.tun || host.arp_ifaces().len() < 2 {
        return;
    }
    for i in ifaces {
        let Some((eff, all, one)) = host.conf_max(i, "rp_filter") else { continue };
        if eff != 1 {
            continue;
        }
        let mut fix = vec![set_cmd(&conf_key(i, "rp_filter"), "2")];
        if all == 1 && one != 1 {
            fix = vec![set_cmd(&conf_key("all", "rp_filter"), "2")];
        }
        r.findings.push(Finding {
            id: "rs-rp-filter",
            severity: Severity::Warning,
            role: RS,
            what: format!(
                "strict rp_filter on {i} (the larger of all={all} and {i}={one} is 1) on a host with several interfaces"
            ),
            why: "strict reverse-path filtering drops a packet when the route back to its source leaves through \
                  another interface: a client packet the director forwards in on this interface while the route \
                  to the client (or a packet whose source is the VIP) goes elsewhere is dropped without a trace; \
                  loose mode (2) only asks that the source be routable"
                .into(),
            fix: fix.join("; "),
        });
    }
}

/// The checks of an LVS-TUN real server: the tunnel is up, does not filter
/// what it unwraps, and the links leave room for the IPIP header.
fn tun(host: &Host, rs: &RealserverIntent, r: &mut Report) {
    r.findings.extend(tun_down(host));
    r.findings.extend(tun_rp_filter(host));
    r.findings.extend(tun_mtu(host, rs));
}

/// tunl0 is missing or down.
fn tun_down(host: &Host) -> Option<Finding> {
    match host.link("tunl0") {
        Some(l) if l.up => None,
        Some(_) | None => {
            let missing = host.link("tunl0").is_none();
            Some(Finding {
                id: "rs-tun-down",
                severity: Severity::Error,
                role: RS,
                what: if missing { "there is no tunl0 (ipip not loaded)".into() } else { "tunl0 is down".into() },
                why: "LVS-TUN wraps each client packet in IPIP to the real server; without tunl0 up the kernel \
                      cannot unwrap it and drops it"
                    .into(),
                fix: if missing {
                    "modprobe ipip && ip link set tunl0 up".into()
                } else {
                    "ip link set tunl0 up".into()
                },
            })
        }
    }
}

/// Strict reverse-path filtering on tunl0.
fn tun_rp_filter(host: &Host) -> Option<Finding> {
    let (eff, all, one) = host.conf_max("tunl0", "rp_filter")?;
    if eff != 1 {
        return None;
    }
    let mut fix = vec![set_cmd(&conf_key("tunl0", "rp_filter"), "0")];
    if all == 1 {
        fix.insert(0, set_cmd(&conf_key("all", "rp_filter"), "2"));
    }
    Some(Finding {
        id: "rs-tun-rp-filter",
        severity: Severity::Error,
        role: RS,
        what: format!("strict rp_filter on tunl0 (the larger of all={all} and tunl0={one} is 1)"),
        why: "an unwrapped packet arrives on tunl0 but the route back to the client leaves through the real \
              interface: strict reverse-path filtering drops every one of them"
            .into(),
        fix: fix.join("; "),
    })
}

/// The largest packet a client sends is what this host's MSS allows: the
/// interface's MTU. The director adds a 20-byte IPIP header, and the
/// result no longer fits a link of the same MTU.
fn tun_mtu(host: &Host, rs: &RealserverIntent) -> Vec<Finding> {
    let mut out = Vec::new();
    for i in rs_ifaces(host, rs) {
        let Some(l) = host.link(&i) else { continue };
        if l.mtu > 1480 && l.mtu <= 1500 {
            let to = l.mtu - 20;
            out.push(Finding {
                id: "rs-tun-mtu",
                severity: Severity::Warning,
                role: RS,
                what: format!(
                    "{i} has MTU {}: clients may send {}-byte packets, {} bytes once tunnelled",
                    l.mtu,
                    l.mtu,
                    l.mtu + 20
                ),
                why: "the director's IPIP header makes full-size packets too big for the link to this real \
                      server: they need fragmentation or an ICMP the client's path may filter, and large \
                      transfers stall"
                    .into(),
                fix: format!(
                    "ip link set dev {i} mtu {to}   # or clamp the MSS: iptables -t mangle -A OUTPUT -p tcp \
                     --tcp-flags SYN,RST SYN -j TCPMSS --set-mss {}",
                    to - 40
                ),
            });
        }
    }
    out
}

fn ipvs_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn key_vip(k: &ServiceKey) -> Option<IpAddr> {
    match k {
        ServiceKey::Inet { addr, .. } => Some(addr.ip()),
        ServiceKey::Fwmark { .. } => None,
    }
}

/// The services of an IPVS table, each with its real servers.
type Services = [(ipvs::ServiceEntry, Vec<ipvs::DestinationEntry>)];

fn director(host: &Host, d: &DirectorIntent, r: &mut Report) {
    let empty = Vec::new();
    let table = host.ipvs.as_ref().map_or(&empty, |i| &i.table);
    let vips = director_vips(d, table);
    if host.ipvs.is_none() {
        let why = host.ipvs_error.as_deref().unwrap_or("IPVS is not available");
        r.notes.push(format!("director: the IPVS table was not checked: {why}"));
    }
    if vips.is_empty() && table.is_empty() {
        r.notes.push(
            "director: no VIP known and no virtual service in the table (no state from `lvsctl director start`, \
             no --config): nothing checked"
                .into(),
        );
        return;
    }
    r.notes.push(format!(
        "director: {} virtual service(s), VIPs {}",
        table.len(),
        vips.iter().map(|(v, _)| v.to_string()).collect::<Vec<_>>().join(", ")
    ));

    for (vip, iface) in &vips {
        r.findings.extend(dir_vip(host, *vip, iface.as_deref()));
    }
    duplicate_vips(host, r);
    r.findings.extend(forwarding(host, table));
    r.findings.extend(conntrack_full(host));
    r.findings.extend(expire_nodest_conn(host, table));
    r.findings.extend(expire_quiescent_template(host, table));
    r.findings.extend(sloppy_tcp(host, table));
    r.findings.extend(backup_only(host, table));
}

/// The director's VIPs: those of the intent, then those of the table's
/// services not among them (with no known interface).
fn director_vips(d: &DirectorIntent, table: &Services) -> Vec<(IpAddr, Option<String>)> {
    let mut vips: Vec<(IpAddr, Option<String>)> = d.vips.clone();
    for (s, _) in table {
        if let Some(v) = key_vip(&s.service.key) {
            if !vips.iter().any(|(x, _)| *x == v) {
                vips.push((v, None));
            }
        }
    }
    vips
}

/// A `net/ipv4/vs/<name>` sysctl.
fn vs_sysctl(host: &Host, name: &str) -> Option<i64> {
    host.num(&format!("net/ipv4/vs/{name}"))
}

/// The director's VIP `vip` (meant to be on `iface`) is on the host, with a
/// full-length prefix.
fn dir_vip(host: &Host, vip: IpAddr, iface: Option<&str>) -> Vec<Finding> {
    let mut out = Vec::new();
    let on: Vec<&Addr> = host.addrs_of(vip).collect();
    let full = ipvs_prefix(vip);
    if on.is_empty() {
        let dev = iface.unwrap_or("IF");
        out.push(Finding {
            id: "dir-vip-missing",
            severity: Severity::Error,
            role: DIR,
            what: format!("VIP {vip} is on no interface"),
            why: "IPVS sees only packets addressed to a local address: without the VIP on the host, clients' \
                  packets are never scheduled"
                .into(),
            fix: format!("ip addr add {vip}/{full} dev {dev}"),
        });
    }
    for a in on.iter().filter(|a| a.iface != "lo" && a.prefix != full) {
        out.push(Finding {
            id: "dir-vip-prefix",
            severity: Severity::Warning,
            role: DIR,
            what: format!("VIP {vip} is on {} as /{} instead of /{full}", a.iface, a.prefix),
            why: "a VIP with a shorter prefix adds a route for its whole subnet through this interface (and can \
                  become the primary address there, the source of the director's own traffic; removing it \
                  then removes the secondaries too)"
                .into(),
            fix: format!("ip addr del {vip}/{} dev {} && ip addr add {vip}/{full} dev {}", a.prefix, a.iface, a.iface),
        });
    }
    out
}

/// Another host answered an ARP probe for a VIP; a probe that could not be
/// sent is a note.
fn duplicate_vips(host: &Host, r: &mut Report) {
    for p in &host.arp {
        match &p.answers {
            Err(e) => r.notes.push(format!("director: duplicate {} not checked on {}: {e}", p.vip, p.iface)),
            Ok(macs) if macs.is_empty() => {}
            Ok(macs) => r.findings.push(Finding {
                id: "dir-duplicate-vip",
                severity: Severity::Error,
                role: DIR,
                what: format!("another host answers ARP for VIP {} on {}: {}", p.vip, p.iface, macs.join(", ")),
                why: "two hosts claim the VIP: the router sends the clients' packets to whichever answered last, \
                      so connections go around the director or break when the answer changes"
                    .into(),
                fix: format!(
                    "find the host with {} (ip neigh, the switch's MAC table) and remove the VIP there; a real \
                     server keeps it on lo with arp_ignore=1 (lvsctl realserver start --vip {})",
                    macs.join(" or "),
                    p.vip
                ),
            }),
        }
    }
}

/// A NAT service of either family with forwarding off for that family.
fn forwarding(host: &Host, table: &Services) -> Vec<Finding> {
    let nat = |family| {
        table.iter().any(|(s, ds)| {
            s.service.key.family() == family && ds.iter().any(|d| d.destination.forward == Forward::Masq)
        })
    };
    let mut out = Vec::new();
    for (family, key) in
        [(ipvs::Family::Inet, "net/ipv4/conf/all/forwarding"), (ipvs::Family::Inet6, "net/ipv6/conf/all/forwarding")]
    {
        if nat(family) && host.num(key) == Some(0) {
            out.push(Finding {
                id: "dir-forwarding",
                severity: Severity::Error,
                role: DIR,
                what: format!("a NAT (masquerading) service exists but {} is 0", sysctl_name(key)),
                why: "with NAT the real servers' replies come back through the director, which must forward them \
                      to the client: without forwarding they are dropped"
                    .into(),
                fix: set_cmd(key, "1"),
            });
        }
    }
    out
}

/// With `vs.conntrack` on, a netfilter conntrack table at 90% or more.
fn conntrack_full(host: &Host) -> Option<Finding> {
    if vs_sysctl(host, "conntrack") != Some(1) {
        return None;
    }
    let max = host.num("net/netfilter/nf_conntrack_max")?;
    let count = host.num("net/netfilter/nf_conntrack_count")?;
    if max <= 0 || count * 10 < max * 9 {
        return None;
    }
    Some(Finding {
        id: "dir-conntrack-full",
        severity: Severity::Error,
        role: DIR,
        what: format!("net.ipv4.vs.conntrack is 1 and the conntrack table is {count} of nf_conntrack_max {max}"),
        why: "with vs.conntrack every IPVS connection also takes a netfilter conntrack entry: when the table is \
              full the kernel drops new connections (\"nf_conntrack: table full\")"
            .into(),
        fix: format!(
            "sysctl -w net.netfilter.nf_conntrack_max={}   # or, without stateful firewall rules on this traffic: \
             sysctl -w net.ipv4.vs.conntrack=0",
            (max * 2).max(262144)
        ),
    })
}

/// Services exist and the connections of a removed real server are kept.
fn expire_nodest_conn(host: &Host, table: &Services) -> Option<Finding> {
    if table.is_empty() || vs_sysctl(host, "expire_nodest_conn") != Some(0) {
        return None;
    }
    Some(Finding {
        id: "dir-expire-nodest-conn",
        severity: Severity::Warning,
        role: DIR,
        what: "net.ipv4.vs.expire_nodest_conn is 0".into(),
        why: "when a real server is removed (by hand or by a health check), its connections stay in the table \
              and their packets are dropped silently until they time out (15 minutes for an established TCP \
              connection): clients hang instead of reconnecting"
            .into(),
        fix: "sysctl -w net.ipv4.vs.expire_nodest_conn=1".into(),
    })
}

/// Persistent services whose templates outlive a weight-0 real server.
fn expire_quiescent_template(host: &Host, table: &Services) -> Option<Finding> {
    let persistent: Vec<String> =
        table.iter().filter(|(s, _)| s.service.persistence.is_some()).map(|(s, _)| s.service.key.to_string()).collect();
    if persistent.is_empty() || vs_sysctl(host, "expire_quiescent_template") != Some(0) {
        return None;
    }
    Some(Finding {
        id: "dir-expire-quiescent-template",
        severity: Severity::Warning,
        role: DIR,
        what: format!(
            "persistent service(s) ({}) and net.ipv4.vs.expire_quiescent_template is 0",
            persistent.join(", ")
        ),
        why: "a persistence template keeps sending a returning client to its real server even at weight 0: a \
              drained or failed (weight 0) server keeps getting new connections for as long as its clients come \
              back within the persistence timeout"
            .into(),
        fix: "sysctl -w net.ipv4.vs.expire_quiescent_template=1".into(),
    })
}

/// Consistent-hash TCP/SCTP services that cannot take over a flow from
/// another director (no sync, no `sloppy_tcp`).
fn sloppy_tcp(host: &Host, table: &Services) -> Option<Finding> {
    let hashed: Vec<String> = table
        .iter()
        .filter(|(s, _)| matches!(s.service.scheduler, Scheduler::Mh | Scheduler::Sh | Scheduler::Dh))
        .filter(|(s, _)| !matches!(s.service.key, ServiceKey::Inet { protocol: Protocol::Udp, .. }))
        .map(|(s, _)| format!("{} ({})", s.service.key, s.service.scheduler.name()))
        .collect();
    let syncing = host.ipvs.as_ref().is_some_and(|i| i.any_daemon);
    if hashed.is_empty() || syncing || vs_sysctl(host, "sloppy_tcp") != Some(0) {
        return None;
    }
    Some(Finding {
        id: "dir-sloppy-tcp",
        severity: Severity::Warning,
        role: DIR,
        what: format!(
            "consistent-hash service(s) {} without connection sync, and net.ipv4.vs.sloppy_tcp is 0",
            hashed.join(", ")
        ),
        why: "these schedulers pick the same real server on every director so that a flow can move between \
              directors (ECMP, failover); without sync the new director knows nothing of the flow and, without \
              sloppy_tcp, refuses to take it up from a packet that is not a SYN: the connection is reset"
            .into(),
        fix: "sysctl -w net.ipv4.vs.sloppy_tcp=1".into(),
    })
}

/// A backup director that is also a real server holds the VIP on lo and
/// the table: what the master forwards to it is scheduled again, unless
/// `backup_only` applies (it needs a backup sync daemon).
fn backup_only(host: &Host, table: &Services) -> Vec<Finding> {
    let backup_daemon = host.ipvs.as_ref().is_some_and(|i| i.backup_daemon);
    if vs_sysctl(host, "backup_only") == Some(1) && backup_daemon {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (s, ds) in table {
        let Some(vip) = key_vip(&s.service.key) else { continue };
        let on_lo = host.addrs_of(vip).any(|a| a.iface == "lo");
        let local = ds.iter().any(|d| host.is_local(d.destination.addr.ip()));
        let remote = ds.iter().any(|d| d.destination.weight > 0 && !host.is_local(d.destination.addr.ip()));
        if on_lo && local && remote {
            out.push(Finding {
                id: "dir-backup-only",
                severity: Severity::Warning,
                role: DIR,
                what: format!(
                    "{} has its VIP on lo (this host is a real server) and real servers elsewhere with weight > 0, \
                     and backup_only does not apply (net.ipv4.vs.backup_only = {}, backup sync daemon {})",
                    s.service.key,
                    vs_sysctl(host, "backup_only").map_or("?".into(), |v| v.to_string()),
                    if backup_daemon { "running" } else { "not running" }
                ),
                why: "while another director is the master, the packets it forwards to this host arrive addressed \
                      to the VIP and are scheduled again by this host's table, possibly to the other real server: \
                      forwarding loops and reset connections"
                    .into(),
                fix: "while this host is the backup: give the other real servers weight 0 here (lvsctl real edit \
                      ... -w 0), or sysctl -w net.ipv4.vs.backup_only=1 with a backup sync daemon (lvsctl sync \
                      start backup --mcast-interface IF)"
                    .into(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs::{Destination, DestinationEntry, Persistence, Service, ServiceEntry};

    const VIP: &str = "10.19.70.166";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn link(name: &str, mtu: u32) -> Link {
        Link { name: name.into(), up: true, mtu, noarp: name == "lo" || name == "tunl0" }
    }

    fn addr(iface: &str, a: &str, prefix: u8) -> Addr {
        Addr { iface: iface.into(), ip: ip(a), prefix }
    }

    /// A real server set up right: VIP /32 on lo, ARP sysctls, a listener.
    fn good_rs() -> Host {
        let mut h = Host::default();
        for (k, v) in [
            ("all/arp_ignore", "1"),
            ("all/arp_announce", "2"),
            ("all/rp_filter", "0"),
            ("eth0.100/arp_ignore", "1"),
            ("eth0.100/arp_announce", "2"),
            ("eth0.100/rp_filter", "1"),
            ("lo/arp_ignore", "0"),
            ("lo/arp_announce", "0"),
            ("tunl0/rp_filter", "0"),
        ] {
            h.sysctls.insert(format!("net/ipv4/conf/{k}"), v.into());
        }
        h.links = vec![link("lo", 65536), link("eth0.100", 1480)];
        h.addrs = vec![addr("lo", "127.0.0.1", 8), addr("lo", VIP, 32), addr("eth0.100", "10.18.68.187", 24)];
        h.listeners = vec![Listener { proto: Protocol::Tcp, ip: ip("0.0.0.0"), port: 15858 }];
        h
    }

    fn rs_intent() -> Intent {
        Intent {
            realserver: Some(RealserverIntent {
                vips: vec![ip(VIP)],
                iface: Some("eth0.100".into()),
                ports: vec![Port { proto: Protocol::Tcp, port: 15858 }],
                tun: false,
            }),
            director: None,
        }
    }

    fn ids(r: &Report) -> Vec<&'static str> {
        r.findings.iter().map(|f| f.id).collect()
    }

    #[test]
    fn a_good_real_server_passes() {
        let r = check(&good_rs(), &rs_intent());
        assert_eq!(ids(&r), Vec::<&str>::new(), "{r:#?}");
        assert!(r.notes[0].contains(VIP));
    }

    /// Each way a real server can be broken, and the finding it gives.
    #[test]
    fn broken_real_servers_are_diagnosed() {
        type Break = fn(&mut Host, &mut Intent);
        let cases: Vec<(&str, Break, &str)> = vec![
            ("no VIP", |h, _| h.addrs.retain(|a| a.ip != ip(VIP)), "rs-vip-missing"),
            ("VIP /24 on lo", |h, _| h.addrs[1].prefix = 24, "rs-vip-prefix"),
            ("no listener", |h, _| h.listeners.clear(), "rs-no-listener"),
            (
                "listener on the host address only",
                |h, _| h.listeners = vec![Listener { proto: Protocol::Tcp, ip: ip("10.18.68.187"), port: 15858 }],
                "rs-no-listener",
            ),
            ("UDP listener for a TCP port", |h, _| h.listeners[0].proto = Protocol::Udp, "rs-no-listener"),
            (
                "arp_ignore 0 everywhere",
                |h, _| {
                    h.sysctls.insert(conf_key("all", "arp_ignore"), "0".into());
                    h.sysctls.insert(conf_key("eth0.100", "arp_ignore"), "0".into());
                },
                "rs-arp-ignore",
            ),
            // all=3 wins over the interface's 1: 3 still answers for the VIP.
            (
                "arp_ignore 3 on all",
                |h, _| {
                    h.sysctls.insert(conf_key("all", "arp_ignore"), "3".into());
                },
                "rs-arp-ignore",
            ),
            (
                "arp_announce 1",
                |h, _| {
                    h.sysctls.insert(conf_key("all", "arp_announce"), "1".into());
                    h.sysctls.insert(conf_key("eth0.100", "arp_announce"), "0".into());
                },
                "rs-arp-announce",
            ),
            (
                "strict rp_filter, two interfaces",
                |h, _| {
                    h.links.push(link("eth1", 1500));
                    h.addrs.push(addr("eth1", "192.168.9.2", 24));
                },
                "rs-rp-filter",
            ),
            (
                "TUN without tunl0",
                |h, i| {
                    i.realserver.as_mut().unwrap().tun = true;
                    let _ = h;
                },
                "rs-tun-down",
            ),
            (
                "TUN, tunl0 down",
                |h, i| {
                    i.realserver.as_mut().unwrap().tun = true;
                    h.links.push(Link { up: false, ..link("tunl0", 1480) });
                },
                "rs-tun-down",
            ),
            (
                "TUN, strict rp_filter on all",
                |h, i| {
                    i.realserver.as_mut().unwrap().tun = true;
                    h.links.push(link("tunl0", 1480));
                    h.sysctls.insert(conf_key("all", "rp_filter"), "1".into());
                },
                "rs-tun-rp-filter",
            ),
            (
                "TUN, MTU 1500",
                |h, i| {
                    i.realserver.as_mut().unwrap().tun = true;
                    h.links.push(link("tunl0", 1480));
                    h.links[1].mtu = 1500;
                },
                "rs-tun-mtu",
            ),
        ];
        for (name, brk, want) in cases {
            let (mut h, mut i) = (good_rs(), rs_intent());
            brk(&mut h, &mut i);
            let r = check(&h, &i);
            assert_eq!(ids(&r), vec![want], "{name}: {r:#?}");
            let f = &r.findings[0];
            assert!(!f.what.is_empty() && !f.why.is_empty() && !f.fix.is_empty(), "{name}");
        }
    }

    #[test]
    fn good_tun_real_server_passes_and_single_homed_strict_rp_filter_is_fine() {
        let (mut h, mut i) = (good_rs(), rs_intent());
        i.realserver.as_mut().unwrap().tun = true;
        h.links.push(link("tunl0", 1480));
        assert_eq!(ids(&check(&h, &i)), Vec::<&str>::new());
        // Without a known interface, every ARP interface with an address is checked.
        i.realserver.as_mut().unwrap().iface = None;
        h.links.push(link("eth1", 1400));
        h.sysctls.insert(conf_key("eth1", "arp_ignore"), "0".into());
        h.sysctls.insert(conf_key("eth1", "arp_announce"), "2".into());
        h.sysctls.insert(conf_key("eth1", "rp_filter"), "0".into());
        h.addrs.push(addr("eth1", "192.168.9.2", 24));
        // all=1 makes eth1's arp_ignore 1 as well.
        assert_eq!(ids(&check(&h, &i)), Vec::<&str>::new());
        h.sysctls.insert(conf_key("all", "arp_ignore"), "0".into());
        let r = check(&h, &i);
        assert_eq!(ids(&r), vec!["rs-arp-ignore"], "{r:#?}");
        assert!(r.findings[0].what.contains("on eth1"), "{r:#?}");
        assert_eq!(
            r.findings[0].fix,
            "sysctl -w net.ipv4.conf.all.arp_ignore=1; sysctl -w net.ipv4.conf.eth1.arp_ignore=1"
        );
    }

    #[test]
    fn fixes_spell_dotted_interfaces_as_sysctl_reads_them() {
        assert_eq!(sysctl_name("net/ipv4/conf/eth0.100/arp_ignore"), "net.ipv4.conf.eth0/100.arp_ignore");
        let mut h = good_rs();
        h.sysctls.insert(conf_key("eth0.100", "arp_announce"), "0".into());
        h.sysctls.insert(conf_key("all", "arp_announce"), "0".into());
        let r = check(&h, &rs_intent());
        assert_eq!(
            r.findings[0].fix,
            "sysctl -w net.ipv4.conf.all.arp_announce=2; sysctl -w net.ipv4.conf.eth0/100.arp_announce=2"
        );
    }

    #[test]
    fn ipv6_vips_need_no_arp_sysctls_and_wildcards_match_their_family() {
        let mut h = good_rs();
        h.sysctls.clear();
        h.addrs = vec![addr("lo", "2001:db8::1", 128)];
        h.listeners = vec![Listener { proto: Protocol::Tcp, ip: ip("::"), port: 15858 }];
        let mut i = rs_intent();
        i.realserver.as_mut().unwrap().vips = vec![ip("2001:db8::1")];
        assert_eq!(ids(&check(&h, &i)), Vec::<&str>::new());
        // 0.0.0.0 does not take IPv6.
        h.listeners[0].ip = ip("0.0.0.0");
        assert_eq!(ids(&check(&h, &i)), vec!["rs-no-listener"]);
        // :: takes IPv4 as well (dual-stack sockets are the default).
        let mut h4 = good_rs();
        h4.listeners[0].ip = ip("::");
        assert_eq!(ids(&check(&h4, &rs_intent())), Vec::<&str>::new());
    }

    fn svc(
        key: &str,
        sched: Scheduler,
        persistent: bool,
        dests: &[(&str, Forward, u32)],
    ) -> (ServiceEntry, Vec<DestinationEntry>) {
        let mut s = Service::new(ServiceKey::tcp(key.parse().unwrap()), sched);
        if persistent {
            s.persistence = Some(Persistence { timeout: 300, netmask: None });
        }
        let ds = dests
            .iter()
            .map(|(a, f, w)| DestinationEntry::from(Destination::new(a.parse().unwrap(), *f).with_weight(*w)))
            .collect();
        (ServiceEntry::from(s), ds)
    }

    fn good_director() -> Host {
        let mut h = Host::default();
        for (k, v) in [
            ("net/ipv4/vs/conntrack", "0"),
            ("net/ipv4/vs/expire_nodest_conn", "1"),
            ("net/ipv4/vs/expire_quiescent_template", "1"),
            ("net/ipv4/vs/sloppy_tcp", "1"),
            ("net/ipv4/vs/backup_only", "0"),
            ("net/ipv4/conf/all/forwarding", "1"),
            ("net/ipv6/conf/all/forwarding", "0"),
            ("net/netfilter/nf_conntrack_max", "262144"),
            ("net/netfilter/nf_conntrack_count", "10"),
        ] {
            h.sysctls.insert(k.into(), v.into());
        }
        h.links = vec![link("lo", 65536), link("enp1s0", 1500)];
        h.addrs = vec![addr("lo", "127.0.0.1", 8), addr("enp1s0", "10.18.68.186", 24), addr("enp1s0", VIP, 32)];
        h.ipvs = Some(IpvsView {
            table: vec![
                svc(
                    "10.19.70.166:15858",
                    Scheduler::Rr,
                    true,
                    &[("10.18.68.186:15858", Forward::Route, 1), ("10.18.68.187:15858", Forward::Route, 1)],
                ),
                svc("10.19.70.166:80", Scheduler::Mh, false, &[("10.1.0.2:8080", Forward::Masq, 1)]),
            ],
            ..IpvsView::default()
        });
        h.listeners = vec![Listener { proto: Protocol::Tcp, ip: ip("0.0.0.0"), port: 15858 }];
        h
    }

    fn dir_intent() -> Intent {
        Intent { realserver: None, director: Some(DirectorIntent { vips: vec![(ip(VIP), Some("enp1s0".into()))] }) }
    }

    #[test]
    fn a_good_director_passes() {
        let r = check(&good_director(), &dir_intent());
        assert_eq!(ids(&r), Vec::<&str>::new(), "{r:#?}");
    }

    #[test]
    fn broken_directors_are_diagnosed() {
        type Break = fn(&mut Host);
        let set = |h: &mut Host, k: &str, v: &str| {
            h.sysctls.insert(k.into(), v.into());
        };
        let _ = set;
        let cases: Vec<(&str, Break, &str)> = vec![
            ("no VIP", |h| h.addrs.retain(|a| a.ip != ip(VIP)), "dir-vip-missing"),
            ("VIP /24", |h| h.addrs[2].prefix = 24, "dir-vip-prefix"),
            (
                "no forwarding for NAT",
                |h| {
                    h.sysctls.insert("net/ipv4/conf/all/forwarding".into(), "0".into());
                },
                "dir-forwarding",
            ),
            (
                "conntrack table full",
                |h| {
                    h.sysctls.insert("net/ipv4/vs/conntrack".into(), "1".into());
                    h.sysctls.insert("net/netfilter/nf_conntrack_count".into(), "262000".into());
                },
                "dir-conntrack-full",
            ),
            (
                "expire_nodest_conn 0",
                |h| {
                    h.sysctls.insert("net/ipv4/vs/expire_nodest_conn".into(), "0".into());
                },
                "dir-expire-nodest-conn",
            ),
            (
                "expire_quiescent_template 0",
                |h| {
                    h.sysctls.insert("net/ipv4/vs/expire_quiescent_template".into(), "0".into());
                },
                "dir-expire-quiescent-template",
            ),
            (
                "sloppy_tcp 0",
                |h| {
                    h.sysctls.insert("net/ipv4/vs/sloppy_tcp".into(), "0".into());
                },
                "dir-sloppy-tcp",
            ),
            (
                "VIP on lo, also a real server",
                |h| {
                    h.addrs.retain(|a| a.ip != ip(VIP));
                    h.addrs.push(addr("lo", VIP, 32));
                },
                "dir-backup-only",
            ),
        ];
        for (name, brk, want) in cases {
            let mut h = good_director();
            brk(&mut h);
            let r = check(&h, &dir_intent());
            assert_eq!(ids(&r), vec![want], "{name}: {r:#?}");
        }
    }

    #[test]
    fn director_exceptions() {
        // Sync makes sloppy_tcp unnecessary; conntrack off ignores the table;
        // a working backup_only (with a backup daemon) is fine.
        let mut h = good_director();
        h.sysctls.insert("net/ipv4/vs/sloppy_tcp".into(), "0".into());
        h.sysctls.insert("net/netfilter/nf_conntrack_count".into(), "262144".into());
        h.sysctls.insert("net/ipv4/vs/backup_only".into(), "1".into());
        h.addrs.retain(|a| a.ip != ip(VIP));
        h.addrs.push(addr("lo", VIP, 32));
        h.ipvs.as_mut().unwrap().any_daemon = true;
        h.ipvs.as_mut().unwrap().backup_daemon = true;
        assert_eq!(ids(&check(&h, &dir_intent())), Vec::<&str>::new());
        // backup_only without a backup daemon does nothing.
        h.ipvs.as_mut().unwrap().backup_daemon = false;
        assert_eq!(ids(&check(&h, &dir_intent())), vec!["dir-backup-only"]);
        // A probe nobody answered is fine; one that could not be sent is a note.
        let mut h = good_director();
        h.arp = vec![
            ArpProbe { vip: ip(VIP), iface: "enp1s0".into(), answers: Ok(vec![]) },
            ArpProbe { vip: ip(VIP), iface: "enp1s0".into(), answers: Err("Operation not permitted".into()) },
        ];
        let r = check(&h, &dir_intent());
        assert!(r.findings.is_empty() && r.notes.iter().any(|n| n.contains("not permitted")), "{r:#?}");
        // No table, no VIP known: nothing to check, a note says so.
        let r = check(&Host::default(), &Intent { realserver: None, director: Some(DirectorIntent::default()) });
        assert!(r.findings.is_empty() && r.notes.iter().any(|n| n.contains("nothing checked")), "{r:#?}");
        // The VIPs of the table are checked without any intent.
        let mut h = good_director();
        h.addrs.retain(|a| a.ip != ip(VIP));
        let r = check(&h, &Intent { realserver: None, director: Some(DirectorIntent::default()) });
        assert_eq!(ids(&r), vec!["dir-vip-missing"]);
        assert!(r.findings[0].fix.contains("dev IF"), "{r:#?}");
    }
}
