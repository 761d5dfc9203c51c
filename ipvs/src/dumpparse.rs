//! The hot part of a table dump: destination messages parsed straight from
//! the received bytes into [`DestinationEntry`], with no allocation and no
//! intermediate attribute list. What the attributes mean stays in one place,
//! [`RawDest::finish`], which [`crate::convert::dest_from`] (the reference
//! path through `ipvs_sys`'s typed attributes) uses too; the tests hold this
//! parser to that reference on any bytes, errors included.

use ipvs_sys::bytes;
use ipvs_sys::constants::{attr, dest, svc};
use ipvs_sys::InetAddr;
use netlink_packet_core::NLA_TYPE_MASK;

use crate::convert::{RawDest, RawService};
use crate::error::{Error, Result};
use crate::types::{DestinationEntry, Family, ServiceEntry, Stats};

/// The attributes in a buffer as (type without flags, value),
/// like `netlink_packet_core::NlasIterator` (including its errors on a
/// malformed header or trailing bytes) but without its per-attribute checks.
struct Nlas<'a>(&'a [u8]);

/// A malformed attribute header: its length and the bytes that were left.
/// Small, so that the hot loops move little; it becomes an [`Error`] only
/// when it happens.
struct BadNla {
    len: usize,
    left: usize,
}

impl From<BadNla> for Error {
    fn from(b: BadNla) -> Self {
        Error::Decode(format!("invalid netlink attribute: length {} with {} bytes left", b.len, b.left))
    }
}

impl<'a> Iterator for Nlas<'a> {
    type Item = std::result::Result<(u16, &'a [u8]), BadNla>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        if b.is_empty() {
            return None;
        }
        let len = if b.len() >= 4 { usize::from(u16::from_ne_bytes([b[0], b[1]])) } else { 0 };
        if len < 4 || len > b.len() {
            self.0 = &[];
            return Some(Err(BadNla { len, left: b.len() }));
        }
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        self.0 = &b[((len + 3) & !3).min(b.len())..];
        Some(Ok((kind, &b[4..len])))
    }
}

/// The readers of `ipvs_sys::bytes`, with this crate's error.
fn u16_ne(what: &str, v: &[u8]) -> Result<u16> {
    bytes::u16_ne(what, v).map_err(decode)
}

fn u16_be(what: &str, v: &[u8]) -> Result<u16> {
    bytes::u16_be(what, v).map_err(decode)
}

fn u32_ne(what: &str, v: &[u8]) -> Result<u32> {
    bytes::u32_ne(what, v).map_err(decode)
}

fn decode(e: ipvs_sys::DecodeError) -> Error {
    Error::Decode(e.to_string())
}

/// Parse the top-level attributes of one GET_DEST reply message, pushing
/// each destination it holds onto `out`. The kernel sends one message per
/// destination, so `out` grows one entry at a time: callers that keep the
/// list fit it to its length at the end.
pub(crate) fn dest_message(attrs: &[u8], family: Family, out: &mut Vec<DestinationEntry>) -> Result<()> {
    for nla in Nlas(attrs) {
        let (kind, value) = nla?;
        if kind == attr::DEST {
            out.push(dest(value, family)?);
        }
    }
    Ok(())
}

/// Parse the payload of one nested destination attribute.
pub(crate) fn dest(payload: &[u8], family: Family) -> Result<DestinationEntry> {
    let mut r = RawDest::default();
    // The statistics sets, read once all attributes are known (see `stats_of`).
    let (mut s32, mut s64) = (None, None);
    for nla in Nlas(payload) {
        let (kind, v) = nla?;
        match kind {
            dest::ADDR => r.addr = Some(InetAddr::parse(v).map_err(|e| Error::Decode(e.to_string()))?),
            dest::PORT => r.port = u16_be("destination port", v)?,
            dest::FWD_METHOD => r.method = Some(u32_ne("destination forwarding method", v)?),
            dest::WEIGHT => r.weight = u32_ne("destination weight", v)?,
            dest::U_THRESH => r.upper = u32_ne("destination upper threshold", v)?,
            dest::L_THRESH => r.lower = u32_ne("destination lower threshold", v)?,
            dest::ACTIVE_CONNS => r.active = u32_ne("destination active connections", v)?,
            dest::INACT_CONNS => r.inactive = u32_ne("destination inactive connections", v)?,
            dest::PERSIST_CONNS => r.persistent = u32_ne("destination persistent connections", v)?,
            dest::STATS => s32 = Some(check_stats(v)?),
            dest::ADDR_FAMILY => r.af = Some(u16_ne("destination address family", v)?).filter(|a| *a != 0),
            dest::STATS64 => s64 = Some(check_stats(v)?),
            dest::TUN_TYPE => r.tun_type = bytes::u8_("destination tunnel type", v).map_err(decode)?,
            dest::TUN_PORT => r.tun_port = u16_be("destination tunnel port", v)?,
            dest::TUN_FLAGS => r.tun_flags = u16_ne("destination tunnel flags", v)?,
            _ => {}
        }
    }
    (r.stats32, r.stats64) = stats_of(s32, s64);
    r.finish(family)
}

/// The statistics sets as [`RawDest`] and [`RawService`] hold them, from
/// the last `STATS` and `STATS64` payloads received (already checked by
/// [`check_stats`]). Only the set `finish` keeps is read: the 64-bit one
/// when present (every kernel since 4.0 sends both), else the legacy one.
fn stats_of(s32: Option<&[u8]>, s64: Option<&[u8]>) -> (Option<Stats>, Option<Stats>) {
    match s64 {
        Some(b) => (None, Some(read_stats(b))),
        None => (s32.map(read_stats), None),
    }
}
/// Parse the top-level attributes of one GET_SERVICE reply message, pushing
/// the service it holds onto `out` (as `convert::service_from` would read
/// `ipvs_sys`'s parse of it).
pub(crate) fn service_message(attrs: &[u8], out: &mut Vec<ServiceEntry>) -> Result<()> {
    for nla in Nlas(attrs) {
        let (kind, value) = nla?;
        if kind == attr::SERVICE {
            out.push(service(value)?);
        }
    }
    Ok(())
}

/// Parse the payload of one nested service attribute.
pub(crate) fn service(payload: &[u8]) -> Result<ServiceEntry> {
    let mut r = RawService::default();
    let (mut s32, mut s64) = (None, None);
    for nla in Nlas(payload) {
        let (kind, v) = nla?;
        match kind {
            svc::AF => r.af = Some(u16_ne("service address family", v)?),
            svc::PROTOCOL => r.proto = Some(u16_ne("service protocol", v)?),
            svc::ADDR => r.addr = Some(InetAddr::parse(v).map_err(|e| Error::Decode(e.to_string()))?),
            svc::PORT => r.port = Some(u16_be("service port", v)?),
            svc::FWMARK => r.mark = Some(u32_ne("service fwmark", v)?),
            svc::SCHED_NAME => r.sched = Some(bytes::cstr("scheduler name", v).map_err(decode)?),
            svc::FLAGS => match *v {
                [a, b, c, d, e, f, g, h] => {
                    r.flags = u32::from_ne_bytes([a, b, c, d]) & u32::from_ne_bytes([e, f, g, h]);
                }
                _ => return Err(decode(bytes::bad_len("service flags", 8, v.len()))),
            },
            svc::TIMEOUT => r.timeout = u32_ne("service timeout", v)?,
            svc::NETMASK => r.netmask = Some(u32_ne("service netmask", v)?),
            svc::STATS => s32 = Some(check_stats(v)?),
            svc::PE_NAME => r.pe = Some(bytes::cstr("pe name", v).map_err(decode)?),
            svc::STATS64 => s64 = Some(check_stats(v)?),
            _ => {}
        }
    }
    (r.stats32, r.stats64) = stats_of(s32, s64);
    r.finish()
}

/// A statistics payload whose attribute headers are sound (what
/// `StatsAttr::parse_all` would refuse is an error here too), for
/// [`read_stats`].
fn check_stats(payload: &[u8]) -> Result<&[u8]> {
    for nla in Nlas(payload) {
        nla?;
    }
    Ok(payload)
}

/// A checked statistics set as `convert::stats_from` reads
/// `StatsAttr::parse_all`'s list: 4- or 8-byte values of known counters;
/// padding, unknown attributes and other widths are ignored. The values go
/// to a table by attribute number (the counters are numbers 1 to 10, see
/// `ipvs_sys::constants::stats`), no field is looked up.
fn read_stats(payload: &[u8]) -> Stats {
    use ipvs_sys::constants::stats as k;
    let mut v = [0u64; 11];
    for (kind, b) in Nlas(payload).map_while(std::result::Result::ok) {
        let x = match *b {
            [a, b, c, d] => u64::from(u32::from_ne_bytes([a, b, c, d])),
            [a, b, c, d, e, g, h, i] => u64::from_ne_bytes([a, b, c, d, e, g, h, i]),
            _ => continue,
        };
        // Number 0 and those past the table (padding, unknown) are dropped.
        if let Some(slot) = v.get_mut(usize::from(kind)) {
            *slot = x;
        }
    }
    let at = |n: u16| v[usize::from(n)];
    Stats {
        conns: at(k::CONNS),
        in_pkts: at(k::INPKTS),
        out_pkts: at(k::OUTPKTS),
        in_bytes: at(k::INBYTES),
        out_bytes: at(k::OUTBYTES),
        cps: at(k::CPS),
        in_pps: at(k::INPPS),
        out_pps: at(k::OUTPPS),
        in_bps: at(k::INBPS),
        out_bps: at(k::OUTBPS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::dest_from;
    use ipvs_sys::{DestAttr, StatsAttr, StatsField};
    use netlink_packet_core::{DefaultNla, Emitable};

    fn bytes(attrs: &[DestAttr]) -> Vec<u8> {
        let mut b = vec![0; attrs.buffer_len()];
        attrs.emit(&mut b);
        b
    }

    /// The reference: parse everything with ipvs_sys, then dest_from.
    fn slow(b: &[u8], fam: Family) -> Result<DestinationEntry> {
        let attrs = DestAttr::parse_all(b).map_err(decode)?;
        dest_from(&attrs, fam)
    }

    fn stats(base: u64, wide: bool) -> Vec<StatsAttr> {
        StatsField::ALL
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let v = base + i as u64;
                if wide || matches!(f, StatsField::InBytes | StatsField::OutBytes) {
                    StatsAttr::U64(*f, v)
                } else {
                    StatsAttr::U32(*f, v as u32)
                }
            })
            .collect()
    }

    fn base() -> Vec<DestAttr> {
        vec![
            DestAttr::Address(InetAddr::from("10.0.0.2".parse::<std::net::IpAddr>().unwrap())),
            DestAttr::Port(80),
            DestAttr::FwdMethod(3),
            DestAttr::Weight(7),
            DestAttr::UpperThreshold(9),
            DestAttr::LowerThreshold(2),
            DestAttr::ActiveConns(4),
            DestAttr::InactiveConns(5),
            DestAttr::PersistConns(6),
            DestAttr::AddressFamily(2),
        ]
    }

    #[test]
    fn same_as_the_reference_parse() {
        // Each case with whether it must parse.
        let ok: Vec<Vec<DestAttr>> = vec![
            base(),
            [base(), vec![DestAttr::Stats(stats(100, false))]].concat(),
            [base(), vec![DestAttr::Stats(stats(100, false)), DestAttr::Stats64(stats(1 << 40, true))]].concat(),
            [vec![DestAttr::Stats64(stats(7, true))], base(), vec![DestAttr::Stats(stats(3, false))]].concat(),
            [
                base(),
                vec![
                    DestAttr::FwdMethod(2),
                    DestAttr::TunType(1),
                    DestAttr::TunPort(6080),
                    DestAttr::TunFlags(1),
                    DestAttr::Other(DefaultNla::new(99, vec![1, 2, 3])),
                ],
            ]
            .concat(),
            // A forwarding method the library does not know is a value of its own.
            vec![DestAttr::FwdMethod(5), DestAttr::Address(InetAddr::default())],
        ];
        // No address; no forwarding method.
        let bad: Vec<Vec<DestAttr>> = vec![base()[1..].to_vec(), vec![DestAttr::Address(InetAddr::default())]];
        let cases = ok.iter().map(|c| (c, true)).chain(bad.iter().map(|c| (c, false)));
        for (i, (c, must_parse)) in cases.enumerate() {
            let b = bytes(c);
            for fam in [Family::Inet, Family::Inet6] {
                let want = slow(&b, fam);
                assert_eq!(want.is_ok(), must_parse, "case {i}: reference {want:?}");
                // Twice, to show the scratch buffers do not leak between destinations.
                for _ in 0..2 {
                    let got = dest(&b, fam);
                    match (&want, &got) {
                        (Ok(w), Ok(g)) => assert_eq!(w, g, "case {i}"),
                        (Err(_), Err(_)) => {}
                        _ => panic!("case {i}: reference {want:?}, fast {got:?}"),
                    }
                }
            }
        }
        let other = dest(&bytes(&ok[5]), Family::Inet).unwrap();
        assert_eq!(other.destination.forward, crate::types::Forward::Other(5));
        // A stats set from a previous destination is not carried over.
        let with = dest(&bytes(&[base(), vec![DestAttr::Stats64(stats(5, true))]].concat()), Family::Inet).unwrap();
        assert_eq!(with.stats.conns, 5);
        let without = dest(&bytes(&base()), Family::Inet).unwrap();
        assert_eq!(without.stats, Default::default());
    }

    /// Attributes as bytes, cut at `cut` when that is inside them and a
    /// multiple of 3 (so that a third of the cases end in the middle of one),
    /// and whether the cut fell inside an attribute (before the end of its
    /// value: such bytes must not parse).
    fn encode(attrs: &[(u16, Vec<u8>)], cut: usize) -> (Vec<u8>, bool) {
        let mut b = Vec::new();
        let mut spans = Vec::new();
        for (kind, v) in attrs {
            let start = b.len();
            b.extend_from_slice(&((v.len() + 4) as u16).to_ne_bytes());
            b.extend_from_slice(&kind.to_ne_bytes());
            b.extend_from_slice(v);
            spans.push((start, b.len()));
            b.resize((b.len() + 3) & !3, 0);
        }
        let mut inside = false;
        if cut < b.len() && cut % 3 == 0 {
            b.truncate(cut);
            inside = spans.iter().any(|&(start, end)| start < cut && cut < end);
        }
        (b, inside)
    }

    /// An attribute value: mostly of a length some attribute has (so that
    /// whole entries parse, not just errors), sometimes of any length.
    fn value() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop_oneof![
            4 => prop_oneof![Just(1usize), Just(2), Just(4), Just(8), Just(16)],
            1 => 0usize..24,
        ]
        .prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n))
    }

    proptest::proptest! {
        /// On any bytes (mostly well-formed attribute lists with random
        /// values), the fast parse agrees with the reference.
        #[test]
        fn agrees_with_the_reference_on_any_bytes(
            attrs in proptest::collection::vec((1u16..16, value()), 0..20),
            cut in 0usize..400,
        ) {
            let (b, cut_inside) = encode(&attrs, cut);
            let want = slow(&b, Family::Inet);
            let got = dest(&b, Family::Inet);
            if cut_inside {
                proptest::prop_assert!(want.is_err() && got.is_err(), "cut inside: reference {:?}, fast {:?}", want, got);
            }
            match (&want, &got) {
                (Ok(w), Ok(g)) => proptest::prop_assert_eq!(w, g),
                (Err(_), Err(_)) => {}
                _ => proptest::prop_assert!(false, "reference {:?}, fast {:?}", want, got),
            }
        }
    }

    /// The reference service parse: everything with ipvs_sys, then service_from.
    fn slow_service(b: &[u8]) -> Result<ServiceEntry> {
        crate::convert::service_from(&ipvs_sys::ServiceAttr::parse_all(b).map_err(decode)?)
    }

    #[test]
    fn services_same_as_the_reference_parse() {
        use crate::convert::service_attrs;
        use crate::types::{Persistence, Scheduler, Service, ServiceKey};
        use ipvs_sys::ServiceAttr;
        let mut svc = Service::new(ServiceKey::tcp("10.0.0.1:80".parse().unwrap()), Scheduler::Wrr);
        let mut cases = vec![service_attrs(&svc)];
        svc.persistence = Some(Persistence { timeout: 300, netmask: None });
        svc.pe = Some("sip".into());
        svc.one_packet = true;
        cases.push([service_attrs(&svc), vec![ServiceAttr::Stats(stats(3, false))]].concat());
        let v6 = Service::new(ServiceKey::fwmark(7, Family::Inet6), Scheduler::Other("mine".into()));
        cases.push([service_attrs(&v6), vec![ServiceAttr::Stats64(stats(1 << 40, true))]].concat());
        // Errors: no family; no scheduler.
        cases.push(service_attrs(&svc)[1..].to_vec());
        cases.push(
            service_attrs(&Service::new(ServiceKey::udp("[::1]:53".parse().unwrap()), Scheduler::Rr))[..4].to_vec(),
        );
        // A protocol the library does not know is a value of its own.
        let esp = ServiceKey::Inet { protocol: crate::types::Protocol::Other(50), addr: "10.0.0.5:0".parse().unwrap() };
        cases.insert(3, service_attrs(&Service::new(esp, Scheduler::Rr)));
        // The cases from index 4 on must fail.
        for (i, c) in cases.iter().enumerate() {
            let mut b = vec![0; c.as_slice().buffer_len()];
            c.as_slice().emit(&mut b);
            let (w, g) = (slow_service(&b), service(&b));
            assert_eq!(w.is_ok(), i < 4, "case {i}: reference {w:?}");
            match (w, g) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "case {i}"),
                (Err(_), Err(_)) => {}
                (w, g) => panic!("case {i}: reference {w:?}, fast {g:?}"),
            }
        }
        let mut b = vec![0; cases[3].as_slice().buffer_len()];
        cases[3].as_slice().emit(&mut b);
        assert_eq!(service(&b).unwrap().service.key, esp);
    }

    proptest::proptest! {
        /// On any bytes the fast service parse agrees with the reference.
        #[test]
        fn services_agree_with_the_reference_on_any_bytes(
            attrs in proptest::collection::vec((1u16..16, value()), 0..16),
            cut in 0usize..300,
        ) {
            let (b, cut_inside) = encode(&attrs, cut);
            let (want, got) = (slow_service(&b), service(&b));
            if cut_inside {
                proptest::prop_assert!(want.is_err() && got.is_err(), "cut inside: reference {:?}, fast {:?}", want, got);
            }
            match (want, got) {
                (Ok(w), Ok(g)) => proptest::prop_assert_eq!(w, g),
                (Err(_), Err(_)) => {}
                (w, g) => proptest::prop_assert!(false, "reference {:?}, fast {:?}", w, g),
            }
        }
    }

    #[test]
    fn truncated_bytes_are_an_error() {
        let mut b = bytes(&[base(), vec![DestAttr::Stats(stats(1, false))]].concat());
        b.truncate(b.len() - 3);
        assert!(dest(&b, Family::Inet).is_err());
        let mut w = bytes(&base());
        // Make the weight attribute 3 bytes long: a decode error, as in ipvs_sys.
        let pos = w.windows(4).position(|x| x == [8, 0, 4, 0]).unwrap();
        w[pos] = 7;
        assert_eq!(slow(&w, Family::Inet).is_err(), dest(&w, Family::Inet).is_err());
    }
}
