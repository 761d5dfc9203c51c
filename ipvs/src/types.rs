//! The typed model: virtual services, destinations, statistics, timeouts,
//! sync daemons and info.
//!
//! Words used throughout: a *virtual service* ([`Service`]) is what clients
//! connect to, identified by a [`ServiceKey`]; a *destination* ([`Destination`],
//! the kernel's word for a real server) is where the service forwards, with a
//! [`Forward`] method (the *forwarding method*); the *scheduler* picks a
//! destination for each new connection.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Transport protocol of a virtual service.
///
/// IPVS balances TCP, UDP and SCTP; [`Protocol::Other`] holds any other
/// protocol number another tool put in the table (the kernel's generic netlink
/// interface does not check it: ESP, 50, is seen in the wild), so that such a
/// service can be listed and deleted, never created or edited.
///
/// ```
/// use ipvs::Protocol;
/// assert_eq!("udp".parse::<Protocol>().unwrap(), Protocol::Udp);
/// assert_eq!(Protocol::Sctp.number(), 132);
/// assert_eq!(Protocol::from_number(50), Protocol::Other(50)); // ESP
/// assert!("icmp".parse::<Protocol>().is_err()); // IPVS balances TCP, UDP and SCTP only
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize), serde(rename_all = "lowercase"))]
pub enum Protocol {
    /// TCP (`IPPROTO_TCP`).
    Tcp,
    /// UDP (`IPPROTO_UDP`).
    Udp,
    /// SCTP (`IPPROTO_SCTP`).
    Sctp,
    /// Any other IP protocol number, as read from the kernel.
    Other(u16),
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u16 {
        match self {
            Self::Tcp => ipvs_sys::constants::IPPROTO_TCP,
            Self::Udp => ipvs_sys::constants::IPPROTO_UDP,
            Self::Sctp => ipvs_sys::constants::IPPROTO_SCTP,
            Self::Other(n) => n,
        }
    }

    /// The protocol for an IP protocol number: [`Protocol::Other`] for
    /// numbers other than TCP's, UDP's and SCTP's.
    pub fn from_number(n: u16) -> Self {
        match n {
            ipvs_sys::constants::IPPROTO_TCP => Self::Tcp,
            ipvs_sys::constants::IPPROTO_UDP => Self::Udp,
            ipvs_sys::constants::IPPROTO_SCTP => Self::Sctp,
            n => Self::Other(n),
        }
    }

    /// Lower-case name: `tcp`, `udp`, `sctp`; `other` for [`Protocol::Other`]
    /// (its [`Display`](fmt::Display) tells the number).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
            Self::Other(_) => "other",
        }
    }
}

impl fmt::Display for Protocol {
    /// `tcp`, `udp`, `sctp`, or `protocol 50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(n) => write!(f, "protocol {n}"),
            _ => f.write_str(self.name()),
        }
    }
}

impl FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "sctp" => Ok(Self::Sctp),
            _ => Err(Error::invalid(format!("unknown protocol {s:?}: expected tcp, udp or sctp"))),
        }
    }
}

/// Address family.
///
/// ```
/// use ipvs::Family;
/// assert_eq!(Family::of("2001:db8::1".parse().unwrap()), Family::Inet6);
/// assert_eq!(Family::Inet.af(), 2); // AF_INET
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize), serde(rename_all = "lowercase"))]
pub enum Family {
    /// IPv4.
    Inet,
    /// IPv6.
    Inet6,
}

impl Family {
    /// `AF_INET` or `AF_INET6`.
    pub fn af(self) -> u16 {
        match self {
            Self::Inet => ipvs_sys::constants::AF_INET,
            Self::Inet6 => ipvs_sys::constants::AF_INET6,
        }
    }

    /// The family for an `AF_*` number.
    pub fn from_af(af: u16) -> Option<Self> {
        match af {
            ipvs_sys::constants::AF_INET => Some(Self::Inet),
            ipvs_sys::constants::AF_INET6 => Some(Self::Inet6),
            _ => None,
        }
    }

    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::Inet,
            IpAddr::V6(_) => Self::Inet6,
        }
    }
}

/// What identifies a virtual service.
///
/// ```
/// use ipvs::{Family, ServiceKey};
/// let web = ServiceKey::tcp("10.0.0.1:80".parse().unwrap()); // ipvsadm -t 10.0.0.1:80
/// let dns = ServiceKey::udp("[2001:db8::1]:53".parse().unwrap()); // ipvsadm -u [2001:db8::1]:53
/// let marked = ServiceKey::fwmark(7, Family::Inet6); // ipvsadm -f 7 -6
/// assert_eq!(web.to_string(), "tcp 10.0.0.1:80");
/// assert_eq!(dns.family(), Family::Inet6);
/// assert_eq!(marked.to_string(), "fwmark 7 ipv6");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize), serde(rename_all = "lowercase", tag = "type"))]
pub enum ServiceKey {
    /// A protocol and a virtual address and port (`ipvsadm -t/-u/--sctp-service`).
    /// Port 0 means every port (a persistent service is needed for that to be useful).
    Inet {
        /// Transport protocol.
        protocol: Protocol,
        /// Virtual IP and port.
        addr: SocketAddr,
    },
    /// A firewall mark set by netfilter (`ipvsadm -f`), per address family.
    Fwmark {
        /// The mark (non-zero).
        mark: u32,
        /// The address family of the traffic.
        family: Family,
    },
}

impl ServiceKey {
    /// A TCP service.
    pub fn tcp(addr: SocketAddr) -> Self {
        Self::Inet { protocol: Protocol::Tcp, addr }
    }

    /// A UDP service.
    pub fn udp(addr: SocketAddr) -> Self {
        Self::Inet { protocol: Protocol::Udp, addr }
    }

    /// An SCTP service.
    pub fn sctp(addr: SocketAddr) -> Self {
        Self::Inet { protocol: Protocol::Sctp, addr }
    }

    /// A firewall-mark service.
    pub fn fwmark(mark: u32, family: Family) -> Self {
        Self::Fwmark { mark, family }
    }

    /// The address family.
    pub fn family(&self) -> Family {
        match self {
            Self::Inet { addr, .. } => Family::of(addr.ip()),
            Self::Fwmark { family, .. } => *family,
        }
    }

    /// Whether this is a firewall-mark service.
    pub fn is_fwmark(&self) -> bool {
        matches!(self, Self::Fwmark { .. })
    }

    /// The sort key ipvsadm lists services by: fwmark, family, protocol, address, port.
    pub fn sort_key(&self) -> (u32, u16, u16, IpAddr, u16) {
        match self {
            Self::Inet { protocol, addr } => (0, Family::of(addr.ip()).af(), protocol.number(), addr.ip(), addr.port()),
            Self::Fwmark { mark, family } => (*mark, family.af(), 0, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        }
    }
}

impl fmt::Display for ServiceKey {
    /// `tcp 10.0.0.1:80`, `udp [2001:db8::1]:53`, `fwmark 1`, `fwmark 1 ipv6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inet { protocol, addr } => write!(f, "{protocol} {addr}"),
            Self::Fwmark { mark, family: Family::Inet } => write!(f, "fwmark {mark}"),
            Self::Fwmark { mark, family: Family::Inet6 } => write!(f, "fwmark {mark} ipv6"),
        }
    }
}

/// A scheduler: how a virtual service picks a destination for a new connection.
///
/// ```
/// use ipvs::Scheduler;
/// assert_eq!("mh".parse::<Scheduler>().unwrap(), Scheduler::Mh);
/// // An out-of-tree module ip_vs_mysched:
/// assert_eq!(Scheduler::from_name("mysched").unwrap(), Scheduler::Other("mysched".into()));
/// assert!(Scheduler::from_name("no/such").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize), serde(into = "String", try_from = "String"))]
pub enum Scheduler {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection (ipvsadm's default).
    #[default]
    Wlc,
    /// Locality-based least connection.
    Lblc,
    /// Locality-based least connection with replication.
    Lblcr,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Weighted failover (3.18+).
    Fo,
    /// Weighted overflow (4.3+).
    Ovf,
    /// Maglev hashing (4.18+).
    Mh,
    /// Weighted random twos choice (5.12+).
    Twos,
    /// Any other (out-of-tree) scheduler module `ip_vs_<name>`.
    Other(String),
}

impl Scheduler {
    /// Every mainline scheduler.
    pub const MAINLINE: [Scheduler; 14] = [
        Self::Rr,
        Self::Wrr,
        Self::Lc,
        Self::Wlc,
        Self::Lblc,
        Self::Lblcr,
        Self::Dh,
        Self::Sh,
        Self::Sed,
        Self::Nq,
        Self::Fo,
        Self::Ovf,
        Self::Mh,
        Self::Twos,
    ];

    /// The kernel's name for it.
    pub fn name(&self) -> &str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Lblc => "lblc",
            Self::Lblcr => "lblcr",
            Self::Dh => "dh",
            Self::Sh => "sh",
            Self::Sed => "sed",
            Self::Nq => "nq",
            Self::Fo => "fo",
            Self::Ovf => "ovf",
            Self::Mh => "mh",
            Self::Twos => "twos",
            Self::Other(s) => s,
        }
    }

    /// The scheduler with this name. Names of unknown schedulers are accepted
    /// (as [`Scheduler::Other`]) when they could be a kernel module name.
    pub fn from_name(name: &str) -> Result<Self, Error> {
        if let Some(s) = Self::MAINLINE.iter().find(|s| s.name() == name) {
            return Ok(s.clone());
        }
        if name.is_empty()
            || name.len() > ipvs_sys::constants::SCHEDNAME_MAXLEN
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::invalid(format!(
                "invalid scheduler name {name:?}: expected one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos, or a module name of at most 15 characters"
            )));
        }
        Ok(Self::Other(name.to_owned()))
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheduler {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_name(s)
    }
}

impl From<Scheduler> for String {
    fn from(s: Scheduler) -> String {
        s.name().to_owned()
    }
}

impl TryFrom<String> for Scheduler {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::from_name(&s)
    }
}

bitflags::bitflags! {
    /// Scheduler flags (`ipvsadm -b`), the `IP_VS_SVC_F_SCHED1..3` bits of
    /// a service's `FLAGS`: `flag-1`/`flag-2`/`flag-3`, called
    /// `sh-fallback`/`sh-port` for sh and `mh-fallback`/`mh-port` for mh.
    ///
    /// ```
    /// use ipvs::{SchedFlags, Scheduler};
    /// let f = SchedFlags::parse_list("sh-port,sh-fallback").unwrap(); // ipvsadm -b sh-port,sh-fallback
    /// assert_eq!(f, SchedFlags::SH_FALLBACK | SchedFlags::SH_PORT);
    /// assert_eq!(f, SchedFlags::FLAG_1 | SchedFlags::FLAG_2);
    /// assert_eq!(f.names(&Scheduler::Sh), ["sh-fallback", "sh-port"]);
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SchedFlags: u32 {
        /// `flag-1` (`sh-fallback`, `mh-fallback`).
        const FLAG_1 = ipvs_sys::constants::svc_flags::SCHED1;
        /// `flag-2` (`sh-port`, `mh-port`).
        const FLAG_2 = ipvs_sys::constants::svc_flags::SCHED2;
        /// `flag-3`.
        const FLAG_3 = ipvs_sys::constants::svc_flags::SCHED3;
    }
}

/// As the bits (a number), so that records written before keep reading.
#[cfg(feature = "serde")]
impl Serialize for SchedFlags {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.bits().serialize(s)
    }
}

#[cfg(feature = "serde")]
impl<'de> Deserialize<'de> for SchedFlags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Unknown bits are kept: `Service::validate` refuses them.
        u32::deserialize(d).map(Self::from_bits_retain)
    }
}

impl SchedFlags {
    /// No flag.
    pub const NONE: SchedFlags = SchedFlags::empty();
    /// `sh-fallback`: [`SchedFlags::FLAG_1`] of the sh scheduler.
    pub const SH_FALLBACK: SchedFlags = SchedFlags::FLAG_1;
    /// `sh-port`: [`SchedFlags::FLAG_2`] of the sh scheduler.
    pub const SH_PORT: SchedFlags = SchedFlags::FLAG_2;
    /// `mh-fallback`: [`SchedFlags::FLAG_1`] of the mh scheduler.
    pub const MH_FALLBACK: SchedFlags = SchedFlags::FLAG_1;
    /// `mh-port`: [`SchedFlags::FLAG_2`] of the mh scheduler.
    pub const MH_PORT: SchedFlags = SchedFlags::FLAG_2;

    /// Parse a comma-separated list as `ipvsadm -b` takes it (`sh-port,sh-fallback`, `flag-1`).
    pub fn parse_list(s: &str) -> Result<Self, Error> {
        let mut out = Self::empty();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            out |= match name {
                "flag-1" | "sh-fallback" | "mh-fallback" => Self::FLAG_1,
                "flag-2" | "sh-port" | "mh-port" => Self::FLAG_2,
                "flag-3" => Self::FLAG_3,
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown scheduler flag {name:?}: expected flag-1, flag-2, flag-3, sh-fallback, sh-port, mh-fallback or mh-port"
                    )))
                }
            };
        }
        Ok(out)
    }

    /// The flag names as ipvsadm prints them for `scheduler` (`sh-fallback`, `flag-1`, ...).
    pub fn names(self, scheduler: &Scheduler) -> Vec<&'static str> {
        let (f1, f2, f3) = match scheduler {
            Scheduler::Sh => ("sh-fallback", "sh-port", "flag-3"),
            Scheduler::Mh => ("mh-fallback", "mh-port", "flag-3"),
            _ => ("flag-1", "flag-2", "flag-3"),
        };
        let mut v = Vec::new();
        if self.contains(Self::FLAG_1) {
            v.push(f1);
        }
        if self.contains(Self::FLAG_2) {
            v.push(f2);
        }
        if self.contains(Self::FLAG_3) {
            v.push(f3);
        }
        v
    }
}

/// Persistence granularity: which client addresses share a destination.
///
/// ```
/// use ipvs::{Family, Netmask};
/// let per_subnet = Netmask::V4("255.255.255.0".parse().unwrap()); // -M 255.255.255.0
/// let per_64 = Netmask::V6(64); // -M 64 on an IPv6 service
/// assert!(!per_subnet.is_full() && !per_64.is_full());
/// assert!(Netmask::full(Family::Inet6).is_full());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize), serde(rename_all = "lowercase"))]
pub enum Netmask {
    /// IPv4 netmask (`-M 255.255.255.0`).
    V4(Ipv4Addr),
    /// IPv6 prefix length, 1..=128 (`-M 64`).
    V6(u8),
}

impl Netmask {
    /// The full mask for a family: `255.255.255.255` or `/128` (one client per address).
    pub fn full(family: Family) -> Self {
        match family {
            Family::Inet => Self::V4(Ipv4Addr::BROADCAST),
            Family::Inet6 => Self::V6(128),
        }
    }

    /// Whether this is the full mask of its family.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::V4(m) if *m == Ipv4Addr::BROADCAST) || matches!(self, Self::V6(128))
    }
}

impl fmt::Display for Netmask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(m) => write!(f, "{m}"),
            Self::V6(p) => write!(f, "{p}"),
        }
    }
}

/// Persistence (`ipvsadm -p/-M`): a client keeps going to the same destination.
///
/// ```
/// use ipvs::{Netmask, Persistence, Scheduler, Service, ServiceKey};
/// // ipvsadm -A -t 10.0.0.1:443 -s wlc -p 600 -M 255.255.255.0
/// let s = Service::new(ServiceKey::tcp("10.0.0.1:443".parse().unwrap()), Scheduler::Wlc)
///     .with_persistence(Persistence { timeout: 600, netmask: Some(Netmask::V4("255.255.255.0".parse().unwrap())) });
/// assert!(s.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Persistence {
    /// Seconds a client's affinity lasts after its last connection (ipvsadm default 300).
    pub timeout: u32,
    /// Client address granularity; `None` means the full mask of the service's family.
    pub netmask: Option<Netmask>,
}

/// A virtual service's configuration.
///
/// ```
/// use ipvs::{Persistence, Netmask, SchedFlags, Scheduler, Service, ServiceKey};
/// // ipvsadm -A -u 10.0.0.1:53 -s sh -b sh-port -o
/// let dns = Service::new(ServiceKey::udp("10.0.0.1:53".parse().unwrap()), Scheduler::Sh)
///     .with_sched_flags(SchedFlags::FLAG_2)
///     .with_one_packet(true);
/// assert!(dns.validate().is_ok());
/// // Refused before anything is sent: an IPv6 netmask out of 1..128.
/// let bad = Service::new(ServiceKey::tcp("[2001:db8::1]:80".parse().unwrap()), Scheduler::Rr)
///     .with_persistence(Persistence { timeout: 60, netmask: Some(Netmask::V6(129)) });
/// assert!(matches!(bad.validate(), Err(ipvs::Error::Invalid(_))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[non_exhaustive]
pub struct Service {
    /// What identifies it.
    pub key: ServiceKey,
    /// The scheduler.
    pub scheduler: Scheduler,
    /// Scheduler flags.
    pub sched_flags: SchedFlags,
    /// Persistence, if any.
    pub persistence: Option<Persistence>,
    /// One-packet scheduling (`-o`, for UDP): schedule every datagram.
    pub one_packet: bool,
    /// Persistence engine (`--pe sip`).
    pub pe: Option<String>,
}

impl Service {
    /// A service with the given key and scheduler, no flags, no persistence.
    pub fn new(key: ServiceKey, scheduler: Scheduler) -> Self {
        Self { key, scheduler, sched_flags: SchedFlags::NONE, persistence: None, one_packet: false, pe: None }
    }

    /// With these scheduler flags (`-b`).
    pub fn with_sched_flags(mut self, flags: SchedFlags) -> Self {
        self.sched_flags = flags;
        self
    }

    /// With persistence (`-p`, `-M`), or without (`None`).
    pub fn with_persistence(mut self, persistence: impl Into<Option<Persistence>>) -> Self {
        self.persistence = persistence.into();
        self
    }

    /// With or without one-packet scheduling (`-o`).
    pub fn with_one_packet(mut self, one_packet: bool) -> Self {
        self.one_packet = one_packet;
        self
    }

    /// With a persistence engine (`--pe sip`), or without (`None`).
    pub fn with_pe(mut self, pe: impl Into<Option<String>>) -> Self {
        self.pe = pe.into();
        self
    }

    /// The netmask that is sent to the kernel.
    pub fn netmask(&self) -> Netmask {
        self.persistence.and_then(|p| p.netmask).unwrap_or_else(|| Netmask::full(self.key.family()))
    }

    /// Check what the kernel would reject or silently mis-handle.
    pub fn validate(&self) -> Result<(), Error> {
        let family = self.key.family();
        if let ServiceKey::Fwmark { mark, .. } = self.key {
            if mark == 0 {
                return Err(Error::invalid("firewall mark 0 cannot identify a service: use a non-zero mark"));
            }
        }
        if let ServiceKey::Inet { protocol: Protocol::Other(n), .. } = self.key {
            return Err(Error::invalid(format!(
                "IPVS balances tcp, udp and sctp only, not protocol {n}: such a service can be listed and deleted, not created or edited"
            )));
        }
        if let ServiceKey::Inet { addr, .. } = self.key {
            if addr.ip().is_unspecified() {
                return Err(Error::invalid(format!("virtual address {} is unspecified", addr.ip())));
            }
        }
        match (family, self.netmask()) {
            (Family::Inet, Netmask::V6(_)) => {
                return Err(Error::invalid(
                    "an IPv4 service needs an IPv4 netmask (like 255.255.255.0), not a prefix length",
                ))
            }
            (Family::Inet6, Netmask::V4(_)) => {
                return Err(Error::invalid("an IPv6 service needs a prefix length 1..128 as netmask"))
            }
            (Family::Inet6, Netmask::V6(p)) if !(1..=128).contains(&p) => {
                return Err(Error::invalid(format!("IPv6 netmask /{p} is out of range 1..128")))
            }
            (Family::Inet, Netmask::V4(m)) => {
                let bits = u32::from(m);
                if bits.leading_ones() + bits.trailing_zeros() != 32 {
                    return Err(Error::invalid(format!("netmask {m} is not a contiguous mask")));
                }
            }
            _ => {}
        }
        if let Some(p) = self.persistence {
            if p.timeout == 0 {
                return Err(Error::invalid("persistence timeout must be at least 1 second"));
            }
        }
        if self.sched_flags.bits() & !SchedFlags::all().bits() != 0 {
            return Err(Error::invalid(format!(
                "scheduler flags {:#x} has bits outside flag-1..flag-3",
                self.sched_flags.bits()
            )));
        }
        if let Some(pe) = &self.pe {
            if pe.is_empty() || pe.len() > ipvs_sys::constants::PENAME_MAXLEN {
                return Err(Error::invalid(format!("persistence engine name {pe:?} must be 1..15 characters")));
            }
        }
        Scheduler::from_name(self.scheduler.name())?;
        Ok(())
    }
}

/// Checksum option of a GUE or GRE tunnel (`--tun-nocsum/--tun-csum/--tun-remcsum`).
///
/// ```
/// use ipvs::TunnelChecksum;
/// assert_eq!(TunnelChecksum::from_flags(TunnelChecksum::Csum.flags()), TunnelChecksum::Csum);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize), serde(rename_all = "lowercase"))]
pub enum TunnelChecksum {
    /// No checksum (the default).
    #[default]
    NoCsum,
    /// Outer checksum.
    Csum,
    /// Remote checksum offload.
    RemCsum,
}

impl TunnelChecksum {
    /// The `TUN_FLAGS` value.
    pub fn flags(self) -> u16 {
        use ipvs_sys::constants::tun_flags;
        match self {
            Self::NoCsum => tun_flags::NOCSUM,
            Self::Csum => tun_flags::CSUM,
            Self::RemCsum => tun_flags::REMCSUM,
        }
    }

    /// From a `TUN_FLAGS` value.
    pub fn from_flags(f: u16) -> Self {
        use ipvs_sys::constants::tun_flags;
        if f & tun_flags::REMCSUM != 0 {
            Self::RemCsum
        } else if f & tun_flags::CSUM != 0 {
            Self::Csum
        } else {
            Self::NoCsum
        }
    }
}

/// Tunnel encapsulation for [`Forward::Tunnel`].
///
/// ```
/// use ipvs::{Forward, Tunnel, TunnelChecksum};
/// // ipvsadm -i --tun-type gue --tun-port 6080 --tun-csum
/// let gue = Forward::Tunnel(Tunnel::Gue { port: 6080, checksum: TunnelChecksum::Csum });
/// let ipip = Forward::Tunnel(Tunnel::Ipip); // ipvsadm -i
/// assert_eq!((gue.name(), ipip.name()), ("Tunnel", "Tunnel"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize), serde(rename_all = "lowercase", tag = "type"))]
pub enum Tunnel {
    /// IP in IP (the default).
    #[default]
    Ipip,
    /// Generic UDP encapsulation to a UDP port (5.2+).
    Gue {
        /// Destination UDP port of the encapsulation (non-zero).
        port: u16,
        /// Checksum option.
        checksum: TunnelChecksum,
    },
    /// GRE (5.3+).
    Gre {
        /// Checksum option.
        checksum: TunnelChecksum,
    },
}

/// Forwarding method: how packets reach a destination.
///
/// ```
/// use ipvs::Forward;
/// assert_eq!(Forward::default(), Forward::Route); // ipvsadm's default, -g
/// assert_eq!(Forward::Masq.name(), "Masq"); // -m
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize), serde(rename_all = "lowercase"))]
pub enum Forward {
    /// Masquerading, NAT (`-m`).
    Masq,
    /// Local node (the kernel sets it for local destinations; shown as Local).
    Local,
    /// Direct routing, DR (`-g`, ipvsadm's default).
    #[default]
    Route,
    /// Tunnelling (`-i`).
    Tunnel(Tunnel),
    /// Cache bypass.
    Bypass,
    /// Any other `FWD_METHOD` value (masked with 7), as read from the kernel.
    /// It can be listed and deleted, never set.
    Other(u32),
}

impl Forward {
    /// The `FWD_METHOD` value.
    pub fn method(&self) -> u32 {
        use ipvs_sys::constants::fwd;
        match self {
            Self::Masq => fwd::MASQ,
            Self::Local => fwd::LOCALNODE,
            Self::Route => fwd::DROUTE,
            Self::Tunnel(_) => fwd::TUNNEL,
            Self::Bypass => fwd::BYPASS,
            Self::Other(m) => *m,
        }
    }

    /// The forwarding method of a `FWD_METHOD` value, with the tunnel
    /// attributes that go with [`Forward::Tunnel`].
    pub fn from_method(method: u32, tunnel: Tunnel) -> Self {
        use ipvs_sys::constants::fwd;
        match method & fwd::MASK {
            fwd::MASQ => Self::Masq,
            fwd::LOCALNODE => Self::Local,
            fwd::DROUTE => Self::Route,
            fwd::BYPASS => Self::Bypass,
            fwd::TUNNEL => Self::Tunnel(tunnel),
            other => Self::Other(other),
        }
    }

    /// The name ipvsadm lists it with: `Masq`, `Local`, `Tunnel`, `Route`,
    /// `Bypass`; `Other` for [`Forward::Other`].
    pub fn name(&self) -> &'static str {
        match self {
            Self::Masq => "Masq",
            Self::Local => "Local",
            Self::Route => "Route",
            Self::Tunnel(_) => "Tunnel",
            Self::Bypass => "Bypass",
            Self::Other(_) => "Other",
        }
    }
}

/// A destination (real server) of a virtual service: the configuration part.
///
/// ```
/// use ipvs::{Destination, Forward, ServiceKey};
/// let key = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
/// // ipvsadm -a -t 10.0.0.1:80 -r 192.168.1.10:8080 -m -w 3 -x 100 -y 50
/// let nat = Destination::new("192.168.1.10:8080".parse().unwrap(), Forward::Masq)
///     .with_weight(3)
///     .with_thresholds(100, 50);
/// assert!(nat.validate(&key).is_ok());
/// // Direct routing cannot change the port: refused before sending.
/// let dr = Destination::new("192.168.1.10:8080".parse().unwrap(), Forward::Route);
/// assert!(dr.validate(&key).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[non_exhaustive]
pub struct Destination {
    /// Real server address and port. Port 0 on a fwmark service means "the
    /// port the client asked for".
    pub addr: SocketAddr,
    /// Forwarding method.
    pub forward: Forward,
    /// Weight, 0..=2147483647 (0: no new connections). ipvsadm allows 0..65535.
    pub weight: u32,
    /// Upper connection threshold, 0..=2147483647 (0: none): above it the
    /// destination gets no new connections.
    pub upper_threshold: u32,
    /// Lower connection threshold, 0..=`upper_threshold` (0: none): the
    /// destination takes new connections again below it. Must not exceed the
    /// upper threshold, not even when that is 0.
    pub lower_threshold: u32,
}

impl Destination {
    /// A destination with weight 1 and no thresholds.
    pub fn new(addr: SocketAddr, forward: Forward) -> Self {
        Self { addr, forward, weight: 1, upper_threshold: 0, lower_threshold: 0 }
    }

    /// With this weight (`-w`).
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// With these connection thresholds (`-x upper -y lower`; 0: none).
    pub fn with_thresholds(mut self, upper: u32, lower: u32) -> Self {
        self.upper_threshold = upper;
        self.lower_threshold = lower;
        self
    }

    /// Check what the kernel would reject or silently mis-handle for a
    /// destination of the service `key`.
    pub fn validate(&self, key: &ServiceKey) -> Result<(), Error> {
        if self.weight > i32::MAX as u32 {
            return Err(Error::invalid(format!("weight {} is out of range 0..2147483647", self.weight)));
        }
        // The kernel reads the thresholds as u32 but refuses values above
        // i32::MAX (EINVAL), and refuses lower > upper even when upper is 0
        // ("no limit") with ERANGE.
        for (name, v) in [("upper", self.upper_threshold), ("lower", self.lower_threshold)] {
            if v > i32::MAX as u32 {
                return Err(Error::invalid(format!("{name} threshold {v} is out of range 0..2147483647")));
            }
        }
        if self.lower_threshold > self.upper_threshold {
            return Err(Error::invalid(if self.upper_threshold == 0 {
                format!(
                    "lower threshold {} needs an upper threshold at least as high (0 means no upper threshold, and the kernel then refuses any lower one)",
                    self.lower_threshold
                )
            } else {
                format!("lower threshold {} is above upper threshold {}", self.lower_threshold, self.upper_threshold)
            }));
        }
        if self.addr.ip().is_unspecified() || self.addr.ip().is_multicast() {
            return Err(Error::invalid(format!("real server address {} is not a unicast address", self.addr.ip())));
        }
        let fam = Family::of(self.addr.ip());
        if fam != key.family() && !matches!(self.forward, Forward::Tunnel(_)) {
            return Err(Error::invalid(format!(
                "real server {} is {} but the service {key} is {}: mixed address families need tunnel forwarding",
                self.addr.ip(),
                fam_name(fam),
                fam_name(key.family())
            )));
        }
        if let ServiceKey::Inet { addr, .. } = key {
            if matches!(self.forward, Forward::Route | Forward::Tunnel(_)) && self.addr.port() != addr.port() {
                return Err(Error::invalid(format!(
                    "real server port {} differs from the service port {}: {} forwarding cannot change the port (use NAT, or the service port)",
                    self.addr.port(),
                    addr.port(),
                    if matches!(self.forward, Forward::Route) { "direct routing" } else { "tunnel" }
                )));
            }
        }
        if let Forward::Other(m) = self.forward {
            return Err(Error::invalid(format!(
                "forwarding method {m} is unknown: a destination can be set only with masq, local, route, tunnel or bypass"
            )));
        }
        if let Forward::Tunnel(Tunnel::Gue { port: 0, .. }) = self.forward {
            return Err(Error::invalid("a GUE tunnel needs a non-zero tunnel port"));
        }
        if let Forward::Tunnel(Tunnel::Gre { checksum: TunnelChecksum::RemCsum }) = self.forward {
            // The kernel stores the flag but its GRE encapsulation ignores it.
            return Err(Error::invalid(
                "remote checksum offload is a GUE option: a GRE tunnel takes no checksum or a checksum",
            ));
        }
        Ok(())
    }
}

fn fam_name(f: Family) -> &'static str {
    match f {
        Family::Inet => "IPv4",
        Family::Inet6 => "IPv6",
    }
}

/// Traffic counters and rates. Rates are per second, estimated by the kernel
/// over about 2 s: a read right after traffic may still show 0.
///
/// ```
/// # async fn f() -> Result<(), ipvs::Error> {
/// let ipvs = ipvs::Ipvs::connect().await?;
/// for s in ipvs.services().await? {
///     let st = s.stats;
///     println!("{}: {} conns, {} B in, {} B out, {} conn/s", s.service.key, st.conns, st.in_bytes, st.out_bytes, st.cps);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[non_exhaustive]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub in_pkts: u64,
    /// Outgoing packets.
    pub out_pkts: u64,
    /// Incoming bytes.
    pub in_bytes: u64,
    /// Outgoing bytes.
    pub out_bytes: u64,
    /// Connections per second.
    pub cps: u64,
    /// Incoming packets per second.
    pub in_pps: u64,
    /// Outgoing packets per second.
    pub out_pps: u64,
    /// Incoming bytes per second.
    pub in_bps: u64,
    /// Outgoing bytes per second.
    pub out_bps: u64,
}

/// A virtual service as read from the kernel: configuration and counters.
///
/// ```
/// # async fn f() -> Result<(), ipvs::Error> {
/// let entry = ipvs::Ipvs::connect().await?.service(&ipvs::ServiceKey::tcp("10.0.0.1:80".parse().unwrap())).await?;
/// println!("{} {} {} packets in", entry.service.key, entry.service.scheduler, entry.stats.in_pkts);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[non_exhaustive]
pub struct ServiceEntry {
    /// Configuration.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub service: Service,
    /// Counters and rates.
    pub stats: Stats,
}

/// A destination as read from the kernel: configuration, connection counts and counters.
///
/// ```
/// # async fn f() -> Result<(), ipvs::Error> {
/// let key = ipvs::ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
/// for d in ipvs::Ipvs::connect().await?.destinations(&key).await? {
///     println!("{} active={} inactive={} persistent={}", d.destination.addr, d.active_conns, d.inactive_conns, d.persistent_conns);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[non_exhaustive]
pub struct DestinationEntry {
    /// Configuration.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub destination: Destination,
    /// Active connections (established, for TCP).
    pub active_conns: u32,
    /// Inactive connections.
    pub inactive_conns: u32,
    /// Persistent connection templates.
    pub persistent_conns: u32,
    /// Counters and rates.
    pub stats: Stats,
}

impl ServiceEntry {
    /// A service with these counters.
    pub fn new(service: Service, stats: Stats) -> Self {
        Self { service, stats }
    }
}

impl DestinationEntry {
    /// A destination with these connection counts (active, inactive,
    /// persistent) and counters.
    pub fn new(destination: Destination, conns: (u32, u32, u32), stats: Stats) -> Self {
        let (active_conns, inactive_conns, persistent_conns) = conns;
        Self { destination, active_conns, inactive_conns, persistent_conns, stats }
    }
}

impl From<Service> for ServiceEntry {
    /// A service with zero counters (as a freshly created one reads back).
    fn from(service: Service) -> Self {
        Self { service, stats: Stats::default() }
    }
}

impl From<Destination> for DestinationEntry {
    /// A destination with no connections and zero counters.
    fn from(destination: Destination) -> Self {
        Self { destination, active_conns: 0, inactive_conns: 0, persistent_conns: 0, stats: Stats::default() }
    }
}

/// Connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`). On set, 0
/// leaves a value unchanged.
///
/// ```
/// use ipvs::Timeouts;
/// // ipvsadm --set 900 120 300 (the kernel's defaults)
/// let t = Timeouts::new(900, 120, 300);
/// // Only change UDP:
/// let only_udp = Timeouts::new(0, 0, 60);
/// assert_eq!((only_udp.tcp, only_udp.tcp_fin), (0, 0));
/// # let _ = t;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[non_exhaustive]
pub struct Timeouts {
    /// Established TCP connections.
    pub tcp: u32,
    /// TCP connections after FIN.
    pub tcp_fin: u32,
    /// UDP.
    pub udp: u32,
}

impl Timeouts {
    /// These timeouts, in seconds (0: leave unchanged, on set).
    pub const fn new(tcp: u32, tcp_fin: u32, udp: u32) -> Self {
        Self { tcp, tcp_fin, udp }
    }
}

/// Role of a connection sync daemon.
///
/// ```
/// use ipvs::SyncState;
/// assert_eq!((SyncState::Master.name(), SyncState::Backup.value()), ("master", 2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize), serde(rename_all = "lowercase"))]
pub enum SyncState {
    /// Sends connection state.
    Master,
    /// Receives connection state.
    Backup,
}

impl SyncState {
    /// The `IP_VS_STATE_*` value.
    pub fn value(self) -> u32 {
        match self {
            Self::Master => ipvs_sys::constants::state::MASTER,
            Self::Backup => ipvs_sys::constants::state::BACKUP,
        }
    }

    /// `master` or `backup`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Backup => "backup",
        }
    }
}

impl fmt::Display for SyncState {
    /// `master` or `backup`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A connection synchronisation daemon (`ipvsadm --start-daemon`).
///
/// ```
/// use ipvs::{SyncDaemon, SyncState};
/// // ipvsadm --start-daemon backup --mcast-interface eth1 --syncid 3 --mcast-group 239.0.0.3 --mcast-port 8849
/// let d = SyncDaemon::new(SyncState::Backup, "eth1", 3)
///     .with_mcast_group("239.0.0.3".parse::<std::net::IpAddr>().unwrap())
///     .with_mcast_port(8849);
/// assert!(d.validate().is_ok());
/// let unicast = d.clone().with_mcast_group("10.0.0.1".parse::<std::net::IpAddr>().unwrap());
/// assert!(unicast.validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[non_exhaustive]
pub struct SyncDaemon {
    /// Master or backup.
    pub state: SyncState,
    /// Multicast interface.
    pub interface: String,
    /// Sync id (0..255 is what ipvsadm accepts).
    pub sync_id: u32,
    /// Maximum sync message length (`--sync-maxlen`); `None`: the kernel's default.
    pub max_len: Option<u16>,
    /// Multicast group (`--mcast-group`); `None`: 224.0.0.81.
    pub mcast_group: Option<IpAddr>,
    /// Multicast port (`--mcast-port`); `None`: 8848.
    pub mcast_port: Option<u16>,
    /// Multicast TTL, 1..255 (`--mcast-ttl`); `None`: 1.
    pub mcast_ttl: Option<u8>,
}

impl SyncDaemon {
    /// A daemon with the kernel's defaults for everything but state, interface and id.
    pub fn new(state: SyncState, interface: impl Into<String>, sync_id: u32) -> Self {
        Self {
            state,
            interface: interface.into(),
            sync_id,
            max_len: None,
            mcast_group: None,
            mcast_port: None,
            mcast_ttl: None,
        }
    }

    /// With this maximum sync message length (`--sync-maxlen`), or the default (`None`).
    pub fn with_max_len(mut self, max_len: impl Into<Option<u16>>) -> Self {
        self.max_len = max_len.into();
        self
    }

    /// With this multicast group (`--mcast-group`), or the default (`None`).
    pub fn with_mcast_group(mut self, group: impl Into<Option<IpAddr>>) -> Self {
        self.mcast_group = group.into();
        self
    }

    /// With this multicast port (`--mcast-port`), or the default (`None`).
    pub fn with_mcast_port(mut self, port: impl Into<Option<u16>>) -> Self {
        self.mcast_port = port.into();
        self
    }

    /// With this multicast TTL (`--mcast-ttl`), or the default (`None`).
    pub fn with_mcast_ttl(mut self, ttl: impl Into<Option<u8>>) -> Self {
        self.mcast_ttl = ttl.into();
        self
    }

    /// Check what the kernel would reject.
    pub fn validate(&self) -> Result<(), Error> {
        if self.interface.is_empty() || self.interface.len() > ipvs_sys::constants::IFNAME_MAXLEN {
            return Err(Error::invalid(format!("interface name {:?} must be 1..15 characters", self.interface)));
        }
        if let Some(g) = self.mcast_group {
            if !g.is_multicast() {
                return Err(Error::invalid(format!("sync group {g} is not a multicast address")));
            }
        }
        if self.mcast_ttl == Some(0) {
            return Err(Error::invalid("multicast TTL must be 1..255"));
        }
        if self.mcast_port == Some(0) {
            return Err(Error::invalid("multicast port must be 1..65535"));
        }
        Ok(())
    }
}

/// What `GET_INFO` tells.
///
/// ```
/// let i = ipvs::Info::new((1, 2, 1), 4096);
/// assert_eq!(i.version_string(), "1.2.1");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[non_exhaustive]
pub struct Info {
    /// IPVS version as (major, minor, patch), e.g. (1, 2, 1).
    pub version: (u8, u8, u8),
    /// Size of the connection hash table.
    pub conn_table_size: u32,
}

impl Info {
    /// Info of this version and connection table size.
    pub const fn new(version: (u8, u8, u8), conn_table_size: u32) -> Self {
        Self { version, conn_table_size }
    }

    /// `1.2.1`.
    pub fn version_string(&self) -> String {
        format!("{}.{}.{}", self.version.0, self.version.1, self.version.2)
    }
}
