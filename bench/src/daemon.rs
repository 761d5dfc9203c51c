//! The health-daemon benchmark: `lvsctl director run` against keepalived's
//! checker on ONE generated table, each daemon in fresh network namespaces,
//! one after the other (scripts/bench --daemon runs it in the test VM).
//!
//! ```text
//! lvs-bench daemon-gen --services N --reals M [--change PCT] --lvsctl FILE --keepalived FILE
//!     The same table as an lvsctl config and as a keepalived.conf: N TCP
//!     services (rr, DR), M real servers each, a TCP check every INTERVAL.
//! lvs-bench daemon --tool lvsctl|keepalived|floor --services N --reals M --results FILE
//!                  [--steady SECS] [--failures K] [--work DIR]
//!     Run one daemon through the phases below, append "SIZE<TAB>TOOL<TAB>METRIC<TAB>VALUE"
//!     lines to FILE. `floor` is no daemon: `lvs-bench apply` of the same table as
//!     ipvsadm rules (one library batch after a process start, no config parse,
//!     no checks), timed as a start and nothing else: the least any program
//!     doing the kernel's part of a start takes in this VM.
//! lvs-bench daemon-report FILE   the results side by side, as markdown
//! ```
//!
//! The network: namespace `bd-dir` (the daemon; VIPs on a dummy `dum0`, a
//! veth to the real servers) and `bd-rs` (every real-server address is local
//! through one `local 10.128.0.0/9` route; ONE listener on 0.0.0.0:80 accepts
//! every check and counts it per address). The phases:
//!   start     exec -> every service and real server in the kernel (library dump, polled)
//!   steady    STEADY seconds all healthy: CPU (utime+stime of the daemon's
//!             process tree from /proc, and each apart) per check accepted by
//!             the listener
//!   failure   K real servers stop answering (a blackhole route for their
//!             address on the real-server side, up to 10 at once): the time from
//!             each one's last accepted check to weight 0 in the kernel
//!   reload    1 % of the real servers replaced, SIGHUP: time to the new table
//!             (read from /proc, not netlink) and the generic netlink requests
//!             sent meanwhile (counted on an nlmon device)
//!   rss       peak RSS (VmHWM summed over the process tree)
//!   shutdown  SIGTERM -> the daemon gone (both remove their services on exit)

mod net;
mod table;

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{parse_args, Res};
use net::{in_ns, Listener, DIR_NS};
pub use table::{gen, Table};

/// What each run measures; `report` prints them in this order.
const METRICS: [(&str, &str, &str); 13] = [
    ("start_s", "start: exec to full table", "s"),
    ("cpu_per_check_us", "steady: CPU per check", "us"),
    ("user_per_check_us", "steady: of which user time", "us"),
    ("sys_per_check_us", "steady: of which system time", "us"),
    ("checks_per_s", "steady: checks per second", "/s"),
    ("rss_mib", "peak RSS (process tree)", "MiB"),
    ("fail_median_s", "failure: last good answer to weight 0, median", "s"),
    ("fail_max_s", "failure: last good answer to weight 0, max", "s"),
    ("reload_s", "reload 1 %: SIGHUP to new table", "s"),
    ("reload_changes", "reload 1 %: change requests sent", ""),
    ("reload_requests", "reload 1 %: all netlink requests sent", ""),
    ("shutdown_s", "shutdown: SIGTERM to exit", "s"),
    ("missed", "failures not seen within the deadline", ""),
];

struct Run {
    tool: String,
    table: Table,
    work: std::path::PathBuf,
    results: String,
    size: String,
}

impl Run {
    fn record(&self, metric: &str, value: f64) -> Res<()> {
        let line = format!("{}\t{}\t{metric}\t{value:.6}\n", self.size, self.tool);
        eprintln!("daemon bench: {}", line.trim_end());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.results)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| format!("{}: {e}", self.results))
    }

    fn config(&self, changed: bool) -> std::path::PathBuf {
        let ext = match self.tool.as_str() {
            "lvsctl" => "toml",
            "keepalived" => "conf",
            _ => "rules",
        };
        self.work.join(format!("{}{}.{ext}", self.tool, if changed { "-changed" } else { "" }))
    }

    /// Start the daemon in the director namespace, its log next to its config.
    fn spawn(&self) -> Res<Child> {
        let log = std::fs::File::create(self.work.join(format!("{}.log", self.tool))).map_err(|e| e.to_string())?;
        let conf = self.config(false);
        let mut c = Command::new("ip");
        c.args(["netns", "exec", DIR_NS]);
        if self.tool == "floor" {
            c.args(["lvs-bench", "apply"]).arg(&conf);
        } else if self.tool == "lvsctl" {
            c.arg("lvsctl").args(["director", "run", "--teardown-on-exit", "--config"]).arg(&conf);
            c.env("LVSCTL_STATE_DIR", self.work.join("state"));
        } else {
            c.args(["keepalived", "-n", "-l", "-C", "-f"]).arg(&conf);
            c.arg("-p").arg(self.work.join("keepalived.pid"));
            c.arg("-c").arg(self.work.join("checkers.pid"));
        }
        c.stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| e.to_string())?).stderr(log);
        c.spawn().map_err(|e| format!("cannot start {}: {e}", self.tool))
    }
}

/// `lvs-bench daemon ...`: one daemon through every phase.
pub fn run(args: &[String]) -> Res<std::process::ExitCode> {
    let a = parse_args(args, &["tool", "services", "reals", "results", "steady", "failures", "work"])?;
    let tool = a.opts.get("tool").ok_or("--tool lvsctl|keepalived")?.clone();
    if !["lvsctl", "keepalived", "floor"].contains(&tool.as_str()) {
        return Err(format!("unknown --tool {tool}"));
    }
    let table = Table { services: a.num("services", None)?, reals: a.num("reals", Some(4))?, ..Table::default() };
    let work = std::path::PathBuf::from(a.opts.get("work").cloned().unwrap_or_else(|| "/tmp/bench-daemon".into()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("state")).map_err(|e| e.to_string())?;
    let run = Run {
        size: format!("{}x{}", table.services, table.reals),
        tool,
        table,
        work,
        results: a.opts.get("results").ok_or("--results is required")?.clone(),
    };
    for changed in [false, true] {
        let text = match run.tool.as_str() {
            "lvsctl" => run.table.lvsctl(changed),
            "keepalived" => run.table.keepalived(changed),
            _ => run.table.rules(),
        };
        std::fs::write(run.config(changed), text).map_err(|e| e.to_string())?;
    }
    net::setup()?;
    let listener = Listener::start()?;
    let r = phases(&run, &listener, a.num("steady", Some(60))?, a.num("failures", Some(10))?);
    net::teardown();
    r.map(|()| std::process::ExitCode::SUCCESS)
}

/// The daemon's process and every process below it (keepalived forks its checker).
fn tree(root: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The fields after the command (which may hold spaces) in parentheses.
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        if let Some(ppid) = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()) {
            parent.push((pid, ppid));
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// utime and stime of the tree, in seconds.
fn cpu_split(root: u32) -> (f64, f64) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (mut user, mut sys) = (0u64, 0u64);
    for pid in tree(root) {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        let f: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
        user += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        sys += f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    (user as f64 / hz, sys as f64 / hz)
}

/// VmHWM summed over the tree, in MiB.
fn peak_rss_mib(root: u32) -> f64 {
    let mut kib = 0u64;
    for pid in tree(root) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
        for l in status.lines() {
            if let Some(v) = l.strip_prefix("VmHWM:") {
                kib += v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    kib as f64 / 1024.0
}

fn phases(run: &Run, listener: &Listener, steady: u32, failures: u32) -> Res<()> {
    let t0 = Instant::now();
    let mut child = run.spawn()?;
    let r = measure(run, listener, steady, failures, t0, &mut child);
    if r.is_err() {
        // SAFETY: kill on our own child's pid (its children follow keepalived's parent).
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
    }
    r
}

fn measure(run: &Run, listener: &Listener, steady: u32, failures: u32, t0: Instant, child: &mut Child) -> Res<()> {
    let pid = child.id();
    let full = in_ns(DIR_NS, {
        let want = run.table.clone();
        move || net::wait_full(&want, Duration::from_secs(600))
    })??;
    run.record("start_s", full.duration_since(t0).as_secs_f64())?;
    if run.tool == "floor" {
        let status = child.wait().map_err(|e| e.to_string())?;
        return if status.success() { Ok(()) } else { Err(format!("lvs-bench apply exited with {status}")) };
    }

    // Every real server checked once: the checks run at their pace.
    listener.wait_all_seen(&run.table.addresses(false), Duration::from_secs(120))?;
    let (c0, a0, s0) = (cpu_split(pid), listener.accepted(), Instant::now());
    std::thread::sleep(Duration::from_secs(u64::from(steady)));
    let (c1, a1, dt) = (cpu_split(pid), listener.accepted(), s0.elapsed().as_secs_f64());
    let checks = (a1 - a0).max(1) as f64;
    let (user, sys) = (c1.0 - c0.0, c1.1 - c0.1);
    run.record("cpu_per_check_us", (user + sys) / checks * 1e6)?;
    run.record("user_per_check_us", user / checks * 1e6)?;
    run.record("sys_per_check_us", sys / checks * 1e6)?;
    run.record("checks_per_s", checks / dt)?;

    failure_phase(run, listener, failures)?;
    reload_phase(run, listener, pid)?;
    run.record("rss_mib", peak_rss_mib(pid))?;

    let t = Instant::now();
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = child.wait().map_err(|e| e.to_string())?;
    run.record("shutdown_s", t.elapsed().as_secs_f64())?;
    if !status.success() {
        return Err(format!("{} exited with {status}; see {}", run.tool, run.work.display()));
    }
    Ok(())
}

/// Real servers stop answering, up to 10 at once (in different services):
/// the time from each one's last accepted check to weight 0 in the kernel.
fn failure_phase(run: &Run, listener: &Listener, n: u32) -> Res<()> {
    let c = run.table.check;
    let deadline = c.interval * (c.fall + 1) + c.timeout + Duration::from_secs(30);
    let mut times = Vec::new();
    let mut missed = 0;
    let victims = run.table.victims(n);
    for round in victims.chunks(10) {
        for (_, addr) in round {
            net::blackhole(*addr, true)?;
        }
        let blocked = Instant::now();
        let seen = in_ns(DIR_NS, {
            let round = round.to_vec();
            move || net::wait_weights(&round, 0, deadline)
        })??;
        for ((_, addr), at) in round.iter().zip(seen) {
            match (at, listener.last_seen(*addr)) {
                (Some(at), Some(last)) if last <= blocked => times.push(at.duration_since(last).as_secs_f64()),
                _ => missed += 1,
            }
        }
        for (_, addr) in round {
            net::blackhole(*addr, false)?;
        }
        // Back up (rise) before the next round.
        in_ns(DIR_NS, {
            let round = round.to_vec();
            move || net::wait_weights(&round, 1, deadline)
        })??;
    }
    times.sort_by(f64::total_cmp);
    if !times.is_empty() {
        run.record("fail_median_s", times[times.len() / 2])?;
        run.record("fail_max_s", times[times.len() - 1])?;
    }
    let mut line = String::new();
    for t in &times {
        let _ = write!(line, " {t:.2}");
    }
    eprintln!("daemon bench: {} {} failure reactions (s):{line}", run.size, run.tool);
    run.record("missed", f64::from(missed))
}

/// 1 % of the real servers replaced, SIGHUP: time to the new table and the
/// netlink requests the daemon sent meanwhile (and a second after).
fn reload_phase(run: &Run, listener: &Listener, daemon: u32) -> Res<()> {
    std::fs::copy(run.config(true), run.config(false)).map_err(|e| e.to_string())?;
    let capture = in_ns(DIR_NS, net::start_capture)??;
    let t = Instant::now();
    // keepalived reloads on SIGHUP to its parent process, lvsctl on SIGHUP.
    // SAFETY: kill on the daemon's pid.
    unsafe { libc::kill(daemon as i32, libc::SIGHUP) };
    let new = run.table.proc_lines(true);
    let at = in_ns(DIR_NS, move || net::wait_proc_table(&new, Duration::from_secs(300)))??;
    run.record("reload_s", at.duration_since(t).as_secs_f64())?;
    std::thread::sleep(Duration::from_secs(1));
    let c = capture.finish()?;
    eprintln!("daemon bench: {} {} reload requests: {}", run.size, run.tool, c.describe());
    run.record("reload_changes", c.changes as f64)?;
    run.record("reload_requests", (c.changes + c.dumps + c.reads + c.ctrl) as f64)?;
    // The new real servers are checked too before the next phase.
    listener.wait_all_seen(&run.table.addresses(true), Duration::from_secs(120))
}

/// `lvs-bench daemon-report FILE`: both daemons side by side per size.
pub fn report(args: &[String]) -> Res<()> {
    let a = parse_args(args, &[])?;
    let path = a.pos.first().ok_or("daemon-report RESULTS")?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    // (size, tool, metric) -> values (several runs: the median)
    let mut v: std::collections::BTreeMap<(String, String, String), Vec<f64>> = Default::default();
    let mut sizes: Vec<String> = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() != 4 {
            continue;
        }
        if !sizes.iter().any(|s| s == f[0]) {
            sizes.push(f[0].to_owned());
        }
        let x = f[3].parse().unwrap_or(f64::NAN);
        v.entry((f[0].into(), f[1].into(), f[2].into())).or_default().push(x);
    }
    let med = |s: &str, t: &str, m: &str| {
        v.get(&(s.into(), t.into(), m.into())).map(|xs| {
            let mut xs = xs.clone();
            xs.sort_by(f64::total_cmp);
            xs[xs.len() / 2]
        })
    };
    let mut out = String::from(
        "Medians over the runs of each daemon; ratio = lvsctl / keepalived (below 1 is lvsctl ahead \
         for times, CPU, RSS and requests).\n\n| table | measure | lvsctl | keepalived | ratio |\n|---|---|---|---|---|\n",
    );
    for s in &sizes {
        for (m, name, unit) in METRICS {
            let (l, k) = (med(s, "lvsctl", m), med(s, "keepalived", m));
            let cell = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.3} {unit}"));
            let ratio = match (l, k) {
                (Some(l), Some(k)) if k > 0.0 => format!("{:.2}x", l / k),
                _ => "-".to_owned(),
            };
            let _ = writeln!(out, "| {s} | {name} | {} | {} | {ratio} |", cell(l), cell(k));
        }
        if let (Some(f), Some(k)) = (med(s, "floor", "start_s"), med(s, "keepalived", "start_s")) {
            let _ = writeln!(
                out,
                "| {s} | start floor: `lvs-bench apply` of the same table (process start + one library batch; in the lvsctl column) | {f:.3} s | {k:.3} s | {:.2}x |",
                f / k
            );
        }
    }
    print!("{out}");
    Ok(())
}
