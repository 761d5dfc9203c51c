//! BIRD 2 routing daemons run by a test inside a network namespace: the
//! router of the ECMP tests (it learns the VIP from every director over eBGP
//! and installs one multipath route), and directors announcing the VIP by
//! hand. Each instance has its own config, control socket and pid file in a
//! folder of the test, runs in the foreground as a child of the test and is
//! killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::topology::Netns;
use crate::{ip_bin, run};

/// BGP timers every instance uses: a dead peer is noticed after the hold
/// time (6 s, keepalives every second); connections are tried soon and often,
/// and again soon after an error, so sessions come up (and back) quickly.
/// (A hold time of 3 s once expired the surviving director's session too in a
/// loaded emulated VM, where BIRD can get no CPU for a few seconds.)
pub const BGP_TIMERS: &str =
    "hold time 6; keepalive time 1; connect delay time 1; connect retry time 2; error wait time 1, 5;";

/// A running `bird -f` in a namespace.
pub struct Bird {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    /// Its name in the test's output.
    pub name: String,
}

impl Bird {
    /// Write `config` to `<dir>/<name>.conf` and start BIRD on it in `ns`.
    /// Panics (with BIRD's output) if BIRD rejects the config.
    pub fn start(ns: &Netns, dir: &Path, name: &str, config: &str) -> Self {
        let conf = dir.join(format!("{name}.conf"));
        let socket = dir.join(format!("{name}.ctl"));
        let log = dir.join(format!("{name}.log"));
        std::fs::write(&conf, config).unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
        let parse = run(Command::new("bird").arg("-p").arg("-c").arg(&conf));
        assert!(
            parse.status.success(),
            "bird rejects the config of {name}:\n{config}\n{}",
            String::from_utf8_lossy(&parse.stderr)
        );
        let out = std::fs::File::create(&log).expect("bird log file");
        // `ip netns exec` execs BIRD itself, so the child is BIRD.
        let child = Command::new(ip_bin())
            .args(["netns", "exec", &ns.name, "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(dir.join(format!("{name}.pid")))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("bird log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start bird for {name}: {e}"));
        Self { child, socket, log, name: name.to_owned() }
    }

    /// `birdc -s SOCKET ARGS...` (any namespace: it only talks to the socket).
    pub fn birdc(&self, args: &[&str]) -> String {
        let out = run(Command::new("birdc").arg("-s").arg(&self.socket).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether its BGP protocol `proto` is Established.
    pub fn established(&self, proto: &str) -> bool {
        self.birdc(&["show", "protocols", proto]).lines().any(|l| l.starts_with(proto) && l.contains("Established"))
    }

    /// What BIRD printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL it (a crash: no goodbye to its peers) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- bird {} ----\n{}", self.name, self.log());
        }
        self.kill();
    }
}

/// The config of a host that speaks eBGP with `peers` (`(protocol name,
/// address, AS)`) from `local` in AS `asn`. `extra` adds protocols (the
/// router's kernel protocol, a director's static VIP route); `channel` is the
/// body of every session's `ipv4 { }` channel (its filters).
pub fn bgp_config(local: &str, asn: u32, peers: &[(&str, &str, u32)], extra: &str, channel: &str) -> String {
    let mut c = format!("router id {local};\nlog stderr all;\nprotocol device {{ scan time 1; }}\n{extra}\n");
    for (name, addr, peer_as) in peers {
        c.push_str(&format!(
            "protocol bgp {name} {{\n  local {local} as {asn};\n  neighbor {addr} as {peer_as};\n  {BGP_TIMERS}\n  ipv4 {{ {channel} }};\n}}\n"
        ));
    }
    c
}
