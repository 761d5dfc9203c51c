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

/// Timing shared by the checks: quick, rise 2, fall 2.
const TIMING: &str = r#"interval = "200ms", timeout = "1s", rise = 2, fall = 2"#;

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

/// Switch rs1's check server through wrong, off and good, and see the kernel
/// follow: weight 0, 0, then the configured weight; rs2 untouched. Returns
/// the daemon's log.
fn cycle(net: &Net, d: &Daemon, rs1: &Switched) -> String {
    let drained = Some(vec![0, WEIGHT]);
    let both = Some(vec![WEIGHT, WEIGHT]);
    rs1.set(Mode::Wrong);
    d.wait_for("rs1 at weight 0 (answering wrong)", T, || weights(net) == drained);
    assert_eq!(net.answers(4), vec!["rs2"; 4], "new connections go to the healthy real server only");
    rs1.set(Mode::Good);
    d.wait_for("rs1 back at its weight", T, || weights(net) == both);
    rs1.set(Mode::Off);
    d.wait_for("rs1 at weight 0 (stopped)", T, || weights(net) == drained);
    rs1.set(Mode::Good);
    d.wait_for("rs1 back at its weight again", T, || weights(net) == both);
    let answers = net.answers(4);
    assert!(answers.contains(&"rs1".to_owned()) && answers.contains(&"rs2".to_owned()), "{answers:?}");
    d.log()
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
    let log = cycle(&net, &d, &rs1);
    assert!(log.contains("unknown CA"), "the certificate of another CA is named as such: {log}");
    assert!(log.contains("https connect to 10.18.68.186:8443"), "{log}");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn checks_udp_expects_a_reply_and_drives_the_weight() {
    let net = Net::new();
    let dir = TestDir::new();
    let rs1 = udp_echo(&net.reals[0], 15859);
    let _rs2 = udp_echo(&net.reals[1], 15859);
    let (d, _data) = start(&net, &dir, r#"type = "udp", port = 15859, payload = "ping", expect = "pong ping""#);
    let log = cycle(&net, &d, &rs1);
    assert!(log.contains("does not contain"), "a wrong reply is named: {log}");
    assert!(log.contains("Connection refused"), "the ICMP port unreachable is named: {log}");
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
    let log = cycle(&net, &d, &rs1);
    assert!(log.contains("answered SERVFAIL, expected NOERROR"), "{log}");
}
