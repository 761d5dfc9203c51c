//! `lvsctl`: run LVS director and real-server hosts, and manage IPVS at
//! ipvsadm's level, on the `ipvs` library.

mod admin;
mod config;
mod daemon;
mod director;
mod error;
mod ha;
mod host;
mod realserver;
mod state;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub(crate) use error::CliError;

/// Run LVS director and real-server hosts, and manage the kernel's IP Virtual Server.
#[derive(Debug, Parser)]
#[command(name = "lvsctl", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Act inside this network namespace (a name from `ip netns`, or a path like /proc/PID/ns/net).
    #[arg(long, global = true, value_name = "NAME")]
    netns: Option<String>,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run this host as an LVS director: VIP on an interface, virtual services, real servers.
    Director(director::DirectorArgs),
    /// Run this host as an LVS-DR real server: VIPs on lo and the ARP sysctls.
    Realserver(realserver::RealserverArgs),
    #[command(flatten)]
    Admin(admin::AdminCmd),
}

fn enter_netns(name: &str) -> Result<(), CliError> {
    use std::os::fd::AsRawFd;
    let path = if name.contains('/') {
        std::path::PathBuf::from(name)
    } else {
        std::path::Path::new("/var/run/netns").join(name)
    };
    let f = std::fs::File::open(&path)
        .map_err(|e| CliError::usage(format!("cannot open network namespace {}: {e}", path.display())))?;
    // SAFETY: setns with a valid fd; the process is still single-threaded here.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EPERM) {
            return Err(CliError::not_permitted(format!("cannot enter network namespace {}: {e}", path.display())));
        }
        return Err(CliError::failure(format!("cannot enter network namespace {}: {e}", path.display())));
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // Logs go to stderr: colours only on a terminal; when stderr is the
    // journal (systemd sets JOURNAL_STREAM), no timestamps (it adds its own)
    // and each line starts with its syslog priority.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LVSCTL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if std::env::var_os("JOURNAL_STREAM").is_some() {
        logs.event_format(daemon::journal::SyslogPrefix(tracing_subscriber::fmt::format().without_time())).try_init()
    } else {
        logs.try_init()
    };
    if let Some(ns) = &cli.netns {
        if let Err(e) = enter_netns(ns) {
            return e.report();
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return CliError::failure(format!("cannot start the runtime: {e}")).report(),
    };
    let res = rt.block_on(async move {
        match cli.cmd {
            Cmd::Director(a) => director::run(a).await,
            Cmd::Realserver(a) => realserver::run(a).await,
            Cmd::Admin(a) => admin::run(a).await,
        }
    });
    match res {
        Ok(code) => code,
        Err(e) => e.report(),
    }
}
