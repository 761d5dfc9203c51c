//! Prometheus metrics of `lvsctl director run` (`metrics = "ADDR:PORT"` in
//! `[director]`, or `--metrics ADDR:PORT`), served over HTTP at `/metrics`
//! ([`server`]) in the Prometheus text format of the `prometheus-client`
//! crate.
//!
//! Two kinds of series (every one is listed in docs/metrics.md):
//!
//! - read from the kernel at scrape time ([`kernel`]): `node_ipvs_*`, with
//!   node_exporter's ipvs collector's names and labels, for the whole IPVS
//!   table as node_exporter shows it, and `lvsctl_service_*` /
//!   `lvsctl_real_server_*` counters for the virtual services lvsctl owns;
//! - kept by the daemon ([`Metrics`]): real server health, transitions,
//!   check durations, sorry servers, resync repairs, the VRRP role and the
//!   sync daemons (`health`).
//!
//! [`Metrics`] is the one registry the daemon owns and feeds. Another part
//! of the daemon adds its own series through [`Metrics::add_collector`]: a
//! [`Collector`] over its own state, called on every scrape (for example
//! route announcement gauges).

mod health;
pub mod kernel;
pub mod labels;
pub mod server;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ipvs::ServiceKey;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::health::report::HealthReport;
pub use health::reason_kind;
pub use kernel::KernelState;
use labels::{BackendLabels, CheckLabels};

/// The `Content-Type` of what [`Metrics::encode`] returns.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Histograms of check durations, by check type.
type CheckHistograms = Family<CheckLabels, Histogram, fn() -> Histogram>;

/// The daemon's metrics registry. Cheap to clone (every clone shares the
/// same values): the daemon records into it, the HTTP server encodes it.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Health transitions (up or down) per real server.
    transitions: Family<BackendLabels, Counter>,
    /// How long checks took, per check type.
    check_seconds: CheckHistograms,
    /// Differences between the kernel and the wanted table that a resync
    /// (or a retry) repaired.
    repairs: Counter,
    /// The daemon's latest health report: the services it owns, each real
    /// server's health, the sorry servers, the failover role.
    report: Mutex<Option<HealthReport>>,
    /// Series other parts of the daemon add.
    extra: Mutex<Vec<Arc<dyn Collector>>>,
}

/// Check duration buckets: 1 ms to about 16 s, doubling.
fn check_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        let inner = Inner {
            transitions: Family::default(),
            check_seconds: Family::new_with_constructor(check_histogram),
            repairs: Counter::default(),
            report: Mutex::new(None),
            extra: Mutex::new(Vec::new()),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The real server `real` of the service `key` went up or down.
    pub fn transition(&self, key: &ServiceKey, real: SocketAddr) {
        self.inner.transitions.get_or_create(&BackendLabels::of(key, real)).inc();
    }

    /// A check of type `check` (`tcp`, `http`, `exec`) took `took`.
    pub fn check_took(&self, check: &str, took: Duration) {
        let labels = CheckLabels { check: check.to_owned() };
        self.inner.check_seconds.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// A resync (or retry) repaired `n` differences.
    pub fn repaired(&self, n: usize) {
        self.inner.repairs.inc_by(n as u64);
    }

    /// The daemon wrote this health report: the health series show it from now on.
    pub fn set_report(&self, report: &HealthReport) {
        *self.inner.report.lock().unwrap_or_else(PoisonError::into_inner) = Some(report.clone());
    }

    /// Add series of another part of the daemon: `collector` is asked for
    /// them on every scrape.
    pub fn add_collector(&self, collector: Arc<dyn Collector>) {
        self.inner.extra.lock().unwrap_or_else(PoisonError::into_inner).push(collector);
    }

    /// Read the kernel's state now (the IPVS table with its counters and the
    /// global counters) and encode every series.
    pub async fn scrape(&self, ipvs: &ipvs::Ipvs) -> String {
        let kernel = KernelState::read(ipvs).await;
        self.encode(kernel)
    }

    /// Every series, with `kernel` as the kernel's state, in the Prometheus
    /// text format ([`CONTENT_TYPE`]).
    pub fn encode(&self, kernel: KernelState) -> String {
        let report = self.inner.report.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut registry = Registry::default();
        let owned = report.as_ref().map(|r| r.services.iter().map(|s| s.key).collect()).unwrap_or_default();
        registry.register_collector(Box::new(kernel::Collect { state: kernel, owned }));
        registry.register_collector(Box::new(health::Collect { report }));
        self.register_own(&mut registry);
        for c in self.inner.extra.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            registry.register_collector(Box::new(Shared(Arc::clone(c))));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }

    /// The series the daemon counts into (clones share the values).
    fn register_own(&self, registry: &mut Registry) {
        registry.register(
            "lvsctl_real_server_transitions",
            "Health transitions (up or down) of a real server since the daemon started",
            self.inner.transitions.clone(),
        );
        registry.register(
            "lvsctl_check_duration_seconds",
            "How long health checks took, by check type",
            self.inner.check_seconds.clone(),
        );
        registry.register(
            "lvsctl_resync_repairs",
            "Differences between the kernel and the wanted table repaired by a resync or a retry",
            self.inner.repairs.clone(),
        );
    }
}

/// A collector shared with its owner, registered anew on every scrape.
#[derive(Debug)]
struct Shared(Arc<dyn Collector>);

impl Collector for Shared {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
}

#[cfg(test)]
mod tests;
