//! `union nf_inet_addr`: 16 bytes on the wire, IPv4 in the first four.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::DecodeError;

use crate::constants::{AF_INET, AF_INET6};

/// An address as the kernel sends it: 16 bytes whose meaning depends on the
/// address family carried in a sibling attribute. Never guess the family from
/// the length.
///
/// ```
/// use ipvs_sys::InetAddr;
/// use ipvs_sys::constants::{AF_INET, AF_INET6};
/// let a = InetAddr::from("10.0.0.1".parse::<std::net::IpAddr>().unwrap());
/// assert_eq!(&a.0[..4], &[10, 0, 0, 1]);
/// assert_eq!(a.to_ip(AF_INET), Some("10.0.0.1".parse().unwrap()));
/// // The same 16 bytes mean something else with another family: always pass the family.
/// assert_eq!(a.to_ip(AF_INET6), Some("a00:1::".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct InetAddr(pub [u8; 16]);

impl InetAddr {
    /// Bytes on the wire.
    pub const LEN: usize = 16;

    /// Parse an address attribute value. Shorter values (4 bytes for IPv4 from
    /// some senders) are zero padded.
    pub fn parse(v: &[u8]) -> Result<Self, DecodeError> {
        if v.len() > Self::LEN {
            return Err(DecodeError::from(format!("address: expected at most 16 bytes, got {}", v.len())));
        }
        let mut a = [0u8; 16];
        a[..v.len()].copy_from_slice(v);
        Ok(Self(a))
    }

    /// Interpret the bytes with the given address family (`AF_INET` or
    /// `AF_INET6`); `None` for any other family.
    pub fn to_ip(&self, af: u16) -> Option<IpAddr> {
        match af {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(self.0[0], self.0[1], self.0[2], self.0[3]))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(self.0))),
            _ => None,
        }
    }

    /// The address family of an IP address.
    pub fn family_of(ip: IpAddr) -> u16 {
        match ip {
            IpAddr::V4(_) => AF_INET,
            IpAddr::V6(_) => AF_INET6,
        }
    }
}

impl From<IpAddr> for InetAddr {
    fn from(ip: IpAddr) -> Self {
        let mut a = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => a[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => a.copy_from_slice(&v6.octets()),
        }
        Self(a)
    }
}

impl From<Ipv4Addr> for InetAddr {
    fn from(ip: Ipv4Addr) -> Self {
        IpAddr::V4(ip).into()
    }
}

impl From<Ipv6Addr> for InetAddr {
    fn from(ip: Ipv6Addr) -> Self {
        IpAddr::V6(ip).into()
    }
}
