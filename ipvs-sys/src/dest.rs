//! Destination (real server) attributes (`IPVS_DEST_ATTR_*`), nested in `IPVS_CMD_ATTR_DEST`.

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer, NLA_F_NESTED};

use crate::addr::InetAddr;
use crate::constants::dest as c;
use crate::stats::StatsAttr;
use crate::util::*;

/// One destination attribute.
///
/// ```
/// use ipvs_sys::DestAttr;
/// use ipvs_sys::constants::{fwd, tun_flags, tun_type, AF_INET};
/// // A GUE tunnel destination with checksums.
/// let attrs = vec![
///     DestAttr::AddressFamily(AF_INET),
///     DestAttr::Address("10.0.0.4".parse::<std::net::Ipv4Addr>().unwrap().into()),
///     DestAttr::Port(8080),
///     DestAttr::FwdMethod(fwd::TUNNEL),
///     DestAttr::Weight(2),
///     DestAttr::TunType(tun_type::GUE),
///     DestAttr::TunPort(6080),
///     DestAttr::TunFlags(tun_flags::CSUM),
///     DestAttr::UpperThreshold(0),
///     DestAttr::LowerThreshold(0),
/// ];
/// # let _ = attrs;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestAttr {
    /// Real server address; interpret with the destination's or the service's family.
    Address(InetAddr),
    /// Port, host order here (big-endian on the wire).
    Port(u16),
    /// Forwarding method (`IP_VS_CONN_F_*`, low three bits).
    FwdMethod(u32),
    /// Weight. The kernel reads it as a signed int and rejects negatives.
    Weight(u32),
    /// Upper connection threshold (0 = none).
    UpperThreshold(u32),
    /// Lower connection threshold (0 = none).
    LowerThreshold(u32),
    /// Active connections (read only).
    ActiveConns(u32),
    /// Inactive connections (read only).
    InactiveConns(u32),
    /// Persistent connection templates (read only).
    PersistConns(u32),
    /// 32-bit statistics.
    Stats(Vec<StatsAttr>),
    /// Address family of the destination (may differ from the service's with tunnelling).
    AddressFamily(u16),
    /// 64-bit statistics.
    Stats64(Vec<StatsAttr>),
    /// Tunnel type (`IP_VS_CONN_F_TUNNEL_TYPE_*`).
    TunType(u8),
    /// Tunnel port, host order here (big-endian on the wire).
    TunPort(u16),
    /// Tunnel flags (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
    TunFlags(u16),
    /// An attribute this crate does not know, kept as received.
    Other(DefaultNla),
}

impl DestAttr {
    /// Parse one attribute.
    pub fn parse(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            c::ADDR => Self::Address(InetAddr::parse(v)?),
            c::PORT => Self::Port(u16_be("dest port", v)?),
            c::FWD_METHOD => Self::FwdMethod(u32_ne("dest fwd method", v)?),
            c::WEIGHT => Self::Weight(u32_ne("dest weight", v)?),
            c::U_THRESH => Self::UpperThreshold(u32_ne("dest upper threshold", v)?),
            c::L_THRESH => Self::LowerThreshold(u32_ne("dest lower threshold", v)?),
            c::ACTIVE_CONNS => Self::ActiveConns(u32_ne("dest active conns", v)?),
            c::INACT_CONNS => Self::InactiveConns(u32_ne("dest inactive conns", v)?),
            c::PERSIST_CONNS => Self::PersistConns(u32_ne("dest persistent conns", v)?),
            c::STATS => Self::Stats(StatsAttr::parse_all(v)?),
            c::ADDR_FAMILY => Self::AddressFamily(u16_ne("dest af", v)?),
            c::STATS64 => Self::Stats64(StatsAttr::parse_all(v)?),
            c::TUN_TYPE => Self::TunType(u8_("dest tunnel type", v)?),
            c::TUN_PORT => Self::TunPort(u16_be("dest tunnel port", v)?),
            c::TUN_FLAGS => Self::TunFlags(u16_ne("dest tunnel flags", v)?),
            _ => Self::Other(other(buf)?),
        })
    }

    /// Parse the payload of a nested destination attribute.
    pub fn parse_all(payload: &[u8]) -> Result<Vec<Self>, DecodeError> {
        parse_nlas(payload, Self::parse)
    }
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Address(_) => InetAddr::LEN,
            Self::Port(_) | Self::AddressFamily(_) | Self::TunPort(_) | Self::TunFlags(_) => 2,
            Self::TunType(_) => 1,
            Self::FwdMethod(_)
            | Self::Weight(_)
            | Self::UpperThreshold(_)
            | Self::LowerThreshold(_)
            | Self::ActiveConns(_)
            | Self::InactiveConns(_)
            | Self::PersistConns(_) => 4,
            Self::Stats(s) | Self::Stats64(s) => nlas_len(s),
            Self::Other(a) => a.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Address(_) => c::ADDR,
            Self::Port(_) => c::PORT,
            Self::FwdMethod(_) => c::FWD_METHOD,
            Self::Weight(_) => c::WEIGHT,
            Self::UpperThreshold(_) => c::U_THRESH,
            Self::LowerThreshold(_) => c::L_THRESH,
            Self::ActiveConns(_) => c::ACTIVE_CONNS,
            Self::InactiveConns(_) => c::INACT_CONNS,
            Self::PersistConns(_) => c::PERSIST_CONNS,
            Self::Stats(_) => c::STATS | NLA_F_NESTED,
            Self::AddressFamily(_) => c::ADDR_FAMILY,
            Self::Stats64(_) => c::STATS64 | NLA_F_NESTED,
            Self::TunType(_) => c::TUN_TYPE,
            Self::TunPort(_) => c::TUN_PORT,
            Self::TunFlags(_) => c::TUN_FLAGS,
            Self::Other(a) => a.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Self::Address(a) => buf[..16].copy_from_slice(&a.0),
            Self::Port(v) | Self::TunPort(v) => buf[..2].copy_from_slice(&v.to_be_bytes()),
            Self::AddressFamily(v) | Self::TunFlags(v) => buf[..2].copy_from_slice(&v.to_ne_bytes()),
            Self::TunType(v) => buf[0] = *v,
            Self::FwdMethod(v)
            | Self::Weight(v)
            | Self::UpperThreshold(v)
            | Self::LowerThreshold(v)
            | Self::ActiveConns(v)
            | Self::InactiveConns(v)
            | Self::PersistConns(v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            Self::Stats(s) | Self::Stats64(s) => emit_nlas(s, buf),
            Self::Other(a) => a.emit_value(buf),
        }
    }
}
