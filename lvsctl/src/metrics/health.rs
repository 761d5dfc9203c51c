//! The series of the daemon's health state, from its latest health report
//! ([`HealthReport`], the one `director status` shows): one `up` series per
//! real server whose `reason` label changes with its state, the sorry
//! servers, with `[director.ha]` the VRRP role and the sync daemons, and with
//! `[director.bgp]` each VIP announced or withdrawn.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};

use super::kernel::{gauge, gauges};
use super::labels::{BackendLabels, HealthLabels, ServiceLabels};
use crate::health::report::{HealthReport, RealHealth, Role};

/// The `reason` label of a real server: `unchecked` (no check: always up),
/// `ok` (up), or for one that is down the kind of its last failed check:
/// `timeout`, `refused`, `unreachable`, `status` (wrong HTTP status), `body`
/// (HTTP body without the expected text, a UDP reply without `expect`),
/// `tls` (the TLS handshake failed: certificate, name, CA), `answer` (a DNS
/// answer with another response code or without the expected record),
/// `not_accepting` (a PostgreSQL server starting up, shutting down or in
/// recovery: SQLSTATE 57P03), `exec` (the program failed) or `error`
/// (anything else, such as a connection reset).
pub fn reason_kind(r: &RealHealth) -> &'static str {
    let Some(check) = &r.check else { return "unchecked" };
    if r.up {
        return "ok";
    }
    let e = r.last_error.as_deref().unwrap_or_default();
    if e.contains("timed out") {
        "timeout"
    } else if e.contains("Connection refused") {
        "refused"
    } else if e.contains("unreachable") || e.contains("No route to host") {
        "unreachable"
    } else if e.contains(" answered status ") {
        "status"
    } else if e.contains("body does not contain") || e.contains("reply from") && e.contains("does not contain") {
        "body"
    } else if e.contains("TLS handshake") {
        "tls"
    } else if e.starts_with("dns ") && e.contains(": answered ") {
        "answer"
    } else if e.contains("not accepting connections") {
        "not_accepting"
    } else if check.starts_with("exec ") {
        "exec"
    } else {
        "error"
    }
}

/// A VRRP role.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

/// A sync daemon lvsctl runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SyncLabels {
    state: String,
    interface: String,
    sync_id: u32,
}

/// A VIP announced over BGP.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VipLabels {
    vip: String,
}

/// The health series for one scrape (none before the first report).
#[derive(Debug)]
pub(super) struct Collect {
    pub report: Option<HealthReport>,
}

impl prometheus_client::collector::Collector for Collect {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(r) = &self.report else { return Ok(()) };
        let mut up = Vec::new();
        let mut sorry = Vec::new();
        for s in &r.services {
            sorry.push((ServiceLabels::of(&s.key), i64::from(s.sorry_active)));
            for x in &s.real_servers {
                let labels =
                    HealthLabels { backend: BackendLabels::of(&s.key, x.addr), reason: reason_kind(x).to_owned() };
                up.push((labels, i64::from(x.up)));
            }
        }
        let help = "1 if the real server passes its health check (gets traffic), 0 if it is down; reason tells why";
        gauges(&mut enc, "lvsctl_real_server_up", help, &up)?;
        let help = "1 while the sorry server of the virtual service is in (every real server is down)";
        gauges(&mut enc, "lvsctl_sorry_server_active", help, &sorry)?;
        if let Some(ha) = &r.ha {
            let roles: Vec<_> = [Role::Master, Role::Backup, Role::Fault, Role::Stop]
                .into_iter()
                .map(|x| (RoleLabels { role: x.name().to_owned() }, i64::from(x == ha.role)))
                .collect();
            gauges(&mut enc, "lvsctl_vrrp_role", "1 for the VRRP role this director is in, 0 for the others", &roles)?;
            let syncs: Vec<_> = ha
                .sync_daemons
                .iter()
                .map(|d| {
                    let state = d.state.name().to_owned();
                    (SyncLabels { state, interface: d.interface.clone(), sync_id: d.sync_id }, 1)
                })
                .collect();
            gauge(&mut enc, "lvsctl_sync_daemons", "Connection sync daemons lvsctl runs", syncs.len() as i64)?;
            gauges(&mut enc, "lvsctl_sync_daemon", "1 for each connection sync daemon lvsctl runs", &syncs)?;
        }
        if let Some(bgp) = &r.bgp {
            let vips: Vec<_> =
                bgp.vips.iter().map(|v| (VipLabels { vip: v.vip.to_string() }, i64::from(v.announced))).collect();
            let help =
                "1 while the VIP is announced over BGP (a service of it has a real server up), 0 while withdrawn";
            gauges(&mut enc, "lvsctl_bgp_vip_announced", help, &vips)?;
        }
        Ok(())
    }
}
