//! The `ipvsadm -R` / `ipvsadm -S` line format: one ipvsadm command per line,
//! read as an argv split on whitespace (`-A -t 10.0.0.1:80 -s rr`, `-a -t
//! 10.0.0.1:80 -r 10.0.0.2:80 -m -w 2`). Lines use the same option
//! definitions as `lvsctl service` and `lvsctl real` ([`super::spec`]).
//!
//! Accepted commands: `-A -E -D -a -e -d` (long forms too). Blank lines and
//! lines starting with `#` are skipped (as the `ipvsadm-restore` wrapper does).
//! Everything is parsed and checked before anything is applied; the first bad
//! line is reported with its number.

use std::net::SocketAddr;

use rustc_hash::FxHashMap;

use clap::Parser;
use ipvs::reconcile::DesiredService;
use ipvs::{Forward, Op, Protocol, ServiceKey};

use super::spec::{
    build_destination, build_service, destination_with, inet_key, real_server_addr, reject_dest_opts,
    reject_service_opts, DestOpts, ServiceKeyArgs, ServiceOpts,
};

/// One line as clap sees it.
#[derive(Debug, Default, Parser)]
#[command(name = "ipvsadm", no_binary_name = true, disable_help_flag = true, disable_version_flag = true)]
struct Line {
    #[arg(short = 'A', long = "add-service")]
    add_service: bool,
    #[arg(short = 'E', long = "edit-service")]
    edit_service: bool,
    #[arg(short = 'D', long = "delete-service")]
    delete_service: bool,
    #[arg(short = 'a', long = "add-server")]
    add_server: bool,
    #[arg(short = 'e', long = "edit-server")]
    edit_server: bool,
    #[arg(short = 'd', long = "delete-server")]
    delete_server: bool,
    #[arg(short = 'r', long = "real-server")]
    real_server: Option<String>,
    #[command(flatten)]
    key: ServiceKeyArgs,
    #[command(flatten)]
    svc: ServiceOpts,
    #[command(flatten)]
    dest: DestOpts,
}

/// A parsed line: its number (from 1) and the change it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    /// Line number in the input, from 1.
    pub(crate) line: usize,
    /// The change.
    pub(crate) op: Op,
}

/// A bad line: its number and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineError {
    /// Line number in the input, from 1.
    pub(crate) line: usize,
    /// What is wrong, in ipvsadm's words where it has some.
    pub(crate) msg: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

fn no_real_server(l: &Line, command: &str) -> Result<(), String> {
    if l.real_server.is_some() {
        return Err(format!("Illegal 'real-server' option with the '{command}' command"));
    }
    Ok(())
}

/// The lines `save` writes for plain services and real servers (`-A -t
/// ADDR -s SCHED`, `-a -t ADDR -r ADDR -g -w N`: short options each given once,
/// each value a separate word not starting with `-`) read without clap, which
/// costs about a hundred times more per line: restoring 110,000 lines spent
/// most of its time building clap's parser. Anything else is `None`, for clap
/// to parse (and to word its errors). The result goes through the same checks
/// and builders as clap's.
fn fast_line(words: &[&str]) -> Option<Line> {
    let mut l = Line::default();
    let mut i = 0;
    let value = |i: usize| words.get(i + 1).filter(|v| !v.starts_with('-')).map(|v| (*v).to_owned());
    let flag = |b: &mut bool| {
        if *b {
            return None;
        }
        *b = true;
        Some(())
    };
    while i < words.len() {
        let w = words[i];
        let opt = |o: &Option<String>| if o.is_some() { None } else { value(i) };
        match w {
            "-A" => flag(&mut l.add_service)?,
            "-E" => flag(&mut l.edit_service)?,
            "-D" => flag(&mut l.delete_service)?,
            "-a" => flag(&mut l.add_server)?,
            "-e" => flag(&mut l.edit_server)?,
            "-d" => flag(&mut l.delete_server)?,
            "-g" => flag(&mut l.dest.gatewaying)?,
            "-m" => flag(&mut l.dest.masquerading)?,
            "-i" => flag(&mut l.dest.ipip)?,
            "-t" | "-u" | "-s" | "-r" | "-w" => {
                let slot = match w {
                    "-t" => &mut l.key.tcp,
                    "-u" => &mut l.key.udp,
                    "-s" => &mut l.svc.scheduler,
                    "-r" => &mut l.real_server,
                    _ => &mut l.dest.weight,
                };
                *slot = Some(opt(slot)?);
                i += 1;
            }
            _ => return None,
        }
        i += 1;
    }
    // One service and at most one forwarding method: conflicts are clap's to report.
    let methods = [l.dest.gatewaying, l.dest.masquerading, l.dest.ipip].iter().filter(|b| **b).count();
    (l.key.tcp.is_some() != l.key.udp.is_some() && methods <= 1).then_some(l)
}

/// The real-server lines of a saved table (`-a` or `-e`, `-t` or `-u` ADDR,
/// `-r` ADDR, `-g` or `-m` or neither, `-w` N or not; each once, in any
/// order, each value a word not starting with `-`), read straight into their
/// change: they are nearly all of a large input, and even [`fast_line`]'s
/// strings cost a reconcile of 10k x 10 services a fifth of its time on the
/// test VM. Anything else is `None`. The checks are those of the `-a`/`-e`
/// path of [`from_line`] through the same functions.
#[cfg(test)]
fn fast_dest_line(words: &[&str]) -> Option<Result<Op, String>> {
    fast_dest_line_with(words, &mut None)
}

/// The service of the last real-server line read: a saved table lists a
/// service's real servers one after the other, each naming it again.
type LastService<'a> = Option<(&'a str, Protocol, ServiceKey)>;

/// [`fast_dest_line`], reusing the key of `last` when the line names the same
/// service the same way (and keeping this line's there).
fn fast_dest_line_with<'a>(words: &[&'a str], last: &mut LastService<'a>) -> Option<Result<Op, String>> {
    let (mut cmd, mut svc, mut real, mut forward, mut weight) = (None, None, None, None, None);
    let mut i = 0;
    while i < words.len() {
        let value = || words.get(i + 1).copied().filter(|v| !v.starts_with('-'));
        match words[i] {
            c @ ("-a" | "-e") if cmd.is_none() => cmd = Some(c == "-a"),
            "-g" if forward.is_none() => forward = Some(Forward::Route),
            "-m" if forward.is_none() => forward = Some(Forward::Masq),
            p @ ("-t" | "-u") if svc.is_none() => {
                svc = Some((if p == "-t" { Protocol::Tcp } else { Protocol::Udp }, value()?));
                i += 1;
            }
            "-r" if real.is_none() => {
                real = Some(value()?);
                i += 1;
            }
            "-w" if weight.is_none() => {
                weight = Some(value()?);
                i += 1;
            }
            _ => return None,
        }
        i += 1;
    }
    let (add, (protocol, svc), real) = (cmd?, svc?, real?);
    Some((|| {
        let key = match *last {
            Some((s, p, k)) if s == svc && p == protocol => k,
            _ => {
                let k = inet_key(protocol, svc, false)?;
                *last = Some((svc, protocol, k));
                k
            }
        };
        let d = destination_with(&key, real, forward.unwrap_or(Forward::Route), weight, None, None)?;
        Ok(if add { Op::AddDestination(key, d) } else { Op::UpdateDestination(key, d) })
    })())
}

/// Parse one line (already split into words) into the change it asks for.
#[cfg(test)]
pub(crate) fn parse_words(words: &[&str]) -> Result<Op, String> {
    parse_words_with(words, &mut None)
}

/// [`parse_words`] with the service of the previous real-server line.
fn parse_words_with<'a>(words: &[&'a str], last: &mut LastService<'a>) -> Result<Op, String> {
    if let Some(r) = fast_dest_line_with(words, last) {
        return r;
    }
    let l = match fast_line(words) {
        Some(l) => l,
        None => Line::try_parse_from(words).map_err(|e| {
            let s = e.to_string();
            let first = s.lines().next().unwrap_or("invalid line").trim();
            first.strip_prefix("error: ").unwrap_or(first).to_owned()
        })?,
    };
    from_line(l)
}

/// The change a parsed line asks for.
fn from_line(l: Line) -> Result<Op, String> {
    let cmds = [
        (l.add_service, "add-service"),
        (l.edit_service, "edit-service"),
        (l.delete_service, "delete-service"),
        (l.add_server, "add-server"),
        (l.edit_server, "edit-server"),
        (l.delete_server, "delete-server"),
    ];
    let given: Vec<&str> = cmds.iter().filter(|c| c.0).map(|c| c.1).collect();
    let command = match given.as_slice() {
        [] => return Err("no command: a line starts with -A, -E, -D, -a, -e or -d".into()),
        [c] => *c,
        [a, b, ..] => return Err(format!("Illegal command combination: '{a}' and '{b}'")),
    };
    let key = l.key.required_key()?;
    match command {
        "add-service" | "edit-service" => {
            no_real_server(&l, command)?;
            reject_dest_opts(&l.dest, command)?;
            let s = build_service(key, &l.svc)?;
            Ok(if command == "add-service" { Op::AddService(s) } else { Op::UpdateService(s) })
        }
        "delete-service" => {
            no_real_server(&l, command)?;
            reject_service_opts(&l.svc, command)?;
            reject_dest_opts(&l.dest, command)?;
            Ok(Op::DeleteService(key))
        }
        _ => {
            reject_service_opts(&l.svc, command)?;
            let r = l
                .real_server
                .as_deref()
                .ok_or_else(|| format!("You need to supply the 'real-server' option for the '{command}' command"))?;
            if command == "delete-server" {
                reject_dest_opts(&l.dest, command)?;
                return Ok(Op::DeleteDestination(key, real_server_addr(&key, r, None)?));
            }
            let d = build_destination(&key, r, &l.dest)?;
            Ok(if command == "add-server" { Op::AddDestination(key, d) } else { Op::UpdateDestination(key, d) })
        }
    }
}

/// Parse a whole input. Stops at the first bad line.
pub(crate) fn parse_rules(text: &str) -> Result<Vec<Rule>, LineError> {
    let mut out = Vec::with_capacity(text.bytes().filter(|b| *b == b'\n').count() + 1);
    for_each_rule(text, |r| {
        out.push(r);
        Ok(())
    })?;
    Ok(out)
}

/// Parse an input line by line, handing each change to `f`. Stops at the
/// first bad line or the first error of `f`.
fn for_each_rule(text: &str, mut f: impl FnMut(Rule) -> Result<(), LineError>) -> Result<(), LineError> {
    let mut words: Vec<&str> = Vec::new();
    let mut last = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        words.clear();
        words.extend(raw.split_ascii_whitespace());
        if words.is_empty() || words[0].starts_with('#') {
            continue;
        }
        let op = parse_words_with(&words, &mut last).map_err(|msg| LineError { line, msg })?;
        op.validate().map_err(|e| LineError { line, msg: e.to_string() })?;
        f(Rule { line, op })?;
    }
    Ok(())
}

/// The table an input describes, for `restore --replace`: only `-A` and `-a`
/// lines, every real server after its service, nothing twice. Built as the
/// lines are read (a large input's list of changes is never held); the first
/// bad line, of either kind, is reported.
pub(crate) fn parse_desired_table(text: &str) -> Result<Vec<DesiredService>, LineError> {
    let mut t = TableBuilder::default();
    for_each_rule(text, |r| t.add(r))?;
    Ok(t.out)
}

/// Real servers of a service past which duplicates are found by hashing.
const SCAN_MAX: usize = 32;

/// The table being built by [`parse_desired_table`].
#[derive(Default)]
struct TableBuilder {
    out: Vec<DesiredService>,
    /// Position in `out` of each service.
    svc_line: FxHashMap<ServiceKey, usize>,
    /// Per service (by position in `out`): its line, and the lines of its real servers.
    lines: Vec<(usize, Vec<usize>)>,
    /// Real servers of services with more than SCAN_MAX: (service position, address) -> position.
    many: FxHashMap<(usize, SocketAddr), usize>,
}

impl TableBuilder {
    fn add(&mut self, r: Rule) -> Result<(), LineError> {
        let Self { out, svc_line, lines, many } = self;
        let line = r.line;
        match r.op {
            Op::AddService(s) => {
                if let Some(idx) = svc_line.get(&s.key) {
                    return Err(LineError {
                        line,
                        msg: format!("service {} is already defined on line {}", s.key, lines[*idx].0),
                    });
                }
                svc_line.insert(s.key, out.len());
                lines.push((line, Vec::new()));
                out.push(DesiredService { service: s, destinations: vec![] });
            }
            Op::AddDestination(k, d) => {
                let Some(&idx) = svc_line.get(&k) else {
                    return Err(LineError {
                        line,
                        msg: format!("real server {} belongs to service {k}, which no earlier -A line defines", d.addr),
                    });
                };
                // A real server given twice is an input error. A service
                // usually has a handful: a scan beats hashing every one; past
                // SCAN_MAX its real servers go into `many` (position by address).
                let dests = &mut out[idx].destinations;
                let n = dests.len();
                let dup = if n < SCAN_MAX {
                    dests.iter().position(|x| x.addr == d.addr)
                } else {
                    if n == SCAN_MAX {
                        many.extend(dests.iter().enumerate().map(|(p, x)| ((idx, x.addr), p)));
                    }
                    match many.entry((idx, d.addr)) {
                        std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(n);
                            None
                        }
                    }
                };
                if let Some(pos) = dup {
                    return Err(LineError {
                        line,
                        msg: format!("real server {} of {k} is already defined on line {}", d.addr, lines[idx].1[pos]),
                    });
                }
                dests.push(d);
                lines[idx].1.push(line);
            }
            other => {
                return Err(LineError {
                    line,
                    msg: format!("restore --replace reads a table: only -A and -a lines, not \"{other}\""),
                })
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs::{Destination, Family, Forward, Netmask, Persistence, SchedFlags, Scheduler, Service};

    fn p(line: &str) -> Result<Op, String> {
        parse_words(&line.split_whitespace().collect::<Vec<_>>())
    }

    /// Every line the clap-free path takes gives what clap's gives, errors
    /// included; the lines it must leave to clap are left.
    #[test]
    fn fast_path_agrees_with_clap() {
        let taken = [
            "-A -t 10.1.0.1:80 -s wrr",
            "-A -u 10.1.0.1:53",
            "-A -t [2001:db8::1]:443 -s rr",
            "-E -t 10.1.0.1:80 -s wlc",
            "-D -t 10.1.0.1:80",
            "-a -t 10.1.0.1:80 -r 10.128.0.1:80 -g -w 3",
            "-a -t 10.1.0.1:80 -r 10.128.0.1 -m -w 0",
            "-a -u 10.1.0.1:53 -r 10.128.0.1:5353 -m",
            "-a -t 10.1.0.1:80 -r 10.128.0.1:80 -i",
            "-e -t 10.1.0.1:80 -r 10.128.0.1:80 -g -w 9",
            "-d -t 10.1.0.1:80 -r 10.128.0.1:80",
            "-a -t 10.1.0.1:80 -r 10.128.0.1:81 -g",
            "-a -t 10.1.0.1:80 -r 10.128.0.1:80 -w 70000",
            "-a -t 10.1.0.1:80 -r nonsense -g",
            "-A -t 10.1.0.1:80 -s nosuch",
            "-A -t 10.1.0.1:80 -r 10.128.0.1:80",
            "-A -a -t 10.1.0.1:80",
            "-t 10.1.0.1:80 -s rr",
            "-A -t 10.1.0.1 -s rr",
            "-D -t 10.1.0.1:80 -w 2",
        ];
        for line in taken {
            let words: Vec<&str> = line.split_whitespace().collect();
            let fast = fast_line(&words).unwrap_or_else(|| panic!("{line}: not taken by the fast path"));
            let clap = Line::try_parse_from(&words).unwrap_or_else(|e| panic!("{line}: clap: {e}"));
            assert_eq!(from_line(fast), from_line(clap), "{line}");
        }
        let left = [
            "-A -t 10.1.0.1:80 -s rr -p 300",
            "-A -t 10.1.0.1:80 -s",
            "-A -t 10.1.0.1:80 -t 10.1.0.2:80",
            "-A -t 10.1.0.1:80 -u 10.1.0.1:80",
            "-A -A -t 10.1.0.1:80",
            "-a -t 10.1.0.1:80 -r 10.128.0.1:80 -g -m",
            "-a -t 10.1.0.1:80 -r 10.128.0.1:80 -w -1",
            "-a -t 10.1.0.1:80 -r 10.128.0.1:80 -gw 2",
            "--add-service -t 10.1.0.1:80",
            "-A -f 1 -s rr",
            "-A -t 10.1.0.1:80 -s=rr",
            "-A",
        ];
        for line in left {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(fast_line(&words).is_none(), "{line}: the fast path must leave it to clap");
            assert!(fast_dest_line(&words).is_none(), "{line}: the real-server path must leave it to clap");
        }
        // The real-server path: what it takes it reads as clap does.
        let dest_lines = [
            "-a -t 10.1.0.1:80 -r 10.128.0.1:80 -g -w 3",
            "-a -t 10.1.0.1:80 -r 10.128.0.1 -m -w 0",
            "-a -u 10.1.0.1:53 -r 10.128.0.1:5353 -m",
            "-e -t 10.1.0.1:80 -r 10.128.0.1:80 -g -w 9",
            "-a -t 10.1.0.1:80 -r 10.128.0.1:81 -g",
            "-w 2 -r 10.128.0.1:81 -m -t 10.1.0.1:80 -a",
            "-a -t [2001:db8::1]:80 -r [2001:db8::2]:8080 -m -w 4",
            "-a -t 10.1.0.1:80 -r 10.128.0.1:80 -w 70000",
            "-a -t 10.1.0.1:80 -r nonsense -g",
            "-a -t 10.1.0.1:80 -r 2001:db8::2 -m",
            "-a -t 0.0.0.0:80 -r 10.128.0.1 -g",
            "-a -t 10.1.0.999:80 -r 10.128.0.1 -g",
            "-a -t 10.1.0.1 -r 10.128.0.1 -m",
            "-e -u 10.1.0.1:53 -r 10.128.0.1:53 -w 65535",
        ];
        for line in dest_lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            let fast = fast_dest_line(&words).unwrap_or_else(|| panic!("{line}: not taken by the real-server path"));
            let clap = Line::try_parse_from(&words).unwrap_or_else(|e| panic!("{line}: clap: {e}"));
            assert_eq!(fast, from_line(clap), "{line}");
        }
        for line in
            ["-A -t 10.1.0.1:80 -s wrr", "-d -t 10.1.0.1:80 -r 10.128.0.1:80", "-a -t 10.1.0.1:80 -r 10.128.0.1:80 -i"]
        {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(fast_dest_line(&words).is_none(), "{line}: the real-server path must leave it");
        }
    }

    #[test]
    fn service_lines() {
        let op = p("-A -t 10.0.0.10:80 -s sh -p 360 -M 255.255.255.0 --pe sip -b sh-port").unwrap();
        let mut s = Service::new(ServiceKey::tcp("10.0.0.10:80".parse().unwrap()), Scheduler::Sh);
        s.persistence =
            Some(Persistence { timeout: 360, netmask: Some(Netmask::V4("255.255.255.0".parse().unwrap())) });
        s.pe = Some("sip".into());
        s.sched_flags = SchedFlags::FLAG_2;
        assert_eq!(op, Op::AddService(s));
        // -p without a value before another option: the default 360.
        let Op::AddService(s) = p("-A -u 10.0.0.10:53 -p -o").unwrap() else { panic!() };
        assert_eq!(s.persistence, Some(Persistence { timeout: 360, netmask: None }));
        assert!(s.one_packet);
        let Op::AddService(s) = p("-A -f 2 -6 -s wrr -p 100 -M 64").unwrap() else { panic!() };
        assert_eq!(s.key, ServiceKey::fwmark(2, Family::Inet6));
        assert_eq!(s.persistence.unwrap().netmask, Some(Netmask::V6(64)));
        let Op::UpdateService(s) = p("--edit-service --sctp-service [2001:db8::1]:3868").unwrap() else { panic!() };
        assert_eq!(s.scheduler, Scheduler::Wlc);
        assert_eq!(p("-D -t 10.0.0.1:80").unwrap(), Op::DeleteService(ServiceKey::tcp("10.0.0.1:80".parse().unwrap())));
    }

    #[test]
    fn real_server_lines() {
        let k = ServiceKey::tcp("10.0.0.10:80".parse().unwrap());
        assert_eq!(
            p("-a -t 10.0.0.10:80 -r 10.1.0.3:8080 -m -w 7 -x 100 -y 50").unwrap(),
            Op::AddDestination(
                k,
                Destination::new("10.1.0.3:8080".parse().unwrap(), Forward::Masq)
                    .with_weight(7)
                    .with_thresholds(100, 50)
            )
        );
        assert_eq!(
            p("-e -t 10.0.0.10:80 -r 10.1.0.2").unwrap(),
            Op::UpdateDestination(k, Destination::new("10.1.0.2:80".parse().unwrap(), Forward::Route))
        );
        assert_eq!(
            p("-d -t 10.0.0.10:80 -r 10.1.0.2:80").unwrap(),
            Op::DeleteDestination(k, "10.1.0.2:80".parse().unwrap())
        );
        let Op::AddDestination(_, d) =
            p("-a -t 10.0.0.10:80 -r 10.1.0.5:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            d.forward,
            Forward::Tunnel(ipvs::Tunnel::Gue { port: 6080, checksum: ipvs::TunnelChecksum::NoCsum })
        );
    }

    #[test]
    fn bad_lines_say_why() {
        assert_eq!(p("-A -t 10.0.0.999:80").unwrap_err(), "illegal virtual server address[:port] specified");
        assert!(p("-A -t 10.0.0.1:80 --bogus").unwrap_err().contains("--bogus"));
        assert!(p("-t 10.0.0.1:80").unwrap_err().starts_with("no command"));
        assert!(p("-A -a -t 10.0.0.1:80").unwrap_err().starts_with("Illegal command combination"));
        assert_eq!(
            p("-a -t 10.0.0.1:80").unwrap_err(),
            "You need to supply the 'real-server' option for the 'add-server' command"
        );
        assert_eq!(p("-A -t 10.0.0.1:80 -w 3").unwrap_err(), "Illegal 'weight' option with the 'add-service' command");
        assert_eq!(
            p("-a -t 10.0.0.1:80 -r 10.1.0.1 -s rr").unwrap_err(),
            "Illegal 'scheduler' option with the 'add-server' command"
        );
        assert_eq!(
            p("-D -t 10.0.0.1:80 -r 10.1.0.1").unwrap_err(),
            "Illegal 'real-server' option with the 'delete-service' command"
        );
        assert!(p("-A -s rr").unwrap_err().contains("service-address"));
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let text =
            "# comment\n-A -t 10.0.0.1:80 -s rr\n\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -w 70000\n-A -t 10.0.0.2:80\n";
        let e = parse_rules(text).unwrap_err();
        assert_eq!(e, LineError { line: 4, msg: "illegal weight specified".into() });
        assert_eq!(e.to_string(), "line 4: illegal weight specified");
        let ok = parse_rules("-A -t 10.0.0.1:80 -s rr\n  \n# x\n-a -t 10.0.0.1:80 -r 10.1.0.1:80\n").unwrap();
        assert_eq!(ok.iter().map(|r| r.line).collect::<Vec<_>>(), vec![1, 4]);
    }

    /// The service key reused from the previous real-server line is the
    /// same one the line itself names.
    #[test]
    fn consecutive_real_server_lines_keep_their_own_service() {
        let text = "-A -t 10.0.0.1:80\n-A -u 10.0.0.1:80\n-A -t 10.0.0.1:81\n\
                    -a -t 10.0.0.1:80 -r 10.1.0.1\n-a -u 10.0.0.1:80 -r 10.1.0.2\n\
                    -a -t 10.0.0.1:81 -r 10.1.0.3\n-a -t 10.0.0.1:81 -r 10.1.0.4\n-a -t 10.0.0.1:80 -r 10.1.0.5 -m\n";
        let rules = parse_rules(text).unwrap();
        let keys: Vec<String> = rules
            .iter()
            .filter_map(|r| match &r.op {
                Op::AddDestination(k, d) => Some(format!("{k} {}", d.addr)),
                _ => None,
            })
            .collect();
        assert_eq!(
            keys,
            [
                "tcp 10.0.0.1:80 10.1.0.1:80",
                "udp 10.0.0.1:80 10.1.0.2:80",
                "tcp 10.0.0.1:81 10.1.0.3:81",
                "tcp 10.0.0.1:81 10.1.0.4:81",
                "tcp 10.0.0.1:80 10.1.0.5:80"
            ]
        );
        // A bad service after a good one is still reported.
        let e = parse_rules("-a -t 10.0.0.1:80 -r 10.1.0.1\n-a -t 10.0.0.999:80 -r 10.1.0.1\n").unwrap_err();
        assert_eq!(e, LineError { line: 2, msg: "illegal virtual server address[:port] specified".into() });
    }

    #[test]
    fn desired_table_checks() {
        let t = parse_desired_table("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80\n-A -f 1\n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].destinations.len(), 1);
        let dup = "-A -t 10.0.0.1:80\n-A -t 10.0.0.1:80 -s rr\n";
        assert_eq!(parse_desired_table(dup).unwrap_err().line, 2);
        let orphan = "-a -t 10.0.0.1:80 -r 10.1.0.1:80\n";
        assert_eq!(parse_desired_table(orphan).unwrap_err().line, 1);
        let dupd = "-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.1.0.1\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -w 2\n";
        assert_eq!(parse_desired_table(dupd).unwrap_err().line, 3);
        let edit = "-E -t 10.0.0.1:80\n";
        assert_eq!(parse_desired_table(edit).unwrap_err().line, 1);
        // A duplicate real server of a large service, before and after the
        // first SCAN_MAX, with the line of the first definition named.
        for (n, dup_of) in [(100usize, 7usize), (100, 60), (33, 32), (32, 0)] {
            let mut text = String::from("-A -t 10.0.0.1:80\n-A -t 10.0.0.2:80\n");
            for i in 0..n {
                text.push_str(&format!("-a -t 10.0.0.1:80 -r 10.1.{}.{}:80\n", i / 200, i % 200));
                text.push_str(&format!("-a -t 10.0.0.2:80 -r 10.1.{}.{}:80\n", i / 200, i % 200));
            }
            let good = parse_desired_table(&text).unwrap();
            assert_eq!((good[0].destinations.len(), good[1].destinations.len()), (n, n));
            text.push_str(&format!("-a -t 10.0.0.1:80 -r 10.1.{}.{}:80\n", dup_of / 200, dup_of % 200));
            let e = parse_desired_table(&text).unwrap_err();
            assert_eq!(e.line, 3 + 2 * n, "{n} {dup_of}");
            assert!(e.msg.ends_with(&format!("already defined on line {}", 3 + 2 * dup_of)), "{}", e.msg);
        }
    }

    /// Whatever `save` prints, `restore` reads back to the same table.
    #[test]
    fn save_then_parse_round_trips() {
        use crate::admin::save::{format_save, tests::entry};
        let mut s = Service::new(ServiceKey::udp("10.0.0.10:53".parse().unwrap()), Scheduler::Sh);
        s.persistence = Some(Persistence { timeout: 10, netmask: Some(Netmask::V4("255.255.0.0".parse().unwrap())) });
        s.pe = Some("sip".into());
        s.one_packet = true;
        s.sched_flags = SchedFlags::FLAG_2 | SchedFlags::FLAG_3;
        let d = vec![
            Destination::new("10.1.0.2:5353".parse().unwrap(), Forward::Masq).with_weight(3).with_thresholds(9, 2),
            Destination::new(
                "10.1.0.3:53".parse().unwrap(),
                Forward::Tunnel(ipvs::Tunnel::Gre { checksum: ipvs::TunnelChecksum::Csum }),
            ),
        ];
        let table = vec![entry(s.clone(), d.clone())];
        let text = format_save(&table, true);
        let t = parse_desired_table(&text).unwrap();
        assert_eq!(t, vec![DesiredService { service: s, destinations: d }]);
    }

    /// A mark of 2^31 or more is saved negative (ipvsadm's `%d`); restore
    /// reads it back as the same mark, IPv6 and real-server lines included.
    #[test]
    fn negative_fwmarks_round_trip() {
        use crate::admin::save::{format_save, tests::entry};
        for family in [Family::Inet, Family::Inet6] {
            let s = Service::new(ServiceKey::fwmark(3_000_000_000, family), Scheduler::Rr);
            let addr = if family == Family::Inet { "10.1.0.3:0" } else { "[2001:db8::3]:0" };
            let d = vec![Destination::new(addr.parse().unwrap(), Forward::Masq).with_weight(2)];
            let text = format_save(&[entry(s.clone(), d.clone())], false);
            assert!(text.starts_with("-A -f -1294967296"), "{text}");
            let t = parse_desired_table(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(t, vec![DesiredService { service: s, destinations: d }], "{text}");
        }
        assert_eq!(
            p("-A -f -1 -s rr").unwrap(),
            Op::AddService(Service::new(ServiceKey::fwmark(u32::MAX, Family::Inet), Scheduler::Rr))
        );
        assert_eq!(p("-A -f -2147483649 -s rr").unwrap_err(), "illegal virtual service fwmark specified");
    }

    /// The rules file of the privileged tests (every option ipvsadm has) reads
    /// back to itself through parse and save, without a kernel.
    #[test]
    fn the_test_rules_file_round_trips() {
        use crate::admin::save::{format_save, tests::entry};
        for text in [
            include_str!("../../../tests/data/admin/full.rules"),
            include_str!("../../../tests/data/admin/replace-a.rules"),
            include_str!("../../../tests/data/admin/replace-b.rules"),
        ] {
            let table: Vec<_> =
                parse_desired_table(text).unwrap().into_iter().map(|d| entry(d.service, d.destinations)).collect();
            assert_eq!(format_save(&table, true), text);
        }
    }
}
