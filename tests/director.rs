//! Privileged tests of `lvsctl director` (and of a whole LVS-DR topology,
//! real servers included) against the real kernel: every host is a network
//! namespace, the hosts share a bridge.
//!
//! Addresses are those of the database coordinator pair lvsctl was written
//! for (VIP 10.19.70.166:15858; real servers 10.18.68.186, which is also the
//! director, and 10.18.68.187) and exist only inside the test's namespaces.

use std::net::SocketAddr;
use std::time::Duration;

use lvsctl_tests::topology::*;
use lvsctl_tests::{lvsctl_bin, require_privileged, run};
use serde_json::Value;

const VIP: &str = "10.19.70.166";
const PORT: &str = "15858";
const IF: &str = "enp1s0";

fn vip_port() -> SocketAddr {
    format!("{VIP}:{PORT}").parse().unwrap()
}

/// `director start` flags of the coordinator pair's service (the "seed" of
/// these test names): VIP:PORT on enp1s0, real servers 186 and 187.
fn seed_start_args() -> Vec<&'static str> {
    vec![
        "director",
        "start",
        "--vip",
        VIP,
        "--port",
        PORT,
        "--iface",
        IF,
        "--real",
        "10.18.68.186",
        "--real",
        "10.18.68.187",
    ]
}

fn status_json(ns: &Netns, role: &str) -> (i32, Value) {
    let out = ns.lvsctl(&[role, "status", "--json"]);
    let (o, e) = texts(&out);
    let v: Value = serde_json::from_str(&o).unwrap_or_else(|err| panic!("status --json is not JSON ({err}): {o}\n{e}"));
    (code(&out), v)
}

/// Connection count of each real server of the first service, from `status --json`.
fn real_conns(v: &Value) -> Vec<(String, u64)> {
    v["services"][0]["real_servers"]
        .as_array()
        .expect("real_servers")
        .iter()
        .map(|r| (r["address"].as_str().unwrap().to_owned(), r["stats"]["conns"].as_u64().unwrap_or(0)))
        .collect()
}

fn assert_alternates(names: &[String], a: &str, b: &str) {
    assert!(names.iter().any(|n| n == a) && names.iter().any(|n| n == b), "both real servers must answer: {names:?}");
    for w in names.windows(2) {
        assert_ne!(w[0], w[1], "round robin must alternate: {names:?}");
    }
    assert!(names.iter().all(|n| n == a || n == b), "unexpected answer in {names:?}");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_seed_topology_end_to_end() {
    require_privileged();
    let lan = Lan::new();
    let client = lan.host("cli", IF, "10.18.68.10/24");
    let director = lan.host("dir", IF, "10.18.68.185/24");
    let rs186 = lan.host("rsa", IF, "10.18.68.186/24");
    let rs187 = lan.host("rsb", IF, "10.18.68.187/24");
    // The client reaches the VIP on its LAN; the director answers ARP for it.
    client.ip(&["route", "add", &format!("{VIP}/32"), "dev", IF]);
    let _s186 = NameServer::start(&rs186, "0.0.0.0:15858".parse().unwrap(), "rs186");
    let _s187 = NameServer::start(&rs187, "0.0.0.0:15858".parse().unwrap(), "rs187");

    let before: Vec<Snapshot> = [&director, &rs186, &rs187].iter().map(|h| h.snapshot(&[IF])).collect();
    for h in [&director, &rs186, &rs187] {
        assert_eq!(code(&h.lvsctl(&["director", "status"])), 3);
        assert_eq!(code(&h.lvsctl(&["realserver", "status"])), 3);
    }

    for rs in [&rs186, &rs187] {
        let out = rs.lvsctl_ok(&["realserver", "start", "--vip", VIP, "--iface", IF]);
        assert!(out.contains(&format!("added {VIP}/32 to lo")), "{out}");
        assert_eq!(rs.sysctl(IF, "arp_ignore"), "1");
        assert_eq!(rs.sysctl("all", "arp_announce"), "2");
        assert_eq!(rs.sysctl("lo", "arp_ignore"), "1");
    }
    let out = director.lvsctl_ok(&seed_start_args());
    assert!(out.contains(&format!("added {VIP}/32 to {IF}")), "{out}");
    assert_eq!(
        director.ipvsadm_save(),
        "-A -t 10.19.70.166:15858 -s rr\n\
         -a -t 10.19.70.166:15858 -r 10.18.68.186:15858 -g -w 1\n\
         -a -t 10.19.70.166:15858 -r 10.18.68.187:15858 -g -w 1\n"
    );

    let names = ask_names(&client, vip_port(), 6);
    assert_alternates(&names, "rs186", "rs187");

    // Status: running on all three; the director shows the connection counts
    // (the kernel folds counters in every 2 s: wait for them).
    let v = eventually("director status counts 3 connections per real server", Duration::from_secs(15), || {
        let (c, v) = status_json(&director, "director");
        if c == 0 && real_conns(&v).iter().all(|(_, n)| *n == 3) && v["services"][0]["stats"]["conns"] == 6 {
            Ok(v)
        } else {
            Err((c, v))
        }
    });
    assert_eq!(v["status"], "running");
    assert_eq!(v["addresses"][0]["present"], true);
    let out = director.lvsctl(&["director", "status"]);
    let (text, _) = texts(&out);
    assert_eq!(code(&out), 0, "{text}");
    assert!(text.starts_with("director: running\n"), "{text}");
    let line = text.lines().find(|l| l.starts_with("  -> 10.18.68.186:15858")).expect("real server line");
    let cols: Vec<&str> = line.split_whitespace().collect();
    // ->, addr, Route, weight, active, inactive, Conns, InPkts, OutPkts, InBytes, OutBytes
    assert_eq!((cols[2], cols[3], cols[6]), ("Route", "1", "3"), "{line}");
    assert!(text
        .lines()
        .any(|l| l.starts_with("TCP  10.19.70.166:15858 rr") && l.split_whitespace().nth(3) == Some("6")));
    for rs in [&rs186, &rs187] {
        let out = rs.lvsctl(&["realserver", "status"]);
        assert_eq!(code(&out), 0, "{:?}", texts(&out));
        assert!(texts(&out).0.contains(&format!("VIP {VIP}/32 on lo: present")));
    }

    // ARP suppression, seen from the client: the VIP resolves to the
    // director's MAC, never to a real server's (they have the VIP on lo).
    let director_mac = mac_of(&director, IF);
    for rs in [&rs186, &rs187] {
        assert_ne!(mac_of(rs, IF), director_mac);
    }
    for _ in 0..3 {
        client.ip(&["neigh", "flush", "to", VIP]);
        assert_eq!(ask_names(&client, vip_port(), 1).len(), 1);
        let n = client.ip(&["neigh", "show", "to", VIP]);
        assert!(
            n.contains(&format!("lladdr {director_mac} ")),
            "the client resolved the VIP as {n:?}, not to the director's {director_mac}"
        );
    }

    // Stop each: the hosts are back as before, byte for byte.
    director.lvsctl_ok(&["director", "stop"]);
    for rs in [&rs186, &rs187] {
        rs.lvsctl_ok(&["realserver", "stop"]);
    }
    let after: Vec<Snapshot> = [&director, &rs186, &rs187].iter().map(|h| h.snapshot(&[IF])).collect();
    assert_eq!(before, after);
    assert_eq!(director.ipvsadm_save(), before[0].ipvs);
    assert_eq!(code(&director.lvsctl(&["director", "status"])), 3);
    for rs in [&rs186, &rs187] {
        assert_eq!(code(&rs.lvsctl(&["realserver", "status"])), 3);
    }
    // Stop on a stopped host: exit 0.
    director.lvsctl_ok(&["director", "stop"]);
    rs186.lvsctl_ok(&["realserver", "stop"]);
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_is_also_a_real_server() {
    require_privileged();
    // The coordinator pair: 186 is director and real server, 187 real server.
    let lan = Lan::new();
    let client = lan.host("cli", IF, "10.18.68.10/24");
    let h186 = lan.host("h186", IF, "10.18.68.186/24");
    let h187 = lan.host("h187", IF, "10.18.68.187/24");
    client.ip(&["route", "add", &format!("{VIP}/32"), "dev", IF]);
    let before: Vec<Snapshot> = [&h186, &h187].iter().map(|h| h.snapshot(&[IF])).collect();

    h187.lvsctl_ok(&["realserver", "start", "--vip", VIP, "--iface", IF]);
    h186.lvsctl_ok(&["realserver", "start", "--vip", VIP, "--iface", IF]);
    h186.lvsctl_ok(&seed_start_args());
    // 186's service listens on the VIP itself; 187's on every address.
    let s186 = NameServer::start(&h186, vip_port(), "cn186");
    let s187 = NameServer::start(&h187, "0.0.0.0:15858".parse().unwrap(), "cn187");

    let names = ask_names(&client, vip_port(), 6);
    assert_alternates(&names, "cn186", "cn187");
    let v = eventually("director status counts the connections", Duration::from_secs(15), || {
        let (c, v) = status_json(&h186, "director");
        if c == 0 && v["services"][0]["stats"]["conns"] == 6 {
            Ok(v)
        } else {
            Err((c, v))
        }
    });
    let own = v["services"][0]["real_servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == "10.18.68.186:15858")
        .expect("the director's own address is a real server")
        .clone();
    // The kernel may report a local destination as Local.
    assert!(own["forward"] == "Route" || own["forward"] == "Local", "{own}");
    assert_eq!(own["stats"]["conns"], 3);
    assert_eq!(code(&h186.lvsctl(&["realserver", "status"])), 0);

    drop((s186, s187));
    h186.lvsctl_ok(&["director", "stop"]);
    h186.lvsctl_ok(&["realserver", "stop"]);
    h187.lvsctl_ok(&["realserver", "stop"]);
    let after: Vec<Snapshot> = [&h186, &h187].iter().map(|h| h.snapshot(&[IF])).collect();
    assert_eq!(before, after);
}

/// The MAC address of `iface` in `ns`.
fn mac_of(ns: &Netns, iface: &str) -> String {
    let l = ns.ip(&["-o", "link", "show", "dev", iface]);
    let at = l.find("link/ether ").unwrap_or_else(|| panic!("no MAC in {l}")) + "link/ether ".len();
    l[at..].split_whitespace().next().unwrap().to_owned()
}

/// A namespace with interface `enp1s0` (a veth pair inside it) and the
/// coordinator pair's real-server addresses on its other end's subnet.
fn director_host() -> Netns {
    let ns = Netns::new("d");
    ns.add_veth(IF, "peer0");
    ns.ip(&["addr", "add", "10.18.68.185/24", "dev", IF]);
    ns
}

fn changes(out: &str) -> Vec<String> {
    out.lines().filter(|l| l.starts_with("director: ")).map(|l| l["director: ".len()..].to_owned()).collect()
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_start_is_idempotent() {
    let ns = director_host();
    let first = ns.lvsctl_ok(&seed_start_args());
    assert_eq!(changes(&first).len(), 5, "{first}"); // service, 2 real servers, VIP, summary
    let (save, addrs) = (ns.ipvsadm_save(), ns.addrs4());
    let second = ns.lvsctl_ok(&seed_start_args());
    assert_eq!(changes(&second), ["already running as configured; nothing changed"], "{second}");
    assert_eq!(ns.ipvsadm_save(), save);
    assert_eq!(ns.addrs4(), addrs);
    assert_eq!(code(&ns.lvsctl(&["director", "status"])), 0);
    ns.lvsctl_ok(&["director", "stop"]);
    assert_eq!(ns.ipvsadm_save(), "");
    assert!(!ns.addrs4().contains(VIP));
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_start_reconciles_only_the_difference() {
    let ns = director_host();
    ns.lvsctl_ok(&seed_start_args());
    let out = ns.lvsctl_ok(&[
        "director",
        "start",
        "--vip",
        VIP,
        "--port",
        PORT,
        "--iface",
        IF,
        "--real",
        "10.18.68.186,weight=3",
        "--real",
        "10.18.68.188",
    ]);
    let mut got = changes(&out);
    assert_eq!(got.pop().as_deref(), Some("running (1 virtual services, 2 real servers)"));
    got.sort();
    assert_eq!(
        got,
        [
            "add real server 10.18.68.188:15858 to tcp 10.19.70.166:15858 (Route, weight 1)",
            "delete real server 10.18.68.187:15858 of tcp 10.19.70.166:15858",
            "edit real server 10.18.68.186:15858 of tcp 10.19.70.166:15858 (Route, weight 3)",
        ],
        "{out}"
    );
    assert_eq!(
        ns.ipvsadm_save(),
        "-A -t 10.19.70.166:15858 -s rr\n\
         -a -t 10.19.70.166:15858 -r 10.18.68.186:15858 -g -w 3\n\
         -a -t 10.19.70.166:15858 -r 10.18.68.188:15858 -g -w 1\n"
    );
    assert_eq!(code(&ns.lvsctl(&["director", "status"])), 0);

    // Someone changes a weight behind lvsctl's back: status says degraded and why.
    ns.ipvsadm(&["-e", "-t", "10.19.70.166:15858", "-r", "10.18.68.188:15858", "-g", "-w", "7"]);
    let out = ns.lvsctl(&["director", "status"]);
    let (text, _) = texts(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert!(text.contains("real server 10.18.68.188:15858 of tcp 10.19.70.166:15858 differs"), "{text}");

    // A config with a second service, then without the first: only that changes.
    let dir = tempdir();
    let cfg = dir.join("two.toml");
    std::fs::write(
        &cfg,
        format!(
            "[director]\niface = \"{IF}\"\n\
             [[director.service]]\nvip = \"{VIP}\"\nport = {PORT}\nreal = [\"10.18.68.186,weight=3\", \"10.18.68.188\"]\n\
             [[director.service]]\nvip = \"{VIP}\"\nport = 53\nprotocol = \"udp\"\nscheduler = \"wlc\"\nreal = [\"10.18.68.186\"]\n"
        ),
    )
    .unwrap();
    let out = ns.lvsctl_ok(&["director", "start", "--config", cfg.to_str().unwrap()]);
    let got = changes(&out);
    assert_eq!(
        got[..3],
        [
            "edit real server 10.18.68.188:15858 of tcp 10.19.70.166:15858 (Route, weight 1)",
            "add service udp 10.19.70.166:53 (wlc)",
            "add real server 10.18.68.186:53 to udp 10.19.70.166:53 (Route, weight 1)",
        ],
        "{out}"
    );
    assert_eq!(got.len(), 4, "{out}");
    std::fs::write(
        &cfg,
        format!(
            "[director]\niface = \"{IF}\"\n\
             [[director.service]]\nvip = \"{VIP}\"\nport = 53\nprotocol = \"udp\"\nscheduler = \"wlc\"\nreal = [\"10.18.68.186\"]\n"
        ),
    )
    .unwrap();
    let out = ns.lvsctl_ok(&["director", "start", "--config", cfg.to_str().unwrap()]);
    assert_eq!(changes(&out)[0], "delete service tcp 10.19.70.166:15858", "{out}");
    assert_eq!(changes(&out).len(), 2, "{out}");
    assert_eq!(ns.ipvsadm_save(), "-A -u 10.19.70.166:53 -s wlc\n-a -u 10.19.70.166:53 -r 10.18.68.186:53 -g -w 1\n");
    ns.lvsctl_ok(&["director", "stop"]);
    assert_eq!(ns.ipvsadm_save(), "");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_foreign_service_and_address_survive() {
    let ns = director_host();
    // Before lvsctl: someone else's service, and the VIP already on the interface.
    ns.ipvsadm(&["-A", "-t", "10.0.0.1:80", "-s", "wlc"]);
    ns.ipvsadm(&["-a", "-t", "10.0.0.1:80", "-r", "10.18.68.190:80", "-g", "-w", "2"]);
    ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", IF]);
    let before = ns.snapshot(&[IF]);

    // Taking over the foreign service is refused, and nothing changes.
    let out = ns.lvsctl(&["director", "start", "--vip", "10.0.0.1", "--port", "80", "--iface", IF]);
    let (o, e) = texts(&out);
    assert_eq!(code(&out), 2, "{o}{e}");
    assert_eq!(e, "lvsctl: virtual service tcp 10.0.0.1:80 already exists and lvsctl did not create it: delete it first (ipvsadm -D -t 10.0.0.1:80) or leave it out\n");
    assert_eq!(ns.snapshot(&[IF]), before);
    assert_eq!(code(&ns.lvsctl(&["director", "status"])), 3);

    let out = ns.lvsctl_ok(&seed_start_args());
    assert!(!out.contains("added"), "the VIP was already there: {out}");
    assert!(ns.ipvsadm_save().starts_with("-A -t 10.0.0.1:80 -s wlc\n"));
    let out = ns.lvsctl_ok(&["director", "stop"]);
    assert!(!out.contains("removed"), "{out}");
    assert!(!out.contains("10.0.0.1:80"), "{out}");
    assert_eq!(ns.snapshot(&[IF]), before);
}

/// Another tool's service of a protocol IPVS does not balance (ESP, 50), with
/// a destination of a forwarding method the library does not know (5): the
/// kernel's generic netlink interface takes both. lvsctl lists and saves them
/// as ipvsadm 1.31 does, the library dumps them, and lvsctl keeps managing
/// its own services beside them.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_and_admin_work_beside_an_unknown_protocol_service() {
    use ipvs_sys::constants::AF_INET;
    use ipvs_sys::{DestAttr, IpvsAttr, IpvsCmd, IpvsMessage, ServiceAttr, ServiceFlags};
    let ns = director_host();
    let esp = || {
        vec![
            ServiceAttr::AddressFamily(AF_INET),
            ServiceAttr::Protocol(50),
            ServiceAttr::Address("10.0.0.50".parse::<std::net::IpAddr>().unwrap().into()),
            ServiceAttr::Port(0),
        ]
    };
    ns.run(move || {
        let mut nl = lvsctl_tests::rawnl::RawIpvs::open();
        let mut svc = esp();
        svc.extend([
            ServiceAttr::SchedName("rr".into()),
            ServiceAttr::Flags(ServiceFlags { flags: 0, mask: u32::MAX }),
            ServiceAttr::Timeout(0),
            ServiceAttr::Netmask(u32::MAX),
        ]);
        nl.request(&IpvsMessage::new(IpvsCmd::NewService, vec![IpvsAttr::Service(svc)])).expect("an ESP service");
        let dest = vec![
            DestAttr::Address("10.18.68.190".parse::<std::net::IpAddr>().unwrap().into()),
            DestAttr::Port(0),
            DestAttr::AddressFamily(AF_INET),
            DestAttr::FwdMethod(5),
            DestAttr::Weight(3),
            DestAttr::UpperThreshold(0),
            DestAttr::LowerThreshold(0),
        ];
        nl.request(&IpvsMessage::new(IpvsCmd::NewDest, vec![IpvsAttr::Service(esp()), IpvsAttr::Dest(dest)]))
            .expect("a destination with forwarding method 5");
    });
    let saved = ns.ipvsadm(&["-Sn"]);
    assert!(saved.contains("--xxx-service"), "{saved}");
    assert_eq!(ns.lvsctl_ok(&["save"]), saved);
    assert_eq!(ns.lvsctl_ok(&["list"]), ns.ipvsadm(&["-Ln"]));
    // The library's dump holds it as values of their own.
    let table = ns.run(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
            ipvs::Ipvs::connect().await.expect("IPVS").dump().await.expect("a dump with an ESP service")
        })
    });
    assert_eq!(table.len(), 1);
    let (s, d) = &table[0];
    assert_eq!(
        s.service.key,
        ipvs::ServiceKey::Inet { protocol: ipvs::Protocol::Other(50), addr: "10.0.0.50:0".parse().unwrap() }
    );
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].destination.forward, ipvs::Forward::Other(5));
    assert_eq!(d[0].destination.weight, 3);

    // lvsctl manages its own services beside it, and never touches it.
    let out = ns.lvsctl_ok(&seed_start_args());
    assert!(out.contains("add service"), "{out}");
    assert_eq!(code(&ns.lvsctl(&["director", "status"])), 0);
    let saved = ns.ipvsadm(&["-Sn"]);
    assert!(saved.contains("--xxx-service 10.0.0.50:0"), "{saved}");
    assert_eq!(ns.lvsctl_ok(&["save"]), saved);
    ns.lvsctl_ok(&["director", "stop"]);
    let saved = ns.ipvsadm(&["-Sn"]);
    assert_eq!(saved.lines().count(), 2, "only the ESP service and its destination are left: {saved}");
    assert_eq!(ns.lvsctl_ok(&["save"]), saved);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(lvsctl_tests::unique("lvsctl-test-"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_bad_input_changes_nothing() {
    let ns = director_host();
    let dir = tempdir();
    let bad_toml = dir.join("bad.toml");
    std::fs::write(
        &bad_toml,
        "[director]\niface = \"enp1s0\"\n[[director.service]]\nvip = \"10.19.70.1666\"\nport = 15858\n",
    )
    .unwrap();
    let bad_sched = dir.join("sched.toml");
    std::fs::write(
        &bad_sched,
        "[director]\niface = \"enp1s0\"\n[[director.service]]\nvip = \"10.19.70.166\"\nport = 15858\nscheduler = \"fastest\"\n",
    )
    .unwrap();
    let bad_s = bad_toml.to_str().unwrap().to_owned();
    let sched_s = bad_sched.to_str().unwrap().to_owned();
    let dir_s = dir.to_str().unwrap().to_owned();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["director", "start"].iter().map(|s| s.to_string()).collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let seed = ["--vip", VIP, "--port", PORT, "--iface", IF, "--real", "10.18.68.186"];
    let with = |more: &[&str]| -> Vec<String> {
        let mut v = seed.to_vec();
        v.extend_from_slice(more);
        base(&v)
    };
    let cases: Vec<(Vec<String>, String)> = vec![
        (base(&["--vip", "10.19.70.1666", "--port", PORT, "--iface", IF]), "malformed VIP \"10.19.70.1666\"".into()),
        (with(&["--real", "10.18.68"]), "malformed real server address \"10.18.68\"".into()),
        (with(&["--scheduler", "fastest"]), "unknown scheduler \"fastest\"".into()),
        (with(&["--real", "10.18.68.187,weight=65536"]), "weight 65536 is out of range 0..65535".into()),
        (
            base(&["--vip", VIP, "--port", PORT, "--iface", "nosuch0", "--real", "10.18.68.186"]),
            "no such interface nosuch0".into(),
        ),
        (with(&["--real", "2001:db8::186"]), "address families must match".into()),
        (base(&["--vip", VIP, "--port", "0", "--iface", IF]), "port 0 (every port) needs persistence".into()),
        (base(&["--config", "/nonexistent/lvsctl.toml"]), "cannot read config file /nonexistent/lvsctl.toml".into()),
        (base(&["--config", &dir_s]), format!("cannot read config file {dir_s}")),
        (base(&["--config", &bad_s]), format!("{bad_s}:4:7: invalid IP address syntax")),
        (base(&["--config", &sched_s]), format!("{sched_s}:6:13: unknown scheduler \"fastest\"")),
    ];
    let before = ns.snapshot(&[IF]);
    for (args, want) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ns.lvsctl(&a);
        let (o, e) = texts(&out);
        assert_eq!(code(&out), 2, "{a:?}: {o}{e}");
        assert!(e.contains(&want), "{a:?}: stderr {e:?} lacks {want:?}");
        assert!(!e.contains("panicked") && !e.contains("RUST_BACKTRACE"), "{a:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{a:?}: one line on stderr, got {e:?}");
        assert!(e.starts_with("lvsctl: "), "{e}");
        assert_eq!(o, "", "{a:?}: nothing on stdout");
        assert_eq!(ns.snapshot(&[IF]), before, "{a:?} changed the host");
        assert_eq!(code(&ns.lvsctl(&["director", "status"])), 3, "{a:?} left a state file");
    }
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_not_root_exits_4() {
    require_privileged();
    use std::os::unix::process::CommandExt;
    for args in [
        vec!["director", "start", "--vip", VIP, "--port", PORT, "--iface", "lo", "--real", "10.18.68.186"],
        vec!["director", "stop"],
        vec!["realserver", "start", "--vip", VIP],
        vec!["realserver", "stop"],
    ] {
        // As nobody, in the test process's own namespace: it must refuse before touching anything.
        let out = run(std::process::Command::new(lvsctl_bin()).args(&args).uid(65534).gid(65534));
        let (o, e) = texts(&out);
        assert_eq!(code(&out), 4, "{args:?}: {o}{e}");
        assert!(e.contains("must be run as root"), "{args:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
    // status cannot read IPVS as nobody: 4 (LSB "insufficient privilege"), not 3.
    let out = run(std::process::Command::new(lvsctl_bin()).args(["director", "status"]).uid(65534).gid(65534));
    let (o, e) = texts(&out);
    assert_eq!(code(&out), 4, "{o}{e}");
    assert!(e.contains("permission denied"), "{e}");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_concurrent_starts_are_serialised() {
    let ns = director_host();
    let name = ns.name.clone();
    // Eight runs at once with different weights: each must see the state the
    // previous one wrote (else one would find "its" service and refuse it).
    let handles: Vec<_> = (1..=8)
        .map(|w| {
            let name = name.clone();
            std::thread::spawn(move || {
                let real = format!("10.18.68.186,weight={w}");
                let out = run(std::process::Command::new(lvsctl_bin()).args([
                    "--netns", &name, "director", "start", "--vip", VIP, "--port", PORT, "--iface", IF, "--real", &real,
                ]));
                (w, out)
            })
        })
        .collect();
    for h in handles {
        let (w, out) = h.join().unwrap();
        assert_eq!(code(&out), 0, "run with weight {w}: {:?}", texts(&out));
    }
    let save = ns.ipvsadm_save();
    assert_eq!(save.lines().count(), 2, "{save}");
    assert_eq!(code(&ns.lvsctl(&["director", "status"])), 0);
    ns.lvsctl_ok(&["director", "stop"]);
    assert_eq!(ns.ipvsadm_save(), "");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_ipv6_vip_and_realserver_ipv6() {
    let ns = director_host();
    let vip6 = "2001:db8::166";
    let before_sysctls = ns.snapshot(&[IF]).sysctls;
    let out = ns.lvsctl_ok(&[
        "director",
        "start",
        "--vip",
        vip6,
        "--port",
        "80",
        "--iface",
        IF,
        "--real",
        "[2001:db8::186]:80",
        "--real",
        "2001:db8::187,weight=2",
    ]);
    assert!(out.contains(&format!("added {vip6}/128 to {IF}")), "{out}");
    assert_eq!(
        ns.ipvsadm_save(),
        "-A -t [2001:db8::166]:80 -s rr\n\
         -a -t [2001:db8::166]:80 -r [2001:db8::186]:80 -g -w 1\n\
         -a -t [2001:db8::166]:80 -r [2001:db8::187]:80 -g -w 2\n"
    );
    assert!(ns.ip(&["-6", "-o", "addr", "show", "dev", IF]).contains(&format!("{vip6}/128")));
    assert_eq!(code(&ns.lvsctl(&["director", "status"])), 0);

    // A real server with only an IPv6 VIP: /128 on lo, no ARP sysctls (IPv6 has no ARP).
    let out = ns.lvsctl_ok(&["realserver", "start", "--vip", vip6, "--iface", IF]);
    assert_eq!(out, format!("realserver: added {vip6}/128 to lo\nrealserver: running (1 VIPs on lo)\n"));
    assert!(ns.ip(&["-6", "-o", "addr", "show", "dev", "lo"]).contains(&format!("{vip6}/128")));
    assert_eq!(ns.snapshot(&[IF]).sysctls, before_sysctls);
    assert_eq!(code(&ns.lvsctl(&["realserver", "status"])), 0);

    ns.lvsctl_ok(&["realserver", "stop"]);
    ns.lvsctl_ok(&["director", "stop"]);
    assert_eq!(ns.ipvsadm_save(), "");
    assert!(!ns.ip(&["-6", "-o", "addr", "show"]).contains(vip6));
    assert_eq!(code(&ns.lvsctl(&["director", "status"])), 3);
    assert_eq!(code(&ns.lvsctl(&["realserver", "status"])), 3);
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_kernel_refusal_changes_nothing() {
    let ns = director_host();
    // A scheduler lvsctl knows but this kernel lacks, found by asking the
    // kernel (Debian's 6.1 has no twos; kernels from 6.7 do).
    let missing = ["twos", "mh", "ovf", "fo", "nq", "sed", "dh", "lblcr", "lblc"]
        .into_iter()
        .find(|s| {
            let probe = ns.exec("ipvsadm", &["-A", "-t", "10.0.0.9:1", "-s", s]);
            if probe.status.success() {
                ns.ipvsadm(&["-D", "-t", "10.0.0.9:1"]);
            }
            !probe.status.success()
        })
        .expect("TEST PRECONDITION: this kernel has every scheduler lvsctl knows; no refusal to provoke");
    let before = ns.snapshot(&[IF]);
    // Two services: the kernel takes the first and refuses the second; the
    // first is undone.
    let dir = tempdir();
    let cfg = dir.join("two.toml");
    std::fs::write(
        &cfg,
        format!(
            "[director]\niface = \"{IF}\"\n\
             [[director.service]]\nvip = \"{VIP}\"\nport = {PORT}\nreal = [\"10.18.68.186\"]\n\
             [[director.service]]\nvip = \"{VIP}\"\nport = 80\nscheduler = \"{missing}\"\nreal = [\"10.18.68.186\"]\n"
        ),
    )
    .unwrap();
    let out = ns.lvsctl(&["director", "start", "--config", cfg.to_str().unwrap()]);
    let (o, e) = texts(&out);
    assert_eq!(code(&out), 1, "{o}{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains(&format!("scheduler \"{missing}\" not found in the kernel")), "{e}");
    assert!(o.contains("undone: delete service tcp 10.19.70.166:15858"), "{o}");
    assert_eq!(ns.snapshot(&[IF]), before, "a refused start must leave the host as it was");
    assert_eq!(code(&ns.lvsctl(&["director", "status"])), 3, "and leave no state behind");
    let mut args = seed_start_args();
    args.extend(["--scheduler", missing]);

    // The same refusal while reconciling a running director: the running
    // configuration stays, and status still says running.
    ns.lvsctl_ok(&seed_start_args());
    let running = ns.snapshot(&[IF]);
    let out = ns.lvsctl(&args);
    assert_eq!(code(&out), 1, "{:?}", texts(&out));
    assert_eq!(ns.snapshot(&[IF]), running);
    assert_eq!(code(&ns.lvsctl(&["director", "status"])), 0);
    ns.lvsctl_ok(&["director", "stop"]);
    assert_eq!(ns.snapshot(&[IF]), before);
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_config_with_every_service_and_real_server_option() {
    // Fwmark (v4 and v6), scheduler flags, persistence granularity, pe,
    // one-packet, thresholds and every tunnel type, from one config file: the
    // kernel (read back by ipvsadm, an independent reader) must hold exactly them.
    let ns = director_host();
    ns.ip(&["-6", "addr", "add", "2001:db8::185/64", "dev", IF, "nodad"]);
    let dir = tempdir();
    let cfg = dir.join("full.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[director]
iface = "{IF}"

[[director.service]]
vip = "{VIP}"
port = {PORT}
scheduler = "sh"
sched_flags = ["sh-port", "sh-fallback"]
persistence = 600
persistence_netmask = "255.255.255.0"
pe = "sip"
forward = "tunnel"
[[director.service.real]]
addr = "10.18.68.186"
weight = 5
upper_threshold = 100
lower_threshold = 10
tunnel = "gue"
tunnel_port = 6080
tunnel_checksum = "remcsum"
[[director.service.real]]
addr = "10.18.68.187"
tunnel = "gre"
tunnel_checksum = "csum"
[[director.service.real]]
addr = "10.18.68.188"

[[director.service]]
vip = "10.19.70.167"
fwmark = 7
scheduler = "wrr"
one_packet = true
real = ["10.18.68.186,weight=2,upper=9,lower=3", "10.18.68.187,forward=nat"]

[[director.service]]
vip = "2001:db8::166"
fwmark = 8
persistence = 60
persistence_netmask = "64"
real = ["2001:db8::186"]
"#
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let out = ns.lvsctl_ok(&["director", "start", "--config", cfg_s]);
    assert!(out.contains("director: running (3 virtual services, 6 real servers)"), "{out}");
    let mut got: Vec<String> = ns.ipvsadm_save().lines().map(str::to_owned).collect();
    got.sort();
    let mut want: Vec<String> = [
        "-A -t 10.19.70.166:15858 -s sh -p 600 -M 255.255.255.0 --pe sip -b sh-fallback,sh-port",
        "-a -t 10.19.70.166:15858 -r 10.18.68.186:15858 -i -w 5 --tun-type gue --tun-port 6080 --tun-remcsum",
        "-a -t 10.19.70.166:15858 -r 10.18.68.187:15858 -i -w 1 --tun-type gre --tun-csum",
        "-a -t 10.19.70.166:15858 -r 10.18.68.188:15858 -i -w 1 --tun-type ipip",
        "-A -f 7 -s wrr -o",
        "-a -f 7 -r 10.18.68.186:0 -g -w 2",
        "-a -f 7 -r 10.18.68.187:0 -m -w 1",
        "-A -f 8 -6 -s rr -p 60 -M 64",
        "-a -f 8 -6 -r [2001:db8::186]:0 -g -w 1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.sort();
    assert_eq!(got, want);
    // Thresholds are not in ipvsadm's save format: read them from its list view.
    let thresholds = ns.ipvsadm(&["-Ln", "--thresholds"]);
    // "  -> ADDR:PORT  Uthreshold Lthreshold ActiveConn InActConn"
    let ul = |addr: &str| -> Vec<String> {
        let l = thresholds.lines().find(|l| l.contains(addr)).unwrap_or_default();
        l.split_whitespace().skip(2).take(2).map(str::to_owned).collect()
    };
    assert_eq!(ul("10.18.68.186:15858"), ["100", "10"], "{thresholds}");
    assert_eq!(ul("10.18.68.187:15858"), ["0", "0"], "{thresholds}");
    assert_eq!(ul("10.18.68.186:0"), ["9", "3"], "{thresholds}");
    // Both VIPs of the fwmark services are on the interface.
    assert!(ns.addrs4().contains("10.19.70.167/32"), "{}", ns.addrs4());
    assert!(ns.ip(&["-6", "-o", "addr", "show", "dev", IF]).contains("2001:db8::166/128"));
    // Idempotent, running, and stop removes all of it.
    let again = ns.lvsctl_ok(&["director", "start", "--config", cfg_s]);
    assert_eq!(changes(&again), ["already running as configured; nothing changed"], "{again}");
    assert_eq!(code(&ns.lvsctl(&["director", "status"])), 0);
    ns.lvsctl_ok(&["director", "stop"]);
    assert_eq!(ns.ipvsadm_save(), "");
    assert!(!ns.addrs4().contains("10.19.70.167"));
}

/// LVS-NAT end to end: the director sits between a public LAN (client, VIP)
/// and a private one (real servers, whose default route is the director). It
/// must route the real servers' replies back to the client, so `start` with
/// NAT turns IPv4 forwarding on, `status` shows it, and `stop` puts back what
/// the host had - 0 here, and an already-on forwarding stays on.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_nat_turns_forwarding_on_and_stop_restores_it() {
    require_privileged();
    let public = Lan::new();
    let private = Lan::new();
    let client = public.host("cli", "eth0", "10.0.0.2/24");
    let director = public.host("dir", "eth0", "10.0.0.1/24");
    private.attach(&director, "eth1", "192.168.7.1/24");
    let rs1 = private.host("rsa", "eth0", "192.168.7.11/24");
    let rs2 = private.host("rsb", "eth0", "192.168.7.12/24");
    for rs in [&rs1, &rs2] {
        rs.ip(&["route", "add", "default", "via", "192.168.7.1"]);
    }
    let _a = NameServer::start(&rs1, "0.0.0.0:8080".parse().unwrap(), "rs1");
    let _b = NameServer::start(&rs2, "0.0.0.0:8080".parse().unwrap(), "rs2");
    let vip: SocketAddr = "10.0.0.100:80".parse().unwrap();
    // `director start` with the real servers reached by NAT (on port 8080) or DR.
    let start_args = |nat: bool| {
        let mut a = vec!["director", "start", "--vip", "10.0.0.100", "--port", "80", "--iface", "eth0"];
        if nat {
            a.extend(["--forward", "nat", "--real", "192.168.7.11:8080", "--real", "192.168.7.12:8080"]);
        } else {
            a.extend(["--real", "192.168.7.11", "--real", "192.168.7.12"]);
        }
        a
    };
    let start = start_args(true);

    // A new namespace does not forward.
    assert_eq!(director.sysctl("all", "forwarding"), "0");
    let before = director.snapshot(&["eth0", "eth1"]);
    let out = director.lvsctl_ok(&start);
    assert!(out.contains("set /proc/sys/net/ipv4/conf/all/forwarding = 1 (was 0)"), "{out}");
    assert_eq!(director.sysctl("all", "forwarding"), "1");
    assert_eq!(director.sysctl("eth1", "forwarding"), "1");
    assert_eq!(
        director.ipvsadm_save(),
        "-A -t 10.0.0.100:80 -s rr\n\
         -a -t 10.0.0.100:80 -r 192.168.7.11:8080 -m -w 1\n\
         -a -t 10.0.0.100:80 -r 192.168.7.12:8080 -m -w 1\n"
    );
    // The data path through NAT: every answer comes back, from both.
    let names = ask_names(&client, vip, 6);
    assert!(names.iter().all(|n| n == "rs1" || n == "rs2"), "{names:?}");
    assert!(names.iter().any(|n| n == "rs1") && names.iter().any(|n| n == "rs2"), "{names:?}");

    let (c, v) = status_json(&director, "director");
    assert_eq!(c, 0, "{v}");
    assert_eq!(v["sysctls"][0]["path"], "/proc/sys/net/ipv4/conf/all/forwarding");
    assert_eq!((v["sysctls"][0]["value"].as_str(), v["sysctls"][0]["previous"].as_str()), (Some("1"), Some("0")));
    // Someone turning it off is a problem status names.
    director.set_sysctl("all", "forwarding", "0");
    let out = director.lvsctl(&["director", "status"]);
    let (text, _) = texts(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert!(text.contains("/proc/sys/net/ipv4/conf/all/forwarding is 0, want 1"), "{text}");
    // A second start puts it right, and only that.
    let out = director.lvsctl_ok(&start);
    assert!(out.contains("set /proc/sys/net/ipv4/conf/all/forwarding = 1 (was 0)"), "{out}");
    assert!(!out.contains("add"), "{out}");

    let out = director.lvsctl_ok(&["director", "stop"]);
    assert!(out.contains("restored /proc/sys/net/ipv4/conf/all/forwarding = 0 (was 1)"), "{out}");
    assert_eq!(director.snapshot(&["eth0", "eth1"]), before);
    assert_eq!(code(&director.lvsctl(&["director", "status"])), 3);

    // Forwarding already on (a router): start leaves it, stop leaves it on.
    director.set_sysctl("all", "forwarding", "1");
    let out = director.lvsctl_ok(&start);
    assert!(!out.contains("forwarding"), "{out}");
    assert_eq!(ask_names(&client, vip, 2).len(), 2);
    let out = director.lvsctl_ok(&["director", "stop"]);
    assert!(!out.contains("forwarding"), "{out}");
    assert_eq!(director.sysctl("all", "forwarding"), "1");
    // Direct routing needs no forwarding: a DR start does not record it.
    director.set_sysctl("all", "forwarding", "0");
    let dr = start_args(false);
    let out = director.lvsctl_ok(&dr);
    assert!(!out.contains("forwarding"), "{out}");
    let (_, v) = status_json(&director, "director");
    assert_eq!(v["sysctls"], serde_json::json!([]));
    director.lvsctl_ok(&["director", "stop"]);
    assert_eq!(director.sysctl("all", "forwarding"), "0");
}

/// Every `forwarding` (IPv4 and IPv6, every interface, `all` and `default`)
/// and the IPv4 `accept_redirects` of `all` and `default`, as `path=value`.
fn forwarding_snapshot(ns: &Netns) -> Vec<String> {
    ns.run(|| {
        let mut out = Vec::new();
        for root in ["/proc/sys/net/ipv4/conf", "/proc/sys/net/ipv6/conf"] {
            let mut ifaces: Vec<String> =
                std::fs::read_dir(root).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            ifaces.sort();
            for i in ifaces {
                let mut names = vec!["forwarding"];
                if root.contains("ipv4") && (i == "all" || i == "default") {
                    names.push("accept_redirects");
                }
                for n in names {
                    let p = format!("{root}/{i}/{n}");
                    out.push(format!("{p}={}", std::fs::read_to_string(&p).unwrap().trim()));
                }
            }
        }
        out
    })
}

/// Writing `conf/all/forwarding` makes the kernel set every interface's
/// `forwarding`, `default/forwarding` and (IPv4) `all/accept_redirects`.
/// After a NAT start and stop, each of them is as it was: an interface that
/// forwarded on its own still does, `accept_redirects` that was 0 is 0.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_nat_stop_restores_what_the_kernel_changed() {
    let ns = director_host();
    ns.ip(&["link", "add", "fw0", "type", "dummy"]);
    ns.ip(&["-6", "addr", "add", "2001:db8:68::185/64", "dev", IF, "nodad"]);
    ns.set_sysctl("fw0", "forwarding", "1");
    ns.set_sysctl("all", "accept_redirects", "0");
    ns.run(|| std::fs::write("/proc/sys/net/ipv6/conf/fw0/forwarding", "1").unwrap());
    let before = forwarding_snapshot(&ns);
    assert!(before.contains(&"/proc/sys/net/ipv4/conf/all/forwarding=0".to_owned()), "{before:?}");
    assert!(before.contains(&"/proc/sys/net/ipv4/conf/fw0/forwarding=1".to_owned()), "{before:?}");

    let dir = tempdir();
    let cfg = dir.join("nat.toml");
    std::fs::write(
        &cfg,
        format!(
            "[director]\niface = \"{IF}\"\n\
             [[director.service]]\nvip = \"{VIP}\"\nport = 80\nforward = \"nat\"\nreal = [\"10.18.68.186:8080\"]\n\
             [[director.service]]\nvip = \"2001:db8:68::100\"\nport = 80\nforward = \"nat\"\nreal = [\"[2001:db8:68::186]:8080\"]\n"
        ),
    )
    .unwrap();
    ns.lvsctl_ok(&["director", "start", "--config", cfg.to_str().unwrap()]);
    let during = forwarding_snapshot(&ns);
    for on in [
        "/proc/sys/net/ipv4/conf/all/forwarding=1",
        "/proc/sys/net/ipv4/conf/lo/forwarding=1",
        "/proc/sys/net/ipv4/conf/default/forwarding=1",
        "/proc/sys/net/ipv4/conf/all/accept_redirects=0",
        "/proc/sys/net/ipv6/conf/all/forwarding=1",
        "/proc/sys/net/ipv6/conf/default/forwarding=1",
    ] {
        assert!(during.contains(&on.to_owned()), "{on} not in {during:?}");
    }
    // status names the two sysctls start set, not what the kernel did.
    let (c, v) = status_json(&ns, "director");
    assert_eq!(c, 0, "{v}");
    let paths: Vec<&str> = v["sysctls"].as_array().unwrap().iter().map(|s| s["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/proc/sys/net/ipv4/conf/all/forwarding", "/proc/sys/net/ipv6/conf/all/forwarding"]);
    // A second start changes nothing and keeps the values to restore.
    let out = ns.lvsctl_ok(&["director", "start", "--config", cfg.to_str().unwrap()]);
    assert!(out.contains("nothing changed"), "{out}");

    ns.lvsctl_ok(&["director", "stop"]);
    assert_eq!(forwarding_snapshot(&ns), before, "stop must put back every sysctl the kernel changed");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// The state folder and its lock are root's alone: an unprivileged user
/// cannot even open the lock (so cannot hold it and block every run), a
/// folder left open by an older version is closed, and a folder of another
/// user, or a symlink, is refused before anything changes.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_state_folder_is_roots_alone() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let ns = director_host();
    let dir = tempdir();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.join("state");
    let lvsctl = |state: &std::path::Path, args: &[&str]| {
        run(std::process::Command::new(lvsctl_bin())
            .args(["--netns", &ns.name])
            .args(args)
            .env("LVSCTL_STATE_DIR", state))
    };
    let ok = |args: &[&str]| {
        let out = lvsctl(&state, args);
        assert!(out.status.success(), "{args:?}: {:?}", texts(&out));
    };
    ok(&seed_start_args());
    let lock = state.join("lock");
    assert_eq!((mode(&state), mode(&lock)), (0o700, 0o600));
    for e in std::fs::read_dir(&state).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    // nobody (uid 65534) cannot open the lock.
    let nobody_reads = || {
        std::process::Command::new("cat")
            .arg(&lock)
            .uid(65534)
            .gid(65534)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(!nobody_reads(), "an unprivileged user could open the lock");

    // The modes an older version left (0755, 0644) are closed by the next run.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(&seed_start_args());
    assert_eq!((mode(&state), mode(&lock)), (0o700, 0o600));
    assert!(!nobody_reads());

    // Another user's folder, or a symlink to one, is refused; nothing changes.
    let running = ns.snapshot(&[IF]);
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    for args in [seed_start_args(), vec!["director", "stop"]] {
        let out = lvsctl(&state, &args);
        let (_, e) = texts(&out);
        assert_eq!(code(&out), 1, "{args:?}: {e}");
        assert!(e.contains("refusing the state folder") && e.contains("owned by uid 65534"), "{e}");
    }
    assert_eq!(ns.snapshot(&[IF]), running);
    std::os::unix::fs::chown(&state, Some(0), Some(0)).unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&state, &link).unwrap();
    let out = lvsctl(&link, &["director", "stop"]);
    assert_eq!(code(&out), 1, "{:?}", texts(&out));
    assert!(texts(&out).1.contains("symbolic link"), "{:?}", texts(&out));
    assert_eq!(ns.snapshot(&[IF]), running);

    ok(&["director", "stop"]);
    assert_eq!(ns.ipvsadm_save(), "");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--netns /proc/PID/ns/net`: the namespace of a process, given by path.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_netns_given_as_a_process_path() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let ns = director_host();
    let nsfile = std::fs::File::open(ns.path()).unwrap();
    let fd = nsfile.as_raw_fd();
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("600");
    // SAFETY: setns is async-signal-safe; the child enters the namespace before exec.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut sleeper = cmd.spawn().unwrap();
    let path = format!("/proc/{}/ns/net", sleeper.id());
    let by_path = |args: &[&str]| run(std::process::Command::new(lvsctl_bin()).args(["--netns", &path]).args(args));
    let out = by_path(&seed_start_args());
    assert!(out.status.success(), "{:?}", texts(&out));
    assert!(ns.ipvsadm_save().contains("-A -t 10.19.70.166:15858 -s rr"), "{}", ns.ipvsadm_save());
    assert!(ns.addrs4().contains(VIP), "{}", ns.addrs4());
    assert!(!lvsctl_tests::ip(&["-4", "-o", "addr", "show"]).contains(VIP), "the VIP went on the test's own namespace");
    assert_eq!(code(&by_path(&["director", "status"])), 0);
    // The same namespace by name sees the same director.
    assert_eq!(code(&ns.lvsctl(&["director", "status"])), 0);
    let out = by_path(&["director", "stop"]);
    assert!(out.status.success(), "{:?}", texts(&out));
    assert_eq!(ns.ipvsadm_save(), "");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// Where a `director start` killed with SIGKILL had got to, as seen from
/// outside: its state file, the configured services in the kernel, the VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CrashPhase {
    BeforeAnything,
    StateWrittenNothingApplied,
    StateWrittenTablePartlyBuilt,
    TableBuiltNoVip,
    VipsAdded,
    Completed,
}

/// A large config for the crash test: 10 VIPs x 30 ports = 300 services with
/// 4 real servers each, and the sorted `ipvsadm -Sn` lines it must produce.
fn crash_config(dir: &std::path::Path) -> (std::path::PathBuf, Vec<String>, Vec<String>, Vec<String>) {
    let vips: Vec<String> = (1..=10).map(|i| format!("10.19.71.{i}")).collect();
    let reals = ["10.18.68.10", "10.18.68.11", "10.18.68.12", "10.18.68.13"];
    let mut toml = format!("[director]\niface = \"{IF}\"\n");
    let (mut services, mut lines) = (Vec::new(), Vec::new());
    for vip in &vips {
        for port in 1000..1030 {
            let reals_toml: Vec<String> = reals.iter().map(|r| format!("\"{r}\"")).collect();
            toml +=
                &format!("[[director.service]]\nvip = \"{vip}\"\nport = {port}\nreal = [{}]\n", reals_toml.join(", "));
            let svc = format!("-A -t {vip}:{port} -s rr");
            lines.push(svc.clone());
            services.push(svc);
            for r in reals {
                lines.push(format!("-a -t {vip}:{port} -r {r}:{port} -g -w 1"));
            }
        }
    }
    let cfg = dir.join("big.toml");
    std::fs::write(&cfg, toml).unwrap();
    (cfg, services, lines, vips)
}

/// Lines of `ipvsadm -Sn`, sorted.
fn sorted_lines(save: &str) -> Vec<String> {
    let mut l: Vec<String> = save.lines().map(str::to_owned).collect();
    l.sort();
    l
}

/// `director start` writes its state before it changes anything, then
/// builds the IPVS table, then adds the VIPs, then rewrites its state. A
/// SIGKILL at any of these points must leave a host that `director stop`
/// cleans completely (a foreign service untouched) and that a new
/// `director start` brings to exactly the configured table.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn director_crash_at_any_point_stop_cleans_and_start_converges() {
    use std::process::{Command, Stdio};

    let ns = director_host();
    let dir = tempdir();
    let state = dir.join("state");
    let (cfg, services, expected_lines, vips) = crash_config(&dir);
    let cfg_s = cfg.to_str().unwrap().to_owned();
    // Entries (services and real servers) start must create.
    let total = expected_lines.len();
    assert_eq!(total, services.len() * 5);

    // Someone else's service, there before lvsctl and after every stop.
    let foreign = "-A -t 10.99.0.1:80 -s rr";
    ns.ipvsadm(&["-A", "-t", "10.99.0.1:80", "-s", "rr"]);
    let mut expected = expected_lines.clone();
    expected.push(foreign.to_owned());
    expected.sort();

    let lvsctl = |args: &[&str]| {
        run(Command::new(lvsctl_bin()).args(["--netns", &ns.name]).args(args).env("LVSCTL_STATE_DIR", &state))
    };
    let state_file_exists = || {
        std::fs::read_dir(&state).is_ok_and(|rd| {
            rd.filter_map(Result::ok).any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("director-netns") && n.ends_with(".json")
            })
        })
    };
    // The kernel's table is polled through /proc of a thread parked in the
    // namespace: far cheaper than running ipvsadm, so the polling sees the
    // table between the chunks of start's batch.
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (park_tx, park_rx) = std::sync::mpsc::channel::<()>();
    let ns_path = ns.path();
    let parked = std::thread::spawn(move || {
        enter(&ns_path);
        // SAFETY: gettid has no preconditions.
        #[allow(unsafe_code)]
        let tid = unsafe { libc::gettid() };
        tid_tx.send(tid).unwrap();
        let _ = park_rx.recv();
    });
    let ip_vs = format!("/proc/{}/task/{}/net/ip_vs", std::process::id(), tid_rx.recv().unwrap());
    // Services and real servers in /proc/net/ip_vs, the foreign service
    // (10.99.0.1:80, which has no real server) left out.
    let configured_present = || {
        let t = std::fs::read_to_string(&ip_vs).expect("read ip_vs of the namespace");
        t.lines()
            .filter(|l| {
                (l.starts_with("TCP ") && !l.contains("0A630001:0050"))
                    || (l.starts_with("  -> ") && !l.contains("RemoteAddress"))
            })
            .count()
    };
    let vip_present = || {
        let a = ns.ip(&["-4", "-o", "addr", "show", "dev", IF]);
        vips.iter().any(|v| a.contains(&format!(" {v}/32 ")))
    };

    // The points to kill at: each a condition polled while start runs.
    type Cond<'a> = Box<dyn Fn() -> bool + 'a>;
    let targets: Vec<(&str, Cond)> = vec![
        ("immediately after spawn", Box::new(|| true)),
        ("as soon as the state file exists", Box::new(state_file_exists)),
        ("as soon as a configured entry exists", Box::new(|| configured_present() > 0)),
        ("as soon as half the entries exist", Box::new(|| configured_present() >= total / 2)),
        ("as soon as a VIP exists", Box::new(vip_present)),
    ];

    // Start, wait for `cond` (or for start to finish on its own), SIGKILL,
    // and say where it had got to.
    let crash = |cond: &Cond| -> CrashPhase {
        let mut child = Command::new(lvsctl_bin())
            .args(["--netns", &ns.name, "director", "start", "--config", &cfg_s])
            .env("LVSCTL_STATE_DIR", &state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn lvsctl director start");
        let mut finished = false;
        loop {
            if cond() {
                break;
            }
            if child.try_wait().expect("try_wait").is_some() {
                finished = true;
                break;
            }
        }
        if !finished {
            child.kill().expect("SIGKILL lvsctl");
        }
        let status = child.wait().expect("wait");
        if finished || status.code().is_some() {
            return CrashPhase::Completed;
        }
        let (st, n, vip) = (state_file_exists(), configured_present(), vip_present());
        match (st, n, vip) {
            (_, _, true) => CrashPhase::VipsAdded,
            (false, 0, false) => CrashPhase::BeforeAnything,
            (true, 0, false) => CrashPhase::StateWrittenNothingApplied,
            (_, n, false) if n == total => CrashPhase::TableBuiltNoVip,
            (true, _, false) => CrashPhase::StateWrittenTablePartlyBuilt,
            (false, n, false) => {
                panic!("{n} services in the kernel but no state file: the state was not written first")
            }
        }
    };
    let assert_clean = |what: &str| {
        let save = ns.ipvsadm_save();
        assert_eq!(sorted_lines(&save), [foreign.to_owned()], "{what}: ipvsadm -Sn after stop:\n{save}");
        assert!(!vip_present(), "{what}: a VIP is left on {IF}: {}", ns.addrs4());
        assert!(!state_file_exists(), "{what}: the state file is left in {}", state.display());
    };

    let mut hit = Vec::new();
    for (name, cond) in &targets {
        // (a) killed, then stopped: nothing of lvsctl's is left.
        let phase = crash(cond);
        println!("kill {name}: {phase:?}");
        hit.push(phase);
        let out = lvsctl(&["director", "stop"]);
        assert_eq!(code(&out), 0, "stop after kill {name} ({phase:?}): {:?}", texts(&out));
        assert_clean(&format!("stop after kill {name} ({phase:?})"));

        // (b) killed, then started again: exactly the configured table.
        let phase = crash(cond);
        println!("kill {name}, then start: {phase:?}");
        hit.push(phase);
        let out = lvsctl(&["director", "start", "--config", &cfg_s]);
        assert_eq!(code(&out), 0, "start after kill {name} ({phase:?}): {:?}", texts(&out));
        assert!(
            sorted_lines(&ns.ipvsadm_save()) == expected,
            "start after kill {name} ({phase:?}) did not converge to the configured table"
        );
        for v in &vips {
            assert!(ns.addrs4().contains(&format!("{v}/32")), "start after kill {name}: VIP {v} missing");
        }
        let out = lvsctl(&["director", "status"]);
        assert_eq!(code(&out), 0, "status after kill {name} ({phase:?}) and start: {:?}", texts(&out));
        let out = lvsctl(&["director", "stop"]);
        assert_eq!(code(&out), 0, "stop after kill {name} ({phase:?}) and start: {:?}", texts(&out));
        assert_clean(&format!("stop after kill {name} ({phase:?}) and start"));
    }
    drop(park_tx);
    parked.join().unwrap();
    println!("phases hit: {hit:?}");
    for need in [CrashPhase::BeforeAnything, CrashPhase::StateWrittenTablePartlyBuilt] {
        assert!(hit.contains(&need), "no kill hit {need:?}; hit {hit:?}");
    }
}
