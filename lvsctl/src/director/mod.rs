//! The LVS director: each VIP as /32 (/128) on its interface, the virtual
//! services with their real servers, and the forwarding NAT needs.
//!
//! - [`Director::reconcile`] makes the host match a spec: [`Director::observe`]
//!   reads it, [`plan::plan`] decides (pure), the handle executes and returns
//!   a [`Report`]. A service lvsctl did not create is never changed or
//!   deleted; the table is never flushed.
//! - [`Director::stop`] undoes exactly what reconciles created.
//! - [`Director::status`] compares the kernel with what was configured.
//! - [`Director::send`] sends a few operations without reading the table,
//!   for changes whose effect is known (a health transition).
//!
//! ```no_run
//! # async fn f(spec: lvsctl::spec::DirectorSpec) -> Result<(), lvsctl::Error> {
//! let mut director = lvsctl::director::Director::connect().await?;
//! let report = director.reconcile(&spec, &spec.desired_services()).await?;
//! println!("{} changes", report.changes.len());
//! let stopped = director.stop().await?;
//! # Ok(()) }
//! ```

pub mod plan;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipvs::reconcile::DesiredService;
use ipvs::{Applied, DestinationEntry, Ipvs, Op, OpOutcome, ServiceEntry, ServiceKey, Stats, Table};

use crate::host::addr::Rtnl;
use crate::host::{require_root, sysctl, Change};
pub use crate::host::{Incomplete, Report};
use crate::spec::DirectorSpec;
use crate::state::{self, AddressRecord, DirectorState, Role};
use crate::Error;
pub use plan::{plan, Observed, Plan};
pub use status::Status;

/// Which services a reconcile reads and changes, and how it reads them.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// The whole table, dumped.
    All,
    /// These services, as the map says they are (not read).
    Known(&'a HashSet<ServiceKey>, &'a HashMap<ServiceKey, DesiredService>),
}

/// A service as a dump would read it back right after it was set up as
/// `d` says (zero counters).
fn as_read(d: &DesiredService) -> (ServiceEntry, Vec<DestinationEntry>) {
    let dests = d.destinations.iter().map(|x| DestinationEntry::new(x.clone(), (0, 0, 0), Stats::default())).collect();
    (ServiceEntry::from(d.service.clone()), dests)
}

/// What to do when some IPVS operation of a reconcile fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Delete the services this reconcile added (`director start`: a run that
    /// fails leaves nothing new behind).
    #[default]
    Undo,
    /// Keep what succeeded, owned and recorded (the daemon: it retries the
    /// rest later without taking down what works).
    Keep,
}

/// A director host: one IPVS connection and one route netlink connection,
/// for as long as the handle lives.
pub struct Director {
    ipvs: Ipvs,
    rtnl: Rtnl,
    dir: PathBuf,
    path: PathBuf,
    /// The record as this handle last read or wrote it, with the identity
    /// of the file then ([`FileId`]): a daemon's resync does not parse a
    /// record of thousands of services that nobody has replaced since.
    record: std::sync::Mutex<Option<(FileId, DirectorState)>>,
}

/// What tells one version of the record file from another: every write
/// replaces the file (a new inode), and owner and mode are checked by a
/// real read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    uid: u32,
    mode: u32,
}

impl FileId {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            uid: m.uid(),
            mode: m.mode(),
        })
    }
}

impl Director {
    /// Connect in the calling thread's network namespace, with the state in
    /// [`state::dir`]. Needs root for any change.
    pub async fn connect() -> Result<Self, Error> {
        let ipvs = Ipvs::connect().await?;
        Self::with(ipvs, state::dir())
    }

    /// A handle on an existing IPVS connection, with the state in `dir`.
    pub fn with(ipvs: Ipvs, dir: PathBuf) -> Result<Self, Error> {
        let rtnl = Rtnl::connect()?;
        let path = state::path(&dir, Role::Director)?;
        Ok(Self { ipvs, rtnl, dir, path, record: std::sync::Mutex::new(None) })
    }

    /// The record, read again only when the file changed since this handle
    /// last read or wrote it (call with the state lock held).
    fn read_record(&self) -> Result<Option<DirectorState>, Error> {
        let id = FileId::of(&self.path);
        let mut cached = self.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (Some(id), Some((was, st))) = (id, cached.as_ref()) {
            if id == *was {
                return Ok(Some(st.clone()));
            }
        }
        let st: Option<DirectorState> = state::read(&self.path)?;
        // The identity before the read: a file replaced meanwhile is read again next time.
        *cached = id.zip(st.clone());
        Ok(st)
    }

    /// Write the record and remember it.
    fn write_record(&self, st: &DirectorState) -> Result<(), Error> {
        let mut cached = self.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *cached = None;
        state::write(&self.path, st)?;
        *cached = FileId::of(&self.path).map(|id| (id, st.clone()));
        Ok(())
    }

    /// The IPVS connection.
    pub fn ipvs(&self) -> &Ipvs {
        &self.ipvs
    }

    /// The state folder.
    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// Make the host match `spec` with the services `desired`: see
    /// [`Director::reconcile_with`] with [`OnError::Undo`].
    pub async fn reconcile(&mut self, spec: &DirectorSpec, desired: &[DesiredService]) -> Result<Report, Incomplete> {
        self.reconcile_with(spec, desired, OnError::Undo).await
    }

    /// Observe, plan and execute under the state lock. On an error, the
    /// changes made before it come with it (they are recorded in the state).
    pub async fn reconcile_with(
        &mut self,
        spec: &DirectorSpec,
        desired: &[DesiredService],
        on_error: OnError,
    ) -> Result<Report, Incomplete> {
        self.reconcile_in(spec, desired, Scope::All, on_error).await
    }

    /// As [`Director::reconcile_with`], but only for the services `only`,
    /// taken to be as `known` says (what the caller last made the kernel
    /// have, e.g. the daemon's last applied table) instead of being read: the
    /// only IPVS requests are the changes. The VIPs, the sysctls and the
    /// record are reconciled in full, as always. A service of `only` missing
    /// from `known` is taken to be absent. Should the kernel differ after all
    /// (someone else changed it), a change fails and the caller's full
    /// reconcile, which reads everything, repairs it.
    pub async fn reconcile_known(
        &mut self,
        spec: &DirectorSpec,
        desired: &[DesiredService],
        only: &HashSet<ServiceKey>,
        known: &HashMap<ServiceKey, DesiredService>,
        on_error: OnError,
    ) -> Result<Report, Incomplete> {
        self.reconcile_in(spec, desired, Scope::Known(only, known), on_error).await
    }

    /// Reconcile the services of `scope`.
    async fn reconcile_in(
        &mut self,
        spec: &DirectorSpec,
        desired: &[DesiredService],
        scope: Scope<'_>,
        on_error: OnError,
    ) -> Result<Report, Incomplete> {
        let mut report = Report {
            services: desired.len(),
            real_servers: desired.iter().map(|d| d.destinations.len()).sum(),
            ..Report::default()
        };
        let (p, prev, _lock) = match self.observe_and_plan(spec, desired, scope).await {
            Ok(planned) => planned,
            Err(e) => return Err(report.failed(e)),
        };
        match self.execute(p, prev, on_error, &mut report.changes).await {
            Ok(()) => Ok(report),
            Err(e) => Err(report.failed(e)),
        }
    }

    /// Take the lock, read the record, observe and plan: the whole table, or
    /// for a scope of some services a table of just those (as known) and a
    /// plan that wants just those of `desired` (the record
    /// still gets every service of `spec`).
    async fn observe_and_plan(
        &self,
        spec: &DirectorSpec,
        desired: &[DesiredService],
        scope: Scope<'_>,
    ) -> Result<(Plan, Option<DirectorState>, state::Lock), Error> {
        require_root("lvsctl director")?;
        let lock = state::lock(&self.dir).await?;
        let prev: Option<DirectorState> = self.read_record()?;
        let (obs, only) = match scope {
            Scope::All => (self.observe(spec, prev).await?, None),
            Scope::Known(only, known) => (self.observe_known(spec, prev, only, known).await?, Some(only)),
        };
        let p = match only {
            None => plan(spec, desired, &obs)?,
            Some(only) => {
                let wanted: Vec<DesiredService> =
                    desired.iter().filter(|d| only.contains(&d.service.key)).cloned().collect();
                plan(spec, &wanted, &obs)?
            }
        };
        Ok((p, obs.prev, lock))
    }

    /// [`Director::observe`] with a table of the services `only` as `known`
    /// has them (no IPVS request); only owned ones missing from it are gone.
    async fn observe_known(
        &self,
        spec: &DirectorSpec,
        prev: Option<DirectorState>,
        only: &HashSet<ServiceKey>,
        known: &HashMap<ServiceKey, DesiredService>,
    ) -> Result<Observed, Error> {
        let table: Table = only.iter().filter_map(|k| known.get(k)).map(as_read).collect();
        let mut obs = self.observe_host(spec, table, prev).await?;
        let owned = obs.prev_owned().to_vec();
        obs.confirmed_gone = only.iter().filter(|k| !known.contains_key(k) && owned.contains(k)).copied().collect();
        Ok(obs)
    }

    /// Read what [`plan()`] needs: the IPVS table (with targeted lookups of
    /// the owned services a dump left out), the interfaces of the VIPs and
    /// which VIPs are on them, the sysctls, and `prev`. A wanted service
    /// that is not owned is not looked up: were it there after all (a dump
    /// can skip entries while other namespaces change their tables), its add
    /// is refused as existing, and a first start does not wait for a lookup
    /// of every service it is about to create.
    pub async fn observe(&self, spec: &DirectorSpec, prev: Option<DirectorState>) -> Result<Observed, Error> {
        let mut table = self.ipvs.dump().await?;
        let owned: &[ServiceKey] = prev.as_ref().map_or(&[], |p| &p.owned);
        let gone = self.look_up_missing(&mut table, owned).await?;
        let mut obs = self.observe_host(spec, table, prev).await?;
        obs.confirmed_gone = gone;
        Ok(obs)
    }

    /// Observe the rest of the host beside an IPVS table already read: the
    /// interfaces of the VIPs and which VIPs are on them, the sysctls.
    async fn observe_host(
        &self,
        spec: &DirectorSpec,
        table: Table,
        prev: Option<DirectorState>,
    ) -> Result<Observed, Error> {
        let mut obs = Observed { table, ..Observed::default() };
        // One link lookup and one address dump per interface, however many VIPs it holds.
        let mut on_iface: HashMap<String, Option<HashSet<IpAddr>>> = HashMap::new();
        for (ip, iface) in spec.vips() {
            if !on_iface.contains_key(iface.as_str()) {
                let addrs = self.interface_addresses(iface.as_str(), &mut obs).await?;
                on_iface.insert(iface.to_string(), addrs);
            }
            if on_iface[iface.as_str()].as_ref().is_some_and(|a| a.contains(&ip)) {
                obs.vips_present.push((ip, iface.to_string()));
            }
        }
        let prev_sysctls = prev.as_ref().map(|p| p.sysctls.clone()).unwrap_or_default();
        obs.sysctls = sysctl::plan(&plan::forwarding_sysctls(spec), &prev_sysctls)?;
        obs.prev = prev;
        Ok(obs)
    }

    /// The addresses on interface `name` (`None`: no such interface); its
    /// index goes into `obs.links`.
    async fn interface_addresses(&self, name: &str, obs: &mut Observed) -> Result<Option<HashSet<IpAddr>>, Error> {
        let Some(idx) = self.rtnl.link_index(name).await? else { return Ok(None) };
        obs.links.insert(name.to_owned(), idx);
        Ok(Some(self.rtnl.addresses(idx).await?.into_iter().map(|(a, _)| a).collect()))
    }

    /// Look up each of `keys` that `table` lacks by its own key: one found
    /// (a dump can skip entries while other namespaces change their tables)
    /// goes into the table, with its destinations; the others are returned.
    /// The lookups are all in flight at once (the connection matches the
    /// answers by sequence number): a first start, whose every key is
    /// missing, waits for one round trip instead of one per service.
    async fn look_up_missing(&self, table: &mut Table, keys: &[ServiceKey]) -> Result<Vec<ServiceKey>, Error> {
        let present: HashSet<ServiceKey> = table.iter().map(|(s, _)| s.service.key).collect();
        let mut missing: Vec<ServiceKey> = Vec::new();
        let mut asked = HashSet::new();
        for k in keys {
            if !present.contains(k) && asked.insert(*k) {
                missing.push(*k);
            }
        }
        let answers = futures::future::join_all(missing.iter().map(|k| self.ipvs.service(k))).await;
        let mut gone = Vec::new();
        for (k, answer) in missing.into_iter().zip(answers) {
            match answer {
                Ok(entry) => {
                    let dests = self.ipvs.destinations(&k).await?;
                    table.push((entry, dests));
                }
                Err(ipvs::Error::NoSuchService(_)) => gone.push(k),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(gone)
    }

    /// Carry out `p`: the record ahead, the IPVS batch, the addresses, the
    /// sysctls, the final record.
    async fn execute(
        &self,
        p: Plan,
        prev: Option<DirectorState>,
        on_error: OnError,
        changes: &mut Vec<Change>,
    ) -> Result<(), Error> {
        if let Some(st) = &p.write_ahead {
            self.write_record(st)?;
        }
        let (owned, ipvs_err) = match self.run_ipvs(&p, on_error, changes).await {
            Ok(owned) => (owned, None),
            Err((owned, e)) if on_error == OnError::Undo => {
                self.record_after_failure(prev, &p, owned)?;
                return Err(e);
            }
            // The rest of the host is still made to match.
            Err((owned, e)) => (owned, Some(e)),
        };
        let (addresses, addr_result) = self.run_addresses(&p, changes).await;
        let sysctl_result = sysctl::apply(&p.sysctls, changes);
        let sysctls = p.sysctls.kept(sysctl_result.is_err());
        let st = DirectorState { format: state::FORMAT, services: p.desired, owned, addresses, sysctls };
        // A resync that found nothing to change leaves the record as it is.
        if prev.as_ref() != Some(&st) {
            self.write_record(&st)?;
        }
        match ipvs_err {
            Some(e) => Err(e),
            None => addr_result.and(sysctl_result),
        }
    }

    /// The IPVS batch of `p`; the services owned after it. On a failure,
    /// with [`OnError::Undo`], the services it added are deleted again.
    async fn run_ipvs(
        &self,
        p: &Plan,
        on_error: OnError,
        changes: &mut Vec<Change>,
    ) -> Result<Vec<ServiceKey>, (Vec<ServiceKey>, Error)> {
        if p.ipvs.is_empty() {
            return Ok(p.owned.clone());
        }
        // Refused before anything was sent (an operation the library
        // rejects): nothing changed, the ownership is what it was.
        let applied = self.ipvs.apply(&p.ipvs).await.map_err(|e| (p.owned.clone(), e.into()))?;
        changes.extend(done(&p.ipvs, &applied).map(|op| Change::Ipvs(op.clone())));
        // A service whose add is Unknown (the batch was cut short before its
        // answer) is perhaps there: it stays claimed, as written ahead, until
        // a later run or stop looks it up.
        let mut owned = plan::owned_after(&p.owned, &p.ipvs, applied.outcomes());
        let undo = plan::undo(&p.ipvs, applied.outcomes());
        let Some(err) = first_error(applied) else { return Ok(owned) };
        if on_error == OnError::Keep {
            return Err((owned, err.into()));
        }
        if let Ok(res) = self.ipvs.apply(&undo).await {
            changes.extend(done(&undo, &res).map(|op| Change::Undone(op.clone())));
            owned = plan::owned_after(&owned, &undo, res.outcomes());
        }
        Err((owned, err.into()))
    }

    /// The record after a failed IPVS batch: the previous one with the
    /// ownership now known (none before and nothing owned: no record).
    fn record_after_failure(&self, prev: Option<DirectorState>, p: &Plan, owned: Vec<ServiceKey>) -> Result<(), Error> {
        match prev {
            Some(prev) => self.write_record(&DirectorState { owned, ..prev }),
            None if !owned.is_empty() => {
                let st = DirectorState {
                    format: state::FORMAT,
                    services: p.desired.clone(),
                    owned,
                    addresses: vec![],
                    sysctls: vec![],
                };
                self.write_record(&st)
            }
            None => state::remove(&self.path),
        }
    }

    /// Remove the VIPs no longer wanted, add the missing ones. The address
    /// records to keep, and the first error.
    async fn run_addresses(&self, p: &Plan, changes: &mut Vec<Change>) -> (Vec<AddressRecord>, Result<(), Error>) {
        let mut records = p.address_kept.clone();
        let mut result = Ok(());
        let mut dels = Vec::new();
        for r in &p.address_dels {
            if let Some(idx) = self.rtnl.link_index(&r.iface).await.ok().flatten() {
                dels.push((idx, r.clone()));
            }
        }
        for ((_, r), res) in dels.iter().zip(self.rtnl.del_addresses(&dels).await) {
            match res {
                Ok(()) => changes.push(removed(r)),
                Err(e) => {
                    // Still ours: stop tries again.
                    records.push(r.clone());
                    result = result.and(Err(e));
                }
            }
        }
        for ((_, r), res) in p.address_adds.iter().zip(self.rtnl.add_addresses(&p.address_adds).await) {
            match res {
                Ok(()) => {
                    changes.push(Change::AddressAdded {
                        addr: r.addr,
                        prefix_len: r.prefix_len,
                        iface: r.iface.clone(),
                    });
                    records.push(AddressRecord { created: true, ..r.clone() });
                }
                Err(e) => result = result.and(Err(e)),
            }
        }
        (records, result)
    }

    /// Send `ops` as one batch without reading the table: for changes whose
    /// effect is known, like a real server's health transition. Each
    /// operation's own outcome, in order (see [`Ipvs::apply`]).
    pub async fn send(&self, ops: &[Op]) -> Result<Applied, Error> {
        Ok(self.ipvs.apply(ops).await?)
    }

    /// Undo what reconciles did: delete the services lvsctl owns and the
    /// VIPs it added, put back the sysctls; nothing else. Without a record
    /// there is nothing to undo (an empty report).
    pub async fn stop(&mut self) -> Result<Report, Incomplete> {
        let mut report = Report::default();
        match self.undo_all(&mut report.changes).await {
            Ok(()) => Ok(report),
            Err(e) => Err(report.failed(e)),
        }
    }

    async fn undo_all(&self, changes: &mut Vec<Change>) -> Result<(), Error> {
        require_root("lvsctl director")?;
        if !self.dir.exists() {
            // Never started on this host (not even a lock file).
            return Ok(());
        }
        let _lock = state::lock(&self.dir).await?;
        let Some(mut st) = state::read::<DirectorState>(&self.path)? else { return Ok(()) };
        let mut first_err = self.delete_owned(&mut st, changes).await.err();
        let (left, err) = self.rtnl.remove_created(std::mem::take(&mut st.addresses), changes).await;
        st.addresses = left;
        first_err = first_err.or(err);
        let (left, err) = sysctl::restore_all(&st.sysctls, changes);
        st.sysctls = left;
        state::finish_stop(&self.path, &st, first_err.or(err))
    }

    /// Delete the owned services: ownership of each ends when its delete
    /// succeeded or a lookup of its key says it is gone.
    async fn delete_owned(&self, st: &mut DirectorState, changes: &mut Vec<Change>) -> Result<(), Error> {
        let mut table = self.ipvs.dump().await?;
        let gone = self.look_up_missing(&mut table, &st.owned).await?;
        st.owned.retain(|k| !gone.contains(k));
        let ops: Vec<Op> = st.owned.iter().map(|k| Op::DeleteService(*k)).collect();
        let applied = self.send(&ops).await?;
        changes.extend(done(&ops, &applied).map(|op| Change::Ipvs(op.clone())));
        // A delete whose outcome is Unknown keeps the service claimed: the
        // next stop looks it up.
        st.owned = plan::owned_after(&st.owned, &ops, applied.outcomes());
        match first_error(applied) {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Compare the kernel with what reconciles configured (and, while a
    /// `director run` daemon runs, with the health it reports).
    pub async fn status(&self) -> Result<Status, Error> {
        status::read(&self.ipvs, &self.rtnl, &self.path).await
    }
}

/// The operations of `ops` the kernel is known to have done.
fn done<'a>(ops: &'a [Op], applied: &'a Applied) -> impl Iterator<Item = &'a Op> {
    ops.iter().zip(applied).filter(|(_, o)| o.is_done()).map(|(op, _)| op)
}

/// The first operation's refusal, else the error that cut the batch short.
fn first_error(applied: Applied) -> Option<ipvs::Error> {
    let (outcomes, interrupted) = applied.into_parts();
    let refused = outcomes.into_iter().find_map(|o| match o {
        OpOutcome::Failed(e) => Some(e),
        _ => None,
    });
    refused.or(interrupted)
}

fn removed(r: &AddressRecord) -> Change {
    Change::AddressRemoved { addr: r.addr, prefix_len: r.prefix_len, iface: r.iface.clone() }
}
