//! The exposition of a registry filled with known values, parsed back.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ipvs::{Destination, DestinationEntry, Family, Forward, Scheduler, Service, ServiceEntry, ServiceKey, Stats};

use super::kernel::GlobalStats;
use super::*;
use crate::health::report::{self, HaReport, RealHealth, Role, ServiceHealth};

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parse the text format's samples (the label values here have no quotes or commas).
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("NAME[{LABELS}] VALUE");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("labels end with }")),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').expect("KEY=VALUE");
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        out.push((name.to_owned(), labels, value.parse().expect("a number")));
    }
    out
}

/// The value of the one sample of `name` with these labels (and any others).
fn value(s: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let hits: Vec<f64> = s
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|x| x.2)
        .collect();
    assert!(hits.len() <= 1, "{name} {labels:?} matches {} samples", hits.len());
    hits.first().copied()
}

const VIP: &str = "10.19.70.166";

fn web() -> ServiceKey {
    ServiceKey::tcp(format!("{VIP}:15858").parse().unwrap())
}

fn marked() -> ServiceKey {
    ServiceKey::fwmark(7, Family::Inet)
}

fn foreign() -> ServiceKey {
    ServiceKey::udp("10.0.0.53:53".parse().unwrap())
}

fn stats(conns: u64, in_bytes: u64) -> Stats {
    let mut s = Stats::default();
    s.conns = conns;
    s.in_pkts = conns * 3;
    s.in_bytes = in_bytes;
    s
}

fn dest(addr: &str, weight: u32, active: u32, st: Stats) -> DestinationEntry {
    let d = Destination::new(addr.parse().unwrap(), Forward::Route).with_weight(weight);
    DestinationEntry::new(d, (active, 1, 0), st)
}

/// The kernel: lvsctl's two services (rs1 drained to 0) and somebody else's.
fn kernel() -> KernelState {
    let table = vec![
        (
            ServiceEntry::new(Service::new(web(), Scheduler::Rr), stats(30, 3000)),
            vec![dest("10.18.68.186:15858", 0, 2, stats(10, 1000)), dest("10.18.68.187:15858", 1, 5, stats(20, 2000))],
        ),
        (
            ServiceEntry::new(Service::new(marked(), Scheduler::Rr), stats(1, 1)),
            vec![dest("10.18.68.188:0", 3, 0, stats(1, 1))],
        ),
        (
            ServiceEntry::new(Service::new(foreign(), Scheduler::Rr), stats(9, 9)),
            vec![dest("10.0.0.54:53", 1, 0, stats(9, 9))],
        ),
    ];
    let global = GlobalStats { conns: 40, in_pkts: 120, out_pkts: 0, in_bytes: 4010, out_bytes: 7 };
    KernelState { table: Ok(table), global: Ok(global) }
}

fn real(addr: &str, up: bool, error: Option<&str>) -> RealHealth {
    RealHealth {
        addr: addr.parse().unwrap(),
        check: Some("tcp port 15858 every 2s, timeout 1s, rise 2, fall 3".into()),
        up,
        since: 0,
        last_error: error.map(Into::into),
        last_error_at: error.map(|_| 0),
        weight: 1,
        dynamic_weight: None,
    }
}

/// The daemon's report: rs1 down (refused), rs2 up, the fwmark service's real server unchecked; MASTER.
fn health_report() -> report::HealthReport {
    let mut r = report::new(std::path::Path::new("/etc/lvsctl.toml"), SystemTime::UNIX_EPOCH);
    let refused = "tcp connect to 10.18.68.186:15858: Connection refused (os error 111)";
    let service = |key, sorry_active, real_servers| ServiceHealth {
        key,
        sorry_server: None,
        sorry_active,
        on_failure: crate::health::OnFailure::Drain,
        sorry: None,
        real_servers,
    };
    let mut unchecked = real("10.18.68.188:0", true, None);
    unchecked.check = None;
    r.services.push(service(
        web(),
        false,
        vec![real("10.18.68.186:15858", false, Some(refused)), real("10.18.68.187:15858", true, None)],
    ));
    r.services.push(service(marked(), true, vec![unchecked]));
    r.ha = Some(HaReport {
        role: Role::Master,
        since: 0,
        reason: "test".into(),
        interface: "eth0".into(),
        virtual_router_id: 51,
        priority: 100,
        preempt: false,
        peers: vec![],
        vips: vec![VIP.parse().unwrap()],
        sync_daemons: vec![ipvs::SyncDaemon::new(ipvs::SyncState::Master, "eth0", 51)],
        backup_only: None,
        keepalived: "2.2.7".into(),
    });
    r
}

fn filled() -> Metrics {
    let m = Metrics::new();
    m.set_report(&health_report());
    m.transition(&web(), "10.18.68.186:15858".parse().unwrap());
    m.check_took("tcp", Duration::from_millis(3));
    m.check_took("tcp", Duration::from_millis(700));
    m.check_took("http", Duration::from_millis(20));
    m.repaired(3);
    m
}

fn rs(addr: &str, port: &str) -> [(&'static str, String); 6] {
    [
        ("local_address", VIP.to_owned()),
        ("local_port", "15858".to_owned()),
        ("remote_address", addr.to_owned()),
        ("remote_port", port.to_owned()),
        ("proto", "TCP".to_owned()),
        ("local_mark", String::new()),
    ]
}

fn get(s: &[Sample], name: &str, labels: &[(&str, String)]) -> Option<f64> {
    let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    value(s, name, &l)
}

#[test]
fn node_exporter_series_for_the_whole_table() {
    let s = samples(&filled().encode(kernel()));
    assert_eq!(get(&s, "node_ipvs_backend_weight", &rs("10.18.68.186", "15858")), Some(0.0));
    assert_eq!(get(&s, "node_ipvs_backend_weight", &rs("10.18.68.187", "15858")), Some(1.0));
    assert_eq!(get(&s, "node_ipvs_backend_connections_active", &rs("10.18.68.187", "15858")), Some(5.0));
    assert_eq!(get(&s, "node_ipvs_backend_connections_inactive", &rs("10.18.68.187", "15858")), Some(1.0));
    // A firewall-mark service as node_exporter labels it (from /proc/net/ip_vs).
    let fwm = [("local_address", ""), ("local_port", "0"), ("proto", "FWM"), ("local_mark", "00000007")];
    assert_eq!(value(&s, "node_ipvs_backend_weight", &fwm), Some(3.0));
    // Somebody else's service is in the node_* series too.
    assert_eq!(value(&s, "node_ipvs_backend_weight", &[("proto", "UDP"), ("remote_address", "10.0.0.54")]), Some(1.0));
    for (name, v) in [
        ("node_ipvs_connections_total", 40.0),
        ("node_ipvs_incoming_packets_total", 120.0),
        ("node_ipvs_outgoing_packets_total", 0.0),
        ("node_ipvs_incoming_bytes_total", 4010.0),
        ("node_ipvs_outgoing_bytes_total", 7.0),
        ("lvsctl_kernel_read_success", 1.0),
    ] {
        assert_eq!(value(&s, name, &[]), Some(v), "{name}");
    }
    let labels: Vec<&str> =
        s.iter().find(|x| x.0 == "node_ipvs_backend_weight").unwrap().1.keys().map(String::as_str).collect();
    assert_eq!(labels, ["local_address", "local_mark", "local_port", "proto", "remote_address", "remote_port"]);
}

#[test]
fn lvsctl_counters_only_for_owned_services() {
    let s = samples(&filled().encode(kernel()));
    let svc = [("local_address", VIP), ("local_port", "15858"), ("proto", "TCP")];
    assert_eq!(value(&s, "lvsctl_service_connections_total", &svc), Some(30.0));
    assert_eq!(value(&s, "lvsctl_service_incoming_packets_total", &svc), Some(90.0));
    assert_eq!(value(&s, "lvsctl_service_incoming_bytes_total", &svc), Some(3000.0));
    assert_eq!(get(&s, "lvsctl_real_server_connections_total", &rs("10.18.68.187", "15858")), Some(20.0));
    assert_eq!(get(&s, "lvsctl_real_server_incoming_bytes_total", &rs("10.18.68.186", "15858")), Some(1000.0));
    assert_eq!(value(&s, "lvsctl_service_connections_total", &[("proto", "FWM")]), Some(1.0));
    assert_eq!(value(&s, "lvsctl_service_connections_total", &[("proto", "UDP")]), None, "not lvsctl's service");
    assert_eq!(value(&s, "lvsctl_real_server_connections_total", &[("remote_address", "10.0.0.54")]), None);
}

#[test]
fn health_series_one_per_real_server() {
    let s = samples(&filled().encode(kernel()));
    let down = [&rs("10.18.68.186", "15858")[..], &[("reason", "refused".to_owned())]].concat();
    assert_eq!(get(&s, "lvsctl_real_server_up", &down), Some(0.0));
    let up = [&rs("10.18.68.187", "15858")[..], &[("reason", "ok".to_owned())]].concat();
    assert_eq!(get(&s, "lvsctl_real_server_up", &up), Some(1.0));
    assert_eq!(value(&s, "lvsctl_real_server_up", &[("proto", "FWM"), ("reason", "unchecked")]), Some(1.0));
    assert_eq!(s.iter().filter(|x| x.0 == "lvsctl_real_server_up").count(), 3, "one series per real server");
    assert_eq!(get(&s, "lvsctl_real_server_transitions_total", &rs("10.18.68.186", "15858")), Some(1.0));
    assert_eq!(value(&s, "lvsctl_sorry_server_active", &[("proto", "TCP")]), Some(0.0));
    assert_eq!(value(&s, "lvsctl_sorry_server_active", &[("proto", "FWM")]), Some(1.0));
    assert_eq!(value(&s, "lvsctl_resync_repairs_total", &[]), Some(3.0));
    assert_eq!(value(&s, "lvsctl_check_duration_seconds_count", &[("check", "tcp")]), Some(2.0));
    assert_eq!(value(&s, "lvsctl_check_duration_seconds_count", &[("check", "http")]), Some(1.0));
    assert_eq!(value(&s, "lvsctl_check_duration_seconds_bucket", &[("check", "tcp"), ("le", "0.004")]), Some(1.0));
    assert_eq!(value(&s, "lvsctl_check_duration_seconds_bucket", &[("check", "tcp"), ("le", "+Inf")]), Some(2.0));
    assert_eq!(value(&s, "lvsctl_vrrp_role", &[("role", "MASTER")]), Some(1.0));
    assert_eq!(value(&s, "lvsctl_vrrp_role", &[("role", "BACKUP")]), Some(0.0));
    let sync = [("state", "master"), ("interface", "eth0"), ("sync_id", "51")];
    assert_eq!(value(&s, "lvsctl_sync_daemon", &sync), Some(1.0));
    assert_eq!(value(&s, "lvsctl_sync_daemons", &[]), Some(1.0));
}

#[test]
fn a_failed_kernel_read_leaves_its_series_out_and_says_so() {
    let failed = KernelState { table: Err("no IPVS".into()), global: Err("no file".into()) };
    let s = samples(&filled().encode(failed));
    assert_eq!(value(&s, "lvsctl_kernel_read_success", &[]), Some(0.0));
    assert!(!s.iter().any(|x| x.0.starts_with("node_ipvs_") || x.0.starts_with("lvsctl_service_")));
    assert!(value(&s, "lvsctl_real_server_up", &[("reason", "refused")]).is_some(), "health series stay");
}

#[test]
fn without_ha_no_role_series_and_before_a_report_no_health() {
    let m = Metrics::new();
    let s = samples(&m.encode(kernel()));
    assert!(!s.iter().any(|x| x.0.starts_with("lvsctl_real_server_up") || x.0.starts_with("lvsctl_vrrp")));
    let mut r = health_report();
    r.ha = None;
    m.set_report(&r);
    let s = samples(&m.encode(kernel()));
    assert!(!s.iter().any(|x| x.0.starts_with("lvsctl_vrrp") || x.0.starts_with("lvsctl_sync")));
    assert!(s.iter().any(|x| x.0 == "lvsctl_real_server_up"));
}

/// A collector another part of the daemon adds shows up in every scrape.
#[test]
fn added_collectors_are_scraped() {
    #[derive(Debug)]
    struct Announced;
    impl Collector for Announced {
        fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            kernel::gauge(&mut enc, "lvsctl_test_announced", "test", 2)
        }
    }
    let m = Metrics::new();
    m.add_collector(Arc::new(Announced));
    assert_eq!(value(&samples(&m.encode(kernel())), "lvsctl_test_announced", &[]), Some(2.0));
}

#[test]
fn reasons() {
    let mut r = real("10.0.0.1:80", false, None);
    for (error, kind) in [
        ("tcp check timed out after 1s", "timeout"),
        ("tcp connect to 10.0.0.1:80: Connection refused (os error 111)", "refused"),
        ("tcp connect to 10.0.0.1:80: No route to host (os error 113)", "unreachable"),
        ("http GET / answered status 503, expected 200", "status"),
        ("http GET /: body does not contain \"ok\"", "body"),
        ("http: the server closed the connection without answering", "error"),
        ("udp reply from 10.0.0.1:53 does not contain \"ready\": \"pong\"", "body"),
        ("https TLS handshake with 10.0.0.1:443: unknown CA: the certificate is not signed by a trusted CA", "tls"),
        ("dns A www.example.com. at 10.0.0.1:53: answered SERVFAIL, expected NOERROR", "answer"),
        ("postgres 10.0.0.1:5432: not accepting connections: the database system is shutting down", "not_accepting"),
    ] {
        r.last_error = Some(error.into());
        assert_eq!(reason_kind(&r), kind, "{error}");
    }
    r.check = Some("exec /usr/local/bin/check as nobody every 2s".into());
    r.last_error = Some("/usr/local/bin/check exit status 1".into());
    assert_eq!(reason_kind(&r), "exec");
    r.up = true;
    assert_eq!(reason_kind(&r), "ok");
    r.check = None;
    assert_eq!(reason_kind(&r), "unchecked");
}

/// With `[director.bgp]`, each VIP has one series: 1 announced, 0 withdrawn.
#[test]
fn bgp_vips_are_one_series_each() {
    use crate::health::report_bgp::{BgpReport, VipAnnouncement};
    let vip =
        |v: &str, announced| VipAnnouncement { vip: v.parse().unwrap(), announced, since: 0, reason: "test".into() };
    let mut r = health_report();
    r.bgp = Some(BgpReport {
        bird: "2.0.12".into(),
        socket: "/run/lvsctl/bird.ctl".into(),
        asn: 65001,
        router_id: "10.0.0.2".parse().unwrap(),
        neighbors: vec!["10.0.0.1 AS 65000".into()],
        vips: vec![vip("10.19.70.166", true), vip("10.19.70.167", false)],
        sessions: vec![],
        sessions_error: None,
    });
    let m = Metrics::new();
    m.set_report(&r);
    let s = samples(&m.encode(kernel()));
    assert_eq!(value(&s, "lvsctl_bgp_vip_announced", &[("vip", "10.19.70.166")]), Some(1.0));
    assert_eq!(value(&s, "lvsctl_bgp_vip_announced", &[("vip", "10.19.70.167")]), Some(0.0));
    assert_eq!(s.iter().filter(|x| x.0 == "lvsctl_bgp_vip_announced").count(), 2);
}
