//! The daemon's side of drains ([`crate::health::drain`] decides): start
//! them on a reload or a failure, read the connection counts of the real
//! servers draining once a second, delete the ones that are done, and log
//! the start and the end of each drain.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use ipvs::ServiceKey;
use tracing::{info, warn};

use super::{Daemon, Events, Loaded};
use crate::health::drain::{busy, DrainEnd};
use crate::health::report::{epoch, DrainReport};
use crate::health::{RealKey, Transition};

impl Daemon {
    /// Before a reloaded config replaces the running one: real servers it
    /// no longer has start to drain, draining ones it has again are put back.
    pub(super) fn drains_on_reload(&mut self, new: &Loaded, events: &mut Events) {
        // What the kernel was made to have, drains included.
        let (old, _) = self.effective();
        let now = (Instant::now(), SystemTime::now());
        let (started, ended) = self.drains.on_reload(&old, &self.loaded.director, &new.director, now);
        for k in &started {
            self.log_drain_start(k);
        }
        for (k, end) in &ended {
            log_drain_end(k, *end);
        }
        events.set_draining(!self.drains.is_empty());
    }

    /// A health transition: a failed real server of a service with
    /// `on_failure = "remove"` drains first; one that recovers stops draining.
    pub(super) fn drain_on_transition(&mut self, k: RealKey, t: &Transition, events: &mut Events) {
        match t {
            Transition::Down(_) => {
                let Some(spec) = self.loaded.services.iter().find(|s| s.service.key == k.0) else { return };
                if self.drains.on_down(spec, k.1, (Instant::now(), SystemTime::now())) {
                    self.log_drain_start(&k);
                }
            }
            Transition::Up => {
                if let Some(end) = self.drains.on_up(&k) {
                    log_drain_end(&k, end);
                }
            }
        }
        events.set_draining(!self.drains.is_empty());
    }

    /// Read the connections of every draining real server; delete the ones
    /// that are idle or out of time. A service removed from the config goes
    /// with its last real server (a full reconcile, which also removes its VIP).
    pub(super) async fn poll_drains(&mut self, events: &mut Events) {
        let (counts, read) = self.drain_counts().await;
        let ended = self.drains.due(&counts, &read, Instant::now());
        if ended.is_empty() {
            return;
        }
        for (k, end) in &ended {
            log_drain_end(k, *end);
        }
        let service_done = self.drains.finish(&ended);
        events.set_draining(!self.drains.is_empty());
        if service_done || self.applied.is_none() {
            self.converge("drain finished", events).await;
            return;
        }
        let mut keys: Vec<ServiceKey> = Vec::new();
        for (k, _) in &ended {
            if !keys.contains(&k.0) {
                keys.push(k.0);
            }
        }
        self.transitions(&keys, events).await;
    }

    /// The busy connections of the real servers of each service that has
    /// one draining, and which services could be read.
    async fn drain_counts(&self) -> (HashMap<RealKey, u32>, Vec<ServiceKey>) {
        let mut counts = HashMap::new();
        let mut read = Vec::new();
        for key in self.drains.services() {
            match self.director.ipvs().destinations(&key).await {
                Ok(dests) => {
                    counts.extend(dests.iter().map(|d| ((key, d.destination.addr), busy(&key, d))));
                    read.push(key);
                }
                // The service is gone, and its real servers with it.
                Err(ipvs::Error::NoSuchService(_)) => read.push(key),
                Err(e) => warn!(service = %key, reason = %e, "cannot read the connections of draining real servers"),
            }
        }
        (counts, read)
    }

    /// The daemon stops: drains in progress end here. With teardown their
    /// services go; without, they stay in the kernel at weight 0 (their
    /// connections carry on) and the next `director start` or `run`, which
    /// does not find them in the config, deletes them.
    pub(super) fn abandon_drains(&self, teardown: bool) {
        let what = if teardown {
            "deleted with the virtual services"
        } else {
            "left at weight 0; the next director start or run deletes it"
        };
        for ((key, addr), d) in self.drains.iter() {
            warn!(service = %key, real_server = %addr, cause = d.cause.describe(), "stopping while a real server drains: {what}");
        }
    }

    fn log_drain_start(&self, k: &RealKey) {
        let Some(d) = self.drains.iter().find(|(x, _)| *x == k).map(|(_, d)| d) else { return };
        let time = crate::check::Secs(d.until.duration_since(d.since).unwrap_or_default());
        let why = d.cause.describe();
        info!(service = %k.0, real_server = %k.1, drain_time = %time, "drain started: {why}; weight 0, deleted when it has no active connection or after drain_time");
    }

    /// The drains for the health report (`director status`).
    pub(super) fn drain_report(&self) -> Vec<DrainReport> {
        let mut out: Vec<DrainReport> = self
            .drains
            .iter()
            .map(|(_, d)| DrainReport {
                service: d.service.clone(),
                dest: d.dest.clone(),
                cause: d.cause,
                since: epoch(d.since),
                until: epoch(d.until),
            })
            .collect();
        out.sort_by_key(|d| (d.service.key.to_string(), d.dest.addr));
        out
    }

    /// Record the weight a dynamic exec check asked for (`None`: its
    /// configured one); whether the weight to apply changed (it is logged).
    pub(super) fn set_dynamic_weight(&mut self, k: RealKey, asked: Option<u32>) -> bool {
        let before = self.weights.get(&k).copied();
        if before == asked {
            return false;
        }
        match asked {
            Some(w) => self.weights.insert(k, w),
            None => self.weights.remove(&k),
        };
        let configured = self
            .loaded
            .services
            .iter()
            .find(|s| s.service.key == k.0)
            .and_then(|s| s.reals.iter().find(|r| r.dest.addr == k.1))
            .map_or(0, |r| r.dest.weight);
        let weight = crate::check::dynamic::bounded(asked, configured);
        info!(service = %k.0, real_server = %k.1, weight, configured_weight = configured, "dynamic weight from the exec check");
        true
    }
}

fn log_drain_end((key, addr): &RealKey, end: DrainEnd) {
    match end {
        DrainEnd::TimedOut(_) => warn!(service = %key, real_server = %addr, "drain ended: {}", end.describe()),
        _ => info!(service = %key, real_server = %addr, "drain ended: {}", end.describe()),
    }
}
