//! BIRD 2 as lvsctl's BGP speaker: the version check, its configuration (a
//! main file written at start and on a reload that changes `[director.bgp]`,
//! and an include file with the announced VIPs that is rewritten on every
//! change), and how it is started.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::spec::bgp::{BgpHere, BgpSpec};

/// The name of the `protocol static` holding the announced VIPs; the BGP
/// sessions export its routes and nothing else.
pub(crate) const STATIC: &str = "lvsctl_vips";

/// The bird program: `$LVSCTL_BIRD`, else `bird` on PATH or in the sbin folders.
pub(crate) fn program() -> Option<PathBuf> {
    crate::host::find_program("LVSCTL_BIRD", "bird")
}

/// Parse `BIRD version 2.0.12` into (2, 0, 12).
pub(crate) fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.split("version").nth(1)?.split_whitespace().next()?;
    let mut it = v.split('.').map(|s| s.trim_matches(|c: char| !c.is_ascii_digit()).parse::<u32>().ok());
    Some((it.next()??, it.next().flatten().unwrap_or(0), it.next().flatten().unwrap_or(0)))
}

/// Find bird and birdc, check bird is 2.x: a clear error naming the Debian
/// package before anything changes.
pub(crate) async fn check() -> Result<(PathBuf, String), String> {
    let install = "install the Debian package bird2 (apt-get install bird2)";
    let Some(p) = program() else {
        return Err(format!("[director.bgp] needs BIRD 2, which is not installed: {install}"));
    };
    if crate::host::bird::birdc().is_none() {
        return Err(format!("[director.bgp] needs birdc, which is not installed: {install}"));
    }
    let out = Command::new(&p)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}: {install}", p.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    match parse_version(&text) {
        Some((2, b, c)) => Ok((p, format!("2.{b}.{c}"))),
        Some((a, b, c)) => Err(format!("{} is BIRD {a}.{b}.{c}; lvsctl needs BIRD 2: {install}", p.display())),
        None => Err(format!("{} --version did not print a BIRD version ({:?}): {install}", p.display(), text.trim())),
    }
}

/// `bird -p -c CONF`: parse the config only. An error names the problem.
pub(crate) async fn parse_only(program: &Path, conf: &Path) -> Result<(), String> {
    let out = Command::new(program)
        .arg("-p")
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Err(format!("BIRD rejects the config lvsctl wrote ({}): {}", conf.display(), text.trim()))
}

/// The files of one BIRD, in the state folder.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    /// The main config.
    pub(crate) conf: PathBuf,
    /// A new main config while BIRD checks it (a reload); renamed over
    /// `conf` once taken.
    pub(crate) staged: PathBuf,
    /// The include file with the announced VIPs.
    pub(crate) vips: PathBuf,
    /// The control socket.
    pub(crate) socket: PathBuf,
    /// The pid file.
    pub(crate) pid: PathBuf,
}

impl Files {
    /// The files of this network namespace (`ns` is its id) under `dir`.
    pub(crate) fn new(dir: &Path, ns: &str) -> Self {
        let f = |ext: &str| dir.join(format!("bird-netns{ns}.{ext}"));
        Self { conf: f("conf"), staged: f("conf.new"), vips: f("vips.conf"), socket: f("ctl"), pid: f("pid") }
    }

    /// Remove them all (missing ones are fine).
    pub(crate) fn remove(&self) {
        for p in [&self.conf, &self.staged, &self.vips, &self.socket, &self.pid] {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A BIRD protocol name for a neighbour: `peer_10_0_0_1`.
pub(crate) fn peer_name(addr: IpAddr) -> String {
    format!("peer_{}", addr.to_string().replace(['.', ':'], "_"))
}

/// Seconds between attempts to open a BGP session that is down.
const CONNECT_RETRY: u32 = 5;
/// Seconds to wait after a session error before trying again: the first
/// time, and at most (BIRD doubles it while errors repeat).
const ERROR_WAIT_MIN: u32 = 5;
const ERROR_WAIT_MAX: u32 = 60;

/// The main config: router id, the device protocol, the include file, BFD
/// when asked, one BGP session per neighbour exporting only the VIPs'
/// static routes (nothing is imported: the director routes as before).
pub(crate) fn render(spec: &BgpSpec, here: &BgpHere, vips_file: &Path) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "# Written by lvsctl director run: the VIPs it announces. Do not edit.");
    let _ = writeln!(c, "log stderr {{ info, remote, warning, error, auth, fatal, bug }};");
    let _ = writeln!(c, "router id {};", here.router_id);
    let _ = writeln!(c, "protocol device {{ }}");
    let _ = writeln!(c, "include \"{}\";", vips_file.display());
    if spec.bfd {
        render_bfd(&mut c, spec);
    }
    for n in &here.neighbors {
        let _ = writeln!(c, "protocol bgp {} {{", peer_name(n.address));
        match n.local_address {
            Some(l) => writeln!(c, "    local {l} as {};", here.asn),
            None => writeln!(c, "    local as {};", here.asn),
        }
        .ok();
        let _ = writeln!(c, "    neighbor {} as {};", n.address, n.asn);
        if let Some(ttl) = n.multihop {
            let _ = writeln!(c, "    multihop {ttl};");
        }
        let _ = writeln!(c, "    hold time {};", spec.hold_time);
        let _ = writeln!(c, "    keepalive time {};", (spec.hold_time / 3).max(1));
        // Rejoin soon after a dropped session (a router restart, a link
        // flap): BIRD's defaults wait 120 s between connection attempts and
        // 60 to 300 s after an error, that long out of the router's ECMP set.
        let _ = writeln!(c, "    connect retry time {CONNECT_RETRY};");
        let _ = writeln!(c, "    error wait time {ERROR_WAIT_MIN}, {ERROR_WAIT_MAX};");
        if spec.bfd {
            let _ = writeln!(c, "    bfd on;");
        }
        let _ = writeln!(c, "    ipv4 {{");
        let _ = writeln!(c, "        import none;");
        let _ = writeln!(c, "        export where proto = \"{STATIC}\";");
        let _ = writeln!(c, "        next hop self;");
        let _ = writeln!(c, "    }};");
        let _ = writeln!(c, "}}");
    }
    c
}

/// BIRD's BFD protocol, with the configured timers for directly connected
/// neighbours (every interface) and multihop ones alike; BIRD's defaults
/// when none are set.
fn render_bfd(c: &mut String, spec: &BgpSpec) {
    let mut timers = String::new();
    if let Some(i) = spec.bfd_interval {
        let _ = write!(timers, " interval {} ms;", i.as_millis());
    }
    if let Some(m) = spec.bfd_multiplier {
        let _ = write!(timers, " multiplier {m};");
    }
    if timers.is_empty() {
        let _ = writeln!(c, "protocol bfd {{ }}");
        return;
    }
    let _ = writeln!(c, "protocol bfd {{");
    let _ = writeln!(c, "    interface \"*\" {{{timers} }};");
    let _ = writeln!(c, "    multihop {{{timers} }};");
    let _ = writeln!(c, "}}");
}

/// The include file: one static protocol with a /32 blackhole route per
/// announced VIP (never installed in the kernel: there is no `protocol
/// kernel`; the routers get it over BGP with this host as next hop).
pub(crate) fn render_vips(announced: &[IpAddr]) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "# Written by lvsctl director run: the VIPs announced now. Do not edit.");
    let _ = writeln!(c, "protocol static {STATIC} {{");
    let _ = writeln!(c, "    ipv4;");
    for v in announced {
        let _ = writeln!(c, "    route {v}/32 blackhole;");
    }
    let _ = writeln!(c, "}}");
    c
}

/// Start `bird -f` (foreground, as root so it can reread its root-only
/// config). It gets SIGTERM when lvsctl dies (the sessions drop and the
/// routers withdraw the VIPs by themselves), and runs in its own process
/// group so a Ctrl-C to lvsctl does not cut the graceful withdrawal short.
pub(crate) fn spawn(program: &Path, files: &Files) -> std::io::Result<Child> {
    crate::supervise::stop_leftover(&files.pid, "bird");
    let _ = std::fs::remove_file(&files.pid);
    let mut cmd = Command::new(program);
    cmd.arg("-f")
        .arg("-c")
        .arg(&files.conf)
        .arg("-s")
        .arg(&files.socket)
        .arg("-P")
        .arg(&files.pid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    cmd.process_group(0);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe. lvsctl runs one
    // thread (a current-thread runtime), so "parent thread exit" is its exit.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn versions() {
        assert_eq!(parse_version("BIRD version 2.0.12\n"), Some((2, 0, 12)));
        assert_eq!(parse_version("BIRD version 1.6.8"), Some((1, 6, 8)));
        assert_eq!(parse_version("something else"), None);
    }

    #[test]
    fn config_text() {
        let text = "[director]\niface = \"eth0\"\n[[director.service]]\nvip = \"10.19.70.166\"\nport = 80\nscheduler = \"mh\"\nreal = [\"10.18.68.186\"]\n[director.bgp]\nasn = 65001\nrouter_id = \"10.0.0.2\"\nhold_time = 3\nbfd = true\n[[director.bgp.neighbor]]\naddress = \"10.0.0.1\"\nasn = 65000\n";
        let d = Config::parse(text, "t").unwrap().director().unwrap();
        let b = d.bgp.unwrap();
        let here = b.here(|_| false).unwrap();
        let c = render(&b, &here, Path::new("/run/lvsctl/bird-netns1.vips.conf"));
        for want in [
            "router id 10.0.0.2;",
            "include \"/run/lvsctl/bird-netns1.vips.conf\";",
            "protocol bfd { }",
            "protocol bgp peer_10_0_0_1 {\n    local as 65001;\n    neighbor 10.0.0.1 as 65000;\n    hold time 3;\n    keepalive time 1;\n    connect retry time 5;\n    error wait time 5, 60;\n    bfd on;",
            "import none;",
            "export where proto = \"lvsctl_vips\";",
        ] {
            assert!(c.contains(want), "{want:?} missing from:\n{c}");
        }
        assert!(!c.contains("protocol kernel"), "nothing goes into the director's own routing table:\n{c}");
        let v = render_vips(&["10.19.70.166".parse().unwrap()]);
        assert!(v.contains("protocol static lvsctl_vips {\n    ipv4;\n    route 10.19.70.166/32 blackhole;\n}"), "{v}");
        assert!(!render_vips(&[]).contains("route"), "nothing announced: an empty static protocol");
    }

    #[test]
    fn bfd_timers_and_multihop() {
        let text = "[director]\niface = \"eth0\"\n[[director.service]]\nvip = \"10.19.70.166\"\nport = 80\nscheduler = \"mh\"\nreal = [\"10.18.68.186\"]\n[director.bgp]\nasn = 65001\nrouter_id = \"10.0.0.2\"\nbfd = true\nbfd_interval = \"300ms\"\nbfd_multiplier = 3\n[[director.bgp.neighbor]]\naddress = \"10.0.0.1\"\nasn = 65000\nmultihop = 2\nlocal_address = \"10.0.0.2\"\n[[director.bgp.neighbor]]\naddress = \"10.0.0.9\"\nasn = 65000\n";
        let b = Config::parse(text, "t").unwrap().director().unwrap().bgp.unwrap();
        let c = render(&b, &b.here(|_| false).unwrap(), Path::new("/v"));
        for want in [
            "protocol bfd {\n    interface \"*\" { interval 300 ms; multiplier 3; };\n    multihop { interval 300 ms; multiplier 3; };\n}",
            "local 10.0.0.2 as 65001;\n    neighbor 10.0.0.1 as 65000;\n    multihop 2;\n    hold time 9;",
            "neighbor 10.0.0.9 as 65000;\n    hold time 9;",
        ] {
            assert!(c.contains(want), "{want:?} missing from:\n{c}");
        }
    }
}
