//! Netlink framing: write whole request messages into a buffer, and split a
//! received buffer into replies. No I/O.

use netlink_packet_core::{DecodeError, Emitable, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN};
use netlink_packet_generic::GenlHeader;

use crate::constants::IPVS_GENL_VERSION;
use crate::message::{IpvsCmd, IpvsMessage};

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Size of `struct genlmsghdr`.
pub const GENL_HDRLEN: usize = 4;

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Append one complete netlink request (`nlmsghdr`, `genlmsghdr`, attributes)
/// to `buf`. Returns the number of bytes appended.
///
/// `flags` are the `NLM_F_*` flags; `NLM_F_REQUEST` is not added for you.
///
/// ```
/// use ipvs_sys::{emit_request, IpvsCmd, IpvsMessage};
/// let mut buf = Vec::new();
/// // ipvsadm -C: FLUSH, with NLM_F_REQUEST | NLM_F_ACK.
/// let n = emit_request(&mut buf, 0x20, 0x0001 | 0x0004, 1, &IpvsMessage::new(IpvsCmd::Flush, vec![]));
/// assert_eq!(n, 20);
/// assert_eq!(buf[16], 17); // IPVS_CMD_FLUSH
/// ```
pub fn emit_request(buf: &mut Vec<u8>, family_id: u16, flags: u16, seq: u32, msg: &IpvsMessage) -> usize {
    let attrs_len = msg.buffer_len();
    let len = NLMSG_HDRLEN + GENL_HDRLEN + attrs_len;
    let start = buf.len();
    buf.resize(start + align4(len), 0);
    let out = &mut buf[start..];
    out[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    out[4..6].copy_from_slice(&family_id.to_ne_bytes());
    out[6..8].copy_from_slice(&flags.to_ne_bytes());
    out[8..12].copy_from_slice(&seq.to_ne_bytes());
    out[12..16].copy_from_slice(&0u32.to_ne_bytes());
    out[16] = u8::from(msg.cmd);
    out[17] = IPVS_GENL_VERSION;
    out[18..20].copy_from_slice(&0u16.to_ne_bytes());
    msg.emit(&mut out[NLMSG_HDRLEN + GENL_HDRLEN..len]);
    align4(len)
}

/// What one received netlink message says.
///
/// ```
/// use ipvs_sys::{parse_replies, ReplyKind};
/// // An ACK: NLMSG_ERROR with error 0, for the request with sequence number 9.
/// let mut ack = vec![0u8; 36];
/// ack[0..4].copy_from_slice(&36u32.to_ne_bytes());
/// ack[4..6].copy_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
/// ack[8..12].copy_from_slice(&9u32.to_ne_bytes());
/// let r = parse_replies(&ack, 0x20).next().unwrap().unwrap();
/// assert_eq!((r.seq, r.kind), (9, ReplyKind::Ack));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyKind {
    /// An IPVS message (a `do` reply or one entry of a dump).
    Message(IpvsMessage),
    /// End of a dump. A non-zero value is the negative errno the dump ended with.
    Done(i32),
    /// `NLMSG_ERROR` with error 0: the request succeeded.
    Ack,
    /// `NLMSG_ERROR` with a negative errno: the request failed.
    Error(i32),
    /// A message of another type (`NLMSG_NOOP`, another family); ignore it.
    Ignored,
    /// `NLMSG_OVERRUN`: data was lost.
    Overrun,
}

/// One received netlink message with the header fields a caller needs to
/// attribute it to a request.
///
/// ```
/// use ipvs_sys::{parse_replies, ReplyKind};
/// // NLMSG_DONE ending a dump, with NLM_F_MULTI.
/// let mut done = vec![0u8; 20];
/// done[0..4].copy_from_slice(&20u32.to_ne_bytes());
/// done[4..6].copy_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
/// done[6..8].copy_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
/// let r = parse_replies(&done, 0x20).next().unwrap().unwrap();
/// assert_eq!((r.flags, r.kind), (2, ReplyKind::Done(0)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Sequence number of the request this answers.
    pub seq: u32,
    /// `NLM_F_*` flags of the reply (`NLM_F_MULTI` for dump parts).
    pub flags: u16,
    /// What it says.
    pub kind: ReplyKind,
}

/// Iterator over the netlink messages in a received buffer.
///
/// ```
/// use ipvs_sys::parse_replies;
/// // Truncated input is an error, never a panic.
/// let mut it = parse_replies(&[0x40, 0, 0, 0, 0x20, 0], 0x20);
/// assert!(it.next().unwrap().is_err());
/// assert!(it.next().is_none());
/// ```
pub struct Replies<'a> {
    buf: &'a [u8],
    family_id: u16,
}

/// Split a buffer received from the socket into replies. Messages of type
/// `family_id` are parsed as IPVS messages.
///
/// ```
/// use ipvs_sys::{emit_request, parse_replies, IpvsCmd, IpvsMessage, ReplyKind};
/// // Two messages in one buffer, as one recv may return them.
/// let mut buf = Vec::new();
/// emit_request(&mut buf, 0x20, 0, 1, &IpvsMessage::new(IpvsCmd::Zero, vec![]));
/// emit_request(&mut buf, 0x20, 0, 2, &IpvsMessage::new(IpvsCmd::Flush, vec![]));
/// let seqs: Vec<u32> = parse_replies(&buf, 0x20).map(|r| r.unwrap().seq).collect();
/// assert_eq!(seqs, [1, 2]);
/// // Messages of another family are not parsed as IPVS.
/// assert_eq!(parse_replies(&buf, 0x21).next().unwrap().unwrap().kind, ReplyKind::Ignored);
/// ```
pub fn parse_replies(buf: &[u8], family_id: u16) -> Replies<'_> {
    Replies { buf, family_id }
}

impl Iterator for Replies<'_> {
    type Item = Result<Reply, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < NLMSG_HDRLEN {
            if !self.buf.is_empty() {
                let n = self.buf.len();
                self.buf = &[];
                return Some(Err(DecodeError::from(format!("{n} trailing bytes after the last netlink message"))));
            }
            return None;
        }
        let len = u32::from_ne_bytes(self.buf[0..4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || len > self.buf.len() {
            let have = self.buf.len();
            self.buf = &[];
            return Some(Err(DecodeError::from(format!(
                "netlink message length {len} is invalid ({have} bytes left)"
            ))));
        }
        let msg = &self.buf[..len];
        self.buf = &self.buf[align4(len).min(self.buf.len())..];
        let ty = u16::from_ne_bytes(msg[4..6].try_into().unwrap());
        let flags = u16::from_ne_bytes(msg[6..8].try_into().unwrap());
        let seq = u32::from_ne_bytes(msg[8..12].try_into().unwrap());
        let payload = &msg[NLMSG_HDRLEN..];
        let errno = |p: &[u8]| -> Result<i32, DecodeError> {
            p.get(0..4)
                .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                .ok_or_else(|| DecodeError::from("netlink error message too short"))
        };
        let kind = match ty {
            NLMSG_ERROR => match errno(payload) {
                Ok(0) => ReplyKind::Ack,
                Ok(e) => ReplyKind::Error(e),
                Err(e) => return Some(Err(e)),
            },
            NLMSG_DONE => ReplyKind::Done(errno(payload).unwrap_or(0)),
            NLMSG_NOOP => ReplyKind::Ignored,
            NLMSG_OVERRUN => ReplyKind::Overrun,
            t if t == self.family_id => {
                let header = match GenlHeader::parse(payload) {
                    Ok(h) => h,
                    Err(e) => return Some(Err(e)),
                };
                match IpvsMessage::parse_attrs(&payload[GENL_HDRLEN..], IpvsCmd::from(header.cmd)) {
                    Ok(m) => ReplyKind::Message(m),
                    Err(e) => return Some(Err(e)),
                }
            }
            _ => ReplyKind::Ignored,
        };
        Some(Ok(Reply { seq, flags, kind }))
    }
}
