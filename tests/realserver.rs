//! Privileged tests of `lvsctl realserver` against the real kernel, each in
//! its own network namespaces: VIPs on `lo`, the ARP sysctls set and
//! restored to their exact previous values, status, bad input.

use lvsctl_tests::topology::*;
use lvsctl_tests::unique;

const VIP: &str = "10.19.70.166";

/// A host with a dotted interface name (like a VLAN `eth0.100`): the sysctl
/// path must use it as one component.
fn host(ifname: &str) -> Netns {
    let ns = Netns::new("rs");
    ns.add_veth(ifname, "peer0");
    ns.ip(&["addr", "add", "10.18.68.187/24", "dev", ifname]);
    ns
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn realserver_sysctls_restored_to_nonzero_prior_values_on_dotted_interface() {
    let ifname = "lan.100";
    let ns = host(ifname);
    // Prior values that are neither 0 nor what start sets.
    let prior = [
        ("all", "arp_ignore", "2"),
        ("all", "arp_announce", "1"),
        ("lo", "arp_ignore", "3"),
        ("lo", "arp_announce", "0"),
        (ifname, "arp_ignore", "8"),
        (ifname, "arp_announce", "1"),
    ];
    for (i, n, v) in prior {
        ns.set_sysctl(i, n, v);
    }
    ns.set_sysctl("default", "arp_ignore", "2");
    let before = ns.snapshot(&[ifname]);

    let out = ns.lvsctl_ok(&["realserver", "start", "--vip", VIP, "--iface", ifname]);
    assert!(out.contains("set /proc/sys/net/ipv4/conf/lan.100/arp_ignore = 1 (was 8)"), "{out}");
    for i in ["all", "lo", ifname] {
        assert_eq!(ns.sysctl(i, "arp_ignore"), "1", "{i}");
        assert_eq!(ns.sysctl(i, "arp_announce"), "2", "{i}");
    }
    assert_eq!(ns.sysctl("default", "arp_ignore"), "2", "default is not touched");
    assert!(ns.ip(&["-4", "-o", "addr", "show", "dev", "lo"]).contains(&format!("inet {VIP}/32")));

    let out = ns.lvsctl(&["realserver", "status", "--json"]);
    assert_eq!(code(&out), 0, "{:?}", texts(&out));
    let v: serde_json::Value = serde_json::from_str(&texts(&out).0).unwrap();
    let dotted = v["sysctls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == "/proc/sys/net/ipv4/conf/lan.100/arp_ignore")
        .expect("the dotted interface's sysctl")
        .clone();
    assert_eq!((dotted["value"].as_str(), dotted["previous"].as_str()), (Some("1"), Some("8")));

    let out = ns.lvsctl_ok(&["realserver", "stop"]);
    assert!(out.contains("restored /proc/sys/net/ipv4/conf/lan.100/arp_ignore = 8 (was 1)"), "{out}");
    assert_eq!(ns.snapshot(&[ifname]), before);
    for (i, n, v) in prior {
        assert_eq!(ns.sysctl(i, n), v, "{i}/{n}");
    }
    assert_eq!(code(&ns.lvsctl(&["realserver", "status"])), 3);
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn realserver_idempotent_degraded_and_preexisting_vip_stays() {
    let ns = host("enp1s0");
    // One VIP is on lo before start: stop must leave it.
    ns.ip(&["addr", "add", "10.19.70.167/32", "dev", "lo"]);
    let before = ns.snapshot(&["enp1s0"]);
    let args = ["realserver", "start", "--vip", VIP, "--vip", "10.19.70.167", "--iface", "enp1s0"];
    let first = ns.lvsctl_ok(&args);
    assert!(first.contains(&format!("added {VIP}/32 to lo")), "{first}");
    assert!(!first.contains("added 10.19.70.167"), "{first}");
    let snap = ns.snapshot(&["enp1s0"]);
    let second = ns.lvsctl_ok(&args);
    assert_eq!(second, "realserver: already running as configured; nothing changed\n");
    assert_eq!(ns.snapshot(&["enp1s0"]), snap);
    assert_eq!(code(&ns.lvsctl(&["realserver", "status"])), 0);

    // Behind lvsctl's back: a VIP goes, a sysctl changes. Status names both.
    ns.ip(&["addr", "del", &format!("{VIP}/32"), "dev", "lo"]);
    ns.set_sysctl("enp1s0", "arp_announce", "0");
    let out = ns.lvsctl(&["realserver", "status"]);
    let (text, _) = texts(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert!(text.starts_with("realserver: degraded (2 problems)\n"), "{text}");
    assert!(text.contains(&format!("VIP {VIP}/32 is not on lo")), "{text}");
    assert!(text.contains("/proc/sys/net/ipv4/conf/enp1s0/arp_announce is 0, want 2"), "{text}");
    // start repairs exactly that.
    let out = ns.lvsctl_ok(&args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "realserver: set /proc/sys/net/ipv4/conf/enp1s0/arp_announce = 2 (was 0)",
            "realserver: added 10.19.70.166/32 to lo",
            "realserver: running (2 VIPs on lo)"
        ]
    );
    assert_eq!(code(&ns.lvsctl(&["realserver", "status"])), 0);

    // Fewer VIPs: only the one start added goes.
    ns.lvsctl_ok(&["realserver", "start", "--vip", "10.19.70.167", "--iface", "enp1s0"]);
    assert!(!ns.addrs4().contains(&format!("{VIP}/32")));
    ns.lvsctl_ok(&["realserver", "stop"]);
    assert_eq!(ns.snapshot(&["enp1s0"]), before);
    assert!(ns.addrs4().contains("10.19.70.167/32"));
    assert_eq!(ns.lvsctl_ok(&["realserver", "stop"]), "realserver: not running; nothing to stop\n");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn realserver_config_file_with_both_roles() {
    let ns = host("enp1s0");
    let dir = std::env::temp_dir().join(unique("lvsctl-rs-"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("lvsctl.toml");
    // The shape of docs/configuration.md: both roles in one file, two services, realserver VIPs by default.
    std::fs::write(
        &cfg,
        "[director]\niface = \"enp1s0\"\n\
         [[director.service]]\nvip = \"10.19.70.166\"\nport = 15858\nreal = [\"10.18.68.186\", \"10.18.68.187\"]\n\
         [[director.service]]\nvip = \"10.19.70.168\"\nport = 80\nscheduler = \"wrr\"\npersistence = 300\n\
         [[director.service.real]]\naddr = \"10.18.68.186\"\nweight = 2\n\
         [realserver]\niface = \"enp1s0\"\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let before = ns.snapshot(&["enp1s0"]);
    ns.lvsctl_ok(&["director", "start", "--config", c]);
    ns.lvsctl_ok(&["realserver", "start", "--config", c]);
    assert_eq!(
        ns.ipvsadm_save(),
        "-A -t 10.19.70.166:15858 -s rr\n\
         -a -t 10.19.70.166:15858 -r 10.18.68.186:15858 -g -w 1\n\
         -a -t 10.19.70.166:15858 -r 10.18.68.187:15858 -g -w 1\n\
         -A -t 10.19.70.168:80 -s wrr -p 300\n\
         -a -t 10.19.70.168:80 -r 10.18.68.186:80 -g -w 2\n"
    );
    let lo = ns.ip(&["-4", "-o", "addr", "show", "dev", "lo"]);
    assert!(lo.contains("10.19.70.166/32") && lo.contains("10.19.70.168/32"), "{lo}");
    let en = ns.ip(&["-4", "-o", "addr", "show", "dev", "enp1s0"]);
    assert!(en.contains("10.19.70.166/32") && en.contains("10.19.70.168/32"), "{en}");
    assert_eq!(code(&ns.lvsctl(&["director", "status"])), 0);
    assert_eq!(code(&ns.lvsctl(&["realserver", "status"])), 0);
    ns.lvsctl_ok(&["realserver", "stop"]);
    ns.lvsctl_ok(&["director", "stop"]);
    assert_eq!(ns.snapshot(&["enp1s0"]), before);
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn realserver_bad_input_changes_nothing() {
    let ns = host("enp1s0");
    let dir = std::env::temp_dir().join(unique("lvsctl-rs-"));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[realserver]\niface = \"enp1s0\"\nvips = [\"10.19.70.166\", \"10.19.70\"]\n").unwrap();
    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "[realserver]\nvip = [\"10.19.70.166\"]\n").unwrap();
    let (b, t) = (bad.to_str().unwrap().to_owned(), typo.to_str().unwrap().to_owned());
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["--vip", "10.19.70.1666"], "malformed VIP \"10.19.70.1666\"".into()),
        (vec!["--vip", VIP, "--iface", "nosuch0"], "no such interface nosuch0".into()),
        (vec!["--vip", VIP, "--iface", "bad/name"], "invalid interface name \"bad/name\"".into()),
        (vec!["--iface", "enp1s0"], "no VIP given".into()),
        (vec!["--config", "/nonexistent.toml"], "cannot read config file /nonexistent.toml".into()),
        (vec!["--config", &b], format!("{b}:3:")),
        (vec!["--config", &t], format!("{t}:2:1: unknown field `vip`")),
    ];
    let before = ns.snapshot(&["enp1s0"]);
    for (extra, want) in cases {
        let mut a = vec!["realserver", "start"];
        a.extend(extra);
        let out = ns.lvsctl(&a);
        let (o, e) = texts(&out);
        assert_eq!(code(&out), 2, "{a:?}: {o}{e}");
        assert!(e.starts_with("lvsctl: ") && e.contains(&want), "{a:?}: stderr {e:?} lacks {want:?}");
        assert_eq!(e.lines().count(), 1, "{a:?}: {e:?}");
        assert_eq!(o, "", "{a:?}");
        assert_eq!(ns.snapshot(&["enp1s0"]), before, "{a:?} changed the host");
        assert_eq!(code(&ns.lvsctl(&["realserver", "status"])), 3, "{a:?} left a state file");
    }
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn realserver_state_found_whatever_lo_does() {
    // The state file is per network namespace; how lvsctl names the namespace
    // must not depend on lo being up (a new namespace has it down).
    let ns = host("enp1s0");
    ns.ip(&["link", "set", "lo", "down"]);
    let before = ns.snapshot(&["enp1s0"]);
    ns.lvsctl_ok(&["realserver", "start", "--vip", VIP, "--iface", "enp1s0"]);
    ns.ip(&["link", "set", "lo", "up"]);
    assert_eq!(code(&ns.lvsctl(&["realserver", "status"])), 0);
    ns.lvsctl_ok(&["realserver", "start", "--vip", VIP, "--iface", "enp1s0"]);
    ns.ip(&["link", "set", "lo", "down"]);
    let out = ns.lvsctl_ok(&["realserver", "stop"]);
    assert!(out.ends_with("realserver: stopped\n"), "{out}");
    assert_eq!(ns.snapshot(&["enp1s0"]), before);
}
