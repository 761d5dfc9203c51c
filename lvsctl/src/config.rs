//! The director / real-server configuration: the TOML file of
//! `--config FILE`, the same thing built from command-line flags, its
//! validation, and the conversion into what the `ipvs` library reconciles
//! ([`DesiredService`]).
//!
//! Shared by `director start`, `realserver start` and (later) the
//! health-checking `director run`: parse with [`Config::load`] or
//! [`Config::parse`], then [`Config::director`] / [`Config::realserver`] give
//! validated specs, and [`DirectorSpec::desired_services`] the library's view.
//!
//! Schema (documented with an example in docs/configuration.md):
//!
//! ```toml
//! [director]
//! iface = "enp1s0"                 # default interface for the VIPs
//! [[director.service]]
//! vip = "10.19.70.166"
//! port = 15858                     # 0 = every port (needs persistence)
//! protocol = "tcp"                 # tcp | udp | sctp
//! scheduler = "rr"
//! forward = "dr"                   # dr | tunnel | nat, for every real server
//! # persistence = 300
//! # iface = "enp1s0"               # this service's VIP on another interface
//! real = ["10.18.68.186", "10.18.68.187:15858,weight=1"]
//! # or, one table per real server:
//! # [[director.service.real]]
//! # addr = "10.18.68.186"
//! # port = 15858
//! # weight = 1
//! # forward = "dr"
//!
//! [realserver]
//! iface = "enp1s0"
//! vips = ["10.19.70.166"]          # default: every director.service vip
//! ```
//!
//! Every table rejects unknown keys, so a misspelt key is an error with its
//! line and column. `director run` (the health-checking daemon) also reads a
//! `check` table per real server or per service (the default for its real
//! servers; see [`CheckConfig`]), and per service `on_failure` (`drain` or
//! `remove`), `sorry_server` and `drain_time`; `director start` accepts and
//! ignores them.
//! `[director.ha]` (failover, `director run` only) is read by [`HaConfig`]
//! into [`HaSpec`], `[director.bgp]` (ECMP scale-out, `director run` only)
//! by [`BgpConfig`] into [`BgpSpec`].

mod bgp;
mod ha;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::Path;

use ipvs::reconcile::DesiredService;
use ipvs::{Destination, Forward, Netmask, Persistence, Protocol, SchedFlags, Scheduler, Service, ServiceKey, Tunnel};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use crate::check::CheckConfig;
pub use crate::health::OnFailure;
pub use crate::spec::bgp::BgpSpec;
use crate::spec::{parse_addr_port, AddrPortError};
pub use crate::spec::{DirectorSpec, HaSpec, IfName, RealserverSpec, VirtualService, MAX_WEIGHT};
pub use bgp::BgpConfig;
pub use ha::HaConfig;

/// A configuration error: one line, with the file, line and column when it
/// comes from a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<ConfigError> for crate::Error {
    fn from(e: ConfigError) -> Self {
        crate::Error::Invalid(e.0)
    }
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The file name and its text (for line and column); `None` for flags.
    file: Option<(String, String)>,
}

impl Origin {
    /// Values given as command-line flags.
    pub fn flags() -> Self {
        Self { file: None }
    }

    fn error(&self, span: Option<Range<usize>>, msg: impl fmt::Display) -> ConfigError {
        let msg = one_line(&msg.to_string());
        match (&self.file, span) {
            (Some((name, text)), Some(span)) => {
                let (line, col) = line_col(text, span.start);
                ConfigError(format!("{name}:{line}:{col}: {msg}"))
            }
            (Some((name, _)), None) => ConfigError(format!("{name}: {msg}")),
            (None, _) => ConfigError(msg),
        }
    }
}

fn one_line(s: &str) -> String {
    s.trim().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// 1-based line and column (in characters) of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

// ---------------------------------------------------------------------------
// The file's types
// ---------------------------------------------------------------------------

/// The whole file: either role, or both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[director]`.
    pub director: Option<Spanned<DirectorConfig>>,
    /// `[realserver]`.
    pub realserver: Option<Spanned<RealserverConfig>>,
    #[serde(skip)]
    origin: Origin,
}

/// `[director]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorConfig {
    /// Default interface the VIPs go on.
    pub iface: Option<IfName>,
    /// How often `director run` re-asserts the whole table (default 30 s).
    pub resync_interval: Option<crate::check::Secs>,
    /// `[[director.service]]`: the virtual services.
    #[serde(default, rename = "service")]
    pub services: Vec<Spanned<ServiceConfig>>,
    /// `[director.ha]`: failover between two directors (`director run` only).
    #[serde(default)]
    pub ha: Option<Spanned<HaConfig>>,
    /// `[director.bgp]`: announce the VIPs over BGP (`director run` only).
    #[serde(default)]
    pub bgp: Option<Spanned<BgpConfig>>,
    /// `"ADDR:PORT"` where `director run` serves Prometheus metrics (off
    /// when absent; `director start` ignores it).
    pub metrics: Option<Spanned<String>>,
}

/// `[[director.service]]`: one virtual service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Virtual IP address (v4 or v6).
    pub vip: IpAddr,
    /// Port; 0 means every port (needs `persistence`). Required unless `fwmark` is set.
    pub port: Option<u16>,
    /// A firewall-mark service (`ipvsadm -f`): traffic that netfilter marked
    /// with this mark, instead of protocol + VIP + port. The VIP still goes on
    /// the interface (and on the real servers' `lo`).
    pub fwmark: Option<u32>,
    /// Transport protocol (default tcp).
    #[serde(default = "default_protocol")]
    pub protocol: Protocol,
    /// Scheduler (default rr).
    #[serde(default)]
    pub scheduler: SchedulerName,
    /// Persistence timeout in seconds.
    pub persistence: Option<u32>,
    /// Persistence granularity (`ipvsadm -M`): an IPv4 netmask like
    /// `"255.255.255.0"`, or an IPv6 prefix length like `"64"`.
    pub persistence_netmask: Option<String>,
    /// Scheduler flags (`ipvsadm -b`): `sh-port`, `sh-fallback`, `mh-port`,
    /// `mh-fallback`, `flag-1`, `flag-2`, `flag-3`.
    #[serde(default)]
    pub sched_flags: Vec<String>,
    /// One-packet scheduling (`ipvsadm -o`; UDP and fwmark services).
    #[serde(default)]
    pub one_packet: bool,
    /// Persistence engine (`ipvsadm --pe`), e.g. `sip`.
    pub pe: Option<String>,
    /// Forwarding method of the real servers (default dr).
    #[serde(default)]
    pub forward: ForwardMethod,
    /// Interface for this service's VIP (default: `director.iface`).
    pub iface: Option<IfName>,
    /// The real servers.
    #[serde(default, rename = "real")]
    pub reals: Vec<Spanned<RealConfig>>,
    /// Default health check of the real servers (`director run`); a real
    /// server's own `check` replaces it.
    #[serde(default)]
    pub check: Option<CheckConfig>,
    /// What `director run` does to a real server that fails its check:
    /// `drain` (weight 0, the default) or `remove`.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The real server `director run` adds while every real server is down
    /// (same forms as `real`).
    #[serde(default)]
    pub sorry_server: Option<Spanned<RealConfig>>,
    /// How long `director run` lets a real server keep its connections
    /// (weight 0) before it deletes it: one removed from the file on SIGHUP,
    /// or one that failed with `on_failure = "remove"`. `0`: delete at once.
    #[serde(default)]
    pub drain_time: Option<crate::check::Secs>,
}

impl ServiceConfig {
    /// A service on `vip` and `port` with every other key at its default
    /// (what the command-line flags start from).
    pub fn new(vip: IpAddr, port: Option<u16>) -> Self {
        Self {
            vip,
            port,
            fwmark: None,
            protocol: default_protocol(),
            scheduler: SchedulerName::default(),
            persistence: None,
            persistence_netmask: None,
            sched_flags: Vec::new(),
            one_packet: false,
            pe: None,
            forward: ForwardMethod::Dr,
            iface: None,
            reals: Vec::new(),
            check: None,
            on_failure: OnFailure::default(),
            sorry_server: None,
            drain_time: None,
        }
    }
}

fn default_protocol() -> Protocol {
    Protocol::Tcp
}

/// One real server: `"ADDR[:PORT][,weight=N][,forward=dr|tunnel|nat]"` or a table.
#[derive(Debug, Clone, PartialEq)]
pub struct RealConfig {
    /// Address.
    pub addr: IpAddr,
    /// Port; default the service's.
    pub port: Option<u16>,
    /// Weight 0..65535 (default 1).
    pub weight: u32,
    /// Forwarding method; default the service's.
    pub forward: Option<ForwardMethod>,
    /// Upper connection threshold (`ipvsadm -x`; 0 = none).
    pub upper_threshold: u32,
    /// Lower connection threshold (`ipvsadm -y`; 0 = none).
    pub lower_threshold: u32,
    /// Tunnel encapsulation, with `forward = "tunnel"` (default ipip).
    pub tunnel: Option<Tunnel>,
    /// Health-check settings (`director run`). Accepted and kept, not acted
    /// on by `director start`.
    pub check: Option<CheckConfig>,
}

/// The table form of [`RealConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RealTable {
    addr: IpAddr,
    port: Option<u16>,
    #[serde(default = "default_weight")]
    weight: u32,
    forward: Option<ForwardMethod>,
    #[serde(default)]
    upper_threshold: u32,
    #[serde(default)]
    lower_threshold: u32,
    /// `ipip` (default), `gue` or `gre`.
    tunnel: Option<TunnelType>,
    /// GUE's UDP port (required with `tunnel = "gue"`).
    tunnel_port: Option<u16>,
    /// `nocsum` (default), `csum` or `remcsum` (GUE, GRE).
    tunnel_checksum: Option<TunnelChecksumName>,
    check: Option<CheckConfig>,
}

/// `tunnel` of a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TunnelType {
    Ipip,
    Gue,
    Gre,
}

/// `tunnel_checksum` of a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TunnelChecksumName {
    Nocsum,
    Csum,
    Remcsum,
}

impl RealTable {
    fn tunnel(&self) -> Result<Option<Tunnel>, String> {
        let checksum = match self.tunnel_checksum {
            None | Some(TunnelChecksumName::Nocsum) => ipvs::TunnelChecksum::NoCsum,
            Some(TunnelChecksumName::Csum) => ipvs::TunnelChecksum::Csum,
            Some(TunnelChecksumName::Remcsum) => ipvs::TunnelChecksum::RemCsum,
        };
        let t = match (self.tunnel, self.tunnel_port) {
            (None, None) if self.tunnel_checksum.is_none() => return Ok(None),
            (None | Some(TunnelType::Ipip), None) if self.tunnel_checksum.is_none() => Tunnel::Ipip,
            (Some(TunnelType::Gue), Some(port)) if port != 0 => Tunnel::Gue { port, checksum },
            (Some(TunnelType::Gue), _) => return Err("tunnel = \"gue\" needs tunnel_port = 1..65535".into()),
            (Some(TunnelType::Gre), None) => Tunnel::Gre { checksum },
            (_, Some(_)) => return Err("tunnel_port is only for tunnel = \"gue\"".into()),
            (_, None) => return Err("tunnel_checksum is only for tunnel = \"gue\" or \"gre\"".into()),
        };
        Ok(Some(t))
    }
}

fn default_weight() -> u32 {
    1
}

impl<'de> Deserialize<'de> for RealConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RealConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a real server: \"ADDR[:PORT][,weight=N]\" or a table with addr, port, weight, forward")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RealConfig, E> {
                RealConfig::parse(s).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RealConfig, A::Error> {
                let t = RealTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let tunnel = t.tunnel().map_err(de::Error::custom)?;
                Ok(RealConfig {
                    addr: t.addr,
                    port: t.port,
                    weight: t.weight,
                    forward: t.forward,
                    upper_threshold: t.upper_threshold,
                    lower_threshold: t.lower_threshold,
                    tunnel,
                    check: t.check,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl RealConfig {
    /// Parse `ADDR[:PORT][,weight=N][,forward=METHOD]` (`[V6]:PORT` for an
    /// IPv6 address with a port), as `--real` takes it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let addr_part = parts.next().unwrap_or("").trim();
        let (addr, port) = parse_addr_port(addr_part).map_err(|e| match e {
            AddrPortError::Address => {
                format!("malformed real server address {addr_part:?}: expected ADDR, ADDR:PORT or [IPV6]:PORT")
            }
            AddrPortError::Port(p) => format!("real server {addr_part:?}: port {p:?} is not a number in 1..65535"),
        })?;
        let mut r = RealConfig {
            addr,
            port,
            weight: 1,
            forward: None,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel: None,
            check: None,
        };
        for opt in parts {
            let opt = opt.trim();
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| format!("real server {s:?}: option {opt:?} is not KEY=VALUE (weight=N, forward=dr)"))?;
            match k.trim() {
                "weight" | "w" => {
                    r.weight = v
                        .trim()
                        .parse::<u32>()
                        .map_err(|_| format!("real server {s:?}: weight {v:?} is not a number in 0..{MAX_WEIGHT}"))?;
                }
                "forward" => r.forward = Some(v.trim().parse()?),
                "upper" | "lower" => {
                    let n = v.trim().parse::<u32>().map_err(|_| {
                        format!("real server {s:?}: {k} threshold {v:?} is not a number of connections")
                    })?;
                    if k.trim() == "upper" {
                        r.upper_threshold = n;
                    } else {
                        r.lower_threshold = n;
                    }
                }
                other => {
                    return Err(format!(
                        "real server {s:?}: unknown option {other:?} (expected weight, forward, upper or lower)"
                    ))
                }
            }
        }
        Ok(r)
    }
}

/// `[realserver]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealserverConfig {
    /// The interface facing the clients and the director (its ARP sysctls are set).
    pub iface: Option<IfName>,
    /// The VIPs to put on `lo`; default: every `director.service` VIP of the file.
    pub vips: Option<Vec<IpAddr>>,
}

/// Forwarding method as written in the config and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMethod {
    /// Direct routing (`ipvsadm -g`).
    #[default]
    Dr,
    /// IP-in-IP tunnelling (`ipvsadm -i`).
    Tunnel,
    /// Masquerading (`ipvsadm -m`).
    Nat,
}

impl ForwardMethod {
    /// The library's forwarding method.
    pub fn forward(self) -> Forward {
        match self {
            Self::Dr => Forward::Route,
            Self::Tunnel => Forward::Tunnel(Tunnel::Ipip),
            Self::Nat => Forward::Masq,
        }
    }
}

impl std::str::FromStr for ForwardMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "dr" | "route" | "direct" | "g" => Ok(Self::Dr),
            "tunnel" | "tun" | "ipip" | "i" => Ok(Self::Tunnel),
            "nat" | "masq" | "m" => Ok(Self::Nat),
            _ => Err(format!("unknown forwarding method {s:?}: expected dr, tunnel or nat")),
        }
    }
}

/// A scheduler name from the mainline kernel's list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SchedulerName(pub Scheduler);

impl Default for SchedulerName {
    fn default() -> Self {
        Self(Scheduler::Rr)
    }
}

impl TryFrom<String> for SchedulerName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for SchedulerName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scheduler::MAINLINE.iter().find(|x| x.name() == s).map(|x| Self(x.clone())).ok_or_else(|| {
            let names: Vec<&str> = Scheduler::MAINLINE.iter().map(|x| x.name()).collect();
            format!("unknown scheduler {s:?}: expected one of {}", names.join(", "))
        })
    }
}

// ---------------------------------------------------------------------------
// Validated specs
// ---------------------------------------------------------------------------

impl Config {
    /// Read and parse a config file. Errors name the file (and line and
    /// column for parse errors).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse the TOML `text` of the file `name`.
    pub fn parse(text: &str, name: &str) -> Result<Self, ConfigError> {
        let origin = Origin { file: Some((name.to_owned(), text.to_owned())) };
        let mut c: Config = toml::from_str(text).map_err(|e| origin.error(e.span(), e.message()))?;
        c.origin = origin;
        Ok(c)
    }

    /// The validated `[director]` section.
    pub fn director(&self) -> Result<DirectorSpec, ConfigError> {
        let d = self.director.as_ref().ok_or_else(|| self.origin.error(None, "no [director] section"))?;
        validate_director(d.get_ref(), &self.origin, Some(d.span()))
    }

    /// The validated `[realserver]` section. Without `vips`, the VIPs of the
    /// `[director]` services.
    pub fn realserver(&self) -> Result<RealserverSpec, ConfigError> {
        let r = self.realserver.as_ref().ok_or_else(|| self.origin.error(None, "no [realserver] section"))?;
        let vips = match &r.get_ref().vips {
            Some(v) => v.clone(),
            None => match &self.director {
                Some(d) => d.get_ref().services.iter().map(|s| s.get_ref().vip).collect(),
                None => Vec::new(),
            },
        };
        validate_realserver(vips, r.get_ref().iface.clone(), &self.origin, Some(r.span()))
    }
}

/// Validate a `[director]` section (from a file or built from flags).
pub fn validate_director(
    d: &DirectorConfig,
    origin: &Origin,
    span: Option<Range<usize>>,
) -> Result<DirectorSpec, ConfigError> {
    if d.services.is_empty() {
        return Err(origin.error(span, "the director has no virtual service ([[director.service]])"));
    }
    let mut out = Vec::new();
    let mut keys = HashSet::new();
    let mut vip_iface: HashMap<IpAddr, IfName> = HashMap::new();
    for s in &d.services {
        let sp = Some(s.span());
        let vs = validate_service(s.get_ref(), d.iface.as_ref(), &Ctx { origin, span: sp.clone() })?;
        let key = vs.desired.service.key;
        if !keys.insert(key) {
            return Err(origin.error(sp, format!("virtual service {key} is listed twice")));
        }
        if let Some(prev) = vip_iface.insert(vs.vip, vs.iface.clone()) {
            if prev != vs.iface {
                let msg = format!("VIP {} is on {prev} for one service and {} for another", vs.vip, vs.iface);
                return Err(origin.error(sp, msg));
            }
        }
        out.push(vs);
    }
    let resync_interval = match d.resync_interval {
        Some(crate::check::Secs(t)) if t.is_zero() => {
            return Err(origin.error(span, "resync_interval must be longer than 0 seconds"))
        }
        Some(crate::check::Secs(t)) => Some(t),
        None => None,
    };
    let ha = match &d.ha {
        Some(h) => Some(ha::validate(h, origin)?),
        None => None,
    };
    let all_vips: Vec<IpAddr> = out.iter().map(|s| s.vip).collect();
    let bgp = match &d.bgp {
        Some(b) if ha.is_some() => {
            return Err(origin.error(
                Some(b.span()),
                "[director.bgp] and [director.ha] exclude each other: scale out over ECMP or fail over with VRRP",
            ))
        }
        Some(b) => Some(bgp::validate(b, origin, &all_vips)?),
        None => None,
    };
    let metrics = match &d.metrics {
        Some(m) => Some(
            crate::spec::parse_metrics_addr(m.get_ref())
                .map_err(|e| origin.error(Some(m.span()), format!("metrics = {:?}: {e}", m.get_ref())))?,
        ),
        None => None,
    };
    Ok(DirectorSpec { services: out, resync_interval, ha, bgp, metrics })
}

/// Where an error is reported: the origin and the span of the table.
struct Ctx<'a> {
    origin: &'a Origin,
    span: Option<Range<usize>>,
}

impl Ctx<'_> {
    fn error(&self, msg: impl fmt::Display) -> ConfigError {
        self.origin.error(self.span.clone(), msg)
    }

    fn at(&self, span: Range<usize>) -> Ctx<'_> {
        Ctx { origin: self.origin, span: Some(span) }
    }
}

/// One `[[director.service]]`, validated.
fn validate_service(
    s: &ServiceConfig,
    default_iface: Option<&IfName>,
    cx: &Ctx<'_>,
) -> Result<VirtualService, ConfigError> {
    let iface = s
        .iface
        .clone()
        .or_else(|| default_iface.cloned())
        .ok_or_else(|| cx.error(format!("no interface for VIP {}: set iface (--iface)", s.vip)))?;
    if s.vip.is_unspecified() || s.vip.is_multicast() || is_broadcast(s.vip) {
        return Err(cx.error(format!("VIP {} is not a unicast address", s.vip)));
    }
    let key = service_key(s, cx)?;
    let mut service = Service::new(key, s.scheduler.0.clone());
    if let Some(t) = s.persistence {
        let timeout = crate::spec::persistence_timeout(t).map_err(|e| cx.error(e))?;
        service.persistence = Some(Persistence { timeout, netmask: persistence_netmask(s, cx)? });
    } else if let Some(m) = &s.persistence_netmask {
        return Err(cx.error(format!("persistence_netmask {m:?} needs persistence (seconds)")));
    }
    service.sched_flags = SchedFlags::parse_list(&s.sched_flags.join(",")).map_err(|e| cx.error(e))?;
    service.one_packet = s.one_packet;
    service.pe = s.pe.clone();
    service.validate().map_err(|e| cx.error(e))?;
    if let Some(c) = &s.check {
        c.validate().map_err(|e| cx.error(e))?;
    }
    let mut dests: Vec<Destination> = Vec::new();
    let mut checks = Vec::new();
    for r in &s.reals {
        let dest = real_destination(s, &key, r.get_ref(), &cx.at(r.span()))?;
        if dests.iter().any(|x| x.addr == dest.addr) {
            return Err(cx.at(r.span()).error(format!("real server {} is listed twice in {key}", dest.addr)));
        }
        dests.push(dest);
        if let Some(c) = &r.get_ref().check {
            c.validate().map_err(|e| cx.at(r.span()).error(e))?;
        }
        checks.push(r.get_ref().check.clone().or_else(|| s.check.clone()));
    }
    let sorry_server = match &s.sorry_server {
        None => None,
        Some(r) => Some(sorry_destination(s, &key, r.get_ref(), &dests, &cx.at(r.span()))?),
    };
    Ok(VirtualService {
        desired: DesiredService { service, destinations: dests },
        vip: s.vip,
        iface,
        checks,
        on_failure: s.on_failure,
        sorry_server,
        drain_time: s.drain_time.map_or(crate::health::drain::DEFAULT_DRAIN_TIME, |t| t.0),
    })
}

/// The key of a service: address, port and protocol, or firewall mark.
fn service_key(s: &ServiceConfig, cx: &Ctx<'_>) -> Result<ServiceKey, ConfigError> {
    match (s.fwmark, s.port) {
        (Some(0), _) => Err(cx.error("fwmark 0 cannot identify a service: use 1..4294967295")),
        (Some(mark), None) => Ok(ServiceKey::Fwmark { mark, family: ipvs::Family::of(s.vip) }),
        (Some(_), Some(_)) => Err(cx.error("a fwmark service has no port: remove port (the mark selects the traffic)")),
        (None, None) => Err(cx.error(format!("missing port (or fwmark) for VIP {}", s.vip))),
        (None, Some(0)) if s.persistence.is_none() => {
            Err(cx.error("port 0 (every port) needs persistence (--persistence SECS), as in ipvsadm"))
        }
        (None, Some(port)) => Ok(ServiceKey::Inet { protocol: s.protocol, addr: SocketAddr::new(s.vip, port) }),
    }
}

/// `persistence_netmask`, in the VIP's family.
fn persistence_netmask(s: &ServiceConfig, cx: &Ctx<'_>) -> Result<Option<Netmask>, ConfigError> {
    let Some(m) = &s.persistence_netmask else { return Ok(None) };
    let mask =
        match s.vip {
            IpAddr::V4(_) => Netmask::V4(m.parse().map_err(|_| {
                cx.error(format!("persistence_netmask {m:?} is not an IPv4 netmask like 255.255.255.0"))
            })?),
            IpAddr::V6(_) => Netmask::V6(
                m.trim_start_matches('/')
                    .parse()
                    .map_err(|_| cx.error(format!("persistence_netmask {m:?} is not an IPv6 prefix length 1..128")))?,
            ),
        };
    Ok(Some(mask))
}

/// One real server of service `s`, validated.
fn real_destination(
    s: &ServiceConfig,
    key: &ServiceKey,
    r: &RealConfig,
    cx: &Ctx<'_>,
) -> Result<Destination, ConfigError> {
    if r.weight > MAX_WEIGHT {
        return Err(cx.error(format!("weight {} is out of range 0..{MAX_WEIGHT}", r.weight)));
    }
    let port = r.port.unwrap_or(s.port.unwrap_or(0));
    let forward = r.forward.unwrap_or(s.forward);
    if Family::of(r.addr) != Family::of(s.vip) && forward != ForwardMethod::Tunnel {
        return Err(cx.error(format!(
            "real server {} is {} but VIP {} is {}: the address families must match",
            r.addr,
            Family::of(r.addr),
            s.vip,
            Family::of(s.vip)
        )));
    }
    let mut dest = Destination::new(SocketAddr::new(r.addr, port), forward.forward());
    dest.weight = r.weight;
    dest.upper_threshold = r.upper_threshold;
    dest.lower_threshold = r.lower_threshold;
    match (r.tunnel, forward) {
        (None, _) => {}
        (Some(t), ForwardMethod::Tunnel) => dest.forward = Forward::Tunnel(t),
        (Some(_), _) => {
            return Err(cx.error(format!("real server {}: tunnel options need forward = \"tunnel\"", r.addr)))
        }
    }
    dest.validate(key).map_err(|e| cx.error(e))?;
    Ok(dest)
}

/// The sorry server of service `s`, validated against its real servers `dests`.
fn sorry_destination(
    s: &ServiceConfig,
    key: &ServiceKey,
    r: &RealConfig,
    dests: &[Destination],
    cx: &Ctx<'_>,
) -> Result<Destination, ConfigError> {
    let forward = r.forward.unwrap_or(s.forward);
    let mut dest = Destination::new(SocketAddr::new(r.addr, r.port.unwrap_or(s.port.unwrap_or(0))), forward.forward());
    dest.weight = r.weight;
    if r.weight == 0 || r.weight > MAX_WEIGHT {
        return Err(cx.error(format!("sorry server weight {} is out of range 1..{MAX_WEIGHT}", r.weight)));
    }
    if r.check.is_some() {
        return Err(cx.error("a sorry server is not health-checked: remove its `check`"));
    }
    dest.validate(key).map_err(|e| cx.error(e))?;
    if dests.iter().any(|x| x.addr == dest.addr) {
        return Err(cx.error(format!("sorry server {} is also a real server of {key}", dest.addr)));
    }
    Ok(dest)
}

/// Validate a real server's VIPs and interface.
pub fn validate_realserver(
    vips: Vec<IpAddr>,
    iface: Option<IfName>,
    origin: &Origin,
    span: Option<Range<usize>>,
) -> Result<RealserverSpec, ConfigError> {
    if vips.is_empty() {
        return Err(origin.error(span, "no VIP given (--vip ADDR, or vips in [realserver])"));
    }
    let mut out: Vec<IpAddr> = Vec::new();
    for v in vips {
        if v.is_unspecified() || v.is_multicast() || v.is_loopback() || is_broadcast(v) {
            return Err(origin.error(span, format!("VIP {v} is not a unicast, non-loopback address")));
        }
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(RealserverSpec { vips: out, iface })
}

fn is_broadcast(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

/// IPv4 / IPv6, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() {
            Self::V4
        } else {
            Self::V6
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if *self == Self::V4 { "IPv4" } else { "IPv6" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
[director]
iface = "enp1s0"

[[director.service]]
vip = "10.19.70.166"
port = 15858
scheduler = "rr"
real = ["10.18.68.186", "10.18.68.187"]

[realserver]
iface = "enp1s0"
"#;

    fn err(text: &str) -> String {
        match Config::parse(text, "t.toml").and_then(|c| c.director()) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn metrics_address() {
        let with =
            |v: &str| SEED.replace("iface = \"enp1s0\"\n\n[[", &format!("iface = \"enp1s0\"\nmetrics = {v}\n\n[["));
        let d = Config::parse(&with("\"127.0.0.1:9101\""), "t.toml").unwrap().director().unwrap();
        assert_eq!(d.metrics, Some("127.0.0.1:9101".parse().unwrap()));
        let d = Config::parse(&with("\"[::1]:9101\""), "t.toml").unwrap().director().unwrap();
        assert_eq!(d.metrics, Some("[::1]:9101".parse().unwrap()));
        assert_eq!(Config::parse(SEED, "t.toml").unwrap().director().unwrap().metrics, None, "off by default");
        assert_eq!(
            err(&with("\"localhost:9101\"")),
            "t.toml:4:11: metrics = \"localhost:9101\": expected ADDR:PORT, e.g. \"127.0.0.1:9101\" or \"[::1]:9101\""
        );
        assert!(err(&with("\"127.0.0.1\"")).starts_with("t.toml:4:11: metrics = \"127.0.0.1\": expected ADDR:PORT"));
        assert!(err(&with("\"127.0.0.1:0\"")).contains("the port must be 1..65535"));
        assert!(err(&with("9101")).starts_with("t.toml:4:11: invalid type: integer"), "{}", err(&with("9101")));
    }

    #[test]
    fn seed_config_gives_the_seed_services() {
        let c = Config::parse(SEED, "seed.toml").unwrap();
        let d = c.director().unwrap();
        let want = DesiredService {
            service: Service::new(ServiceKey::tcp("10.19.70.166:15858".parse().unwrap()), Scheduler::Rr),
            destinations: vec![
                Destination::new("10.18.68.186:15858".parse().unwrap(), Forward::Route),
                Destination::new("10.18.68.187:15858".parse().unwrap(), Forward::Route),
            ],
        };
        assert_eq!(d.desired_services(), vec![want]);
        assert_eq!(d.vips(), vec![("10.19.70.166".parse().unwrap(), "enp1s0".parse::<IfName>().unwrap())]);
        let r = c.realserver().unwrap();
        assert_eq!(r.vips, vec!["10.19.70.166".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.iface, Some("enp1s0".parse::<IfName>().unwrap()));
    }

    #[test]
    fn readme_example_parses_and_mirrors_the_seed() {
        let doc = include_str!("../../docs/configuration.md");
        let start = doc.find("```toml\n# lvsctl.toml").expect("docs/configuration.md has the commented config example");
        let body = &doc[start + "```toml\n".len()..];
        let body = &body[..body.find("```").unwrap()];
        let c = Config::parse(body, "docs/configuration.md").unwrap();
        let d = c.director().unwrap();
        let seed = d
            .services
            .iter()
            .find(|s| s.desired.service.key == ServiceKey::tcp("10.19.70.166:15858".parse().unwrap()))
            .expect("the coordinator pair's service");
        assert_eq!(seed.desired.service.scheduler, Scheduler::Rr);
        let addrs: Vec<String> = seed.desired.destinations.iter().map(|d| d.addr.to_string()).collect();
        assert_eq!(addrs, ["10.18.68.186:15858", "10.18.68.187:15858"]);
        assert!(seed.desired.destinations.iter().all(|d| d.forward == Forward::Route && d.weight == 1));
        assert_eq!(seed.iface.as_str(), "enp1s0");
        assert!(c.realserver().unwrap().vips.contains(&"10.19.70.166".parse().unwrap()));
    }

    #[test]
    fn real_server_forms() {
        assert_eq!(
            RealConfig::parse("10.0.0.1").unwrap(),
            RealConfig {
                addr: "10.0.0.1".parse().unwrap(),
                port: None,
                weight: 1,
                forward: None,
                upper_threshold: 0,
                lower_threshold: 0,
                tunnel: None,
                check: None
            }
        );
        let r = RealConfig::parse("10.0.0.1:8080,weight=3,forward=nat").unwrap();
        assert_eq!((r.port, r.weight, r.forward), (Some(8080), 3, Some(ForwardMethod::Nat)));
        let r = RealConfig::parse("[2001:db8::1]:80").unwrap();
        assert_eq!((r.addr, r.port), ("2001:db8::1".parse().unwrap(), Some(80)));
        assert_eq!(RealConfig::parse("2001:db8::1").unwrap().port, None);
        assert!(RealConfig::parse("10.0.0.300").unwrap_err().contains("malformed real server address"));
        assert!(RealConfig::parse("10.0.0.1:99999").unwrap_err().contains("port"));
        assert!(RealConfig::parse("10.0.0.1,weight=x").unwrap_err().contains("weight"));
        assert!(RealConfig::parse("10.0.0.1,colour=red").unwrap_err().contains("unknown option"));
    }

    #[test]
    fn table_real_servers_and_reserved_check() {
        let text = r#"
[director]
iface = "eth0.100"
[[director.service]]
vip = "10.0.0.1"
port = 80
forward = "nat"
[[director.service.real]]
addr = "10.0.1.1"
port = 8080
weight = 5
check = { type = "tcp", interval = 2 }
"#;
        let d = Config::parse(text, "t").unwrap().director().unwrap();
        let s = &d.services[0];
        assert_eq!(s.iface.as_str(), "eth0.100");
        assert_eq!(s.desired.destinations[0].addr, "10.0.1.1:8080".parse().unwrap());
        assert_eq!(s.desired.destinations[0].forward, Forward::Masq);
        assert_eq!(s.desired.destinations[0].weight, 5);
        assert!(s.checks[0].is_some());
    }

    #[test]
    fn errors_are_one_line_with_line_and_column() {
        let e = err("[director]\niface = \"enp1s0\"\n[[director.service]]\nvip = \"10.19.70.300\"\nport = 80\n");
        assert!(e.starts_with("t.toml:4:7: "), "{e}");
        assert!(!e.contains('\n'));
        let e = err(
            "[director]\niface = \"e\"\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 80\nscheduler = \"fast\"\n",
        );
        assert!(e.starts_with("t.toml:6:13: unknown scheduler \"fast\""), "{e}");
        let e = err("[director]\nifcae = \"e\"\n");
        assert!(e.starts_with("t.toml:2:1: unknown field `ifcae`"), "{e}");
        let e = err("[director\n");
        assert!(e.starts_with("t.toml:1:"), "{e}");
        let e = err("[director]\niface = \"e\"\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 80\nreal = [\"10.0.0.2,weight=70000\"]\n");
        assert!(e.starts_with("t.toml:6:") && e.contains("weight 70000 is out of range"), "{e}");
        let e = err("[director]\niface = \"e\"\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 80\nreal = [\"2001:db8::2\"]\n");
        assert!(e.contains("address families must match"), "{e}");
        let e = err("[director]\niface = \"e\"\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 0\n");
        assert!(e.contains("needs persistence"), "{e}");
        let e = err("[director]\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 1\n");
        assert!(e.starts_with("t.toml:2:1: no interface"), "{e}");
        let e = err("[director]\niface = \"a/b\"\n");
        assert!(e.starts_with("t.toml:2:9: invalid interface name"), "{e}");
        let e = err(
            "[director]\niface = \"e\"\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 1\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 1\n",
        );
        assert!(e.starts_with("t.toml:6:1: virtual service tcp 10.0.0.1:1 is listed twice"), "{e}");
    }

    #[test]
    fn realserver_defaults_to_director_vips() {
        let c = Config::parse(
            "[director]\niface = \"e\"\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 1\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 2\n[realserver]\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.realserver().unwrap().vips, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let e = Config::parse("[realserver]\n", "t").unwrap().realserver().unwrap_err();
        assert!(e.0.contains("no VIP"), "{e}");
        let e = Config::parse("[realserver]\nvips = [\"127.0.0.1\"]\n", "t").unwrap().realserver().unwrap_err();
        assert!(e.0.contains("non-loopback"), "{e}");
    }

    #[test]
    fn health_check_settings_for_director_run() {
        let text = r#"
[director]
iface = "eth0"
[[director.service]]
vip = "10.0.0.1"
port = 80
real = ["10.0.1.1", "10.0.1.2", { addr = "10.0.1.3", check = { type = "http", path = "/health" } }]
check = { type = "tcp", interval = "200ms" }
on_failure = "remove"
sorry_server = "10.0.1.9,weight=2"
"#;
        let d = Config::parse(text, "t").unwrap().director().unwrap();
        let s = &d.services[0];
        let kinds: Vec<_> = s.checks.iter().map(|c| c.as_ref().unwrap().kind).collect();
        use crate::check::CheckType;
        assert_eq!(kinds, [CheckType::Tcp, CheckType::Tcp, CheckType::Http], "the service's check is the default");
        assert_eq!(s.on_failure, OnFailure::Remove);
        let sorry = s.sorry_server.as_ref().unwrap();
        assert_eq!((sorry.addr, sorry.weight), ("10.0.1.9:80".parse().unwrap(), 2));
        // director start ignores all of it: the desired services are the same.
        assert_eq!(s.desired.destinations.len(), 3);
        assert!(s.desired.destinations.iter().all(|x| x.weight == 1));

        let e = err("[director]\niface = \"e\"\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 80\nreal = [\"10.0.0.2\"]\nsorry_server = \"10.0.0.2\"\n");
        assert!(e.starts_with("t.toml:7:16: sorry server 10.0.0.2:80 is also a real server"), "{e}");
        let e = err("[director]\niface = \"e\"\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 80\ncheck = { type = \"ping\" }\n");
        assert!(e.starts_with("t.toml:6:") && e.contains("unknown variant `ping`"), "{e}");
        let e = err(
            "[director]\niface = \"e\"\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 80\non_failure = \"panic\"\n",
        );
        assert!(e.starts_with("t.toml:6:") && e.contains("unknown variant `panic`"), "{e}");
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 3), (2, 1));
    }

    fn director_of(text: &str) -> Result<DirectorSpec, ConfigError> {
        Config::parse(text, "t.toml")?.director()
    }

    #[test]
    fn every_service_and_real_server_option() {
        let d = director_of(
            r#"
[director]
iface = "eth0"
[[director.service]]
vip = "10.0.0.10"
port = 80
scheduler = "sh"
sched_flags = ["sh-port", "sh-fallback"]
persistence = 600
persistence_netmask = "255.255.255.0"
pe = "sip"
forward = "tunnel"
[[director.service.real]]
addr = "10.0.1.1"
weight = 5
upper_threshold = 100
lower_threshold = 10
tunnel = "gue"
tunnel_port = 6080
tunnel_checksum = "remcsum"
[[director.service.real]]
addr = "10.0.1.2"
tunnel = "gre"
tunnel_checksum = "csum"
[[director.service]]
vip = "2001:db8::10"
fwmark = 7
scheduler = "rr"
one_packet = true
persistence = 60
persistence_netmask = "64"
real = ["[2001:db8::1],upper=9,lower=3"]
"#,
        )
        .unwrap();
        let s = &d.services[0].desired;
        assert_eq!(s.service.sched_flags, SchedFlags::FLAG_1 | SchedFlags::FLAG_2);
        assert_eq!(
            s.service.persistence,
            Some(Persistence { timeout: 600, netmask: Some(Netmask::V4("255.255.255.0".parse().unwrap())) })
        );
        assert_eq!(s.service.pe.as_deref(), Some("sip"));
        let r = &s.destinations[0];
        assert_eq!((r.weight, r.upper_threshold, r.lower_threshold), (5, 100, 10));
        assert_eq!(r.forward, Forward::Tunnel(Tunnel::Gue { port: 6080, checksum: ipvs::TunnelChecksum::RemCsum }));
        assert_eq!(s.destinations[1].forward, Forward::Tunnel(Tunnel::Gre { checksum: ipvs::TunnelChecksum::Csum }));
        let f = &d.services[1];
        assert_eq!(f.desired.service.key, ServiceKey::Fwmark { mark: 7, family: ipvs::Family::Inet6 });
        assert!(f.desired.service.one_packet);
        assert_eq!(f.desired.service.persistence.unwrap().netmask, Some(Netmask::V6(64)));
        assert_eq!(f.desired.destinations[0].addr, "[2001:db8::1]:0".parse().unwrap());
        assert_eq!((f.desired.destinations[0].upper_threshold, f.desired.destinations[0].lower_threshold), (9, 3));
        // The fwmark service's VIP still goes on the interface.
        assert_eq!(d.vips().len(), 2);
    }

    #[test]
    fn bad_service_and_real_server_options_are_named() {
        let base = "[director]\niface = \"eth0\"\n[[director.service]]\nvip = \"10.0.0.10\"\n";
        for (extra, want) in [
            ("port = 80\npersistence_netmask = \"255.255.255.0\"\n", "needs persistence"),
            ("port = 80\npersistence = 60\npersistence_netmask = \"64\"\n", "not an IPv4 netmask"),
            ("port = 80\nsched_flags = [\"sh-nope\"]\n", "unknown scheduler flag"),
            ("fwmark = 0\n", "fwmark 0"),
            ("fwmark = 3\nport = 80\n", "has no port"),
            ("scheduler = \"rr\"\n", "missing port"),
            ("port = 80\nreal = [{ addr = \"10.0.1.1\", tunnel = \"gue\" }]\n", "tunnel_port"),
            ("port = 80\nreal = [{ addr = \"10.0.1.1\", tunnel = \"gre\" }]\n", "need forward = \"tunnel\""),
            ("port = 80\nreal = [\"10.0.1.1,upper=5,lower=9\"]\n", "lower threshold 9 is above upper threshold 5"),
            ("port = 80\nreal = [\"10.0.1.1,upper=x\"]\n", "threshold"),
            // The kernel multiplies the timeout by HZ in 32 bits: capped as ipvsadm caps it.
            ("port = 80\npersistence = 4294968\n", "persistence timeout 4294968 is out of range"),
            ("port = 80\npersistence = 2678401\n", "1 to 2678400 seconds"),
            ("port = 0\npersistence = 0\n", "persistence timeout 0 is out of range"),
        ] {
            let e = director_of(&format!("{base}{extra}")).unwrap_err().0;
            assert!(e.contains(want), "{extra:?}: {e:?} does not say {want:?}");
        }
    }
}
