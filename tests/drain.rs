//! Privileged tests of `lvsctl real drain` against the real kernel: a client,
//! a NAT director and a real server in three network namespaces, with a
//! connection held open through the director.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use lvsctl_tests::topology::*;
use lvsctl_tests::{ip, lvsctl_bin};

const SVC: &str = "10.0.0.1:80";
const RIP: &str = "10.1.0.2:8080";

/// Client, director and real server namespaces, the NAT service with two
/// real servers (one that holds the connection, one spare), and a server
/// that echoes until the client closes.
struct Net {
    cl: Netns,
    dir: Netns,
    _rs: Netns,
}

fn net() -> Net {
    let (cl, dir, rs) = (Netns::new("dcl"), Netns::new("ddr"), Netns::new("drs"));
    for (dev, peer, other, mine, theirs) in
        [("v0", "vc", &cl, "192.168.50.1/24", "192.168.50.2/24"), ("r0", "vr", &rs, "10.1.0.1/24", "10.1.0.2/24")]
    {
        ip(&["link", "add", dev, "netns", &dir.name, "type", "veth", "peer", "name", peer, "netns", &other.name]);
        dir.ip(&["addr", "add", mine, "dev", dev]);
        dir.ip(&["link", "set", dev, "up"]);
        other.ip(&["addr", "add", theirs, "dev", peer]);
        other.ip(&["link", "set", peer, "up"]);
        other.ip(&["route", "add", "default", "via", mine.split('/').next().unwrap()]);
    }
    dir.ip(&["addr", "add", "10.0.0.1/32", "dev", "v0"]);
    dir.run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap());
    dir.ipvsadm(&["-A", "-t", SVC, "-s", "rr"]);
    dir.ipvsadm(&["-a", "-t", SVC, "-r", RIP, "-m", "-w", "3"]);
    // The real server: echo until the client closes, then close.
    let l = rs.run(|| TcpListener::bind(RIP).unwrap_or_else(|e| panic!("bind {RIP}: {e}")));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Net { cl, dir, _rs: rs }
}

impl Net {
    /// A connection from the client through the VIP, established (an echo
    /// came back) and counted active by the director.
    fn hold(&self) -> TcpStream {
        let mut s = self.cl.run(|| {
            TcpStream::connect_timeout(&SVC.parse().unwrap(), Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("connecting through {SVC}: {e}"))
        });
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).expect("echo through the director");
        eventually("the director counts the connection active", Duration::from_secs(30), || {
            let (w, act) = self.real();
            if act == Some(1) {
                Ok(w)
            } else {
                Err((w, act))
            }
        });
        s
    }

    /// The weight and active connections of the real server (`None`: gone),
    /// from ipvsadm -Ln.
    fn real(&self) -> (Option<u32>, Option<u32>) {
        let out = self.dir.ipvsadm(&["-Ln", "-t", SVC]);
        let row = out.lines().find(|l| l.contains(RIP)).map(|l| l.split_whitespace().collect::<Vec<_>>());
        match row {
            // -> RIP Masq Weight ActiveConn InActConn
            Some(r) => (r[3].parse().ok(), r[4].parse().ok()),
            None => (None, None),
        }
    }

    fn drain(&self, args: &[&str]) -> Command {
        let mut c = Command::new(lvsctl_bin());
        c.args(["--netns", &self.dir.name, "real", "drain", "-t", SVC]).args(args);
        c
    }
}

/// With a connection held open and a short --timeout, drain gives up with
/// exit status 3: the weight stays 0, and --remove does not remove.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn drain_times_out_while_a_connection_is_open() {
    let n = net();
    let _held = n.hold();
    let out = n.drain(&["-r", RIP, "--timeout", "1s", "--remove"]).output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert_eq!(code(&out), 3, "{stdout}\n{stderr}");
    assert!(stdout.contains("weight 0 (was 3)"), "{stdout}");
    assert!(stderr.contains("still has 1 active connection(s)") && stderr.contains("not removed"), "{stderr}");
    assert_eq!(n.real(), (Some(0), Some(1)), "weight 0, the real server and its connection still there");
    // No progress line when stderr is not a terminal.
    assert!(!stderr.contains('\r'), "{stderr:?}");
}

/// Drain waits while the connection is open; when the client closes it,
/// drain ends with status 0 and --remove deletes the real server. New
/// connections meanwhile go to no weight-0 server.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn drain_waits_for_the_connection_then_removes() {
    let n = net();
    let mut held = n.hold();
    // The real server given by address alone: the only one with that address.
    let mut child = n
        .drain(&["-r", "10.1.0.2", "--remove"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lvsctl real drain");
    let mut out = child.stdout.take().unwrap();
    // The first line says the weight went to 0.
    let mut first = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        first.push(b[0]);
    }
    let first = String::from_utf8_lossy(&first).into_owned();
    assert!(first.contains("weight 0 (was 3)"), "{first}");
    assert_eq!(n.real(), (Some(0), Some(1)));
    // The connection still works, and drain is still waiting for it: the
    // real server is still there.
    held.write_all(b"y").unwrap();
    held.read_exact(&mut b).unwrap();
    assert!(child.try_wait().unwrap().is_none(), "drain ended while a connection was open");
    assert_eq!(n.real().0, Some(0), "removed while a connection was open");
    // A new client connection finds no server to take it (the only one has weight 0).
    let refused = n.cl.run(|| TcpStream::connect_timeout(&SVC.parse().unwrap(), Duration::from_secs(10)).is_err());
    assert!(refused, "a weight-0 real server took a new connection");

    held.shutdown(Shutdown::Write).unwrap();
    let _ = held.read_to_end(&mut Vec::new());
    drop(held);
    let status = eventually("drain ends after the connection closed", Duration::from_secs(120), || {
        child.try_wait().unwrap().ok_or("still running")
    });
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{rest}\n{err}");
    assert!(rest.contains("no active connection left") && rest.contains("removed"), "{rest}");
    assert_eq!(n.real(), (None, None), "the real server is removed:\n{}", n.dir.ipvsadm(&["-Ln"]));
}

/// Bad input: an unknown real server, no service.
#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn drain_refuses_unknown_real_servers() {
    let n = net();
    let out = n.drain(&["-r", "10.1.0.9:8080"]).output().unwrap();
    assert_eq!(code(&out), 1, "{:?}", texts(&out));
    assert!(texts(&out).1.contains("No such destination"), "{:?}", texts(&out));
    let out = Command::new(lvsctl_bin()).args(["--netns", &n.dir.name, "real", "drain", "-r", RIP]).output().unwrap();
    assert_eq!(code(&out), 2, "{:?}", texts(&out));
    assert_eq!(n.real(), (Some(3), Some(0)), "nothing changed");
}
