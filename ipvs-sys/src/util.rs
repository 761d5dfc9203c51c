//! Small parsing and emitting helpers shared by the attribute modules.

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer, NlasIterator, Parseable};

pub(crate) use crate::bytes::{u16_be, u16_ne, u32_ne, u64_ne, u8_};

/// A NUL-terminated string; the NUL (and anything after it) is not part of the value.
pub(crate) fn cstring(name: &str, v: &[u8]) -> Result<String, DecodeError> {
    crate::bytes::cstr(name, v).map(str::to_owned)
}

/// Bytes of a string attribute value: the string and its terminating NUL.
pub(crate) fn cstring_len(s: &str) -> usize {
    s.len() + 1
}

pub(crate) fn emit_cstring(s: &str, buf: &mut [u8]) {
    buf[..s.len()].copy_from_slice(s.as_bytes());
    buf[s.len()] = 0;
}

/// Iterate over the attributes in `payload`, parsing each with `f`.
pub(crate) fn parse_nlas<A>(
    payload: &[u8],
    mut f: impl FnMut(&NlaBuffer<&[u8]>) -> Result<A, DecodeError>,
) -> Result<Vec<A>, DecodeError> {
    let mut out = Vec::new();
    for nla in NlasIterator::new(payload) {
        let nla = nla?;
        out.push(f(&nla)?);
    }
    Ok(out)
}

/// Parse an attribute that this crate does not know, keeping its flags.
pub(crate) fn other(buf: &NlaBuffer<&[u8]>) -> Result<DefaultNla, DecodeError> {
    DefaultNla::parse(buf)
}

/// Length of a list of attributes, each with header and padding.
pub(crate) fn nlas_len<A: Nla>(nlas: &[A]) -> usize {
    netlink_packet_core::Emitable::buffer_len(&nlas)
}

/// Emit a list of attributes.
///
/// Each attribute's type field is written as `kind()` says, flags included:
/// netlink-packet-core 0.9's emit loses `NLA_F_NET_BYTEORDER` when
/// `NLA_F_NESTED` is also set (setting the second flag re-reads the type
/// without flags), which would change an unknown attribute on its way through.
pub(crate) fn emit_nlas<A: Nla>(nlas: &[A], buf: &mut [u8]) {
    let mut off = 0;
    for nla in nlas {
        let len = netlink_packet_core::Emitable::buffer_len(nla);
        netlink_packet_core::Emitable::emit(nla, &mut buf[off..off + len]);
        buf[off + 2..off + 4].copy_from_slice(&nla.kind().to_ne_bytes());
        off += len;
    }
}
