//! The health-checking director daemon (`lvsctl director run`).
//!
//! It reconciles the config as `director start` does, then checks every
//! real server (one task per real server, [`crate::check`]), counts results
//! ([`crate::health`]) and, on a transition, sends only that real server's
//! change: a failed one gets weight 0 (or is removed), a recovered one its
//! configured weight back, and a sorry server takes over while every real
//! server of a service is down. One [`Director`] handle (one IPVS and one
//! route netlink connection) serves the daemon's whole life; the whole table
//! is read and reconciled only at start, on SIGHUP, on a periodic resync
//! (repairing and logging any drift), and on the retries after a change
//! failed (on a timer with backoff, never once per check result).
//!
//! With `[director.ha]` the daemon also runs failover ([`crate::ha`]):
//! keepalived's role adjusts every table it applies (the peer's real server
//! gets weight 0 while this host is not MASTER), and a role change is one
//! more event, answered with a full reconcile over the same handle.
//!
//! Every transition is logged once (tracing), and the health of every real
//! server is kept in a report file ([`crate::health::report`]) that `director
//! status` shows. With `metrics = "ADDR:PORT"` (or `--metrics`) the daemon
//! also serves Prometheus metrics ([`crate::metrics`]): it feeds the
//! registry every report, transition, check duration and resync repair.
//! Only one daemon runs per network namespace
//! ([`crate::state::daemon_lock`]).
//!
//! ```no_run
//! # async fn f() -> Result<(), lvsctl::Error> {
//! let opts = lvsctl::daemon::Options::new("/etc/lvsctl.toml".into());
//! lvsctl::daemon::run(opts).await?;
//! # Ok(()) }
//! ```

mod bgp;
mod drain;
mod events;
pub mod journal;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipvs::reconcile::DesiredService;
use ipvs::{Op, OpOutcome, ServiceKey};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::bgp::Bgp;
use crate::check::{self, security, Check, CheckConfig, Secs, Target};
use crate::config::Config;
use crate::director::{plan::destination_ops, Director, OnError};
use crate::ha::Ha;
use crate::health::drain::Drains;
use crate::health::report;
use crate::health::{effective, Health, RealKey, RealMap, RealSpec, ServiceSpec, Transition};
use crate::metrics::server::Endpoint;
use crate::metrics::Metrics;
use crate::spec::DirectorSpec;
use crate::state;
use crate::Error;
pub use events::{Event, Events};

/// How often the whole table is re-asserted unless the config says otherwise.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(30);
/// The first wait before retrying a change that failed; it doubles up to the
/// resync interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// How many check results may wait for the daemon (a checker waits when full).
const QUEUE: usize = 1024;
/// A start, reload or stop with more changes than this logs their counts
/// instead of a line each.
const LOG_EACH: usize = 32;
/// At most this many check results are counted before their transitions
/// are acted on.
const BATCH: usize = 256;

/// How to run the daemon.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// The TOML config (it must be writable by root only).
    pub config: PathBuf,
    /// On SIGTERM or SIGINT, remove the virtual services and VIPs (as
    /// `director stop` does) instead of leaving them in place.
    pub teardown_on_exit: bool,
    /// Serve Prometheus metrics here (`--metrics`); it wins over the
    /// config's `metrics`.
    pub metrics: Option<std::net::SocketAddr>,
}

impl Options {
    /// Run with the config at `config`, leaving the services on exit.
    pub fn new(config: PathBuf) -> Self {
        Self { config, teardown_on_exit: false, metrics: None }
    }
}

/// A loaded, validated config: the director part as `director start` takes
/// it, and the services with resolved checks.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// What `director start` would configure.
    pub director: DirectorSpec,
    /// The same services, with their checks, failure action and sorry server.
    pub services: Vec<ServiceSpec>,
}

/// Load the config for the daemon: refuse a file others can write (read
/// from the one open file that was checked, at start and on every reload), parse,
/// validate, resolve every check (exec programs are checked the same way).
pub fn load(path: &Path) -> Result<Loaded, Error> {
    let text = security::read_root_only(path, "config file").map_err(Error::Invalid)?;
    let mut director = Config::parse(&text, &path.display().to_string())?.director()?;
    let services = specs(&mut director).map_err(Error::Invalid)?;
    Ok(Loaded { director, services })
}

/// The daemon's view of the validated services. The checks as written are
/// taken out of `d` as they are resolved: the daemon keeps only the
/// resolved ones (a thousand real servers would otherwise hold both).
fn specs(d: &mut DirectorSpec) -> Result<Vec<ServiceSpec>, String> {
    let mut out = Vec::with_capacity(d.services.len());
    for vs in &mut d.services {
        let key = vs.desired.service.key;
        let checks = std::mem::take(&mut vs.checks);
        let mut reals = Vec::with_capacity(vs.desired.destinations.len());
        // Real servers usually share the service's check and port: one
        // resolved check serves each run of equal ones.
        let mut last: Option<(&CheckConfig, u16, Arc<Check>)> = None;
        for (i, dest) in vs.desired.destinations.iter().enumerate() {
            let port = dest.addr.port();
            let check = match checks.get(i).and_then(Option::as_ref) {
                Some(c) => match &last {
                    Some((lc, lp, resolved)) if *lc == c && *lp == port => Some(resolved.clone()),
                    _ => {
                        let owner = format_args!("virtual service {key}, real server {}", dest.addr);
                        let resolved = Arc::new(c.resolve(port, &owner)?);
                        last = Some((c, port, resolved.clone()));
                        Some(resolved)
                    }
                },
                None => None,
            };
            reals.push(RealSpec { dest: dest.clone(), check });
        }
        out.push(ServiceSpec {
            service: vs.desired.service.clone(),
            reals,
            on_failure: vs.on_failure,
            sorry: vs.sorry_server.clone(),
            drain_time: vs.drain_time,
        });
    }
    Ok(out)
}

/// One check result, from a checker task.
#[derive(Debug)]
pub struct CheckResult {
    /// Which task sent it (results of replaced tasks are dropped).
    task: u64,
    real: RealKey,
    /// Up (with the weight a dynamic exec check asked for), or why not.
    result: Result<Option<u32>, String>,
    /// How long the check took, when the checker was asked to time it.
    took: Option<Duration>,
}

/// A running checker task.
struct Checker {
    id: u64,
    check: Arc<Check>,
    handle: JoinHandle<()>,
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The one instant every checker's slots are counted from
/// ([`crate::check::first_due`]).
fn checks_base() -> tokio::time::Instant {
    static BASE: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(tokio::time::Instant::now)
}

/// Check a real server forever, sending every result; each real server has
/// its own task, so a slow check delays only the next check of the same real
/// server. A check is due one interval after the previous one was due (one
/// interval after it ended, when it ran late). Thousands of checkers run in
/// this loop, and on some virtual machines every clock read is a system
/// call: the loop reads the clock once per check (the timeout's start), and
/// when the check ended only when that is needed: `timed` (the result
/// carries how long the check took, for the metrics), or a check that may
/// have run past its next due time (its timeout ends after it). The one
/// sleep is reset from check to check rather than made anew.
fn spawn_checker(tx: mpsc::Sender<CheckResult>, id: u64, real: RealKey, check: Arc<Check>, timed: bool) -> Checker {
    let target = Target { addr: real.1, service: real.0.to_string() };
    let c = check.clone();
    let handle = tokio::spawn(async move {
        let mut due = crate::check::first_due(checks_base(), tokio::time::Instant::now(), c.interval, id);
        let sleep = tokio::time::sleep_until(due);
        tokio::pin!(sleep);
        loop {
            sleep.as_mut().reset(due);
            sleep.as_mut().await;
            let outcome = c.run_bounded(&target).await;
            let next = due + c.interval;
            let started = outcome.as_ref().ok().map(|(_, started)| *started);
            let ended = match started {
                Some(s) if !timed && s + c.timeout < next => None,
                _ => Some(tokio::time::Instant::now()),
            };
            due = match ended {
                Some(e) if next < e => e + c.interval,
                _ => next,
            };
            let (result, started) = match outcome {
                Ok(r) => r,
                Err(why) => {
                    warn!(service = %target.service, real_server = %target.addr, reason = %why, "check not run; counts neither way");
                    continue;
                }
            };
            let took = ended.map(|e| e.saturating_duration_since(started));
            if tx.send(CheckResult { task: id, real, result, took }).await.is_err() {
                return;
            }
        }
    });
    Checker { id, check, handle }
}

/// The daemon's state.
struct Daemon {
    director: Director,
    config_path: PathBuf,
    loaded: Loaded,
    health: RealMap<Health>,
    checkers: RealMap<Checker>,
    sorry_in: HashMap<ServiceKey, bool>,
    tx: mpsc::Sender<CheckResult>,
    next_task: u64,
    /// What the kernel was last made to have, per service; `None` when a
    /// change failed and a full reconcile must find out (the retry).
    applied: Option<HashMap<ServiceKey, DesiredService>>,
    report_path: PathBuf,
    started: SystemTime,
    /// When the report was last written (failed checks that change nothing
    /// else refresh its "last error" at most once a second).
    report_written: std::time::Instant,
    /// Failover (`[director.ha]`): keepalived, the sync daemons, the role.
    ha: Option<Ha>,
    /// The peers' real servers held at weight 0 since this host became
    /// MASTER, until their next good check ([`crate::health::suspect_peers`]).
    held: HashSet<RealKey>,
    /// ECMP scale-out (`[director.bgp]`): BIRD, the announced VIPs.
    bgp: Option<Bgp>,
    /// Real servers draining before they are deleted.
    drains: Drains,
    /// The weights dynamic exec checks asked for (unbounded; the configured
    /// weight is the ceiling when applied).
    weights: RealMap<u32>,
    /// The Prometheus registry, when metrics are served.
    metrics: Option<Metrics>,
    /// The report as last written.
    last_report: Option<report::HealthReport>,
}

/// Run the daemon until SIGTERM or SIGINT.
pub async fn run(opts: Options) -> Result<(), Error> {
    crate::host::require_root("director run")?;
    let (nofile, in_flight) = crate::check::prepare_limits();
    info!(open_files_limit = nofile, checks_in_flight = in_flight, "director run: limits");
    let loaded = load(&opts.config)?;
    let _running = state::daemon_lock(&state::dir())?;
    // Listen first: an address that cannot be used is an error before anything changes.
    let endpoint = match metrics_address(&opts, &loaded) {
        Some(addr) => Some(Endpoint::open(addr).await?),
        None => None,
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let mut events = Events::new(rx, resync_of(&loaded))?;
    let director = Director::connect().await?;
    // Failover first: a missing keepalived is an error before anything changes.
    let mut ha = Ha::start(&loaded.director, director.ipvs()).await?;
    if let Some(roles) = ha.as_mut().and_then(Ha::take_events) {
        events.add_roles(roles);
    }
    // BGP next: a missing BIRD or a bad [director.bgp] stops here too.
    let bgp = Bgp::start(&loaded.director).await?;
    let mut d = Daemon {
        director,
        config_path: opts.config.clone(),
        loaded,
        health: RealMap::default(),
        checkers: RealMap::default(),
        sorry_in: HashMap::new(),
        tx,
        next_task: 0,
        applied: None,
        report_path: report::path(&state::dir())?,
        started: SystemTime::now(),
        report_written: std::time::Instant::now(),
        ha,
        bgp,
        drains: Drains::default(),
        weights: RealMap::default(),
        held: HashSet::new(),
        metrics: endpoint.as_ref().map(|_| Metrics::new()),
        last_report: None,
    };
    if let Err(e) = d.start(&mut events).await {
        if let Some(b) = d.bgp.as_mut() {
            b.shutdown_now().await;
        }
        return Err(e);
    }
    let _server = endpoint.zip(d.metrics.clone()).map(|(e, m)| e.serve(m));
    state::set_lock_wait(state::DAEMON_LOCK_WAIT);
    let signal_name = loop {
        match events.next().await {
            Event::Check(r) => d.on_results(r, &mut events).await,
            Event::Reload => d.reload(&mut events).await,
            Event::Resync => d.converge("resync", &mut events).await,
            Event::Retry => d.converge("retrying a change that failed", &mut events).await,
            Event::DrainPoll => d.poll_drains(&mut events).await,
            Event::Role(e) => {
                if d.ha.as_mut().is_some_and(|h| h.on_event(e)) {
                    d.hold_suspect_peers();
                    d.converge("failover role change", &mut events).await;
                }
            }
            Event::Stop(name) => break name,
        }
    };
    state::set_lock_wait(state::COMMAND_LOCK_WAIT);
    d.finish(signal_name, opts.teardown_on_exit).await
}

/// Where to serve metrics: `--metrics` wins over the config's `metrics`.
fn metrics_address(opts: &Options, l: &Loaded) -> Option<std::net::SocketAddr> {
    opts.metrics.or(l.director.metrics)
}

fn resync_of(l: &Loaded) -> Duration {
    l.director.resync_interval.unwrap_or(DEFAULT_RESYNC)
}

impl Daemon {
    /// The first reconcile: a config the host refuses (a foreign service, a
    /// missing interface) stops the daemon; a kernel that refuses a change
    /// is retried. The table comes first: every real server starts up (as
    /// after `director start`), so nothing needs to wait for the checkers,
    /// which start right after it, nor for the report.
    async fn start(&mut self, events: &mut Events) -> Result<(), Error> {
        let (desired, sorry_in) = self.effective();
        self.sorry_in = sorry_in;
        let spec = self.drains.spec_with(&self.loaded.director);
        match self.director.reconcile_with(&spec, &desired, OnError::Keep).await {
            Ok(r) => {
                log_changes(&r.changes, "start");
                self.applied = Some(by_key(desired));
            }
            Err(i) if i.error.is_input() || i.error.is_permission() => return Err(i.error),
            Err(i) => {
                log_changes(&i.report.changes, "start");
                error!(reason = %i.error, "cannot change the IPVS table; retrying");
                events.retry_later();
            }
        }
        self.sync_reals();
        self.write_report();
        release_memory();
        self.announce().await;
        journal::sd_notify(&format!("READY=1\nSTATUS={}", self.summary()));
        info!(
            config = %self.config_path.display(),
            services = self.loaded.services.len(),
            checked_real_servers = self.checkers.len(),
            "director run: configuration applied, health checks started"
        );
        Ok(())
    }

    async fn finish(mut self, signal_name: &str, teardown: bool) -> Result<(), Error> {
        journal::sd_notify("STOPPING=1");
        if let Some(b) = self.bgp.as_mut() {
            b.withdraw_all(&format!("director run is stopping ({signal_name})")).await;
            self.write_report();
        }
        if let Some(b) = self.bgp.as_mut() {
            b.drain_and_stop().await;
        }
        self.checkers.clear();
        self.abandon_drains(teardown);
        if let Some(ha) = self.ha.as_mut() {
            ha.stop(self.director.ipvs()).await;
        }
        let _ = state::remove(&self.report_path);
        if teardown {
            info!(signal = signal_name, "director run: stopping, removing the virtual services and VIPs");
            let r = self.director.stop().await;
            let changes = match &r {
                Ok(report) => &report.changes,
                Err(i) => &i.report.changes,
            };
            log_changes(changes, "stop");
            r?;
        } else {
            info!(
                signal = signal_name,
                services = self.loaded.services.len(),
                "director run: stopping, leaving the virtual services in place"
            );
        }
        Ok(())
    }

    /// Make the health and checker maps match the loaded services: new real
    /// servers start up with a new checker, removed ones are forgotten, ones
    /// that stay keep their health (and their checker unless its check changed).
    fn sync_reals(&mut self) {
        let now = SystemTime::now();
        let mut want: RealMap<Option<Arc<Check>>> = RealMap::default();
        for s in &self.loaded.services {
            for r in &s.reals {
                want.insert((s.service.key, r.dest.addr), r.check.clone());
            }
        }
        self.health.retain(|k, _| want.contains_key(k));
        self.checkers.retain(|k, c| want.get(k).is_some_and(|w| w.as_ref() == Some(&c.check)));
        // A dynamic weight belongs to the check that asked for it.
        let checkers = &self.checkers;
        self.weights.retain(|k, _| checkers.contains_key(k));
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
                    let checker = spawn_checker(self.tx.clone(), self.next_task, k, c, self.metrics.is_some());
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

    /// The table to apply: the configured services as the health has them
    /// (drained, removed, sorry server in), adjusted for the failover role;
    /// and which services have their sorry server in.
    fn effective(&self) -> (Vec<DesiredService>, HashMap<ServiceKey, bool>) {
        let (mut desired, sorry_in) = effective(&self.loaded.services, &self.health);
        crate::health::apply_weights(&mut desired, &self.weights);
        crate::health::hold(&mut desired, &self.held);
        self.drains.apply(&mut desired);
        if let Some(ha) = &self.ha {
            ha.adjust(&mut desired);
        }
        (desired, sorry_in)
    }

    /// After a role change: as the new MASTER, hold the peers' real servers
    /// whose last check failed at weight 0 ([`crate::health::suspect_peers`]);
    /// in any other role nothing is held (the standby form zeroes the peers).
    fn hold_suspect_peers(&mut self) {
        let master = self.ha.as_ref().is_some_and(|h| h.role() == crate::ha::Role::Master);
        self.held =
            if master { crate::health::suspect_peers(&self.health, crate::host::is_local) } else { HashSet::new() };
        for (key, addr) in &self.held {
            let reason = self.health.get(&(*key, *addr)).and_then(|h| h.last_error.as_ref()).map(|e| e.1.clone());
            warn!(service = %key, real_server = %addr, reason = reason.as_deref().unwrap_or("-"),
                "failover: the peer's real server failed its last check: weight 0 until a check passes");
        }
    }

    /// Count a check result and every other one already waiting (up to
    /// [`BATCH`]), then act on their transitions at once: one health view
    /// (report, sorry servers) and one batch of kernel changes however many
    /// real servers changed. Under load results queue up, so the work per
    /// result shrinks instead of falling behind.
    async fn on_results(&mut self, first: CheckResult, events: &mut Events) {
        let mut changed: Vec<ServiceKey> = Vec::new();
        let mut failed = self.record(first, events, &mut changed);
        for _ in 1..BATCH {
            let Some(r) = events.waiting_check() else { break };
            failed |= self.record(r, events, &mut changed);
        }
        if !changed.is_empty() {
            self.transitions(&changed, events).await;
        } else if failed && self.report_written.elapsed() >= Duration::from_secs(1) {
            self.write_report();
        }
    }

    /// Count one check result. A service whose table must change (a
    /// transition, or a new dynamic weight of a real server that is up) is
    /// added to `changed`; returns whether the check failed.
    fn record(&mut self, r: CheckResult, events: &mut Events, changed: &mut Vec<ServiceKey>) -> bool {
        let Some(checker) = self.checkers.get(&r.real) else { return false };
        if checker.id != r.task {
            return false;
        }
        let (rise, fall, kind) = (checker.check.rise, checker.check.fall, checker.check.probe.kind());
        let reweighted = match &r.result {
            Ok(asked) => self.set_dynamic_weight(r.real, *asked),
            Err(_) => false,
        };
        if let (Some(m), Some(took)) = (&self.metrics, r.took) {
            m.check_took(kind, took);
        }
        let Some(h) = self.health.get_mut(&r.real) else { return false };
        let failed = r.result.is_err();
        if !failed && !self.held.is_empty() && self.held.remove(&r.real) && !changed.contains(&r.real.0) {
            info!(service = %r.real.0, real_server = %r.real.1, "failover: the peer's real server passed a check: weight restored");
            changed.push(r.real.0);
        }
        let Some(t) = h.record(r.result.map(drop), rise, fall, SystemTime::now) else {
            if reweighted && h.up && !changed.contains(&r.real.0) {
                changed.push(r.real.0);
            }
            return failed;
        };
        self.log_transition(r.real, &t, rise, fall);
        self.drain_on_transition(r.real, &t, events);
        if let Some(m) = &self.metrics {
            m.transition(&r.real.0, r.real.1);
        }
        if !changed.contains(&r.real.0) {
            changed.push(r.real.0);
        }
        failed
    }

    fn log_transition(&self, (key, addr): RealKey, t: &Transition, rise: u32, fall: u32) {
        let spec = self.loaded.services.iter().find(|s| s.service.key == key);
        let weight = spec.and_then(|s| s.reals.iter().find(|x| x.dest.addr == addr)).map_or(0, |x| x.dest.weight);
        let action = spec.map_or(crate::health::OnFailure::Drain, |s| s.on_failure);
        match t {
            Transition::Down(reason) => {
                let drains = spec.is_some_and(|s| !s.drain_time.is_zero());
                let act = match (action, drains) {
                    (crate::health::OnFailure::Drain, _) => "weight 0, existing connections drain",
                    (crate::health::OnFailure::Remove, true) => "weight 0, removed once drained",
                    (crate::health::OnFailure::Remove, false) => "removed from the virtual service",
                };
                warn!(service = %key, real_server = %addr, reason = %reason, fall, action = act, "real server down");
            }
            Transition::Up => {
                info!(service = %key, real_server = %addr, rise, weight, "real server up: configured weight restored");
            }
        }
    }

    /// The health of real servers of `keys` changed: send those services'
    /// changes alone, as one batch (no dump, no lock). While an earlier
    /// change is still unresolved, the retry's full reconcile takes these in
    /// too.
    async fn transitions(&mut self, keys: &[ServiceKey], events: &mut Events) {
        let desired = self.update_health_view();
        let Some(applied) = self.applied.as_mut() else { return };
        let mut after: Vec<DesiredService> = desired.into_iter().filter(|d| keys.contains(&d.service.key)).collect();
        after.retain(|d| applied.contains_key(&d.service.key));
        let ops: Vec<Op> = after.iter().flat_map(|a| destination_ops(&applied[&a.service.key], a)).collect();
        match first_failure(self.director.send(&ops).await, &ops) {
            None => applied.extend(after.into_iter().map(|d| (d.service.key, d))),
            Some((op, e)) => {
                error!(reason = %e, change = %op, "cannot change the IPVS table; retrying");
                self.applied = None;
                events.retry_later();
            }
        }
        self.announce().await;
    }

    /// Work out the effective table from the health, log sorry-server
    /// changes, tell systemd, write the report (before the kernel changes:
    /// whoever sees the kernel change must find its reason in the report).
    fn update_health_view(&mut self) -> Vec<DesiredService> {
        let (desired, sorry_in) = self.effective();
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
        self.write_report();
        desired
    }

    /// A full reconcile of the effective table (resync, retry, role change):
    /// the table is read and every difference repaired and logged.
    async fn converge(&mut self, why: &'static str, events: &mut Events) {
        let desired = self.update_health_view();
        self.reconcile(why, desired, false, events).await;
    }

    /// Change the services whose effective form differs from what the
    /// kernel was last made to have (added, changed or removed ones),
    /// planned from that known table without reading it: a reload that
    /// changes 1 % of a thousand services sends just their changes. A kernel
    /// that differs after all fails a change, and the retry reconciles in
    /// full; the periodic resync reads everything anyway. Without a known
    /// table (an earlier change failed) the whole table is reconciled.
    async fn converge_changed(&mut self, why: &'static str, events: &mut Events) {
        let desired = self.update_health_view();
        self.reconcile(why, desired, true, events).await;
    }

    /// Reconcile `desired` (the whole table, or with `changed_only` and a
    /// known table just the services that differ from it), log and count
    /// what changed, and retry later when the kernel refused.
    async fn reconcile(
        &mut self,
        why: &'static str,
        desired: Vec<DesiredService>,
        changed_only: bool,
        events: &mut Events,
    ) {
        let spec = self.drains.spec_with(&self.loaded.director);
        let known = self.applied.take();
        let result = match known.as_ref().filter(|_| changed_only) {
            Some(known) => {
                let only = changed_services(known, &desired);
                self.director.reconcile_known(&spec, &desired, &only, known, OnError::Keep).await
            }
            None => self.director.reconcile_with(&spec, &desired, OnError::Keep).await,
        };
        match result {
            Ok(r) => {
                log_changes(&r.changes, why);
                self.count_repairs(&r.changes, why);
                self.applied = Some(by_key(desired));
                events.succeeded();
            }
            Err(i) => {
                log_changes(&i.report.changes, why);
                self.count_repairs(&i.report.changes, why);
                error!(reason = %i.error, why, "cannot change the IPVS table; retrying");
                self.applied = None;
                events.retry_later();
            }
        }
        release_memory();
        self.announce().await;
    }

    /// Count a resync's or a retry's changes as repairs (in the metrics).
    fn count_repairs(&self, changes: &[crate::host::Change], why: &str) {
        if let (Some(m), true) = (&self.metrics, is_repair(why)) {
            m.repaired(changes.len());
        }
    }

    async fn reload(&mut self, events: &mut Events) {
        info!(config = %self.config_path.display(), "SIGHUP: rereading the config");
        let loaded = match load(&self.config_path) {
            Ok(n) => self.stage_bgp(&n.director).await.map(|staged| (n, staged)).map_err(Error::Invalid),
            Err(e) => Err(e),
        };
        let (new, staged) = match loaded {
            Ok(n) => n,
            Err(e) => {
                let config = self.config_path.display();
                error!(config = %config, reason = %e, "new config rejected; the running configuration stays");
                return;
            }
        };
        let count = |l: &Loaded| l.services.iter().map(|s| s.reals.len()).sum::<usize>();
        let previous = count(&self.loaded);
        if new.director.metrics != self.loaded.director.metrics {
            warn!("the metrics address of the new config takes effect on the next start of director run");
        }
        events.set_resync(resync_of(&new));
        self.drains_on_reload(&new, events);
        self.loaded = new;
        // BGP before the table: a VIP no longer announced is withdrawn
        // before its services go.
        self.apply_bgp(staged).await;
        self.sync_reals();
        self.converge_changed("reload", events).await;
        if self.applied.is_some() {
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
            r.services.push(self.service_health(s));
        }
        r.ha = self.ha.as_ref().map(Ha::report);
        r.bgp = self.bgp.as_ref().map(Bgp::report);
        r.draining = self.drain_report();
        // A resync that changed nothing leaves the file (and the metrics) as
        // they are: a thousand real servers make a report worth not rewriting
        // every 30 s.
        if self.last_report.as_ref() == Some(&r) {
            return;
        }
        if let Some(m) = &self.metrics {
            m.set_report(&r);
        }
        match report::write(&self.report_path, &r) {
            Ok(()) => self.last_report = Some(r),
            Err(e) => warn!(reason = %e, "cannot write the health report"),
        }
    }

    fn service_health(&self, s: &ServiceSpec) -> report::ServiceHealth {
        let key = s.service.key;
        let reals = s
            .reals
            .iter()
            .map(|x| {
                let k = (key, x.dest.addr);
                let h = self.health.get(&k);
                report::RealHealth {
                    addr: x.dest.addr,
                    check: self.checkers.get(&k).map(|c| describe_check(&c.check)),
                    up: h.is_none_or(|h| h.up),
                    since: h.map_or(report::epoch(self.started), |h| report::epoch(h.since)),
                    last_error: h.and_then(|h| h.last_error.as_ref().map(|e| e.1.clone())),
                    last_error_at: h.and_then(|h| h.last_error.as_ref().map(|e| report::epoch(e.0))),
                    weight: x.dest.weight,
                    dynamic_weight: self
                        .weights
                        .get(&k)
                        .map(|&w| crate::check::dynamic::bounded(Some(w), x.dest.weight)),
                }
            })
            .collect();
        report::ServiceHealth {
            key,
            sorry_server: s.sorry.as_ref().map(|d| d.addr),
            sorry_active: self.sorry_in.get(&key).copied().unwrap_or(false),
            on_failure: s.on_failure,
            sorry: s.sorry.clone(),
            real_servers: reals,
        }
    }
}

/// Give the memory a full reconcile used for a moment (the whole table
/// read, the plan, the record) back to the system: the daemon lives for
/// months, and the allocator keeps freed memory otherwise.
fn release_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the system.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The first operation of a batch that failed, with why; `None` when all
/// were done. An operation cut short (perhaps done, perhaps not sent) counts
/// as failed: the retry's reconcile reads the table.
fn first_failure(sent: Result<ipvs::Applied, Error>, ops: &[Op]) -> Option<(&Op, ipvs::Error)> {
    let applied = match sent {
        Ok(a) => a,
        Err(e) => return ops.first().map(|op| (op, ipvs::Error::invalid(e.to_string()))),
    };
    let (outcomes, mut interrupted) = applied.into_parts();
    let first = outcomes.into_iter().zip(ops).find_map(|(o, op)| match o {
        OpOutcome::Done => None,
        OpOutcome::Failed(e) => Some((op, e)),
        OpOutcome::Unknown | OpOutcome::NotSent => interrupted.take().map(|e| (op, e)),
    });
    first.or_else(|| Some((ops.first()?, interrupted?)))
}

/// The services whose effective form in `desired` differs from `applied`:
/// changed, added, and those `applied` has that `desired` no longer wants.
fn changed_services(applied: &HashMap<ServiceKey, DesiredService>, desired: &[DesiredService]) -> HashSet<ServiceKey> {
    let wanted: HashSet<ServiceKey> = desired.iter().map(|d| d.service.key).collect();
    let mut only: HashSet<ServiceKey> =
        desired.iter().filter(|d| applied.get(&d.service.key) != Some(*d)).map(|d| d.service.key).collect();
    only.extend(applied.keys().filter(|k| !wanted.contains(*k)));
    only
}

fn by_key(desired: Vec<DesiredService>) -> HashMap<ServiceKey, DesiredService> {
    desired.into_iter().map(|d| (d.service.key, d)).collect()
}

/// Log what a full reconcile changed: at start and reload what the config
/// asked for, on a resync or retry a drift repaired (always one line each).
/// A start, reload or stop of more than [`LOG_EACH`] changes is one line
/// of counts, each change at debug level: a thousand services must not
/// mean five thousand log lines (and their writes) before checks start.
fn log_changes(changes: &[crate::host::Change], why: &str) {
    if changes.len() > LOG_EACH && !is_repair(why) {
        let summary = crate::host::summarize(changes);
        info!(changes = changes.len(), summary = %summary, why, "changed (each change: LVSCTL_LOG=debug)");
        for c in changes {
            debug!(change = %c, why, "changed");
        }
        return;
    }
    for c in changes {
        if is_repair(why) {
            warn!(change = %c, why, "drift repaired");
        } else {
            info!(change = %c, why, "changed");
        }
    }
}

/// Whether the changes of a full reconcile done for `why` repair drift.
fn is_repair(why: &str) -> bool {
    matches!(why, "resync" | "retrying a change that failed")
}

fn describe_check(c: &Check) -> String {
    let kind = match &c.probe {
        check::Probe::Tcp { port } => format!("tcp port {port}"),
        check::Probe::Http(h) => format!("http GET :{}{}", h.port, h.path),
        check::Probe::Exec(x) => format!("exec {} as {}", x.program.display(), x.user),
        check::Probe::Https(h) => format!("https GET :{}{}", h.http.port, h.http.path),
        check::Probe::Udp(u) => format!("udp port {}", u.port),
        check::Probe::Dns(d) => format!("dns {} {} port {}", d.query_type, d.name, d.port),
        check::Probe::Postgres(p) => p.describe(),
    };
    format!("{kind} every {}, timeout {}, rise {}, fall {}", Secs(c.interval), Secs(c.timeout), c.rise, c.fall)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{http, CheckType, Probe};
    use crate::config::Config;

    /// The example of docs/health-daemon.md's "Checks in the config file" section, under a `[director]` header.
    fn readme_example() -> String {
        let doc = include_str!("../../../docs/health-daemon.md");
        let section =
            &doc[doc.find("## Checks in the config file").expect("docs/health-daemon.md has the checks section")..];
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
        let (tx, mut rx) = mpsc::channel(4);
        let _slow = spawn_checker(tx.clone(), 1, (key, sa), Arc::new(hang), false);
        let _fast = spawn_checker(tx, 2, (key, fa), Arc::new(quick), false);
        for _ in 0..5 {
            let r = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
            assert_eq!(r.task, 2, "only the quick check can have finished");
            assert_eq!(r.result, Ok(None));
        }
    }

    #[test]
    fn the_metrics_flag_wins_over_the_config() {
        let text = "[director]\niface = \"eth0\"\nmetrics = \"127.0.0.1:9101\"\n[[director.service]]\nvip = \"10.0.0.1\"\nport = 80\nreal = [\"10.0.0.2\"]\n";
        let mut director = Config::parse(text, "t.toml").unwrap().director().unwrap();
        let loaded = Loaded { services: specs(&mut director).unwrap(), director };
        let mut opts = Options::new("t.toml".into());
        assert_eq!(metrics_address(&opts, &loaded), Some("127.0.0.1:9101".parse().unwrap()));
        opts.metrics = Some("[::1]:9200".parse().unwrap());
        assert_eq!(metrics_address(&opts, &loaded), Some("[::1]:9200".parse().unwrap()));
        let off = Config::parse(&text.replace("metrics = \"127.0.0.1:9101\"\n", ""), "t.toml").unwrap();
        let mut director = off.director().unwrap();
        let loaded = Loaded { services: specs(&mut director).unwrap(), director };
        assert_eq!(metrics_address(&Options::new("t.toml".into()), &loaded), None, "off by default");
    }

    #[test]
    fn readme_example_loads() {
        let text = readme_example();
        let mut d = Config::parse(&text, "docs/health-daemon.md").unwrap().director().unwrap();
        let s = specs(&mut d).unwrap();
        assert_eq!(s[0].on_failure, crate::health::OnFailure::Drain);
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
        let d = Config::parse(&alt, "docs/health-daemon.md").unwrap().director().unwrap();
        let kinds: Vec<_> = d.services[0].checks.iter().map(|c| c.as_ref().unwrap().kind).collect();
        assert_eq!(kinds, [CheckType::Http, CheckType::Exec]);
    }
}

/// The checkers against loopback addresses (no IPVS, no root needed), their
/// results counted as the daemon's loop counts them.
#[cfg(test)]
mod loopback {
    use super::*;
    use std::net::SocketAddr;

    fn env(name: &str, default: u64) -> u64 {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    /// Every real server is checked and found up. With `LVSCTL_PROFILE_SECS`
    /// (and `LVSCTL_PROFILE_REALS`, `LVSCTL_PROFILE_INTERVAL_MS`) it doubles
    /// as a profiling harness of the steady state for `perf record` or
    /// `valgrind --tool=callgrind`: `LVSCTL_PROFILE_SECS=20
    /// LVSCTL_PROFILE_REALS=4000 LVSCTL_PROFILE_INTERVAL_MS=5000 cargo test
    /// --release -p lvsctl --lib checkers_on_loopback -- --nocapture`.
    #[test]
    fn checkers_on_loopback_check_every_real_server() {
        let secs = env("LVSCTL_PROFILE_SECS", 2);
        let (reals, every) = (env("LVSCTL_PROFILE_REALS", 200), env("LVSCTL_PROFILE_INTERVAL_MS", 500));
        let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                drop(s);
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (checked, up) = rt.block_on(run(reals, Duration::from_millis(every), Duration::from_secs(secs), port));
        println!("{checked} checks in {secs} s");
        assert_eq!(up, reals, "every real server passed a check ({checked} checks in {secs} s)");
    }

    /// The checkers and a loop that counts their results as `Daemon::record` does.
    /// Returns the checks counted and how many real servers passed one.
    async fn run(reals: u64, every: Duration, secs: Duration, port: u16) -> (u64, u64) {
        let key = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        let check = Arc::new(Check {
            probe: check::Probe::Tcp { port },
            interval: every,
            timeout: Duration::from_secs(2),
            rise: 1,
            fall: 2,
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut checkers = RealMap::default();
        let mut health = RealMap::default();
        for n in 0..reals {
            let ip = std::net::Ipv4Addr::from(0x7f00_0001 + u32::try_from(n).unwrap());
            let real = (key, SocketAddr::from((ip, 80)));
            checkers.insert(real, spawn_checker(tx.clone(), n + 1, real, check.clone(), false));
            health.insert(real, Health::new(SystemTime::now()));
        }
        let mut events = Events::new(rx, DEFAULT_RESYNC).unwrap();
        let stop = tokio::time::sleep(secs);
        tokio::pin!(stop);
        let mut checked = 0;
        loop {
            let first = tokio::select! {
                Event::Check(r) = events.next() => r,
                () = &mut stop => break,
            };
            let mut r = Some(first);
            for _ in 0..BATCH {
                let Some(r) = r.take().or_else(|| events.waiting_check()) else { break };
                let c = &checkers[&r.real];
                let h = health.get_mut(&r.real).unwrap();
                let _ = h.record(r.result.map(drop), c.check.rise, c.check.fall, SystemTime::now);
                checked += 1;
            }
        }
        let up = health.values().filter(|h| h.ok_streak > 0).count();
        (checked, u64::try_from(up).unwrap())
    }
}
