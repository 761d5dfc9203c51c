//! `udp` health checks: send one datagram to the real server and wait for a
//! reply (within the check's timeout), which may have to contain a string.
//! No reply, or an ICMP "port unreachable" (seen on a connected socket as
//! "connection refused"), is down.

use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

use super::{out_of_resources, CheckConfig, Fail};

/// At most this much of a reply is looked at.
const MAX_REPLY: usize = 64 * 1024;

/// A `udp` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpCheck {
    /// The port to send to.
    pub port: u16,
    /// The datagram sent.
    pub payload: Vec<u8>,
    /// Bytes the reply must contain.
    pub expect: Option<Vec<u8>>,
}

impl CheckConfig {
    /// The `udp` check: `payload` (text) or `payload_hex`, and `expect`.
    pub(super) fn udp(&self, port: u16, what: &str) -> Result<UdpCheck, String> {
        let payload = match (&self.payload, &self.payload_hex) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(hex)) => parse_hex(hex).map_err(|e| format!("{what}: udp check payload_hex: {e}"))?,
            (Some(_), Some(_)) => return Err(format!("{what}: a udp check takes `payload` or `payload_hex`, not both")),
            (None, None) => {
                return Err(format!("{what}: a udp check needs the datagram to send: `payload` (text) or `payload_hex`"))
            }
        };
        let port = self.check_port(port, what)?;
        Ok(UdpCheck { port, payload, expect: self.expect.as_ref().map(|e| e.as_bytes().to_vec()) })
    }
}

/// Hex digits (either case, spaces allowed between bytes) to bytes.
fn parse_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digits: String = hex.split_whitespace().collect();
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(digits.as_bytes())
        .map_err(|e| format!("{hex:?} is not hex bytes like \"0a1b2c\": {e}"))
}

/// A UDP socket connected to `addr` (so only its replies are received, and
/// an ICMP error for it is reported); the host lacking one is [`Fail::NotRun`].
pub(super) async fn connected(addr: SocketAddr, kind: &str) -> Result<UdpSocket, Fail> {
    let any: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let s = UdpSocket::bind(any).await.map_err(|e| {
        let msg = format!("{kind} check of {addr} not run: cannot open a socket: {e}");
        if out_of_resources(&e) {
            Fail::NotRun(msg)
        } else {
            Fail::Failed(msg)
        }
    })?;
    s.connect(addr).await.map_err(|e| Fail::Failed(format!("{kind} check of {addr}: {e}")))?;
    Ok(s)
}

/// Wait for the next datagram on `s` (connected to `addr`).
pub(super) async fn receive(s: &UdpSocket, addr: SocketAddr, kind: &str) -> Result<Vec<u8>, Fail> {
    let mut buf = vec![0u8; MAX_REPLY];
    let n = s.recv(&mut buf).await.map_err(|e| Fail::Failed(format!("{kind} reply from {addr}: {e}")))?;
    buf.truncate(n);
    Ok(buf)
}

impl UdpCheck {
    /// Send the payload, judge the first reply (the caller bounds the time).
    pub(super) async fn run(&self, ip: IpAddr) -> Result<(), Fail> {
        let addr = SocketAddr::new(ip, self.port);
        let s = connected(addr, "udp").await?;
        s.send(&self.payload).await.map_err(|e| Fail::Failed(format!("udp send to {addr}: {e}")))?;
        let reply = receive(&s, addr, "udp").await?;
        self.judge(&reply, addr).map_err(Fail::Failed)
    }

    /// Whether a reply passes.
    fn judge(&self, reply: &[u8], addr: SocketAddr) -> Result<(), String> {
        match &self.expect {
            Some(want) if !want.is_empty() && !reply.windows(want.len()).any(|w| w == want.as_slice()) => {
                let shown: String = String::from_utf8_lossy(reply).chars().take(60).collect();
                let want = String::from_utf8_lossy(want);
                Err(format!("udp reply from {addr} does not contain {want:?}: {shown:?}"))
            }
            _ => Ok(()),
        }
    }
}
