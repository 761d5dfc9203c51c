//! Counting generic netlink requests on an `nlmon` device: every request any
//! process of one network namespace sends while a capture runs (`lvs-bench
//! nlcount` and the daemon benchmark's reload count).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::Res;

/// Counts of the generic netlink requests seen.
#[derive(Default, Debug)]
pub struct NlCounts {
    pub packets: u64,
    pub ctrl: u64,
    pub dumps: u64,
    pub reads: u64,
    pub changes: u64,
    /// Change requests by IPVS command number.
    pub by_cmd: BTreeMap<u8, u64>,
}

const NETLINK_GENERIC: u16 = 16;
const GENL_ID_CTRL: u16 = 0x10;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;

impl NlCounts {
    /// Count the requests in one captured packet (one netlink sendmsg or reply).
    pub fn packet(&mut self, b: &[u8]) {
        self.packets += 1;
        let mut b = b;
        while b.len() >= 20 {
            let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
            if len < 16 || len > b.len() {
                break;
            }
            let ty = u16::from_ne_bytes([b[4], b[5]]);
            let flags = u16::from_ne_bytes([b[6], b[7]]);
            let cmd = b[16];
            if flags & NLM_F_REQUEST != 0 && ty >= GENL_ID_CTRL {
                if ty == GENL_ID_CTRL {
                    self.ctrl += 1;
                } else if flags & NLM_F_DUMP != 0 {
                    self.dumps += 1;
                } else if matches!(cmd, 4 | 8 | 11 | 13 | 15) {
                    // GET_SERVICE, GET_DEST, GET_DAEMON, GET_CONFIG, GET_INFO
                    self.reads += 1;
                } else {
                    self.changes += 1;
                    *self.by_cmd.entry(cmd).or_default() += 1;
                }
            }
            b = &b[((len + 3) & !3).min(b.len())..];
        }
    }

    /// One line: `N dumps, N reads, N changes (cmd C: N, ...), N to the genl controller`.
    pub fn describe(&self) -> String {
        let by_cmd: Vec<String> = self.by_cmd.iter().map(|(k, v)| format!("cmd {k}: {v}")).collect();
        format!(
            "{} dumps, {} reads, {} changes{}, {} to the genl controller",
            self.dumps,
            self.reads,
            self.changes,
            if by_cmd.is_empty() { String::new() } else { format!(" ({})", by_cmd.join(", ")) },
            self.ctrl
        )
    }
}

/// A running capture on an nlmon device of the calling thread's namespace.
pub struct Capture {
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<(NlCounts, u32)>>,
}

impl Capture {
    /// Open a packet socket on `dev` (in the calling thread's network
    /// namespace; the socket stays there) and count on a thread of its own.
    pub fn start(dev: &str) -> Res<Self> {
        let fd = open(dev)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let reader = std::thread::spawn(move || read(fd, &stop2));
        Ok(Self { stop, reader: Some(reader) })
    }

    /// Stop at the next receive timeout (packets already queued are read)
    /// and give the counts; an error if the capture dropped packets.
    pub fn finish(mut self) -> Res<NlCounts> {
        self.stop.store(true, Ordering::SeqCst);
        let (c, drops) = self.reader.take().unwrap().join().map_err(|_| "capture thread panicked")?;
        if drops > 0 {
            return Err(format!("the capture dropped {drops} packets: counts are incomplete"));
        }
        Ok(c)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn setsockopt<T>(fd: i32, level: i32, name: i32, v: &T) {
    // SAFETY: `v` points to a live T of the size passed.
    unsafe {
        libc::setsockopt(fd, level, name, (v as *const T).cast(), std::mem::size_of::<T>() as u32);
    }
}

/// A raw packet socket bound to `dev`, 64 MiB of receive buffer, a 300 ms
/// receive timeout (so that the reader sees `stop`).
fn open(dev: &str) -> Res<i32> {
    let name = std::ffi::CString::new(dev).map_err(|_| "bad device name")?;
    // SAFETY: plain libc calls with valid arguments; the fd is owned by the reader.
    let fd = unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        if ifindex == 0 {
            return Err(format!("no device {dev:?}: {}", std::io::Error::last_os_error()));
        }
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from((libc::ETH_P_ALL as u16).to_be()));
        if fd < 0 {
            return Err(format!("packet socket: {}", std::io::Error::last_os_error()));
        }
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        if libc::bind(fd, (&sll as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32)
            != 0
        {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(format!("bind to {dev:?}: {e}"));
        }
        fd
    };
    let big: libc::c_int = 64 << 20;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &big);
    let tv = libc::timeval { tv_sec: 0, tv_usec: 300_000 };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv);
    Ok(fd)
}

/// Count until `stop` (then close the socket); the counts and the packets
/// the kernel dropped.
fn read(fd: i32, stop: &AtomicBool) -> (NlCounts, u32) {
    let mut counts = NlCounts::default();
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut flen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: valid buffer and address out-pointers.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut flen,
            )
        };
        if n < 0 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            continue;
        }
        if u16::from_be(from.sll_protocol) == NETLINK_GENERIC {
            counts.packet(&buf[..n as usize]);
        }
    }
    let mut st = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: getsockopt into a tpacket_stats of `len` bytes; then close our fd.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        );
        libc::close(fd);
    }
    (counts, st.tp_drops)
}
