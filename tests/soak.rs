//! Soak test of `lvsctl director run`: 50 virtual services with 4 real
//! servers each, health-checked, while a driver for the whole period flaps
//! the checks, reloads changed config files and changes the table behind
//! the daemon's back. Then the base config comes back (without its checks,
//! so that the end state does not depend on the test's listeners) and the
//! kernel's table must be exactly as configured, and the daemon must not
//! have leaked.
//!
//! The period is `LVSCTL_SOAK_SECS` seconds (default 90: two to three
//! minutes in all under software emulation); set it higher for a longer
//! local run.
//!
//! Topology: the director and one "real server" namespace on a bridge. The
//! four real server addresses of every service are on the real server's
//! interface; real server `j` of every service is checked with a tcp check
//! on port 9000+j, so switching one of four listeners off takes real server
//! `j` of all 50 services down at once (50 transitions).
//!
//! Leak bounds (end vs after warm-up; warm-up = the first quarter of the
//! period, once every kind of event has happened and tokio's worker and
//! blocking threads and the allocator's arenas exist):
//! - open files: at most 16 more. Each check round opens 200 sockets, each
//!   reload reopens the config, each drain poll sends netlink requests: one
//!   fd leaked per check (or per event) would be hundreds to thousands by the
//!   end, far above 16, so a leaking fd fails this test (at the end no check
//!   runs, so sockets of checks in flight do not count there; a leaked fd
//!   stays open all the same);
//! - threads: at most twice as many plus 4 (tokio's blocking pool starts and
//!   ends threads on its own; a thread or task per event that never ends
//!   grows without bound instead). The number of tokio tasks is not
//!   readable from outside; a leaked checker task would still show in the
//!   open files (its socket or child) and the memory;
//! - resident memory: at most twice as much plus 8 MiB (allocators keep freed
//!   memory and the kernel reports RSS in pages; a leak per check or event
//!   grows with the period instead).

#[allow(dead_code)]
#[path = "support/daemon_net.rs"]
mod net;

use std::time::{Duration, Instant};

use lvsctl_tests::topology::{Lan, Netns};
use net::{Daemon, Server, TestDir};

/// How long any awaited change may take (software emulation is slow).
const T: Duration = Duration::from_secs(300);
const VIP: &str = "10.19.70.200";
const DIRECTOR: &str = "10.21.0.254";
const SERVICES: u16 = 50;
const FIRST_PORT: u16 = 20000;
/// The real servers' addresses (the same four in every service).
const REALS: [&str; 4] = ["10.21.0.1", "10.21.0.2", "10.21.0.3", "10.21.0.4"];
/// Real server `j` is checked on port 9000 + j.
const CHECK_PORT: u16 = 9000;

/// The configured weight of real server `j` of service `i` (not all 1, so
/// that an outside weight change is a real difference).
fn weight(i: u16, j: usize) -> u32 {
    1 + (u32::from(i) + j as u32) % 3
}

/// The config, in one of four versions: 0 is the base; 1 removes real
/// server 3 of service 0 and changes a weight of service 1; 2 removes
/// service 2; 3 adds a fifth real server to service 3 and removes service 4.
/// Without `checked`, no real server has a check (every one is up).
fn config(version: u32, checked: bool) -> String {
    let mut t = "[director]\niface = \"eth0\"\nresync_interval = \"2s\"\n".to_owned();
    for i in 0..SERVICES {
        if (version == 2 && i == 2) || (version == 3 && i == 4) {
            continue;
        }
        let mut reals: Vec<String> = Vec::new();
        for (j, r) in REALS.iter().enumerate() {
            if version == 1 && i == 0 && j == 3 {
                continue;
            }
            let w = if version == 1 && i == 1 && j == 0 { 7 } else { weight(i, j) };
            let check = format!(
                "{{ type = \"tcp\", port = {}, interval = \"3s\", timeout = \"1s\", rise = 1, fall = 1 }}",
                CHECK_PORT + j as u16
            );
            let check = if checked { format!(", check = {check}") } else { String::new() };
            reals.push(format!("{{ addr = \"{r}\", weight = {w}{check} }}"));
        }
        if version == 3 && i == 3 {
            reals.push("{ addr = \"10.21.0.5\", weight = 1 }".to_owned());
        }
        t.push_str(&format!(
            "\n[[director.service]]\nvip = \"{VIP}\"\nport = {}\ndrain_time = \"2s\"\nreal = [{}]\n",
            FIRST_PORT + i,
            reals.join(", ")
        ));
    }
    t
}

/// The table the base config asks for, sorted: (port, [(real, weight)]).
fn expected() -> Vec<(u16, Vec<(String, u32)>)> {
    (0..SERVICES)
        .map(|i| (FIRST_PORT + i, REALS.iter().enumerate().map(|(j, r)| ((*r).to_owned(), weight(i, j))).collect()))
        .collect()
}

/// The kernel's table of `ns` in the same form.
fn table(ns: &Netns) -> Vec<(u16, Vec<(String, u32)>)> {
    let name = ns.name.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let t = rt.block_on(async move {
        let h = ipvs::Ipvs::connect_named_netns(&name)
            .await
            .unwrap_or_else(|e| panic!("PRIVILEGED TEST COULD NOT RUN: cannot connect to IPVS in {name}: {e}"));
        h.dump().await.expect("dump")
    });
    let mut out: Vec<(u16, Vec<(String, u32)>)> = t
        .into_iter()
        .map(|(s, ds)| {
            let port = match s.service.key {
                ipvs::ServiceKey::Inet { addr, .. } => addr.port(),
                ipvs::ServiceKey::Fwmark { .. } => 0,
            };
            let mut d: Vec<(String, u32)> =
                ds.iter().map(|d| (d.destination.addr.ip().to_string(), d.destination.weight)).collect();
            d.sort();
            (port, d)
        })
        .collect();
    out.sort();
    out
}

/// Open files, threads and resident memory (KiB) of process `pid`.
#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    threads: usize,
    rss_kib: u64,
}

fn usage(pid: u64) -> Usage {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the daemon's /proc/PID/fd").count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon's /proc/PID/status");
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {status}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    Usage { fds, threads: field("Threads:") as usize, rss_kib: field("VmRSS:") }
}

/// The soak period.
fn period() -> Duration {
    let secs = std::env::var("LVSCTL_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(90);
    Duration::from_secs(secs)
}

/// One change made behind the daemon's back, chosen by `step`: delete an
/// owned real server, change a weight, or delete a whole service. The
/// thing may be gone already (a drain, an earlier change): ipvsadm's
/// refusal is then ignored.
fn outside_change(director: &Netns, step: u32) {
    let port = FIRST_PORT + 10 + (step % 40) as u16;
    let svc = format!("{VIP}:{port}");
    let real = format!("{}:{port}", REALS[(step % 4) as usize]);
    let args: Vec<&str> = match step % 3 {
        0 => vec!["-d", "-t", &svc, "-r", &real],
        1 => vec!["-e", "-t", &svc, "-r", &real, "-g", "-w", "9"],
        _ => vec!["-D", "-t", &svc],
    };
    let _ = director.exec("ipvsadm", &args);
}

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn daemon_soak_flaps_reloads_and_outside_changes_end_exact_and_leak_nothing() {
    let lan = Lan::new();
    let director = lan.host("sd", "eth0", &format!("{DIRECTOR}/24"));
    let rs = lan.host("sr", "eth0", &format!("{}/24", REALS[0]));
    for r in &REALS[1..] {
        rs.ip(&["addr", "add", &format!("{r}/24"), "dev", "eth0"]);
    }
    let listeners: Vec<Server> =
        (0..REALS.len()).map(|j| Server::text(&rs, CHECK_PORT + j as u16, &format!("rs{j}"))).collect();
    let dir = TestDir::new();
    let cfg = dir.write("lvsctl.toml", &config(0, true), 0o644);
    let d = Daemon::start(&director, &dir, &cfg, &[]);
    d.wait_for("the 50 services as configured", T, || table(&director) == expected());
    // The table comes first at start, the report right after it.
    d.wait_for("the daemon's report", T, || d.report().is_some());
    let pid = d.report().and_then(|r| r["pid"].as_u64()).expect("the daemon's pid in its report");

    let period = period();
    let start = Instant::now();
    let mut warm: Option<Usage> = None;
    let (mut step, mut reloads, mut flaps, mut outside) = (0u32, 0u32, 0u32, 0u32);
    while start.elapsed() < period {
        step += 1;
        // Flap: every 4 steps one listener off or on (real server j of
        // every service); each stays off for 4 flaps (16 steps, over 8 s:
        // long enough for checks 3 s apart to see it).
        if step % 4 == 0 {
            let j = (step / 4) as usize % REALS.len();
            let up = (step / 4 / REALS.len() as u32) % 2 == 1;
            listeners[j].set_up(up);
            flaps += 1;
        }
        if step % 8 == 0 {
            dir.write("lvsctl.toml", &config(step / 8 % 4, true), 0o644);
            d.signal(libc::SIGHUP);
            reloads += 1;
        }
        if step % 3 == 0 {
            outside_change(&director, step / 3);
            outside += 1;
        }
        assert!(d.running(), "director run died during the soak; log:\n{}", d.log());
        if warm.is_none() && start.elapsed() >= period / 4 {
            warm = Some(usage(pid));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("soak: {step} steps, {flaps} flaps, {reloads} reloads, {outside} outside changes in {period:?}");

    // Under emulation the daemon works through the results of the flaps
    // with a delay: wait until it has taken real servers down and up.
    d.wait_for("transitions from the flaps", T, || {
        let log = d.log();
        log.contains("real server down") && log.contains("real server up")
    });
    // Stop flapping: every listener up, and the base config back without
    // its checks, so that the end state does not depend on the test's
    // listeners and of check results still on their way.
    for l in &listeners {
        l.set_up(true);
    }
    dir.write("lvsctl.toml", &config(0, false), 0o644);
    d.signal(libc::SIGHUP);
    d.wait_for("the kernel's table exactly as configured", T, || table(&director) == expected());
    // And after two more resyncs (nothing left over to repair or undo).
    std::thread::sleep(Duration::from_secs(5));
    d.wait_for("the table exactly as configured after resyncs", T, || table(&director) == expected());

    let warm = warm.expect("a warm-up measurement");
    let end = usage(pid);
    eprintln!("soak: after warm-up {warm:?}, at the end {end:?}");
    assert!(end.fds <= warm.fds + 16, "open files grew from {} to {}: a leak", warm.fds, end.fds);
    assert!(end.threads <= 2 * warm.threads + 4, "threads grew from {} to {}", warm.threads, end.threads);
    assert!(
        end.rss_kib <= 2 * warm.rss_kib + 8 * 1024,
        "resident memory grew from {} KiB to {} KiB",
        warm.rss_kib,
        end.rss_kib
    );
    let log = d.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("drift repaired"), "the outside changes must have been repaired; log:\n{log}");
    assert!(log.contains("drain ended"), "the reloads must have drained real servers; log:\n{log}");
}
