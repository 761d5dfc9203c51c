//! `lvs-bench`: the pieces of the bulk-speed benchmark that run inside
//! the test VM. `scripts/bench` drives them; see its header for the whole run.
//!
//! ```text
//! lvs-bench gen --services N --dests M [--change PCT] [--out FILE]
//!     Write a table in `ipvsadm -R` / `ipvsadm -Sn` format: N IPv4 TCP services
//!     (wrr) with M direct-routing destinations each. --change PCT makes PCT % of
//!     the services differ (one destination re-weighted, one replaced).
//! lvs-bench apply FILE       create FILE's table with the library's bulk Ipvs::apply
//! lvs-bench dump [--stats]   read the whole table with Ipvs::dump, print it in
//!                            `ipvsadm -Sn` format (or with counters)
//! lvs-bench reconcile FILE   Ipvs::dump + reconcile::plan(Scope::All) + Ipvs::apply
//! lvs-bench measure --label L --results FILE [--stdin F] [--stdout F] [--stderr F] -- CMD...
//!     Run CMD, append "L<TAB>wall_s<TAB>maxrss_kib<TAB>exit<TAB>user_s<TAB>sys_s" to FILE
//!     (peak RSS from wait4's rusage), exit with CMD's status.
//! lvs-bench report FILE [--notes FILE]   the results as a markdown table
//! lvs-bench floor-report FILE [--notes FILE]   the `scripts/bench --floor` report (src/floor.rs)
//! lvs-bench replay [--services N] [--dests M] [--reps R] [--stats]
//!     No kernel needed: parse the datagrams a dump of the generated table
//!     brings and print it as `dump` does, R times (src/replay.rs; for callgrind)
//! lvs-bench nlcount --dev NLMON -- CMD...
//!     Run CMD while capturing the generic netlink traffic of this network
//!     namespace on the nlmon device NLMON; print the requests CMD sent by kind:
//!     dumps, reads, and changes (any NEW/SET/DEL/ZERO/FLUSH command).
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use ipvs::reconcile::{plan, DesiredService, Scope};
use ipvs::{Destination, Forward, Ipvs, Op, Protocol, Scheduler, Service, ServiceKey};

mod daemon;
mod floor;
mod replay;

use lvs_bench::{nlmon, Res};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: lvs-bench gen|apply|dump|reconcile|measure|report ... (see the source header)");
        return ExitCode::from(2);
    };
    let r = match cmd.as_str() {
        "gen" => gen(rest).map(|()| ExitCode::SUCCESS),
        "apply" => with_runtime(apply(rest)),
        "dump" => with_runtime(dump(rest)),
        "reconcile" => with_runtime(reconcile(rest)),
        "measure" => measure(rest),
        "report" => report(rest).map(|()| ExitCode::SUCCESS),
        "floor-report" => floor::report(rest).map(|()| ExitCode::SUCCESS),
        "nlcount" => nlcount(rest),
        "replay" => replay::run(rest).map(|()| ExitCode::SUCCESS),
        "daemon" => daemon::run(rest),
        "daemon-gen" => daemon::gen(rest).map(|()| ExitCode::SUCCESS),
        "daemon-report" => daemon::report(rest).map(|()| ExitCode::SUCCESS),
        other => Err(format!("unknown command {other:?}")),
    };
    match r {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lvs-bench {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn with_runtime(f: impl std::future::Future<Output = Res<ExitCode>>) -> Res<ExitCode> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("runtime: {e}"))?.block_on(f)
}

/// `--name VALUE` options and positional arguments.
struct Args {
    opts: BTreeMap<String, String>,
    flags: Vec<String>,
    pos: Vec<String>,
}

fn parse_args(args: &[String], with_value: &[&str]) -> Res<Args> {
    let mut a = Args { opts: BTreeMap::new(), flags: vec![], pos: vec![] };
    let mut it = args.iter();
    while let Some(x) = it.next() {
        if let Some(name) = x.strip_prefix("--") {
            if with_value.contains(&name) {
                let v = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                a.opts.insert(name.to_owned(), v.clone());
            } else {
                a.flags.push(name.to_owned());
            }
        } else {
            a.pos.push(x.clone());
        }
    }
    Ok(a)
}

impl Args {
    fn num(&self, name: &str, default: Option<u32>) -> Res<u32> {
        match self.opts.get(name) {
            Some(v) => v.parse().map_err(|e| format!("--{name} {v}: {e}")),
            None => default.ok_or_else(|| format!("--{name} is required")),
        }
    }
}

// ---- the generated table --------------------------------------------------

/// Virtual service `i`: 10.1.0.1 + i, port 80.
fn vip(i: u32) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 1)) + i).into(), 80)
}

/// Destination `j` of service `i`: 10.128.0.1 + i*m + j (inside 10.128.0.0/9), port 80.
/// `replaced` ones (the changed tables) live in 10.192.0.0/10 instead.
fn rip(i: u32, j: u32, m: u32, replaced: bool) -> SocketAddr {
    let base = if replaced { Ipv4Addr::new(10, 192, 0, 1) } else { Ipv4Addr::new(10, 128, 0, 1) };
    SocketAddr::new(Ipv4Addr::from(u32::from(base) + i * m + j).into(), 80)
}

/// Whether service `i` differs in the table changed by `pct` %.
fn changed(i: u32, pct: u32) -> bool {
    pct > 0 && (i * pct) % 100 < pct
}

fn gen(args: &[String]) -> Res<()> {
    let a = parse_args(args, &["services", "dests", "change", "out"])?;
    let n = a.num("services", None)?;
    let m = a.num("dests", Some(10))?;
    let pct = a.num("change", Some(0))?;
    if m < 2 && pct > 0 {
        return Err("--change needs at least 2 destinations per service".into());
    }
    if u64::from(n) * u64::from(m) > 4_000_000 {
        return Err("table too large for the address plan (10.128.0.0/10)".into());
    }
    let out: Box<dyn Write> = match a.opts.get("out") {
        Some(p) => Box::new(File::create(p).map_err(|e| format!("{p}: {e}"))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = BufWriter::with_capacity(1 << 16, out);
    for i in 0..n {
        let v = vip(i);
        let c = changed(i, pct);
        writeln!(w, "-A -t {v} -s wrr").map_err(|e| e.to_string())?;
        for j in 0..m {
            let mut weight = 1 + (i + j) % 10;
            if c && j == 0 {
                weight += 10;
            }
            let r = rip(i, j, m, c && j == 1);
            writeln!(w, "-a -t {v} -r {r} -g -w {weight}").map_err(|e| e.to_string())?;
        }
    }
    w.flush().map_err(|e| e.to_string())
}

/// Parse the subset of `ipvsadm -R` lines `gen` writes (and a bit more:
/// -t/-u, -g/-m/-i, -s, -w) into the desired table, in file order.
fn parse_rules(text: &str) -> Res<Vec<DesiredService>> {
    let mut out: Vec<DesiredService> = Vec::new();
    let mut index: std::collections::HashMap<ServiceKey, usize> = std::collections::HashMap::new();
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |what: &str| format!("line {}: {what}: {line}", ln + 1);
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let (mut key, mut sched, mut real, mut fwd, mut weight) = (None, Scheduler::Wlc, None, Forward::Route, 1u32);
        while let Some(w) = words.next() {
            let mut val = || words.next().ok_or_else(|| err("option needs a value"));
            match w {
                "-t" | "-u" => {
                    let addr: SocketAddr = val()?.parse().map_err(|_| err("bad address"))?;
                    let protocol = if w == "-t" { Protocol::Tcp } else { Protocol::Udp };
                    key = Some(ServiceKey::Inet { protocol, addr });
                }
                "-s" => sched = Scheduler::from_name(val()?).map_err(|e| err(&e.to_string()))?,
                "-r" => real = Some(val()?.parse::<SocketAddr>().map_err(|_| err("bad real server"))?),
                "-w" => weight = val()?.parse().map_err(|_| err("bad weight"))?,
                "-g" => fwd = Forward::Route,
                "-m" => fwd = Forward::Masq,
                "-i" => fwd = Forward::Tunnel(ipvs::Tunnel::Ipip),
                _ => return Err(err("unsupported option")),
            }
        }
        let key = key.ok_or_else(|| err("no service"))?;
        match verb {
            "-A" => {
                index.insert(key, out.len());
                out.push(DesiredService { service: Service::new(key, sched), destinations: vec![] });
            }
            "-a" => {
                let i = *index.get(&key).ok_or_else(|| err("real server of an unknown service"))?;
                let addr = real.ok_or_else(|| err("no real server"))?;
                out[i].destinations.push(Destination::new(addr, fwd).with_weight(weight));
            }
            _ => return Err(err("unsupported command")),
        }
    }
    Ok(out)
}

fn read_rules(path: &str) -> Res<Vec<DesiredService>> {
    let mut text = String::new();
    File::open(path).and_then(|mut f| f.read_to_string(&mut text)).map_err(|e| format!("{path}: {e}"))?;
    parse_rules(&text)
}

async fn connect() -> Res<Ipvs> {
    Ipvs::connect().await.map_err(|e| format!("connect: {e}"))
}

/// Apply ops, print how many there were and every failure; non-zero exit on any.
async fn apply_ops(h: &Ipvs, ops: &[Op]) -> Res<ExitCode> {
    let res = h.apply(ops).await.map_err(|e| format!("apply: {e}"))?;
    if let Some(e) = res.interrupted() {
        eprintln!("cut short: {e}");
    }
    let mut failed = 0;
    for (r, op) in res.iter().zip(ops) {
        if !r.is_done() {
            failed += 1;
            if failed <= 20 {
                eprintln!("failed: {op}: {r:?}");
            }
        }
    }
    println!("ops={} failed={failed}", ops.len());
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn apply(args: &[String]) -> Res<ExitCode> {
    let a = parse_args(args, &[])?;
    let path = a.pos.first().ok_or("apply FILE")?;
    let desired = read_rules(path)?;
    // Against an empty table the plan is "add everything", built without a dump.
    let mut ops = Vec::with_capacity(desired.iter().map(|d| 1 + d.destinations.len()).sum());
    for d in desired {
        let key = d.service.key;
        ops.push(Op::AddService(d.service));
        ops.extend(d.destinations.into_iter().map(|x| Op::AddDestination(key, x)));
    }
    let h = connect().await?;
    apply_ops(&h, &ops).await
}

async fn dump(args: &[String]) -> Res<ExitCode> {
    let a = parse_args(args, &[])?;
    let stats = a.flags.iter().any(|f| f == "stats");
    let h = connect().await?;
    let table = h.dump().await.map_err(|e| format!("dump: {e}"))?;
    write_table(&mut std::io::stdout().lock(), &table, stats)?;
    Ok(ExitCode::SUCCESS)
}

/// The table as `lvs-bench dump` prints it: `ipvsadm -Sn` lines in the
/// kernel's order (with counters when `stats`). Written as a program that
/// prints a large table should: one buffered writer, numbers and IPv4
/// addresses without the formatting machinery (which took half of the user
/// time of `lvs-bench replay` with `write!`), no allocation per line.
fn write_table(out: &mut impl Write, table: &ipvs::Table, stats: bool) -> Res<()> {
    let mut w = BufWriter::with_capacity(1 << 16, out);
    let mut line = String::with_capacity(256);
    let mut head = String::with_capacity(64);
    for (s, dests) in table {
        line.clear();
        let (proto, addr) = match s.service.key {
            ServiceKey::Inet { protocol, addr } => (protocol, addr),
            ServiceKey::Fwmark { .. } => return Err("fwmark services are not in the generated tables".into()),
        };
        let p = match proto {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
            _ => "--sctp-service",
        };
        // "-A -t ADDR" and, for the real servers, "-a -t ADDR".
        head.clear();
        head.push(' ');
        head.push_str(p);
        head.push(' ');
        push_addr(&mut head, addr);
        line.push_str("-A");
        line.push_str(&head);
        line.push_str(" -s ");
        line.push_str(s.service.scheduler.name());
        if stats {
            let st = &s.stats;
            let _ = write!(line, " conns {} inpkts {} outpkts {}", st.conns, st.in_pkts, st.out_pkts);
        }
        line.push('\n');
        w.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        for d in dests {
            line.clear();
            let f = match d.destination.forward {
                Forward::Masq => "-m",
                Forward::Tunnel(_) => "-i",
                _ => "-g",
            };
            line.push_str("-a");
            line.push_str(&head);
            line.push_str(" -r ");
            push_addr(&mut line, d.destination.addr);
            line.push(' ');
            line.push_str(f);
            line.push_str(" -w ");
            push_u64(&mut line, d.destination.weight.into());
            if stats {
                let _ = write!(line, " conns {} inpkts {}", d.stats.conns, d.stats.in_pkts);
            }
            line.push('\n');
            w.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        }
    }
    w.flush().map_err(|e| e.to_string())
}

/// `{n}`.
fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

/// `{a}` of a socket address (IPv4 by hand, IPv6 with the formatter).
fn push_addr(out: &mut String, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            for (k, o) in v4.ip().octets().into_iter().enumerate() {
                if k > 0 {
                    out.push('.');
                }
                push_u64(out, o.into());
            }
            out.push(':');
            push_u64(out, a.port().into());
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{a}");
        }
    }
}

async fn reconcile(args: &[String]) -> Res<ExitCode> {
    let a = parse_args(args, &[])?;
    let path = a.pos.first().ok_or("reconcile FILE")?;
    // The input is parsed on a blocking thread while the table is read, as
    // an embedding program would do it (and `lvsctl restore --replace` does).
    let path = path.clone();
    let parse = tokio::task::spawn_blocking(move || read_rules(&path));
    let h = connect().await?;
    let current = h.dump().await.map_err(|e| format!("dump: {e}"))?;
    let desired = parse.await.map_err(|e| format!("parse: {e}"))??;
    let ops = plan(&current, &desired, &Scope::All);
    drop(current);
    apply_ops(&h, &ops).await
}

// ---- the measuring wrapper --------------------------------------------------

fn redirect(path: Option<&String>, write: bool) -> Res<Stdio> {
    Ok(match path {
        None => Stdio::inherit(),
        Some(p) if write => File::create(p).map_err(|e| format!("{p}: {e}"))?.into(),
        Some(p) => File::open(p).map_err(|e| format!("{p}: {e}"))?.into(),
    })
}

fn measure(args: &[String]) -> Res<ExitCode> {
    let split = args.iter().position(|a| a == "--").ok_or("measure ... -- CMD ARGS...")?;
    let a = parse_args(&args[..split], &["label", "results", "stdin", "stdout", "stderr"])?;
    let cmd = &args[split + 1..];
    let prog = cmd.first().ok_or("no command after --")?;
    let label = a.opts.get("label").ok_or("--label is required")?;
    let results = a.opts.get("results").ok_or("--results is required")?;
    if label.contains('\t') {
        return Err("a label cannot hold a tab".into());
    }
    let mut c = Command::new(prog);
    c.args(&cmd[1..])
        .stdin(redirect(a.opts.get("stdin"), false)?)
        .stdout(redirect(a.opts.get("stdout"), true)?)
        .stderr(redirect(a.opts.get("stderr"), true)?);
    let start = Instant::now();
    let child = c.spawn().map_err(|e| format!("cannot run {prog}: {e}"))?;
    let pid = child.id() as libc::pid_t;
    // SAFETY: all-zero is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: wait4 on our own child with valid out-pointers. `child` is
        // never waited on by std afterwards (it is only dropped).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4: {e}"));
        }
    }
    let wall = start.elapsed().as_secs_f64();
    drop(child);
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let line =
        format!("{label}\t{wall:.6}\t{}\t{code}\t{:.6}\t{:.6}\n", ru.ru_maxrss, tv(ru.ru_utime), tv(ru.ru_stime));
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(results)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| format!("{results}: {e}"))?;
    eprintln!("measured: {}", line.trim_end());
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

// ---- counting requests on an nlmon device -------------------------------------

fn nlcount(args: &[String]) -> Res<ExitCode> {
    let split = args.iter().position(|a| a == "--").ok_or("nlcount --dev NLMON -- CMD ARGS...")?;
    let a = parse_args(&args[..split], &["dev"])?;
    let cmd = &args[split + 1..];
    let prog = cmd.first().ok_or("no command after --")?;
    let capture = nlmon::Capture::start(a.opts.get("dev").ok_or("--dev is required")?)?;
    let status = Command::new(prog).args(&cmd[1..]).status().map_err(|e| format!("cannot run {prog}: {e}"))?;
    // Let the last packets arrive, then stop at the next receive timeout.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let c = capture.finish()?;
    println!("requests: {} ({} packets captured, 0 dropped)", c.describe(), c.packets);
    Ok(ExitCode::from(status.code().unwrap_or(128).clamp(0, 255) as u8))
}

// ---- the report ---------------------------------------------------------------

/// One measured run.
#[derive(Clone, Copy)]
struct Run {
    wall: f64,
    rss_kib: u64,
    exit: i32,
}

/// Median wall time and largest peak RSS of the runs of one label.
fn summary(runs: &[Run]) -> Option<(f64, u64, bool)> {
    if runs.is_empty() {
        return None;
    }
    let mut w: Vec<f64> = runs.iter().map(|r| r.wall).collect();
    w.sort_by(f64::total_cmp);
    let med = if w.len() % 2 == 1 { w[w.len() / 2] } else { (w[w.len() / 2 - 1] + w[w.len() / 2]) / 2.0 };
    let rss = runs.iter().map(|r| r.rss_kib).max().unwrap_or(0);
    Some((med, rss, runs.iter().all(|r| r.exit == 0)))
}

fn report(args: &[String]) -> Res<()> {
    let a = parse_args(args, &["notes"])?;
    let path = a.pos.first().ok_or("report RESULTS")?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    // label = "SIZE|OPERATION|TOOL"
    let mut runs: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 4 {
            continue;
        }
        let run = Run {
            wall: f[1].parse().unwrap_or(f64::NAN),
            rss_kib: f[2].parse().unwrap_or(0),
            exit: f[3].parse().unwrap_or(-1),
        };
        runs.entry(f[0].to_owned()).or_default().push(run);
    }
    let get = |size: &str, op: &str, tool: &str| runs.get(&format!("{size}|{op}|{tool}")).and_then(|r| summary(r));
    let cell = |s: Option<(f64, u64, bool)>| match s {
        None => "-".to_owned(),
        Some((t, rss, ok)) => {
            format!("{t:.3} s, {:.1} MiB{}", rss as f64 / 1024.0, if ok { "" } else { " **FAILED**" })
        }
    };
    let ratio = |base: Option<(f64, u64, bool)>, x: Option<(f64, u64, bool)>| match (base, x) {
        (Some((b, ..)), Some((t, ..))) if t > 0.0 => format!("{:.1}x", b / t),
        _ => "-".to_owned(),
    };
    let mut sizes: Vec<&str> = runs.keys().filter_map(|k| k.split('|').next()).collect();
    sizes.sort_by_key(|s| s.split('x').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0));
    sizes.dedup();
    let rows: [(&str, &str, &str, &str, &str); 6] = [
        ("create", "create", "ipvsadm -R", "lvsctl restore", "library apply"),
        ("save", "dump (save)", "ipvsadm -Sn", "lvsctl save", "library dump"),
        ("stats", "list --stats", "ipvsadm -Ln --stats", "lvsctl list --stats", "library dump --stats"),
        ("reconcile0", "reconcile 0 %", "", "lvsctl restore --replace", "library reconcile"),
        ("reconcile1", "reconcile 1 %", "", "lvsctl restore --replace", "library reconcile"),
        ("reconcile10", "reconcile 10 %", "", "lvsctl restore --replace", "library reconcile"),
    ];
    let mut out = String::new();
    out.push_str(
        "Times are the median wall-clock time of the runs, RSS the largest peak RSS (wait4 ru_maxrss); \
         ratios are ipvsadm's time divided by the tool's (higher is faster). Reconcile rows compare \
         instead with one dump of the same table timed right before it (`lvsctl save`; `lvs-bench \
         dump` for the library): 1.0x or more means no longer than one dump.\n\n",
    );
    out.push_str("| table | operation | ipvsadm | lvsctl | library | lvsctl vs ipvsadm | library vs ipvsadm |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for size in &sizes {
        for (op, name, t_ipvsadm, t_lvsctl, t_lib) in rows {
            let (i, l, b) = (get(size, op, t_ipvsadm), get(size, op, t_lvsctl), get(size, op, t_lib));
            if i.is_none() && l.is_none() && b.is_none() {
                continue;
            }
            // A reconcile is compared with one dump of the same table, timed
            // right before it in the same namespace.
            let (base, base_lib) = if op.starts_with("reconcile") {
                (get(size, op, "lvsctl save"), get(size, op, "library dump"))
            } else {
                (i, i)
            };
            let label = |t: &str| if t.is_empty() { String::new() } else { format!("`{t}` ") };
            let _ = writeln!(
                out,
                "| {size} | {name} | {}{} | {}{} | {}{} | {} | {} |",
                label(t_ipvsadm),
                if t_ipvsadm.is_empty() { "n/a".to_owned() } else { cell(i) },
                label(t_lvsctl),
                cell(l),
                label(t_lib),
                cell(b),
                if op.starts_with("reconcile") { format!("{} of one save", ratio(base, l)) } else { ratio(base, l) },
                if op.starts_with("reconcile") {
                    format!("{} of one dump", ratio(base_lib, b))
                } else {
                    ratio(base_lib, b)
                },
            );
        }
    }
    if let Some(n) = a.opts.get("notes") {
        if let Ok(notes) = std::fs::read_to_string(n) {
            out.push('\n');
            out.push_str(&notes);
        }
    }
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written printing prints what `write!` of the same parts does.
    #[test]
    fn write_table_is_the_formatted_table() {
        let mut table: ipvs::Table = Vec::new();
        for (k, a) in ["10.1.0.1:80", "0.0.0.0:0", "255.255.255.255:65535", "[2001:db8::1]:443"].iter().enumerate() {
            let addr: SocketAddr = a.parse().unwrap();
            let svc = ipvs::ServiceEntry::from(Service::new(ServiceKey::tcp(addr), Scheduler::Wrr));
            let d = Destination::new(addr, [Forward::Route, Forward::Masq][k % 2]).with_weight(k as u32 * 1000);
            table.push((
                svc,
                vec![ipvs::DestinationEntry::from(d.clone()), ipvs::DestinationEntry::from(d.with_weight(0))],
            ));
        }
        let mut want = String::new();
        for (s, d) in &table {
            let ServiceKey::Inet { addr, .. } = s.service.key else { unreachable!() };
            want += &format!("-A -t {addr} -s wrr\n");
            for d in d {
                let f = if d.destination.forward == Forward::Masq { "-m" } else { "-g" };
                want += &format!("-a -t {addr} -r {} {f} -w {}\n", d.destination.addr, d.destination.weight);
            }
        }
        let mut got = Vec::new();
        write_table(&mut got, &table, false).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }

    fn generated(n: u32, m: u32, pct: u32) -> String {
        let dir = std::env::temp_dir().join(format!("lvs-bench-{}-{n}-{m}-{pct}", std::process::id()));
        let p = dir.to_str().unwrap().to_owned();
        gen(&["--services", &n.to_string(), "--dests", &m.to_string(), "--change", &pct.to_string(), "--out", &p]
            .map(String::from))
        .unwrap();
        let t = std::fs::read_to_string(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        t
    }

    #[test]
    fn generated_table_has_the_ipvsadm_save_format() {
        let t = generated(2, 2, 0);
        assert_eq!(
            t,
            "-A -t 10.1.0.1:80 -s wrr\n-a -t 10.1.0.1:80 -r 10.128.0.1:80 -g -w 1\n-a -t 10.1.0.1:80 -r 10.128.0.2:80 -g -w 2\n\
             -A -t 10.1.0.2:80 -s wrr\n-a -t 10.1.0.2:80 -r 10.128.0.3:80 -g -w 2\n-a -t 10.1.0.2:80 -r 10.128.0.4:80 -g -w 3\n"
        );
        let d = parse_rules(&t).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].destinations[1].weight, 3);
    }

    #[test]
    fn change_plans_three_ops_per_changed_service() {
        let base = parse_rules(&generated(1000, 10, 0)).unwrap();
        for (pct, want) in [(0, 0), (1, 10 * 3), (10, 100 * 3)] {
            let changed = parse_rules(&generated(1000, 10, pct)).unwrap();
            let current: Vec<_> = base
                .iter()
                .map(|d| {
                    (
                        ipvs::ServiceEntry::from(d.service.clone()),
                        d.destinations.iter().map(|x| ipvs::DestinationEntry::from(x.clone())).collect(),
                    )
                })
                .collect();
            assert_eq!(plan(&current, &changed, &Scope::All).len(), want, "{pct} %");
        }
    }
}
