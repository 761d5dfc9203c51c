//! The validated types both roles take: what a director configures
//! ([`DirectorSpec`]), what a real server configures ([`RealserverSpec`]),
//! and the small parsers the config file, the command line and `lvsctl
//! restore` share ([`IfName`], [`parse_addr_port`]).

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipvs::reconcile::DesiredService;
use ipvs::Destination;
use serde::{Deserialize, Serialize};

pub mod bgp;

use crate::check::CheckConfig;
use crate::health::OnFailure;

/// Most ipvsadm accepts (`-w 0..65535`).
pub const MAX_WEIGHT: u32 = 65535;

/// An interface name the kernel could have (1..15 bytes, no `/`, `:` or
/// whitespace, not `.` or `..`). It may contain dots (`eth0.100`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl IfName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<IfName> for String {
    fn from(n: IfName) -> String {
        n.0
    }
}

impl TryFrom<String> for IfName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 15 {
            return Err(format!("invalid interface name {s:?}: must be 1..15 characters"));
        }
        if s == "." || s == ".." || s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
            return Err(format!("invalid interface name {s:?}: no '/', ':' or spaces, not '.' or '..'"));
        }
        Ok(Self(s))
    }
}

impl std::str::FromStr for IfName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::try_from(s.to_owned())
    }
}

/// A validated virtual service of the director.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualService {
    /// The service and its real servers, as the library takes them.
    pub desired: DesiredService,
    /// Its VIP (for a fwmark service, the address the marked traffic goes to).
    pub vip: IpAddr,
    /// The interface its VIP goes on.
    pub iface: IfName,
    /// Health-check settings per real server (same order as
    /// `desired.destinations`; the service's `check` when the real server has
    /// none), for `director run`.
    pub checks: Vec<Option<CheckConfig>>,
    /// What `director run` does to a failed real server.
    pub on_failure: OnFailure,
    /// The sorry server, for `director run`.
    pub sorry_server: Option<Destination>,
    /// How long `director run` drains a real server it deletes (removed from
    /// the config, or failed with `on_failure = "remove"`); zero: no drain.
    pub drain_time: std::time::Duration,
}

/// What `director start` configures: validated, ready to reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectorSpec {
    /// The virtual services.
    pub services: Vec<VirtualService>,
    /// How often `director run` re-asserts the whole table (`None`: its default).
    pub resync_interval: Option<std::time::Duration>,
    /// `[director.ha]`, validated: failover with keepalived (`director run`
    /// only); keepalived owns the VIPs then.
    pub ha: Option<HaSpec>,
    /// `[director.bgp]`, validated: the VIPs announced over BGP (`director
    /// run` only); those VIPs go on `lo`.
    pub bgp: Option<bgp::BgpSpec>,
    /// Where `director run` serves Prometheus metrics (`None`: it does not).
    pub metrics: Option<SocketAddr>,
}

/// Parse the address of the metrics endpoint (`metrics = "ADDR:PORT"`,
/// `--metrics ADDR:PORT`): an IP address (IPv6 in brackets) and a port that
/// is not 0.
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr =
        s.trim().parse().map_err(|_| "expected ADDR:PORT, e.g. \"127.0.0.1:9101\" or \"[::1]:9101\"".to_owned())?;
    if a.port() == 0 {
        return Err("the port must be 1..65535 (Prometheus needs a fixed one)".to_owned());
    }
    Ok(a)
}

impl DirectorSpec {
    /// The services in the form [`ipvs::reconcile::plan`] takes.
    pub fn desired_services(&self) -> Vec<DesiredService> {
        self.services.iter().map(|s| s.desired.clone()).collect()
    }

    /// Each VIP with its interface, once, in order of first appearance: the
    /// addresses the director puts on its interfaces itself. None with
    /// `[director.ha]`: keepalived puts them on the MASTER ([`Self::ha_vips`]).
    pub fn vips(&self) -> Vec<(IpAddr, IfName)> {
        if self.ha.is_some() {
            return Vec::new();
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for s in &self.services {
            if seen.insert(s.vip) {
                out.push((s.vip, self.vip_iface(s)));
            }
        }
        out
    }

    /// The interface a service's VIP goes on: `lo` when it is announced over
    /// BGP (routed to this host, never ARP-announced), else its own.
    fn vip_iface(&self, s: &VirtualService) -> IfName {
        match &self.bgp {
            Some(b) if b.vips.contains(&s.vip) => IfName("lo".to_owned()),
            _ => s.iface.clone(),
        }
    }

    /// Every VIP once, in order of first appearance (keepalived's
    /// `virtual_ipaddress` with `[director.ha]`).
    pub fn ha_vips(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for s in &self.services {
            if !out.contains(&s.vip) {
                out.push(s.vip);
            }
        }
        out
    }
}

/// `[director.ha]`, validated: how `director run` fails over between two
/// directors (keepalived's VRRP, the kernel's connection sync daemons).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HaSpec {
    /// VRRP's interface; the VIPs go on it on the MASTER.
    pub interface: IfName,
    /// VRRP's virtual router id, 1..255.
    pub virtual_router_id: u8,
    /// The priority of a host without its own entry in `hosts`.
    pub priority: Option<u8>,
    /// Per-host priorities, by one of the host's addresses.
    pub host_priority: Vec<(IpAddr, u8)>,
    /// Seconds between adverts.
    pub advert_interval: u8,
    /// Whether a returning higher-priority director takes the VIP back.
    pub preempt: bool,
    /// Unicast peers; empty: multicast.
    pub peers: Vec<IpAddr>,
    /// The sync daemons' interface.
    pub sync_interface: IfName,
    /// The sync daemons' id.
    pub sync_id: u8,
    /// The sync daemons' maximum message length.
    pub sync_maxlen: Option<u16>,
    /// Multicast group of the sync daemons.
    pub sync_group: Option<IpAddr>,
    /// UDP port of the sync daemons.
    pub sync_port: Option<u16>,
    /// Multicast TTL of the sync daemons.
    pub sync_ttl: Option<u8>,
}

impl HaSpec {
    /// This host's priority: the `hosts` entry whose address `is_local`
    /// says this host has, else the default. Two local entries are an error.
    pub fn priority_here(&self, is_local: impl Fn(IpAddr) -> bool) -> Result<u8, String> {
        let mine: Vec<&(IpAddr, u8)> = self.host_priority.iter().filter(|(a, _)| is_local(*a)).collect();
        match (mine.as_slice(), self.priority) {
            ([(_, p)], _) => Ok(*p),
            ([], Some(p)) => Ok(p),
            ([], None) => {
                let listed: Vec<String> = self.host_priority.iter().map(|(a, _)| a.to_string()).collect();
                Err(format!(
                    "[director.ha]: this host has none of the addresses of hosts ({}) and there is no default priority",
                    listed.join(", ")
                ))
            }
            (many, _) => {
                let listed: Vec<String> = many.iter().map(|(a, _)| a.to_string()).collect();
                Err(format!(
                    "[director.ha]: this host has several addresses of hosts ({}): keep one",
                    listed.join(", ")
                ))
            }
        }
    }
}

/// What `realserver start` configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealserverSpec {
    /// The VIPs to put on `lo`, without duplicates.
    pub vips: Vec<IpAddr>,
    /// The interface facing clients and director, if given.
    pub iface: Option<IfName>,
}

/// Why [`parse_addr_port`] refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrPortError {
    /// The address part is not an IPv4 or IPv6 address in one of the forms.
    #[error("expected ADDR, ADDR:PORT or [IPV6]:PORT")]
    Address,
    /// The address is fine; the port (given here) is not a number in 0..65535.
    #[error("port {0:?} is not a number in 1..65535")]
    Port(String),
}

/// Parse an address with an optional port, as ipvsadm writes and reads
/// them: `10.0.0.1`, `10.0.0.1:80`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:80`. The config file's real servers, `--real` and `lvsctl
/// restore` all read addresses with it.
///
/// ```
/// use lvsctl::spec::{parse_addr_port, AddrPortError};
/// assert_eq!(parse_addr_port("10.0.0.1:80"), Ok(("10.0.0.1".parse().unwrap(), Some(80))));
/// assert_eq!(parse_addr_port("[2001:db8::1]"), Ok(("2001:db8::1".parse().unwrap(), None)));
/// assert_eq!(parse_addr_port("10.0.0.1:http"), Err(AddrPortError::Port("http".into())));
/// assert_eq!(parse_addr_port("10.0.0"), Err(AddrPortError::Address));
/// ```
pub fn parse_addr_port(s: &str) -> Result<(IpAddr, Option<u16>), AddrPortError> {
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or(AddrPortError::Address)?;
        let ip: Ipv6Addr = addr.parse().map_err(|_| AddrPortError::Address)?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':').ok_or(AddrPortError::Address)?)?),
        };
        return Ok((IpAddr::V6(ip), port));
    }
    // One colon: IPv4:PORT (an IPv6 address has at least two). Otherwise a
    // bare address of either family.
    match s.split_once(':') {
        Some((addr, port)) if !port.contains(':') => {
            let ip: Ipv4Addr = addr.parse().map_err(|_| AddrPortError::Address)?;
            Ok((IpAddr::V4(ip), Some(parse_port(port)?)))
        }
        _ => s.parse::<IpAddr>().map(|ip| (ip, None)).map_err(|_| AddrPortError::Address),
    }
}

fn parse_port(s: &str) -> Result<u16, AddrPortError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddrPortError::Port(s.to_owned()));
    }
    s.parse().map_err(|_| AddrPortError::Port(s.to_owned()))
}

/// ipvsadm's longest persistence timeout: 31 days.
pub const MAX_PERSISTENCE: u32 = 86400 * 31;

/// The one check of a persistence timeout, for every way one is given
/// (`lvsctl service -p`, restore, `director start --persistence`, the config
/// file): 1 to [`MAX_PERSISTENCE`] seconds, as ipvsadm takes it. The kernel
/// multiplies the timeout by HZ in 32 bits, so a larger one would wrap.
pub fn persistence_timeout(secs: u32) -> Result<u32, String> {
    if (1..=MAX_PERSISTENCE).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("persistence timeout {secs} is out of range: 1 to {MAX_PERSISTENCE} seconds (31 days)"))
    }
}
