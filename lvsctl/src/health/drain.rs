//! Drains of `director run`: a real server the daemon is about to delete
//! keeps its connections first. It gets weight 0 at once (no new
//! connections), stays until it has no active connection left or its
//! service's `drain_time` passes, and is deleted then.
//!
//! Two things start a drain:
//! - a real server removed from the config on SIGHUP ([`DrainCause::Removed`]);
//!   when its whole virtual service is removed, every real server of it
//!   drains and the service (and its VIP) stays until the last one is done;
//! - a real server that fails its check in a service with
//!   `on_failure = "remove"` ([`DrainCause::Failed`]).
//!
//! No I/O here: the daemon reads the connection counts and applies the
//! table; this module decides, and its decisions are unit-tested.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use ipvs::reconcile::DesiredService;
use ipvs::{Destination, DestinationEntry, Protocol, Service, ServiceKey};
use serde::{Deserialize, Serialize};

use super::{RealKey, ServiceSpec};
use crate::spec::{DirectorSpec, VirtualService};

/// How long a real server drains unless its service sets `drain_time`.
pub const DEFAULT_DRAIN_TIME: Duration = Duration::from_secs(30);

/// Why a real server drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainCause {
    /// It was removed from the config (SIGHUP).
    Removed,
    /// It failed its check and its service has `on_failure = "remove"`.
    Failed,
}

impl DrainCause {
    /// `removed from the config`, `failed its check`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Removed => "removed from the config",
            Self::Failed => "failed its check (on_failure = remove)",
        }
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// No active connection left: the real server is deleted.
    Idle,
    /// `drain_time` passed with connections left: it is deleted anyway.
    TimedOut(u32),
    /// It is gone from the kernel already (deleted by someone else).
    Gone,
    /// It is in the config again: it is simply put back.
    PutBack,
    /// It passed its checks again: its weight is restored.
    Recovered,
}

impl DrainEnd {
    /// For the log line.
    pub fn describe(self) -> String {
        match self {
            Self::Idle => "no active connection left; deleted".to_owned(),
            Self::TimedOut(n) => format!("drain_time passed with {n} active connection(s) left; deleted"),
            Self::Gone => "it is no longer in the kernel's table".to_owned(),
            Self::PutBack => "it is in the config again; put back".to_owned(),
            Self::Recovered => "it passed its checks again; weight restored".to_owned(),
        }
    }
}

/// One real server draining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    /// Its virtual service, as it was when the drain started.
    pub service: Service,
    /// The destination as it was (it is applied with weight 0).
    pub dest: Destination,
    /// Why it drains.
    pub cause: DrainCause,
    /// When it started (wall clock, for the report).
    pub since: SystemTime,
    /// When it is deleted even with connections left.
    pub deadline: Instant,
    /// The same deadline on the wall clock (for the report).
    pub until: SystemTime,
}

/// The time now, on the monotonic clock (deadlines) and the wall clock (the report).
pub type Now = (Instant, SystemTime);

/// Every drain in progress, and the services removed from the config that
/// stay while their real servers drain.
#[derive(Debug, Default, Clone)]
pub struct Drains {
    reals: HashMap<RealKey, Drain>,
    removed: HashMap<ServiceKey, VirtualService>,
}

/// The connections that keep a real server busy: active ones (established
/// TCP and SCTP); for UDP, whose entries the kernel counts as inactive, all.
pub fn busy(key: &ServiceKey, d: &DestinationEntry) -> u32 {
    match key {
        ServiceKey::Inet { protocol: Protocol::Udp, .. } => d.active_conns + d.inactive_conns,
        _ => d.active_conns,
    }
}

impl Drains {
    /// Whether anything drains.
    pub fn is_empty(&self) -> bool {
        self.reals.is_empty()
    }

    /// The drains in progress.
    pub fn iter(&self) -> impl Iterator<Item = (&RealKey, &Drain)> {
        self.reals.iter()
    }

    /// Whether this real server drains.
    pub fn contains(&self, k: &RealKey) -> bool {
        self.reals.contains_key(k)
    }

    /// The services with a real server draining (the ones to poll).
    pub fn services(&self) -> Vec<ServiceKey> {
        let mut out: Vec<ServiceKey> = self.reals.keys().map(|k| k.0).collect();
        out.sort_by_key(|k| k.to_string());
        out.dedup();
        out
    }

    fn start(&mut self, service: &Service, dest: Destination, cause: DrainCause, time: Duration, now: Now) {
        let k = (service.key, dest.addr);
        let (service, since) = (service.clone(), now.1);
        let drain = Drain { service, dest, cause, since, deadline: now.0 + time, until: now.1 + time };
        self.reals.insert(k, drain);
    }

    /// The config was reloaded: `old` is the table the kernel was made to
    /// have (drains included), `old_spec` and `new` the config before and
    /// after. Every real server of `old` that `new` no longer has starts to
    /// drain (unless `drain_time` is 0: it is then deleted at once), and a
    /// draining one that `new` has again is put back. Returns the drains
    /// started and ended.
    pub fn on_reload(
        &mut self,
        old: &[DesiredService],
        old_spec: &DirectorSpec,
        new: &DirectorSpec,
        now: Now,
    ) -> (Vec<RealKey>, Vec<(RealKey, DrainEnd)>) {
        let configured = |k: &RealKey| {
            new.services
                .iter()
                .any(|s| s.desired.service.key == k.0 && s.desired.destinations.iter().any(|d| d.addr == k.1))
        };
        let mut ended = Vec::new();
        self.reals.retain(|k, d| {
            // A failed real server drains whether or not the file changed.
            let back = d.cause == DrainCause::Removed && configured(k);
            if back {
                ended.push((*k, DrainEnd::PutBack));
            }
            !back
        });
        let mut started = Vec::new();
        for svc in old {
            let key = svc.service.key;
            let now_spec = new.services.iter().find(|s| s.desired.service.key == key);
            let was_spec = old_spec.services.iter().find(|s| s.desired.service.key == key);
            let time = now_spec.or(was_spec).map_or(DEFAULT_DRAIN_TIME, |s| s.drain_time);
            for d in &svc.destinations {
                let k = (key, d.addr);
                let is_sorry = was_spec.and_then(|s| s.sorry_server.as_ref()).is_some_and(|x| x.addr == d.addr);
                if configured(&k) || self.reals.contains_key(&k) || time.is_zero() || is_sorry {
                    continue;
                }
                self.start(&svc.service, d.clone(), DrainCause::Removed, time, now);
                started.push(k);
            }
            if let (None, Some(was)) = (now_spec, was_spec) {
                self.removed.insert(key, was.clone());
            }
        }
        self.removed.retain(|key, _| !new.services.iter().any(|s| s.desired.service.key == *key));
        self.forget_idle_services();
        (started, ended)
    }

    /// A real server of `spec` went down: with `on_failure = "remove"` and a
    /// drain time it drains before it is deleted. Whether a drain started.
    pub fn on_down(&mut self, spec: &ServiceSpec, addr: SocketAddr, now: Now) -> bool {
        let k = (spec.service.key, addr);
        let Some(r) = spec.reals.iter().find(|r| r.dest.addr == addr) else { return false };
        if spec.on_failure != super::OnFailure::Remove || spec.drain_time.is_zero() || self.reals.contains_key(&k) {
            return false;
        }
        self.start(&spec.service, r.dest.clone(), DrainCause::Failed, spec.drain_time, now);
        true
    }

    /// A real server came back up: a drain because it failed ends.
    pub fn on_up(&mut self, k: &RealKey) -> Option<DrainEnd> {
        match self.reals.get(k) {
            Some(d) if d.cause == DrainCause::Failed => {
                self.reals.remove(k);
                Some(DrainEnd::Recovered)
            }
            _ => None,
        }
    }

    /// Which drains are over, given the connection counts the kernel has
    /// now (`counts[k]`: the busy connections of a real server; a missing
    /// entry: the real server is not in the kernel). Services whose counts
    /// could not be read this time are left out of `read`.
    pub fn due(&self, counts: &HashMap<RealKey, u32>, read: &[ServiceKey], now: Instant) -> Vec<(RealKey, DrainEnd)> {
        let mut out = Vec::new();
        for (k, d) in &self.reals {
            if !read.contains(&k.0) {
                continue;
            }
            let end = match counts.get(k) {
                None => DrainEnd::Gone,
                Some(0) => DrainEnd::Idle,
                Some(&n) if now >= d.deadline => DrainEnd::TimedOut(n),
                Some(_) => continue,
            };
            out.push((*k, end));
        }
        out.sort_by_key(|(k, _)| (k.0.to_string(), k.1));
        out
    }

    /// Forget drains that ended; a removed service with no real server
    /// left draining is forgotten too (the next reconcile deletes it).
    /// Returns whether such a service was forgotten.
    pub fn finish(&mut self, ended: &[(RealKey, DrainEnd)]) -> bool {
        for (k, _) in ended {
            self.reals.remove(k);
        }
        self.forget_idle_services()
    }

    fn forget_idle_services(&mut self) -> bool {
        let before = self.removed.len();
        let reals = &self.reals;
        self.removed.retain(|key, _| reals.keys().any(|k| k.0 == *key));
        self.removed.len() != before
    }

    /// Put the drains into a table worked out from the config and the
    /// health: every draining real server is there with weight 0, and each
    /// removed service that still has one is there too.
    pub fn apply(&self, desired: &mut Vec<DesiredService>) {
        let mut keys: Vec<&RealKey> = self.reals.keys().collect();
        keys.sort_by_key(|k| (k.0.to_string(), k.1));
        for k in keys {
            let d = &self.reals[k];
            let at = match desired.iter().position(|s| s.service.key == k.0) {
                Some(i) => i,
                None => {
                    if !self.removed.contains_key(&k.0) {
                        continue;
                    }
                    desired.push(DesiredService { service: d.service.clone(), destinations: Vec::new() });
                    desired.len() - 1
                }
            };
            let dests = &mut desired[at].destinations;
            match dests.iter_mut().find(|x| x.addr == k.1) {
                Some(x) => x.weight = 0,
                None => dests.push(d.dest.clone().with_weight(0)),
            }
        }
    }

    /// The director spec to reconcile with: the config's, plus each removed
    /// service that still drains (its VIP stays on the interface, or the
    /// connections to it would stop reaching IPVS), with its draining real
    /// servers only.
    pub fn spec_with(&self, spec: &DirectorSpec) -> DirectorSpec {
        let mut out = spec.clone();
        let mut removed: Vec<&VirtualService> = self.removed.values().collect();
        removed.sort_by_key(|v| v.desired.service.key.to_string());
        for vs in removed {
            let key = vs.desired.service.key;
            let mut v = vs.clone();
            v.desired.destinations =
                self.reals.iter().filter(|(k, _)| k.0 == key).map(|(_, d)| d.dest.clone().with_weight(0)).collect();
            v.desired.destinations.sort_by_key(|d| d.addr);
            v.checks = vec![None; v.desired.destinations.len()];
            v.sorry_server = None;
            out.services.push(v);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::health::{effective, Health, OnFailure, RealSpec};

    /// A director with the services `(vip, reals, extra keys)`.
    fn spec(services: &[(&str, &[&str], &str)]) -> DirectorSpec {
        let mut text = "[director]\niface = \"eth0\"\n".to_owned();
        for (vip, reals, extra) in services {
            let reals: Vec<String> = reals.iter().map(|r| format!("\"{r}\"")).collect();
            text.push_str(&format!(
                "[[director.service]]\nvip = \"{vip}\"\nport = 80\nreal = [{}]\n{extra}\n",
                reals.join(", ")
            ));
        }
        Config::parse(&text, "t.toml").unwrap().director().unwrap()
    }

    fn key(vip: &str) -> ServiceKey {
        ServiceKey::tcp(format!("{vip}:80").parse().unwrap())
    }

    fn real(vip: &str, r: &str) -> RealKey {
        (key(vip), format!("{r}:80").parse().unwrap())
    }

    fn at(s: u64) -> Now {
        // One fixed origin, so that deadlines compare.
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let o = *ORIGIN.get_or_init(Instant::now);
        (o + Duration::from_secs(s), SystemTime::UNIX_EPOCH + Duration::from_secs(s))
    }

    /// The table the daemon applies: the config with the drains put in.
    fn table(d: &Drains, s: &DirectorSpec) -> Vec<DesiredService> {
        let mut t = s.desired_services();
        d.apply(&mut t);
        t
    }

    fn weights(t: &[DesiredService], vip: &str) -> Vec<(String, u32)> {
        let s = t.iter().find(|s| s.service.key == key(vip)).expect("service in the table");
        s.destinations.iter().map(|x| (x.addr.ip().to_string(), x.weight)).collect()
    }

    const A: &str = "10.19.70.166";
    const B: &str = "10.19.70.167";

    #[test]
    fn a_real_server_removed_on_reload_drains_survives_resync_and_reload_and_comes_back() {
        let old = spec(&[(A, &["10.18.68.186", "10.18.68.187"], "drain_time = 60")]);
        let new = spec(&[(A, &["10.18.68.186"], "drain_time = 60")]);
        let mut d = Drains::default();
        let (started, ended) = d.on_reload(&table(&d, &old), &old, &new, at(0));
        assert_eq!(started, vec![real(A, "10.18.68.187")]);
        assert!(ended.is_empty());
        // Weight 0 at once, still in the table: a resync applies the same table.
        let t = table(&d, &new);
        assert_eq!(weights(&t, A), vec![("10.18.68.186".into(), 1), ("10.18.68.187".into(), 0)]);
        assert_eq!(table(&d, &new), t, "a resync re-applies the drain, neither re-adding nor deleting it");
        // Another SIGHUP with the same file: the drain goes on, deadline unchanged.
        let deadline = d.reals[&real(A, "10.18.68.187")].deadline;
        let (started, ended) = d.on_reload(&table(&d, &new), &new, &new, at(10));
        assert!(started.is_empty() && ended.is_empty());
        assert_eq!(d.reals[&real(A, "10.18.68.187")].deadline, deadline);
        // Put back in the file while draining: simply put back.
        let (started, ended) = d.on_reload(&table(&d, &new), &new, &old, at(20));
        assert!(started.is_empty());
        assert_eq!(ended, vec![(real(A, "10.18.68.187"), DrainEnd::PutBack)]);
        assert!(d.is_empty());
        assert_eq!(weights(&table(&d, &old), A), vec![("10.18.68.186".into(), 1), ("10.18.68.187".into(), 1)]);
    }

    #[test]
    fn drain_time_zero_deletes_at_once() {
        let old = spec(&[(A, &["10.18.68.186", "10.18.68.187"], "drain_time = 0")]);
        let new = spec(&[(A, &["10.18.68.186"], "drain_time = 0")]);
        let mut d = Drains::default();
        let (started, _) = d.on_reload(&table(&d, &old), &old, &new, at(0));
        assert!(started.is_empty());
        assert_eq!(weights(&table(&d, &new), A), vec![("10.18.68.186".into(), 1)]);
    }

    #[test]
    fn a_removed_service_stays_until_its_last_real_server_is_done() {
        let old = spec(&[(A, &["10.18.68.186"], ""), (B, &["10.18.68.186", "10.18.68.187"], "drain_time = 5")]);
        let new = spec(&[(A, &["10.18.68.186"], "")]);
        let mut d = Drains::default();
        let (started, _) = d.on_reload(&table(&d, &old), &old, &new, at(0));
        assert_eq!(started, vec![real(B, "10.18.68.186"), real(B, "10.18.68.187")]);
        assert_eq!(weights(&table(&d, &new), B), vec![("10.18.68.186".into(), 0), ("10.18.68.187".into(), 0)]);
        // Its VIP stays configured (with its draining real servers only).
        let s = d.spec_with(&new);
        assert_eq!(s.vips().len(), 2);
        assert_eq!(s.services[1].desired.destinations.len(), 2);
        assert!(s.services[1].desired.destinations.iter().all(|x| x.weight == 0));

        // One is idle, the other still busy and in time.
        let counts = HashMap::from([(real(B, "10.18.68.186"), 0), (real(B, "10.18.68.187"), 3)]);
        let ended = d.due(&counts, &[key(B)], at(1).0);
        assert_eq!(ended, vec![(real(B, "10.18.68.186"), DrainEnd::Idle)]);
        assert!(!d.finish(&ended), "the service still has a real server draining");
        assert_eq!(weights(&table(&d, &new), B), vec![("10.18.68.187".into(), 0)]);
        // A service whose counts could not be read is not decided on.
        assert!(d.due(&counts, &[], at(9).0).is_empty());
        // Out of time with connections left: deleted anyway, and the service goes.
        let ended = d.due(&counts, &[key(B)], at(5).0);
        assert_eq!(ended, vec![(real(B, "10.18.68.187"), DrainEnd::TimedOut(3))]);
        assert!(d.finish(&ended));
        assert!(table(&d, &new).iter().all(|s| s.service.key != key(B)));
        assert_eq!(d.spec_with(&new), new);
    }

    #[test]
    fn a_real_server_deleted_by_someone_else_ends_its_drain() {
        let old = spec(&[(A, &["10.18.68.186", "10.18.68.187"], "")]);
        let new = spec(&[(A, &["10.18.68.186"], "")]);
        let mut d = Drains::default();
        d.on_reload(&table(&d, &old), &old, &new, at(0));
        let ended = d.due(&HashMap::new(), &[key(A)], at(1).0);
        assert_eq!(ended, vec![(real(A, "10.18.68.187"), DrainEnd::Gone)]);
    }

    fn service_spec(on_failure: OnFailure, drain_time: u64) -> ServiceSpec {
        let s = spec(&[(A, &["10.18.68.186", "10.18.68.187"], "")]);
        let d = &s.services[0].desired;
        ServiceSpec {
            service: d.service.clone(),
            reals: d.destinations.iter().map(|x| RealSpec { dest: x.clone(), check: None }).collect(),
            on_failure,
            sorry: None,
            drain_time: Duration::from_secs(drain_time),
        }
    }

    #[test]
    fn on_failure_remove_drains_first_and_recovery_ends_the_drain() {
        let s = service_spec(OnFailure::Remove, 30);
        let failed = real(A, "10.18.68.187");
        let mut health = crate::health::RealMap::default();
        let mut h = Health::new(SystemTime::UNIX_EPOCH);
        h.up = false;
        health.insert(failed, h);
        let mut d = Drains::default();
        assert!(d.on_down(&s, failed.1, at(0)));
        let (mut t, _) = effective(std::slice::from_ref(&s), &health);
        d.apply(&mut t);
        assert_eq!(weights(&t, A), vec![("10.18.68.186".into(), 1), ("10.18.68.187".into(), 0)]);
        // Drained: now it is left out.
        let ended = d.due(&HashMap::from([(failed, 0)]), &[key(A)], at(1).0);
        d.finish(&ended);
        let (mut t, _) = effective(std::slice::from_ref(&s), &health);
        d.apply(&mut t);
        assert_eq!(weights(&t, A), vec![("10.18.68.186".into(), 1)]);
        // It fails, drains, and recovers before the end.
        assert!(d.on_down(&s, failed.1, at(2)));
        assert_eq!(d.on_up(&failed), Some(DrainEnd::Recovered));
        assert!(d.is_empty());
        // A reload drain is not ended by a check.
        assert_eq!(d.on_up(&real(A, "10.18.68.186")), None);
        // `drain` keeps the weight-0 behaviour; drain_time 0 removes at once.
        assert!(!Drains::default().on_down(&service_spec(OnFailure::Drain, 30), failed.1, at(0)));
        assert!(!Drains::default().on_down(&service_spec(OnFailure::Remove, 0), failed.1, at(0)));
    }

    #[test]
    fn a_failure_drain_survives_a_reload_that_keeps_the_real_server() {
        let s = service_spec(OnFailure::Remove, 30);
        let cfg = spec(&[(A, &["10.18.68.186", "10.18.68.187"], "on_failure = \"remove\"")]);
        let failed = real(A, "10.18.68.187");
        let mut d = Drains::default();
        d.on_down(&s, failed.1, at(0));
        let (started, ended) = d.on_reload(&table(&d, &cfg), &cfg, &cfg, at(1));
        assert!(started.is_empty() && ended.is_empty());
        assert!(d.contains(&failed));
    }

    #[test]
    fn udp_counts_inactive_entries_as_busy() {
        let e = |active, inactive| {
            let mut x =
                DestinationEntry::from(Destination::new("10.18.68.186:53".parse().unwrap(), ipvs::Forward::Route));
            x.active_conns = active;
            x.inactive_conns = inactive;
            x
        };
        let udp = ServiceKey::Inet { protocol: Protocol::Udp, addr: "10.19.70.166:53".parse().unwrap() };
        assert_eq!(busy(&udp, &e(0, 2)), 2);
        assert_eq!(busy(&key(A), &e(1, 2)), 1);
    }
}
