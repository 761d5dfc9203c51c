//! The kernel's IPVS connection sync daemons: a master and a backup on both
//! directors, so the connections each one creates while it is MASTER are
//! known to the other one when the VIP moves (in either direction).
//!
//! lvsctl records which daemons it started (`ha-sync-netns<ID>.json` in the
//! state folder) and stops exactly those: a daemon someone else started is
//! left alone, and one an earlier, killed `director run` started is still
//! recognised as lvsctl's.

use std::path::{Path, PathBuf};

use ipvs::{Ipvs, SyncDaemon, SyncState};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::spec::HaSpec;
use crate::{state, Error};

/// What lvsctl started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The daemons, as started.
    pub(crate) started: Vec<SyncDaemon>,
}

impl state::StateFile for Record {
    const FORMAT: u32 = 1;
    /// Only interface names the kernel takes: the record names the interfaces
    /// whose sync daemons exit stops.
    fn check(&self) -> Result<(), String> {
        match self.started.iter().find(|d| !state::valid_ifname(&d.interface)) {
            Some(d) => Err(format!("invalid sync interface name {:?}", d.interface)),
            None => Ok(()),
        }
    }
}

/// The record's path in `dir` for this network namespace.
pub(crate) fn record_path(dir: &Path) -> Result<PathBuf, Error> {
    Ok(dir.join(format!("ha-sync-netns{}.json", state::netns_id()?)))
}

/// The daemons `spec` asks for.
pub(crate) fn wanted(spec: &HaSpec) -> Vec<SyncDaemon> {
    [SyncState::Master, SyncState::Backup]
        .into_iter()
        .map(|st| {
            SyncDaemon::new(st, spec.sync_interface.as_str(), u32::from(spec.sync_id))
                .with_max_len(spec.sync_maxlen)
                .with_mcast_group(spec.sync_group)
                .with_mcast_port(spec.sync_port)
                .with_mcast_ttl(spec.sync_ttl)
        })
        .collect()
}

/// A daemon as the kernel lists it equals one as started when what was set matches.
fn same(running: &SyncDaemon, want: &SyncDaemon) -> bool {
    running.state == want.state
        && running.interface == want.interface
        && running.sync_id == want.sync_id
        && want.max_len.is_none_or(|m| running.max_len == Some(m))
        && want.mcast_group.is_none_or(|g| running.mcast_group == Some(g))
        && want.mcast_port.is_none_or(|p| running.mcast_port == Some(p))
        && want.mcast_ttl.is_none_or(|t| running.mcast_ttl == Some(t))
}

/// Start the master and backup daemons that are not running yet; returns
/// the ones lvsctl owns (started now, or by an earlier run per the record).
pub(crate) async fn start(ipvs: &Ipvs, spec: &HaSpec, path: &Path) -> Result<Vec<SyncDaemon>, Error> {
    let prev: Record = state::read(path)?.unwrap_or_default();
    let running = ipvs.sync_daemons().await?;
    let mut owned = Vec::new();
    for want in wanted(spec) {
        let state = want.state.name();
        match running.iter().find(|r| r.state == want.state) {
            Some(r) if prev.started.iter().any(|p| same(r, p)) && same(r, &want) => {
                info!(state, interface = %r.interface, sync_id = r.sync_id, "sync daemon already running (started by lvsctl earlier)");
                owned.push(want);
            }
            Some(r) if prev.started.iter().any(|p| same(r, p)) => {
                // lvsctl's, with old settings: replace it.
                ipvs.stop_sync_daemon(want.state).await?;
                ipvs.start_sync_daemon(&want).await?;
                info!(state, interface = %want.interface, sync_id = want.sync_id, "sync daemon restarted with the new settings");
                owned.push(want);
            }
            Some(r) => {
                if !same(r, &want) {
                    warn!(
                        state,
                        interface = %r.interface,
                        sync_id = r.sync_id,
                        want_interface = %want.interface,
                        want_sync_id = want.sync_id,
                        "a sync daemon someone else started runs with other settings; it is left alone"
                    );
                } else {
                    info!(state, "sync daemon already running (started by someone else; left alone on exit)");
                }
            }
            None => {
                ipvs.start_sync_daemon(&want).await?;
                info!(state, interface = %want.interface, sync_id = want.sync_id, "sync daemon started");
                owned.push(want);
            }
        }
        state::write(path, &Record { started: owned.clone() })?;
    }
    Ok(owned)
}

/// Stop exactly the daemons lvsctl started.
pub(crate) async fn stop(ipvs: &Ipvs, owned: &[SyncDaemon], path: &Path) {
    for d in owned {
        match ipvs.stop_sync_daemon(d.state).await {
            Ok(()) => info!(state = d.state.name(), "sync daemon stopped"),
            Err(e) => warn!(state = d.state.name(), reason = %e, "cannot stop the sync daemon"),
        }
    }
    let _ = state::remove(path);
}
