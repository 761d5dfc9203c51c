//! `lvsctl realserver start|stop|status` (issue 3).

use std::process::ExitCode;

use crate::CliError;

/// Arguments of `lvsctl realserver`.
#[derive(Debug, clap::Args)]
pub(crate) struct RealserverArgs {}

pub(crate) async fn run(_args: RealserverArgs) -> Result<ExitCode, CliError> {
    Err(CliError::failure("realserver: not implemented yet"))
}
