//! Service attributes (`IPVS_SVC_ATTR_*`), nested in `IPVS_CMD_ATTR_SERVICE`.

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer, NLA_F_NESTED};

use crate::addr::InetAddr;
use crate::constants::svc as c;
use crate::stats::StatsAttr;
use crate::util::*;

/// `struct ip_vs_flags`: the kernel computes `(old & !mask) | (flags & mask)`.
///
/// ```
/// use ipvs_sys::ServiceFlags;
/// use ipvs_sys::constants::svc_flags::{PERSISTENT, ONEPACKET};
/// // Set persistence, clear one-packet, leave every other flag as it is.
/// let f = ServiceFlags { flags: PERSISTENT, mask: PERSISTENT | ONEPACKET };
/// assert_eq!((0x4 & !f.mask) | (f.flags & f.mask), PERSISTENT);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceFlags {
    /// Flag bits (`IP_VS_SVC_F_*`).
    pub flags: u32,
    /// Which bits of `flags` to apply.
    pub mask: u32,
}

/// One service attribute.
///
/// ```
/// use ipvs_sys::{ServiceAttr, ServiceFlags};
/// use ipvs_sys::constants::{AF_INET, IPPROTO_TCP};
/// // A service's identity and configuration, as NEW_SERVICE needs them.
/// let attrs = vec![
///     ServiceAttr::AddressFamily(AF_INET),
///     ServiceAttr::Protocol(IPPROTO_TCP),
///     ServiceAttr::Address("10.0.0.1".parse::<std::net::Ipv4Addr>().unwrap().into()),
///     ServiceAttr::Port(80),
///     ServiceAttr::SchedName("rr".into()),
///     ServiceAttr::Flags(ServiceFlags { flags: 0, mask: u32::MAX }),
///     ServiceAttr::Timeout(0),
///     ServiceAttr::Netmask(u32::MAX),
/// ];
/// # let _ = attrs;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAttr {
    /// `AF_INET` or `AF_INET6`.
    AddressFamily(u16),
    /// Transport protocol number.
    Protocol(u16),
    /// Virtual address; interpret with [`ServiceAttr::AddressFamily`].
    Address(InetAddr),
    /// Port, host order here (big-endian on the wire).
    Port(u16),
    /// Firewall mark.
    Fwmark(u32),
    /// Scheduler name.
    SchedName(String),
    /// Flags with their mask.
    Flags(ServiceFlags),
    /// Persistence timeout in seconds.
    Timeout(u32),
    /// Netmask exactly as the kernel reads it with `nla_get_u32`: for IPv4 the
    /// bytes are the mask in network order (`255.255.255.0` = `ff ff ff 00`),
    /// for IPv6 the value is the prefix length.
    Netmask(u32),
    /// 32-bit statistics.
    Stats(Vec<StatsAttr>),
    /// Persistence engine name.
    PeName(String),
    /// 64-bit statistics.
    Stats64(Vec<StatsAttr>),
    /// An attribute this crate does not know, kept as received.
    Other(DefaultNla),
}

impl ServiceAttr {
    /// Parse one attribute.
    pub fn parse(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            c::AF => Self::AddressFamily(u16_ne("service af", v)?),
            c::PROTOCOL => Self::Protocol(u16_ne("service protocol", v)?),
            c::ADDR => Self::Address(InetAddr::parse(v)?),
            c::PORT => Self::Port(u16_be("service port", v)?),
            c::FWMARK => Self::Fwmark(u32_ne("service fwmark", v)?),
            c::SCHED_NAME => Self::SchedName(cstring("scheduler name", v)?),
            c::FLAGS => {
                if v.len() != 8 {
                    return Err(DecodeError::from(format!("service flags: expected 8 bytes, got {}", v.len())));
                }
                Self::Flags(ServiceFlags {
                    flags: u32_ne("service flags", &v[..4])?,
                    mask: u32_ne("service flags mask", &v[4..])?,
                })
            }
            c::TIMEOUT => Self::Timeout(u32_ne("service timeout", v)?),
            c::NETMASK => Self::Netmask(u32_ne("service netmask", v)?),
            c::STATS => Self::Stats(StatsAttr::parse_all(v)?),
            c::PE_NAME => Self::PeName(cstring("pe name", v)?),
            c::STATS64 => Self::Stats64(StatsAttr::parse_all(v)?),
            _ => Self::Other(other(buf)?),
        })
    }

    /// Parse the payload of a nested service attribute.
    pub fn parse_all(payload: &[u8]) -> Result<Vec<Self>, DecodeError> {
        parse_nlas(payload, Self::parse)
    }
}

impl Nla for ServiceAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::AddressFamily(_) | Self::Protocol(_) | Self::Port(_) => 2,
            Self::Address(_) => InetAddr::LEN,
            Self::Fwmark(_) | Self::Timeout(_) | Self::Netmask(_) => 4,
            Self::SchedName(s) | Self::PeName(s) => cstring_len(s),
            Self::Flags(_) => 8,
            Self::Stats(s) | Self::Stats64(s) => nlas_len(s),
            Self::Other(a) => a.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::AddressFamily(_) => c::AF,
            Self::Protocol(_) => c::PROTOCOL,
            Self::Address(_) => c::ADDR,
            Self::Port(_) => c::PORT,
            Self::Fwmark(_) => c::FWMARK,
            Self::SchedName(_) => c::SCHED_NAME,
            Self::Flags(_) => c::FLAGS,
            Self::Timeout(_) => c::TIMEOUT,
            Self::Netmask(_) => c::NETMASK,
            Self::Stats(_) => c::STATS | NLA_F_NESTED,
            Self::PeName(_) => c::PE_NAME,
            Self::Stats64(_) => c::STATS64 | NLA_F_NESTED,
            Self::Other(a) => a.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Self::AddressFamily(v) | Self::Protocol(v) => buf[..2].copy_from_slice(&v.to_ne_bytes()),
            Self::Port(v) => buf[..2].copy_from_slice(&v.to_be_bytes()),
            Self::Address(a) => buf[..16].copy_from_slice(&a.0),
            Self::Fwmark(v) | Self::Timeout(v) | Self::Netmask(v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            Self::SchedName(s) | Self::PeName(s) => emit_cstring(s, buf),
            Self::Flags(f) => {
                buf[..4].copy_from_slice(&f.flags.to_ne_bytes());
                buf[4..8].copy_from_slice(&f.mask.to_ne_bytes());
            }
            Self::Stats(s) | Self::Stats64(s) => emit_nlas(s, buf),
            Self::Other(a) => a.emit_value(buf),
        }
    }
}
