//! The netlink connection: one socket, one reader task, replies matched to
//! requests by sequence number, a deadline on every wait.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipvs_sys::{emit_request, parse_replies, IpvsCmd, IpvsMessage, Reply, ReplyKind};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE, NLMSG_ERROR, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_sys::{protocols::NETLINK_GENERIC, Socket};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Receive buffer of the request socket (ACKs, errors, `do` replies: all small).
const RECV_BUF: usize = 64 * 1024;
/// Dumps: the kernel sizes each dump datagram by the largest length the socket
/// ever passed to recv (at least ~3.7 KiB, at most 32 KiB). The two kinds of
/// dump want opposite sizes, so each has its own socket, always read with the
/// same length (a larger datagram, which the kernel never sends, is detected
/// with MSG_TRUNC and reported). Measured on Linux 6.1 with a 10k x 10 table:
///
/// - Destination dumps (one per service) carry little (~350 bytes per
///   destination) and every one costs two datagrams (the kernel sends the end
///   marker separately). With 32 KiB datagrams each service cost two 32 KiB
///   page allocations, cleared (init_on_alloc), which was the largest single
///   kernel cost of a full dump. `SKB_WITH_OVERHEAD(8192)` makes them 8 KiB
///   slab objects holding ~20 destinations.
pub(crate) const DEST_DUMP_RECV_LEN: usize = 8192 - 320;
/// - The service dump walks the kernel's service hash table from the start
///   for every datagram, skipping what it already sent: its cost grows with
///   services squared over services per datagram, so it gets the largest.
pub(crate) const DUMP_RECV_LEN: usize = 32 * 1024;
/// Default number of sockets of the destination-dump pool
/// ([`Conn::dest_dumps`]): split between [`DEST_DUMP_LANES`] threads, each
/// keeping one dump in flight on every socket of its share. Measured on Linux
/// 6.1 (10k x 10 table, the test VM): one dump after the other on one socket
/// took 2.0 s; four sockets in flight on one thread 1.3 s; two threads of
/// four 1.05 s.
pub(crate) const DEST_POOL_SIZE: usize = 8;
/// Threads the destination-dump pool is split between (at most; see [`dump_lanes`]).
const DEST_DUMP_LANES: usize = 2;

/// Threads for the destination dumps: [`DEST_DUMP_LANES`], but no more than the
/// CPUs this process may run on. The kernel does a dump's work in the system
/// calls of the thread that reads it, so a second thread only helps with a
/// second CPU; on one (a 1-vCPU director) it only adds thread switches.
fn dump_lanes() -> usize {
    static LANES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LANES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, DEST_DUMP_LANES))
}
/// Socket receive buffer asked for, so that bursts of replies are not dropped.
const SO_RCVBUF_SIZE: usize = 8 * 1024 * 1024;
/// Socket send buffer: one sendmsg may carry this many bytes of requests.
const SO_SNDBUF_SIZE: usize = 4 * 1024 * 1024;
/// Most requests sent in one sendmsg by [`Conn::batch`].
pub(crate) const BATCH_MAX_MSGS: usize = 512;
/// Most bytes sent in one sendmsg by [`Conn::batch`].
pub(crate) const BATCH_MAX_BYTES: usize = 256 * 1024;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_ATTR_FAMILY_ID: u16 = 1;

/// Per dump of a series: `Ok` or the kernel's positive errno.
pub(crate) type DumpResults = Vec<std::result::Result<(), i32>>;

/// What the reader task hands to a waiting request.
#[derive(Debug)]
enum Event {
    Reply(Reply),
    /// The socket failed or lost messages: the reply may never come.
    Lost(String),
}

struct Shared {
    fd: AsyncFd<Socket>,
    pending: Mutex<Pending>,
}

/// The requests waiting for replies, by sequence number, and whether the
/// reader task has ended (then no reply will ever come).
#[derive(Default)]
struct Pending {
    waiting: HashMap<u32, mpsc::UnboundedSender<Event>>,
    /// Why the reader ended, once it has.
    closed: Option<String>,
}

impl Shared {
    /// The reader task is ending: tell every waiting request, and make every
    /// later one fail at once.
    fn close(&self, why: String) {
        let mut p = self.pending.lock().unwrap();
        for tx in p.waiting.values() {
            let _ = tx.send(Event::Lost(why.clone()));
        }
        p.closed = Some(why);
    }
}

/// The sequence numbers of a request (or of a batch) in the pending map;
/// they are removed when this is dropped, also when the request's future is
/// dropped before its end.
struct Registration<'a> {
    shared: &'a Shared,
    seqs: std::ops::Range<u32>,
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut p = self.shared.pending.lock().unwrap();
        for s in self.seqs.clone() {
            p.waiting.remove(&s);
        }
    }
}

/// A netlink connection to the IPVS family in one network namespace: a
/// request socket (many requests in flight, replies routed by a reader task)
/// and a dump socket (one dump at a time, read inline by the dumping task).
pub(crate) struct Conn {
    shared: Arc<Shared>,
    family_id: u16,
    seq: AtomicU32,
    dump: tokio::sync::Mutex<DumpSock>,
    dest_dump: tokio::sync::Mutex<DumpSock>,
    /// Blocking sockets for the pipelined destination dumps of
    /// [`Conn::dest_dumps`]; a socket left in an unknown state by a failed
    /// dump is dropped, so the pool may shrink (to empty: callers then dump
    /// one service after the other on `dest_dump`).
    pool: Arc<tokio::sync::Mutex<Vec<Socket>>>,
    reader: tokio::task::JoinHandle<()>,
}

/// A dump socket and its buffers. The kernel runs one dump at a time per
/// socket, so dumps queue on the mutex around this.
struct DumpSock {
    fd: AsyncFd<Socket>,
    /// Exactly as long as every recv on this socket (see [`DUMP_RECV_LEN`]).
    recv: Vec<u8>,
    send: Vec<u8>,
    /// Sequence number of a dump whose caller went away before its end: its
    /// remaining datagrams are drained before the next dump starts (the kernel
    /// answers a new dump with EBUSY while one is running).
    unfinished: Option<u32>,
}

/// The sockets of a [`Conn`], opened in the same network namespace.
pub(crate) struct Sockets {
    main: Socket,
    dump: Socket,
    dest_dump: Socket,
    pool: Vec<Socket>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn open_one() -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_GENERIC)?;
    sock.bind_auto()?;
    Ok(sock)
}

/// Open the generic netlink sockets of a connection, with `pool` sockets
/// for pipelined destination dumps, in the calling thread's network namespace.
pub(crate) fn open_socket(pool: usize) -> io::Result<Sockets> {
    let pool = (0..pool).map(|_| open_one()).collect::<io::Result<_>>()?;
    Ok(Sockets { main: open_one()?, dump: open_one()?, dest_dump: open_one()?, pool })
}

/// Set a socket buffer size with the `*FORCE` option (root may pass the
/// system limit), or else with the plain one (capped by the limit).
fn set_buf<F, P>(sock: &Socket, force: F, plain: P, size: usize)
where
    F: nix::sys::socket::SetSockOpt<Val = usize>,
    P: nix::sys::socket::SetSockOpt<Val = usize>,
{
    if nix::sys::socket::setsockopt(sock, force, &size).is_err() {
        let _ = nix::sys::socket::setsockopt(sock, plain, &size);
    }
}

fn io_err(what: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::Io(what.to_owned(), e)
}

impl Conn {
    /// Set up a socket (already bound, in its namespace): resolve the family,
    /// start the reader task.
    pub(crate) async fn new(socks: Sockets, timeout: Duration, load_module: bool) -> Result<Self> {
        let (fd, dump, dest_dump, pool) = Self::prepare(socks)?;
        let family_id = match resolve_family(&fd, timeout).await? {
            Some(id) => id,
            None if !load_module => {
                return Err(Error::NotAvailable("the IPVS generic netlink family is missing".into()))
            }
            None => {
                // One attempt to load the module, as ipvsadm does.
                let _ = tokio::process::Command::new("modprobe")
                    .args(["-q", "ip_vs"])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .await;
                resolve_family(&fd, timeout).await?.ok_or_else(|| {
                    Error::NotAvailable(
                        "the IPVS generic netlink family is missing and `modprobe ip_vs` did not load it".into(),
                    )
                })?
            }
        };
        Ok(Self::start(fd, dump, dest_dump, pool, family_id))
    }

    /// The sockets set up for use.
    #[allow(clippy::type_complexity)]
    fn prepare(socks: Sockets) -> Result<(AsyncFd<Socket>, DumpSock, DumpSock, Vec<Socket>)> {
        let Sockets { main: sock, dump, dest_dump, pool } = socks;
        for p in &pool {
            let _ = p.set_cap_ack(true);
            let _ = p.set_ext_ack(true);
        }
        let dump = DumpSock::new(dump, DUMP_RECV_LEN)?;
        let dest_dump = DumpSock::new(dest_dump, DEST_DUMP_RECV_LEN)?;
        sock.set_non_blocking(true).map_err(io_err("netlink socket"))?;
        // Errors carry only the header of the failed request, not all of it.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        use nix::sys::socket::sockopt::{RcvBuf, RcvBufForce, SndBuf, SndBufForce};
        set_buf(&sock, RcvBufForce, RcvBuf, SO_RCVBUF_SIZE);
        set_buf(&sock, SndBufForce, SndBuf, SO_SNDBUF_SIZE);
        // SAFETY: `Socket` owns its fd, keeps it open until dropped and always
        // returns the same fd from `as_raw_fd`.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register(sock) }.map_err(|e| Error::Io("netlink socket".into(), e.into()))?;
        Ok((fd, dump, dest_dump, pool))
    }

    /// Start the reader task of a connection to the family `family_id`.
    fn start(fd: AsyncFd<Socket>, dump: DumpSock, dest_dump: DumpSock, pool: Vec<Socket>, family_id: u16) -> Self {
        let pool = Arc::new(tokio::sync::Mutex::new(pool));
        let shared = Arc::new(Shared { fd, pending: Mutex::new(Pending::default()) });
        let reader = tokio::spawn(read_loop(Arc::clone(&shared), family_id));
        Self {
            shared,
            family_id,
            seq: AtomicU32::new(1),
            dump: tokio::sync::Mutex::new(dump),
            dest_dump: tokio::sync::Mutex::new(dest_dump),
            pool,
            reader,
        }
    }

    /// The resolved family id.
    pub(crate) fn family_id(&self) -> u16 {
        self.family_id
    }

    fn next_seqs(&self, n: u32) -> u32 {
        let s = self.seq.fetch_add(n, Ordering::Relaxed);
        if s.checked_add(n).is_none() {
            // Wrapped: start again above zero (0 is what the kernel uses for notifications).
            self.seq.store(n + 1, Ordering::Relaxed);
            return 1;
        }
        s
    }

    /// Wait for the replies to `seqs`; fails at once when the reader has ended.
    fn register(&self, seqs: std::ops::Range<u32>, what: &str) -> Result<Registration<'_>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut p = self.shared.pending.lock().unwrap();
        if let Some(why) = &p.closed {
            return Err(Error::Io(what.to_owned(), io::Error::other(format!("the connection is closed: {why}"))));
        }
        for s in seqs.clone() {
            p.waiting.insert(s, tx.clone());
        }
        Ok(Registration { shared: &self.shared, seqs, rx })
    }

    /// How many requests wait for replies.
    #[cfg(test)]
    fn pending_len(&self) -> usize {
        self.shared.pending.lock().unwrap().waiting.len()
    }

    async fn send(&self, buf: &[u8]) -> Result<()> {
        loop {
            let mut guard = self.shared.fd.writable().await.map_err(io_err("netlink send"))?;
            match guard.try_io(|fd| fd.get_ref().send(buf, 0)) {
                Ok(Ok(n)) if n == buf.len() => return Ok(()),
                Ok(Ok(n)) => {
                    return Err(Error::Io(
                        "netlink send".into(),
                        io::Error::other(format!("short send: {n} of {} bytes", buf.len())),
                    ))
                }
                Ok(Err(e)) => return Err(Error::Io("netlink send".into(), e)),
                Err(_would_block) => continue,
            }
        }
    }

    async fn recv_event(
        &self,
        rx: &mut mpsc::UnboundedReceiver<Event>,
        what: &str,
        timeout: Duration,
    ) -> Result<Reply> {
        match tokio::time::timeout(timeout, rx.recv()).await {
            Err(_) => Err(Error::Timeout(timeout, what.to_owned())),
            Ok(None) => Err(Error::Io(what.to_owned(), io::Error::other("netlink reader stopped"))),
            Ok(Some(Event::Lost(why))) => Err(Error::Io(what.to_owned(), io::Error::other(why))),
            Ok(Some(Event::Reply(r))) => Ok(r),
        }
    }

    /// Send one request with `NLM_F_ACK`; collect any data messages until the
    /// ACK. A kernel error is returned as its positive errno in `Err(Ok(errno))`.
    pub(crate) async fn request(
        &self,
        msg: &IpvsMessage,
        what: &str,
        timeout: Duration,
    ) -> Result<std::result::Result<Vec<IpvsMessage>, i32>> {
        let seq = self.next_seqs(1);
        let mut buf = Vec::with_capacity(256);
        emit_request(&mut buf, self.family_id, NLM_F_REQUEST | NLM_F_ACK, seq, msg);
        let mut reg = self.register(seq..seq + 1, what)?;
        self.send(&buf).await?;
        let mut msgs = Vec::new();
        loop {
            let r = self.recv_event(&mut reg.rx, what, timeout).await?;
            match r.kind {
                ReplyKind::Message(m) => msgs.push(m),
                ReplyKind::Ack => return Ok(Ok(msgs)),
                ReplyKind::Error(e) => return Ok(Err(-e)),
                ReplyKind::Done(0) => return Ok(Ok(msgs)),
                ReplyKind::Done(e) => return Ok(Err(-e)),
                ReplyKind::Overrun => return Err(Error::Io(what.into(), io::Error::other("netlink overrun"))),
                ReplyKind::Ignored => {}
            }
        }
    }

    /// Run a dump and collect its messages.
    pub(crate) async fn dump(
        &self,
        msg: &IpvsMessage,
        what: &str,
        timeout: Duration,
    ) -> Result<std::result::Result<Vec<IpvsMessage>, i32>> {
        let mut msgs = Vec::new();
        let r = self
            .dump_with(
                msg,
                || what.to_owned(),
                timeout,
                |cmd, attrs| {
                    msgs.push(
                        IpvsMessage::parse_attrs(attrs, IpvsCmd::from(cmd))
                            .map_err(|e| Error::Decode(e.to_string()))?,
                    );
                    Ok(())
                },
            )
            .await?;
        Ok(r.map(|()| msgs))
    }

    /// Run a dump on the dump socket, handing each IPVS message of the reply
    /// (its generic netlink command and its attribute bytes) to `f` as it is
    /// received: nothing is buffered or parsed here. GET_DEST dumps use one
    /// socket, all others another; on each only one dump runs at a time (the
    /// kernel answers a second with EBUSY), so dumps queue. `what`
    /// names the dump in errors. A kernel error is `Ok(Err(errno))` (positive).
    ///
    /// The kernel fills the first datagram while handling the request and the
    /// next one each time one is received, so a dump is read with plain
    /// non-blocking receives; the task waits (at most `timeout` per datagram)
    /// only when the kernel is not done yet.
    pub(crate) async fn dump_with<W, F>(
        &self,
        msg: &IpvsMessage,
        what: W,
        timeout: Duration,
        mut f: F,
    ) -> Result<std::result::Result<(), i32>>
    where
        W: Fn() -> String,
        F: FnMut(u8, &[u8]) -> Result<()>,
    {
        let sock = if msg.cmd == IpvsCmd::GetDest { &self.dest_dump } else { &self.dump };
        let mut guard = sock.lock().await;
        let d = &mut *guard;
        if let Some(old) = d.unfinished.take() {
            // Read what is left of an abandoned dump before starting another.
            // Tried once: if it fails, this dump fails, and the next one
            // starts right away (its datagrams are told apart by sequence
            // number; a dump still running would make the kernel answer EBUSY
            // at once, not after a deadline).
            drain_dump(d, old, timeout, &what).await?;
        }
        let seq = self.next_seqs(1);
        d.send.clear();
        emit_request(&mut d.send, self.family_id, NLM_F_REQUEST | NLM_F_DUMP, seq, msg);
        // A failed send started no dump: nothing to drain later.
        dump_send(&d.fd, &d.send).await.map_err(|e| Error::Io(what(), e))?;
        d.unfinished = Some(seq);
        let family_id = self.family_id;
        loop {
            let n = dump_recv(d, timeout, &what).await?;
            // On an error from `f` the rest of this dump stays `unfinished`.
            match dump_datagram(&d.recv[..n], seq, family_id, &mut f)? {
                Datagram::More => {}
                Datagram::End(e) => {
                    d.unfinished = None;
                    return Ok(if e == 0 { Ok(()) } else { Err(e) });
                }
                Datagram::Overrun => {
                    d.unfinished = None;
                    return Err(Error::Io(what(), io::Error::other("netlink overrun")));
                }
            }
        }
    }

    /// Run the destination dumps `msgs` (GET_DEST requests, one per service)
    /// on the socket pool: on a blocking thread (and with at least
    /// `2 * DEST_POOL_SIZE` requests a second one scoped inside it), each
    /// keeping one dump in flight on each of its sockets and taking the next
    /// request from a shared counter, so that the threads end together even
    /// when one of them gets less CPU (a reconcile parses its input meanwhile).
    /// Every message of request `i`'s reply is handed to `f(state, i, cmd,
    /// attrs)` on the thread that reads it, with that thread's own `state`
    /// (made by `new_state`); a thread sees all of one reply's messages
    /// before any of its next one's.
    ///
    /// `Ok(None)` when the pool has no socket left (the caller dumps one
    /// service after the other instead). Otherwise the threads' states and
    /// per request `Ok(())` or the kernel's positive errno. The pool is
    /// released only when every thread is done, even when the caller stops
    /// waiting; a socket whose dump failed (I/O error, deadline, error from
    /// `f`) is dropped from it.
    pub(crate) async fn dest_dumps<S, F>(
        &self,
        msgs: Vec<IpvsMessage>,
        timeout: Duration,
        new_state: impl Fn() -> S,
        f: F,
    ) -> Result<Option<(Vec<S>, DumpResults)>>
    where
        S: Send + 'static,
        F: Fn(&mut S, usize, u8, &[u8]) -> Result<()> + Send + Sync + 'static,
    {
        let mut guard = Arc::clone(&self.pool).lock_owned().await;
        if msgs.is_empty() {
            return Ok(Some((Vec::new(), Vec::new())));
        }
        if guard.is_empty() {
            return Ok(None);
        }
        let family_id = self.family_id;
        let first_seq = self.next_seqs(msgs.len() as u32);
        let lanes = if msgs.len() >= 2 * DEST_POOL_SIZE { dump_lanes().min(guard.len()) } else { 1 };
        let states: Vec<S> = (0..lanes).map(|_| new_state()).collect();
        let work = move || {
            let socks = std::mem::take(&mut *guard);
            let share = socks.len().div_ceil(lanes);
            let mut groups: Vec<Vec<Socket>> = Vec::with_capacity(lanes);
            let mut it = socks.into_iter();
            for _ in 0..lanes {
                groups.push(it.by_ref().take(share).collect());
            }
            let next = AtomicUsize::new(0);
            let (msgs, f, next) = (&msgs, &f, &next);
            let run = |(socks, mut state): (Vec<Socket>, S)| {
                let r = pipelined_dumps(&socks, family_id, first_seq, msgs, next, timeout, |i, c, a| {
                    f(&mut state, i, c, a)
                });
                (socks, state, r)
            };
            let mut jobs = groups.into_iter().zip(states);
            let first = jobs.next().expect("at least one lane");
            let done: Vec<_> = std::thread::scope(|sc| {
                let others: Vec<_> = jobs.map(|job| sc.spawn(move || run(job))).collect();
                let mut done = vec![run(first)];
                done.extend(others.into_iter().map(|h| h.join().expect("dump thread panicked")));
                done
            });
            let mut results: DumpResults = vec![Ok(()); msgs.len()];
            let mut states = Vec::with_capacity(lanes);
            let mut err = None;
            for (socks, state, r) in done {
                match r {
                    Ok(r) => {
                        guard.extend(socks);
                        for (i, e) in r {
                            results[i] = Err(e);
                        }
                    }
                    Err(e) => err = err.or(Some(e)),
                }
                states.push(state);
            }
            match err {
                Some(e) => Err(e),
                None => Ok(Some((states, results))),
            }
        };
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::Io("listing real servers".into(), io::Error::other(e.to_string())))?
    }

    /// Send `count` requests, [`BATCH_MAX_MSGS`] per sendmsg, with `NLM_F_ACK`
    /// only on the last of each sendmsg. Request `i` is `msg(i)`, built only
    /// when its chunk is laid out (so a large batch never holds every request
    /// at once). The kernel handles them in order and reports every failure,
    /// so each request gets its own result (see [`Batch`]).
    pub(crate) async fn batch(
        &self,
        count: usize,
        mut msg: impl FnMut(usize) -> IpvsMessage,
        what: &str,
        timeout: Duration,
    ) -> Batch {
        self.batch_emit(
            count,
            |buf, family_id, flags, seq, i| emit_request(buf, family_id, flags, seq, &msg(i)),
            what,
            timeout,
        )
        .await
    }

    /// [`Conn::batch`] with request `i` written by `emit(buf, family_id,
    /// flags, seq, i)`, which appends one whole netlink message.
    pub(crate) async fn batch_emit<E>(&self, count: usize, mut emit: E, what: &str, timeout: Duration) -> Batch
    where
        E: FnMut(&mut Vec<u8>, u16, u16, u32, usize) -> usize,
    {
        let mut results = Vec::with_capacity(count);
        let mut buf = Vec::with_capacity(BATCH_MAX_BYTES + 4096);
        let mut i = 0;
        while i < count {
            // Lay out one chunk.
            buf.clear();
            let start = i;
            let first_seq = self.next_seqs(BATCH_MAX_MSGS as u32);
            while i < count && i - start < BATCH_MAX_MSGS && buf.len() < BATCH_MAX_BYTES {
                let seq = first_seq + (i - start) as u32;
                emit(&mut buf, self.family_id, NLM_F_REQUEST, seq, i);
                i += 1;
            }
            let n = i - start;
            // Set NLM_F_ACK on the chunk's last message, in place.
            let mut off = 0;
            for k in 0..n {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                if k + 1 == n {
                    let flags = NLM_F_REQUEST | NLM_F_ACK;
                    buf[off + 6..off + 8].copy_from_slice(&flags.to_ne_bytes());
                }
                off += (len + 3) & !3;
            }
            let last_seq = first_seq + n as u32 - 1;
            let mut chunk: Vec<Answer> = vec![Answer::Ok; n];
            let out = async {
                let mut reg = self.register(first_seq..last_seq + 1, what).map_err(|e| (false, e))?;
                // The kernel handles a netlink request inside sendmsg: when
                // the send fails, none of the chunk was handled.
                self.send(&buf).await.map_err(|e| (false, e))?;
                loop {
                    let r = self.recv_event(&mut reg.rx, what, timeout).await.map_err(|e| (true, e))?;
                    let idx = (r.seq - first_seq) as usize;
                    match r.kind {
                        ReplyKind::Error(e) => {
                            chunk[idx] = Answer::Err(-e);
                            if r.seq == last_seq {
                                return Ok(());
                            }
                        }
                        ReplyKind::Ack if r.seq == last_seq => return Ok(()),
                        _ => {}
                    }
                }
            }
            .await;
            if let Err((sent, e)) = out {
                // The chunk's requests without an error reply may or may not
                // have been handled; the later chunks were not sent.
                for r in &mut chunk {
                    if matches!(r, Answer::Ok) {
                        *r = if sent { Answer::Unknown } else { Answer::NotSent };
                    }
                }
                results.extend(chunk);
                results.resize(count, Answer::NotSent);
                return Batch { results, interrupted: Some(e) };
            }
            results.extend(chunk);
        }
        Batch { results, interrupted: None }
    }
}

/// What became of one request of a [`Batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Handled.
    Ok,
    /// Refused with this positive errno.
    Err(i32),
    /// Sent, but the batch was cut short before its result came.
    Unknown,
    /// Not sent.
    NotSent,
}

/// The results of [`Conn::batch`]: one per request, and the error that cut
/// the batch short, if any.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) results: Vec<Answer>,
    pub(crate) interrupted: Option<Error>,
}

async fn read_loop(shared: Arc<Shared>, family_id: u16) {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let res = async {
            let mut guard = shared.fd.readable().await?;
            match guard.try_io(|fd| recv_trunc(fd.get_ref(), &mut buf)) {
                Ok(r) => r.map(Some),
                Err(_would_block) => Ok(None),
            }
        }
        .await;
        match res {
            Ok(None) => continue,
            Ok(Some(n)) if n > buf.len() => {
                fail_all(&shared, format!("netlink message of {n} bytes was truncated to {}", buf.len()));
            }
            Ok(Some(n)) => {
                let p = shared.pending.lock().unwrap();
                for r in parse_replies(&buf[..n], family_id) {
                    match r {
                        Ok(reply) => {
                            if let Some(tx) = p.waiting.get(&reply.seq) {
                                let _ = tx.send(Event::Reply(reply));
                            }
                        }
                        Err(e) => {
                            // Undecodable: tell everyone waiting, they cannot know if it was theirs.
                            for tx in p.waiting.values() {
                                let _ = tx.send(Event::Lost(format!("undecodable reply: {e}")));
                            }
                        }
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                fail_all(&shared, "replies were lost: the socket receive buffer overflowed (ENOBUFS)".into());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                shared.close(format!("netlink receive failed: {e}"));
                return;
            }
        }
    }
}

fn fail_all(shared: &Shared, why: String) {
    let p = shared.pending.lock().unwrap();
    for tx in p.waiting.values() {
        let _ = tx.send(Event::Lost(why.clone()));
    }
}

/// recv with MSG_TRUNC: returns the datagram's real length even when it did
/// not fit, so truncation is detected instead of silently parsing half.
fn recv_trunc(sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    use nix::sys::socket::{recv, MsgFlags};
    Ok(recv(sock.as_raw_fd(), buf, MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT)?)
}

/// Ask the generic netlink controller for the IPVS family id. `None` when the
/// family does not exist (ENOENT).
async fn resolve_family(fd: &AsyncFd<Socket>, timeout: Duration) -> Result<Option<u16>> {
    let mut genl = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(ipvs_sys::constants::IPVS_GENL_NAME.to_owned())],
    });
    genl.finalize();
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 0x7fff_0001;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(genl));
    msg.finalize();
    let mut out = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut out);
    loop {
        let mut g = fd.writable().await.map_err(io_err("netlink send"))?;
        if let Ok(r) = g.try_io(|s| s.get_ref().send(&out, 0)) {
            r.map_err(io_err("netlink send"))?;
            break;
        }
    }
    let mut buf = vec![0u8; RECV_BUF];
    let mut family = None;
    let fut = async {
        loop {
            let mut g = fd.readable().await.map_err(io_err("netlink receive"))?;
            let n = match g.try_io(|s| recv_trunc(s.get_ref(), &mut buf)) {
                Ok(r) => r.map_err(io_err("netlink receive"))?,
                Err(_) => continue,
            };
            for (ty, _seq, body) in NlMsgs(&buf[..n.min(buf.len())]) {
                if ty == NLMSG_ERROR && body.len() >= 4 {
                    let e = -i32::from_ne_bytes(body[..4].try_into().unwrap());
                    return match e {
                        0 => Ok(family),
                        libc::ENOENT => Ok(None),
                        libc::EPERM => Err(Error::PermissionDenied),
                        _ => Err(Error::Kernel { context: "resolving the IPVS netlink family".into(), errno: e }),
                    };
                }
                if ty == GENL_ID_CTRL && body.len() >= 4 {
                    for nla in netlink_packet_core::NlasIterator::new(&body[4..]) {
                        let nla = nla.map_err(|e| Error::Decode(e.to_string()))?;
                        if nla.kind() == CTRL_ATTR_FAMILY_ID {
                            family = Some(
                                ipvs_sys::bytes::u16_ne("family id", nla.value())
                                    .map_err(|e| Error::Decode(e.to_string()))?,
                            );
                        }
                    }
                }
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout(timeout, "resolving the IPVS netlink family".into())),
    }
}

/// Open the sockets of a connection inside the network namespace at `path`
/// (`/var/run/netns/NAME`, `/proc/PID/ns/net`) from a thread of their own that
/// ends right after, so that no thread of the caller (nor of the runtime's
/// blocking pool) ever changes namespace, and the runtime is not blocked
/// meanwhile. The sockets stay bound to that namespace.
pub(crate) async fn open_socket_in(path: &std::path::Path, pool: usize) -> Result<Sockets> {
    let path = path.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ipvs-netns".into())
        .spawn(move || {
            let r = std::fs::File::open(&path)
                .map_err(|e| Error::Io(format!("opening network namespace {}", path.display()), e))
                .and_then(|ns| {
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(|e| Error::Io(format!("entering network namespace {}", path.display()), e.into()))
                })
                .and_then(|()| open_socket(pool).map_err(io_err("netlink socket")));
            let _ = tx.send(r);
        })
        .map_err(|e| Error::Io("starting the network namespace thread".into(), e))?;
    rx.await.map_err(|_| Error::Io("network namespace thread".into(), io::Error::other("it ended without a result")))?
}

/// The messages of a received buffer as (type, seq, payload after the netlink
/// header); stops at the first malformed header.
struct NlMsgs<'a>(&'a [u8]);

impl<'a> Iterator for NlMsgs<'a> {
    type Item = (u16, u32, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        if b.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
        if len < 16 || len > b.len() {
            self.0 = &[];
            return None;
        }
        let ty = u16::from_ne_bytes(b[4..6].try_into().unwrap());
        let seq = u32::from_ne_bytes(b[8..12].try_into().unwrap());
        self.0 = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, seq, &b[16..len]))
    }
}

async fn dump_send(fd: &AsyncFd<Socket>, buf: &[u8]) -> io::Result<()> {
    loop {
        // A send to the kernel is handled inside the call; try it first.
        match fd.get_ref().send(buf, 0) {
            Ok(n) if n == buf.len() => return Ok(()),
            Ok(n) => return Err(io::Error::other(format!("short send: {n} of {} bytes", buf.len()))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => fd.writable().await?.clear_ready(),
            Err(e) => return Err(e),
        }
    }
}

impl DumpSock {
    fn new(sock: Socket, recv_len: usize) -> Result<Self> {
        sock.set_non_blocking(true).map_err(io_err("netlink socket"))?;
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        // SAFETY: `Socket` owns its fd, keeps it open until dropped and always
        // returns the same fd from `as_raw_fd`.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register(sock) }.map_err(|e| Error::Io("netlink socket".into(), e.into()))?;
        Ok(Self { fd, recv: vec![0; recv_len], send: Vec::with_capacity(256), unfinished: None })
    }
}

/// Receive one datagram of a dump into `d.recv`; waits at most `timeout`.
async fn dump_recv<W: Fn() -> String>(d: &mut DumpSock, timeout: Duration, what: &W) -> Result<usize> {
    loop {
        // Usually the kernel has the next datagram ready: try before waiting.
        match recv_trunc(d.fd.get_ref(), &mut d.recv) {
            Ok(n) if n > d.recv.len() => {
                return Err(Error::Io(
                    what(),
                    io::Error::other(format!("netlink message of {n} bytes was truncated to {}", d.recv.len())),
                ))
            }
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                return Err(Error::Io(what(), io::Error::other("dump replies were lost (ENOBUFS)")))
            }
            Err(e) => return Err(Error::Io(what(), e)),
        }
        let ready = tokio::time::timeout(timeout, d.fd.readable()).await;
        match ready {
            Err(_) => return Err(Error::Timeout(timeout, what())),
            Ok(Err(e)) => return Err(Error::Io(what(), e)),
            Ok(Ok(mut g)) => g.clear_ready(),
        }
    }
}

/// What a datagram of a dump said about it.
pub(crate) enum Datagram {
    /// More datagrams follow.
    More,
    /// The dump ended: 0, or the kernel's positive errno.
    End(i32),
    /// The kernel reported lost replies.
    Overrun,
}

/// Hand each IPVS message of dump `seq` in the datagram `buf` to `f(cmd,
/// attrs)`, up to the message that ends the dump; messages of other
/// sequence numbers or types are skipped.
pub(crate) fn dump_datagram(
    buf: &[u8],
    seq: u32,
    family_id: u16,
    mut f: impl FnMut(u8, &[u8]) -> Result<()>,
) -> Result<Datagram> {
    for (ty, mseq, payload) in NlMsgs(buf) {
        if mseq != seq {
            continue;
        }
        match ty {
            NLMSG_DONE | NLMSG_ERROR => {
                return Ok(Datagram::End(-payload.get(0..4).map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()))))
            }
            NLMSG_OVERRUN => return Ok(Datagram::Overrun),
            t if t == family_id && payload.len() >= ipvs_sys::frame::GENL_HDRLEN => {
                f(payload[0], &payload[ipvs_sys::frame::GENL_HDRLEN..])?;
            }
            _ => {}
        }
    }
    Ok(Datagram::More)
}

/// Read and drop the rest of dump `seq`.
async fn drain_dump<W: Fn() -> String>(d: &mut DumpSock, seq: u32, timeout: Duration, what: &W) -> Result<()> {
    loop {
        let n = dump_recv(d, timeout, what).await?;
        if NlMsgs(&d.recv[..n]).any(|(ty, s, _)| s == seq && (ty == NLMSG_DONE || ty == NLMSG_ERROR)) {
            return Ok(());
        }
    }
}

/// Run dumps of `msgs` on the blocking sockets `socks`, one in flight on
/// each, taking the index of the next one from `next` until it passes the
/// end (request `i` has sequence number `first_seq + i`); see
/// [`Conn::dest_dumps`]. The kernel builds a dump's first datagram inside the
/// sendmsg and the next one inside the recvmsg that reads it, so the reads
/// find their data ready and never wait unless the kernel is slow. The result
/// lists the requests the kernel refused, with its positive errno.
fn pipelined_dumps(
    socks: &[Socket],
    family_id: u16,
    first_seq: u32,
    msgs: &[IpvsMessage],
    next: &AtomicUsize,
    timeout: Duration,
    mut f: impl FnMut(usize, u8, &[u8]) -> Result<()>,
) -> Result<Vec<(usize, i32)>> {
    let what = || "listing real servers".to_owned();
    // A zero SO_RCVTIMEO would mean "wait for ever": wait at least 1 µs.
    let tv = nix::sys::time::TimeVal::from(libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros().max(u32::from(timeout.is_zero())) as _,
    });
    for sock in socks {
        nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(|e| Error::Io(what(), e.into()))?;
    }
    let mut send = Vec::with_capacity(256);
    let mut recv = vec![0u8; DEST_DUMP_RECV_LEN];
    let mut refused = Vec::new();
    // Send the next request on `sock`; the index sent, `None` when all are taken.
    let mut start = |sock: &Socket| -> Result<Option<usize>> {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= msgs.len() {
            return Ok(None);
        }
        send.clear();
        emit_request(&mut send, family_id, NLM_F_REQUEST | NLM_F_DUMP, first_seq.wrapping_add(i as u32), &msgs[i]);
        loop {
            match sock.send(&send, 0) {
                Ok(n) if n == send.len() => return Ok(Some(i)),
                Ok(n) => return Err(Error::Io(what(), io::Error::other(format!("short send: {n} of {}", send.len())))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(what(), e)),
            }
        }
    };
    // What each socket is dumping.
    let mut inflight: Vec<Option<usize>> = Vec::with_capacity(socks.len());
    for sock in socks {
        inflight.push(start(sock)?);
    }
    while inflight.iter().any(Option::is_some) {
        for (slot, sock) in inflight.iter_mut().zip(socks) {
            let Some(i) = *slot else { continue };
            let seq = first_seq.wrapping_add(i as u32);
            let end = 'dump: loop {
                // Blocking, at most SO_RCVTIMEO.
                let n = nix::sys::socket::recv(sock.as_raw_fd(), &mut recv, nix::sys::socket::MsgFlags::MSG_TRUNC);
                let n = match n {
                    Ok(n) => n,
                    Err(e) => {
                        let e = io::Error::from(e);
                        match e.kind() {
                            io::ErrorKind::Interrupted => continue,
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                                return Err(Error::Timeout(timeout, what()))
                            }
                            _ if e.raw_os_error() == Some(libc::ENOBUFS) => {
                                return Err(Error::Io(what(), io::Error::other("dump replies were lost (ENOBUFS)")))
                            }
                            _ => return Err(Error::Io(what(), e)),
                        }
                    }
                };
                if n > recv.len() {
                    return Err(Error::Io(
                        what(),
                        io::Error::other(format!("netlink message of {n} bytes was truncated to {}", recv.len())),
                    ));
                }
                match dump_datagram(&recv[..n], seq, family_id, |c, a| f(i, c, a))? {
                    Datagram::More => {}
                    Datagram::End(e) => break 'dump e,
                    Datagram::Overrun => return Err(Error::Io(what(), io::Error::other("netlink overrun"))),
                }
            };
            if end != 0 {
                refused.push((i, end));
            }
            *slot = start(sock)?;
        }
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    //! Without root and without IPVS: a connection to a generic netlink
    //! family id that does not exist. The kernel answers each request to it
    //! with ENOENT, inside the sendmsg that carries it.

    use super::*;
    use ipvs_sys::IpvsAttr;
    use netlink_packet_core::DefaultNla;

    /// A family id no kernel hands out (ids are allocated upwards from 0x10).
    const NO_FAMILY: u16 = 0xfff0;

    fn conn() -> Conn {
        let (fd, dump, dest_dump, pool) = Conn::prepare(open_socket(0).expect("a generic netlink socket")).unwrap();
        Conn::start(fd, dump, dest_dump, pool, NO_FAMILY)
    }

    /// Poll `f` once, without waiting for anything.
    fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::pin::Pin::new(f).poll(&mut cx)
    }

    fn info() -> IpvsMessage {
        IpvsMessage::new(IpvsCmd::GetInfo, vec![])
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_request_leaves_no_pending_entry() {
        let c = conn();
        let msg = info();
        let mut fut = Box::pin(c.request(&msg, "test", Duration::from_secs(3600)));
        // One poll: registered, waiting (the reader task cannot run meanwhile).
        assert!(poll_once(&mut fut).is_pending());
        assert_eq!(c.pending_len(), 1);
        drop(fut);
        assert_eq!(c.pending_len(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn after_the_reader_ended_requests_fail_at_once() {
        let c = conn();
        c.shared.close("the socket failed".into());
        // A request fails in its first poll, whatever its deadline.
        let msg = info();
        let r = poll_once(&mut Box::pin(c.request(&msg, "test", Duration::from_secs(3600))));
        assert!(
            matches!(&r, std::task::Poll::Ready(Err(Error::Io(_, e))) if e.to_string().contains("the socket failed")),
            "{r:?}"
        );
        let b = c.batch(3, |_| info(), "test", Duration::from_secs(3600)).await;
        assert!(b.interrupted.is_some());
        assert_eq!(b.results, vec![Answer::NotSent; 3]);
        assert_eq!(c.pending_len(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dump_whose_send_failed_does_not_hold_up_the_next() {
        let c = conn();
        {
            let d = c.dump.lock().await;
            // The smallest send buffer the kernel allows (a few KiB).
            nix::sys::socket::setsockopt(d.fd.get_ref(), nix::sys::socket::sockopt::SndBuf, &0).unwrap();
        }
        let big = IpvsMessage::new(IpvsCmd::GetService, vec![IpvsAttr::Other(DefaultNla::new(99, vec![0; 60_000]))]);
        let r = c.dump(&big, "test", Duration::from_secs(3600)).await;
        assert!(matches!(r, Err(Error::Io(..))), "{r:?}");
        assert_eq!(c.dump.lock().await.unfinished, None);
        // The next dump is answered (ENOENT: no such family) at once: the
        // kernel queued the answer inside the sendmsg, nothing is waited for.
        let r = c.dump(&IpvsMessage::new(IpvsCmd::GetService, vec![]), "test", Duration::ZERO).await;
        assert!(matches!(r, Ok(Err(libc::ENOENT))), "{r:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_cut_short_keeps_the_results_of_its_earlier_chunks() {
        let c = conn();
        let n = BATCH_MAX_MSGS + 10;
        // More than any socket send buffer (at most 8 MiB here): its send
        // fails with EMSGSIZE. It fills the second chunk alone.
        let nlas = (0..150).map(|_| IpvsAttr::Other(DefaultNla::new(99, vec![0; 60_000]))).collect();
        let huge = IpvsMessage::new(IpvsCmd::GetInfo, nlas);
        let b = c
            .batch(n, |i| if i == BATCH_MAX_MSGS { huge.clone() } else { info() }, "test", Duration::from_secs(3600))
            .await;
        assert!(matches!(b.interrupted, Some(Error::Io(..))), "{:?}", b.interrupted);
        assert_eq!(b.results.len(), n);
        // The first chunk was answered, request by request (no such family).
        assert_eq!(b.results[..BATCH_MAX_MSGS], vec![Answer::Err(libc::ENOENT); BATCH_MAX_MSGS]);
        // The second was refused by sendmsg: not handled; the third not sent.
        assert_eq!(b.results[BATCH_MAX_MSGS..], vec![Answer::NotSent; 10]);
        assert_eq!(c.pending_len(), 0);
    }
}
