//! Privileged tests of the drains and dynamic weights of `lvsctl director
//! run`, on the LVS-DR test network of tests/daemon.rs (VIP
//! 10.19.70.166:15858, see tests/support/daemon_net.rs): a real server
//! removed from the config on SIGHUP keeps its open connection (weight 0)
//! and is deleted when that connection closes or when `drain_time` passes;
//! a removed virtual service stays until its last real server is done; a
//! real server failing its check with `on_failure = "remove"` drains the
//! same way before it is deleted, and comes back when it passes again; an
//! exec check with `dynamic = true` sets the kernel's weight from its exit
//! status.
//!
//! Every wait polls with a generous deadline; nothing asserts how long a
//! change took.

#[allow(dead_code)]
#[path = "support/daemon_net.rs"]
mod net;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use lvsctl_tests::topology::{enter, Netns};
use net::{Daemon, Net, TestDir, PORT, REALS, VIP};

/// How long any awaited change may take (software emulation is slow).
const T: Duration = Duration::from_secs(60);
/// The port of the second virtual service (same VIP).
const PORT2: u16 = PORT + 1;

/// A server on `port` of a real server that says `name` on each connection
/// and then echoes until the client closes: a connection stays open (and
/// active in the director's IPVS table) for as long as the client wants.
fn echo_server(ns: &Netns, port: u16, name: &str) {
    let path = ns.path();
    let l = ns.run(move || TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|e| panic!("bind {port}: {e}")));
    let name = name.to_owned();
    std::thread::spawn(move || {
        enter(&path);
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let name = name.clone();
            std::thread::spawn(move || {
                if s.write_all(format!("{name}\n").as_bytes()).is_err() {
                    return;
                }
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Open connections from the client to VIP:`port` until one reaches the
/// server named `name` (round robin: within a few); that one stays open.
fn hold(net: &Net, port: u16, name: &str) -> TcpStream {
    let want = name.to_owned();
    net.client.run(move || {
        let a: SocketAddr = format!("{VIP}:{port}").parse().unwrap();
        for _ in 0..10 {
            let s = TcpStream::connect_timeout(&a, Duration::from_secs(10)).expect("connect through the VIP");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).expect("the server's name");
            if line.trim() == want {
                return s;
            }
        }
        panic!("no connection to {want} through {a} in 10 tries");
    })
}

/// The weight and active connections of `real` in the service VIP:`port`
/// (`None`: not in the kernel's table).
fn real(net: &Net, port: u16, real: &str) -> Option<(u32, u32)> {
    let key = ipvs::ServiceKey::tcp(format!("{VIP}:{port}").parse().unwrap());
    let t = net.table();
    let (_, dests) = t.into_iter().find(|(s, _)| s.service.key == key)?;
    let d = dests.into_iter().find(|d| d.destination.addr.ip().to_string() == real)?;
    Some((d.destination.weight, d.active_conns))
}

/// Whether the service VIP:`port` is in the kernel's table.
fn service_present(net: &Net, port: u16) -> bool {
    let key = ipvs::ServiceKey::tcp(format!("{VIP}:{port}").parse().unwrap());
    net.table().iter().any(|(s, _)| s.service.key == key)
}

/// A director config: each service `(port, reals, extra keys)` on the VIP,
/// without checks, and a resync every second (so that resyncs happen
/// during every drain).
fn config(services: &[(u16, &[&str], &str)]) -> String {
    let mut text = "[director]\niface = \"eth0\"\nresync_interval = \"1s\"\n".to_owned();
    for (port, reals, extra) in services {
        let reals: Vec<String> = reals.iter().map(|r| format!("\"{r}\"")).collect();
        text.push_str(&format!(
            "\n[[director.service]]\nvip = \"{VIP}\"\nport = {port}\nreal = [{}]\n{extra}\n",
            reals.join(", ")
        ));
    }
    text
}

/// Wait `n` drain polls' worth of time (one a second) and assert that
/// `cond` held at every look: what must not change while a drain waits.
fn holds_for(d: &Daemon, n: u32, what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..n * 4 {
        assert!(cond(), "{what}; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_drain_on_reload_keeps_the_open_connection_then_deletes() {
    let net = Net::new();
    let dir = TestDir::new();
    echo_server(&net.reals[0], PORT, "rs1");
    echo_server(&net.reals[1], PORT, "rs2");
    echo_server(&net.reals[0], PORT2, "rs1");
    let both = config(&[(PORT, &REALS[..2], "drain_time = \"10m\""), (PORT2, &REALS[..1], "drain_time = \"10m\"")]);
    let cfg = dir.write("lvsctl.toml", &both, 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    d.wait_for("both services", T, || real(&net, PORT, REALS[1]).is_some() && service_present(&net, PORT2));
    let to_rs2 = hold(&net, PORT, "rs2");
    let to_svc2 = hold(&net, PORT2, "rs1");
    d.wait_for("both connections counted active", T, || {
        real(&net, PORT, REALS[1]).map(|x| x.1) == Some(1) && real(&net, PORT2, REALS[0]).map(|x| x.1) == Some(1)
    });

    // rs2 leaves the first service, the second service leaves the file.
    let one = config(&[(PORT, &REALS[..1], "drain_time = \"10m\"")]);
    dir.write("lvsctl.toml", &one, 0o644);
    d.signal(libc::SIGHUP);
    d.wait_for("rs2 and the second service at weight 0", T, || {
        real(&net, PORT, REALS[1]) == Some((0, 1)) && real(&net, PORT2, REALS[0]) == Some((0, 1))
    });
    assert!(d.log().contains("drain started"), "{}", d.log());
    // director status shows the drains, and they are no drift.
    let (code, out) = d.status(&net.director, false);
    assert_eq!(code, 0, "a drain is the daemon's doing, not a degradation:\n{out}");
    assert!(out.contains(&format!("{}:{PORT}", REALS[1])) && out.contains("draining since"), "{out}");
    assert!(out.contains("removed from the config"), "{out}");

    // Resyncs (every second) and another SIGHUP neither delete nor restore them.
    d.signal(libc::SIGHUP);
    holds_for(&d, 4, "rs2 and the second service must stay at weight 0 while their connections are open", || {
        real(&net, PORT, REALS[1]) == Some((0, 1)) && real(&net, PORT2, REALS[0]) == Some((0, 1))
    });
    // The held connections still work.
    for mut s in [&to_rs2, &to_svc2] {
        s.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).expect("echo on a draining real server");
    }

    // The connections close: the real server is deleted, then the service.
    drop(to_rs2);
    d.wait_for("rs2 deleted once its connection closed", T, || real(&net, PORT, REALS[1]).is_none());
    assert_eq!(real(&net, PORT, REALS[0]).map(|x| x.0), Some(1), "rs1 keeps its weight");
    assert!(service_present(&net, PORT2), "the second service still has a connection open");
    drop(to_svc2);
    d.wait_for("the second service deleted once drained", T, || !service_present(&net, PORT2));
    let log = d.log();
    assert_eq!(log.matches("drain ended: no active connection left").count(), 2, "{log}");
    let (code, out) = d.status(&net.director, false);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("draining"), "{out}");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_drain_on_reload_ends_at_drain_time_with_the_connection_open() {
    let net = Net::new();
    let dir = TestDir::new();
    echo_server(&net.reals[0], PORT, "rs1");
    echo_server(&net.reals[1], PORT, "rs2");
    let cfg = dir.write("lvsctl.toml", &config(&[(PORT, &REALS[..2], "drain_time = \"3s\"")]), 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    d.wait_for("the service with rs1 and rs2", T, || real(&net, PORT, REALS[1]).is_some());
    let _held = hold(&net, PORT, "rs2");
    d.wait_for("the connection counted active", T, || real(&net, PORT, REALS[1]).map(|x| x.1) == Some(1));

    dir.write("lvsctl.toml", &config(&[(PORT, &REALS[..1], "drain_time = \"3s\"")]), 0o644);
    d.signal(libc::SIGHUP);
    d.wait_for("rs2 at weight 0", T, || real(&net, PORT, REALS[1]) == Some((0, 1)));
    d.wait_for("rs2 deleted at drain_time, the connection still open", T, || real(&net, PORT, REALS[1]).is_none());
    let log = d.log();
    assert!(log.contains("drain ended: drain_time passed with 1 active connection(s) left"), "{log}");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_drain_dynamic_exec_weight_follows_the_exit_status() {
    let net = Net::new();
    let dir = TestDir::new();
    echo_server(&net.reals[0], PORT, "rs1");
    // The check exits with the status written in a file (read as nobody).
    let status = dir.write("status", "0\n", 0o644);
    let script = dir.write("check.sh", &format!("#!/bin/sh\nexit \"$(cat {})\"\n", status.display()), 0o755);
    let check = format!(
        "check = {{ type = \"exec\", command = [\"{}\"], dynamic = true, interval = \"200ms\", timeout = \"5s\", rise = 1, fall = 1 }}",
        script.display()
    );
    let rs1 = format!("{},weight=10", REALS[0]);
    let cfg = dir.write("lvsctl.toml", &config(&[(PORT, &[&rs1], &check)]), 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    let weight = || real(&net, PORT, REALS[0]).map(|x| x.0);
    d.wait_for("rs1 at its configured weight 10", T, || weight() == Some(10));
    // Each step: the exit status, the kernel weight it must give.
    for (exit, want) in [(7, 5), (255, 10), (2, 0), (1, 0), (0, 10), (5, 3)] {
        dir.write("status", &format!("{exit}\n"), 0o644);
        d.wait_for(&format!("weight {want} after exit status {exit}"), T, || weight() == Some(want));
        if exit == 1 {
            // Down: the report says so (exit 2 is up with weight 0).
            d.wait_for("rs1 reported down", T, || {
                d.report().is_some_and(|r| r["services"][0]["real_servers"][0]["up"] == false)
            });
        }
    }
    let log = d.log();
    assert!(log.contains("dynamic weight from the exec check"), "{log}");
    let (code, out) = d.status(&net.director, false);
    assert_eq!(code, 0, "a dynamic weight is no drift:\n{out}");
    assert!(out.contains("dynamic weight 3"), "{out}");
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_drain_on_failure_remove_waits_for_the_open_connection() {
    let net = Net::new();
    let dir = TestDir::new();
    echo_server(&net.reals[0], PORT, "rs1");
    echo_server(&net.reals[1], PORT, "rs2");
    // The health of each is a separate listener, so that rs2 can fail its
    // check while its echo server keeps the connection.
    let _health1 = net::Server::text(&net.reals[0], 9000, "ok");
    let health = net::Server::text(&net.reals[1], 9000, "ok");
    let check = r#"check = { type = "tcp", port = 9000, interval = "200ms", timeout = "500ms", rise = 1, fall = 1 }"#;
    let text = config(&[(PORT, &REALS[..2], &format!("on_failure = \"remove\"\ndrain_time = \"10m\"\n{check}"))]);
    let cfg = dir.write("lvsctl.toml", &text, 0o644);
    let d = Daemon::start(&net.director, &dir, &cfg, &[]);
    d.wait_for("rs1 and rs2 in the service", T, || {
        real(&net, PORT, REALS[1]).is_some() && real(&net, PORT, REALS[0]).is_some()
    });
    let held = hold(&net, PORT, "rs2");
    d.wait_for("the connection counted active", T, || real(&net, PORT, REALS[1]).map(|x| x.1) == Some(1));

    // rs2 fails its check: weight 0, kept while the connection is open.
    health.set_up(false);
    d.wait_for("rs2 at weight 0", T, || real(&net, PORT, REALS[1]) == Some((0, 1)));
    holds_for(&d, 3, "rs2 must stay (weight 0) while its connection is open", || {
        real(&net, PORT, REALS[1]) == Some((0, 1))
    });
    drop(held);
    d.wait_for("rs2 deleted once its connection closed", T, || real(&net, PORT, REALS[1]).is_none());
    // It passes its check again: back with its weight.
    health.set_up(true);
    d.wait_for("rs2 back at weight 1", T, || real(&net, PORT, REALS[1]).map(|x| x.0) == Some(1));
    let log = d.log();
    assert!(log.contains("drain started: failed its check (on_failure = remove)"), "{log}");
    assert!(log.contains("drain ended: no active connection left; deleted"), "{log}");
}
