//! The label sets of the series: node_exporter's ipvs collector labels
//! (`local_address`, `local_port`, `remote_address`, `remote_port`, `proto`,
//! `local_mark`), with its values, so dashboards built for node_exporter
//! work on lvsctl's `node_ipvs_*` series unchanged, and lvsctl's own series
//! join with them on the same labels.

use std::net::SocketAddr;

use ipvs::{Protocol, ServiceKey};
use prometheus_client::encoding::EncodeLabelSet;

/// A virtual service: `proto` is `TCP`, `UDP`, `SCTP` or `FWM` (as
/// /proc/net/ip_vs writes it); a firewall-mark service has an empty
/// `local_address`, `local_port` 0 and its mark as 8 upper-case hex digits
/// in `local_mark` (empty for the others).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ServiceLabels {
    /// The VIP (empty for a firewall-mark service).
    pub local_address: String,
    /// The virtual port (0 for a firewall-mark service).
    pub local_port: u16,
    /// `TCP`, `UDP`, `SCTP` or `FWM`.
    pub proto: String,
    /// The firewall mark as `%08X`, or empty.
    pub local_mark: String,
}

/// One real server of one virtual service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BackendLabels {
    /// The VIP (empty for a firewall-mark service).
    pub local_address: String,
    /// The virtual port (0 for a firewall-mark service).
    pub local_port: u16,
    /// The real server's address.
    pub remote_address: String,
    /// The real server's port.
    pub remote_port: u16,
    /// `TCP`, `UDP`, `SCTP` or `FWM`.
    pub proto: String,
    /// The firewall mark as `%08X`, or empty.
    pub local_mark: String,
}

/// A real server's health: its backend labels and why it is in that state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HealthLabels {
    /// The real server.
    #[prometheus(flatten)]
    pub backend: BackendLabels,
    /// `ok`, `unchecked`, or the kind of the check failure ([`super::reason_kind`]).
    pub reason: String,
}

/// A check type (`tcp`, `http`, `exec`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CheckLabels {
    /// The check type.
    pub check: String,
}

/// The protocol name /proc/net/ip_vs writes.
fn proto_name(p: Protocol) -> String {
    match p {
        Protocol::Tcp => "TCP".to_owned(),
        Protocol::Udp => "UDP".to_owned(),
        Protocol::Sctp => "SCTP".to_owned(),
        Protocol::Other(n) => format!("IP_{n}"),
    }
}

impl ServiceLabels {
    /// The labels of the service `key`.
    pub fn of(key: &ServiceKey) -> Self {
        match key {
            ServiceKey::Inet { protocol, addr } => Self {
                local_address: addr.ip().to_string(),
                local_port: addr.port(),
                proto: proto_name(*protocol),
                local_mark: String::new(),
            },
            ServiceKey::Fwmark { mark, .. } => Self {
                local_address: String::new(),
                local_port: 0,
                proto: "FWM".to_owned(),
                local_mark: format!("{mark:08X}"),
            },
        }
    }
}

impl BackendLabels {
    /// The labels of the real server `addr` of the service `key`.
    pub fn of(key: &ServiceKey, addr: SocketAddr) -> Self {
        let s = ServiceLabels::of(key);
        Self {
            local_address: s.local_address,
            local_port: s.local_port,
            remote_address: addr.ip().to_string(),
            remote_port: addr.port(),
            proto: s.proto,
            local_mark: s.local_mark,
        }
    }
}
