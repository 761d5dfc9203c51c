//! Small parsing and emitting helpers shared by the attribute modules.

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer, NlasIterator, Parseable};

pub(crate) fn u8_(name: &str, v: &[u8]) -> Result<u8, DecodeError> {
    match v {
        [b] => Ok(*b),
        _ => Err(bad_len(name, 1, v.len())),
    }
}

pub(crate) fn u16_ne(name: &str, v: &[u8]) -> Result<u16, DecodeError> {
    v.try_into().map(u16::from_ne_bytes).map_err(|_| bad_len(name, 2, v.len()))
}

pub(crate) fn u16_be(name: &str, v: &[u8]) -> Result<u16, DecodeError> {
    v.try_into().map(u16::from_be_bytes).map_err(|_| bad_len(name, 2, v.len()))
}

pub(crate) fn u32_ne(name: &str, v: &[u8]) -> Result<u32, DecodeError> {
    v.try_into().map(u32::from_ne_bytes).map_err(|_| bad_len(name, 4, v.len()))
}

pub(crate) fn u64_ne(name: &str, v: &[u8]) -> Result<u64, DecodeError> {
    v.try_into().map(u64::from_ne_bytes).map_err(|_| bad_len(name, 8, v.len()))
}

/// A NUL-terminated string; the NUL (and anything after it) is not part of the value.
pub(crate) fn cstring(name: &str, v: &[u8]) -> Result<String, DecodeError> {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8(v[..end].to_vec()).map_err(|e| DecodeError::from(format!("{name}: invalid UTF-8: {e}")))
}

/// Bytes of a string attribute value: the string and its terminating NUL.
pub(crate) fn cstring_len(s: &str) -> usize {
    s.len() + 1
}

pub(crate) fn emit_cstring(s: &str, buf: &mut [u8]) {
    buf[..s.len()].copy_from_slice(s.as_bytes());
    buf[s.len()] = 0;
}

fn bad_len(name: &str, want: usize, got: usize) -> DecodeError {
    DecodeError::from(format!("{name}: expected {want} bytes, got {got}"))
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
