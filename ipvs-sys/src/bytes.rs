//! Readers of fixed-size attribute values, shared by this crate's parsers and
//! by the `ipvs` crate's fast dump parser, so that both read (and refuse)
//! the same bytes the same way. `name` says which value, in the error.

use netlink_packet_core::DecodeError;

/// `name`'s value is not `want` bytes long.
pub fn bad_len(name: &str, want: usize, got: usize) -> DecodeError {
    DecodeError::from(format!("{name}: expected {want} bytes, got {got}"))
}

/// One byte.
pub fn u8_(name: &str, v: &[u8]) -> Result<u8, DecodeError> {
    match v {
        [b] => Ok(*b),
        _ => Err(bad_len(name, 1, v.len())),
    }
}

/// A `u16` in host byte order.
pub fn u16_ne(name: &str, v: &[u8]) -> Result<u16, DecodeError> {
    v.try_into().map(u16::from_ne_bytes).map_err(|_| bad_len(name, 2, v.len()))
}

/// A `u16` in network byte order (ports).
pub fn u16_be(name: &str, v: &[u8]) -> Result<u16, DecodeError> {
    v.try_into().map(u16::from_be_bytes).map_err(|_| bad_len(name, 2, v.len()))
}

/// A `u32` in host byte order.
pub fn u32_ne(name: &str, v: &[u8]) -> Result<u32, DecodeError> {
    v.try_into().map(u32::from_ne_bytes).map_err(|_| bad_len(name, 4, v.len()))
}

/// A `u64` in host byte order.
pub fn u64_ne(name: &str, v: &[u8]) -> Result<u64, DecodeError> {
    v.try_into().map(u64::from_ne_bytes).map_err(|_| bad_len(name, 8, v.len()))
}

/// A NUL-terminated string, borrowed; the NUL (and anything after it) is not
/// part of the value. Must be UTF-8.
pub fn cstr<'a>(name: &str, v: &'a [u8]) -> Result<&'a str, DecodeError> {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    std::str::from_utf8(&v[..end]).map_err(|e| DecodeError::from(format!("{name}: invalid UTF-8: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers() {
        assert_eq!(u16_be("port", &[0x1f, 0x90]).unwrap(), 8080);
        assert_eq!(u32_ne("x", &7u32.to_ne_bytes()).unwrap(), 7);
        assert_eq!(u32_ne("x", &[1, 2, 3]).unwrap_err().to_string(), "x: expected 4 bytes, got 3");
        assert_eq!(cstr("s", b"rr\0junk").unwrap(), "rr");
        assert_eq!(cstr("s", b"wlc").unwrap(), "wlc");
        assert!(cstr("s", &[0xff, 0]).is_err());
        assert!(u8_("t", &[]).is_err());
    }
}
