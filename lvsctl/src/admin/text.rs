//! Appending numbers and addresses to a `String` without the formatting
//! machinery: `save` and `list` of a large table write hundreds of thousands
//! of them, and `format!` with its temporary `String`s was most of their time
//! (measured: 10k x 10 `list --stats` formatted in 90 ms natively before, see
//! docs/benchmarks.md). Every helper writes exactly what the `format!`
//! spelling named in its documentation writes; the tests hold them to it.

use std::net::{IpAddr, SocketAddr};

/// `{n}` for an unsigned number.
pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits, pushed one by one: cheaper than checking them as UTF-8
    // for a string of a few bytes.
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

/// `{n}` for a signed number.
pub(crate) fn push_i64(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_u64(out, n.unsigned_abs());
}

/// Spaces up to `width` characters since byte `start` of `out` (`{:<width}`
/// of what was written since `start`, for ASCII text).
pub(crate) fn pad_from(out: &mut String, start: usize, width: usize) {
    let written = out.len() - start;
    for _ in written..width {
        out.push(' ');
    }
}

/// `{n:>width}`.
pub(crate) fn push_u64_right(out: &mut String, n: u64, width: usize) {
    let digits = digits(n);
    for _ in digits..width {
        out.push(' ');
    }
    push_u64(out, n);
}

/// `{n:<width}`.
pub(crate) fn push_u64_left(out: &mut String, n: u64, width: usize) {
    let start = out.len();
    push_u64(out, n);
    pad_from(out, start, width);
}

/// `{n:<width}` for a signed number.
pub(crate) fn push_i64_left(out: &mut String, n: i64, width: usize) {
    let start = out.len();
    push_i64(out, n);
    pad_from(out, start, width);
}

/// How many digits `{n}` has.
pub(crate) fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// An IP address as glibc's `inet_ntop` writes it.
pub(crate) fn ntop(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(a) => {
            let s = a.segments();
            // glibc writes "::a.b.c.d" when the first 96 bits are zero and the
            // address is neither :: nor ::1 (Rust writes "::102:304").
            if s[..6] == [0; 6] && s[6] != 0 {
                let o = a.octets();
                return format!("::{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
            }
            a.to_string()
        }
        IpAddr::V4(a) => a.to_string(),
    }
}

/// An IP address as glibc's `inet_ntop` writes it ([`ntop`]).
pub(crate) fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            let [a, b, c, d] = a.octets();
            push_u64(out, a.into());
            out.push('.');
            push_u64(out, b.into());
            out.push('.');
            push_u64(out, c.into());
            out.push('.');
            push_u64(out, d.into());
        }
        IpAddr::V6(_) => out.push_str(&ntop(ip)),
    }
}

/// `10.0.0.1:80` or `[2001:db8::1]:80`: ipvsadm's numeric `addrport_to_anyname`.
pub(crate) fn push_addr_port(out: &mut String, a: SocketAddr) {
    if a.is_ipv6() {
        out.push('[');
        push_ip(out, a.ip());
        out.push(']');
    } else {
        push_ip(out, a.ip());
    }
    out.push(':');
    push_u64(out, a.port().into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_ntop_like_glibc() {
        assert_eq!(ntop("::1.2.3.4".parse().unwrap()), "::1.2.3.4");
        assert_eq!(ntop("::1".parse().unwrap()), "::1");
        assert_eq!(ntop("::ffff:1.2.3.4".parse().unwrap()), "::ffff:1.2.3.4");
        assert_eq!(ntop("2001:db8:0:0:1:0:0:1".parse().unwrap()), "2001:db8::1:0:0:1");
    }

    #[test]
    fn same_as_format() {
        let nums = [0u64, 1, 9, 10, 99, 100, 12345, 99_999_999, 100_000_000, u32::MAX as u64, u64::MAX];
        for n in nums {
            let mut s = String::from("x");
            push_u64(&mut s, n);
            assert_eq!(s, format!("x{n}"));
            for w in [0, 1, 5, 9, 12, 25] {
                let mut s = String::new();
                push_u64_right(&mut s, n, w);
                assert_eq!(s, format!("{n:>w$}"));
                let mut s = String::from("ab");
                push_u64_left(&mut s, n, w);
                assert_eq!(s, format!("ab{n:<w$}"));
            }
        }
        for n in [0i64, -1, 7, -65535, i64::MIN, i64::MAX, i32::MIN as i64] {
            let mut s = String::new();
            push_i64_left(&mut s, n, 6);
            assert_eq!(s, format!("{n:<6}"));
        }
        // As ipvsadm prints them (glibc's inet_ntop for IPv6, "::a.b.c.d" included).
        for (a, want) in [
            ("0.0.0.0:0", "0.0.0.0:0"),
            ("10.1.200.3:80", "10.1.200.3:80"),
            ("255.255.255.255:65535", "255.255.255.255:65535"),
            ("[::1]:1", "[::1]:1"),
            ("[2001:db8::10]:8080", "[2001:db8::10]:8080"),
            ("[::a0b:c0d]:5", "[::10.11.12.13]:5"),
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut s = String::from("x");
            push_addr_port(&mut s, a);
            assert_eq!(s, format!("x{want}"));
        }
    }
}
