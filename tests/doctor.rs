//! Privileged tests of `lvsctl doctor` against the real kernel: hosts
//! emulated by network namespaces, set up right (no finding, exit 0) and
//! broken in each way doctor checks (that finding, exit 1).

use std::path::PathBuf;
use std::process::Command;

use lvsctl_tests::topology::*;
use lvsctl_tests::{lvsctl_bin, unique};

const VIP: &str = "10.19.70.166";
const PORT: &str = "15858";
const IF: &str = "lan.100";

/// A state folder of the test's own (removed on drop), so that doctor reads
/// only what this test's `start` recorded.
struct StateDir(PathBuf);

impl StateDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(unique("lvsctl-doctor-state"));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `lvsctl --netns NS ARGS` with the test's state folder.
fn lvsctl(ns: &Netns, st: &StateDir, args: &[&str]) -> std::process::Output {
    let out = Command::new(lvsctl_bin())
        .args(["--netns", &ns.name])
        .args(args)
        .env("LVSCTL_STATE_DIR", &st.0)
        .output()
        .expect("run lvsctl");
    out
}

/// `doctor ARGS --json`: exit status, finding ids (sorted), notes, the whole output.
fn doctor(ns: &Netns, st: &StateDir, args: &[&str]) -> (i32, Vec<String>, Vec<String>, serde_json::Value) {
    let mut a = vec!["doctor"];
    a.extend_from_slice(args);
    a.push("--json");
    let out = lvsctl(ns, st, &a);
    let (stdout, stderr) = texts(&out);
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("doctor {args:?}: {e}\n{stdout}\n{stderr}"));
    let mut ids: Vec<String> =
        v["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    let notes = v["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_owned()).collect();
    (code(&out), ids, notes, v)
}

fn write_proc(ns: &Netns, path: &str, value: &str) {
    let (p, v) = (path.to_owned(), value.to_owned());
    ns.run(move || std::fs::write(&p, v).unwrap_or_else(|e| panic!("write {p}: {e}")));
}

/// A real server set up by `lvsctl realserver start`, with a service on 0.0.0.0.
fn real_server(st: &StateDir) -> Netns {
    let ns = Netns::new("drs");
    ns.add_veth(IF, "peer0");
    ns.ip(&["addr", "add", "10.18.68.187/24", "dev", IF]);
    let out = lvsctl(&ns, st, &["realserver", "start", "--vip", VIP, "--iface", IF]);
    assert_eq!(code(&out), 0, "{:?}", texts(&out));
    ns
}

/// A correctly set-up real server passes; the VIP and the interface come
/// from the state `realserver start` recorded.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn doctor_passes_a_real_server_set_up_by_lvsctl() {
    let st = StateDir::new();
    let ns = real_server(&st);
    let _srv = NameServer::start(&ns, format!("0.0.0.0:{PORT}").parse().unwrap(), "rs");
    let (c, ids, notes, v) = doctor(&ns, &st, &["realserver", "--port", PORT]);
    assert_eq!((c, ids.clone()), (0, vec![]), "{v:#}");
    assert_eq!(v["ok"], true);
    // It did check something: the VIP from the state.
    assert!(notes.iter().any(|n| n.contains(VIP)), "{notes:?}");
    // The text form says so too, and the exit status is the same.
    let out = lvsctl(&ns, &st, &["doctor", "realserver", "--port", PORT]);
    assert_eq!(code(&out), 0);
    assert!(texts(&out).0.contains("no problems found"), "{:?}", texts(&out));
}

/// Each way a DR real server can be broken gives its finding and exit 1.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn doctor_diagnoses_each_broken_real_server() {
    type Break = fn(&Netns);
    let cases: Vec<(&str, Break, &[&str])> = vec![
        (
            "arp_ignore 0",
            |ns| {
                ns.set_sysctl("all", "arp_ignore", "0");
                ns.set_sysctl(IF, "arp_ignore", "0");
            },
            &["rs-arp-ignore"],
        ),
        // all=3 outweighs the interface's 1, and 3 still answers for the VIP.
        ("arp_ignore 3 on all", |ns| ns.set_sysctl("all", "arp_ignore", "3"), &["rs-arp-ignore"]),
        (
            "arp_announce 0",
            |ns| {
                ns.set_sysctl("all", "arp_announce", "0");
                ns.set_sysctl(IF, "arp_announce", "0");
            },
            &["rs-arp-announce"],
        ),
        (
            "VIP gone",
            |ns| {
                ns.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
            },
            &["rs-vip-missing"],
        ),
        (
            "VIP /24 on lo",
            |ns| {
                ns.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
                ns.ip(&["addr", "add", &format!("{VIP}/24"), "dev", "lo"]);
            },
            &["rs-vip-prefix"],
        ),
        (
            "strict rp_filter on a second interface's host",
            |ns| {
                ns.add_veth("lan2", "peer2");
                ns.ip(&["addr", "add", "192.168.9.2/24", "dev", "lan2"]);
                ns.set_sysctl(IF, "rp_filter", "1");
            },
            &["rs-rp-filter"],
        ),
    ];
    for (name, brk, want) in cases {
        let st = StateDir::new();
        let ns = real_server(&st);
        let _srv = NameServer::start(&ns, format!("0.0.0.0:{PORT}").parse().unwrap(), "rs");
        brk(&ns);
        let (c, ids, _, v) = doctor(&ns, &st, &["realserver", "--port", PORT]);
        assert_eq!((c, ids), (1, want.iter().map(|s| s.to_string()).collect::<Vec<_>>()), "{name}: {v:#}");
        let f = &v["findings"][0];
        for k in ["what", "why", "fix"] {
            assert!(!f[k].as_str().unwrap().is_empty(), "{name}: {k} {v:#}");
        }
    }

    // Nothing listening on the port; then a service bound to the host's
    // own address only, which the VIP's packets do not reach.
    let st = StateDir::new();
    let ns = real_server(&st);
    let (c, ids, _, v) = doctor(&ns, &st, &["realserver", "--port", PORT]);
    assert_eq!((c, ids), (1, vec!["rs-no-listener".to_owned()]), "{v:#}");
    let _srv = NameServer::start(&ns, format!("10.18.68.187:{PORT}").parse().unwrap(), "rs");
    let (c, ids, _, v) = doctor(&ns, &st, &["realserver", "--port", PORT]);
    assert_eq!((c, ids), (1, vec!["rs-no-listener".to_owned()]), "{v:#}");
    // Bound to the VIP: fine.
    let _vip = NameServer::start(&ns, format!("{VIP}:{PORT}").parse().unwrap(), "rs");
    let (c, ids, _, v) = doctor(&ns, &st, &["realserver", "--port", PORT]);
    assert_eq!((c, ids), (0, vec![]), "{v:#}");
}

/// An LVS-TUN real server: tunl0 down, strict rp_filter, full-size MTU;
/// then right.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn doctor_checks_a_tun_real_server() {
    let st = StateDir::new();
    let ns = real_server(&st);
    let _srv = NameServer::start(&ns, format!("0.0.0.0:{PORT}").parse().unwrap(), "rs");
    // The tunnel module makes tunl0 in every namespace, down.
    let has_tunl0 = ns.exec(&lvsctl_tests::ip_bin().display().to_string(), &["link", "show", "tunl0"]).status.success();
    let args = ["realserver", "--port", PORT, "--tun"];
    let (c, ids, _, v) = doctor(&ns, &st, &args);
    assert_eq!(c, 1, "{v:#}");
    assert!(ids.contains(&"rs-tun-down".to_owned()), "{v:#}");
    assert!(ids.contains(&"rs-tun-mtu".to_owned()), "{v:#}");
    assert!(
        v["findings"].as_array().unwrap().iter().any(|f| f["id"] == "rs-tun-down"
            && f["what"].as_str().unwrap().contains(if has_tunl0 { "down" } else { "no tunl0" })),
        "{v:#}"
    );
    assert!(has_tunl0, "the test kernel loads ipip: tunl0 must exist");
    ns.ip(&["link", "set", "tunl0", "up"]);
    ns.set_sysctl("all", "rp_filter", "1");
    ns.set_sysctl("tunl0", "rp_filter", "0");
    let (c, ids, _, v) = doctor(&ns, &st, &args);
    assert_eq!((c, ids), (1, vec!["rs-tun-mtu".to_owned(), "rs-tun-rp-filter".to_owned()]), "{v:#}");
    ns.set_sysctl("all", "rp_filter", "0");
    ns.ip(&["link", "set", IF, "mtu", "1480"]);
    let (c, ids, _, v) = doctor(&ns, &st, &args);
    assert_eq!((c, ids), (0, vec![]), "{v:#}");
}

/// A director with a DR, a NAT, a persistent and a consistent-hash service,
/// on a segment of its own (the bridge is in another namespace: an
/// interface's peer in the same namespace would answer ARP for the VIP).
fn director() -> (Lan, Netns) {
    let lan = Lan::new();
    let ns = lan.host("ddir", "enp1s0", "10.18.68.186/24");
    ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "enp1s0"]);
    ns.ipvsadm(&["-A", "-t", &format!("{VIP}:{PORT}"), "-s", "rr"]);
    ns.ipvsadm(&["-a", "-t", &format!("{VIP}:{PORT}"), "-r", "10.18.68.187", "-g"]);
    ns.ipvsadm(&["-a", "-t", &format!("{VIP}:{PORT}"), "-r", "10.18.68.188", "-g"]);
    ns.ipvsadm(&["-A", "-t", &format!("{VIP}:80"), "-s", "wlc", "-p", "300"]);
    ns.ipvsadm(&["-a", "-t", &format!("{VIP}:80"), "-r", "10.18.68.189:8080", "-m"]);
    ns.ipvsadm(&["-A", "-t", &format!("{VIP}:443"), "-s", "sh"]);
    ns.ipvsadm(&["-a", "-t", &format!("{VIP}:443"), "-r", "10.18.68.187", "-g"]);
    write_proc(&ns, "/proc/sys/net/ipv4/ip_forward", "1");
    for (k, v) in [("expire_nodest_conn", "1"), ("expire_quiescent_template", "1"), ("sloppy_tcp", "1")] {
        write_proc(&ns, &format!("/proc/sys/net/ipv4/vs/{k}"), v);
    }
    (lan, ns)
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn doctor_passes_a_director_and_diagnoses_each_broken_one() {
    let st = StateDir::new();
    let (_lan, ns) = director();
    let (c, ids, notes, v) = doctor(&ns, &st, &["director"]);
    assert_eq!((c, ids), (0, vec![]), "{v:#}");
    assert!(notes.iter().any(|n| n.contains("3 virtual service(s)") && n.contains(VIP)), "{notes:?}");

    type Break = fn(&Netns);
    let cases: Vec<(&str, Break, &[&str])> = vec![
        (
            "VIP gone",
            |ns| {
                ns.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "enp1s0"]);
            },
            &["dir-vip-missing"],
        ),
        (
            "VIP /24",
            |ns| {
                ns.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "enp1s0"]);
                ns.ip(&["addr", "add", &format!("{VIP}/24"), "dev", "enp1s0"]);
            },
            &["dir-vip-prefix"],
        ),
        ("no forwarding with NAT", |ns| write_proc(ns, "/proc/sys/net/ipv4/ip_forward", "0"), &["dir-forwarding"]),
        (
            "expire_nodest_conn 0",
            |ns| write_proc(ns, "/proc/sys/net/ipv4/vs/expire_nodest_conn", "0"),
            &["dir-expire-nodest-conn"],
        ),
        (
            "expire_quiescent_template 0 with persistence",
            |ns| write_proc(ns, "/proc/sys/net/ipv4/vs/expire_quiescent_template", "0"),
            &["dir-expire-quiescent-template"],
        ),
        (
            "sloppy_tcp 0 with sh and no sync",
            |ns| write_proc(ns, "/proc/sys/net/ipv4/vs/sloppy_tcp", "0"),
            &["dir-sloppy-tcp"],
        ),
        // A backup director that is also a real server: the VIP on lo, this
        // host and another one as real servers, no working backup_only.
        (
            "also a real server, VIP on lo",
            |ns| {
                ns.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "enp1s0"]);
                ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
                ns.ipvsadm(&["-a", "-t", &format!("{VIP}:{PORT}"), "-r", "10.18.68.186", "-g"]);
            },
            &["dir-backup-only"],
        ),
    ];
    for (name, brk, want) in cases {
        let st = StateDir::new();
        let (_lan, ns) = director();
        brk(&ns);
        let (c, ids, _, v) = doctor(&ns, &st, &["director"]);
        assert_eq!((c, ids), (1, want.iter().map(|s| s.to_string()).collect::<Vec<_>>()), "{name}: {v:#}");
    }
}

/// A director set up by `lvsctl director start` (VIP from its state)
/// passes once the sysctls are right; the VIP it recorded is checked even
/// with no service in the table.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn doctor_reads_the_director_state() {
    let st = StateDir::new();
    let lan = Lan::new();
    let ns = lan.host("ddst", "enp1s0", "10.18.68.186/24");
    let out = lvsctl(
        &ns,
        &st,
        &["director", "start", "--vip", VIP, "--port", PORT, "--iface", "enp1s0", "--real", "10.18.68.187"],
    );
    assert_eq!(code(&out), 0, "{:?}", texts(&out));
    write_proc(&ns, "/proc/sys/net/ipv4/vs/expire_nodest_conn", "1");
    let (c, ids, _, v) = doctor(&ns, &st, &["director"]);
    assert_eq!((c, ids), (0, vec![]), "{v:#}");
    ns.ipvsadm(&["-C"]);
    ns.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "enp1s0"]);
    let (c, ids, _, v) = doctor(&ns, &st, &["director"]);
    assert_eq!((c, ids), (1, vec!["dir-vip-missing".to_owned()]), "{v:#}");
    assert!(v["findings"][0]["fix"].as_str().unwrap().contains("dev enp1s0"), "{v:#}");
}

/// Another host on the segment that holds the VIP too (a real server with
/// the VIP on its interface instead of lo) answers the ARP probe: a
/// duplicate VIP. Once it keeps the VIP on lo with arp_ignore=1, it does not.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn doctor_finds_a_duplicate_vip() {
    let st = StateDir::new();
    let (lan, ns) = director();
    let rogue = lan.host("drog", "eth0", "10.18.68.190/24");
    rogue.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "eth0"]);
    let mac = rogue.ip(&["-o", "link", "show", "eth0"]);
    let mac = mac.split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_owned();
    let (c, ids, _, v) = doctor(&ns, &st, &["director"]);
    assert_eq!((c, ids), (1, vec!["dir-duplicate-vip".to_owned()]), "{v:#}");
    assert!(v["findings"][0]["what"].as_str().unwrap().contains(&mac), "{mac}: {v:#}");
    rogue.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "eth0"]);
    rogue.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    rogue.set_sysctl("all", "arp_ignore", "1");
    let (c, ids, _, v) = doctor(&ns, &st, &["director"]);
    assert_eq!((c, ids), (0, vec![]), "{v:#}");
}
