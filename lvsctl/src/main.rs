//! `lvsctl`: run LVS director and real-server hosts, and manage IPVS at
//! ipvsadm's level. A thin binary over the `lvsctl` library: the command
//! line, the printing and the exit statuses live here ([`cli`], [`admin`]).

mod admin;
mod cli;
mod doctor;

use std::process::ExitCode;

use clap::Parser;

pub(crate) use cli::{Cli, CliError};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    cli::init_logs();
    if let Some(ns) = &cli.netns {
        if let Err(e) = cli::enter_netns(ns) {
            return e.report();
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return CliError::failure(format!("cannot start the runtime: {e}")).report(),
    };
    match rt.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => e.report(),
    }
}
