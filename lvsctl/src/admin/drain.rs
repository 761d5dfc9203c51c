//! `lvsctl real drain`: take a real server out without cutting connections.
//!
//! Its weight goes to 0 at once (no new connections are scheduled to it;
//! those it has carry on), then the command waits until the real server has
//! no active connection left, or until `--timeout` passes; with `--remove` it
//! then deletes the real server. On a terminal a progress line shows the
//! connections left.
//!
//! Persistence: a client with a persistence template is still sent to its
//! real server at weight 0 for as long as it keeps coming back within the
//! persistence timeout, unless `net.ipv4.vs.expire_quiescent_template` = 1
//! (then the template of a weight-0 server expires at the next packet and
//! the client is scheduled anew). The command says so when it applies.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ipvs::{DestinationEntry, Ipvs, ServiceKey};

use super::spec::{self, ServiceKeyArgs};
use super::{connect, ipvsadm_error, usage, Ctx};
use crate::CliError;
use lvsctl::health::drain::busy;

/// Exit status when the timeout passed with connections left.
pub(crate) const EXIT_TIMEOUT: u8 = 3;

/// How often the connection count is read.
const POLL: Duration = Duration::from_millis(500);

// `real drain`.
#[derive(Debug, clap::Args)]
pub(crate) struct DrainArgs {
    #[command(flatten)]
    key: ServiceKeyArgs,
    /// Real server ADDR[:PORT] (IPv6 as [ADDR]:PORT); no port: the one real server with that address.
    #[arg(short = 'r', long = "real-server", value_name = "ADDR[:PORT]")]
    real: String,
    /// Stop waiting after this long (like 30s, 5m, 1h; a bare number is seconds); default: wait as long as it takes.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Delete the real server once it has no active connection left.
    #[arg(long)]
    remove: bool,
}

/// `30`, `30s`, `500ms`, `5m`, `1h`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 5m, 1h"))?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}: expected ms, s, m or h")),
    };
    let v = n * scale;
    if !v.is_finite() || !(0.0..=31_536_000.0).contains(&v) {
        return Err(format!("duration {s:?} is out of range (0 to a year)"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// The real server `r` of `key` among `dests`: by address and port, or by
/// address alone when no port is given and exactly one real server has it.
fn find(key: &ServiceKey, r: &str, dests: &[DestinationEntry]) -> Result<SocketAddr, CliError> {
    let (ip, port) = spec::parse_addr_port(r).ok_or_else(|| usage("illegal real server address[:port] specified"))?;
    if port.is_some() {
        let a = spec::real_server_addr(key, r, None).map_err(usage)?;
        return Ok(a);
    }
    let same: Vec<SocketAddr> = dests.iter().map(|d| d.destination.addr).filter(|a| a.ip() == ip).collect();
    match same[..] {
        [a] => Ok(a),
        [] => spec::real_server_addr(key, r, None).map_err(usage),
        _ => Err(usage(format!(
            "{key} has several real servers at {ip} ({}): give the port",
            same.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn quiescent_template_expires() -> Option<bool> {
    std::fs::read_to_string("/proc/sys/net/ipv4/vs/expire_quiescent_template").ok().map(|v| v.trim() == "1")
}

pub(crate) async fn run(a: DrainArgs) -> Result<ExitCode, CliError> {
    let key = a.key.required_key().map_err(usage)?;
    let h = connect().await?;
    let svc = h.service(&key).await.map_err(|e| ipvsadm_error(e, Ctx::RealServer))?;
    let addr = quiesce(&h, &key, &a.real).await?;
    if svc.service.persistence.is_some() && quiescent_template_expires() != Some(true) {
        println!(
            "drain: note: {key} is persistent and net.ipv4.vs.expire_quiescent_template is not 1: clients with a \
             persistence template keep being sent to {addr} while they come back within the persistence timeout"
        );
    }
    let _ = std::io::stdout().flush();

    let start = Instant::now();
    let left = wait_idle(&h, &key, addr, a.timeout, start).await?;
    if left > 0 {
        eprintln!(
            "lvsctl: {key} real server {addr} still has {left} active connection(s) after {}; its weight stays 0{}",
            fmt_duration(start.elapsed()),
            if a.remove { " and it was not removed" } else { "" }
        );
        return Ok(ExitCode::from(EXIT_TIMEOUT));
    }
    println!("drain: {key} real server {addr}: no active connection left after {}", fmt_duration(start.elapsed()));
    if a.remove {
        remove(&h, &key, addr).await?;
        println!("drain: {key} real server {addr}: removed");
    }
    Ok(ExitCode::SUCCESS)
}

/// Find the real server `real` of `key` and set its weight to 0 (unless it
/// already is), saying so; return its address.
async fn quiesce(h: &Ipvs, key: &ServiceKey, real: &str) -> Result<SocketAddr, CliError> {
    let dests = h.destinations(key).await.map_err(|e| ipvsadm_error(e, Ctx::RealServer))?;
    let addr = find(key, real, &dests)?;
    let Some(cur) = dests.iter().find(|d| d.destination.addr == addr) else {
        return Err(ipvsadm_error(
            ipvs::Error::NoSuchDestination { service: *key, destination: addr },
            Ctx::RealServer,
        ));
    };
    if cur.destination.weight != 0 {
        let d = cur.destination.clone().with_weight(0);
        h.update_destination(key, &d).await.map_err(|e| ipvsadm_error(e, Ctx::RealServer))?;
        println!("drain: {key} real server {addr}: weight 0 (was {})", cur.destination.weight);
    } else {
        println!("drain: {key} real server {addr}: weight already 0");
    }
    Ok(addr)
}

/// Read the connections of real server `addr` every [`POLL`] until it has
/// none or `timeout` (counted from `start`) passes; return how many are
/// left (0: drained). On a terminal, a progress line on stderr shows them.
async fn wait_idle(
    h: &Ipvs,
    key: &ServiceKey,
    addr: SocketAddr,
    timeout: Option<Duration>,
    start: Instant,
) -> Result<u32, CliError> {
    let tty = std::io::stderr().is_terminal();
    let left = loop {
        let dests = h.destinations(key).await.map_err(|e| ipvsadm_error(e, Ctx::RealServer))?;
        let Some(d) = dests.iter().find(|d| d.destination.addr == addr) else {
            if tty {
                eprintln!();
            }
            return Err(CliError::failure(format!("{key} real server {addr} was deleted while draining")));
        };
        let n = busy(key, d);
        if n == 0 {
            break 0;
        }
        let elapsed = start.elapsed();
        if timeout.is_some_and(|t| elapsed >= t) {
            break n;
        }
        if tty {
            progress(addr, n, elapsed, timeout);
        }
        let wait = match timeout {
            Some(t) => POLL.min(t.saturating_sub(elapsed)),
            None => POLL,
        };
        tokio::time::sleep(wait).await;
    };
    if tty {
        eprint!("\r\x1b[K");
    }
    Ok(left)
}

/// Rewrite the progress line: connections left, time spent, time left.
fn progress(addr: SocketAddr, n: u32, elapsed: Duration, timeout: Option<Duration>) {
    let rest = timeout.map_or(String::new(), |t| format!(", {}s left", t.saturating_sub(elapsed).as_secs()));
    eprint!("\r\x1b[Kdrain: {addr}: {n} active connection(s), {}s{rest}", elapsed.as_secs());
    let _ = std::io::stderr().flush();
}

async fn remove(h: &Ipvs, key: &ServiceKey, addr: SocketAddr) -> Result<(), CliError> {
    h.delete_destination(key, addr).await.map_err(|e| ipvsadm_error(e, Ctx::RealServer))
}

fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}s", d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs::{Destination, Forward};

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("").is_err());
    }

    fn dest(a: &str) -> DestinationEntry {
        DestinationEntry::from(Destination::new(a.parse().unwrap(), Forward::Masq))
    }

    #[test]
    fn real_server_found_by_address_alone_when_unique() {
        let key = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        let ds = [dest("10.1.0.2:8080"), dest("10.1.0.3:8080"), dest("10.1.0.3:8081")];
        assert_eq!(find(&key, "10.1.0.2", &ds).unwrap(), "10.1.0.2:8080".parse().unwrap());
        assert_eq!(find(&key, "10.1.0.3:8081", &ds).unwrap(), "10.1.0.3:8081".parse().unwrap());
        assert!(find(&key, "10.1.0.3", &ds).unwrap_err().msg.contains("give the port"));
        // Unknown: the service's port, as ipvsadm would take it (then "No such destination").
        assert_eq!(find(&key, "10.1.0.9", &ds).unwrap(), "10.1.0.9:80".parse().unwrap());
        assert!(find(&key, "bogus", &ds).is_err());
    }

    #[test]
    fn udp_counts_inactive_entries() {
        let mut d = dest("10.1.0.2:53");
        d.inactive_conns = 4;
        assert_eq!(busy(&ServiceKey::udp("10.0.0.1:53".parse().unwrap()), &d), 4);
        assert_eq!(busy(&ServiceKey::tcp("10.0.0.1:53".parse().unwrap()), &d), 0);
    }
}
