//! The daemon's side of `[director.bgp]`: its view of each service (in the
//! applied table? real servers up?) turned into announce / withdraw
//! decisions for [`crate::bgp`], and a reload's changed section checked
//! and handed to it.

use tracing::warn;

use super::Daemon;
use crate::bgp::{decide, ServiceView, Staged};
use crate::spec::DirectorSpec;

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

impl Daemon {
    /// Check a reload's `[director.bgp]` before anything changes (BIRD
    /// parses the config it would get): an error refuses the whole reload,
    /// as a config that does not load does. `None` when there is nothing to
    /// take. Adding the section to a daemon started without it, or removing
    /// it, takes effect when director run restarts (BIRD, the sysctls and
    /// the drain on exit belong to the start and the stop).
    pub(super) async fn stage_bgp(&self, new: &DirectorSpec) -> Result<Option<Staged>, String> {
        match (&self.bgp, &new.bgp) {
            (Some(b), Some(spec)) => b.stage(spec).await,
            (None, None) => Ok(None),
            (None, Some(_)) => {
                warn!("[director.bgp] added: BIRD starts when director run restarts");
                Ok(None)
            }
            (Some(_), None) => {
                warn!("[director.bgp] removed: BIRD keeps announcing the VIPs until director run restarts");
                Ok(None)
            }
        }
    }

    /// Take what [`Daemon::stage_bgp`] checked, once the new config is the
    /// daemon's; the announce after the reconcile then decides the new VIPs.
    pub(super) async fn apply_bgp(&mut self, staged: Option<Staged>) {
        if let (Some(s), Some(b)) = (staged, self.bgp.as_mut()) {
            b.apply(s, &self.loaded.director).await;
        }
    }
}
