//! Property tests of the wire format: any message emits and parses back to
//! itself, its bytes survive parse then emit unchanged (attributes this crate
//! does not know included, at every nesting level), and arbitrary bytes never
//! make the parser panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipvs_sys::*;
use netlink_packet_core::{NLA_F_NESTED, NLA_F_NET_BYTEORDER};
use proptest::prelude::*;

const FAMILY: u16 = 0x20;

/// An attribute of a kind unknown at its level (`min_kind` and up), with any
/// of the two flag bits and any value.
fn unknown(min_kind: u16) -> impl Strategy<Value = DefaultNla> {
    (min_kind..0x3fffu16, any::<bool>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..24)).prop_map(
        |(kind, nested, netorder, value)| {
            let mut k = kind;
            if nested {
                k |= NLA_F_NESTED;
            }
            if netorder {
                k |= NLA_F_NET_BYTEORDER;
            }
            DefaultNla::new(k, value)
        },
    )
}

/// A string attribute value: no NUL inside (the NUL ends it on the wire).
fn name() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{0,15}"
}

fn stats() -> impl Strategy<Value = Vec<StatsAttr>> {
    let field = prop::sample::select(StatsField::ALL.to_vec());
    let one = prop_oneof![
        (field.clone(), any::<u32>()).prop_map(|(f, v)| StatsAttr::U32(f, v)),
        (field, any::<u64>()).prop_map(|(f, v)| StatsAttr::U64(f, v)),
        // PAD (11) and anything above.
        unknown(11).prop_map(StatsAttr::Other),
    ];
    prop::collection::vec(one, 0..12)
}

fn inet() -> impl Strategy<Value = InetAddr> {
    any::<[u8; 16]>().prop_map(InetAddr)
}

fn service_attr() -> impl Strategy<Value = ServiceAttr> {
    prop_oneof![
        any::<u16>().prop_map(ServiceAttr::AddressFamily),
        any::<u16>().prop_map(ServiceAttr::Protocol),
        inet().prop_map(ServiceAttr::Address),
        any::<u16>().prop_map(ServiceAttr::Port),
        any::<u32>().prop_map(ServiceAttr::Fwmark),
        name().prop_map(ServiceAttr::SchedName),
        (any::<u32>(), any::<u32>()).prop_map(|(flags, mask)| ServiceAttr::Flags(ServiceFlags { flags, mask })),
        any::<u32>().prop_map(ServiceAttr::Timeout),
        any::<u32>().prop_map(ServiceAttr::Netmask),
        stats().prop_map(ServiceAttr::Stats),
        name().prop_map(ServiceAttr::PeName),
        stats().prop_map(ServiceAttr::Stats64),
        unknown(13).prop_map(ServiceAttr::Other),
    ]
}

fn dest_attr() -> impl Strategy<Value = DestAttr> {
    prop_oneof![
        inet().prop_map(DestAttr::Address),
        any::<u16>().prop_map(DestAttr::Port),
        any::<u32>().prop_map(DestAttr::FwdMethod),
        any::<u32>().prop_map(DestAttr::Weight),
        any::<u32>().prop_map(DestAttr::UpperThreshold),
        any::<u32>().prop_map(DestAttr::LowerThreshold),
        any::<u32>().prop_map(DestAttr::ActiveConns),
        any::<u32>().prop_map(DestAttr::InactiveConns),
        any::<u32>().prop_map(DestAttr::PersistConns),
        stats().prop_map(DestAttr::Stats),
        any::<u16>().prop_map(DestAttr::AddressFamily),
        stats().prop_map(DestAttr::Stats64),
        any::<u8>().prop_map(DestAttr::TunType),
        any::<u16>().prop_map(DestAttr::TunPort),
        any::<u16>().prop_map(DestAttr::TunFlags),
        unknown(16).prop_map(DestAttr::Other),
    ]
}

fn daemon_attr() -> impl Strategy<Value = DaemonAttr> {
    prop_oneof![
        any::<u32>().prop_map(DaemonAttr::State),
        name().prop_map(DaemonAttr::McastIfn),
        any::<u32>().prop_map(DaemonAttr::SyncId),
        any::<u16>().prop_map(DaemonAttr::SyncMaxLen),
        any::<[u8; 4]>().prop_map(|b| DaemonAttr::McastGroup(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| DaemonAttr::McastGroup6(Ipv6Addr::from(b))),
        any::<u16>().prop_map(DaemonAttr::McastPort),
        any::<u8>().prop_map(DaemonAttr::McastTtl),
        unknown(9).prop_map(DaemonAttr::Other),
    ]
}

fn cmd() -> impl Strategy<Value = IpvsCmd> {
    // Known numbers and some unknown ones (0, 18..).
    prop_oneof![(1u8..=17).prop_map(IpvsCmd::from), (18u8..=255).prop_map(IpvsCmd::Other), Just(IpvsCmd::Other(0))]
}

/// A message whose top-level attributes fit its command: info replies carry
/// info attributes, everything else the command attributes.
fn message() -> impl Strategy<Value = IpvsMessage> {
    cmd().prop_flat_map(|cmd| {
        let attrs = if matches!(cmd, IpvsCmd::SetInfo | IpvsCmd::GetInfo) {
            prop::collection::vec(
                prop_oneof![
                    any::<u32>().prop_map(IpvsAttr::InfoVersion),
                    any::<u32>().prop_map(IpvsAttr::InfoConnTabSize),
                    unknown(3).prop_map(IpvsAttr::Other),
                ],
                0..5,
            )
            .boxed()
        } else {
            prop::collection::vec(
                prop_oneof![
                    prop::collection::vec(service_attr(), 0..14).prop_map(IpvsAttr::Service),
                    prop::collection::vec(dest_attr(), 0..16).prop_map(IpvsAttr::Dest),
                    prop::collection::vec(daemon_attr(), 0..9).prop_map(IpvsAttr::Daemon),
                    any::<u32>().prop_map(IpvsAttr::TimeoutTcp),
                    any::<u32>().prop_map(IpvsAttr::TimeoutTcpFin),
                    any::<u32>().prop_map(IpvsAttr::TimeoutUdp),
                    unknown(7).prop_map(IpvsAttr::Other),
                ],
                0..5,
            )
            .boxed()
        };
        attrs.prop_map(move |attrs| IpvsMessage::new(cmd, attrs))
    })
}

fn emit(m: &IpvsMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut buf = Vec::new();
    emit_request(&mut buf, FAMILY, flags, seq, m);
    buf
}

/// One attribute written by hand (not by the crate's emitter): header with
/// the type exactly as given, value, zero padding.
fn raw_nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(value);
    while b.len() % 4 != 0 {
        b.push(0);
    }
    b
}

/// A message written by hand: unknown attributes (any flags) mixed with
/// known ones at the top level, inside a service, and inside its statistics.
fn raw_message() -> impl Strategy<Value = Vec<u8>> {
    let unk = |min: u16| {
        (min..0x3fffu16, 0u16..4, prop::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(k, f, v)| raw_nla(k | (f << 14), &v))
    };
    let stats_item = prop_oneof![unk(11), (1u16..=10, any::<u64>()).prop_map(|(k, v)| raw_nla(k, &v.to_ne_bytes()))];
    let stats = prop::collection::vec(stats_item, 0..6).prop_map(|v| raw_nla(12 | NLA_F_NESTED, &v.concat()));
    let svc_item = prop_oneof![
        unk(13),
        any::<u32>().prop_map(|v| raw_nla(8, &v.to_ne_bytes())),
        "[a-z]{1,15}".prop_map(|s| raw_nla(6, format!("{s}\0").as_bytes())),
        stats,
    ];
    let svc = prop::collection::vec(svc_item, 0..6).prop_map(|v| raw_nla(1 | NLA_F_NESTED, &v.concat()));
    let top = prop_oneof![unk(7), svc, any::<u32>().prop_map(|v| raw_nla(4, &v.to_ne_bytes()))];
    prop::collection::vec(top, 0..5).prop_map(|attrs| {
        let body = attrs.concat();
        let mut b = Vec::new();
        b.extend_from_slice(&((20 + body.len()) as u32).to_ne_bytes());
        b.extend_from_slice(&FAMILY.to_ne_bytes());
        b.extend_from_slice(&0x0301u16.to_ne_bytes());
        b.extend_from_slice(&42u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&[constants::cmd::NEW_SERVICE, 1, 0, 0]);
        b.extend_from_slice(&body);
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Hand-written bytes with unknown attributes (and both flag bits) at
    /// every level survive parse then emit unchanged.
    #[test]
    fn raw_bytes_survive_parse_then_emit(bytes in raw_message()) {
        let r = parse_replies(&bytes, FAMILY).next().unwrap().unwrap();
        let ReplyKind::Message(parsed) = r.kind else { panic!("not a message") };
        prop_assert_eq!(emit(&parsed, r.flags, r.seq), bytes);
    }

    /// emit then parse gives back the same value, flags and sequence number.
    #[test]
    fn emit_then_parse_is_identity(m in message(), flags in any::<u16>(), seq in any::<u32>()) {
        let bytes = emit(&m, flags, seq);
        prop_assert_eq!(bytes.len() % 4, 0);
        let replies: Vec<_> = parse_replies(&bytes, FAMILY).collect();
        prop_assert_eq!(replies.len(), 1);
        let r = replies.into_iter().next().unwrap().unwrap();
        prop_assert_eq!(r.seq, seq);
        prop_assert_eq!(r.flags, flags);
        prop_assert_eq!(r.kind, ReplyKind::Message(m));
    }

    /// Bytes survive parse then emit unchanged, unknown attributes (with their
    /// flags and values) at every level included.
    #[test]
    fn parse_then_emit_is_byte_identical(m in message(), seq in any::<u32>()) {
        let bytes = emit(&m, 0x0301, seq);
        let r = parse_replies(&bytes, FAMILY).next().unwrap().unwrap();
        let ReplyKind::Message(parsed) = r.kind else { panic!("not a message") };
        prop_assert_eq!(emit(&parsed, r.flags, r.seq), bytes);
    }

    /// Several messages in one buffer come back in order.
    #[test]
    fn many_messages_in_one_buffer(ms in prop::collection::vec(message(), 1..6)) {
        let mut buf = Vec::new();
        for (i, m) in ms.iter().enumerate() {
            emit_request(&mut buf, FAMILY, 0, i as u32, m);
        }
        let got: Vec<_> = parse_replies(&buf, FAMILY).map(|r| r.unwrap()).collect();
        prop_assert_eq!(got.len(), ms.len());
        for (i, (r, m)) in got.into_iter().zip(ms).enumerate() {
            prop_assert_eq!(r.seq, i as u32);
            prop_assert_eq!(r.kind, ReplyKind::Message(m));
        }
    }

    /// Arbitrary bytes never panic the parser (the same check as the
    /// cargo-fuzz target in fuzz/, run on stable).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), family in prop_oneof![Just(FAMILY), any::<u16>()]) {
        for r in parse_replies(&bytes, family) {
            let _ = r;
        }
    }

    /// Valid messages with some bytes changed never panic the parser either
    /// (reaches far deeper than random bytes do).
    #[test]
    fn mutated_messages_never_panic(m in message(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let mut bytes = emit(&m, 0, 1);
        for (i, v) in edits {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        let cut = cut.index(bytes.len() + 1);
        for r in parse_replies(&bytes[..cut], FAMILY) {
            let _ = r;
        }
    }
}
