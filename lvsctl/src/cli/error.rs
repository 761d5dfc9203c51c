//! The command's errors: one line on stderr and an exit status.

use std::process::ExitCode;

/// An error to report: a one-line message and the exit status.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub(crate) struct CliError {
    /// Exit status.
    pub(crate) code: u8,
    /// One line, naming the problem.
    pub(crate) msg: String,
}

impl CliError {
    /// Bad usage or input: exit 2 (as ipvsadm and clap do).
    pub(crate) fn usage(msg: impl Into<String>) -> Self {
        Self { code: 2, msg: msg.into() }
    }

    /// Any other failure: exit 1.
    pub(crate) fn failure(msg: impl Into<String>) -> Self {
        Self { code: 1, msg: msg.into() }
    }

    /// Not permitted (not root): exit 4, as LSB init scripts do.
    pub(crate) fn not_permitted(msg: impl Into<String>) -> Self {
        Self { code: 4, msg: msg.into() }
    }

    /// Print `lvsctl: MSG` on stderr and give the exit status.
    pub(crate) fn report(&self) -> ExitCode {
        eprintln!("lvsctl: {}", self.msg);
        ExitCode::from(self.code)
    }
}

/// The exit status of a library error: 2 for input refused before any
/// change, 4 for a missing privilege, 1 for anything else.
impl From<lvsctl::Error> for CliError {
    fn from(e: lvsctl::Error) -> Self {
        let msg = e.to_string();
        if e.is_permission() {
            Self::not_permitted(msg)
        } else if e.is_input() {
            Self::usage(msg)
        } else {
            Self::failure(msg)
        }
    }
}

impl From<ipvs::Error> for CliError {
    fn from(e: ipvs::Error) -> Self {
        match e {
            ipvs::Error::PermissionDenied => Self::not_permitted(e.to_string()),
            ipvs::Error::Invalid(_) => Self::usage(e.to_string()),
            _ => Self::failure(e.to_string()),
        }
    }
}
