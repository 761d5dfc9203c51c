//! Statistics attributes, nested in `STATS` (32-bit counters but for bytes) and
//! `STATS64` (all 64-bit) of services and destinations.

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer};

use crate::constants::stats as c;
use crate::util::{other, parse_nlas, u32_ne, u64_ne};

/// Which counter or rate a [`StatsAttr`] carries.
///
/// ```
/// use ipvs_sys::StatsField;
/// assert_eq!(StatsField::from_kind(StatsField::InBytes.kind()), Some(StatsField::InBytes));
/// assert_eq!(StatsField::from_kind(11), None); // IPVS_STATS_ATTR_PAD
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StatsField {
    /// Connections scheduled.
    Conns,
    /// Incoming packets.
    InPkts,
    /// Outgoing packets.
    OutPkts,
    /// Incoming bytes.
    InBytes,
    /// Outgoing bytes.
    OutBytes,
    /// Connections per second.
    Cps,
    /// Incoming packets per second.
    InPps,
    /// Outgoing packets per second.
    OutPps,
    /// Incoming bytes per second.
    InBps,
    /// Outgoing bytes per second.
    OutBps,
}

impl StatsField {
    /// Every field, in attribute order.
    pub const ALL: [StatsField; 10] = [
        Self::Conns,
        Self::InPkts,
        Self::OutPkts,
        Self::InBytes,
        Self::OutBytes,
        Self::Cps,
        Self::InPps,
        Self::OutPps,
        Self::InBps,
        Self::OutBps,
    ];

    /// The attribute number.
    pub fn kind(self) -> u16 {
        match self {
            Self::Conns => c::CONNS,
            Self::InPkts => c::INPKTS,
            Self::OutPkts => c::OUTPKTS,
            Self::InBytes => c::INBYTES,
            Self::OutBytes => c::OUTBYTES,
            Self::Cps => c::CPS,
            Self::InPps => c::INPPS,
            Self::OutPps => c::OUTPPS,
            Self::InBps => c::INBPS,
            Self::OutBps => c::OUTBPS,
        }
    }

    /// The field for an attribute number.
    pub fn from_kind(kind: u16) -> Option<Self> {
        // The numbers are 1..=10 in the order of ALL (a dump reads twenty of
        // these per destination: no search).
        let f = *Self::ALL.get(usize::from(kind).checked_sub(1)?)?;
        (f.kind() == kind).then_some(f)
    }
}

/// One statistics attribute. The width is kept as received so that parse then
/// emit gives back the same bytes.
///
/// ```
/// use ipvs_sys::{StatsAttr, StatsField};
/// // STATS carries 32-bit counters (bytes are 64-bit), STATS64 all 64-bit: both widen to u64.
/// assert_eq!(StatsAttr::U32(StatsField::Conns, 7).value(), Some((StatsField::Conns, 7)));
/// assert_eq!(StatsAttr::U64(StatsField::InBytes, 1 << 40).value(), Some((StatsField::InBytes, 1 << 40)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsAttr {
    /// A 32-bit value (legacy `STATS` counters and rates).
    U32(StatsField, u32),
    /// A 64-bit value (`STATS64`, and the byte counters of `STATS`).
    U64(StatsField, u64),
    /// Padding or an attribute this crate does not know.
    Other(DefaultNla),
}

impl StatsAttr {
    /// The field and its value widened to 64 bits.
    pub fn value(&self) -> Option<(StatsField, u64)> {
        match self {
            Self::U32(f, v) => Some((*f, u64::from(*v))),
            Self::U64(f, v) => Some((*f, *v)),
            Self::Other(_) => None,
        }
    }

    /// Parse one attribute: 4-byte values are [`StatsAttr::U32`], 8-byte ones [`StatsAttr::U64`].
    pub fn parse(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match (StatsField::from_kind(buf.kind()), v.len()) {
            (Some(f), 4) => Self::U32(f, u32_ne("stats", v)?),
            (Some(f), 8) => Self::U64(f, u64_ne("stats", v)?),
            _ => Self::Other(other(buf)?),
        })
    }

    /// Parse a nested statistics attribute's payload.
    pub fn parse_all(payload: &[u8]) -> Result<Vec<Self>, DecodeError> {
        parse_nlas(payload, Self::parse)
    }
}

impl Nla for StatsAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::U32(..) => 4,
            Self::U64(..) => 8,
            Self::Other(a) => a.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::U32(f, _) | Self::U64(f, _) => f.kind(),
            Self::Other(a) => a.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Self::U32(_, v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            Self::U64(_, v) => buf[..8].copy_from_slice(&v.to_ne_bytes()),
            Self::Other(a) => a.emit_value(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_comes_back_from_its_number() {
        for f in StatsField::ALL {
            assert_eq!(StatsField::from_kind(f.kind()), Some(f));
        }
        for k in [0, 11, 12, 0xffff] {
            assert_eq!(StatsField::from_kind(k), None);
        }
    }
}
