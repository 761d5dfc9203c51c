//! The benchmark pieces other crates reuse: counting generic netlink
//! requests on an `nlmon` device ([`nlmon`]; the privileged daemon tests
//! count with it too).

pub mod nlmon;

/// Errors are messages.
pub type Res<T> = Result<T, String>;
