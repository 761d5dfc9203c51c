//! The series read from the kernel at scrape time: node_exporter's
//! `node_ipvs_*` for the whole IPVS table (its per-real-server gauges come
//! from the `ipvs` library's dump, its global counters from
//! /proc/net/ip_vs_stats: IPVS has no netlink command for them), and
//! lvsctl's per-service and per-real-server counters for the services the
//! daemon owns.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use ipvs::{ServiceKey, Stats, Table};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::labels::{BackendLabels, ServiceLabels};

/// Where the kernel keeps the global IPVS counters of this network namespace.
const IP_VS_STATS: &str = "/proc/net/ip_vs_stats";

/// The kernel's counters over every virtual service, since IPVS was loaded
/// (or the table zeroed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GlobalStats {
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub in_pkts: u64,
    /// Outgoing packets.
    pub out_pkts: u64,
    /// Incoming bytes.
    pub in_bytes: u64,
    /// Outgoing bytes.
    pub out_bytes: u64,
}

/// Parse /proc/net/ip_vs_stats: two header lines, then the five totals in
/// hexadecimal (then the rates, not used).
pub fn parse_ip_vs_stats(text: &str) -> Result<GlobalStats, String> {
    let line = text.lines().nth(2).ok_or_else(|| format!("{IP_VS_STATS}: too short"))?;
    let n: Vec<u64> = line
        .split_whitespace()
        .map(|f| u64::from_str_radix(f, 16))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{IP_VS_STATS}: bad totals line {line:?}: {e}"))?;
    match n[..] {
        [conns, in_pkts, out_pkts, in_bytes, out_bytes] => {
            Ok(GlobalStats { conns, in_pkts, out_pkts, in_bytes, out_bytes })
        }
        _ => Err(format!("{IP_VS_STATS}: expected 5 totals, found {line:?}")),
    }
}

/// What the kernel had at scrape time; a part that could not be read is an
/// error (its series are left out and `lvsctl_kernel_read_success` is 0).
#[derive(Debug, Clone)]
pub struct KernelState {
    /// The IPVS table with counters.
    pub table: Result<Table, String>,
    /// The global counters.
    pub global: Result<GlobalStats, String>,
}

impl KernelState {
    /// Read both now.
    pub async fn read(ipvs: &ipvs::Ipvs) -> Self {
        let table = ipvs.dump().await.map_err(|e| e.to_string());
        let global = tokio::fs::read_to_string(IP_VS_STATS)
            .await
            .map_err(|e| format!("cannot read {IP_VS_STATS}: {e}"))
            .and_then(|t| parse_ip_vs_stats(&t));
        for e in [table.as_ref().err(), global.as_ref().err()].into_iter().flatten() {
            tracing::warn!(reason = %e, "metrics: cannot read the kernel's IPVS state");
        }
        Self { table, global }
    }
}

/// The kernel's series for one scrape; `owned` are the services the daemon runs.
#[derive(Debug)]
pub(super) struct Collect {
    pub state: KernelState,
    pub owned: HashSet<ServiceKey>,
}

impl prometheus_client::collector::Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let ok = self.state.table.is_ok() && self.state.global.is_ok();
        let help = "1 if this scrape read the IPVS table and counters";
        gauge(&mut enc, "lvsctl_kernel_read_success", help, i64::from(ok))?;
        if let Ok(g) = &self.state.global {
            global(&mut enc, g)?;
        }
        if let Ok(t) = &self.state.table {
            backends(&mut enc, t)?;
            owned_counters(&mut enc, t, &self.owned)?;
        }
        Ok(())
    }
}

fn global(enc: &mut DescriptorEncoder, g: &GlobalStats) -> fmt::Result {
    counter(enc, "node_ipvs_connections", "The total number of connections made.", g.conns)?;
    counter(enc, "node_ipvs_incoming_packets", "The total number of incoming packets.", g.in_pkts)?;
    counter(enc, "node_ipvs_outgoing_packets", "The total number of outgoing packets.", g.out_pkts)?;
    counter(enc, "node_ipvs_incoming_bytes", "The total amount of incoming data.", g.in_bytes)?;
    counter(enc, "node_ipvs_outgoing_bytes", "The total amount of outgoing data.", g.out_bytes)
}

/// node_exporter's three gauges per (virtual, real) pair of the whole table
/// (summed over entries with the same labels, as node_exporter does).
fn backends(enc: &mut DescriptorEncoder, table: &Table) -> fmt::Result {
    let mut sums: BTreeMap<BackendKey, [i64; 3]> = BTreeMap::new();
    for (s, dests) in table {
        for d in dests {
            let l = BackendLabels::of(&s.service.key, d.destination.addr);
            let v = sums.entry(BackendKey(l)).or_default();
            v[0] += i64::from(d.active_conns);
            v[1] += i64::from(d.inactive_conns);
            v[2] += i64::from(d.destination.weight);
        }
    }
    let col = |i: usize| sums.iter().map(|(k, v)| (k.0.clone(), v[i])).collect::<Vec<_>>();
    gauges(
        enc,
        "node_ipvs_backend_connections_active",
        "The current active connections by local and remote address.",
        &col(0),
    )?;
    gauges(
        enc,
        "node_ipvs_backend_connections_inactive",
        "The current inactive connections by local and remote address.",
        &col(1),
    )?;
    gauges(enc, "node_ipvs_backend_weight", "The current backend weight by local and remote address.", &col(2))
}

/// Backend labels in a stable order (the exposition lists them sorted).
#[derive(Debug, PartialEq, Eq)]
struct BackendKey(BackendLabels);

impl BackendKey {
    fn tuple(&self) -> (&str, u16, &str, &str, u16, &str) {
        let l = &self.0;
        (&l.proto, l.local_port, &l.local_address, &l.local_mark, l.remote_port, &l.remote_address)
    }
}

impl PartialOrd for BackendKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for BackendKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.tuple().cmp(&other.tuple())
    }
}

/// The counter names and helps of one [`Stats`], for services or real servers.
const STATS: [(&str, &str); 5] = [
    ("connections", "Connections scheduled"),
    ("incoming_packets", "Incoming packets"),
    ("outgoing_packets", "Outgoing packets"),
    ("incoming_bytes", "Incoming bytes"),
    ("outgoing_bytes", "Outgoing bytes"),
];

fn stat(s: &Stats, i: usize) -> u64 {
    [s.conns, s.in_pkts, s.out_pkts, s.in_bytes, s.out_bytes][i]
}

/// `lvsctl_service_*` and `lvsctl_real_server_*` counters of the owned services.
fn owned_counters(enc: &mut DescriptorEncoder, table: &Table, owned: &HashSet<ServiceKey>) -> fmt::Result {
    let mine: Vec<_> = table.iter().filter(|(s, _)| owned.contains(&s.service.key)).collect();
    for (i, (name, help)) in STATS.iter().enumerate() {
        let rows: Vec<_> = mine.iter().map(|(s, _)| (ServiceLabels::of(&s.service.key), stat(&s.stats, i))).collect();
        counters(enc, &format!("lvsctl_service_{name}"), &format!("{help} by a virtual service lvsctl runs"), &rows)?;
        let rows: Vec<_> = mine
            .iter()
            .flat_map(|(s, ds)| {
                ds.iter().map(|d| (BackendLabels::of(&s.service.key, d.destination.addr), stat(&d.stats, i)))
            })
            .collect();
        let help = format!("{help} by a real server of a virtual service lvsctl runs");
        counters(enc, &format!("lvsctl_real_server_{name}"), &help, &rows)?;
    }
    Ok(())
}

/// One gauge without labels.
pub(super) fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// One counter without labels (`_total` is appended to `name`).
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// One gauge family (nothing when there are no rows).
pub(super) fn gauges<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(L, i64)],
) -> fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// One counter family (`_total` is appended to `name`; nothing when there are no rows).
pub(super) fn counters<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(L, u64)],
) -> fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_vs_stats() {
        let text = "   Total Incoming Outgoing         Incoming         Outgoing\n   Conns  Packets  Packets            Bytes            Bytes\n      1A       FF        0             1000                0\n\n Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n       0        0        0                0                0\n";
        let g = parse_ip_vs_stats(text).unwrap();
        assert_eq!(g, GlobalStats { conns: 26, in_pkts: 255, out_pkts: 0, in_bytes: 4096, out_bytes: 0 });
        assert!(parse_ip_vs_stats("a\nb\n").unwrap_err().contains("too short"));
        assert!(parse_ip_vs_stats("a\nb\n1 2 3\n").unwrap_err().contains("expected 5 totals"));
        assert!(parse_ip_vs_stats("a\nb\n1 2 3 4 zz\n").unwrap_err().contains("bad totals line"));
    }
}
