//! Typed model <-> wire attributes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipvs_sys::constants::{svc_flags, tun_type};
use ipvs_sys::{DaemonAttr, DestAttr, InetAddr, ServiceAttr, ServiceFlags, StatsAttr, StatsField};

use crate::error::{Error, Result};
use crate::types::*;

/// The attributes that identify a service.
pub(crate) fn service_key_attrs(key: &ServiceKey) -> Vec<ServiceAttr> {
    match key {
        ServiceKey::Inet { protocol, addr } => vec![
            ServiceAttr::AddressFamily(Family::of(addr.ip()).af()),
            ServiceAttr::Protocol(protocol.number()),
            ServiceAttr::Address(InetAddr::from(addr.ip())),
            ServiceAttr::Port(addr.port()),
        ],
        ServiceKey::Fwmark { mark, family } => {
            vec![ServiceAttr::AddressFamily(family.af()), ServiceAttr::Fwmark(*mark)]
        }
    }
}

/// Every attribute NEW_SERVICE / SET_SERVICE need.
pub(crate) fn service_attrs(s: &Service) -> Vec<ServiceAttr> {
    let mut v = service_key_attrs(&s.key);
    let mut flags = s.sched_flags.bits();
    if s.persistence.is_some() {
        flags |= svc_flags::PERSISTENT;
    }
    if s.one_packet {
        flags |= svc_flags::ONEPACKET;
    }
    v.push(ServiceAttr::SchedName(s.scheduler.name().to_owned()));
    if let Some(pe) = &s.pe {
        v.push(ServiceAttr::PeName(pe.clone()));
    }
    v.push(ServiceAttr::Flags(ServiceFlags { flags, mask: u32::MAX }));
    v.push(ServiceAttr::Timeout(s.persistence.map_or(0, |p| p.timeout)));
    v.push(ServiceAttr::Netmask(netmask_raw(s.netmask())));
    v
}

pub(crate) fn netmask_raw(m: Netmask) -> u32 {
    match m {
        Netmask::V4(m) => u32::from_ne_bytes(m.octets()),
        Netmask::V6(p) => u32::from(p),
    }
}

pub(crate) fn stats_from(attrs: &[StatsAttr]) -> Stats {
    let mut s = Stats::default();
    for a in attrs {
        if let Some((f, v)) = a.value() {
            set_stat(&mut s, f, v);
        }
    }
    s
}

/// Put one counter or rate into its field.
pub(crate) fn set_stat(s: &mut Stats, f: StatsField, v: u64) {
    match f {
        StatsField::Conns => s.conns = v,
        StatsField::InPkts => s.in_pkts = v,
        StatsField::OutPkts => s.out_pkts = v,
        StatsField::InBytes => s.in_bytes = v,
        StatsField::OutBytes => s.out_bytes = v,
        StatsField::Cps => s.cps = v,
        StatsField::InPps => s.in_pps = v,
        StatsField::OutPps => s.out_pps = v,
        StatsField::InBps => s.in_bps = v,
        StatsField::OutBps => s.out_bps = v,
        _ => {}
    }
}

fn decode(msg: &str) -> Error {
    Error::Decode(msg.to_owned())
}

/// A service's attributes as read, before their meaning is worked out by
/// [`RawService::finish`]; filled from parsed [`ServiceAttr`]s by
/// [`service_from`] or straight from the bytes by the dump parser. Each field
/// keeps the last value received.
#[derive(Default)]
pub(crate) struct RawService<'a> {
    pub af: Option<u16>,
    pub proto: Option<u16>,
    pub addr: Option<InetAddr>,
    pub port: Option<u16>,
    pub mark: Option<u32>,
    pub sched: Option<&'a str>,
    /// `flags & mask`.
    pub flags: u32,
    pub timeout: u32,
    pub netmask: Option<u32>,
    pub pe: Option<&'a str>,
    pub stats32: Option<Stats>,
    pub stats64: Option<Stats>,
}

impl RawService<'_> {
    /// The service these attributes describe.
    pub(crate) fn finish(self) -> Result<ServiceEntry> {
        let af = self.af.ok_or_else(|| decode("service without address family"))?;
        let family = Family::from_af(af).ok_or_else(|| decode(&format!("service with unknown address family {af}")))?;
        let key = match self.mark.filter(|m| *m != 0) {
            Some(mark) => ServiceKey::Fwmark { mark, family },
            None => {
                let proto = self.proto.ok_or_else(|| decode("service without protocol"))?;
                let protocol = Protocol::from_number(proto);
                let ip = self.addr.ok_or_else(|| decode("service without address"))?.to_ip(af).unwrap();
                ServiceKey::Inet { protocol, addr: SocketAddr::new(ip, self.port.unwrap_or(0)) }
            }
        };
        let netmask = match (family, self.netmask) {
            (Family::Inet, Some(raw)) => Netmask::V4(Ipv4Addr::from(raw.to_ne_bytes())),
            (Family::Inet6, Some(raw)) => Netmask::V6(raw.min(255) as u8),
            (f, None) => Netmask::full(f),
        };
        let flags = self.flags;
        let persistence = (flags & svc_flags::PERSISTENT != 0)
            .then_some(Persistence { timeout: self.timeout, netmask: (!netmask.is_full()).then_some(netmask) });
        // The 64-bit set when present, else the legacy one.
        let stats = self.stats64.or(self.stats32).unwrap_or_default();
        let scheduler = self.sched.ok_or_else(|| decode("service without scheduler"))?;
        let scheduler = Scheduler::from_name(scheduler).unwrap_or_else(|_| Scheduler::Other(scheduler.to_owned()));
        Ok(ServiceEntry {
            service: Service {
                key,
                scheduler,
                sched_flags: SchedFlags::from_bits_truncate(flags),
                persistence,
                one_packet: flags & svc_flags::ONEPACKET != 0,
                pe: self.pe.filter(|p| !p.is_empty()).map(str::to_owned),
            },
            stats,
        })
    }
}

/// A service read from the kernel, from its parsed attributes.
pub(crate) fn service_from(attrs: &[ServiceAttr]) -> Result<ServiceEntry> {
    let mut r = RawService::default();
    for a in attrs {
        match a {
            ServiceAttr::AddressFamily(v) => r.af = Some(*v),
            ServiceAttr::Protocol(v) => r.proto = Some(*v),
            ServiceAttr::Address(v) => r.addr = Some(*v),
            ServiceAttr::Port(v) => r.port = Some(*v),
            ServiceAttr::Fwmark(v) => r.mark = Some(*v),
            ServiceAttr::SchedName(v) => r.sched = Some(v),
            ServiceAttr::Flags(f) => r.flags = f.flags & f.mask,
            ServiceAttr::Timeout(v) => r.timeout = *v,
            ServiceAttr::Netmask(v) => r.netmask = Some(*v),
            ServiceAttr::PeName(v) => r.pe = Some(v),
            ServiceAttr::Stats(s) => r.stats32 = Some(stats_from(s)),
            ServiceAttr::Stats64(s) => r.stats64 = Some(stats_from(s)),
            _ => {}
        }
    }
    r.finish()
}

/// The attributes that identify a destination.
pub(crate) fn dest_key_attrs(addr: SocketAddr) -> Vec<DestAttr> {
    vec![
        DestAttr::Address(InetAddr::from(addr.ip())),
        DestAttr::Port(addr.port()),
        DestAttr::AddressFamily(Family::of(addr.ip()).af()),
    ]
}

/// Every attribute NEW_DEST / SET_DEST need.
pub(crate) fn dest_attrs(d: &Destination) -> Vec<DestAttr> {
    let mut v = dest_key_attrs(d.addr);
    v.push(DestAttr::FwdMethod(d.forward.method()));
    v.push(DestAttr::Weight(d.weight));
    if let Forward::Tunnel(t) = d.forward {
        let (ty, port, csum) = match t {
            Tunnel::Ipip => (tun_type::IPIP, 0, TunnelChecksum::NoCsum),
            Tunnel::Gue { port, checksum } => (tun_type::GUE, port, checksum),
            Tunnel::Gre { checksum } => (tun_type::GRE, 0, checksum),
        };
        v.push(DestAttr::TunType(ty));
        v.push(DestAttr::TunPort(port));
        v.push(DestAttr::TunFlags(csum.flags()));
    }
    v.push(DestAttr::UpperThreshold(d.upper_threshold));
    v.push(DestAttr::LowerThreshold(d.lower_threshold));
    v
}

/// A destination read from the kernel. `service_family` is used when the
/// kernel does not say the destination's own family.
/// A destination's attributes as read, before their meaning is worked out
/// by [`RawDest::finish`]; filled from parsed [`DestAttr`]s by [`dest_from`]
/// or straight from the bytes by the dump parser. Each field keeps the last
/// value received.
#[derive(Default)]
pub(crate) struct RawDest {
    pub addr: Option<InetAddr>,
    pub port: u16,
    /// The address family attribute (0 counts as absent).
    pub af: Option<u16>,
    pub method: Option<u32>,
    pub weight: u32,
    pub upper: u32,
    pub lower: u32,
    pub active: u32,
    pub inactive: u32,
    pub persistent: u32,
    pub tun_type: u8,
    pub tun_port: u16,
    pub tun_flags: u16,
    pub stats32: Option<Stats>,
    pub stats64: Option<Stats>,
}

impl RawDest {
    /// The destination these attributes describe; `service_family` stands in
    /// for a missing address family (kernels before 3.18).
    pub(crate) fn finish(self, service_family: Family) -> Result<DestinationEntry> {
        let af = self.af.unwrap_or(service_family.af());
        let ip: IpAddr = self
            .addr
            .ok_or_else(|| decode("destination without address"))?
            .to_ip(af)
            .ok_or_else(|| decode(&format!("destination with unknown address family {af}")))?;
        let method = self.method.ok_or_else(|| decode("destination without forwarding method"))?;
        let tunnel = match self.tun_type {
            tun_type::GUE => Tunnel::Gue { port: self.tun_port, checksum: TunnelChecksum::from_flags(self.tun_flags) },
            tun_type::GRE => Tunnel::Gre { checksum: TunnelChecksum::from_flags(self.tun_flags) },
            _ => Tunnel::Ipip,
        };
        let forward = Forward::from_method(method, tunnel);
        // The 64-bit set when present, else the legacy one.
        let stats = self.stats64.or(self.stats32).unwrap_or_default();
        Ok(DestinationEntry {
            destination: Destination {
                addr: SocketAddr::new(ip, self.port),
                forward,
                weight: self.weight,
                upper_threshold: self.upper,
                lower_threshold: self.lower,
            },
            active_conns: self.active,
            inactive_conns: self.inactive,
            persistent_conns: self.persistent,
            stats,
        })
    }
}

/// A destination from its parsed attributes: the reference the dump parser
/// (`dumpparse`) is tested against.
#[cfg(test)]
pub(crate) fn dest_from(attrs: &[DestAttr], service_family: Family) -> Result<DestinationEntry> {
    let mut r = RawDest::default();
    for a in attrs {
        match a {
            DestAttr::Address(v) => r.addr = Some(*v),
            DestAttr::Port(v) => r.port = *v,
            DestAttr::AddressFamily(v) => r.af = Some(*v).filter(|v| *v != 0),
            DestAttr::FwdMethod(v) => r.method = Some(*v),
            DestAttr::Weight(v) => r.weight = *v,
            DestAttr::UpperThreshold(v) => r.upper = *v,
            DestAttr::LowerThreshold(v) => r.lower = *v,
            DestAttr::ActiveConns(v) => r.active = *v,
            DestAttr::InactiveConns(v) => r.inactive = *v,
            DestAttr::PersistConns(v) => r.persistent = *v,
            DestAttr::Stats(s) => r.stats32 = Some(stats_from(s)),
            DestAttr::Stats64(s) => r.stats64 = Some(stats_from(s)),
            DestAttr::TunType(v) => r.tun_type = *v,
            DestAttr::TunPort(v) => r.tun_port = *v,
            DestAttr::TunFlags(v) => r.tun_flags = *v,
            _ => {}
        }
    }
    r.finish(service_family)
}

pub(crate) fn daemon_attrs(d: &SyncDaemon) -> Vec<DaemonAttr> {
    let mut v = vec![
        DaemonAttr::State(d.state.value()),
        DaemonAttr::McastIfn(d.interface.clone()),
        DaemonAttr::SyncId(d.sync_id),
    ];
    if let Some(m) = d.max_len {
        v.push(DaemonAttr::SyncMaxLen(m));
    }
    match d.mcast_group {
        Some(IpAddr::V4(g)) => v.push(DaemonAttr::McastGroup(g)),
        Some(IpAddr::V6(g)) => v.push(DaemonAttr::McastGroup6(g)),
        None => {}
    }
    if let Some(p) = d.mcast_port {
        v.push(DaemonAttr::McastPort(p));
    }
    if let Some(t) = d.mcast_ttl {
        v.push(DaemonAttr::McastTtl(t));
    }
    v
}

pub(crate) fn daemon_from(attrs: &[DaemonAttr]) -> Result<SyncDaemon> {
    let mut d = SyncDaemon::new(SyncState::Master, String::new(), 0);
    let mut state = None;
    for a in attrs {
        match a {
            DaemonAttr::State(s) => state = Some(*s),
            DaemonAttr::McastIfn(s) => d.interface = s.clone(),
            DaemonAttr::SyncId(v) => d.sync_id = *v,
            DaemonAttr::SyncMaxLen(v) => d.max_len = Some(*v),
            DaemonAttr::McastGroup(g) => d.mcast_group = Some(IpAddr::V4(*g)),
            DaemonAttr::McastGroup6(g) => d.mcast_group = Some(IpAddr::V6(*g)),
            DaemonAttr::McastPort(p) => d.mcast_port = Some(*p),
            DaemonAttr::McastTtl(t) => d.mcast_ttl = Some(*t),
            _ => {}
        }
    }
    d.state = match state {
        Some(s) if s & ipvs_sys::constants::state::BACKUP != 0 => SyncState::Backup,
        Some(_) => SyncState::Master,
        None => return Err(decode("sync daemon without state")),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs_sys::{emit_request, parse_replies, IpvsAttr, IpvsCmd, IpvsMessage, ReplyKind};

    /// What ipvsadm 1.31 sent, captured in the test VM (see the file's header).
    const GOLDEN: &str = include_str!("../../ipvs-sys/tests/data/ipvsadm-1.31-linux-6.1.txt");

    fn captured_request(args: &str) -> Vec<u8> {
        let mut on = false;
        for line in GOLDEN.lines() {
            if let Some(a) = line.strip_prefix("# ipvsadm ") {
                on = a == args;
                continue;
            }
            if let (true, Some(h)) = (on, line.strip_prefix("send ")) {
                let b: Vec<u8> =
                    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect();
                // Skip the GET_INFO ipvsadm sends first.
                if b[16] != ipvs_sys::constants::cmd::GET_INFO {
                    return b;
                }
            }
        }
        panic!("no request for ipvsadm {args}")
    }

    /// The library's NEW_SERVICE for `s` is byte for byte what ipvsadm sends
    /// for the same service (but for nlmsg_pid).
    fn same_as_ipvsadm(args: &str, s: &Service) {
        let want = captured_request(args);
        let msg = IpvsMessage::new(IpvsCmd::NewService, vec![IpvsAttr::Service(service_attrs(s))]);
        let mut got = Vec::new();
        let flags = u16::from_ne_bytes([want[6], want[7]]);
        let seq = u32::from_ne_bytes(want[8..12].try_into().unwrap());
        emit_request(&mut got, u16::from_ne_bytes([want[4], want[5]]), flags, seq, &msg);
        assert_eq!(got[..12], want[..12], "{args}");
        assert_eq!(got[16..], want[16..], "{args}");
    }

    #[test]
    fn services_are_sent_as_ipvsadm_sends_them() {
        same_as_ipvsadm(
            "-A -t 10.0.0.1:80 -s rr",
            &Service::new(ServiceKey::tcp("10.0.0.1:80".parse().unwrap()), Scheduler::Rr),
        );
        same_as_ipvsadm(
            "-A -f 5 -6 -s wlc -p 300 -M 64",
            &Service {
                persistence: Some(Persistence { timeout: 300, netmask: Some(Netmask::V6(64)) }),
                ..Service::new(ServiceKey::fwmark(5, Family::Inet6), Scheduler::Wlc)
            },
        );
        same_as_ipvsadm(
            "-A -u 10.0.0.1:53 -s sh -b sh-port,sh-fallback -o",
            &Service {
                sched_flags: SchedFlags::FLAG_1 | SchedFlags::FLAG_2,
                one_packet: true,
                ..Service::new(ServiceKey::udp("10.0.0.1:53".parse().unwrap()), Scheduler::Sh)
            },
        );
        same_as_ipvsadm(
            "-A -t [2001:db8::1]:443 -s mh -b mh-port -p 60 -M 128 --pe sip",
            &Service {
                sched_flags: SchedFlags::FLAG_2,
                persistence: Some(Persistence { timeout: 60, netmask: None }),
                pe: Some("sip".into()),
                ..Service::new(ServiceKey::tcp("[2001:db8::1]:443".parse().unwrap()), Scheduler::Mh)
            },
        );
    }

    /// The library's NEW_DEST carries the same destination values as
    /// ipvsadm's (ipvsadm also sends zero tunnel attributes for non-tunnels
    /// and a full service; the order differs).
    #[test]
    fn destinations_carry_what_ipvsadm_sends() {
        let key = |s: &str| ServiceKey::Inet { protocol: Protocol::Tcp, addr: s.parse().unwrap() };
        let cases = [
            (
                "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1",
                key("10.0.0.1:80"),
                Destination::new("10.0.0.2:80".parse().unwrap(), Forward::Route),
            ),
            (
                "-a -u 10.0.0.1:53 -r 10.0.0.3:5353 -m -w 3 -x 100 -y 10",
                ServiceKey::udp("10.0.0.1:53".parse().unwrap()),
                Destination {
                    weight: 3,
                    upper_threshold: 100,
                    lower_threshold: 10,
                    ..Destination::new("10.0.0.3:5353".parse().unwrap(), Forward::Masq)
                },
            ),
            (
                "-a -t 10.0.0.1:8080 -r 10.0.0.4:8080 -i --tun-type gue --tun-port 6080 --tun-csum -w 2",
                key("10.0.0.1:8080"),
                Destination {
                    weight: 2,
                    ..Destination::new(
                        "10.0.0.4:8080".parse().unwrap(),
                        Forward::Tunnel(Tunnel::Gue { port: 6080, checksum: TunnelChecksum::Csum }),
                    )
                },
            ),
        ];
        for (args, k, d) in cases {
            let bytes = captured_request(args);
            let Some(Ok(reply)) = parse_replies(&bytes, u16::from_ne_bytes([bytes[4], bytes[5]])).next() else {
                panic!("{args}")
            };
            let ReplyKind::Message(m) = reply.kind else { panic!("{args}") };
            let (mut svc, mut dest) = (None, None);
            for a in m.attrs {
                match a {
                    IpvsAttr::Service(s) => svc = Some(s),
                    IpvsAttr::Dest(d) => dest = Some(d),
                    _ => {}
                }
            }
            // ipvsadm's service identity is ours plus empty scheduler, flags, timeout, netmask.
            let svc = svc.unwrap();
            for a in service_key_attrs(&k) {
                assert!(svc.contains(&a), "{args}: {a:?} in {svc:?}");
            }
            // Every attribute we send, ipvsadm sends with the same value ...
            let dest = dest.unwrap();
            let ours = dest_attrs(&d);
            for a in &ours {
                assert!(dest.contains(a), "{args}: {a:?} in ipvsadm's {dest:?}");
            }
            // ... and what ipvsadm sends beyond that is the zero tunnel attributes.
            for a in &dest {
                assert!(
                    ours.contains(a)
                        || matches!(a, DestAttr::TunType(0) | DestAttr::TunPort(0) | DestAttr::TunFlags(0)),
                    "{args}: ipvsadm also sends {a:?}"
                );
            }
            // And reading ipvsadm's destination back gives the same value.
            assert_eq!(dest_from(&dest, k.family()).unwrap().destination, d, "{args}");
        }
    }

    /// 64-bit counters are preferred; the 32-bit STATS of old kernels are the fallback.
    #[test]
    fn stats64_preferred_stats32_fallback() {
        let base = service_attrs(&Service::new(ServiceKey::tcp("10.0.0.1:80".parse().unwrap()), Scheduler::Rr));
        let big = 5_000_000_000u64;
        let mut both = base.clone();
        both.push(ServiceAttr::Stats(vec![
            StatsAttr::U32(StatsField::Conns, 7),
            StatsAttr::U64(StatsField::InBytes, 1),
        ]));
        both.push(ServiceAttr::Stats64(vec![
            StatsAttr::U64(StatsField::Conns, big),
            StatsAttr::U64(StatsField::InBytes, big + 1),
        ]));
        let s = service_from(&both).unwrap().stats;
        assert_eq!((s.conns, s.in_bytes), (big, big + 1));
        let mut old = base;
        old.push(ServiceAttr::Stats(vec![
            StatsAttr::U32(StatsField::Conns, 7),
            StatsAttr::U64(StatsField::InBytes, big),
        ]));
        let s = service_from(&old).unwrap().stats;
        assert_eq!((s.conns, s.in_bytes), (7, big));
    }
}
