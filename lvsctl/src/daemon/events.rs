//! Where the daemon's events come from: check results, signals, the resync
//! timer, the retry timer and, with `[director.ha]`, keepalived's role
//! changes, merged into one stream of [`Event`]s. Another source joins here
//! without touching the handlers.

use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::{CheckResult, FIRST_RETRY};
use crate::ha::RoleEvent;
use crate::Error;

/// One thing for the daemon to act on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A check finished.
    Check(CheckResult),
    /// SIGHUP: reread the config.
    Reload,
    /// Time to re-assert the whole table.
    Resync,
    /// Time to retry a change that failed.
    Retry,
    /// Time to read the connections of the real servers draining.
    DrainPoll,
    /// keepalived reported a VRRP state (failover, `[director.ha]`).
    Role(RoleEvent),
    /// SIGTERM or SIGINT (named): stop.
    Stop(&'static str),
}

/// The daemon's event sources.
pub struct Events {
    results: mpsc::Receiver<CheckResult>,
    /// SIGHUP, SIGTERM and SIGINT, as [`Event`]s from [`forward_signals`].
    signals: mpsc::UnboundedReceiver<Event>,
    _signal_task: AbortOnDrop,
    resync: Interval,
    resync_every: Duration,
    /// When to retry, while a change is unresolved.
    retry_at: Option<Instant>,
    /// The wait before the next retry after this one.
    backoff: Duration,
    /// keepalived's role events, with `[director.ha]`.
    roles: Option<mpsc::UnboundedReceiver<RoleEvent>>,
    /// Ticks while real servers drain ([`Events::set_draining`]).
    drain_poll: Interval,
    draining: bool,
}

/// How often the connections of draining real servers are read.
const DRAIN_POLL: Duration = Duration::from_secs(1);

impl Events {
    /// Listen to `results`, the signals, and a resync every `resync_every`.
    pub(crate) fn new(results: mpsc::Receiver<CheckResult>, resync_every: Duration) -> Result<Self, Error> {
        let sig = |k: SignalKind, name: &str| {
            signal(k).map_err(|e| Error::Io { what: format!("cannot handle {name}"), source: e })
        };
        let hup = sig(SignalKind::hangup(), "SIGHUP")?;
        let term = sig(SignalKind::terminate(), "SIGTERM")?;
        let int = sig(SignalKind::interrupt(), "SIGINT")?;
        let (tx, signals) = mpsc::unbounded_channel();
        let task = tokio::spawn(forward_signals(hup, term, int, tx));
        Ok(Self {
            results,
            signals,
            _signal_task: AbortOnDrop(task),
            resync: resync_timer(resync_every),
            resync_every,
            retry_at: None,
            backoff: FIRST_RETRY,
            roles: None,
            drain_poll: resync_timer(DRAIN_POLL),
            draining: false,
        })
    }

    /// Also listen to keepalived's role events ([`crate::ha::Ha::take_events`]).
    pub(crate) fn add_roles(&mut self, roles: mpsc::UnboundedReceiver<RoleEvent>) {
        self.roles = Some(roles);
    }

    /// Change the resync interval (a reloaded config).
    pub(crate) fn set_resync(&mut self, every: Duration) {
        if every != self.resync_every {
            self.resync = resync_timer(every);
            self.resync_every = every;
        }
    }

    /// A change failed: retry after the current backoff (doubling, up to the
    /// resync interval), unless a retry is already due. Results that come in
    /// meanwhile wait for that one retry.
    pub(crate) fn retry_later(&mut self) {
        if self.retry_at.is_none() {
            self.retry_at = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(self.resync_every.max(FIRST_RETRY));
        }
    }

    /// Whether real servers drain: while they do, a [`Event::DrainPoll`]
    /// comes every second.
    pub(crate) fn set_draining(&mut self, on: bool) {
        if on && !self.draining {
            self.drain_poll = resync_timer(DRAIN_POLL);
        }
        self.draining = on;
    }

    /// The table is as wanted: no retry pending, the backoff starts over.
    pub(crate) fn succeeded(&mut self) {
        self.retry_at = None;
        self.backoff = FIRST_RETRY;
    }

    /// A check result that is already waiting, without waiting for one.
    pub(crate) fn waiting_check(&mut self) -> Option<CheckResult> {
        self.results.try_recv().ok()
    }

    /// The next event.
    pub async fn next(&mut self) -> Event {
        let retry_at = self.retry_at;
        let retry = async move {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let roles = &mut self.roles;
        let role = async move {
            match roles {
                Some(rx) => match rx.recv().await {
                    Some(e) => e,
                    // The supervisor is gone (only at shutdown): nothing more comes.
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(r) = self.results.recv() => Event::Check(r),
            e = role => Event::Role(e),
            Some(e) = self.signals.recv() => e,
            () = retry => {
                self.retry_at = None;
                Event::Retry
            }
            _ = self.resync.tick() => Event::Resync,
            _ = self.drain_poll.tick(), if self.draining => Event::DrainPoll,
        }
    }
}

/// Turn the signals into events, for as long as [`Events`] lives. They
/// are waited for here, in a task of their own, rather than in every
/// [`Events::next`]: that is called for every check result, and each call
/// would poll the three signals again.
async fn forward_signals(mut hup: Signal, mut term: Signal, mut int: Signal, tx: mpsc::UnboundedSender<Event>) {
    loop {
        let e = tokio::select! {
            _ = hup.recv() => Event::Reload,
            _ = term.recv() => Event::Stop("SIGTERM"),
            _ = int.recv() => Event::Stop("SIGINT"),
        };
        if tx.send(e).is_err() {
            return;
        }
    }
}

/// Ends a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A timer whose first tick is one interval from now.
fn resync_timer(every: Duration) -> Interval {
    let mut t = tokio::time::interval_at(Instant::now() + every, every);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}
