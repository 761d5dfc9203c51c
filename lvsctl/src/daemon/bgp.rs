//! The daemon's side of `[director.bgp]`: its view of each service (in the
//! applied table? real servers up?) turned into announce / withdraw
//! decisions for [`crate::bgp`].

use super::Daemon;
use crate::bgp::{decide, ServiceView};

impl Daemon {
    /// Each configured service as the announcement sees it.
    fn bgp_views(
        &self,
        applied: &std::collections::HashMap<ipvs::ServiceKey, ipvs::reconcile::DesiredService>,
    ) -> Vec<ServiceView> {
        let services = self.loaded.director.services.iter().zip(&self.loaded.services);
        services
            .map(|(vs, s)| {
                let key = s.service.key;
                let up = s
                    .reals
                    .iter()
                    .filter(|r| r.dest.weight > 0 && self.health.get(&(key, r.dest.addr)).is_none_or(|h| h.up))
                    .count();
                ServiceView { vip: vs.vip, key, in_table: applied.contains_key(&key), up, total: s.reals.len() }
            })
            .collect()
    }

    /// Announce or withdraw the VIPs for the table just applied. While a
    /// change is unresolved (no applied table) the announcements stay as
    /// they are: the retry decides.
    pub(super) async fn announce(&mut self) {
        let Some(applied) = &self.applied else { return };
        let Some(b) = &self.bgp else { return };
        let decisions = decide(b.vips(), &self.bgp_views(applied));
        let changed = match self.bgp.as_mut() {
            Some(b) => b.announce(&decisions).await,
            None => false,
        };
        if changed {
            self.write_report();
        }
    }
}

/// `[director.bgp]` is read once, at start (BIRD keeps its sessions over a
/// reload): a reload that changes it says so.
pub(super) fn warn_reload(old: &crate::spec::DirectorSpec, new: &crate::spec::DirectorSpec) {
    if old.bgp != new.bgp {
        tracing::warn!("[director.bgp] changed: the running BGP settings stay until director run restarts");
    }
}
