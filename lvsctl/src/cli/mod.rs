//! The command line: clap's arguments, what each command prints, and the
//! exit statuses. Everything else is the library's.

mod director;
mod error;
mod realserver;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub(crate) use error::CliError;

/// Run LVS director and real-server hosts, and manage the kernel's IP Virtual Server.
#[derive(Debug, Parser)]
#[command(name = "lvsctl", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Act inside this network namespace (a name from `ip netns`, or a path like /proc/PID/ns/net).
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) netns: Option<String>,

    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

/// Every subcommand enum is deferred (`defer = true`): a command builds the
/// arguments of the subcommands on its own path only, not those of the whole
/// tree. A daemon start under emulation pays for each new code page it runs,
/// and the whole tree was about half the code a start touched. The `Args`
/// structs of subcommands carry plain comments, not doc comments: clap
/// would make a doc comment there the subcommand's description when it is
/// built, over the one on its variant.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub(crate) enum Cmd {
    /// Run this host as an LVS director: VIP on an interface, virtual services, real servers.
    Director(director::DirectorArgs),
    /// Run this host as an LVS-DR real server: VIPs on lo and the ARP sysctls.
    Realserver(realserver::RealserverArgs),
    /// Check this host for what makes LVS fail silently; exit 1 when something is wrong.
    Doctor(crate::doctor::DoctorArgs),
    #[command(flatten)]
    Admin(crate::admin::AdminCmd),
}

/// Run the parsed command.
pub(crate) async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.cmd {
        Cmd::Director(a) => director::run(a).await,
        Cmd::Realserver(a) => realserver::run(a).await,
        Cmd::Doctor(a) => crate::doctor::run(a).await,
        Cmd::Admin(a) => crate::admin::run(a).await,
    }
}

/// Logs go to stderr: colours only on a terminal; when stderr is the
/// journal (systemd sets JOURNAL_STREAM), no timestamps (it adds its own)
/// and each line starts with its syslog priority.
pub(crate) fn init_logs() {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LVSCTL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if std::env::var_os("JOURNAL_STREAM").is_some() {
        let format = tracing_subscriber::fmt::format().without_time();
        logs.event_format(lvsctl::daemon::journal::SyslogPrefix(format)).try_init()
    } else {
        logs.try_init()
    };
}

/// Enter the network namespace `name` (from `ip netns`, or a path).
pub(crate) fn enter_netns(name: &str) -> Result<(), CliError> {
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
        let msg = format!("cannot enter network namespace {}: {e}", path.display());
        if e.raw_os_error() == Some(libc::EPERM) {
            return Err(CliError::not_permitted(msg));
        }
        return Err(CliError::failure(msg));
    }
    Ok(())
}

/// Print `role: change` for each change a run made, also when it failed
/// part-way; the report, or the error.
/// Print what `stop` of `role` undid and its last line: `stopped`, or
/// `not running` when there was no state to undo (`had_state`).
fn stopped(
    role: &str,
    had_state: bool,
    r: Result<lvsctl::host::Report, lvsctl::host::Incomplete>,
) -> Result<std::process::ExitCode, CliError> {
    done(role, r)?;
    if had_state {
        println!("{role}: stopped");
    } else {
        println!("{role}: not running; nothing to stop");
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn done(
    role: &str,
    r: Result<lvsctl::host::Report, lvsctl::host::Incomplete>,
) -> Result<lvsctl::host::Report, CliError> {
    use std::io::Write;
    let changes = match &r {
        Ok(report) => &report.changes,
        Err(i) => &i.report.changes,
    };
    let mut out = std::io::stdout().lock();
    for c in changes {
        let _ = writeln!(out, "{role}: {c}");
    }
    r.map_err(|i| CliError::from(i.error))
}
