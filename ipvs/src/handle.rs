//! [`Ipvs`]: the handle every operation goes through.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipvs_sys::{IpvsAttr, IpvsCmd, IpvsMessage};

use crate::conn::{self, Answer, Conn, DumpResults};
use crate::convert::*;
use crate::dumpparse::dest_message;
use crate::emit::emit_op;
use crate::error::{dest_err, kernel, map_common, svc_err, svc_err_full, Error, Result};
use crate::op::{dest_msg, Applied, Op, OpOutcome};
use crate::types::*;

/// From this many services on, [`Ipvs::dump`] reads destinations with the
/// pipelined socket pool.
const POOL_DUMP_MIN: usize = 8;

/// How long a request waits for the kernel's next reply by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A handle on the IPVS table of one network namespace.
///
/// It owns one netlink socket, reused for every request; the family id is
/// resolved once at connect. Clones share the socket and may be used from many
/// tasks at once: replies are matched to requests by sequence number, and
/// every wait has a deadline ([`Ipvs::with_timeout`]).
///
/// ```no_run
/// # async fn f() -> Result<(), ipvs::Error> {
/// use ipvs::{Ipvs, Service, ServiceKey, Scheduler, Destination, Forward};
/// let ipvs = Ipvs::connect().await?;
/// let key = ServiceKey::tcp("10.19.70.166:15858".parse().unwrap());
/// ipvs.add_service(&Service::new(key, Scheduler::Rr)).await?;
/// ipvs.add_destination(&key, &Destination::new("10.18.68.186:15858".parse().unwrap(), Forward::Route)).await?;
/// for (svc, dests) in ipvs.dump().await? {
///     println!("{} {} ({} real servers)", svc.service.key, svc.service.scheduler, dests.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Ipvs {
    conn: Arc<Conn>,
    timeout: Duration,
}

impl std::fmt::Debug for Ipvs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipvs").field("family_id", &self.conn.family_id()).finish()
    }
}

/// A full table: every service with its destinations.
pub type Table = Vec<(ServiceEntry, Vec<DestinationEntry>)>;

impl Ipvs {
    /// Connect in the calling thread's network namespace. Must be called from
    /// within a tokio runtime. If the IPVS family is missing it tries
    /// `modprobe ip_vs` once; then [`Error::NotAvailable`].
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// let ipvs = ipvs::Ipvs::connect().await?;
    /// println!("IPVS {}", ipvs.info().await?.version_string());
    /// # Ok(()) }
    /// ```
    pub async fn connect() -> Result<Self> {
        Self::builder().connect().await
    }

    /// Options for a connection: the request deadline, whether to load the
    /// kernel module, the dump socket pool, the network namespace.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// use std::time::Duration;
    /// let ipvs = ipvs::Ipvs::builder()
    ///     .timeout(Duration::from_secs(5))
    ///     .load_module(false)
    ///     .dump_sockets(2)
    ///     .netns("/var/run/netns/blue")
    ///     .connect()
    ///     .await?;
    /// # let _ = ipvs;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// Connect inside the network namespace at `path` (`/var/run/netns/NAME`
    /// or `/proc/PID/ns/net`) without moving any of the caller's threads.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// // A namespace made with `ip netns add blue`, or any process's: /proc/PID/ns/net.
    /// let ipvs = ipvs::Ipvs::connect_in_netns("/var/run/netns/blue").await?;
    /// println!("{} services in blue", ipvs.services().await?.len());
    /// # Ok(()) }
    /// ```
    pub async fn connect_in_netns(path: impl AsRef<Path>) -> Result<Self> {
        Self::builder().netns(path.as_ref()).connect().await
    }

    /// Connect inside the named network namespace (`ip netns add NAME`).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// let ipvs = ipvs::Ipvs::connect_named_netns("blue").await?;
    /// println!("{} services in blue", ipvs.services().await?.len());
    /// # Ok(()) }
    /// ```
    pub async fn connect_named_netns(name: &str) -> Result<Self> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::invalid(format!("invalid network namespace name {name:?}")));
        }
        Self::connect_in_netns(Path::new("/var/run/netns").join(name)).await
    }

    /// This handle with another deadline: each request waits at most
    /// `timeout` for each reply of the kernel, then fails with
    /// [`Error::Timeout`]. Other clones keep theirs.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// use std::time::Duration;
    /// let ipvs = ipvs::Ipvs::connect().await?.with_timeout(Duration::from_secs(2));
    /// match ipvs.services().await {
    ///     Err(ipvs::Error::Timeout(..)) => eprintln!("the kernel did not answer within 2 s"),
    ///     other => println!("{:?}", other?.len()),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn msg(cmd: IpvsCmd, attrs: Vec<IpvsAttr>) -> IpvsMessage {
        IpvsMessage::new(cmd, attrs)
    }

    async fn do_ack(&self, msg: IpvsMessage, what: String, map: impl Fn(i32) -> Error) -> Result<Vec<IpvsMessage>> {
        match self.conn.request(&msg, &what, self.timeout).await? {
            Ok(v) => Ok(v),
            Err(errno) => Err(map_common(errno).unwrap_or_else(|| map(errno))),
        }
    }

    // ---- services ----------------------------------------------------------

    /// Every virtual service with its counters.
    ///
    /// One service dump. The kernel sends a dump in parts of up to about
    /// 32 KiB (some 100 services) and resumes each part by position in its
    /// service hash table. That table is shared by every network namespace
    /// and the position counts the services of all of them, so a dump taken
    /// while services are added or deleted, in this namespace or in ANY other
    /// (seen on Linux 6.1), can skip an entry or repeat one. Repeats are
    /// removed here (a key appears at most once); a skipped service cannot be
    /// detected. When no namespace changes its services during the call, the
    /// result is complete. A table whose services all fit in the first part
    /// (about 100) cannot lose any: the kernel's extra pass that ends the
    /// dump can only repeat entries.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// for s in ipvs::Ipvs::connect().await?.services().await? {
    ///     println!("{} {} conns={}", s.service.key, s.service.scheduler, s.stats.conns);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn services(&self) -> Result<Vec<ServiceEntry>> {
        let mut out = Vec::new();
        let msg = Self::msg(IpvsCmd::GetService, vec![]);
        // Each service is parsed from the bytes as it arrives: no list of
        // messages is kept.
        let r = self
            .conn
            .dump_with(
                &msg,
                || "listing services".to_owned(),
                self.timeout,
                |_cmd, attrs| crate::dumpparse::service_message(attrs, &mut out),
            )
            .await?;
        if let Err(e) = r {
            return Err(map_common(e).unwrap_or(kernel("listing services", e)));
        }
        unique_services(&mut out);
        Ok(out)
    }

    /// One virtual service. [`Error::NoSuchService`] when it does not exist.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// use ipvs::{Error, ServiceKey};
    /// let key = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
    /// match ipvs::Ipvs::connect().await?.service(&key).await {
    ///     Ok(s) => println!("{:?}", s.service.persistence),
    ///     Err(Error::NoSuchService(_)) => println!("{key} does not exist"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn service(&self, key: &ServiceKey) -> Result<ServiceEntry> {
        let msg = Self::msg(IpvsCmd::GetService, vec![IpvsAttr::Service(service_key_attrs(key))]);
        let what = format!("getting service {key}");
        let msgs = self.do_ack(msg, what, |e| svc_err(key, e)).await?;
        for m in msgs {
            for a in m.attrs {
                if let IpvsAttr::Service(s) = a {
                    return service_from(&s);
                }
            }
        }
        Err(Error::NoSuchService(*key))
    }

    /// Add a virtual service. [`Error::ServiceExists`] if it exists.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// use ipvs::{Persistence, Scheduler, Service, ServiceKey};
    /// // ipvsadm -A -t 10.0.0.1:443 -s wlc -p 300
    /// let s = Service::new(ServiceKey::tcp("10.0.0.1:443".parse().unwrap()), Scheduler::Wlc)
    ///     .with_persistence(Persistence { timeout: 300, netmask: None });
    /// ipvs::Ipvs::connect().await?.add_service(&s).await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_service(&self, s: &Service) -> Result<()> {
        s.validate()?;
        let msg = Self::msg(IpvsCmd::NewService, vec![IpvsAttr::Service(service_attrs(s))]);
        self.do_ack(msg, format!("adding service {}", s.key), |e| svc_err_full(s, e)).await?;
        Ok(())
    }

    /// Change a virtual service's scheduler, flags, persistence or engine.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// use ipvs::{Scheduler, Service, ServiceKey};
    /// // ipvsadm -E -t 10.0.0.1:443 -s rr  (the whole configuration is replaced)
    /// let s = Service::new(ServiceKey::tcp("10.0.0.1:443".parse().unwrap()), Scheduler::Rr);
    /// ipvs::Ipvs::connect().await?.update_service(&s).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update_service(&self, s: &Service) -> Result<()> {
        s.validate()?;
        let msg = Self::msg(IpvsCmd::SetService, vec![IpvsAttr::Service(service_attrs(s))]);
        self.do_ack(msg, format!("editing service {}", s.key), |e| svc_err_full(s, e)).await?;
        Ok(())
    }

    /// Delete a virtual service and its destinations.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// use ipvs::ServiceKey;
    /// // ipvsadm -D -t 10.0.0.1:443
    /// ipvs::Ipvs::connect().await?.delete_service(&ServiceKey::tcp("10.0.0.1:443".parse().unwrap())).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_service(&self, key: &ServiceKey) -> Result<()> {
        let msg = Self::msg(IpvsCmd::DelService, vec![IpvsAttr::Service(service_key_attrs(key))]);
        self.do_ack(msg, format!("deleting service {key}"), |e| svc_err(key, e)).await?;
        Ok(())
    }

    // ---- destinations ------------------------------------------------------

    /// The destinations of a service. A missing service gives
    /// [`Error::NoSuchService`] (the kernel itself answers with an empty list).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// use ipvs::ServiceKey;
    /// let key = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
    /// for d in ipvs::Ipvs::connect().await?.destinations(&key).await? {
    ///     println!("-> {} {} {} active={}", d.destination.addr, d.destination.forward.name(), d.destination.weight, d.active_conns);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn destinations(&self, key: &ServiceKey) -> Result<Vec<DestinationEntry>> {
        let d = self.destinations_raw(key).await?;
        if d.is_empty() {
            // Tell "no destinations" from "no service".
            self.service(key).await?;
        }
        Ok(d)
    }

    /// The destination dump of one service, parsed from the received bytes
    /// as they arrive (no intermediate messages); empty also when the service
    /// does not exist.
    async fn destinations_raw(&self, key: &ServiceKey) -> Result<Vec<DestinationEntry>> {
        let msg = Self::msg(IpvsCmd::GetDest, vec![IpvsAttr::Service(service_key_attrs(key))]);
        let fam = key.family();
        let mut out = Vec::new();
        let what = || format!("listing real servers of {key}");
        match self.conn.dump_with(&msg, what, self.timeout, |_cmd, attrs| dest_message(attrs, fam, &mut out)).await? {
            Ok(()) => {
                // A whole table holds one of these per service: no spare capacity.
                out.shrink_to_fit();
                Ok(out)
            }
            Err(e) => Err(map_common(e).unwrap_or_else(|| svc_err(key, e))),
        }
    }

    /// Add a destination to a service.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// use ipvs::{Destination, Forward, ServiceKey};
    /// // ipvsadm -a -t 10.0.0.1:80 -r 192.168.1.10:8080 -m -w 5
    /// let key = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
    /// let d = Destination::new("192.168.1.10:8080".parse().unwrap(), Forward::Masq).with_weight(5);
    /// ipvs::Ipvs::connect().await?.add_destination(&key, &d).await?;
    /// # Ok(()) }
    /// ```
    pub async fn add_destination(&self, key: &ServiceKey, d: &Destination) -> Result<()> {
        d.validate(key)?;
        let msg = dest_msg(IpvsCmd::NewDest, key, dest_attrs(d));
        self.do_ack(msg, format!("adding real server {} to {key}", d.addr), |e| dest_err(key, d.addr, e)).await?;
        Ok(())
    }

    /// Change a destination's forwarding method, weight or thresholds.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// use ipvs::{Destination, Forward, ServiceKey};
    /// // ipvsadm -e -t 10.0.0.1:80 -r 192.168.1.10:8080 -m -w 0   (drain it)
    /// let key = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
    /// let d = Destination::new("192.168.1.10:8080".parse().unwrap(), Forward::Masq).with_weight(0);
    /// ipvs::Ipvs::connect().await?.update_destination(&key, &d).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update_destination(&self, key: &ServiceKey, d: &Destination) -> Result<()> {
        d.validate(key)?;
        let msg = dest_msg(IpvsCmd::SetDest, key, dest_attrs(d));
        self.do_ack(msg, format!("editing real server {} of {key}", d.addr), |e| dest_err(key, d.addr, e)).await?;
        Ok(())
    }

    /// Delete a destination from a service.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// use ipvs::ServiceKey;
    /// // ipvsadm -d -t 10.0.0.1:80 -r 192.168.1.10:8080
    /// let key = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
    /// ipvs::Ipvs::connect().await?.delete_destination(&key, "192.168.1.10:8080".parse().unwrap()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_destination(&self, key: &ServiceKey, addr: SocketAddr) -> Result<()> {
        let msg = dest_msg(IpvsCmd::DelDest, key, dest_key_attrs(addr));
        self.do_ack(msg, format!("deleting real server {addr} of {key}"), |e| dest_err(key, addr, e)).await?;
        Ok(())
    }

    // ---- whole table -------------------------------------------------------

    /// Every service with its destinations: one service dump, then one
    /// destination dump per service (the kernel has no "all destinations"
    /// dump). A service deleted between the two is left out.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// // Like ipvsadm -Ln.
    /// for (svc, dests) in ipvs::Ipvs::connect().await?.dump().await? {
    ///     println!("{} {}", svc.service.key, svc.service.scheduler);
    ///     for d in dests {
    ///         println!("  -> {} {} {}", d.destination.addr, d.destination.forward.name(), d.destination.weight);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn dump(&self) -> Result<Table> {
        let services = self.services().await?;
        if services.len() < POOL_DUMP_MIN {
            return self.dump_one_by_one(services).await;
        }
        // The kernel does the work of a dump inside the system calls of the
        // thread that reads it: the destination dumps run on the socket pool,
        // several in flight on two threads (see `Conn::dest_dumps`).
        let msgs = services
            .iter()
            .map(|s| Self::msg(IpvsCmd::GetDest, vec![IpvsAttr::Service(service_key_attrs(&s.service.key))]))
            .collect();
        let fams: Vec<Family> = services.iter().map(|s| s.service.key.family()).collect();
        let r = self
            .conn
            .dest_dumps(msgs, self.timeout, DestLists::default, move |st: &mut DestLists, i, _cmd, attrs| {
                st.add(i, fams[i], attrs)
            })
            .await?;
        let Some((states, results)) = r else {
            return self.dump_one_by_one(services).await;
        };
        let out = assemble(services, states, results)?;
        self.without_vanished(out).await
    }

    /// `table` without the services that are gone. The kernel answers the
    /// destination dump of a missing service with an empty list, so a service
    /// deleted between the service dump and its destination dump would look
    /// like a service without destinations: each service with none is looked
    /// up once more (in one batch).
    async fn without_vanished(&self, mut table: Table) -> Result<Table> {
        let empty: Vec<usize> = table.iter().enumerate().filter(|(_, (_, d))| d.is_empty()).map(|(i, _)| i).collect();
        if empty.is_empty() {
            return Ok(table);
        }
        let key = |k: usize| table[empty[k]].0.service.key;
        let batch = self
            .conn
            .batch(
                empty.len(),
                |k| Self::msg(IpvsCmd::GetService, vec![IpvsAttr::Service(service_key_attrs(&key(k)))]),
                "looking up the services without real servers",
                self.timeout,
            )
            .await;
        if let Some(e) = batch.interrupted {
            return Err(e);
        }
        let mut gone = vec![false; table.len()];
        for (k, r) in batch.results.into_iter().enumerate() {
            match r {
                Answer::Err(libc::ESRCH) => gone[empty[k]] = true,
                Answer::Err(e) => return Err(svc_err(&key(k), e)),
                _ => {}
            }
        }
        let mut i = 0;
        table.retain(|_| {
            i += 1;
            !gone[i - 1]
        });
        Ok(table)
    }

    /// The destinations of `services`, one dump after the other.
    async fn dump_one_by_one(&self, services: Vec<ServiceEntry>) -> Result<Table> {
        let mut out = Vec::with_capacity(services.len());
        for s in services {
            let d = self.destinations_raw(&s.service.key).await?;
            out.push((s, d));
        }
        self.without_vanished(out).await
    }

    /// Zero the counters of every service, or of one.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// use ipvs::ServiceKey;
    /// let ipvs = ipvs::Ipvs::connect().await?;
    /// ipvs.zero(Some(&ServiceKey::tcp("10.0.0.1:80".parse().unwrap()))).await?; // ipvsadm -Z -t 10.0.0.1:80
    /// ipvs.zero(None).await?; // ipvsadm -Z
    /// # Ok(()) }
    /// ```
    pub async fn zero(&self, key: Option<&ServiceKey>) -> Result<()> {
        let attrs = key.map(|k| vec![IpvsAttr::Service(service_key_attrs(k))]).unwrap_or_default();
        let what = key.map_or("zeroing all counters".to_owned(), |k| format!("zeroing {k}"));
        self.do_ack(Self::msg(IpvsCmd::Zero, attrs), what, |e| match key {
            Some(k) => svc_err(k, e),
            None => kernel("zeroing counters", e),
        })
        .await?;
        Ok(())
    }

    /// Delete every virtual service in this namespace. Prefer deleting the
    /// services you own: this removes everyone's.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// // ipvsadm -C
    /// ipvs::Ipvs::connect().await?.flush().await?;
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self) -> Result<()> {
        self.do_ack(Self::msg(IpvsCmd::Flush, vec![]), "flushing".into(), |e| kernel("flushing the table", e)).await?;
        Ok(())
    }

    // ---- config, daemons, info --------------------------------------------

    /// The connection timeouts.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// let t = ipvs::Ipvs::connect().await?.timeouts().await?;
    /// println!("Timeout (tcp tcpfin udp): {} {} {}", t.tcp, t.tcp_fin, t.udp);
    /// # Ok(()) }
    /// ```
    pub async fn timeouts(&self) -> Result<Timeouts> {
        let msgs = self
            .do_ack(Self::msg(IpvsCmd::GetConfig, vec![]), "getting timeouts".into(), |e| kernel("getting timeouts", e))
            .await?;
        let mut t = Timeouts::default();
        for a in msgs.into_iter().flat_map(|m| m.attrs) {
            match a {
                IpvsAttr::TimeoutTcp(v) => t.tcp = v,
                IpvsAttr::TimeoutTcpFin(v) => t.tcp_fin = v,
                IpvsAttr::TimeoutUdp(v) => t.udp = v,
                _ => {}
            }
        }
        Ok(t)
    }

    /// Set the connection timeouts; a 0 field leaves that timeout unchanged.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// use ipvs::Timeouts;
    /// // ipvsadm --set 0 60 0: only the FIN_WAIT timeout changes.
    /// ipvs::Ipvs::connect().await?.set_timeouts(&Timeouts::new(0, 60, 0)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_timeouts(&self, t: &Timeouts) -> Result<()> {
        let attrs = vec![IpvsAttr::TimeoutTcp(t.tcp), IpvsAttr::TimeoutTcpFin(t.tcp_fin), IpvsAttr::TimeoutUdp(t.udp)];
        self.do_ack(Self::msg(IpvsCmd::SetConfig, attrs), "setting timeouts".into(), |e| kernel("setting timeouts", e))
            .await?;
        Ok(())
    }

    /// The running sync daemons (at most one master and one backup).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// for d in ipvs::Ipvs::connect().await?.sync_daemons().await? {
    ///     println!("{} sync daemon (mcast={}, syncid={})", d.state.name(), d.interface, d.sync_id);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn sync_daemons(&self) -> Result<Vec<SyncDaemon>> {
        let msgs =
            match self.conn.dump(&Self::msg(IpvsCmd::GetDaemon, vec![]), "listing sync daemons", self.timeout).await? {
                Ok(v) => v,
                Err(e) => return Err(map_common(e).unwrap_or(kernel("listing sync daemons", e))),
            };
        let mut out = Vec::new();
        for a in msgs.into_iter().flat_map(|m| m.attrs) {
            if let IpvsAttr::Daemon(d) = a {
                out.push(daemon_from(&d)?);
            }
        }
        out.sort_by_key(|d| d.state);
        Ok(out)
    }

    /// Start a sync daemon.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// use ipvs::{SyncDaemon, SyncState};
    /// // ipvsadm --start-daemon master --mcast-interface eth0 --syncid 7 --mcast-ttl 2
    /// let d = SyncDaemon::new(SyncState::Master, "eth0", 7).with_mcast_ttl(2);
    /// ipvs::Ipvs::connect().await?.start_sync_daemon(&d).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_sync_daemon(&self, d: &SyncDaemon) -> Result<()> {
        d.validate()?;
        let msg = Self::msg(IpvsCmd::NewDaemon, vec![IpvsAttr::Daemon(daemon_attrs(d))]);
        let state = d.state.name();
        let ifname = d.interface.clone();
        self.do_ack(msg, format!("starting {state} sync daemon"), |e| match e {
            libc::EEXIST => Error::DaemonExists(d.state),
            libc::ENODEV => {
                Error::Kernel { context: format!("starting {state} sync daemon: no such interface {ifname}"), errno: e }
            }
            _ => kernel(&format!("starting {state} sync daemon"), e),
        })
        .await?;
        Ok(())
    }

    /// Stop the sync daemon of that state.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// // ipvsadm --stop-daemon master
    /// ipvs::Ipvs::connect().await?.stop_sync_daemon(ipvs::SyncState::Master).await?;
    /// # Ok(()) }
    /// ```
    pub async fn stop_sync_daemon(&self, state: SyncState) -> Result<()> {
        // When the daemon's kernel thread has not run yet, kthread_stop()
        // returns -EINTR and netlink_rcv_skb() then sends NO reply at all, not
        // even an error (seen on Linux 6.1: stopping a backup daemon right
        // after starting it). A lone request would wait out its deadline
        // although the daemon is stopped. So the stop goes without NLM_F_ACK,
        // followed in the same sendmsg by a GET_INFO with NLM_F_ACK: the kernel
        // handles both in order, still reports an error of the stop, and the
        // second ACK proves the stop has been handled.
        let msgs = [
            Self::msg(IpvsCmd::DelDaemon, vec![IpvsAttr::Daemon(vec![ipvs_sys::DaemonAttr::State(state.value())])]),
            Self::msg(IpvsCmd::GetInfo, vec![]),
        ];
        let what = format!("stopping {} sync daemon", state.name());
        let batch = self.conn.batch(msgs.len(), |i| msgs[i].clone(), &what, self.timeout).await;
        if let Some(e) = batch.interrupted {
            return Err(e);
        }
        match batch.results.first().copied().unwrap_or(Answer::Ok) {
            Answer::Err(e) => Err(map_common(e).unwrap_or_else(|| match e {
                libc::ESRCH => Error::NoSuchDaemon(state),
                _ => kernel(&what, e),
            })),
            _ => Ok(()),
        }
    }

    /// IPVS version and connection table size.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// let i = ipvs::Ipvs::connect().await?.info().await?;
    /// println!("IP Virtual Server version {} (size={})", i.version_string(), i.conn_table_size);
    /// # Ok(()) }
    /// ```
    pub async fn info(&self) -> Result<Info> {
        let msgs = self
            .do_ack(Self::msg(IpvsCmd::GetInfo, vec![]), "getting info".into(), |e| kernel("getting info", e))
            .await?;
        let (mut version, mut size) = (None, None);
        for a in msgs.into_iter().flat_map(|m| m.attrs) {
            match a {
                IpvsAttr::InfoVersion(v) => version = Some(v),
                IpvsAttr::InfoConnTabSize(v) => size = Some(v),
                _ => {}
            }
        }
        let v = version.ok_or_else(|| Error::Decode("info reply without version".into()))?;
        Ok(Info {
            version: ((v >> 16) as u8, (v >> 8) as u8, v as u8),
            conn_table_size: size.ok_or_else(|| Error::Decode("info reply without table size".into()))?,
        })
    }

    // ---- bulk --------------------------------------------------------------

    /// Apply many operations in as few system calls as possible (512 requests
    /// per sendmsg). Every operation is validated first; if one is invalid,
    /// nothing is sent and this is that error. The kernel applies them in
    /// order and does not roll back: the result has one [`OpOutcome`] per
    /// operation. When a socket error or the deadline cuts the batch short,
    /// the operations before keep their results, those whose answer did not
    /// come are [`OpOutcome::Unknown`] (perhaps done), the rest
    /// [`OpOutcome::NotSent`], and [`Applied::interrupted`] tells why.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), ipvs::Error> {
    /// use ipvs::{Destination, Forward, Op, Scheduler, Service, ServiceKey};
    /// let key = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
    /// let ops = vec![
    ///     Op::AddService(Service::new(key, Scheduler::Rr)),
    ///     Op::AddDestination(key, Destination::new("10.0.1.1:80".parse().unwrap(), Forward::Route)),
    ///     Op::AddDestination(key, Destination::new("10.0.1.2:80".parse().unwrap(), Forward::Route)),
    /// ];
    /// for (op, outcome) in ops.iter().zip(ipvs::Ipvs::connect().await?.apply(&ops).await?) {
    ///     if !outcome.is_done() {
    ///         eprintln!("{op}: {outcome:?}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn apply(&self, ops: &[Op]) -> Result<Applied> {
        for op in ops {
            op.validate()?;
        }
        // Requests are built chunk by chunk: a large batch never holds them all.
        let batch = self
            .conn
            .batch_emit(
                ops.len(),
                |buf, family_id, flags, seq, i| emit_op(buf, family_id, flags, seq, &ops[i]),
                "applying changes",
                self.timeout,
            )
            .await;
        let outcomes = batch
            .results
            .into_iter()
            .zip(ops)
            .map(|(r, op)| match r {
                Answer::Ok => OpOutcome::Done,
                Answer::Err(e) => OpOutcome::Failed(op.error(e)),
                Answer::Unknown => OpOutcome::Unknown,
                Answer::NotSent => OpOutcome::NotSent,
            })
            .collect();
        Ok(Applied::new(outcomes, batch.interrupted))
    }
}

/// Per dump thread of [`Ipvs::dump`]: the destination lists of the services
/// it read, by service index. The reply being read grows in one scratch
/// list, reused from service to service; each finished one is copied out at
/// its exact length (one allocation per service, none wasted).
#[derive(Default)]
pub(crate) struct DestLists {
    done: Vec<(usize, Vec<DestinationEntry>)>,
    /// The service whose reply is being read, if any.
    current: Option<usize>,
    scratch: Vec<DestinationEntry>,
}

impl DestLists {
    /// Parse one GET_DEST reply message of service `i` (of address family
    /// `family`). A thread reads all of a reply before the next one's, so a
    /// new index means the previous reply is complete.
    pub(crate) fn add(&mut self, i: usize, family: Family, attrs: &[u8]) -> Result<()> {
        if self.current != Some(i) {
            self.close();
            self.current = Some(i);
        }
        dest_message(attrs, family, &mut self.scratch)
    }

    /// Move the reply being read, if any, to the finished lists.
    fn close(&mut self) {
        if let Some(i) = self.current.take() {
            self.done.push((i, self.scratch.drain(..).collect()));
        }
    }

    /// Every list, by service index.
    fn finish(mut self) -> Vec<(usize, Vec<DestinationEntry>)> {
        self.close();
        self.done
    }
}

/// The services with their destination lists (from the dump threads'
/// `states`), or the error of the first service whose dump the kernel
/// refused (`results`, by service index).
pub(crate) fn assemble(services: Vec<ServiceEntry>, states: Vec<DestLists>, results: DumpResults) -> Result<Table> {
    let mut lists: Vec<Vec<DestinationEntry>> = Vec::new();
    lists.resize_with(services.len(), Vec::new);
    for (i, d) in states.into_iter().flat_map(DestLists::finish) {
        lists[i] = d;
    }
    let mut out = Vec::with_capacity(services.len());
    for ((s, r), d) in services.into_iter().zip(results).zip(lists) {
        if let Err(e) = r {
            return Err(map_common(e).unwrap_or_else(|| svc_err(&s.service.key, e)));
        }
        out.push((s, d));
    }
    Ok(out)
}

/// Drop repeated services. The kernel pages service dumps by hash bucket
/// index: a dump taken while the table changes may repeat an entry.
pub(crate) fn unique_services(out: &mut Vec<ServiceEntry>) {
    let mut seen = std::collections::HashSet::with_capacity(out.len());
    out.retain(|s| seen.insert(s.service.key));
}

/// How to connect, for [`Ipvs::builder`]. Each setter returns the options.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    timeout: Duration,
    load_module: bool,
    dump_sockets: usize,
    netns: Option<std::path::PathBuf>,
}

impl Default for ConnectOptions {
    /// A 30 s deadline, `modprobe ip_vs` when the family is missing, 8 dump
    /// sockets, the calling thread's network namespace.
    fn default() -> Self {
        Self { timeout: DEFAULT_TIMEOUT, load_module: true, dump_sockets: conn::DEST_POOL_SIZE, netns: None }
    }
}

impl ConnectOptions {
    /// How long each request waits for each reply of the kernel (default
    /// [`DEFAULT_TIMEOUT`]); then [`Error::Timeout`]. Also the deadline of
    /// the connection itself.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether to run `modprobe -q ip_vs` once when the kernel has no IPVS
    /// family (default true, as ipvsadm does); without it a missing module
    /// is [`Error::NotAvailable`] at once.
    pub fn load_module(mut self, load: bool) -> Self {
        self.load_module = load;
        self
    }

    /// How many extra sockets [`Ipvs::dump`] uses to read the destinations
    /// of many services at once (default 8; each is one file descriptor).
    /// 0: one service after the other on one socket.
    pub fn dump_sockets(mut self, n: usize) -> Self {
        self.dump_sockets = n;
        self
    }

    /// Connect inside the network namespace at `path` (`/var/run/netns/NAME`,
    /// `/proc/PID/ns/net`) instead of the calling thread's. The sockets are
    /// opened from a short-lived thread of their own: no thread of the caller
    /// changes namespace, and the runtime is not blocked meanwhile.
    pub fn netns(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.netns = Some(path.into());
        self
    }

    /// Connect. Must be called from within a tokio runtime.
    pub async fn connect(self) -> Result<Ipvs> {
        let socks = match &self.netns {
            Some(path) => conn::open_socket_in(path, self.dump_sockets).await?,
            None => {
                conn::open_socket(self.dump_sockets).map_err(|e| Error::Io("opening a netlink socket".into(), e))?
            }
        };
        let conn = Conn::new(socks, self.timeout, self.load_module).await?;
        Ok(Ipvs { conn: Arc::new(conn), timeout: self.timeout })
    }
}
