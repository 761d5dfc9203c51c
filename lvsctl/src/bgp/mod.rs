//! ECMP scale-out for `director run` with `[director.bgp]`: lvsctl runs its
//! own BIRD 2 (a supervised child in the director's network namespace, its
//! config and control socket in the root-only state folder) and announces
//! each VIP as a /32 while the director can serve it. The routers spread
//! the flows over every director that announces it (ECMP); `mh` gives every
//! director the same choice of real server, and `sloppy_tcp` lets a
//! director take a flow moved to it mid-stream.
//!
//! Why lvsctl's own BIRD rather than the operator's: one owner of the
//! announcements, and BIRD dies with lvsctl (SIGTERM on its death), so the
//! BGP sessions drop and the routers withdraw the VIPs by themselves.
//!
//! The seam with the daemon is narrow: [`Bgp::start`] after the IPVS
//! connection is up, `Bgp::announce` with the daemon's view after every
//! change it applied, [`Bgp::stage`] then [`Bgp::apply`] on a reload that
//! changes `[director.bgp]`, [`Bgp::report`] for the status, and first on
//! exit [`Bgp::withdraw_all`] then [`Bgp::drain_and_stop`].

pub(crate) mod announce;
mod bird;
mod sloppy;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use ipvs::{SchedFlags, Scheduler};
use tracing::{error, info, warn};

use crate::health::report::epoch;
use crate::health::report_bgp::{BgpReport, VipAnnouncement};
use crate::health::OnFailure;
use crate::host::{bird as birdc, is_local};
use crate::spec::bgp::{BgpHere, BgpSpec};
use crate::spec::DirectorSpec;
use crate::supervise::{ChildEvent, Supervisor};
use crate::{state, Error};
pub(crate) use announce::{decide, Decision, ServiceView};

/// How long BIRD may take to open its control socket at start.
const SOCKET_WAIT: Duration = Duration::from_secs(20);

/// The running BGP part of `director run`.
pub struct Bgp {
    spec: BgpSpec,
    here: BgpHere,
    version: String,
    /// The bird program (parse checks on reload).
    program: PathBuf,
    files: bird::Files,
    sysctl_record: PathBuf,
    supervisor: Supervisor,
    /// Every VIP's announcement, in the order of `spec.vips`.
    vips: Vec<VipAnnouncement>,
    /// The set BIRD last took; `None` when it must be told again.
    told: Option<Vec<IpAddr>>,
}

/// A changed `[director.bgp]` whose config BIRD has parsed, not yet taken:
/// [`Bgp::stage`] makes one, [`Bgp::apply`] takes it.
#[derive(Debug)]
pub struct Staged {
    spec: BgpSpec,
    here: BgpHere,
}

impl Bgp {
    /// Check BIRD (a clear error before anything changes), write its config
    /// with nothing announced, set the sloppy sysctls, start BIRD and wait
    /// for its control socket. `None` without `[director.bgp]`.
    pub async fn start(director: &DirectorSpec) -> Result<Option<Self>, Error> {
        let Some(spec) = director.bgp.clone() else { return Ok(None) };
        let (program, version) = bird::check().await.map_err(Error::Invalid)?;
        let here = spec.here(is_local).map_err(Error::Invalid)?;
        let dir = state::dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Io { what: format!("cannot create the state folder {}", dir.display()), source: e })?;
        let files = bird::Files::new(&dir, &state::netns_id()?);
        write(&files.vips, &bird::render_vips(&[]))?;
        write(&files.conf, &bird::render(&spec, &here, &files.vips))?;
        bird::parse_only(&program, &files.conf).await.map_err(Error::Invalid)?;
        warn_inconsistent(director);
        let sysctl_record = sloppy::record_path(&dir)?;
        sloppy::set(&sysctl_record)?;
        let (spawn_program, spawn_files) = (program.clone(), files.clone());
        let supervisor = Supervisor::start("bird", move || bird::spawn(&spawn_program, &spawn_files), log_child);
        let vips = spec.vips.iter().map(|v| withdrawn(*v, "starting: not announced yet")).collect();
        let told = Some(Vec::new());
        let mut b = Self { spec, here, version, program, files, sysctl_record, supervisor, vips, told };
        if let Err(e) = b.wait_socket().await {
            b.shutdown_now().await;
            return Err(Error::Failed(e));
        }
        let n: Vec<String> = b.here.neighbors.iter().map(|n| format!("{} AS {}", n.address, n.asn)).collect();
        info!(bird = %b.version, asn = b.here.asn, router_id = %b.here.router_id, neighbors = %n.join(", "),
            conf = %b.files.conf.display(), "bgp: BIRD runs; VIPs announced once their services can serve");
        Ok(Some(b))
    }

    async fn wait_socket(&self) -> Result<(), String> {
        let deadline = Instant::now() + SOCKET_WAIT;
        loop {
            match birdc::run(&self.files.socket, &["show", "status"]).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("BIRD did not open its control socket {}: {e}", self.files.socket.display()))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Take the decisions: log each VIP that changes (with its reason),
    /// rewrite the include file and reconfigure BIRD when the announced set
    /// changed (or the last attempt failed). True when a VIP changed.
    pub(crate) async fn announce(&mut self, decisions: &[Decision]) -> bool {
        let mut changed = false;
        for d in decisions {
            let Some(v) = self.vips.iter_mut().find(|v| v.vip == d.vip) else { continue };
            if v.announced != d.announce {
                if d.announce {
                    info!(vip = %d.vip, reason = %d.reason, "bgp: announcing the VIP");
                } else {
                    warn!(vip = %d.vip, reason = %d.reason, "bgp: withdrawing the VIP");
                }
                v.since = epoch(SystemTime::now());
                changed = true;
            }
            v.announced = d.announce;
            v.reason.clone_from(&d.reason);
        }
        if self.told.as_ref() != Some(&self.announced()) {
            self.tell().await;
        }
        changed
    }

    /// The VIPs announced now, in the order of `spec.vips`.
    fn announced(&self) -> Vec<IpAddr> {
        self.vips.iter().filter(|v| v.announced).map(|v| v.vip).collect()
    }

    /// Rewrite the include file with the announced VIPs and have BIRD
    /// reread its config (the main file too, which a reload may have
    /// changed). False when BIRD was not told (logged; retried later).
    async fn tell(&mut self) -> bool {
        let set = self.announced();
        self.told = None;
        let result = match write(&self.files.vips, &bird::render_vips(&set)) {
            Ok(()) => birdc::configure(&self.files.socket).await,
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => {
                self.told = Some(set);
                true
            }
            // BIRD rereads the files when it restarts; otherwise the next
            // change, reload or resync tells it again.
            Err(e) => {
                error!(reason = %e, "bgp: cannot tell BIRD the announced VIPs; retried on the next resync");
                false
            }
        }
    }

    /// A reload's `[director.bgp]`, checked before anything changes: `None`
    /// when it is the running one; otherwise resolved for this host and its
    /// config written beside the running one (`bird-netns<ID>.conf.new`)
    /// for BIRD to parse. An error (a value this host cannot resolve, a
    /// config BIRD rejects) leaves BIRD and the running settings as they are.
    pub async fn stage(&self, new: &BgpSpec) -> Result<Option<Staged>, String> {
        if *new == self.spec {
            return Ok(None);
        }
        let here = new.here(is_local)?;
        write(&self.files.staged, &bird::render(new, &here, &self.files.vips)).map_err(|e| e.to_string())?;
        bird::parse_only(&self.program, &self.files.staged).await?;
        Ok(Some(Staged { spec: new.clone(), here }))
    }

    /// Take a staged `[director.bgp]`: its config becomes BIRD's, the VIP
    /// list follows it (a kept VIP keeps its announcement; a new one starts
    /// withdrawn until the daemon's next announce decides; a removed one is
    /// withdrawn), and BIRD reconfigures: sessions whose settings did not
    /// change keep running, BIRD restarts a changed one and opens a new one.
    pub async fn apply(&mut self, staged: Staged, director: &DirectorSpec) {
        if let Err(e) = std::fs::rename(&self.files.staged, &self.files.conf) {
            error!(reason = %e, conf = %self.files.conf.display(),
                "bgp: cannot install the new BIRD config; the running BGP settings stay");
            return;
        }
        let Staged { spec, here } = staged;
        let old = std::mem::take(&mut self.vips);
        for v in old.iter().filter(|v| v.announced && !spec.vips.contains(&v.vip)) {
            warn!(vip = %v.vip, reason = "no longer in [director.bgp]", "bgp: withdrawing the VIP");
        }
        self.vips = follow(old, &spec.vips);
        self.spec = spec;
        self.here = here;
        warn_inconsistent(director);
        if !self.tell().await {
            return;
        }
        let n: Vec<String> = self.here.neighbors.iter().map(|n| format!("{} AS {}", n.address, n.asn)).collect();
        info!(asn = self.here.asn, router_id = %self.here.router_id, neighbors = %n.join(", "),
            vips = self.vips.len(), "bgp: the reloaded [director.bgp] is BIRD's config");
    }

    /// The VIPs to announce.
    pub(crate) fn vips(&self) -> &[IpAddr] {
        &self.spec.vips
    }

    /// The status section (the sessions are read by `director status`).
    pub fn report(&self) -> BgpReport {
        BgpReport {
            bird: self.version.clone(),
            socket: self.files.socket.clone(),
            asn: self.here.asn,
            router_id: self.here.router_id,
            neighbors: self.here.neighbors.iter().map(|n| format!("{} AS {}", n.address, n.asn)).collect(),
            vips: self.vips.clone(),
            sessions: Vec::new(),
            sessions_error: None,
        }
    }

    /// On exit, first: withdraw every VIP (the sessions stay up, so the
    /// routers move the flows at once).
    pub async fn withdraw_all(&mut self, why: &str) {
        let all: Vec<Decision> =
            self.spec.vips.iter().map(|v| Decision { vip: *v, announce: false, reason: why.to_owned() }).collect();
        self.announce(&all).await;
    }

    /// On exit, then: wait the drain delay (the IPVS table stays in place
    /// for the flows still arriving), stop BIRD, restore the sysctls.
    pub async fn drain_and_stop(&mut self) {
        let delay = self.spec.drain_delay;
        info!(drain_delay = ?delay, "bgp: every VIP withdrawn; waiting the drain delay before stopping BIRD");
        tokio::time::sleep(delay).await;
        self.shutdown_now().await;
    }

    /// Stop BIRD at once (its sessions close, the routers withdraw the
    /// VIPs) and restore the sysctls: when `director run` fails to start.
    pub async fn shutdown_now(&mut self) {
        self.supervisor.stop().await;
        sloppy::restore(&self.sysctl_record);
        self.files.remove();
        info!("bgp: BIRD stopped");
    }
}

/// The announcements for a reload's VIP list `vips`: a VIP in `old` keeps
/// its own, a new one starts withdrawn, one not in `vips` is dropped.
fn follow(mut old: Vec<VipAnnouncement>, vips: &[IpAddr]) -> Vec<VipAnnouncement> {
    vips.iter()
        .map(|v| match old.iter().position(|o| o.vip == *v) {
            Some(i) => old.swap_remove(i),
            None => withdrawn(*v, "added by a reload: not announced yet"),
        })
        .collect()
}

fn withdrawn(vip: IpAddr, reason: &str) -> VipAnnouncement {
    VipAnnouncement { vip, announced: false, since: epoch(SystemTime::now()), reason: reason.to_owned() }
}

fn write(path: &std::path::Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::Io { what: format!("cannot write {}", path.display()), source: e })
}

fn log_child(e: ChildEvent) {
    match e {
        ChildEvent::Started(pid) => info!(pid, "bgp: BIRD started"),
        ChildEvent::SpawnFailed(why, backoff) => error!(reason = %why, retry_in = ?backoff, "bgp: cannot start BIRD"),
        ChildEvent::Exited(how, backoff) => {
            error!(reason = %how, restart_in = ?backoff, "bgp: BIRD is gone, the sessions dropped; restarting it")
        }
    }
}

/// Warn about services on announced VIPs that break flows moving between
/// directors: a scheduler other than `mh` or `sh` picks another real server
/// on each director; `on_failure = "remove"` changes the real-server list's
/// order (and so the hash table) differently on each director. And `mh`
/// without `mh-fallback`: the kernel keeps a weight-0 real server's slots
/// (`last_weight`, so the table stays put) and finds no real server for the
/// clients hashed there.
fn warn_inconsistent(d: &DirectorSpec) {
    let Some(b) = &d.bgp else { return };
    for s in d.services.iter().filter(|s| b.vips.contains(&s.vip)) {
        let svc = &s.desired.service;
        if !matches!(svc.scheduler, Scheduler::Mh | Scheduler::Sh) {
            warn!(service = %svc.key, scheduler = %svc.scheduler,
                "bgp: announced over ECMP with a scheduler that is not consistent across directors (use mh): flows that move to another director break");
        }
        if svc.scheduler == Scheduler::Mh && !svc.sched_flags.contains(SchedFlags::FLAG_1) {
            warn!(service = %svc.key,
                "bgp: mh without mh-fallback: clients hashed to a real server at weight 0 (drained, or down) get no real server at all; add sched_flags = [\"mh-fallback\"]");
        }
        if s.on_failure == OnFailure::Remove {
            warn!(service = %svc.key,
                "bgp: on_failure = \"remove\" reorders the real servers differently on each director; \"drain\" keeps mh's table the same");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_keeps_the_announcements_of_kept_vips() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let a = VipAnnouncement { vip: ip("10.0.0.1"), announced: true, since: 5, reason: "up".into() };
        let b = VipAnnouncement { vip: ip("10.0.0.2"), announced: true, since: 6, reason: "up".into() };
        let new = follow(vec![a.clone(), b], &[ip("10.0.0.3"), ip("10.0.0.1")]);
        assert_eq!(new.len(), 2, "10.0.0.2 is dropped: {new:?}");
        assert_eq!((new[0].vip, new[0].announced), (ip("10.0.0.3"), false), "a new VIP starts withdrawn");
        assert!(new[0].reason.contains("added by a reload"), "{new:?}");
        assert_eq!(new[1], a, "a kept VIP keeps its announcement, since and reason");
    }
}
