//! `lvsctl director start|stop|status` (issue 3).

use std::process::ExitCode;

use crate::CliError;

/// Arguments of `lvsctl director`.
#[derive(Debug, clap::Args)]
pub(crate) struct DirectorArgs {}

pub(crate) async fn run(_args: DirectorArgs) -> Result<ExitCode, CliError> {
    Err(CliError::failure("director: not implemented yet"))
}
