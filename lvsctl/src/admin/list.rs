//! `lvsctl list`: the text of `ipvsadm -Ln` and its views (`--stats`,
//! `--rate`, `--exact`, `--thresholds`, `--persistent-conn`, `--tun-info`),
//! `--timeout` and `--daemon`, with ipvsadm 1.31's columns, padding and
//! K/M/G/T abbreviation; and the JSON shapes of `--json`.

use std::fmt::Write;
use std::net::SocketAddr;

use ipvs::{
    DestinationEntry, Family, Forward, Info, Netmask, Protocol, ServiceEntry, ServiceKey, Stats, SyncDaemon, Timeouts,
    Tunnel, TunnelChecksum,
};

use super::sort::{service_order, sort_table, sorted_dests};
use super::text::{digits, ntop, pad_from, push_addr_port, push_i64_left, push_u64_left, push_u64_right};

/// Which columns to print, in ipvsadm's order of precedence: stats, rate,
/// thresholds, persistent-conn, tun-info, else the default view.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct View {
    /// `--stats`.
    pub(crate) stats: bool,
    /// `--rate`.
    pub(crate) rate: bool,
    /// `--exact`: no K/M/G/T.
    pub(crate) exact: bool,
    /// `--thresholds`.
    pub(crate) thresholds: bool,
    /// `--persistent-conn`.
    pub(crate) persistent_conn: bool,
    /// `--tun-info`.
    pub(crate) tun_info: bool,
    /// `--nosort`: services and real servers in the kernel's order.
    pub(crate) nosort: bool,
}

/// `10.0.0.1:80` or `[2001:db8::1]:80` (ipvsadm's numeric `addrport_to_anyname`).
pub(crate) fn addr_port(a: SocketAddr) -> String {
    let mut s = String::new();
    push_addr_port(&mut s, a);
    s
}

/// ipvsadm's `print_largenum`: 9 columns, abbreviated unless exact.
#[cfg(test)]
pub(crate) fn largenum(i: u64, exact: bool) -> String {
    let mut s = String::new();
    push_largenum(&mut s, i, exact);
    s
}

/// ipvsadm's `print_largenum` appended to `out`: 9 columns, abbreviated
/// unless exact.
pub(crate) fn push_largenum(out: &mut String, i: u64, exact: bool) {
    if exact {
        // At least one space before the number, and 9 columns at least.
        return push_u64_right(out, i, digits(i).max(8) + 1);
    }
    let (n, unit) = if i < 100_000_000 {
        return push_u64_right(out, i, 9);
    } else if i < 1_000_000_000 {
        (i / 1000, 'K')
    } else if i < 100_000_000_000 {
        (i / 1_000_000, 'M')
    } else if i < 100_000_000_000_000 {
        (i / 1_000_000_000, 'G')
    } else {
        (i / 1_000_000_000_000, 'T')
    };
    push_u64_right(out, n, 8);
    out.push(unit);
}

/// `TCP  10.0.0.1:80`, `SCTP 10.0.0.1:3868`, `FWM  1`, `FWM  1 IPv6`.
pub(crate) fn list_service_name(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Fwmark { mark, family: Family::Inet } => format!("FWM  {}", *mark as i32),
        ServiceKey::Fwmark { mark, family: Family::Inet6 } => format!("FWM  {} IPv6", *mark as i32),
        ServiceKey::Inet { protocol, addr } => {
            let p = match protocol {
                Protocol::Tcp => "TCP",
                Protocol::Udp => "UDP",
                Protocol::Sctp => "SCTP",
                // A protocol ipvsadm has no name for (ESP, ...).
                Protocol::Other(_) => "?",
            };
            let mut s = format!("{p:<4} {}", addr_port(*addr));
            if addr.is_ipv4() {
                s.truncate(33);
            }
            s
        }
    }
}

fn title(v: &View) -> &'static str {
    if v.stats {
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\n"
    } else if v.rate {
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n  -> RemoteAddress:Port\n"
    } else if v.thresholds {
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n  -> RemoteAddress:Port\n"
    } else if v.persistent_conn {
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n  -> RemoteAddress:Port\n"
    } else if v.tun_info {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"
    } else {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    }
}

/// The service line of the default, thresholds, persistent-conn and tun-info views.
fn service_line(e: &ServiceEntry) -> String {
    let s = &e.service;
    let mut out = format!("{} {}", list_service_name(&s.key), s.scheduler.name());
    let flags = s.sched_flags.names(&s.scheduler);
    if !flags.is_empty() {
        let _ = write!(out, " ({})", flags.join(","));
    }
    if let Some(p) = &s.persistence {
        let _ = write!(out, " persistent {}", p.timeout);
        match s.netmask() {
            Netmask::V4(m) if !s.netmask().is_full() => {
                let _ = write!(out, " mask {m}");
            }
            Netmask::V6(l) if l != 128 => {
                let _ = write!(out, " mask {l}");
            }
            _ => {}
        }
        if let Some(pe) = s.pe.as_deref().filter(|p| !p.is_empty()) {
            let _ = write!(out, " pe {pe}");
        }
    }
    if s.one_packet {
        out.push_str(" ops");
    }
    out
}

/// The five counters (or rates) of the stats (rate) view.
fn push_five(out: &mut String, s: &Stats, rate: bool, exact: bool) {
    let v = if rate {
        [s.cps, s.in_pps, s.out_pps, s.in_bps, s.out_bps]
    } else {
        [s.conns, s.in_pkts, s.out_pkts, s.in_bytes, s.out_bytes]
    };
    for n in v {
        push_largenum(out, n, exact);
    }
}

/// `--tun-info`'s TunnelInfo column.
pub(crate) fn tun_info(f: &Forward) -> String {
    fn c(c: &TunnelChecksum) -> &'static str {
        match c {
            TunnelChecksum::NoCsum => "-c",
            TunnelChecksum::Csum => "+c",
            TunnelChecksum::RemCsum => "r+c",
        }
    }
    match f {
        Forward::Tunnel(Tunnel::Ipip) => "ipip".into(),
        Forward::Tunnel(Tunnel::Gue { port, checksum }) => format!("gue:{port}:{}", c(checksum)),
        Forward::Tunnel(Tunnel::Gre { checksum }) => format!("gre:{}", c(checksum)),
        _ => "n/a".into(),
    }
}

/// A real server's line (without its newline), appended to `out`.
fn push_dest_line(out: &mut String, svc_family: Family, d: &DestinationEntry, v: &View) {
    out.push_str("  -> ");
    let start = out.len();
    push_addr_port(out, d.destination.addr);
    if svc_family != Family::Inet6 && out.len() - start > 28 {
        out.truncate(start + 28);
    }
    pad_from(out, start, 28);
    let dd = &d.destination;
    if v.stats {
        push_five(out, &d.stats, false, v.exact);
    } else if v.rate {
        let s = &d.stats;
        for n in [s.cps, s.in_pps, s.out_pps] {
            out.push(' ');
            push_u64_right(out, n, 8);
        }
        push_largenum(out, s.in_bps, v.exact);
        push_largenum(out, s.out_bps, v.exact);
    } else if v.thresholds {
        for n in [dd.upper_threshold, dd.lower_threshold, d.active_conns, d.inactive_conns] {
            out.push(' ');
            push_u64_left(out, n.into(), 10);
        }
    } else if v.persistent_conn {
        out.push(' ');
        push_u64_left(out, dd.weight.into(), 9);
        out.push(' ');
        push_u64_left(out, d.persistent_conns.into(), 11);
        for n in [d.active_conns, d.inactive_conns] {
            out.push(' ');
            push_u64_left(out, n.into(), 10);
        }
    } else {
        out.push(' ');
        let start = out.len();
        out.push_str(match dd.forward {
            // ipvsadm passes a NULL to printf here; glibc prints "(null)".
            Forward::Other(_) => "(null)",
            ref f => f.name(),
        });
        pad_from(out, start, 7);
        if v.tun_info {
            out.push(' ');
            let start = out.len();
            out.push_str(&tun_info(&dd.forward));
            pad_from(out, start, 13);
        }
        out.push(' ');
        push_i64_left(out, (dd.weight as i32).into(), 6);
        for n in [d.active_conns, d.inactive_conns] {
            out.push(' ');
            push_u64_left(out, n.into(), 10);
        }
    }
}

/// The listing. With `info` (a full listing) the version line comes first; a
/// listing of one named service has none, as in ipvsadm.
pub(crate) fn format_list(info: Option<&Info>, table: &[(ServiceEntry, Vec<DestinationEntry>)], v: &View) -> String {
    // About what a line takes, so that the text is not copied as it grows.
    let mut out = String::with_capacity(256 + table.iter().map(|(_, d)| 96 + 80 * d.len()).sum::<usize>());
    if let Some(i) = info {
        let _ = writeln!(out, "IP Virtual Server version {} (size={})", i.version_string(), i.conn_table_size);
    }
    out.push_str(title(v));
    let order = if v.nosort { (0..table.len()).collect() } else { service_order(table) };
    for i in order {
        let (s, dests) = &table[i];
        if v.stats || v.rate {
            let start = out.len();
            out.push_str(&list_service_name(&s.service.key));
            pad_from(&mut out, start, 33);
            push_five(&mut out, &s.stats, v.rate, v.exact);
            out.push('\n');
        } else {
            out.push_str(&service_line(s));
            out.push('\n');
        }
        let dests = if v.nosort { dests.iter().collect() } else { sorted_dests(dests) };
        for d in dests {
            push_dest_line(&mut out, s.service.key.family(), d, v);
            out.push('\n');
        }
    }
    out
}

/// `--timeout`.
pub(crate) fn format_timeouts(t: &Timeouts) -> String {
    format!("Timeout (tcp tcpfin udp): {} {} {}\n", t.tcp as i32, t.tcp_fin as i32, t.udp as i32)
}

/// `--daemon`: one line per running sync daemon.
pub(crate) fn format_daemons(ds: &[SyncDaemon]) -> String {
    let mut out = String::new();
    for d in ds {
        let _ = write!(out, "{} sync daemon (mcast={}, syncid={}", d.state.name(), d.interface, d.sync_id as i32);
        if let Some(m) = d.max_len.filter(|m| *m != 0) {
            let _ = write!(out, ", maxlen={m}");
        }
        if let Some(g) = d.mcast_group {
            let _ = write!(out, ", group={}", ntop(g));
        }
        if let Some(p) = d.mcast_port.filter(|p| *p != 0) {
            let _ = write!(out, ", port={p}");
        }
        if let Some(t) = d.mcast_ttl.filter(|t| *t != 0) {
            let _ = write!(out, ", ttl={t}");
        }
        out.push_str(")\n");
    }
    out
}

/// One service with its real servers, for `--json`.
#[derive(serde::Serialize)]
pub(crate) struct JsonService<'a> {
    /// Configuration and counters.
    #[serde(flatten)]
    pub(crate) service: &'a ServiceEntry,
    /// Real servers, sorted as in the text.
    pub(crate) destinations: &'a [DestinationEntry],
}

/// The table as JSON: an array of services in ipvsadm's order (`nosort`:
/// the kernel's), each with every field (counters, rates, thresholds,
/// connection counts, tunnel).
pub(crate) fn format_json(table: &[(ServiceEntry, Vec<DestinationEntry>)], nosort: bool) -> String {
    let mut table = table.to_vec();
    if !nosort {
        sort_table(&mut table);
    }
    let v: Vec<JsonService<'_>> = table.iter().map(|(s, d)| JsonService { service: s, destinations: d }).collect();
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::save::tests::entry;
    use ipvs::{Destination, Persistence, SchedFlags, Scheduler, Service, SyncState};

    #[test]
    fn largenum_like_ipvsadm() {
        assert_eq!(largenum(0, false), "        0");
        assert_eq!(largenum(99_999_999, false), " 99999999");
        assert_eq!(largenum(100_000_000, false), "  100000K");
        assert_eq!(largenum(999_999_999, false), "  999999K");
        assert_eq!(largenum(1_000_000_000, false), "    1000M");
        assert_eq!(largenum(99_999_999_999, false), "   99999M");
        assert_eq!(largenum(100_000_000_000, false), "     100G");
        assert_eq!(largenum(100_000_000_000_000, false), "     100T");
        assert_eq!(largenum(u64::MAX, false), "18446744T");
        assert_eq!(largenum(12, true), "       12");
        assert_eq!(largenum(12_345_678, true), " 12345678");
        assert_eq!(largenum(123_456_789, true), " 123456789");
        assert_eq!(largenum(1_234_567_890_123, true), " 1234567890123");
    }

    fn table() -> Vec<(ServiceEntry, Vec<DestinationEntry>)> {
        let mut s = Service::new(ServiceKey::tcp("10.0.0.10:80".parse().unwrap()), Scheduler::Sh);
        s.persistence =
            Some(Persistence { timeout: 360, netmask: Some(Netmask::V4("255.255.255.0".parse().unwrap())) });
        s.pe = Some("sip".into());
        s.sched_flags = SchedFlags::FLAG_2;
        let mut u = Service::new(ServiceKey::udp("10.0.0.10:53".parse().unwrap()), Scheduler::Rr);
        u.one_packet = true;
        let mut f3 = Service::new(ServiceKey::fwmark(3, Family::Inet6), Scheduler::Wrr);
        f3.pe = Some("sip".into());
        let mut f2 = Service::new(ServiceKey::fwmark(2, Family::Inet6), Scheduler::Wrr);
        f2.persistence = Some(Persistence { timeout: 100, netmask: Some(Netmask::V6(64)) });
        let sctp = Service::new(
            ServiceKey::Inet { protocol: Protocol::Sctp, addr: "10.0.0.10:3868".parse().unwrap() },
            Scheduler::Rr,
        );
        let mut t = vec![
            entry(f3, vec![]),
            entry(
                s,
                vec![
                    Destination::new("10.1.0.3:8080".parse().unwrap(), Forward::Masq)
                        .with_weight(7)
                        .with_thresholds(100, 50),
                    Destination::new(
                        "10.1.0.7:80".parse().unwrap(),
                        Forward::Tunnel(Tunnel::Gue { port: 6082, checksum: TunnelChecksum::RemCsum }),
                    ),
                    Destination::new("10.1.0.2:80".parse().unwrap(), Forward::Route),
                    Destination::new(
                        "10.1.0.9:80".parse().unwrap(),
                        Forward::Tunnel(Tunnel::Gre { checksum: TunnelChecksum::NoCsum }),
                    ),
                    Destination::new("10.1.0.4:80".parse().unwrap(), Forward::Tunnel(Tunnel::Ipip)).with_weight(0),
                ],
            ),
            entry(sctp, vec![]),
            entry(u, vec![]),
            entry(f2, vec![]),
        ];
        // Some counters on the first real server of 10.0.0.10:80.
        let d = &mut t[1].1[0];
        d.active_conns = 3;
        d.inactive_conns = 4;
        d.persistent_conns = 5;
        d.stats = Stats::default();
        d.stats.conns = 123_456_789;
        d.stats.in_pkts = 5;
        d.stats.in_bytes = 1_000_000_000_000;
        d.stats.cps = 2;
        d.stats.in_bps = 300_000_000;
        t
    }

    const INFO: Info = Info::new((1, 2, 1), 4096);

    /// What ipvsadm 1.31 printed on the test VM for a service another tool
    /// made over netlink: ESP (protocol 50), with a destination of forwarding
    /// method 5.
    #[test]
    fn unknown_protocol_and_forwarding_method() {
        let key = ServiceKey::Inet { protocol: Protocol::Other(50), addr: "10.0.0.50:0".parse().unwrap() };
        let mut d = Destination::new("10.18.68.190:0".parse().unwrap(), Forward::Other(5));
        d.weight = 3;
        let t = vec![entry(Service::new(key, Scheduler::Rr), vec![d])];
        let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
?    10.0.0.50:0 rr
  -> 10.18.68.190:0               (null)  3      0          0         
";
        assert_eq!(format_list(Some(&INFO), &t, &View::default()), want);
        assert_eq!(
            crate::admin::save::format_save(&t, false),
            "-A --xxx-service 10.0.0.50:0 -s rr\n-a --xxx-service 10.0.0.50:0 -r 10.18.68.190:0 (null) -w 3\n"
        );
    }

    /// Compared with what ipvsadm 1.31 printed on the test VM for such a table.
    #[test]
    fn default_view() {
        let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.10:80 sh (sh-port) persistent 360 mask 255.255.255.0 pe sip
  -> 10.1.0.2:80                  Route   1      0          0         
  -> 10.1.0.3:8080                Masq    7      3          4         
  -> 10.1.0.4:80                  Tunnel  0      0          0         
  -> 10.1.0.7:80                  Tunnel  1      0          0         
  -> 10.1.0.9:80                  Tunnel  1      0          0         
UDP  10.0.0.10:53 rr ops
SCTP 10.0.0.10:3868 rr
FWM  2 IPv6 wrr persistent 100 mask 64
FWM  3 IPv6 wrr
";
        assert_eq!(format_list(Some(&INFO), &table(), &View::default()), want);
    }

    #[test]
    fn views() {
        let t = table();
        let tun = format_list(None, &t, &View { tun_info: true, ..Default::default() });
        assert!(tun.starts_with("Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"));
        assert!(
            tun.contains("\n  -> 10.1.0.7:80                  Tunnel  gue:6082:r+c  1      0          0         \n")
        );
        assert!(
            tun.contains("\n  -> 10.1.0.9:80                  Tunnel  gre:-c        1      0          0         \n")
        );
        assert!(
            tun.contains("\n  -> 10.1.0.2:80                  Route   n/a           1      0          0         \n")
        );
        let th = format_list(None, &t, &View { thresholds: true, ..Default::default() });
        assert!(th.contains("\n  -> 10.1.0.3:8080                100        50         3          4         \n"));
        let pc = format_list(None, &t, &View { persistent_conn: true, ..Default::default() });
        assert!(pc.contains("\n  -> 10.1.0.3:8080                7         5           3          4         \n"));
        let st = format_list(None, &t, &View { stats: true, ..Default::default() });
        assert!(st.contains("\nTCP  10.0.0.10:80                        0        0        0        0        0\n"));
        let name = format!("{:<28}", "10.1.0.3:8080");
        let want = format!("\n  -> {name}  123456K        5        0    1000G        0\n");
        assert!(st.contains(&want), "{st}");
        let ex = format_list(None, &t, &View { stats: true, exact: true, ..Default::default() });
        let want = format!("\n  -> {name} 123456789        5        0 1000000000000        0\n");
        assert!(ex.contains(&want), "{ex}");
        let rt = format_list(None, &t, &View { rate: true, ..Default::default() });
        let want = format!("\n  -> {name}        2        0        0  300000K        0\n");
        assert!(rt.contains(&want), "{rt}");
        assert!(rt.contains("\nFWM  2 IPv6                              0        0        0        0        0\n"));
    }

    /// `--nosort`: services and real servers as the kernel listed them.
    #[test]
    fn nosort_keeps_the_kernel_order() {
        let t = table();
        let want = "\
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
FWM  3 IPv6 wrr
TCP  10.0.0.10:80 sh (sh-port) persistent 360 mask 255.255.255.0 pe sip
  -> 10.1.0.3:8080                Masq    7      3          4         
  -> 10.1.0.7:80                  Tunnel  1      0          0         
  -> 10.1.0.2:80                  Route   1      0          0         
  -> 10.1.0.9:80                  Tunnel  1      0          0         
  -> 10.1.0.4:80                  Tunnel  0      0          0         
SCTP 10.0.0.10:3868 rr
UDP  10.0.0.10:53 rr ops
FWM  2 IPv6 wrr persistent 100 mask 64
";
        assert_eq!(format_list(None, &t, &View { nosort: true, ..Default::default() }), want);
        let j: serde_json::Value = serde_json::from_str(&format_json(&t, true)).unwrap();
        assert_eq!(j[0]["key"]["mark"], 3);
        assert_eq!(j[1]["destinations"][0]["addr"], "10.1.0.3:8080");
    }

    #[test]
    fn timeouts_and_daemons() {
        assert_eq!(format_timeouts(&Timeouts::new(900, 120, 300)), "Timeout (tcp tcpfin udp): 900 120 300\n");
        let m = SyncDaemon::new(SyncState::Master, "d0", 7)
            .with_max_len(1400)
            .with_mcast_group("239.1.2.3".parse::<std::net::IpAddr>().unwrap())
            .with_mcast_port(9999)
            .with_mcast_ttl(3);
        let b = SyncDaemon::new(SyncState::Backup, "d0", 8);
        assert_eq!(
            format_daemons(&[m, b]),
            "master sync daemon (mcast=d0, syncid=7, maxlen=1400, group=239.1.2.3, port=9999, ttl=3)\nbackup sync daemon (mcast=d0, syncid=8)\n"
        );
    }

    #[test]
    fn json_has_everything() {
        let j: serde_json::Value = serde_json::from_str(&format_json(&table(), false)).unwrap();
        let first = &j[0];
        assert_eq!(first["scheduler"], "sh");
        assert_eq!(first["destinations"][1]["upper_threshold"], 100);
        assert_eq!(first["destinations"][1]["active_conns"], 3);
        assert_eq!(first["destinations"][1]["stats"]["conns"], 123_456_789);
        assert_eq!(j.as_array().unwrap().len(), 5);
    }
}
