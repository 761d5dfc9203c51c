//! The netlink connection: one socket, one reader task, replies matched to
//! requests by sequence number, a deadline on every wait.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipvs_sys::{emit_request, parse_replies, IpvsMessage, Reply, ReplyKind};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_sys::{protocols::NETLINK_GENERIC, Socket};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Receive buffer: the kernel fills dump messages up to 32 KiB.
const RECV_BUF: usize = 64 * 1024;
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

/// What the reader task hands to a waiting request.
#[derive(Debug)]
enum Event {
    Reply(Reply),
    /// The socket failed or lost messages: the reply may never come.
    Lost(String),
}

struct Shared {
    fd: AsyncFd<Socket>,
    pending: Mutex<HashMap<u32, mpsc::UnboundedSender<Event>>>,
}

/// A netlink connection to the IPVS family in one network namespace.
pub(crate) struct Conn {
    shared: Arc<Shared>,
    family_id: u16,
    seq: AtomicU32,
    dump_lock: tokio::sync::Mutex<()>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Open a generic netlink socket in the calling thread's network namespace.
pub(crate) fn open_socket() -> io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_GENERIC)?;
    sock.bind_auto()?;
    Ok(sock)
}

fn set_buf(fd: i32, force: i32, plain: i32, size: usize) {
    let v = size as libc::c_int;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: setsockopt with a valid fd and a pointer to a c_int of `len` bytes.
    #[allow(unsafe_code)]
    unsafe {
        if libc::setsockopt(fd, libc::SOL_SOCKET, force, &v as *const _ as *const libc::c_void, len) != 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, plain, &v as *const _ as *const libc::c_void, len);
        }
    }
}

fn io_err(what: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::Io(what.to_owned(), e)
}

impl Conn {
    /// Set up a socket (already bound, in its namespace): resolve the family,
    /// start the reader task.
    pub(crate) async fn new(sock: Socket, timeout: Duration) -> Result<Self> {
        sock.set_non_blocking(true).map_err(io_err("netlink socket"))?;
        // Errors carry only the header of the failed request, not all of it.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        set_buf(sock.as_raw_fd(), libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, SO_RCVBUF_SIZE);
        set_buf(sock.as_raw_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, SO_SNDBUF_SIZE);
        // SAFETY: `Socket` owns its fd, keeps it open until dropped and always
        // returns the same fd from `as_raw_fd`.
        #[allow(unsafe_code)]
        let fd = unsafe { AsyncFd::register(sock) }.map_err(|e| Error::Io("netlink socket".into(), e.into()))?;
        let family_id = match resolve_family(&fd, timeout).await? {
            Some(id) => id,
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
        let shared = Arc::new(Shared { fd, pending: Mutex::new(HashMap::new()) });
        let reader = tokio::spawn(read_loop(Arc::clone(&shared), family_id));
        Ok(Self { shared, family_id, seq: AtomicU32::new(1), dump_lock: tokio::sync::Mutex::new(()), reader })
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

    fn register(&self, seqs: impl Iterator<Item = u32>) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut p = self.shared.pending.lock().unwrap();
        for s in seqs {
            p.insert(s, tx.clone());
        }
        rx
    }

    fn unregister(&self, seqs: impl Iterator<Item = u32>) {
        let mut p = self.shared.pending.lock().unwrap();
        for s in seqs {
            p.remove(&s);
        }
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
        let mut rx = self.register(std::iter::once(seq));
        let out = async {
            self.send(&buf).await?;
            let mut msgs = Vec::new();
            loop {
                let r = self.recv_event(&mut rx, what, timeout).await?;
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
        .await;
        self.unregister(std::iter::once(seq));
        out
    }

    /// Run a dump; only one runs at a time on a socket (the kernel answers a
    /// second with EBUSY), so dumps queue here.
    pub(crate) async fn dump(
        &self,
        msg: &IpvsMessage,
        what: &str,
        timeout: Duration,
    ) -> Result<std::result::Result<Vec<IpvsMessage>, i32>> {
        let _g = self.dump_lock.lock().await;
        let seq = self.next_seqs(1);
        let mut buf = Vec::with_capacity(256);
        emit_request(&mut buf, self.family_id, NLM_F_REQUEST | NLM_F_DUMP, seq, msg);
        let mut rx = self.register(std::iter::once(seq));
        let out = async {
            self.send(&buf).await?;
            let mut msgs = Vec::new();
            loop {
                let r = self.recv_event(&mut rx, what, timeout).await?;
                match r.kind {
                    ReplyKind::Message(m) => msgs.push(m),
                    ReplyKind::Done(0) | ReplyKind::Ack => return Ok(Ok(msgs)),
                    ReplyKind::Done(e) | ReplyKind::Error(e) => return Ok(Err(-e)),
                    ReplyKind::Overrun => return Err(Error::Io(what.into(), io::Error::other("netlink overrun"))),
                    ReplyKind::Ignored => {}
                }
            }
        }
        .await;
        self.unregister(std::iter::once(seq));
        out
    }

    /// Send many requests, [`BATCH_MAX_MSGS`] per sendmsg, with `NLM_F_ACK`
    /// only on the last of each sendmsg. The kernel handles them in order and
    /// reports every failure, so the result has one entry per request: `Ok` or
    /// the positive errno.
    pub(crate) async fn batch(
        &self,
        msgs: &[IpvsMessage],
        what: &str,
        timeout: Duration,
    ) -> Result<Vec<std::result::Result<(), i32>>> {
        let mut results = Vec::with_capacity(msgs.len());
        let mut buf = Vec::with_capacity(BATCH_MAX_BYTES + 4096);
        let mut i = 0;
        while i < msgs.len() {
            // Lay out one chunk.
            buf.clear();
            let start = i;
            let first_seq = self.next_seqs(BATCH_MAX_MSGS as u32);
            while i < msgs.len() && i - start < BATCH_MAX_MSGS && buf.len() < BATCH_MAX_BYTES {
                let seq = first_seq + (i - start) as u32;
                emit_request(&mut buf, self.family_id, NLM_F_REQUEST, seq, &msgs[i]);
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
            let seqs = first_seq..first_seq + n as u32;
            let last_seq = first_seq + n as u32 - 1;
            let mut rx = self.register(seqs.clone());
            let mut chunk: Vec<std::result::Result<(), i32>> = vec![Ok(()); n];
            let out: Result<()> = async {
                self.send(&buf).await?;
                loop {
                    let r = self.recv_event(&mut rx, what, timeout).await?;
                    let idx = (r.seq - first_seq) as usize;
                    match r.kind {
                        ReplyKind::Error(e) => {
                            chunk[idx] = Err(-e);
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
            self.unregister(seqs);
            out?;
            results.extend(chunk);
        }
        Ok(results)
    }
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
                            if let Some(tx) = p.get(&reply.seq) {
                                let _ = tx.send(Event::Reply(reply));
                            }
                        }
                        Err(e) => {
                            // Undecodable: tell everyone waiting, they cannot know if it was theirs.
                            for tx in p.values() {
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
                fail_all(&shared, format!("netlink receive failed: {e}"));
                return;
            }
        }
    }
}

fn fail_all(shared: &Shared, why: String) {
    let p = shared.pending.lock().unwrap();
    for tx in p.values() {
        let _ = tx.send(Event::Lost(why.clone()));
    }
}

/// recv with MSG_TRUNC: returns the datagram's real length even when it did
/// not fit, so truncation is detected instead of silently parsing half.
fn recv_trunc(sock: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    #[allow(unsafe_code)]
    let n = unsafe {
        libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC | libc::MSG_DONTWAIT)
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
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
            let mut off = 0;
            while off + 16 <= n.min(buf.len()) {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                if len < 16 || off + len > n {
                    break;
                }
                let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
                let body = &buf[off + 16..off + len];
                if ty == netlink_packet_core::NLMSG_ERROR && body.len() >= 4 {
                    let e = i32::from_ne_bytes(body[..4].try_into().unwrap());
                    if e == 0 {
                        return Ok(family);
                    }
                    if -e == libc::ENOENT {
                        return Ok(None);
                    }
                    if -e == libc::EPERM {
                        return Err(Error::PermissionDenied);
                    }
                    return Err(Error::Kernel { context: "resolving the IPVS netlink family".into(), errno: -e });
                }
                if ty == GENL_ID_CTRL && body.len() >= 4 {
                    for nla in netlink_packet_core::NlasIterator::new(&body[4..]) {
                        let nla = nla.map_err(|e| Error::Decode(e.to_string()))?;
                        if nla.kind() == CTRL_ATTR_FAMILY_ID && nla.value().len() >= 2 {
                            family = Some(u16::from_ne_bytes(nla.value()[..2].try_into().unwrap()));
                        }
                    }
                }
                off += (len + 3) & !3;
            }
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout(timeout, "resolving the IPVS netlink family".into())),
    }
}

/// Open a socket inside the network namespace at `path` (`/var/run/netns/NAME`,
/// `/proc/PID/ns/net`) from a short-lived thread, so the caller's threads never
/// change namespace. The socket stays bound to that namespace.
pub(crate) fn open_socket_in(path: &std::path::Path) -> Result<Socket> {
    let ns =
        std::fs::File::open(path).map_err(|e| Error::Io(format!("opening network namespace {}", path.display()), e))?;
    let path_s = path.display().to_string();
    std::thread::spawn(move || -> Result<Socket> {
        // SAFETY: setns on a valid fd; only this thread changes namespace and it ends right after.
        #[allow(unsafe_code)]
        let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            return Err(Error::Io(format!("entering network namespace {path_s}"), io::Error::last_os_error()));
        }
        open_socket().map_err(io_err("netlink socket"))
    })
    .join()
    .map_err(|_| Error::Io("netns thread".into(), io::Error::other("panicked")))?
}
