//! ipvsadm-level commands (issue 4): services, real servers, list, save,
//! restore, clear, zero, timeouts, sync daemons, info.

use std::process::ExitCode;

use crate::CliError;

/// ipvsadm-level subcommands, flattened into the top level.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AdminCmd {
    /// Show IPVS version and connection table size.
    Info,
}

pub(crate) async fn run(cmd: AdminCmd) -> Result<ExitCode, CliError> {
    match cmd {
        AdminCmd::Info => {
            let h = ipvs::Ipvs::connect().await?;
            let i = h.info().await?;
            println!("IP Virtual Server version {} (size={})", i.version_string(), i.conn_table_size);
            Ok(ExitCode::SUCCESS)
        }
    }
}
