//! Golden bytes: messages ipvsadm 1.31 sent and Linux 6.1 answered, captured
//! in the test VM (see `tests/data/ipvsadm-1.31-linux-6.1.txt` for how). Each
//! request is parsed and compared with the value written out by hand here, and
//! that value is emitted and compared with the captured bytes; the same for a
//! few kernel replies.
//!
//! NLA_F_NESTED: libnl (ipvsadm) sets it on nested attributes and so does this
//! crate, so requests compare byte for byte (only `nlmsg_pid` differs, which
//! the kernel fills in). The kernel does NOT set it in its replies
//! (`nla_nest_start_noflag`); the parser accepts both, and reply bytes are
//! compared with the flag masked out of every nested attribute header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipvs_sys::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use ipvs_sys::*;

const FAMILY: u16 = 0x20;
const DATA: &str = include_str!("data/ipvsadm-1.31-linux-6.1.txt");

struct Msg {
    send: bool,
    bytes: Vec<u8>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// The messages of one `# ipvsadm ARGS` section.
fn section(args: &str) -> Vec<Msg> {
    let mut out = None;
    for line in DATA.lines() {
        if let Some(a) = line.strip_prefix("# ipvsadm ") {
            if out.is_some() {
                break;
            }
            if a == args {
                out = Some(Vec::new());
            }
            continue;
        }
        if let (Some(v), Some((dir, h))) = (out.as_mut(), line.split_once(' ')) {
            v.push(Msg { send: dir == "send", bytes: hex(h) });
        }
    }
    out.unwrap_or_else(|| panic!("no section for ipvsadm {args}"))
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_ne_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes(b[o..o + 4].try_into().unwrap())
}

/// The request of a section that is not GET_INFO (ipvsadm asks for info first, every time).
fn request(args: &str) -> Vec<u8> {
    let reqs: Vec<Vec<u8>> = section(args)
        .into_iter()
        .filter(|m| m.send && u16_at(&m.bytes, 4) == FAMILY && m.bytes[16] != constants::cmd::GET_INFO)
        .map(|m| m.bytes)
        .collect();
    assert_eq!(reqs.len(), 1, "one request in section {args}");
    reqs.into_iter().next().unwrap()
}

fn parse_one(bytes: &[u8]) -> Reply {
    let mut it = parse_replies(bytes, FAMILY);
    let r = it.next().expect("one message").expect("parses");
    assert!(it.next().is_none(), "exactly one message");
    r
}

/// Parse the captured request and compare it with `want`; emit `want` with
/// the captured flags and sequence number and compare the bytes (all but
/// `nlmsg_pid`, bytes 12..16).
fn golden_request(args: &str, want: IpvsMessage) {
    let bytes = request(args);
    let r = parse_one(&bytes);
    assert_eq!(r.kind, ReplyKind::Message(want.clone()), "parse of ipvsadm {args}");
    assert_eq!(r.seq, u32_at(&bytes, 8));
    let mut buf = Vec::new();
    let n = emit_request(&mut buf, FAMILY, u16_at(&bytes, 6), u32_at(&bytes, 8), &want);
    assert_eq!(n, buf.len());
    assert_eq!(buf.len(), bytes.len(), "length of ipvsadm {args}");
    assert_eq!(buf[..12], bytes[..12], "nlmsghdr of ipvsadm {args}");
    assert_eq!(hexs(&buf[16..]), hexs(&bytes[16..]), "genl header and attributes of ipvsadm {args}");
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Clear NLA_F_NESTED in every nested attribute header of an IPVS message
/// (nlmsghdr + genlmsghdr + attributes), knowing which attributes nest: at the
/// top SERVICE (1), DEST (2) and DAEMON (3); inside services and destinations
/// STATS (10) and STATS64 (12). Info messages have no nested attributes.
fn clear_nested(msg: &mut [u8]) {
    fn walk(buf: &mut [u8], depth: u8, parent: u16) {
        let mut off = 0;
        while off + 4 <= buf.len() {
            let len = u16_at(buf, off) as usize;
            if len < 4 || off + len > buf.len() {
                return;
            }
            let raw = u16_at(buf, off + 2);
            let kind = raw & netlink_packet_core::NLA_TYPE_MASK;
            let nests = match depth {
                0 => matches!(kind, 1..=3),
                1 => matches!(parent, 1 | 2) && matches!(kind, 10 | 12),
                _ => false,
            };
            if nests {
                buf[off + 2..off + 4].copy_from_slice(&(raw & !netlink_packet_core::NLA_F_NESTED).to_ne_bytes());
                walk(&mut buf[off + 4..off + len], depth + 1, kind);
            }
            off += (len + 3) & !3;
        }
    }
    let cmd = msg[16];
    if cmd == constants::cmd::SET_INFO || cmd == constants::cmd::GET_INFO {
        return;
    }
    walk(&mut msg[20..], 0, 0);
}

/// Parse a captured kernel reply, compare with `want`, and emit `want` with
/// the reply's flags and sequence number: the bytes equal the kernel's but for
/// `nlmsg_pid` and NLA_F_NESTED.
fn golden_reply(bytes: &[u8], want: &IpvsMessage) {
    let r = parse_one(bytes);
    assert_eq!(r.kind, ReplyKind::Message(want.clone()));
    let mut buf = Vec::new();
    emit_request(&mut buf, FAMILY, u16_at(bytes, 6), u32_at(bytes, 8), want);
    let mut kernel = bytes.to_vec();
    clear_nested(&mut kernel);
    clear_nested(&mut buf);
    assert_eq!(buf[..12], kernel[..12]);
    assert_eq!(hexs(&buf[16..]), hexs(&kernel[16..]));
}

fn addr(s: &str) -> InetAddr {
    s.parse::<IpAddr>().unwrap().into()
}

fn flags(flags: u32) -> ServiceAttr {
    ServiceAttr::Flags(ServiceFlags { flags, mask: u32::MAX })
}

fn svc_v4(proto: u16, a: &str, port: u16, sched: &str) -> Vec<ServiceAttr> {
    vec![
        ServiceAttr::AddressFamily(AF_INET),
        ServiceAttr::Protocol(proto),
        ServiceAttr::Address(addr(a)),
        ServiceAttr::Port(port),
        ServiceAttr::SchedName(sched.into()),
        flags(0),
        ServiceAttr::Timeout(0),
        ServiceAttr::Netmask(u32::MAX),
    ]
}

/// ipvsadm's destination attributes, in its order.
fn dest_v4(a: &str, port: u16, fwd: u32, weight: u32, tun: (u8, u16, u16), u: u32, l: u32) -> Vec<DestAttr> {
    vec![
        DestAttr::AddressFamily(AF_INET),
        DestAttr::Address(addr(a)),
        DestAttr::Port(port),
        DestAttr::FwdMethod(fwd),
        DestAttr::Weight(weight),
        DestAttr::TunType(tun.0),
        DestAttr::TunPort(tun.1),
        DestAttr::TunFlags(tun.2),
        DestAttr::UpperThreshold(u),
        DestAttr::LowerThreshold(l),
    ]
}

fn msg(cmd: IpvsCmd, attrs: Vec<IpvsAttr>) -> IpvsMessage {
    IpvsMessage::new(cmd, attrs)
}

// ---- requests ---------------------------------------------------------------

#[test]
fn add_tcp_service_rr() {
    golden_request(
        "-A -t 10.0.0.1:80 -s rr",
        msg(IpvsCmd::NewService, vec![IpvsAttr::Service(svc_v4(IPPROTO_TCP, "10.0.0.1", 80, "rr"))]),
    );
}

#[test]
fn add_dr_destination() {
    golden_request(
        "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1",
        msg(
            IpvsCmd::NewDest,
            vec![
                IpvsAttr::Service(svc_v4(IPPROTO_TCP, "10.0.0.1", 80, "")),
                IpvsAttr::Dest(dest_v4("10.0.0.2", 80, constants::fwd::DROUTE, 1, (0, 0, 0), 0, 0)),
            ],
        ),
    );
}

#[test]
fn add_fwmark_v6_persistent_service() {
    golden_request(
        "-A -f 5 -6 -s wlc -p 300 -M 64",
        msg(
            IpvsCmd::NewService,
            vec![IpvsAttr::Service(vec![
                ServiceAttr::AddressFamily(AF_INET6),
                ServiceAttr::Fwmark(5),
                ServiceAttr::SchedName("wlc".into()),
                flags(constants::svc_flags::PERSISTENT),
                ServiceAttr::Timeout(300),
                ServiceAttr::Netmask(64),
            ])],
        ),
    );
}

#[test]
fn add_udp_service_with_sched_flags_and_one_packet() {
    let mut s = svc_v4(IPPROTO_UDP, "10.0.0.1", 53, "sh");
    s[5] = flags(constants::svc_flags::SCHED1 | constants::svc_flags::SCHED2 | constants::svc_flags::ONEPACKET);
    golden_request(
        "-A -u 10.0.0.1:53 -s sh -b sh-port,sh-fallback -o",
        msg(IpvsCmd::NewService, vec![IpvsAttr::Service(s)]),
    );
}

#[test]
fn add_masq_destination_with_thresholds() {
    golden_request(
        "-a -u 10.0.0.1:53 -r 10.0.0.3:5353 -m -w 3 -x 100 -y 10",
        msg(
            IpvsCmd::NewDest,
            vec![
                IpvsAttr::Service(svc_v4(IPPROTO_UDP, "10.0.0.1", 53, "")),
                IpvsAttr::Dest(dest_v4("10.0.0.3", 5353, constants::fwd::MASQ, 3, (0, 0, 0), 100, 10)),
            ],
        ),
    );
}

#[test]
fn add_gue_tunnel_destination() {
    golden_request(
        "-a -t 10.0.0.1:8080 -r 10.0.0.4:8080 -i --tun-type gue --tun-port 6080 --tun-csum -w 2",
        msg(
            IpvsCmd::NewDest,
            vec![
                IpvsAttr::Service(svc_v4(IPPROTO_TCP, "10.0.0.1", 8080, "")),
                IpvsAttr::Dest(dest_v4(
                    "10.0.0.4",
                    8080,
                    constants::fwd::TUNNEL,
                    2,
                    (constants::tun_type::GUE, 6080, constants::tun_flags::CSUM),
                    0,
                    0,
                )),
            ],
        ),
    );
}

#[test]
fn add_v6_service_with_pe_and_persistence() {
    golden_request(
        "-A -t [2001:db8::1]:443 -s mh -b mh-port -p 60 -M 128 --pe sip",
        msg(
            IpvsCmd::NewService,
            vec![IpvsAttr::Service(vec![
                ServiceAttr::AddressFamily(AF_INET6),
                ServiceAttr::Protocol(IPPROTO_TCP),
                ServiceAttr::Address(addr("2001:db8::1")),
                ServiceAttr::Port(443),
                ServiceAttr::SchedName("mh".into()),
                ServiceAttr::PeName("sip".into()),
                flags(constants::svc_flags::PERSISTENT | constants::svc_flags::SCHED2),
                ServiceAttr::Timeout(60),
                ServiceAttr::Netmask(128),
            ])],
        ),
    );
}

#[test]
fn delete_service() {
    golden_request(
        "-D -t 10.0.0.1:80",
        msg(IpvsCmd::DelService, vec![IpvsAttr::Service(svc_v4(IPPROTO_TCP, "10.0.0.1", 80, ""))]),
    );
}

#[test]
fn zero_all() {
    golden_request("-Z", msg(IpvsCmd::Zero, vec![]));
}

#[test]
fn flush() {
    golden_request("-C", msg(IpvsCmd::Flush, vec![]));
}

#[test]
fn set_timeouts() {
    golden_request(
        "--set 1000 100 200",
        msg(
            IpvsCmd::SetConfig,
            vec![IpvsAttr::TimeoutTcp(1000), IpvsAttr::TimeoutTcpFin(100), IpvsAttr::TimeoutUdp(200)],
        ),
    );
}

#[test]
fn get_timeouts() {
    golden_request("-L --timeout", msg(IpvsCmd::GetConfig, vec![]));
}

#[test]
fn start_sync_daemon() {
    golden_request(
        "--start-daemon master --mcast-interface dummy0 --syncid 7",
        msg(
            IpvsCmd::NewDaemon,
            vec![IpvsAttr::Daemon(vec![
                DaemonAttr::State(constants::state::MASTER),
                DaemonAttr::McastIfn("dummy0".into()),
                DaemonAttr::SyncId(7),
            ])],
        ),
    );
}

#[test]
fn dump_requests() {
    // GET_SERVICE and GET_DAEMON dumps, and GET_DEST dumps with a service's identity.
    let sends = |args: &str| -> Vec<Vec<u8>> {
        section(args)
            .into_iter()
            .filter(|m| m.send && m.bytes[16] != constants::cmd::GET_INFO)
            .map(|m| m.bytes)
            .collect()
    };
    let ln = sends("-Ln");
    assert_eq!(ln.len(), 5, "one service dump and four destination dumps");
    let dump_flags = u16_at(&ln[0], 6);
    assert_eq!(
        dump_flags,
        netlink_packet_core::NLM_F_REQUEST | netlink_packet_core::NLM_F_ACK | netlink_packet_core::NLM_F_DUMP
    );
    let check = |bytes: &[u8], want: IpvsMessage| {
        assert_eq!(parse_one(bytes).kind, ReplyKind::Message(want.clone()));
        let mut buf = Vec::new();
        emit_request(&mut buf, FAMILY, u16_at(bytes, 6), u32_at(bytes, 8), &want);
        assert_eq!(hexs(&buf[16..]), hexs(&bytes[16..]));
        assert_eq!(buf[..12], bytes[..12]);
    };
    check(&ln[0], msg(IpvsCmd::GetService, vec![]));
    check(
        &ln[1],
        msg(
            IpvsCmd::GetDest,
            vec![IpvsAttr::Service(vec![
                ServiceAttr::AddressFamily(AF_INET),
                ServiceAttr::Protocol(IPPROTO_TCP),
                ServiceAttr::Address(addr("10.0.0.1")),
                ServiceAttr::Port(8080),
            ])],
        ),
    );
    check(
        &ln[4],
        msg(
            IpvsCmd::GetDest,
            vec![IpvsAttr::Service(vec![ServiceAttr::AddressFamily(AF_INET6), ServiceAttr::Fwmark(5)])],
        ),
    );
    let d = sends("-L --daemon");
    assert_eq!(d.len(), 1);
    check(&d[0], msg(IpvsCmd::GetDaemon, vec![]));
}

// ---- kernel replies ---------------------------------------------------------

fn replies(args: &str) -> Vec<Vec<u8>> {
    section(args).into_iter().filter(|m| !m.send).map(|m| m.bytes).collect()
}

fn zero_stats32() -> Vec<StatsAttr> {
    StatsField::ALL
        .iter()
        .map(|f| match f {
            StatsField::InBytes | StatsField::OutBytes => StatsAttr::U64(*f, 0),
            _ => StatsAttr::U32(*f, 0),
        })
        .collect()
}

fn zero_stats64() -> Vec<StatsAttr> {
    StatsField::ALL.iter().map(|f| StatsAttr::U64(*f, 0)).collect()
}

#[test]
fn reply_info() {
    let r = replies("-A -t 10.0.0.1:80 -s rr");
    let info = r.iter().find(|b| u16_at(b, 4) == FAMILY).expect("info reply");
    golden_reply(info, &msg(IpvsCmd::SetInfo, vec![IpvsAttr::InfoVersion(0x010201), IpvsAttr::InfoConnTabSize(4096)]));
}

#[test]
fn reply_ack_and_done() {
    let r = replies("-A -t 10.0.0.1:80 -s rr");
    let req = request("-A -t 10.0.0.1:80 -s rr");
    let ack = r.iter().find(|b| u16_at(b, 4) == netlink_packet_core::NLMSG_ERROR && u32_at(b, 8) == u32_at(&req, 8));
    let ack = parse_one(ack.expect("ack"));
    assert_eq!(ack.kind, ReplyKind::Ack);
    assert_eq!(ack.seq, u32_at(&req, 8));
    let ln = replies("-Ln");
    let done: Vec<_> = ln.iter().filter(|b| u16_at(b, 4) == netlink_packet_core::NLMSG_DONE).collect();
    assert_eq!(done.len(), 5);
    for d in done {
        let r = parse_one(d);
        assert_eq!(r.kind, ReplyKind::Done(0));
        assert_eq!(r.flags, netlink_packet_core::NLM_F_MULTIPART);
    }
}

#[test]
fn reply_timeouts() {
    let r = replies("-L --timeout");
    let cfg = r.iter().find(|b| u16_at(b, 4) == FAMILY && b[16] == constants::cmd::SET_CONFIG).expect("config reply");
    golden_reply(
        cfg,
        &msg(
            IpvsCmd::SetConfig,
            vec![IpvsAttr::TimeoutTcp(1000), IpvsAttr::TimeoutTcpFin(100), IpvsAttr::TimeoutUdp(200)],
        ),
    );
}

#[test]
fn reply_service_dump() {
    let r: Vec<_> =
        replies("-Ln").into_iter().filter(|b| u16_at(b, 4) == FAMILY && b[16] == constants::cmd::NEW_SERVICE).collect();
    assert_eq!(r.len(), 4, "four services");
    for b in &r {
        assert_eq!(u16_at(b, 6), netlink_packet_core::NLM_F_MULTIPART);
    }
    let stats = |mut v: Vec<ServiceAttr>| {
        v.push(ServiceAttr::Stats(zero_stats32()));
        v.push(ServiceAttr::Stats64(zero_stats64()));
        v
    };
    // Dumps report HASHED (0x2) with mask 0xffffffff.
    let mut tcp = svc_v4(IPPROTO_TCP, "10.0.0.1", 8080, "rr");
    tcp[5] = flags(constants::svc_flags::HASHED);
    golden_reply(&r[0], &msg(IpvsCmd::NewService, vec![IpvsAttr::Service(stats(tcp))]));
    golden_reply(
        &r[1],
        &msg(
            IpvsCmd::NewService,
            vec![IpvsAttr::Service(stats(vec![
                ServiceAttr::AddressFamily(AF_INET6),
                ServiceAttr::Protocol(IPPROTO_TCP),
                ServiceAttr::Address(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into()),
                ServiceAttr::Port(443),
                ServiceAttr::SchedName("mh".into()),
                ServiceAttr::PeName("sip".into()),
                flags(constants::svc_flags::PERSISTENT | constants::svc_flags::HASHED | constants::svc_flags::SCHED2),
                ServiceAttr::Timeout(60),
                ServiceAttr::Netmask(128),
            ]))],
        ),
    );
    let mut udp = svc_v4(IPPROTO_UDP, "10.0.0.1", 53, "sh");
    udp[5] = flags(0x1e);
    golden_reply(&r[2], &msg(IpvsCmd::NewService, vec![IpvsAttr::Service(stats(udp))]));
    // A fwmark service's dump has no protocol, address or port.
    golden_reply(
        &r[3],
        &msg(
            IpvsCmd::NewService,
            vec![IpvsAttr::Service(stats(vec![
                ServiceAttr::AddressFamily(AF_INET6),
                ServiceAttr::Fwmark(5),
                ServiceAttr::SchedName("wlc".into()),
                flags(constants::svc_flags::PERSISTENT | constants::svc_flags::HASHED),
                ServiceAttr::Timeout(300),
                ServiceAttr::Netmask(64),
            ]))],
        ),
    );
}

#[test]
fn reply_destination_dump() {
    let r: Vec<_> =
        replies("-Ln").into_iter().filter(|b| u16_at(b, 4) == FAMILY && b[16] == constants::cmd::NEW_DEST).collect();
    assert_eq!(r.len(), 2, "two destinations");
    let dest = |a: &str, port, fwd, weight, tun: (u8, u16, u16), u, l| {
        vec![
            DestAttr::Address(addr(a)),
            DestAttr::Port(port),
            DestAttr::FwdMethod(fwd),
            DestAttr::Weight(weight),
            DestAttr::TunType(tun.0),
            DestAttr::TunPort(tun.1),
            DestAttr::TunFlags(tun.2),
            DestAttr::UpperThreshold(u),
            DestAttr::LowerThreshold(l),
            DestAttr::ActiveConns(0),
            DestAttr::InactiveConns(0),
            DestAttr::PersistConns(0),
            DestAttr::AddressFamily(AF_INET),
            DestAttr::Stats(zero_stats32()),
            DestAttr::Stats64(zero_stats64()),
        ]
    };
    golden_reply(
        &r[0],
        &msg(
            IpvsCmd::NewDest,
            vec![IpvsAttr::Dest(dest(
                "10.0.0.4",
                8080,
                constants::fwd::TUNNEL,
                2,
                (constants::tun_type::GUE, 6080, constants::tun_flags::CSUM),
                0,
                0,
            ))],
        ),
    );
    golden_reply(
        &r[1],
        &msg(
            IpvsCmd::NewDest,
            vec![IpvsAttr::Dest(dest("10.0.0.3", 5353, constants::fwd::MASQ, 3, (0, 0, 0), 100, 10))],
        ),
    );
}

#[test]
fn reply_daemon_dump() {
    let r: Vec<_> = replies("-L --daemon")
        .into_iter()
        .filter(|b| u16_at(b, 4) == FAMILY && b[16] == constants::cmd::NEW_DAEMON)
        .collect();
    assert_eq!(r.len(), 1);
    let m = parse_one(&r[0]);
    let ReplyKind::Message(m) = m.kind else { panic!("{m:?}") };
    let IpvsAttr::Daemon(d) = &m.attrs[0] else { panic!("{m:?}") };
    // Whatever the kernel adds beyond these, the ones ipvsadm prints are there.
    for want in [
        DaemonAttr::State(constants::state::MASTER),
        DaemonAttr::McastIfn("dummy0".into()),
        DaemonAttr::SyncId(7),
        DaemonAttr::SyncMaxLen(1472),
        DaemonAttr::McastPort(8848),
        DaemonAttr::McastTtl(1),
        DaemonAttr::McastGroup(Ipv4Addr::new(224, 0, 0, 81)),
    ] {
        assert!(d.contains(&want), "{want:?} in {d:?}");
    }
    golden_reply(&r[0], &m);
}

/// Every captured message parses, and every prefix of one parses into the
/// messages that end before the cut, then one error when the cut falls
/// inside a message (nothing more when it falls between two).
#[test]
fn every_captured_message_parses_and_truncations_are_errors() {
    let mut n = 0;
    let mut cut_inside = 0;
    for line in DATA.lines().filter(|l| l.starts_with("send ") || l.starts_with("recv ")) {
        let b = hex(&line[5..]);
        let full: Vec<_> = parse_replies(&b, FAMILY).map(|r| r.unwrap_or_else(|e| panic!("{line}: {e}"))).collect();
        // Where each message starts and ends (without its padding).
        let mut bounds = Vec::new();
        let mut off = 0;
        while off < b.len() {
            let len = u32::from_ne_bytes(b[off..off + 4].try_into().unwrap()) as usize;
            bounds.push((off, off + len));
            off += (len + 3) & !3;
        }
        assert_eq!(bounds.len(), full.len(), "{line}");
        for cut in 0..b.len() {
            let got: Vec<_> = parse_replies(&b[..cut], FAMILY).collect();
            let whole = bounds.iter().filter(|(_, end)| *end <= cut).count();
            let inside = bounds.get(whole).is_some_and(|(start, _)| cut > *start);
            assert_eq!(got.len(), whole + usize::from(inside), "{line}: cut at {cut}: {got:?}");
            for (g, f) in got[..whole].iter().zip(&full) {
                assert_eq!(g.as_ref().ok(), Some(f), "{line}: cut at {cut}");
            }
            if inside {
                assert!(got[whole].is_err(), "{line}: cut at {cut}: {:?}", got[whole]);
                cut_inside += 1;
            }
        }
        n += 1;
    }
    assert!(cut_inside > 1000, "{cut_inside} cuts inside a message");
    assert!(n > 100, "{n} messages");
}
