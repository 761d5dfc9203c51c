//! Arbitrary bytes as a received netlink buffer: the parser never panics, and
//! whatever parses as an IPVS message emits and parses back to the same value.
#![no_main]

use ipvs_sys::{emit_request, parse_replies, ReplyKind};
use libfuzzer_sys::fuzz_target;

const FAMILY: u16 = 0x20;

fuzz_target!(|data: &[u8]| {
    for reply in parse_replies(data, FAMILY) {
        let Ok(reply) = reply else { continue };
        if let ReplyKind::Message(msg) = reply.kind {
            let mut buf = Vec::new();
            emit_request(&mut buf, FAMILY, reply.flags, reply.seq, &msg);
            // A nested attribute longer than 64 KiB cannot be written back.
            if buf.len() > usize::from(u16::MAX) {
                continue;
            }
            let again = parse_replies(&buf, FAMILY).next().expect("one message").expect("re-parses");
            assert_eq!(again.kind, ReplyKind::Message(msg));
        }
    }
});
