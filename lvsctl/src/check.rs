//! Health checks of a real server: their configuration (the `check` table of
//! the TOML config) and the probes: `tcp`, `http`, `exec`, `https`, `udp`, `dns`,
//! `postgres`.
//!
//! A probe answers one question, "is this real server healthy right now?",
//! within a timeout, with `Ok(())` or the reason it is not. Counting
//! successes and failures (`rise`, `fall`) is [`crate::health`]'s job.

pub mod dns;
pub mod dynamic;
mod fields;
pub mod http;
pub mod https;
pub mod postgres;
pub mod security;
pub mod udp;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// Default time between two checks of one real server.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default time one check may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default successes in a row that bring a down real server back.
pub const DEFAULT_RISE: u32 = 2;
/// Default failures in a row that take an up real server down.
pub const DEFAULT_FALL: u32 = 3;
/// Default user `exec` checks run as.
pub const DEFAULT_USER: &str = "nobody";

/// The `check` table of a virtual service (default for its real servers) or
/// of one real server (replaces the service's), as written in the config.
///
/// ```toml
/// check = { type = "http", path = "/health", status = 200, body = "ok", interval = "2s", timeout = "1s", rise = 2, fall = 3 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// `tcp`, `http`, `exec`, `https`, `udp`, `dns` or `postgres`.
    #[serde(rename = "type")]
    pub kind: CheckType,
    /// Time between two checks (seconds, or a string like `"200ms"`, `"2s"`, `"1m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Secs>,
    /// Time one check may take before it counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Secs>,
    /// Successes in a row that bring a down real server back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    /// Failures in a row that take an up real server down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
    /// `tcp`, `http`, `https`, `udp`, `dns`, `postgres`: the port to connect or send to
    /// (default: the real server's port; for `dns` without one, 53).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `http`, `https`: the path to GET (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `http`, `https`: the expected status code (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `http`, `https`: a string the response body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// `http`, `https`: the Host header (default: the real server's address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `exec`: the program and its arguments, e.g. `["/usr/bin/pg_isready", "-q"]`.
    /// The program gets `LVSCTL_REAL_SERVER_ADDR`, `LVSCTL_REAL_SERVER_PORT` and
    /// `LVSCTL_VIRTUAL_SERVICE` in its environment; exit status 0 is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// `exec`: the user the command runs as (default `nobody`; never root).
    /// `postgres`: the database user named at startup (default `postgres`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `https`: the TLS server name sent and verified (default: `host`, else the address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// `https`: a PEM file of the CA certificates to trust (default: the system's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// `https`: `false` accepts any certificate (logged as a warning at load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// `udp`: the datagram to send, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// `udp`: the datagram to send, as hex digits (`"deadbeef"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
    /// `udp`: a string the reply must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// `dns`: the name to query (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `dns`: the record type to query (default `A`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_type: Option<String>,
    /// `dns`: the expected response code (default `NOERROR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    /// `dns`: a record the answer must hold (an address for `A`/`AAAA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// `postgres`: the database named at startup (default: the user's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<postgres::PgText>,
    /// `postgres`: log in (and run `query`) instead of only asking whether
    /// the server accepts connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<bool>,
    /// `postgres` with `login = true`: a query to run, e.g. `"SELECT 1"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<postgres::PgText>,
    /// `postgres` with `login = true`: the root-only file holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<postgres::AbsPath>,
    /// `exec`: the exit status sets the weight (keepalived's `misc_dynamic`,
    /// see [`dynamic`]): 0 up, 1 down, 2..255 up with weight status - 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic: Option<bool>,
}

/// The kind of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    /// Connect to the real server.
    Tcp,
    /// GET a path over HTTP/1.0 and look at the status and body.
    Http,
    /// Run a command; exit status 0 is healthy.
    Exec,
    /// GET a path over HTTP/1.0 in TLS.
    Https,
    /// Send a datagram, expect a reply.
    Udp,
    /// Ask a DNS question over UDP.
    Dns,
    /// Ask a PostgreSQL server whether it accepts connections, as `pg_isready`.
    Postgres,
}

impl CheckType {
    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Http => "http",
            Self::Exec => "exec",
            Self::Https => "https",
            Self::Udp => "udp",
            Self::Dns => "dns",
            Self::Postgres => "postgres",
        }
    }
}

/// A duration in the config: a number of seconds (`2`, `0.5`) or a string
/// with a unit (`"200ms"`, `"2s"`, `"1m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secs(pub Duration);

impl Secs {
    /// Parse `"200ms"`, `"2s"`, `"1.5s"`, `"1m"` or a bare number of seconds.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 =
            num.parse().map_err(|_| format!("invalid duration {s:?}: expected e.g. \"200ms\", \"2s\", \"1m\""))?;
        let scale = match unit.trim() {
            "ms" => 0.001,
            "" | "s" => 1.0,
            "m" | "min" => 60.0,
            _ => return Err(format!("invalid duration unit in {s:?}: expected ms, s or m")),
        };
        Self::from_secs(n * scale)
    }

    fn from_secs(v: f64) -> Result<Self, String> {
        if !v.is_finite() || !(0.0..=86_400.0).contains(&v) {
            return Err(format!("duration {v} s is out of range (0 to 1 day)"));
        }
        Ok(Self(Duration::from_secs_f64(v)))
    }
}

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for Secs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: seconds as a number, or a string like \"200ms\", \"2s\", \"1m\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secs, E> {
                Secs::from_secs(v as f64).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secs, E> {
                Secs::from_secs(v as f64).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secs, E> {
                Secs::from_secs(v).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secs, E> {
                Secs::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Who a check belongs to, for messages: `virtual service tcp
/// 10.0.0.1:80, real server 10.0.0.2:80`. Formatted only when a message
/// needs it (a thousand real servers must not format a thousand names that
/// no error will use).
pub type Owner<'a> = &'a dyn fmt::Display;

/// A check ready to run: the probe and its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What to do.
    pub probe: Probe,
    /// Time between two checks.
    pub interval: Duration,
    /// Time one check may take.
    pub timeout: Duration,
    /// Successes in a row to come back up.
    pub rise: u32,
    /// Failures in a row to go down.
    pub fall: u32,
}

/// One probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Connect to this port of the real server.
    Tcp {
        /// Port.
        port: u16,
    },
    /// GET over HTTP/1.0.
    Http(http::HttpCheck),
    /// Run a program.
    Exec(ExecCheck),
    /// GET over HTTP/1.0 in TLS.
    Https(https::HttpsCheck),
    /// A datagram and its reply.
    Udp(udp::UdpCheck),
    /// A DNS question.
    Dns(dns::DnsCheck),
    /// Speak PostgreSQL's startup to the real server.
    Postgres(postgres::PostgresCheck),
}

/// An `exec` check, resolved: absolute program path (as given or found in
/// `PATH`; checked again and resolved each time it runs), its arguments, the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCheck {
    /// Absolute path of the program (resolved through `PATH` at load time).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The user name it runs as.
    pub user: String,
    /// That user's uid.
    pub uid: u32,
    /// That user's primary gid.
    pub gid: u32,
    /// Exit statuses 2..255 mean up with a weight ([`dynamic`]).
    pub dynamic: bool,
}

impl CheckConfig {
    /// Check the table and resolve it for a real server listening on `port`
    /// (0 for a fwmark service without a port): defaults, the exec program's
    /// path, safety and user. `what` names the owner in messages.
    pub fn resolve(&self, port: u16, what: Owner<'_>) -> Result<Check, String> {
        let interval = self.interval.map_or(DEFAULT_INTERVAL, |s| s.0);
        let timeout = self.timeout.map_or(DEFAULT_TIMEOUT, |s| s.0);
        if interval < Duration::from_millis(10) {
            return Err(format!("{what}: check interval must be at least 10ms"));
        }
        if timeout < Duration::from_millis(1) {
            return Err(format!("{what}: check timeout must be more than 0"));
        }
        let rise = self.rise.unwrap_or(DEFAULT_RISE);
        let fall = self.fall.unwrap_or(DEFAULT_FALL);
        if rise == 0 || fall == 0 {
            return Err(format!("{what}: check rise and fall must be at least 1"));
        }
        self.refuse_fields_of_other_types(what)?;
        let probe = match self.kind {
            CheckType::Tcp => Probe::Tcp { port: self.tcp_port(port, what)? },
            CheckType::Http => Probe::Http(self.http(port, what)?),
            CheckType::Exec => Probe::Exec(self.exec(what)?),
            CheckType::Https => Probe::Https(self.https(port, what)?),
            CheckType::Udp => Probe::Udp(self.udp(port, what)?),
            CheckType::Dns => Probe::Dns(self.dns(port, what)?),
            CheckType::Postgres => Probe::Postgres(postgres::resolve(self, port, what)?),
        };
        Ok(Check { probe, interval, timeout, rise, fall })
    }

    /// The port a tcp or http check connects to: its own, or the real server's.
    fn check_port(&self, port: u16, what: Owner<'_>) -> Result<u16, String> {
        match self.port.unwrap_or(port) {
            0 => Err(format!("{what}: the real server has no port (fwmark service): set the check's `port`")),
            p => Ok(p),
        }
    }

    fn tcp_port(&self, port: u16, what: Owner<'_>) -> Result<u16, String> {
        self.check_port(port, what)
    }

    fn http(&self, port: u16, what: Owner<'_>) -> Result<http::HttpCheck, String> {
        let path = self.path.clone().unwrap_or_else(|| "/".to_owned());
        if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(format!("{what}: http check path {path:?} must start with / and have no spaces"));
        }
        let status = self.status.unwrap_or(200);
        if !(100..=599).contains(&status) {
            return Err(format!("{what}: http check status {status} is not an HTTP status code"));
        }
        if let Some(h) = &self.host {
            if h.is_empty() || h.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(format!("{what}: http check host {h:?} is not a valid Host header"));
            }
        }
        let port = self.check_port(port, what)?;
        Ok(http::HttpCheck { port, path, status, body: self.body.clone(), host: self.host.clone() })
    }

    fn exec(&self, what: Owner<'_>) -> Result<ExecCheck, String> {
        let cmd = match &self.command {
            Some(c) if !c.is_empty() && !c[0].is_empty() => c,
            _ => return Err(format!("{what}: an exec check needs `command = [\"/path/to/program\", ...]`")),
        };
        let program = resolve_program(&cmd[0]).map_err(|e| format!("{what}: check command: {e}"))?;
        security::check_root_only_writable(&program, "check command").map_err(|e| format!("{what}: {e}"))?;
        let user = self.user.clone().unwrap_or_else(|| DEFAULT_USER.to_owned());
        let (uid, gid) = security::lookup_user(&user).map_err(|e| format!("{what}: check user: {e}"))?;
        if uid == 0 {
            return Err(format!("{what}: exec checks never run as root (user {user:?} has uid 0)"));
        }
        let dynamic = self.dynamic.unwrap_or(false);
        Ok(ExecCheck { program, args: cmd[1..].to_vec(), user, uid, gid, dynamic })
    }
}

/// An absolute program path: as given when it contains a `/`, else the first
/// match in `PATH`.
fn resolve_program(name: &str) -> Result<PathBuf, String> {
    if name.contains('/') {
        let p = Path::new(name);
        if !p.is_absolute() {
            return Err(format!("{name:?} must be an absolute path or a name found in PATH"));
        }
        if !p.is_file() {
            return Err(format!("{name} does not exist or is not a file"));
        }
        return Ok(p.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/sbin:/usr/bin:/sbin:/bin"));
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if dir.is_absolute() && p.is_file() {
            return Ok(p);
        }
    }
    Err(format!("{name:?} not found in PATH"))
}

/// What a probe checks: a real server of a virtual service.
#[derive(Debug, Clone)]
pub struct Target {
    /// The real server's address and port.
    pub addr: SocketAddr,
    /// The virtual service, as text (`tcp 10.19.70.166:15858`).
    pub service: String,
}

/// Why a probe has no "healthy" answer.
#[derive(Debug)]
enum Fail {
    /// The real server is not healthy: the reason.
    Failed(String),
    /// The check could not even start here (no file descriptor, no process
    /// slot): it says nothing about the real server.
    NotRun(String),
}

/// Whether an error is this host running short of something (file
/// descriptors, processes, memory), not an answer of the real server.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EAGAIN))
}

/// A new TCP socket for `addr`; the host lacking one is [`Fail::NotRun`].
fn socket_for(addr: SocketAddr, kind: &str) -> Result<tokio::net::TcpSocket, Fail> {
    let s = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() };
    s.map_err(|e| {
        let msg = format!("{kind} check of {addr} not run: cannot open a socket: {e}");
        if out_of_resources(&e) {
            Fail::NotRun(msg)
        } else {
            Fail::Failed(msg)
        }
    })
}

/// Checks in flight at once when [`prepare_limits`] did not say otherwise.
const DEFAULT_IN_FLIGHT: usize = 256;
/// File descriptors kept for the rest of the daemon (netlink, state files,
/// the lock, logs) when working out how many checks may be in flight.
const FD_RESERVE: u64 = 128;
/// File descriptors one check may hold at once (an exec check: the stderr
/// pipe, and the pipe the process spawn uses).
const FDS_PER_CHECK: u64 = 4;

static IN_FLIGHT: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();

fn in_flight() -> &'static tokio::sync::Semaphore {
    IN_FLIGHT.get_or_init(|| tokio::sync::Semaphore::new(DEFAULT_IN_FLIGHT))
}

/// Raise the soft limit of open files to the hard limit, and bound the
/// checks in flight by what it leaves. Returns `(soft limit, checks in
/// flight)`, for the log. Called once, before the first check.
pub(crate) fn prepare_limits() -> (u64, usize) {
    let soft = raise_nofile_limit();
    let n = usize::try_from((soft.saturating_sub(FD_RESERVE) / FDS_PER_CHECK).clamp(1, 4096)).unwrap_or(4096);
    let _ = IN_FLIGHT.set(tokio::sync::Semaphore::new(n));
    (soft, in_flight().available_permits())
}

/// Set the soft `RLIMIT_NOFILE` to the hard one; returns the soft limit in force.
pub(crate) fn raise_nofile_limit() -> u64 {
    // SAFETY: rlimit is plain data; getrlimit/setrlimit read and write it.
    #[allow(unsafe_code)]
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r = want;
            }
        }
        r.rlim_cur
    }
}

/// The checks of one interval fall into this many slots of it.
pub(crate) const SLOTS: u32 = 64;

/// When the first check of the `n`th checker runs after `now`: in one of
/// [`SLOTS`] slots of its interval, counted from `base` (one instant for the
/// whole daemon) and picked by the fractional part of `n` times the golden
/// ratio. A thousand real servers are then not all checked in the same
/// instant, yet the checkers of one interval that share a slot are due at
/// the very same instant ever after (each adds its interval): they wake the
/// daemon once, together, instead of once each.
pub(crate) fn first_due(base: Instant, now: Instant, interval: Duration, n: u64) -> Instant {
    let slot = interval / SLOTS;
    let k = ((n as f64 * 0.618_033_988_749_895).fract() * f64::from(SLOTS)) as u32;
    // The start of the interval `now` is in, counted in whole intervals from `base`.
    let into = now.saturating_duration_since(base).as_nanos() % interval.as_nanos().max(1);
    let period_start = now - Duration::from_nanos(into as u64);
    let due = period_start + slot * k.min(SLOTS - 1);
    if due < now {
        due + interval
    } else {
        due
    }
}

impl Check {
    /// Run the probe once, bounded by the timeout. A check that could not
    /// start is an error here; [`Check::run_bounded`] tells it apart.
    #[cfg(test)]
    pub(crate) async fn run(&self, target: &Target) -> Result<(), String> {
        match self.attempt(target, Instant::now()).await {
            Ok(_) => Ok(()),
            Err(Fail::Failed(e) | Fail::NotRun(e)) => Err(e),
        }
    }

    /// Run the check once as the daemon does: when one of the limited slots
    /// for checks in flight is free. `Err(reason)`: the check could not even
    /// start here (the host is out of file descriptors or processes); that is
    /// neither a success nor a failure of the real server. A success may
    /// carry the weight a dynamic exec check asked for.
    /// The result comes with when the check started (after waiting for
    /// its slot).
    pub(crate) async fn run_bounded(&self, target: &Target) -> Result<(Result<Option<u32>, String>, Instant), String> {
        self.run_bounded_in(target, in_flight()).await
    }

    async fn run_bounded_in(
        &self,
        target: &Target,
        slots: &tokio::sync::Semaphore,
    ) -> Result<(Result<Option<u32>, String>, Instant), String> {
        let _slot = slots.acquire().await.map_err(|e| e.to_string())?;
        let started = Instant::now();
        match self.attempt(target, started).await {
            Ok(w) => Ok((Ok(w), started)),
            Err(Fail::Failed(e)) => Ok((Err(e), started)),
            Err(Fail::NotRun(e)) => Err(e),
        }
    }

    /// One run, started at `started`; `Ok(Some(w))`: a dynamic exec check
    /// asked for weight `w`.
    async fn attempt(&self, target: &Target, started: Instant) -> Result<Option<u32>, Fail> {
        let run = async {
            match &self.probe {
                Probe::Exec(x) => Box::pin(x.run(target)).await,
                p => p.run(target).await.map(|()| None),
            }
        };
        match tokio::time::timeout_at(started + self.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(Fail::Failed(format!("{} check timed out after {}", self.probe.kind(), Secs(self.timeout)))),
        }
    }
}

impl Probe {
    /// `tcp`, `http` or `exec`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tcp { .. } => "tcp",
            Self::Http(_) => "http",
            Self::Exec(_) => "exec",
            Self::Https(_) => "https",
            Self::Udp(_) => "udp",
            Self::Dns(_) => "dns",
            Self::Postgres(_) => "postgres",
        }
    }

    /// The TCP probe runs in the checker's own future; every other kind in a
    /// future of its own on the heap, for the time of the check only. A
    /// daemon holds one checker future per real server for its whole life,
    /// and an inline TLS or PostgreSQL exchange would make each of them
    /// kilobytes large.
    async fn run(&self, target: &Target) -> Result<(), Fail> {
        match self {
            Self::Tcp { port } => tcp_connect(target, *port).await,
            _ => Box::pin(self.run_other(target)).await,
        }
    }

    async fn run_other(&self, target: &Target) -> Result<(), Fail> {
        match self {
            Self::Tcp { port } => tcp_connect(target, *port).await,
            Self::Http(h) => {
                let a = SocketAddr::new(target.addr.ip(), h.port);
                let s = socket_for(a, "http")?;
                let s = s.connect(a).await.map_err(|e| Fail::Failed(format!("http connect to {a}: {e}")))?;
                h.exchange(s, target.addr.ip(), "http").await.map_err(Fail::Failed)
            }
            Self::Exec(x) => x.run(target).await.map(drop),
            Self::Https(h) => h.run(target.addr.ip()).await,
            Self::Udp(u) => u.run(target.addr.ip()).await,
            Self::Dns(d) => d.run(target.addr.ip()).await,
            Self::Postgres(p) => {
                let a = SocketAddr::new(target.addr.ip(), p.port);
                let s = socket_for(a, "postgres")?;
                let s = s.connect(a).await.map_err(|e| Fail::Failed(format!("postgres connect to {a}: {e}")))?;
                p.exchange(s, a).await.map_err(Fail::Failed)
            }
        }
    }
}

/// The TCP probe: the real server accepts a connection on `port`. The
/// connection is then reset rather than closed (as HAProxy's layer-4 checks
/// do): one packet instead of a FIN exchange each way, and no TIME_WAIT
/// socket left on the director for each check (thousands a second on a
/// large director).
async fn tcp_connect(target: &Target, port: u16) -> Result<(), Fail> {
    let a = SocketAddr::new(target.addr.ip(), port);
    let s = socket_for(a, "tcp")?;
    // tokio deprecates SO_LINGER because a non-zero linger blocks the
    // thread in close(); a zero one never waits. Without it the close is an
    // ordinary one: the check still works.
    #[allow(deprecated)]
    let _ = s.set_linger(Some(Duration::ZERO));
    s.connect(a).await.map(drop).map_err(|e| Fail::Failed(format!("tcp connect to {a}: {e}")))
}

/// At most this much of an exec check's stderr is kept for the error message.
const STDERR_KEEP: usize = 300;

impl ExecCheck {
    /// Run the program: checked again first ([`security::check_root_only_writable`],
    /// the path as given), and what was checked is what runs (the path it
    /// resolved to, with the path as given as `argv[0]`). A program that is
    /// not safe any more fails the check without running. `Ok(Some(w))`: a
    /// dynamic check's exit status asked for weight `w`.
    async fn run(&self, target: &Target) -> Result<Option<u32>, Fail> {
        let exe = security::check_root_only_writable(&self.program, "check command").map_err(Fail::Failed)?;
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg0(&self.program)
            .args(&self.args)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LVSCTL_REAL_SERVER_ADDR", target.addr.ip().to_string())
            .env("LVSCTL_REAL_SERVER_PORT", target.addr.port().to_string())
            .env("LVSCTL_VIRTUAL_SERVICE", &target.service)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .uid(self.uid)
            .gid(self.gid)
            // Its own process group, so a timeout kills the command's children too.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            let msg = format!("cannot run {}: {e}", self.program.display());
            if out_of_resources(&e) {
                Fail::NotRun(msg)
            } else {
                Fail::Failed(msg)
            }
        })?;
        let pid = child.id();
        let guard = GroupKiller(pid);
        let mut stderr = child.stderr.take();
        let read_err = async {
            let mut buf = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let _ = s.take(4096).read_to_end(&mut buf).await;
            }
            buf
        };
        let (status, err) = tokio::join!(child.wait(), read_err);
        drop(guard);
        let status = status.map_err(|e| Fail::Failed(format!("waiting for {}: {e}", self.program.display())))?;
        match (self.dynamic, dynamic::verdict(status.code())) {
            (true, dynamic::Verdict::Up(w)) => return Ok(w),
            (false, _) if status.success() => return Ok(None),
            _ => {}
        }
        let text = String::from_utf8_lossy(&err);
        let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let text: String = text.chars().take(STDERR_KEEP).collect();
        let how = match status.code() {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_owned(),
        };
        Err(Fail::Failed(if text.is_empty() {
            format!("{} {how}", self.program.display())
        } else {
            format!("{} {how}: {text}", self.program.display())
        }))
    }
}

/// Kills the process group of an exec check when the check ends or is
/// dropped (timeout, daemon stopping): no check leaves processes behind.
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: kill has no memory preconditions; -pid names the group the child leads.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<CheckConfig, String> {
        #[derive(Deserialize)]
        struct W {
            check: CheckConfig,
        }
        toml::from_str::<W>(s).map(|w| w.check).map_err(|e| e.to_string())
    }

    #[test]
    fn durations() {
        assert_eq!(Secs::parse("200ms").unwrap().0, Duration::from_millis(200));
        assert_eq!(Secs::parse("2s").unwrap().0, Duration::from_secs(2));
        assert_eq!(Secs::parse("1.5").unwrap().0, Duration::from_millis(1500));
        assert_eq!(Secs::parse("1m").unwrap().0, Duration::from_secs(60));
        assert!(Secs::parse("fast").is_err());
        assert!(Secs::parse("3h").is_err());
        assert_eq!(Secs(Duration::from_millis(200)).to_string(), "200ms");
        assert_eq!(Secs(Duration::from_secs(3)).to_string(), "3s");
        let c = parse("check = { type = \"tcp\", interval = 0.2, timeout = \"150ms\", rise = 1 }").unwrap();
        assert_eq!(c.interval, Some(Secs(Duration::from_millis(200))));
        assert_eq!(c.timeout, Some(Secs(Duration::from_millis(150))));
    }

    #[test]
    fn defaults_and_ports() {
        let c = parse("check = { type = \"tcp\" }").unwrap().resolve(15858, &"x").unwrap();
        assert_eq!(
            c,
            Check {
                probe: Probe::Tcp { port: 15858 },
                interval: DEFAULT_INTERVAL,
                timeout: DEFAULT_TIMEOUT,
                rise: DEFAULT_RISE,
                fall: DEFAULT_FALL
            }
        );
        let c = parse("check = { type = \"http\", port = 8080, body = \"ok\" }").unwrap().resolve(80, &"x").unwrap();
        assert_eq!(
            c.probe,
            Probe::Http(http::HttpCheck {
                port: 8080,
                path: "/".into(),
                status: 200,
                body: Some("ok".into()),
                host: None
            })
        );
        let e = parse("check = { type = \"tcp\" }").unwrap().resolve(0, &"service fwmark 1").unwrap_err();
        assert!(e.contains("set the check's `port`"), "{e}");
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let e = parse("check = { type = \"tcp\", path = \"/\" }").unwrap().resolve(80, &"real server 10.0.0.2:80");
        assert_eq!(e.unwrap_err(), "real server 10.0.0.2:80: check field `path` is for http and https checks, not tcp");
        assert!(parse("check = { type = \"ping\" }").unwrap_err().contains("unknown variant `ping`"));
        assert!(parse("check = { type = \"tcp\", intervall = 2 }").unwrap_err().contains("unknown field `intervall`"));
        let e = parse("check = { type = \"tcp\", fall = 0 }").unwrap().resolve(80, &"x").unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        let e = parse("check = { type = \"tcp\", dynamic = true }").unwrap().resolve(80, &"x").unwrap_err();
        assert!(e.contains("`dynamic` is for exec checks"), "{e}");
        let e = parse("check = { type = \"exec\", command = [\"/bin/true\"], port = 80 }").unwrap().resolve(80, &"x");
        assert_eq!(
            e.unwrap_err(),
            "x: check field `port` is for tcp, http, https, udp, dns and postgres checks, not exec"
        );
        let e = parse("check = { type = \"exec\" }").unwrap().resolve(80, &"x").unwrap_err();
        assert!(e.contains("needs `command"), "{e}");
        let e = parse("check = { type = \"http\", path = \"health\" }").unwrap().resolve(80, &"x").unwrap_err();
        assert!(e.contains("must start with /"), "{e}");
        let e = parse("check = { type = \"exec\", command = [\"no-such-program-here\"] }")
            .unwrap()
            .resolve(80, &"x")
            .unwrap_err();
        assert!(e.contains("not found in PATH"), "{e}");
    }

    /// An exec check as this test's own user (resolve() would insist on a
    /// root-owned program and a non-root user).
    fn exec_check(script: &str, timeout: Duration) -> Check {
        // SAFETY: getuid and getgid have no preconditions.
        #[allow(unsafe_code)]
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Check {
            probe: Probe::Exec(ExecCheck {
                program: "/bin/sh".into(),
                args: vec!["-c".into(), script.into()],
                user: "test".into(),
                uid,
                gid,
                dynamic: false,
            }),
            interval: DEFAULT_INTERVAL,
            timeout,
            rise: 1,
            fall: 1,
        }
    }

    #[tokio::test]
    async fn exec_probe_env_status_and_stderr() {
        let t = Target { addr: "10.18.68.186:15858".parse().unwrap(), service: "tcp 10.19.70.166:15858".into() };
        let ok = "[ \"$LVSCTL_REAL_SERVER_ADDR:$LVSCTL_REAL_SERVER_PORT $LVSCTL_VIRTUAL_SERVICE\" = \"10.18.68.186:15858 tcp 10.19.70.166:15858\" ]";
        exec_check(ok, Duration::from_secs(10)).run(&t).await.unwrap();
        let e = exec_check("echo 'not ready:\n  replica lag' >&2; exit 2", Duration::from_secs(10))
            .run(&t)
            .await
            .unwrap_err();
        assert_eq!(e, "/bin/sh exit status 2: not ready: replica lag");
    }

    /// `dynamic = true`: exit 2..255 is up with a weight, 1 is down; without
    /// it the same exit 7 is a failure.
    #[tokio::test]
    async fn a_dynamic_exec_check_reports_the_weight_of_its_exit_status() {
        let t = Target { addr: "10.0.0.2:80".parse().unwrap(), service: "tcp 10.0.0.1:80".into() };
        let dynamic = |script: &str| {
            let mut c = exec_check(script, Duration::from_secs(10));
            let Probe::Exec(x) = &mut c.probe else { unreachable!() };
            x.dynamic = true;
            c
        };
        let slots = tokio::sync::Semaphore::new(1);
        assert_eq!(dynamic("exit 7").run_bounded_in(&t, &slots).await.map(|r| r.0), Ok(Ok(Some(5))));
        assert_eq!(dynamic("exit 0").run_bounded_in(&t, &slots).await.map(|r| r.0), Ok(Ok(None)));
        assert!(dynamic("exit 1").run_bounded_in(&t, &slots).await.unwrap().0.is_err());
        let plain = exec_check("exit 7", Duration::from_secs(10));
        assert!(plain.run_bounded_in(&t, &slots).await.unwrap().0.is_err());
    }

    /// An exec program is checked again each time it runs: one that became
    /// writable by others since the config was loaded fails without running.
    #[tokio::test]
    async fn an_exec_program_made_unsafe_after_load_does_not_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lvsctl-exec-unsafe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ran = dir.join("ran");
        let prog = dir.join("check.sh");
        std::fs::write(&prog, format!("#!/bin/sh\ntouch {}\n", ran.display())).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut c = exec_check("", Duration::from_secs(10));
        let Probe::Exec(x) = &mut c.probe else { unreachable!() };
        x.program = prog.clone();
        x.args.clear();
        let t = Target { addr: "10.0.0.2:80".parse().unwrap(), service: "tcp 10.0.0.1:80".into() };
        let e = c.run(&t).await.unwrap_err();
        assert!(e.starts_with(&format!("refusing check command {}", prog.display())), "{e}");
        assert!(!ran.exists(), "the unsafe program ran");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What runs is the file checked, under the name it was given as argv[0]
    /// (so multi-call programs behind a symlink still know what they are).
    #[tokio::test]
    async fn an_exec_program_keeps_its_name() {
        let t = Target { addr: "10.0.0.2:80".parse().unwrap(), service: "tcp 10.0.0.1:80".into() };
        let c = exec_check("[ \"$0\" = /bin/sh ] || { echo \"argv0 $0\" >&2; exit 1; }", Duration::from_secs(10));
        c.run(&t).await.unwrap();
    }

    /// A thousand checkers' first checks fall evenly over the interval, none
    /// before now or a whole interval after it, each on one of the slots
    /// (checkers that share a slot are due together).
    #[test]
    fn first_checks_are_spread_over_the_slots_of_the_interval() {
        let every = Duration::from_secs(10);
        let base = Instant::now();
        let now = base + Duration::from_millis(123_456);
        let mut per_second = [0u32; 10];
        let mut slots = std::collections::HashSet::new();
        for n in 1..=1000 {
            let due = first_due(base, now, every, n);
            assert!(due >= now && due < now + every, "{n}: {:?}", due - now);
            let since = (due - base).as_nanos() % every.as_nanos();
            assert_eq!(since % (every / SLOTS).as_nanos(), 0, "{n}: not on a slot");
            slots.insert(since);
            per_second[((due - now).as_secs()) as usize] += 1;
        }
        assert_eq!(slots.len(), SLOTS as usize, "every slot used");
        assert!(per_second.iter().all(|c| (80..=120).contains(c)), "{per_second:?}");
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_one() {
        raise_nofile_limit();
        // SAFETY: rlimit is plain data filled by getrlimit.
        #[allow(unsafe_code)]
        let r = unsafe {
            let mut r: libc::rlimit = std::mem::zeroed();
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
            r
        };
        assert_eq!(r.rlim_cur, r.rlim_max);
    }

    /// A check waits for a free slot among those in flight: while none is
    /// free it does not start.
    #[tokio::test]
    async fn checks_in_flight_are_bounded() {
        let dir = std::env::temp_dir().join(format!("lvsctl-slots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ran = dir.join("ran");
        let c = exec_check(&format!("touch {}", ran.display()), Duration::from_secs(10));
        let t = Target { addr: "10.0.0.2:80".parse().unwrap(), service: "tcp 10.0.0.1:80".into() };
        let slots = tokio::sync::Semaphore::new(1);
        let busy = slots.acquire().await.unwrap();
        let waiting = c.run_bounded_in(&t, &slots);
        tokio::pin!(waiting);
        assert!(tokio::time::timeout(Duration::from_millis(300), &mut waiting).await.is_err());
        assert!(!ran.exists(), "a check started without a free slot");
        drop(busy);
        assert_eq!(waiting.await.map(|r| r.0), Ok(Ok(None)));
        assert!(ran.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Running out of file descriptors or processes here is not an answer of
    /// the real server: such a check is "not run", never a failure.
    #[test]
    fn a_check_that_cannot_start_is_not_run() {
        for e in [libc::EMFILE, libc::ENFILE, libc::EAGAIN, libc::ENOBUFS, libc::ENOMEM] {
            assert!(out_of_resources(&std::io::Error::from_raw_os_error(e)), "{e}");
        }
        for e in [libc::ECONNREFUSED, libc::ETIMEDOUT, libc::EHOSTUNREACH, libc::ENOENT, libc::EACCES] {
            assert!(!out_of_resources(&std::io::Error::from_raw_os_error(e)), "{e}");
        }
    }

    /// A check that outlives its timeout is killed with everything it started.
    #[tokio::test]
    async fn exec_timeout_kills_the_process_group() {
        let dir = std::env::temp_dir().join(format!("lvsctl-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let t = Target { addr: "10.0.0.2:80".parse().unwrap(), service: "tcp 10.0.0.1:80".into() };
        let e = exec_check(&script, Duration::from_millis(500)).run(&t).await.unwrap_err();
        assert_eq!(e, "exec check timed out after 500ms");
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // The background sleep is gone (or a zombie waiting for init to reap it).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("");
            if stat.is_empty() || state == "Z" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the check's child {pid} survived its timeout: {stat}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The daemon keeps one check future per real server for its whole
    /// life: a TCP check's must stay small whatever the other kinds need
    /// (those run in futures of their own, only while they run).
    #[test]
    fn a_tcp_check_future_stays_small() {
        let c = Check {
            probe: Probe::Tcp { port: 80 },
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 1,
        };
        let t = Target { addr: "127.0.0.1:80".parse().unwrap(), service: String::new() };
        let f = c.run_bounded(&t);
        assert!(std::mem::size_of_val(&f) < 1024, "{} bytes", std::mem::size_of_val(&f));
    }

    #[tokio::test]
    async fn tcp_probe_up_and_down() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let check = Check {
            probe: Probe::Tcp { port: addr.port() },
            interval: DEFAULT_INTERVAL,
            timeout: Duration::from_secs(5),
            rise: 1,
            fall: 1,
        };
        let t = Target { addr, service: "tcp 10.0.0.1:80".into() };
        check.run(&t).await.unwrap();
        drop(l);
        let e = check.run(&t).await.unwrap_err();
        assert!(e.starts_with(&format!("tcp connect to {addr}: ")), "{e}");
    }
}
