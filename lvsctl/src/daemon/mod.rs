//! `lvsctl director run --config FILE` (issue 6): the health-checking
//! director daemon.
//!
//! It applies the config as `director start` does, then checks every real
//! server (one task per real server, [`checks`]), counts results
//! ([`health`]) and, on a transition, reconciles the kernel with what the
//! health says ([`health::effective`]): a failed real server gets weight 0
//! (or is removed), a recovered one its configured weight back, and a sorry
//! server takes over while every real server of a service is down. Every
//! transition is logged once (tracing, on stderr), and the health of every
//! real server is kept in a report file ([`report`]) that `director status`
//! shows.
//!
//! Signals: SIGHUP rereads the config and applies only the difference
//! (real servers that stay keep their health); a config that does not load is
//! rejected and the running one kept. SIGTERM and SIGINT stop the daemon,
//! leaving the services in place unless `--teardown-on-exit`.

pub(crate) mod checks;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod journal;
pub(crate) mod report;
pub(crate) mod security;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use ipvs::ServiceKey;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{Config, DirectorSpec};
use crate::{state, CliError};
use checks::{Check, Secs, Target};
use health::{effective, Health, RealKey, RealSpec, ServiceSpec, Transition};

/// Arguments of `lvsctl director run`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    /// The TOML config (the file `director start --config` takes, with `check`
    /// settings). It must be writable by root only.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// On SIGTERM or SIGINT, remove the virtual services and VIPs (as `director
    /// stop` does) instead of leaving them in place.
    #[arg(long)]
    pub(crate) teardown_on_exit: bool,
}

/// A loaded, validated config: the director part as `director start` takes
/// it, and the services with resolved checks.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// What `director start` would configure.
    pub(crate) director: DirectorSpec,
    /// The same services, with their checks, failure action and sorry server.
    pub(crate) services: Vec<ServiceSpec>,
}

/// Load the config for the daemon: refuse a file others can write, parse,
/// validate, resolve every check (exec programs are checked the same way).
pub(crate) fn load(path: &Path) -> Result<Loaded, String> {
    security::check_root_only_writable(path, "config file")?;
    let config = Config::load(path).map_err(|e| e.0)?;
    let director = config.director().map_err(|e| e.0)?;
    let services = specs(&director)?;
    Ok(Loaded { director, services })
}

/// The daemon's view of the validated services.
fn specs(d: &DirectorSpec) -> Result<Vec<ServiceSpec>, String> {
    let mut out = Vec::with_capacity(d.services.len());
    for vs in &d.services {
        let key = vs.desired.service.key;
        let mut reals = Vec::with_capacity(vs.desired.destinations.len());
        for (i, dest) in vs.desired.destinations.iter().enumerate() {
            let what = format!("virtual service {key}, real server {}", dest.addr);
            let check = match vs.checks.get(i).and_then(Option::as_ref) {
                Some(c) => Some(c.resolve(dest.addr.port(), &what)?),
                None => None,
            };
            reals.push(RealSpec { dest: dest.clone(), check });
        }
        out.push(ServiceSpec {
            service: vs.desired.service.clone(),
            reals,
            on_failure: vs.on_failure,
            sorry: vs.sorry_server.clone(),
        });
    }
    Ok(out)
}

/// One check result, from a checker task.
#[derive(Debug)]
struct CheckResult {
    /// Which task sent it (results of replaced tasks are dropped).
    task: u64,
    real: RealKey,
    result: Result<(), String>,
}

/// A running checker task.
struct Checker {
    id: u64,
    check: Check,
    handle: JoinHandle<()>,
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Check a real server forever, sending every result; each real server has
/// its own task, so a slow check delays only the next check of the same real
/// server.
fn spawn_checker(tx: mpsc::UnboundedSender<CheckResult>, id: u64, real: RealKey, check: Check) -> Checker {
    let target = Target { addr: real.1, service: real.0.to_string() };
    let c = check.clone();
    let handle = tokio::spawn(async move {
        let mut tick = tokio::time::interval(c.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let result = c.run(&target).await;
            if tx.send(CheckResult { task: id, real, result }).is_err() {
                return;
            }
        }
    });
    Checker { id, check, handle }
}

/// The daemon's state.
struct Daemon {
    config_path: PathBuf,
    loaded: Loaded,
    health: HashMap<RealKey, Health>,
    checkers: HashMap<RealKey, Checker>,
    sorry_in: HashMap<ServiceKey, bool>,
    tx: mpsc::UnboundedSender<CheckResult>,
    next_task: u64,
    /// The kernel does not have what the health says (a change failed): retry.
    dirty: bool,
    report_path: PathBuf,
    started: SystemTime,
    /// When the report was last written (failed checks that change nothing
    /// else refresh its "last error" at most once a second).
    report_written: std::time::Instant,
    /// Failover (`[director.ha]`): keepalived, the sync daemons, the role.
    ha: Option<crate::ha::Ha>,
}

/// Run the daemon until SIGTERM or SIGINT.
pub(crate) async fn run(args: RunArgs) -> Result<ExitCode, CliError> {
    crate::host::require_root("director run")?;
    let loaded = load(&args.config).map_err(CliError::usage)?;
    // Failover first: a missing keepalived is an error before anything changes.
    let ha = crate::ha::Ha::start(&loaded.director).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sig =
        |k: SignalKind, name: &str| signal(k).map_err(|e| CliError::failure(format!("cannot handle {name}: {e}")));
    let (mut hup, mut term, mut int) = (
        sig(SignalKind::hangup(), "SIGHUP")?,
        sig(SignalKind::terminate(), "SIGTERM")?,
        sig(SignalKind::interrupt(), "SIGINT")?,
    );
    let mut d = Daemon {
        config_path: args.config.clone(),
        loaded,
        health: HashMap::new(),
        checkers: HashMap::new(),
        sorry_in: HashMap::new(),
        tx,
        next_task: 0,
        dirty: false,
        report_path: report::path(&state::dir())?,
        started: SystemTime::now(),
        report_written: std::time::Instant::now(),
        ha,
    };
    d.sync_reals();
    let (mut desired, sorry_in) = effective(&d.loaded.services, &d.health);
    if let Some(ha) = &d.ha {
        ha.adjust(&mut desired);
    }
    d.sorry_in = sorry_in;
    crate::director::apply(&d.loaded.director, &desired).await?;
    d.write_report();
    journal::sd_notify(&format!("READY=1\nSTATUS={}", d.summary()));
    info!(
        config = %d.config_path.display(),
        services = d.loaded.services.len(),
        checked_real_servers = d.checkers.len(),
        "director run: configuration applied, health checks started"
    );

    let signal_name = loop {
        tokio::select! {
            Some(r) = rx.recv() => d.on_result(r).await,
            _ = hup.recv() => d.reload().await,
            e = crate::ha::Ha::next_event(&mut d.ha) => {
                if d.ha.as_mut().is_some_and(|h| h.on_event(e)) {
                    d.converge("failover role change").await;
                }
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };
    journal::sd_notify("STOPPING=1");
    d.checkers.clear();
    if let Some(ha) = d.ha.as_mut() {
        ha.stop().await;
    }
    let _ = state::remove(&d.report_path);
    if args.teardown_on_exit {
        info!(signal = signal_name, "director run: stopping, removing the virtual services and VIPs");
        crate::director::teardown().await?;
    } else {
        info!(
            signal = signal_name,
            services = d.loaded.services.len(),
            "director run: stopping, leaving the virtual services in place"
        );
    }
    Ok(ExitCode::SUCCESS)
}

impl Daemon {
    /// Make the health and checker maps match the loaded services: new real
    /// servers start up with a new checker, removed ones are forgotten, ones
    /// that stay keep their health (and their checker unless its check changed).
    fn sync_reals(&mut self) {
        let now = SystemTime::now();
        let mut want: HashMap<RealKey, Option<Check>> = HashMap::new();
        for s in &self.loaded.services {
            for r in &s.reals {
                want.insert((s.service.key, r.dest.addr), r.check.clone());
            }
        }
        self.health.retain(|k, _| want.contains_key(k));
        self.checkers.retain(|k, c| want.get(k).is_some_and(|w| w.as_ref() == Some(&c.check)));
        for (k, check) in want {
            let h = self.health.entry(k).or_insert_with(|| Health::new(now));
            match check {
                None => {
                    // Not checked: always up.
                    if !h.up {
                        *h = Health::new(now);
                    }
                }
                Some(c) if !self.checkers.contains_key(&k) => {
                    self.next_task += 1;
                    let checker = spawn_checker(self.tx.clone(), self.next_task, k, c);
                    self.checkers.insert(k, checker);
                }
                Some(_) => {}
            }
        }
    }

    /// `2 of 3 real servers up` (for systemd's STATUS).
    fn summary(&self) -> String {
        let total: usize = self.loaded.services.iter().map(|s| s.reals.len()).sum();
        let up = self
            .loaded
            .services
            .iter()
            .flat_map(|s| s.reals.iter().map(move |r| (s.service.key, r.dest.addr)))
            .filter(|k| self.health.get(k).is_none_or(|h| h.up))
            .count();
        let role = self.ha.as_ref().map(|h| format!("{}, ", h.role().name())).unwrap_or_default();
        format!("{role}{up} of {total} real servers up")
    }

    fn check_of(&self, k: &RealKey) -> Option<&Check> {
        self.checkers.get(k).map(|c| &c.check)
    }

    async fn on_result(&mut self, r: CheckResult) {
        let Some(checker) = self.checkers.get(&r.real) else { return };
        if checker.id != r.task {
            return;
        }
        let (rise, fall) = (checker.check.rise, checker.check.fall);
        let Some(h) = self.health.get_mut(&r.real) else { return };
        let (key, addr) = r.real;
        let failed = r.result.is_err();
        let Some(t) = h.record(r.result, rise, fall, SystemTime::now()) else {
            if self.dirty {
                self.converge("retrying a change that failed").await;
            } else if failed && self.report_written.elapsed() >= std::time::Duration::from_secs(1) {
                self.write_report();
            }
            return;
        };
        let spec = self.loaded.services.iter().find(|s| s.service.key == key);
        let weight = spec.and_then(|s| s.reals.iter().find(|x| x.dest.addr == addr)).map_or(0, |x| x.dest.weight);
        let action = spec.map_or(health::OnFailure::Drain, |s| s.on_failure);
        match &t {
            Transition::Down(reason) => {
                let act = match action {
                    health::OnFailure::Drain => "weight 0, existing connections drain",
                    health::OnFailure::Remove => "removed from the virtual service",
                };
                warn!(service = %key, real_server = %addr, reason = %reason, fall, action = act, "real server down");
            }
            Transition::Up => {
                info!(service = %key, real_server = %addr, rise, weight, "real server up: configured weight restored");
            }
        }
        self.converge("health change").await;
    }

    /// Make the host match the effective table with `director::apply` (the
    /// reconcile of `director start`: only the difference is applied), log
    /// sorry-server changes, and write the report (before the kernel changes).
    async fn converge(&mut self, why: &str) {
        let (mut desired, sorry_in) = effective(&self.loaded.services, &self.health);
        if let Some(ha) = &self.ha {
            ha.adjust(&mut desired);
        }
        for s in &self.loaded.services {
            let key = s.service.key;
            let now_in = sorry_in.get(&key).copied().unwrap_or(false);
            if now_in != self.sorry_in.get(&key).copied().unwrap_or(false) {
                let sorry = s.sorry.as_ref().map(|d| d.addr.to_string()).unwrap_or_default();
                if now_in {
                    warn!(service = %key, sorry_server = %sorry, "every real server is down: sorry server takes over");
                } else {
                    info!(service = %key, sorry_server = %sorry, "a real server is back: sorry server leaves");
                }
            }
        }
        self.sorry_in = sorry_in;
        journal::sd_notify(&format!("STATUS={}", self.summary()));
        // The report first: whoever sees the kernel change (status, a test)
        // must find the reason for it already in the report.
        self.write_report();
        self.dirty = match crate::director::apply(&self.loaded.director, &desired).await {
            Ok(()) => false,
            Err(e) => {
                error!(reason = %e.msg, why, "cannot change the IPVS table; retrying after the next check");
                true
            }
        };
    }

    async fn reload(&mut self) {
        info!(config = %self.config_path.display(), "SIGHUP: rereading the config");
        let new = match load(&self.config_path) {
            Ok(n) => n,
            Err(e) => {
                error!(
                    config = %self.config_path.display(),
                    reason = %e,
                    "new config rejected; the running configuration stays"
                );
                return;
            }
        };
        let count = |l: &Loaded| l.services.iter().map(|s| s.reals.len()).sum::<usize>();
        let previous = count(&self.loaded);
        self.loaded = new;
        self.sync_reals();
        self.converge("reload").await;
        if !self.dirty {
            info!(
                services = self.loaded.services.len(),
                real_servers = count(&self.loaded),
                previous_real_servers = previous,
                "new config applied"
            );
        }
    }

    fn write_report(&mut self) {
        self.report_written = std::time::Instant::now();
        let mut r = report::new(&self.config_path, self.started);
        for s in &self.loaded.services {
            let key = s.service.key;
            let reals = s
                .reals
                .iter()
                .map(|x| {
                    let k = (key, x.dest.addr);
                    let h = self.health.get(&k);
                    report::RealHealth {
                        addr: x.dest.addr,
                        check: self.check_of(&k).map(describe_check),
                        up: h.is_none_or(|h| h.up),
                        since: h.map_or(report::epoch(self.started), |h| report::epoch(h.since)),
                        last_error: h.and_then(|h| h.last_error.as_ref().map(|e| e.1.clone())),
                        last_error_at: h.and_then(|h| h.last_error.as_ref().map(|e| report::epoch(e.0))),
                        weight: x.dest.weight,
                    }
                })
                .collect();
            r.services.push(report::ServiceHealth {
                key,
                sorry_server: s.sorry.as_ref().map(|d| d.addr),
                sorry_active: self.sorry_in.get(&key).copied().unwrap_or(false),
                real_servers: reals,
            });
        }
        r.ha = self.ha.as_ref().map(crate::ha::Ha::report);
        if let Err(e) = report::write(&self.report_path, &r) {
            warn!(reason = %e.msg, "cannot write the health report");
        }
    }
}

fn describe_check(c: &Check) -> String {
    let kind = match &c.probe {
        checks::Probe::Tcp { port } => format!("tcp port {port}"),
        checks::Probe::Http(h) => format!("http GET :{}{}", h.port, h.path),
        checks::Probe::Exec(x) => format!("exec {} as {}", x.program.display(), x.user),
    };
    format!("{kind} every {}, timeout {}, rise {}, fall {}", Secs(c.interval), Secs(c.timeout), c.rise, c.fall)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use checks::{CheckType, Probe};

    /// The example of README's "Health-checking daemon" section, under a `[director]` header.
    fn readme_example() -> String {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("## Health-checking daemon").expect("README has the daemon section")..];
        let start = section.find("```toml\n").expect("the section has a TOML example") + "```toml\n".len();
        let body = &section[start..];
        format!("[director]\niface = \"enp1s0\"\n{}", &body[..body.find("```").unwrap()])
    }

    /// One task per real server: a check that hangs (a server that accepts
    /// and never answers) does not hold up the checks of another real server.
    #[tokio::test]
    async fn a_slow_check_does_not_delay_another() {
        let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fast = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (sa, fa) = (slow.local_addr().unwrap(), fast.local_addr().unwrap());
        let key = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        let every = std::time::Duration::from_millis(50);
        let hang = Check {
            probe: Probe::Http(http::HttpCheck {
                port: sa.port(),
                path: "/".into(),
                status: 200,
                body: None,
                host: None,
            }),
            interval: every,
            timeout: std::time::Duration::from_secs(30),
            rise: 1,
            fall: 1,
        };
        let quick =
            Check { probe: Probe::Tcp { port: fa.port() }, timeout: std::time::Duration::from_secs(5), ..hang.clone() };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _slow = spawn_checker(tx.clone(), 1, (key, sa), hang);
        let _fast = spawn_checker(tx, 2, (key, fa), quick);
        for _ in 0..5 {
            let r = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
            assert_eq!(r.task, 2, "only the quick check can have finished");
            assert_eq!(r.result, Ok(()));
        }
    }

    #[test]
    fn readme_example_loads() {
        let text = readme_example();
        let d = Config::parse(&text, "README.md").unwrap().director().unwrap();
        let s = specs(&d).unwrap();
        assert_eq!(s[0].on_failure, health::OnFailure::Drain);
        assert_eq!(s[0].sorry.as_ref().unwrap().addr, "10.18.68.190:15858".parse().unwrap());
        let c = s[0].reals[0].check.as_ref().unwrap();
        assert_eq!(c.probe, Probe::Tcp { port: 15858 });
        assert_eq!(
            (c.interval, c.timeout, c.rise, c.fall),
            (Secs::parse("2s").unwrap().0, Secs::parse("1s").unwrap().0, 2, 3)
        );

        // The commented per-real-server form parses too (its exec program need not exist here).
        let mut alt = String::new();
        for l in text.lines() {
            if l.starts_with("real = ") {
                continue;
            }
            let line = if let Some(r) = l.strip_prefix("# real = ") {
                format!("real = {r}")
            } else if let Some(r) = l.strip_prefix("#         ") {
                format!("        {r}")
            } else {
                l.to_owned()
            };
            alt.push_str(&line);
            alt.push('\n');
        }
        let d = Config::parse(&alt, "README.md").unwrap().director().unwrap();
        let kinds: Vec<_> = d.services[0].checks.iter().map(|c| c.as_ref().unwrap().kind).collect();
        assert_eq!(kinds, [CheckType::Http, CheckType::Exec]);
    }
}
