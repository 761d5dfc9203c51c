//! The hot part of a table dump: destination messages parsed straight from
//! the received bytes into [`DestinationEntry`], with no allocation per
//! destination. The meaning of every attribute stays in one place,
//! [`crate::convert::dest_from`]: the attributes are parsed one at a time with
//! `ipvs_sys` into a reused scratch list, and only the two nested statistics
//! sets (twenty attributes of the ~thirty-five in a destination) are read
//! here, into the same `StatsAttr` values `ipvs_sys` would make.

use ipvs_sys::constants::{attr, dest};
use ipvs_sys::{DecodeError, DestAttr, StatsAttr, StatsField};
use netlink_packet_core::{NlaBuffer, NLA_TYPE_MASK};

use crate::convert::{dest_from, stats_from};
use crate::error::{Error, Result};
use crate::types::{DestinationEntry, Family};

/// Reusable buffers for parsing many destinations.
#[derive(Default)]
pub(crate) struct DestParser {
    attrs: Vec<DestAttr>,
    stats: Vec<StatsAttr>,
    stats64: Vec<StatsAttr>,
}

fn decode(e: DecodeError) -> Error {
    Error::Decode(e.to_string())
}

/// The attributes in a buffer as (type without flags, whole attribute, value),
/// like `netlink_packet_core::NlasIterator` (including its errors on a
/// malformed header or trailing bytes) but without its per-attribute checks.
struct Nlas<'a>(&'a [u8]);

impl<'a> Iterator for Nlas<'a> {
    type Item = Result<(u16, &'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.0;
        if b.is_empty() {
            return None;
        }
        let len = if b.len() >= 4 { usize::from(u16::from_ne_bytes([b[0], b[1]])) } else { 0 };
        if len < 4 || len > b.len() {
            self.0 = &[];
            return Some(Err(Error::Decode(format!(
                "invalid netlink attribute: length {len} with {} bytes left",
                b.len()
            ))));
        }
        let kind = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        self.0 = &b[((len + 3) & !3).min(b.len())..];
        Some(Ok((kind, &b[..len], &b[4..len])))
    }
}

impl DestParser {
    /// Parse the top-level attributes of one GET_DEST reply message, pushing
    /// each destination it holds onto `out`.
    pub(crate) fn message(&mut self, attrs: &[u8], family: Family, out: &mut Vec<DestinationEntry>) -> Result<()> {
        for nla in Nlas(attrs) {
            let (kind, _, value) = nla?;
            if kind == attr::DEST {
                out.push(self.dest(value, family)?);
            }
        }
        Ok(())
    }

    /// Parse the payload of one nested destination attribute.
    pub(crate) fn dest(&mut self, payload: &[u8], family: Family) -> Result<DestinationEntry> {
        self.attrs.clear();
        let (mut has_stats, mut has_stats64) = (false, false);
        for nla in Nlas(payload) {
            let (kind, whole, value) = nla?;
            match kind {
                // dest_from keeps the last of each; so do these.
                dest::STATS => {
                    has_stats = true;
                    read_stats(value, &mut self.stats)?;
                }
                dest::STATS64 => {
                    has_stats64 = true;
                    read_stats(value, &mut self.stats64)?;
                }
                _ => self.attrs.push(DestAttr::parse(&NlaBuffer::new(whole)).map_err(decode)?),
            }
        }
        let mut e = dest_from(&self.attrs, family)?;
        // As dest_from: the 64-bit set when present, else the legacy one.
        e.stats = if has_stats64 {
            stats_from(&self.stats64)
        } else if has_stats {
            stats_from(&self.stats)
        } else {
            Default::default()
        };
        Ok(e)
    }
}

/// A statistics set as `StatsAttr::parse_all` reads it, less the attributes it
/// would keep as `Other` (padding, unknown), which `stats_from` ignores.
fn read_stats(payload: &[u8], into: &mut Vec<StatsAttr>) -> Result<()> {
    into.clear();
    for nla in Nlas(payload) {
        let (kind, _, v) = nla?;
        let Some(f) = StatsField::from_kind(kind) else { continue };
        match *v {
            [a, b, c, d] => into.push(StatsAttr::U32(f, u32::from_ne_bytes([a, b, c, d]))),
            [a, b, c, d, e, g, h, i] => into.push(StatsAttr::U64(f, u64::from_ne_bytes([a, b, c, d, e, g, h, i]))),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs_sys::{InetAddr, StatsField};
    use netlink_packet_core::{DefaultNla, Emitable};

    fn bytes(attrs: &[DestAttr]) -> Vec<u8> {
        let mut b = vec![0; attrs.buffer_len()];
        attrs.emit(&mut b);
        b
    }

    /// The reference: parse everything with ipvs_sys, then dest_from.
    fn slow(b: &[u8], fam: Family) -> Result<DestinationEntry> {
        let attrs = DestAttr::parse_all(b).map_err(decode)?;
        dest_from(&attrs, fam)
    }

    fn stats(base: u64, wide: bool) -> Vec<StatsAttr> {
        StatsField::ALL
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let v = base + i as u64;
                if wide || matches!(f, StatsField::InBytes | StatsField::OutBytes) {
                    StatsAttr::U64(*f, v)
                } else {
                    StatsAttr::U32(*f, v as u32)
                }
            })
            .collect()
    }

    fn base() -> Vec<DestAttr> {
        vec![
            DestAttr::Address(InetAddr::from("10.0.0.2".parse::<std::net::IpAddr>().unwrap())),
            DestAttr::Port(80),
            DestAttr::FwdMethod(3),
            DestAttr::Weight(7),
            DestAttr::UpperThreshold(9),
            DestAttr::LowerThreshold(2),
            DestAttr::ActiveConns(4),
            DestAttr::InactiveConns(5),
            DestAttr::PersistConns(6),
            DestAttr::AddressFamily(2),
        ]
    }

    #[test]
    fn same_as_the_reference_parse() {
        let mut p = DestParser::default();
        let cases: Vec<Vec<DestAttr>> = vec![
            base(),
            [base(), vec![DestAttr::Stats(stats(100, false))]].concat(),
            [base(), vec![DestAttr::Stats(stats(100, false)), DestAttr::Stats64(stats(1 << 40, true))]].concat(),
            [vec![DestAttr::Stats64(stats(7, true))], base(), vec![DestAttr::Stats(stats(3, false))]].concat(),
            [
                base(),
                vec![
                    DestAttr::FwdMethod(2),
                    DestAttr::TunType(1),
                    DestAttr::TunPort(6080),
                    DestAttr::TunFlags(1),
                    DestAttr::Other(DefaultNla::new(99, vec![1, 2, 3])),
                ],
            ]
            .concat(),
            // Errors: no address; a short weight; an unknown method.
            base()[1..].to_vec(),
            vec![DestAttr::FwdMethod(9), DestAttr::Address(InetAddr::default())],
        ];
        for (i, c) in cases.iter().enumerate() {
            let b = bytes(c);
            for fam in [Family::Inet, Family::Inet6] {
                let want = slow(&b, fam);
                // Twice, to show the scratch buffers do not leak between destinations.
                for _ in 0..2 {
                    let got = p.dest(&b, fam);
                    match (&want, &got) {
                        (Ok(w), Ok(g)) => assert_eq!(w, g, "case {i}"),
                        (Err(_), Err(_)) => {}
                        _ => panic!("case {i}: reference {want:?}, fast {got:?}"),
                    }
                }
            }
        }
        // A stats set from a previous destination is not carried over.
        let with = p.dest(&bytes(&[base(), vec![DestAttr::Stats64(stats(5, true))]].concat()), Family::Inet).unwrap();
        assert_eq!(with.stats.conns, 5);
        let without = p.dest(&bytes(&base()), Family::Inet).unwrap();
        assert_eq!(without.stats, Default::default());
    }

    proptest::proptest! {
        /// On any bytes (mostly well-formed attribute lists with random
        /// values), the fast parse agrees with the reference.
        #[test]
        fn agrees_with_the_reference_on_any_bytes(
            attrs in proptest::collection::vec((1u16..16, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24)), 0..20),
            cut in 0usize..400,
        ) {
            let mut b = Vec::new();
            for (kind, v) in &attrs {
                b.extend_from_slice(&((v.len() + 4) as u16).to_ne_bytes());
                b.extend_from_slice(&kind.to_ne_bytes());
                b.extend_from_slice(v);
                b.resize((b.len() + 3) & !3, 0);
            }
            if cut < b.len() && cut % 3 == 0 {
                b.truncate(cut);
            }
            let want = slow(&b, Family::Inet);
            let got = DestParser::default().dest(&b, Family::Inet);
            match (&want, &got) {
                (Ok(w), Ok(g)) => proptest::prop_assert_eq!(w, g),
                (Err(_), Err(_)) => {}
                _ => proptest::prop_assert!(false, "reference {:?}, fast {:?}", want, got),
            }
        }
    }

    #[test]
    fn truncated_bytes_are_an_error() {
        let mut b = bytes(&[base(), vec![DestAttr::Stats(stats(1, false))]].concat());
        b.truncate(b.len() - 3);
        assert!(DestParser::default().dest(&b, Family::Inet).is_err());
        let mut w = bytes(&base());
        // Make the weight attribute 3 bytes long: a decode error, as in ipvs_sys.
        let pos = w.windows(4).position(|x| x == [8, 0, 4, 0]).unwrap();
        w[pos] = 7;
        assert_eq!(slow(&w, Family::Inet).is_err(), DestParser::default().dest(&w, Family::Inet).is_err());
    }
}
