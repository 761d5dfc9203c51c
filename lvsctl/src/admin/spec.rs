//! ipvsadm's service and real-server options, shared by the `service` and
//! `real` commands and by every line of `restore` (see [`super::rules`]).
//!
//! The clap definitions keep ipvsadm's option letters (`-t -u --sctp-service
//! -f -6 -s -p -M --pe -o -b`, `-r -g -i -m -w -x -y --tun-*`); the builders
//! turn them into the library's [`Service`] and [`Destination`] with
//! ipvsadm's defaults (scheduler wlc, weight 1, forwarding `-g`, persistence
//! 360 s for a bare `-p`: what ipvsadm 1.31 does, although its man page says
//! 300) and its checks, with ipvsadm's wording in the messages.
//! Addresses are numeric: `10.0.0.1:80`, `[2001:db8::1]:80`; no host or port
//! names are looked up.

use lvsctl::spec::persistence_timeout;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipvs::{
    Destination, Family, Forward, Netmask, Persistence, Protocol, SchedFlags, Scheduler, Service, ServiceKey, Tunnel,
    TunnelChecksum,
};

/// ipvsadm's default scheduler.
pub(crate) const DEFAULT_SCHEDULER: &str = "wlc";
/// ipvsadm's default persistence timeout, seconds (`-p` without a value):
/// 360, as ipvsadm 1.31 sends it (checked against it in the test VM).
pub(crate) const DEFAULT_PERSISTENCE: &str = "360";

// Which virtual service: `-t`, `-u`, `--sctp-service` or `-f` (with `-6`).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ServiceKeyArgs {
    /// TCP virtual service ADDR:PORT (IPv6 as [ADDR]:PORT).
    #[arg(short = 't', long = "tcp-service", value_name = "ADDR:PORT")]
    pub(crate) tcp: Option<String>,
    /// UDP virtual service ADDR:PORT.
    #[arg(short = 'u', long = "udp-service", value_name = "ADDR:PORT")]
    pub(crate) udp: Option<String>,
    /// SCTP virtual service ADDR:PORT.
    #[arg(long = "sctp-service", value_name = "ADDR:PORT")]
    pub(crate) sctp: Option<String>,
    /// Firewall-mark virtual service (a non-zero integer; a negative one is
    /// read as ipvsadm's `--save` prints marks above 2^31: -1294967296 is 3000000000).
    #[arg(short = 'f', long = "fwmark-service", value_name = "MARK", allow_negative_numbers = true)]
    pub(crate) fwmark: Option<String>,
    /// The firewall-mark service is IPv6.
    #[arg(short = '6', long = "ipv6")]
    pub(crate) ipv6: bool,
}

// Virtual service options (`ipvsadm -A/-E`).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ServiceOpts {
    /// Scheduler: rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos (default wlc).
    #[arg(short = 's', long = "scheduler", value_name = "NAME")]
    pub(crate) scheduler: Option<String>,
    /// Persistent service, TIMEOUT seconds (default 360, as ipvsadm 1.31).
    #[arg(short = 'p', long = "persistent", value_name = "TIMEOUT", num_args = 0..=1,
          default_missing_value = DEFAULT_PERSISTENCE)]
    pub(crate) persistent: Option<String>,
    /// Persistence granularity: IPv4 netmask (255.255.255.0) or IPv6 prefix length.
    #[arg(short = 'M', long = "netmask", value_name = "MASK")]
    pub(crate) netmask: Option<String>,
    /// Persistence engine (sip).
    #[arg(long = "pe", value_name = "ENGINE")]
    pub(crate) pe: Option<String>,
    /// One-packet scheduling (UDP).
    #[arg(short = 'o', long = "ops")]
    pub(crate) ops: bool,
    /// Scheduler flags, comma-separated: flag-1 flag-2 flag-3 sh-fallback sh-port mh-fallback mh-port.
    #[arg(short = 'b', long = "sched-flags", value_name = "FLAGS")]
    pub(crate) sched_flags: Option<String>,
}

impl ServiceOpts {
    fn given(&self) -> Option<&'static str> {
        if self.scheduler.is_some() {
            Some("scheduler")
        } else if self.persistent.is_some() {
            Some("persistent")
        } else if self.netmask.is_some() {
            Some("netmask")
        } else if self.pe.is_some() {
            Some("pe")
        } else if self.ops {
            Some("ops")
        } else if self.sched_flags.is_some() {
            Some("sched-flags")
        } else {
            None
        }
    }
}

// Real server options (`ipvsadm -a/-e`): forwarding method, weight, thresholds, tunnel.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct DestOpts {
    /// Gatewaying: direct routing (the default).
    #[arg(short = 'g', long = "gatewaying")]
    pub(crate) gatewaying: bool,
    /// IP-IP encapsulation: tunnelling.
    #[arg(short = 'i', long = "ipip")]
    pub(crate) ipip: bool,
    /// Masquerading: NAT.
    #[arg(short = 'm', long = "masquerading")]
    pub(crate) masquerading: bool,
    /// Weight, 0..65535 (default 1).
    #[arg(short = 'w', long = "weight", value_name = "WEIGHT")]
    pub(crate) weight: Option<String>,
    /// Upper connection threshold (0: none).
    #[arg(short = 'x', long = "u-threshold", value_name = "N")]
    pub(crate) u_threshold: Option<String>,
    /// Lower connection threshold (0: none).
    #[arg(short = 'y', long = "l-threshold", value_name = "N")]
    pub(crate) l_threshold: Option<String>,
    /// Tunnel type with -i: ipip (default), gue, gre.
    #[arg(long = "tun-type", value_name = "TYPE")]
    pub(crate) tun_type: Option<String>,
    /// GUE tunnel destination port.
    #[arg(long = "tun-port", value_name = "PORT")]
    pub(crate) tun_port: Option<String>,
    /// Tunnel without checksum (gue, gre).
    #[arg(long = "tun-nocsum")]
    pub(crate) tun_nocsum: bool,
    /// Tunnel with checksum (gue, gre).
    #[arg(long = "tun-csum")]
    pub(crate) tun_csum: bool,
    /// Tunnel with remote checksum offload (gue).
    #[arg(long = "tun-remcsum")]
    pub(crate) tun_remcsum: bool,
}

impl DestOpts {
    fn given(&self) -> Option<&'static str> {
        if self.gatewaying || self.ipip || self.masquerading {
            Some("forwarding-method")
        } else if self.weight.is_some() {
            Some("weight")
        } else if self.u_threshold.is_some() {
            Some("u-threshold")
        } else if self.l_threshold.is_some() {
            Some("l-threshold")
        } else if self.tun_given() {
            Some("tun-type")
        } else {
            None
        }
    }

    fn tun_given(&self) -> bool {
        self.tun_type.is_some() || self.tun_port.is_some() || self.tun_nocsum || self.tun_csum || self.tun_remcsum
    }
}

/// Parse an address with an optional port: `10.0.0.1`, `10.0.0.1:80`,
/// `[2001:db8::1]`, `[2001:db8::1]:80` (a bare IPv6 address is accepted too);
/// the parser the config file and `--real` use.
pub(crate) fn parse_addr_port(s: &str) -> Option<(IpAddr, Option<u16>)> {
    lvsctl::spec::parse_addr_port(s).ok()
}

/// ipvsadm's `string_to_number`: a decimal integer within min..=max.
fn number(s: &str, min: u64, max: u64) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|n| (min..=max).contains(n))
}

/// A firewall mark as ipvsadm reads and writes it: 1..4294967295, or the
/// negative number `ipvsadm --save` prints for a mark of 2^31 or more (it
/// prints marks with `%d`): `-1294967296` is 3000000000.
pub(crate) fn parse_fwmark(s: &str) -> Option<u32> {
    match s.strip_prefix('-') {
        Some(neg) => {
            let n = number(neg, 1, 1 << 31)?;
            Some((1u64 << 32).wrapping_sub(n) as u32)
        }
        None => number(s, 1, u64::from(u32::MAX)).map(|n| n as u32),
    }
}

/// The key of a `-t/-u/--sctp-service ADDR[:PORT]` service (`-6` given or not).
pub(crate) fn inet_key(protocol: Protocol, s: &str, ipv6: bool) -> Result<ServiceKey, String> {
    let (ip, port) = parse_addr_port(s).ok_or("illegal virtual server address[:port] specified")?;
    if ipv6 && ip.is_ipv4() {
        return Err("-6 given with an IPv4 virtual address: -6 applies to fwmark services".into());
    }
    if ip.is_unspecified() {
        return Err("illegal virtual server address[:port] specified".into());
    }
    Ok(ServiceKey::Inet { protocol, addr: SocketAddr::new(ip, port.unwrap_or(0)) })
}

impl ServiceKeyArgs {
    /// The service key, `None` when none of `-t/-u/--sctp-service/-f` was given.
    pub(crate) fn key(&self) -> Result<Option<ServiceKey>, String> {
        let given = [self.tcp.is_some(), self.udp.is_some(), self.sctp.is_some(), self.fwmark.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err("Multiple service types specified: use one of -t, -u, --sctp-service, -f".into());
        }
        if let Some(m) = &self.fwmark {
            let mark = parse_fwmark(m).ok_or("illegal virtual service fwmark specified")?;
            let family = if self.ipv6 { Family::Inet6 } else { Family::Inet };
            return Ok(Some(ServiceKey::fwmark(mark, family)));
        }
        let (protocol, s) = match (&self.tcp, &self.udp, &self.sctp) {
            (Some(s), _, _) => (Protocol::Tcp, s),
            (_, Some(s), _) => (Protocol::Udp, s),
            (_, _, Some(s)) => (Protocol::Sctp, s),
            _ => {
                if self.ipv6 {
                    return Err("-6 needs a service: -f MARK -6".into());
                }
                return Ok(None);
            }
        };
        inet_key(protocol, s, self.ipv6).map(Some)
    }

    /// The service key, which must be given.
    pub(crate) fn required_key(&self) -> Result<ServiceKey, String> {
        self.key()?
            .ok_or_else(|| "You need to supply the 'service-address' option (-t, -u, --sctp-service or -f)".into())
    }
}

/// Build a virtual service from `-A`/`-E` options, as ipvsadm does: every
/// option not given takes its default (so an edit is a full replacement).
pub(crate) fn build_service(key: ServiceKey, o: &ServiceOpts) -> Result<Service, String> {
    let sched_name = o.scheduler.as_deref().unwrap_or(DEFAULT_SCHEDULER);
    let scheduler = Scheduler::from_name(sched_name).map_err(|e| e.to_string())?;
    let mut svc = Service::new(key, scheduler);
    if let Some(p) = &o.persistent {
        let timeout = number(p, 0, u64::from(u32::MAX))
            .and_then(|t| persistence_timeout(t as u32).ok())
            .ok_or("illegal timeout for persistent service")?;
        svc.persistence = Some(Persistence { timeout, netmask: None });
    }
    if let Some(m) = &o.netmask {
        let mask = parse_netmask(m, key.family()).ok_or("illegal virtual server persistent mask specified")?;
        if let Some(p) = &mut svc.persistence {
            p.netmask = if mask.is_full() { None } else { Some(mask) };
        }
    }
    if let Some(pe) = &o.pe {
        if pe.is_empty() || pe.len() > 15 {
            return Err("illegal persistence engine specified".into());
        }
        svc.pe = Some(pe.clone());
    }
    if o.ops {
        if let ServiceKey::Inet { protocol, .. } = key {
            if protocol != Protocol::Udp {
                return Err("One-Packet Scheduling is only for UDP virtual services".into());
            }
        }
        svc.one_packet = true;
    }
    if let Some(f) = &o.sched_flags {
        svc.sched_flags = parse_sched_flags(sched_name, f)?;
    }
    if let ServiceKey::Inet { addr, .. } = key {
        if addr.port() == 0 && svc.persistence.is_none() {
            return Err("Zero port specified for non-persistent service".into());
        }
    }
    svc.validate().map_err(|e| e.to_string())?;
    Ok(svc)
}

/// `-M`: an IPv4 netmask (dotted, or a prefix length) or an IPv6 prefix length.
fn parse_netmask(s: &str, family: Family) -> Option<Netmask> {
    match family {
        Family::Inet => {
            if let Ok(m) = s.parse::<Ipv4Addr>() {
                let bits = u32::from(m);
                return (bits.leading_ones() + bits.trailing_zeros() == 32).then_some(Netmask::V4(m));
            }
            let p = number(s, 1, 32)? as u32;
            Some(Netmask::V4(Ipv4Addr::from(u32::MAX << (32 - p))))
        }
        Family::Inet6 => Some(Netmask::V6(number(s, 1, 128)? as u8)),
    }
}

/// `-b`: ipvsadm's names; `sh-*` only with sh and `mh-*` only with mh.
pub(crate) fn parse_sched_flags(sched: &str, s: &str) -> Result<SchedFlags, String> {
    let mut out = SchedFlags::NONE;
    for flag in s.split(',') {
        let bit = match flag {
            "flag-1" => SchedFlags::FLAG_1,
            "flag-2" => SchedFlags::FLAG_2,
            "flag-3" => SchedFlags::FLAG_3,
            "sh-fallback" | "sh-port" if sched == "sh" => {
                if flag == "sh-port" {
                    SchedFlags::FLAG_2
                } else {
                    SchedFlags::FLAG_1
                }
            }
            "mh-fallback" | "mh-port" if sched == "mh" => {
                if flag == "mh-port" {
                    SchedFlags::FLAG_2
                } else {
                    SchedFlags::FLAG_1
                }
            }
            "sh-fallback" | "sh-port" | "mh-fallback" | "mh-port" => {
                return Err(format!("incompatible scheduler flag `{flag}'"))
            }
            _ => return Err(format!("invalid scheduler flag `{flag}'")),
        };
        out |= bit;
    }
    Ok(out)
}

/// Check a command's options as ipvsadm's option table does.
pub(crate) fn reject_service_opts(o: &ServiceOpts, command: &str) -> Result<(), String> {
    match o.given() {
        Some(opt) => Err(format!("Illegal '{opt}' option with the '{command}' command")),
        None => Ok(()),
    }
}

/// Check a command's options as ipvsadm's option table does.
pub(crate) fn reject_dest_opts(o: &DestOpts, command: &str) -> Result<(), String> {
    match o.given() {
        Some(opt) => Err(format!("Illegal '{opt}' option with the '{command}' command")),
        None => Ok(()),
    }
}

/// The real server address of `-r`, with ipvsadm's port rules: no port means
/// the service's port; DR and tunnel real servers of a non-fwmark service
/// always take the service port.
pub(crate) fn real_server_addr(key: &ServiceKey, r: &str, forward: Option<&Forward>) -> Result<SocketAddr, String> {
    let (ip, port) = parse_addr_port(r).ok_or("illegal real server address[:port] specified")?;
    let svc_port = match key {
        ServiceKey::Inet { addr, .. } => addr.port(),
        ServiceKey::Fwmark { .. } => 0,
    };
    let mut port = port.unwrap_or(svc_port);
    if !key.is_fwmark() && matches!(forward, Some(Forward::Route | Forward::Tunnel(_))) {
        port = svc_port;
    }
    if Family::of(ip) != key.family() && !matches!(forward, None | Some(Forward::Tunnel(_))) {
        return Err("Different address family is allowed only for tunneling servers".into());
    }
    Ok(SocketAddr::new(ip, port))
}

/// Build a real server from `-a`/`-e` options with ipvsadm's defaults.
pub(crate) fn build_destination(key: &ServiceKey, r: &str, o: &DestOpts) -> Result<Destination, String> {
    let methods = [o.gatewaying, o.ipip, o.masquerading].iter().filter(|b| **b).count();
    if methods > 1 {
        return Err("multiple forwarding methods specified: use one of -g, -i, -m".into());
    }
    let forward = if o.ipip {
        Forward::Tunnel(build_tunnel(o)?)
    } else {
        if o.tun_given() {
            return Err("Tunnel options conflict with forward method".into());
        }
        if o.masquerading {
            Forward::Masq
        } else {
            Forward::Route
        }
    };
    destination_with(key, r, forward, o.weight.as_deref(), o.u_threshold.as_deref(), o.l_threshold.as_deref())
}

/// The rest of [`build_destination`] once the forwarding method is known:
/// real server `r`, weight (default 1) and thresholds (default 0) as given.
pub(crate) fn destination_with(
    key: &ServiceKey,
    r: &str,
    forward: Forward,
    weight: Option<&str>,
    u_threshold: Option<&str>,
    l_threshold: Option<&str>,
) -> Result<Destination, String> {
    let addr = real_server_addr(key, r, Some(&forward))?;
    let weight = match weight {
        Some(w) => number(w, 0, 65535).ok_or("illegal weight specified")? as u32,
        None => 1,
    };
    let upper_threshold = match u_threshold {
        Some(x) => number(x, 0, i32::MAX as u64).ok_or("illegal u_threshold specified")? as u32,
        None => 0,
    };
    let lower_threshold = match l_threshold {
        Some(y) => number(y, 0, i32::MAX as u64).ok_or("illegal l_threshold specified")? as u32,
        None => 0,
    };
    let d = Destination::new(addr, forward).with_weight(weight).with_thresholds(upper_threshold, lower_threshold);
    d.validate(key).map_err(|e| e.to_string())?;
    Ok(d)
}

fn build_tunnel(o: &DestOpts) -> Result<Tunnel, String> {
    let ty = o.tun_type.as_deref().unwrap_or("ipip");
    let csums: Vec<(&str, TunnelChecksum)> = [
        (o.tun_nocsum, "tun-nocsum", TunnelChecksum::NoCsum),
        (o.tun_csum, "tun-csum", TunnelChecksum::Csum),
        (o.tun_remcsum, "tun-remcsum", TunnelChecksum::RemCsum),
    ]
    .into_iter()
    .filter(|(g, ..)| *g)
    .map(|(_, n, c)| (n, c))
    .collect();
    let illegal = |opt: &str| Err(format!("Illegal '{opt}' option with the '{ty}' tunnel type"));
    if csums.len() > 1 {
        return Err(format!(
            "The option '{}' conflicts with the '{}' option in the '{ty}' tunnel type",
            csums[1].0, csums[0].0
        ));
    }
    let checksum = csums.first().map(|c| c.1).unwrap_or_default();
    match ty {
        "ipip" => {
            if o.tun_port.is_some() {
                return illegal("tun-port");
            }
            if let Some((name, _)) = csums.first() {
                return illegal(name);
            }
            Ok(Tunnel::Ipip)
        }
        "gue" => {
            let port =
                o.tun_port.as_deref().ok_or("You need to supply the 'tun-port' option for the 'gue' tunnel type")?;
            let port = number(port, 1, 65535).ok_or("illegal tunnel port specified")? as u16;
            Ok(Tunnel::Gue { port, checksum })
        }
        "gre" => {
            if o.tun_port.is_some() {
                return illegal("tun-port");
            }
            if o.tun_remcsum {
                return illegal("tun-remcsum");
            }
            Ok(Tunnel::Gre { checksum })
        }
        _ => Err("illegal tunnel type specified".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_t(s: &str) -> ServiceKeyArgs {
        ServiceKeyArgs { tcp: Some(s.into()), ..Default::default() }
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr_port("10.0.0.1:80"), Some(("10.0.0.1".parse().unwrap(), Some(80))));
        assert_eq!(parse_addr_port("10.0.0.1"), Some(("10.0.0.1".parse().unwrap(), None)));
        assert_eq!(parse_addr_port("[2001:db8::1]:443"), Some(("2001:db8::1".parse().unwrap(), Some(443))));
        assert_eq!(parse_addr_port("[2001:db8::1]"), Some(("2001:db8::1".parse().unwrap(), None)));
        for bad in ["10.0.0.999:80", "10.0.0.1:", "10.0.0.1:99999", "[2001:db8::1]80", "host:80", "10.0.0.1:-1", ""] {
            assert_eq!(parse_addr_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn service_keys() {
        assert_eq!(key_t("10.0.0.1:80").key().unwrap(), Some(ServiceKey::tcp("10.0.0.1:80".parse().unwrap())));
        let f = ServiceKeyArgs { fwmark: Some("7".into()), ipv6: true, ..Default::default() };
        assert_eq!(f.key().unwrap(), Some(ServiceKey::fwmark(7, Family::Inet6)));
        let both = ServiceKeyArgs { tcp: Some("10.0.0.1:80".into()), fwmark: Some("1".into()), ..Default::default() };
        assert!(both.key().is_err());
        assert_eq!(ServiceKeyArgs::default().key().unwrap(), None);
        assert!(ServiceKeyArgs::default().required_key().is_err());
        assert_eq!(key_t("10.0.0.999:80").key().unwrap_err(), "illegal virtual server address[:port] specified");
        let f0 = ServiceKeyArgs { fwmark: Some("0".into()), ..Default::default() };
        assert!(f0.key().is_err());
    }

    /// Marks of 2^31 and more come back from ipvsadm's `%d` as negative
    /// numbers; they read as the marks they were, and nothing else does.
    #[test]
    fn negative_fwmarks_read_as_ipvsadm_writes_them() {
        assert_eq!(parse_fwmark("-1294967296"), Some(3_000_000_000));
        assert_eq!(parse_fwmark("-1"), Some(u32::MAX));
        assert_eq!(parse_fwmark("-2147483648"), Some(1 << 31));
        assert_eq!(parse_fwmark("4294967295"), Some(u32::MAX));
        for bad in ["-0", "-2147483649", "--1", "-", "0", "4294967296", "+1", "1e3"] {
            assert_eq!(parse_fwmark(bad), None, "{bad}");
        }
        for m in [1u32, 7, (1 << 31) - 1, 1 << 31, 3_000_000_000, u32::MAX] {
            assert_eq!(parse_fwmark(&(m as i32).to_string()), Some(m), "{m}");
        }
    }

    #[test]
    fn persistence_timeout_is_capped_as_ipvsadm_does() {
        use lvsctl::spec::MAX_PERSISTENCE;
        assert_eq!(persistence_timeout(1), Ok(1));
        assert_eq!(persistence_timeout(MAX_PERSISTENCE), Ok(2_678_400));
        for bad in [0, MAX_PERSISTENCE + 1, 4_294_968, u32::MAX] {
            let e = persistence_timeout(bad).unwrap_err();
            assert!(e.contains("1 to 2678400 seconds"), "{bad}: {e}");
        }
        let k = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        for (p, ok) in [("2678400", true), ("2678401", false), ("4294968", false), ("0", false)] {
            let o = ServiceOpts { persistent: Some(p.into()), ..Default::default() };
            assert_eq!(build_service(k, &o).is_ok(), ok, "-p {p}");
        }
    }

    #[test]
    fn service_defaults_are_ipvsadms() {
        let k = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        let s = build_service(k, &ServiceOpts::default()).unwrap();
        assert_eq!(s.scheduler, Scheduler::Wlc);
        assert_eq!(s.persistence, None);
        let o =
            ServiceOpts { persistent: Some("300".into()), netmask: Some("255.255.255.0".into()), ..Default::default() };
        let s = build_service(k, &o).unwrap();
        assert_eq!(
            s.persistence,
            Some(Persistence { timeout: 300, netmask: Some(Netmask::V4("255.255.255.0".parse().unwrap())) })
        );
        // A full mask is the same as no mask.
        let o =
            ServiceOpts { persistent: Some("5".into()), netmask: Some("255.255.255.255".into()), ..Default::default() };
        assert_eq!(build_service(k, &o).unwrap().persistence.unwrap().netmask, None);
    }

    #[test]
    fn service_errors_read_like_ipvsadm() {
        let k0 = ServiceKey::tcp("10.0.0.1:0".parse().unwrap());
        assert_eq!(
            build_service(k0, &ServiceOpts::default()).unwrap_err(),
            "Zero port specified for non-persistent service"
        );
        let k = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        let o = ServiceOpts { ops: true, ..Default::default() };
        assert_eq!(build_service(k, &o).unwrap_err(), "One-Packet Scheduling is only for UDP virtual services");
        let o = ServiceOpts { sched_flags: Some("sh-port".into()), ..Default::default() };
        assert_eq!(build_service(k, &o).unwrap_err(), "incompatible scheduler flag `sh-port'");
        let o = ServiceOpts { sched_flags: Some("bogus".into()), ..Default::default() };
        assert_eq!(build_service(k, &o).unwrap_err(), "invalid scheduler flag `bogus'");
        let o = ServiceOpts { persistent: Some("0".into()), ..Default::default() };
        assert_eq!(build_service(k, &o).unwrap_err(), "illegal timeout for persistent service");
        let o = ServiceOpts { persistent: Some("1".into()), netmask: Some("255.0.255.0".into()), ..Default::default() };
        assert!(build_service(k, &o).is_err());
        let o = ServiceOpts { scheduler: Some("way-too-long-scheduler".into()), ..Default::default() };
        assert!(build_service(k, &o).is_err());
    }

    #[test]
    fn sched_flags_by_scheduler() {
        assert_eq!(parse_sched_flags("sh", "sh-fallback,sh-port").unwrap(), SchedFlags::FLAG_1 | SchedFlags::FLAG_2);
        assert_eq!(parse_sched_flags("mh", "mh-port").unwrap(), SchedFlags::FLAG_2);
        assert_eq!(parse_sched_flags("rr", "flag-3,flag-1").unwrap(), SchedFlags::FLAG_1 | SchedFlags::FLAG_3);
        assert!(parse_sched_flags("rr", "mh-port").is_err());
    }

    #[test]
    fn dr_and_tunnel_take_the_service_port() {
        let k = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        let d = build_destination(&k, "10.1.0.2:8080", &DestOpts::default()).unwrap();
        assert_eq!(d.addr, "10.1.0.2:80".parse().unwrap());
        assert_eq!(d.forward, Forward::Route);
        assert_eq!(d.weight, 1);
        let o = DestOpts { masquerading: true, ..Default::default() };
        assert_eq!(build_destination(&k, "10.1.0.2:8080", &o).unwrap().addr.port(), 8080);
        assert_eq!(build_destination(&k, "10.1.0.2", &o).unwrap().addr.port(), 80);
        let o = DestOpts { ipip: true, ..Default::default() };
        assert_eq!(build_destination(&k, "10.1.0.2:8080", &o).unwrap().addr.port(), 80);
        // A fwmark service keeps the given port (0: the client's).
        let f = ServiceKey::fwmark(1, Family::Inet);
        assert_eq!(build_destination(&f, "10.1.0.2:99", &DestOpts::default()).unwrap().addr.port(), 99);
        assert_eq!(build_destination(&f, "10.1.0.2", &DestOpts::default()).unwrap().addr.port(), 0);
    }

    #[test]
    fn tunnels() {
        let k = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        let t = |o: DestOpts| build_destination(&k, "10.1.0.2", &DestOpts { ipip: true, ..o }).map(|d| d.forward);
        assert_eq!(t(DestOpts::default()).unwrap(), Forward::Tunnel(Tunnel::Ipip));
        assert_eq!(
            t(DestOpts {
                tun_type: Some("gue".into()),
                tun_port: Some("6080".into()),
                tun_csum: true,
                ..Default::default()
            })
            .unwrap(),
            Forward::Tunnel(Tunnel::Gue { port: 6080, checksum: TunnelChecksum::Csum })
        );
        assert_eq!(
            t(DestOpts { tun_type: Some("gre".into()), ..Default::default() }).unwrap(),
            Forward::Tunnel(Tunnel::Gre { checksum: TunnelChecksum::NoCsum })
        );
        assert_eq!(
            t(DestOpts { tun_type: Some("gue".into()), ..Default::default() }).unwrap_err(),
            "You need to supply the 'tun-port' option for the 'gue' tunnel type"
        );
        assert_eq!(
            t(DestOpts { tun_type: Some("gre".into()), tun_remcsum: true, ..Default::default() }).unwrap_err(),
            "Illegal 'tun-remcsum' option with the 'gre' tunnel type"
        );
        assert!(t(DestOpts { tun_type: Some("vxlan".into()), ..Default::default() }).is_err());
        let o = DestOpts { masquerading: true, tun_type: Some("gre".into()), ..Default::default() };
        assert_eq!(build_destination(&k, "10.1.0.2", &o).unwrap_err(), "Tunnel options conflict with forward method");
    }

    #[test]
    fn weights_and_families() {
        let k = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        let o = DestOpts { weight: Some("65536".into()), ..Default::default() };
        assert_eq!(build_destination(&k, "10.1.0.2", &o).unwrap_err(), "illegal weight specified");
        let o = DestOpts { u_threshold: Some("5".into()), l_threshold: Some("10".into()), ..Default::default() };
        assert!(build_destination(&k, "10.1.0.2", &o).is_err());
        let o = DestOpts { masquerading: true, ..Default::default() };
        assert_eq!(
            build_destination(&k, "[2001:db8::2]:80", &o).unwrap_err(),
            "Different address family is allowed only for tunneling servers"
        );
        assert_eq!(
            build_destination(&k, "10.1.0.999", &o).unwrap_err(),
            "illegal real server address[:port] specified"
        );
    }
}
