//! Is a VIP also held by another host on the segment? An ARP probe (as
//! `arping -D` sends: sender address 0.0.0.0, so nobody's cache learns
//! anything from it) for the VIP from the director's interface, and the
//! MAC addresses of every host that answers within a short wait.
//!
//! Needs `CAP_NET_RAW` (a packet socket). The socket belongs to the calling
//! thread's network namespace.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// `sll_pkttype` of a frame this host sent (linux/if_packet.h).
const PACKET_OUTGOING: u8 = 4;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// The ARP probe for `vip` from hardware address `mac`.
pub(crate) fn request(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&ARP_REQUEST.to_be_bytes());
    p[8..14].copy_from_slice(&mac);
    // Sender IP 0.0.0.0, target MAC 0: a probe.
    p[24..28].copy_from_slice(&vip.octets());
    p
}

/// The sender's MAC when `p` is an ARP reply from `vip`.
pub(crate) fn reply_from(p: &[u8], vip: Ipv4Addr) -> Option<[u8; 6]> {
    if p.len() < 28 || p[0..2] != [0, 1] || p[2..4] != [8, 0] || p[4] != 6 || p[5] != 4 {
        return None;
    }
    if u16::from_be_bytes([p[6], p[7]]) != ARP_REPLY || p[14..18] != vip.octets() {
        return None;
    }
    let mut m = [0u8; 6];
    m.copy_from_slice(&p[8..14]);
    Some(m)
}

/// `aa:bb:cc:dd:ee:ff`.
pub(crate) fn mac_text(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Send the probe out of interface `ifindex` (hardware address `mac`) and
/// collect the MACs (other than `mac`) that answer within `wait`.
pub(crate) fn probe(ifindex: u32, mac: [u8; 6], vip: Ipv4Addr, wait: Duration) -> std::io::Result<Vec<[u8; 6]>> {
    let (sock, sll) = open(ifindex)?;
    send(&sock, &sll, mac, vip)?;
    collect(&sock, mac, vip, wait)
}

/// The size of a `sockaddr_ll`, as the socket calls take it.
fn sll_len() -> libc::socklen_t {
    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t
}

/// A packet socket for ARP bound to interface `ifindex`, and the address it
/// is bound to.
fn open(ifindex: u32) -> std::io::Result<(OwnedFd, libc::sockaddr_ll)> {
    let proto = (libc::ETH_P_ARP as u16).to_be();
    // SAFETY: plain socket(2); the fd is owned right away.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, i32::from(proto)) };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    #[allow(unsafe_code)]
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    #[allow(unsafe_code)]
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = ifindex as i32;
    // Bound to the interface: only its ARP frames arrive.
    // SAFETY: bind with a valid sockaddr_ll of `sll_len()` bytes.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::bind(sock.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), sll_len()) };
    if rc != 0 {
        return Err(last_err());
    }
    Ok((sock, sll))
}

/// Broadcast the probe for `vip` from `mac` on the interface of `sll`.
fn send(sock: &OwnedFd, sll: &libc::sockaddr_ll, mac: [u8; 6], vip: Ipv4Addr) -> std::io::Result<()> {
    let mut to = *sll;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let req = request(mac, vip);
    // SAFETY: sendto with a buffer of req.len() bytes and a valid sockaddr_ll.
    #[allow(unsafe_code)]
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            sll_len(),
        )
    };
    if n < 0 {
        return Err(last_err());
    }
    Ok(())
}

/// The MACs (other than `mac`) of the replies for `vip` that arrive within
/// `wait`, each once, in the order they came.
fn collect(sock: &OwnedFd, mac: [u8; 6], vip: Ipv4Addr, wait: Duration) -> std::io::Result<Vec<[u8; 6]>> {
    let deadline = Instant::now() + wait;
    let mut out: Vec<[u8; 6]> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match readable(sock, left) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let mut buf = [0u8; 128];
        let (n, pkttype) = match recv(sock, &mut buf) {
            Ok(got) => got,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock) => continue,
            Err(e) => return Err(e),
        };
        if pkttype == PACKET_OUTGOING {
            continue;
        }
        if let Some(m) = reply_from(&buf[..n], vip) {
            if m != mac && !out.contains(&m) {
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// Wait up to `left` for a frame: `false` when none came.
fn readable(sock: &OwnedFd, left: Duration) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one valid pollfd.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().clamp(1, i32::MAX as u128) as i32) };
    if rc < 0 {
        return Err(last_err());
    }
    Ok(rc != 0)
}

/// Read one frame into `buf` without waiting: its length and its
/// `sll_pkttype` (whether this host sent it).
fn recv(sock: &OwnedFd, buf: &mut [u8]) -> std::io::Result<(usize, u8)> {
    // SAFETY: as above; `from` is written by the kernel up to `flen` bytes.
    #[allow(unsafe_code)]
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut flen = sll_len();
    // SAFETY: recvfrom into a buffer of buf.len() bytes and a sockaddr_ll of `flen` bytes.
    #[allow(unsafe_code)]
    let n = unsafe {
        libc::recvfrom(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&mut from as *mut libc::sockaddr_ll).cast(),
            &mut flen,
        )
    };
    if n < 0 {
        return Err(last_err());
    }
    Ok((n as usize, from.sll_pkttype))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_and_reply_frames() {
        let mac = [2, 0, 0, 0, 0, 1];
        let vip: Ipv4Addr = "10.19.70.166".parse().unwrap();
        let req = request(mac, vip);
        assert_eq!(&req[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&req[14..18], &[0, 0, 0, 0], "a probe: sender IP 0.0.0.0");
        assert_eq!(&req[24..28], &[10, 19, 70, 166]);
        // A request is not a reply.
        assert_eq!(reply_from(&req, vip), None);
        let mut rep = req;
        rep[7] = 2;
        rep[8..14].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        rep[14..18].copy_from_slice(&vip.octets());
        assert_eq!(reply_from(&rep, vip), Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(reply_from(&rep, "10.19.70.167".parse().unwrap()), None);
        assert_eq!(reply_from(&rep[..20], vip), None);
        assert_eq!(mac_text(&[2, 0, 0, 0, 0xab, 9]), "02:00:00:00:ab:09");
    }
}
