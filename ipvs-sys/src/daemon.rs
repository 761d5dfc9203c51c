//! Sync daemon attributes (`IPVS_DAEMON_ATTR_*`), nested in `IPVS_CMD_ATTR_DAEMON`.

use std::net::{Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer};

use crate::constants::daemon as c;
use crate::util::*;

/// One sync daemon attribute.
///
/// ```
/// use ipvs_sys::DaemonAttr;
/// use ipvs_sys::constants::state;
/// // ipvsadm --start-daemon master --mcast-interface eth0 --syncid 7
/// let attrs = vec![
///     DaemonAttr::State(state::MASTER),
///     DaemonAttr::McastIfn("eth0".into()),
///     DaemonAttr::SyncId(7),
/// ];
/// # let _ = attrs;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonAttr {
    /// `IP_VS_STATE_MASTER` (1) or `IP_VS_STATE_BACKUP` (2).
    State(u32),
    /// Multicast interface name.
    McastIfn(String),
    /// Sync id.
    SyncId(u32),
    /// Maximum sync message length.
    SyncMaxLen(u16),
    /// IPv4 multicast group.
    McastGroup(Ipv4Addr),
    /// IPv6 multicast group.
    McastGroup6(Ipv6Addr),
    /// Multicast UDP port (host order on the wire).
    McastPort(u16),
    /// Multicast TTL.
    McastTtl(u8),
    /// An attribute this crate does not know, kept as received.
    Other(DefaultNla),
}

impl DaemonAttr {
    /// Parse one attribute.
    pub fn parse(buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            c::STATE => Self::State(u32_ne("daemon state", v)?),
            c::MCAST_IFN => Self::McastIfn(cstring("daemon interface", v)?),
            c::SYNC_ID => Self::SyncId(u32_ne("daemon sync id", v)?),
            c::SYNC_MAXLEN => Self::SyncMaxLen(u16_ne("daemon sync maxlen", v)?),
            c::MCAST_GROUP => {
                let b: [u8; 4] = v.try_into().map_err(|_| DecodeError::from("daemon mcast group: expected 4 bytes"))?;
                Self::McastGroup(Ipv4Addr::from(b))
            }
            c::MCAST_GROUP6 => {
                let b: [u8; 16] =
                    v.try_into().map_err(|_| DecodeError::from("daemon mcast group6: expected 16 bytes"))?;
                Self::McastGroup6(Ipv6Addr::from(b))
            }
            c::MCAST_PORT => Self::McastPort(u16_ne("daemon mcast port", v)?),
            c::MCAST_TTL => Self::McastTtl(u8_("daemon mcast ttl", v)?),
            _ => Self::Other(other(buf)?),
        })
    }

    /// Parse the payload of a nested daemon attribute.
    pub fn parse_all(payload: &[u8]) -> Result<Vec<Self>, DecodeError> {
        parse_nlas(payload, Self::parse)
    }
}

impl Nla for DaemonAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::State(_) | Self::SyncId(_) | Self::McastGroup(_) => 4,
            Self::McastIfn(s) => cstring_len(s),
            Self::SyncMaxLen(_) | Self::McastPort(_) => 2,
            Self::McastGroup6(_) => 16,
            Self::McastTtl(_) => 1,
            Self::Other(a) => a.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::State(_) => c::STATE,
            Self::McastIfn(_) => c::MCAST_IFN,
            Self::SyncId(_) => c::SYNC_ID,
            Self::SyncMaxLen(_) => c::SYNC_MAXLEN,
            Self::McastGroup(_) => c::MCAST_GROUP,
            Self::McastGroup6(_) => c::MCAST_GROUP6,
            Self::McastPort(_) => c::MCAST_PORT,
            Self::McastTtl(_) => c::MCAST_TTL,
            Self::Other(a) => a.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Self::State(v) | Self::SyncId(v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            Self::McastIfn(s) => emit_cstring(s, buf),
            Self::SyncMaxLen(v) | Self::McastPort(v) => buf[..2].copy_from_slice(&v.to_ne_bytes()),
            Self::McastGroup(a) => buf[..4].copy_from_slice(&a.octets()),
            Self::McastGroup6(a) => buf[..16].copy_from_slice(&a.octets()),
            Self::McastTtl(v) => buf[0] = *v,
            Self::Other(a) => a.emit_value(buf),
        }
    }
}
