//! Privileged tests of the `https`, `udp` and `dns` checks of `lvsctl
//! director run`: on the LVS-DR topology of tests/daemon.rs (VIP
//! 10.19.70.166:15858, two real servers in namespaces), each check is
//! pointed at real test servers in the real servers' namespaces
//! (tests/support/check_servers.rs) and drives the weights in the kernel:
//! answering -> the configured weight, answering wrong or stopped -> 0,
//! answering again -> the configured weight.
//!
//! Checks run every 200 ms; every wait polls with a generous deadline.

// Only part of the daemon tests' network is used here.
#[allow(dead_code)]
#[path = "support/daemon_net.rs"]
mod net;
#[path = "support/check_servers.rs"]
mod servers;

use std::time::Duration;

use net::{Daemon, Net, Server, TestDir, PORT, REALS, VIP};
use servers::{dns_server, tls_server, udp_echo, Mode, Pki, Switched};

/// How long any awaited change may take (software emulation is slow).
const T: Duration = Duration::from_secs(60);

/// The weight the config gives both real servers.
const WEIGHT: u32 = 5;

/// Timing shared by the checks: quick, rise 2, fall 2. The timeout is
/// generous: a TLS handshake of a debug build under software emulation can
/// take over a second, and a check that times out in a test would make the
/// weights flap; a stopped or wrong server is seen at once regardless.
const TIMING: &str = r#"interval = "200ms", timeout = "10s", rise = 2, fall = 2"#;

/// The service VIP:PORT (tcp) with the first two real servers at [`WEIGHT`], and this check.
fn config(check: &str) -> String {
    format!(
        "[director]\niface = \"eth0\"\n\n[[director.service]]\nvip = \"{VIP}\"\nport = {PORT}\nscheduler = \"rr\"\n\
         real = [\"{},weight={WEIGHT}\", \"{},weight={WEIGHT}\"]\ncheck = {{ {check}, {TIMING} }}\n",
        REALS[0], REALS[1]
    )
}

/// The kernel's weights of the two real servers, in order.
fn weights(net: &Net) -> Option<Vec<u32>> {
    let w = net.weights()?;
    Some(REALS[..2].iter().map(|r| w.iter().find(|(a, _)| a == r).map_or(u32::MAX, |(_, w)| *w)).collect())
}

/// Start the daemon with `check`, the service's TCP servers answering, and
/// wait until the kernel has both real servers at [`WEIGHT`].
fn start(net: &Net, dir: &TestDir, check: &str) -> (Daemon, [Server; 2]) {
    let data = [Server::text(&net.reals[0], PORT, "rs1"), Server::text(&net.reals[1], PORT, "rs2")];
    let cfg = dir.write("lvsctl.toml", &config(check), 0o644);
    let d = Daemon::start(&net.director, dir, &cfg, &[]);
    d.wait_for("both real servers at the configured weight", T, || weights(net) == Some(vec![WEIGHT, WEIGHT]));
    (d, data)
}

/// The reason the daemon's health report gives for rs1 being down.
fn rs1_reason(d: &Daemon) -> String {
    let rep = d.report().expect("the health report");
    let want = format!("{}:{PORT}", REALS[0]);
    let reals = rep["services"][0]["real_servers"].as_array().cloned().unwrap_or_default();
    let r = reals.iter().find(|r| r["addr"] == want.as_str()).unwrap_or_else(|| panic!("no {want} in {rep}"));
    r["last_error"].as_str().unwrap_or_default().to_owned()
}

/// Switch rs1's check server to answering wrong, off, and good again, and see
/// the kernel follow: weight 0 (with `wrong` in the reason), 0 (with `off`),
/// then the configured weight; rs2 untouched throughout.
fn cycle(net: &Net, d: &Daemon, rs1: &Switched, wrong: &str, off: &str) {
    let drained = Some(vec![0, WEIGHT]);
    let both = Some(vec![WEIGHT, WEIGHT]);
    rs1.set(Mode::Wrong);
    d.wait_for("rs1 at weight 0 (answering wrong)", T, || weights(net) == drained);
    let why = rs1_reason(d);
    assert!(why.contains(wrong), "rs1 is down for {why:?}, expected {wrong:?}");
    assert_eq!(net.answers(4), vec!["rs2"; 4], "new connections go to the healthy real server only");
    rs1.set(Mode::Good);
    d.wait_for("rs1 back at its weight", T, || weights(net) == both);
    rs1.set(Mode::Off);
    d.wait_for("rs1 at weight 0 (stopped)", T, || weights(net) == drained);
    let why = rs1_reason(d);
    assert!(why.contains(off), "rs1 is down for {why:?}, expected {off:?}");
    rs1.set(Mode::Good);
    d.wait_for("rs1 back at its weight again", T, || weights(net) == both);
    let answers = net.answers(4);
    assert!(answers.contains(&"rs1".to_owned()) && answers.contains(&"rs2".to_owned()), "{answers:?}");
    let log = d.log();
    assert!(!log.contains("timed out"), "no check may time out here (it would make the weights flap): {log}");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn checks_https_verifies_the_certificate_and_drives_the_weight() {
    let net = Net::new();
    let dir = TestDir::new();
    let ca = Pki::new("lvsctl test CA", &["rs.lvsctl.test"]);
    let other = Pki::new("another CA", &["rs.lvsctl.test"]);
    let ca_file = dir.write("ca.pem", &ca.ca_pem, 0o644);
    let rs1 = tls_server(&net.reals[0], 8443, &ca, &other, "status: ok");
    let _rs2 = tls_server(&net.reals[1], 8443, &ca, &other, "status: ok");
    let check = format!(
        "type = \"https\", port = 8443, path = \"/health\", body = \"ok\", sni = \"rs.lvsctl.test\", ca_file = \"{}\"",
        ca_file.display()
    );
    let (d, _data) = start(&net, &dir, &check);
    cycle(&net, &d, &rs1, "unknown CA", "https connect to 10.18.68.186:8443: Connection refused");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn checks_udp_expects_a_reply_and_drives_the_weight() {
    let net = Net::new();
    let dir = TestDir::new();
    let rs1 = udp_echo(&net.reals[0], 15859);
    let _rs2 = udp_echo(&net.reals[1], 15859);
    let (d, _data) = start(&net, &dir, r#"type = "udp", port = 15859, payload = "ping", expect = "pong ping""#);
    // The ICMP port unreachable of a stopped server comes back as "connection refused".
    cycle(&net, &d, &rs1, "does not contain \"pong ping\"", "udp reply from 10.18.68.186:15859: Connection refused");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn checks_dns_asks_and_drives_the_weight() {
    let net = Net::new();
    let dir = TestDir::new();
    let addr = "192.0.2.7".parse().unwrap();
    let rs1 = dns_server(&net.reals[0], 5353, "www.lvsctl.test", addr);
    let _rs2 = dns_server(&net.reals[1], 5353, "www.lvsctl.test", addr);
    let (d, _data) = start(&net, &dir, r#"type = "dns", port = 5353, name = "www.lvsctl.test", answer = "192.0.2.7""#);
    cycle(
        &net,
        &d,
        &rs1,
        "answered SERVFAIL, expected NOERROR",
        "dns reply from 10.18.68.186:5353: Connection refused",
    );
}
