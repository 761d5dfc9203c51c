//! IPVS requests over a raw generic netlink socket, written with `ipvs_sys`
//! alone: for putting into the table what the library refuses to build (a
//! service of a protocol IPVS does not balance, a destination with a
//! forwarding method it does not know), as another tool could.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use ipvs_sys::{emit_request, IpvsMessage};

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;

/// A generic netlink socket in the calling thread's network namespace.
pub struct RawIpvs {
    fd: OwnedFd,
    family: u16,
    seq: u32,
}

fn check(rc: libc::ssize_t) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

impl RawIpvs {
    /// Open the socket and look up the IPVS family.
    pub fn open() -> Self {
        // SAFETY: socket() has no memory preconditions; the fd is owned below.
        #[allow(unsafe_code)]
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_GENERIC) };
        assert!(raw >= 0, "netlink socket: {}", io::Error::last_os_error());
        // SAFETY: `raw` is a new fd that nothing else owns.
        #[allow(unsafe_code)]
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut s = Self { fd, family: 0, seq: 1 };
        let mut req = vec![0u8; 16];
        req.extend_from_slice(&[CTRL_CMD_GETFAMILY, 1, 0, 0]);
        req.extend_from_slice(&9u16.to_ne_bytes());
        req.extend_from_slice(&CTRL_ATTR_FAMILY_NAME.to_ne_bytes());
        req.extend_from_slice(b"IPVS\0\0\0\0");
        let len = req.len() as u32;
        req[0..4].copy_from_slice(&len.to_ne_bytes());
        req[4..6].copy_from_slice(&GENL_ID_CTRL.to_ne_bytes());
        req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        s.send(&req);
        let reply = s.recv();
        // nlmsghdr, genlmsghdr, then the attributes.
        let ty = u16::from_ne_bytes([reply[4], reply[5]]);
        assert_eq!(ty, GENL_ID_CTRL, "the IPVS family lookup failed: {reply:?}");
        let mut off = 20;
        while off + 4 <= reply.len() {
            let alen = u16::from_ne_bytes([reply[off], reply[off + 1]]) as usize;
            let kind = u16::from_ne_bytes([reply[off + 2], reply[off + 3]]);
            if kind == CTRL_ATTR_FAMILY_ID {
                s.family = u16::from_ne_bytes([reply[off + 4], reply[off + 5]]);
            }
            if alen < 4 {
                break;
            }
            off += (alen + 3) & !3;
        }
        assert_ne!(s.family, 0, "no IPVS family id in the reply");
        s
    }

    fn send(&self, buf: &[u8]) {
        // SAFETY: `buf` is valid for reads of its length.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        let n = check(rc).unwrap_or_else(|e| panic!("netlink send: {e}"));
        assert_eq!(n, buf.len());
    }

    fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 65536];
        // SAFETY: `buf` is valid for writes of its length.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = check(rc).unwrap_or_else(|e| panic!("netlink receive: {e}"));
        buf.truncate(n);
        buf
    }

    /// Send `msg` with `NLM_F_ACK`: `Ok` or the kernel's positive errno.
    pub fn request(&mut self, msg: &IpvsMessage) -> Result<(), i32> {
        self.seq += 1;
        let mut buf = Vec::new();
        emit_request(&mut buf, self.family, NLM_F_REQUEST | NLM_F_ACK, self.seq, msg);
        self.send(&buf);
        let reply = self.recv();
        let ty = u16::from_ne_bytes([reply[4], reply[5]]);
        assert_eq!(ty, NLMSG_ERROR, "expected an ACK, got {reply:?}");
        match i32::from_ne_bytes(reply[16..20].try_into().unwrap()) {
            0 => Ok(()),
            e => Err(-e),
        }
    }
}
