//! Health state of real servers (up/down with `rise`/`fall` counting) and the
//! table the kernel should have given that state. No I/O: everything here is
//! decided from check results and the config, and unit-tested.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use ipvs::reconcile::DesiredService;
use ipvs::{Destination, Service, ServiceKey};
use serde::{Deserialize, Serialize};

use crate::check::Check;

mod clock;
pub mod drain;
pub mod report;
pub mod report_bgp;

/// What happens to a real server that fails its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Set its weight to 0: no new connections, existing ones drain
    /// (keepalived's `inhibit_on_failure`). The default.
    #[default]
    Drain,
    /// Delete it from the virtual service (existing connections break).
    Remove,
}

/// A virtual service as the daemon runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The virtual service (key, scheduler, persistence, ...).
    pub service: Service,
    /// Its real servers, with the configured weights.
    pub reals: Vec<RealSpec>,
    /// What happens to a failed real server.
    pub on_failure: OnFailure,
    /// The real server that takes over while every real server is down.
    pub sorry: Option<Destination>,
    /// How long a real server drains before it is deleted ([`drain`]).
    pub drain_time: std::time::Duration,
}

/// A real server and its check (`None`: never checked, always up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealSpec {
    /// The destination as configured (its weight is the one restored on recovery).
    pub dest: Destination,
    /// Its check, shared with the task that runs it.
    pub check: Option<Arc<Check>>,
}

/// Identifies a real server of a virtual service.
pub type RealKey = (ServiceKey, SocketAddr);

/// A map keyed by real server. The daemon looks a real server up several
/// times for every check result (its checker, its health, its dynamic
/// weight): with the standard SipHash a key of a service and an address
/// costs hundreds of instructions to hash, with Fx a few. Keys come from
/// the root-owned config, not from the network, so no one can choose them
/// to make the table collide.
pub type RealMap<V> = rustc_hash::FxHashMap<RealKey, V>;

/// The health of one real server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Whether it gets traffic.
    pub up: bool,
    /// When it last changed (or when the daemon started watching it).
    pub since: SystemTime,
    /// The last failed check's reason and time.
    pub last_error: Option<(SystemTime, String)>,
    /// Successes in a row.
    pub ok_streak: u32,
    /// Failures in a row.
    pub fail_streak: u32,
}

/// A change of a real server's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// It failed `fall` checks in a row; the last one for this reason.
    Down(String),
    /// It passed `rise` checks in a row.
    Up,
}

impl Health {
    /// A real server starts up (it gets traffic from the start, as after
    /// `director start`); `fall` failures take it down.
    pub fn new(now: SystemTime) -> Self {
        Self { up: true, since: now, last_error: None, ok_streak: 0, fail_streak: 0 }
    }

    /// Count one check result; the transition it causes, if any. `now` is
    /// asked only when a time is kept (a failure or a transition), not for
    /// the successes of a real server that is up.
    pub fn record(
        &mut self,
        result: Result<(), String>,
        rise: u32,
        fall: u32,
        now: impl FnOnce() -> SystemTime,
    ) -> Option<Transition> {
        match result {
            Ok(()) => {
                self.fail_streak = 0;
                self.ok_streak = self.ok_streak.saturating_add(1);
                if !self.up && self.ok_streak >= rise {
                    self.up = true;
                    self.since = now();
                    return Some(Transition::Up);
                }
            }
            Err(e) => {
                self.ok_streak = 0;
                self.fail_streak = self.fail_streak.saturating_add(1);
                let now = now();
                self.last_error = Some((now, e.clone()));
                if self.up && self.fail_streak >= fall {
                    self.up = false;
                    self.since = now;
                    return Some(Transition::Down(e));
                }
            }
        }
        None
    }
}

/// What the kernel should have for these services given the health of their
/// real servers (a missing entry counts as up), and for each service whether
/// its sorry server is in.
pub fn effective(specs: &[ServiceSpec], health: &RealMap<Health>) -> (Vec<DesiredService>, HashMap<ServiceKey, bool>) {
    let mut out = Vec::with_capacity(specs.len());
    let mut sorry_in = HashMap::new();
    for s in specs {
        let key = s.service.key;
        let mut dests = Vec::with_capacity(s.reals.len() + 1);
        let mut any_up = false;
        for r in &s.reals {
            let up = health.get(&(key, r.dest.addr)).is_none_or(|h| h.up);
            any_up |= up;
            match (up, s.on_failure) {
                (true, _) => dests.push(r.dest.clone()),
                (false, OnFailure::Drain) => dests.push(r.dest.clone().with_weight(0)),
                (false, OnFailure::Remove) => {}
            }
        }
        let sorry = !any_up && s.sorry.is_some();
        if let (true, Some(d)) = (sorry, &s.sorry) {
            dests.push(d.clone());
        }
        sorry_in.insert(key, sorry);
        out.push(DesiredService { service: s.service.clone(), destinations: dests });
    }
    (out, sorry_in)
}

/// Dynamic weights (`exec` checks with `dynamic = true`): each real server
/// in `weights` gets the weight its check asked for, never more than the
/// weight it has in `desired` (its configured one when up; 0 when drained).
pub fn apply_weights(desired: &mut [DesiredService], weights: &RealMap<u32>) {
    for d in desired {
        let key = d.service.key;
        for x in &mut d.destinations {
            if let Some(&w) = weights.get(&(key, x.addr)) {
                x.weight = crate::check::dynamic::bounded(Some(w), x.weight);
            }
        }
    }
}

/// Failover's standby form of a table (a director with `[director.ha]`
/// that is not MASTER): weight 0 for every real server that is not this
/// host (`is_local`), in each service that has this host among its real
/// servers. A connection the MASTER forwards here is then served here, never
/// forwarded back.
pub fn standby_weights(desired: &mut [DesiredService], is_local: impl Fn(std::net::IpAddr) -> bool) {
    for d in desired {
        if !d.destinations.iter().any(|x| is_local(x.addr.ip())) {
            continue;
        }
        for x in &mut d.destinations {
            if !is_local(x.addr.ip()) {
                x.weight = 0;
            }
        }
    }
}

/// The peers' real servers a director that just became MASTER keeps at
/// weight 0 for now: those of other hosts (not `is_local`) that are still
/// up but whose last check failed. A takeover usually means the peer just
/// died, and its real server then fails checks that have not yet reached
/// `fall`; giving it its weight back would send new connections into the
/// void until they do. A good check releases it, `fall` failures take it
/// down as usual.
pub fn suspect_peers(health: &RealMap<Health>, is_local: impl Fn(std::net::IpAddr) -> bool) -> HashSet<RealKey> {
    health.iter().filter(|(k, h)| h.up && h.fail_streak > 0 && !is_local(k.1.ip())).map(|(k, _)| *k).collect()
}

/// Weight 0 for the real servers in `held` (see [`suspect_peers`]).
pub fn hold(desired: &mut [DesiredService], held: &HashSet<RealKey>) {
    if held.is_empty() {
        return;
    }
    for d in desired {
        let key = d.service.key;
        for x in &mut d.destinations {
            if held.contains(&(key, x.addr)) {
                x.weight = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs::{Forward, Scheduler};
    use std::time::Duration;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn fall_then_rise() {
        let mut h = Health::new(t(0));
        assert_eq!(h.record(Err("refused".into()), 2, 3, || t(1)), None);
        assert_eq!(h.record(Err("refused".into()), 2, 3, || t(2)), None);
        // A success in between resets the count.
        assert_eq!(h.record(Ok(()), 2, 3, || t(3)), None);
        assert_eq!(h.record(Err("a".into()), 2, 3, || t(4)), None);
        assert_eq!(h.record(Err("b".into()), 2, 3, || t(5)), None);
        assert_eq!(h.record(Err("c".into()), 2, 3, || t(6)), Some(Transition::Down("c".into())));
        assert!(!h.up);
        assert_eq!(h.since, t(6));
        // Only once.
        assert_eq!(h.record(Err("d".into()), 2, 3, || t(7)), None);
        assert_eq!(h.record(Ok(()), 2, 3, || t(8)), None);
        assert_eq!(h.record(Ok(()), 2, 3, || t(9)), Some(Transition::Up));
        assert_eq!(h.record(Ok(()), 2, 3, || t(10)), None);
        assert!(h.up);
        assert_eq!(h.since, t(9));
        assert_eq!(h.last_error, Some((t(7), "d".into())));
    }

    fn spec(on_failure: OnFailure, sorry: bool) -> ServiceSpec {
        let key = ServiceKey::tcp("10.19.70.166:15858".parse().unwrap());
        let d = |a: &str, w| Destination::new(a.parse().unwrap(), Forward::Route).with_weight(w);
        ServiceSpec {
            service: Service::new(key, Scheduler::Rr),
            reals: vec![
                RealSpec { dest: d("10.18.68.186:15858", 3), check: None },
                RealSpec { dest: d("10.18.68.187:15858", 1), check: None },
            ],
            on_failure,
            sorry: sorry.then(|| d("10.18.68.190:15858", 1)),
            drain_time: drain::DEFAULT_DRAIN_TIME,
        }
    }

    fn down(h: &mut RealMap<Health>, s: &ServiceSpec, i: usize) {
        let mut x = Health::new(t(0));
        x.up = false;
        h.insert((s.service.key, s.reals[i].dest.addr), x);
    }

    #[test]
    fn drain_remove_and_sorry() {
        let s = spec(OnFailure::Drain, true);
        let mut h = RealMap::default();
        let (d, sorry) = effective(std::slice::from_ref(&s), &h);
        assert_eq!(d[0].destinations, vec![s.reals[0].dest.clone(), s.reals[1].dest.clone()]);
        assert!(!sorry[&s.service.key]);

        down(&mut h, &s, 0);
        let (d, sorry) = effective(std::slice::from_ref(&s), &h);
        assert_eq!(d[0].destinations[0].weight, 0);
        assert_eq!(d[0].destinations[1].weight, 1);
        assert_eq!(d[0].destinations.len(), 2);
        assert!(!sorry[&s.service.key]);

        down(&mut h, &s, 1);
        let (d, sorry) = effective(std::slice::from_ref(&s), &h);
        assert_eq!(d[0].destinations.iter().map(|x| x.weight).collect::<Vec<_>>(), vec![0, 0, 1]);
        assert_eq!(d[0].destinations[2].addr, "10.18.68.190:15858".parse().unwrap());
        assert!(sorry[&s.service.key]);

        let r = spec(OnFailure::Remove, false);
        let (d, sorry) = effective(std::slice::from_ref(&r), &h);
        assert!(d[0].destinations.is_empty());
        assert!(!sorry[&r.service.key]);
        h.remove(&(r.service.key, r.reals[1].dest.addr));
        let (d, _) = effective(std::slice::from_ref(&r), &h);
        assert_eq!(d[0].destinations, vec![r.reals[1].dest.clone()]);
    }

    #[test]
    fn dynamic_weights_are_bounded_and_leave_drained_servers_at_zero() {
        let s = spec(OnFailure::Drain, false);
        let mut h = RealMap::default();
        down(&mut h, &s, 1);
        let (mut d, _) = effective(std::slice::from_ref(&s), &h);
        let key = s.service.key;
        let w = RealMap::from_iter([((key, s.reals[0].dest.addr), 2), ((key, s.reals[1].dest.addr), 9)]);
        apply_weights(&mut d, &w);
        assert_eq!(d[0].destinations.iter().map(|x| x.weight).collect::<Vec<_>>(), vec![2, 0]);
        let w = RealMap::from_iter([((key, s.reals[0].dest.addr), 200)]);
        let (mut d, _) = effective(std::slice::from_ref(&s), &h);
        apply_weights(&mut d, &w);
        assert_eq!(d[0].destinations[0].weight, 3, "never above the configured weight");
    }

    #[test]
    fn standby_zeroes_only_the_peers_of_services_this_host_serves() {
        let me: std::net::IpAddr = "10.18.68.186".parse().unwrap();
        let svc = |vip: &str, reals: &[&str]| DesiredService {
            service: Service::new(ServiceKey::tcp(format!("{vip}:15858").parse().unwrap()), Scheduler::Rr),
            destinations: reals
                .iter()
                .map(|r| Destination::new(format!("{r}:15858").parse().unwrap(), Forward::Route))
                .collect(),
        };
        let mut d =
            vec![svc("10.19.70.166", &["10.18.68.186", "10.18.68.187"]), svc("10.19.70.167", &["10.18.68.187"])];
        standby_weights(&mut d, |ip| ip == me);
        let w: Vec<Vec<u32>> = d.iter().map(|s| s.destinations.iter().map(|x| x.weight).collect()).collect();
        assert_eq!(w, vec![vec![1, 0], vec![1]], "a service this host does not serve keeps its weights");
    }

    #[test]
    fn a_new_master_holds_only_the_failing_peers_until_a_check_passes() {
        let me: std::net::IpAddr = "10.18.68.186".parse().unwrap();
        let key = ServiceKey::tcp("10.19.70.166:15858".parse().unwrap());
        let real = |a: &str| (key, format!("{a}:15858").parse::<SocketAddr>().unwrap());
        let (local, failing, healthy, down) =
            (real("10.18.68.186"), real("10.18.68.187"), real("10.18.68.188"), real("10.18.68.189"));
        let mut h = RealMap::default();
        for k in [local, failing, healthy, down] {
            h.insert(k, Health::new(t(0)));
        }
        for k in [local, failing, down] {
            h.get_mut(&k).unwrap().record(Err("timed out".into()), 2, 3, || t(1));
        }
        for _ in 0..2 {
            h.get_mut(&down).unwrap().record(Err("timed out".into()), 2, 3, || t(2));
        }
        let held = suspect_peers(&h, |ip| ip == me);
        assert_eq!(held, HashSet::from([failing]), "only a peer that is up with a failed last check");

        let mut d = vec![DesiredService {
            service: Service::new(key, Scheduler::Rr),
            destinations: [local, failing, healthy]
                .iter()
                .map(|k| Destination::new(k.1, Forward::Route).with_weight(5))
                .collect(),
        }];
        hold(&mut d, &held);
        assert_eq!(d[0].destinations.iter().map(|x| x.weight).collect::<Vec<_>>(), vec![5, 0, 5]);
    }
}
