//! ipvsadm-level commands: virtual services, real servers, list,
//! save, restore, clear, zero, timeouts, sync daemons, info, shell
//! completions and the man page.
//!
//! The option letters are ipvsadm's (`lvsctl service add -t 10.0.0.1:80 -s
//! rr`, `lvsctl real add -t 10.0.0.1:80 -r 10.0.0.2 -m -w 2`); the formats of
//! `list` and `save` are ipvsadm 1.31's, byte for byte. Pieces:
//! [`spec`] (options and their meaning), [`rules`] (the `-R`/`-S` line
//! format), [`save`] and [`list`] (the text formats), [`sort`] (ipvsadm's order),
//! [`conn`] (the connection table of `list --connection`).

mod conn;
mod drain;
mod list;
mod rules;
mod save;
mod sort;
pub(crate) mod spec;
mod text;

use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ipvs::reconcile::{plan, Scope};
use ipvs::{Ipvs, SyncDaemon, SyncState, Timeouts};

use crate::CliError;
use spec::{DestOpts, ServiceKeyArgs, ServiceOpts};

/// ipvsadm-level subcommands, flattened into the top level.
#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub(crate) enum AdminCmd {
    /// Add, edit or delete virtual services (ipvsadm -A, -E, -D).
    #[command(subcommand, visible_alias = "svc")]
    Service(ServiceCmd),
    /// Add, edit or delete real servers of a virtual service (ipvsadm -a, -e, -d).
    #[command(subcommand, visible_alias = "dest")]
    Real(RealCmd),
    /// List the table, or one virtual service, like ipvsadm -Ln (numeric, sorted as ipvsadm sorts).
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Print the table in ipvsadm -Sn format (the input of restore).
    Save(SaveArgs),
    /// Apply rules in ipvsadm -R format from a file or stdin; nothing is applied if a line is bad.
    Restore(RestoreArgs),
    /// Delete every virtual service (ipvsadm -C).
    Clear,
    /// Zero the counters of every virtual service, or of one (ipvsadm -Z).
    Zero(ZeroArgs),
    /// Show the connection timeouts, or set them (ipvsadm --set TCP TCPFIN UDP; 0 keeps a value).
    Timeout(TimeoutArgs),
    /// Start, stop or show connection sync daemons (ipvsadm --start-daemon, --stop-daemon, -L --daemon).
    #[command(subcommand)]
    Sync(SyncCmd),
    /// Show the IPVS version and connection table size.
    Info(JsonArg),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of lvsctl, or of one of its commands (lvsctl-COMMAND).
    Man {
        /// A command, such as restore or service.
        command: Option<String>,
    },
}

/// `service add|edit|del`.
#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub(crate) enum ServiceCmd {
    /// Add a virtual service (ipvsadm -A).
    Add(ServiceArgs),
    /// Replace a virtual service's options; options not given take their defaults, as with ipvsadm -E.
    Edit(ServiceArgs),
    /// Delete a virtual service and its real servers (ipvsadm -D).
    #[command(visible_alias = "delete")]
    Del(KeyArgs),
}

// A virtual service and its options.
#[derive(Debug, clap::Args)]
pub(crate) struct ServiceArgs {
    #[command(flatten)]
    key: ServiceKeyArgs,
    #[command(flatten)]
    opts: ServiceOpts,
}

// Just a virtual service.
#[derive(Debug, clap::Args)]
pub(crate) struct KeyArgs {
    #[command(flatten)]
    key: ServiceKeyArgs,
}

/// `real add|edit|del`.
#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub(crate) enum RealCmd {
    /// Add a real server to a virtual service (ipvsadm -a).
    Add(RealArgs),
    /// Replace a real server's options; options not given take their defaults, as with ipvsadm -e.
    Edit(RealArgs),
    /// Delete a real server (ipvsadm -d).
    #[command(visible_alias = "delete")]
    Del(RealDelArgs),
    /// Weight 0 at once, wait until its active connections reach 0 (or --timeout), then
    /// optionally remove it. Exit status: 0 drained, 3 timeout with connections left.
    Drain(drain::DrainArgs),
}

// A real server of a virtual service, and its options.
#[derive(Debug, clap::Args)]
pub(crate) struct RealArgs {
    #[command(flatten)]
    key: ServiceKeyArgs,
    /// Real server ADDR[:PORT] (IPv6 as [ADDR]:PORT); no port: the service's.
    #[arg(short = 'r', long = "real-server", value_name = "ADDR[:PORT]")]
    real: String,
    #[command(flatten)]
    opts: DestOpts,
}

// A real server of a virtual service.
#[derive(Debug, clap::Args)]
pub(crate) struct RealDelArgs {
    #[command(flatten)]
    key: ServiceKeyArgs,
    /// Real server ADDR[:PORT].
    #[arg(short = 'r', long = "real-server", value_name = "ADDR[:PORT]")]
    real: String,
}

// `list`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    key: ServiceKeyArgs,
    /// Counters: connections, packets and bytes in and out.
    #[arg(long)]
    stats: bool,
    /// Rates: connections, packets and bytes per second.
    #[arg(long)]
    rate: bool,
    /// Exact numbers (no K, M, G, T).
    #[arg(short = 'X', long)]
    exact: bool,
    /// Upper and lower thresholds of the real servers.
    #[arg(long)]
    thresholds: bool,
    /// Persistent connections of the real servers.
    #[arg(long = "persistent-conn")]
    persistent_conn: bool,
    /// Tunnel type, port and checksum of the real servers.
    #[arg(long = "tun-info")]
    tun_info: bool,
    /// The connection table (/proc/net/ip_vs_conn) instead of the services, as
    /// ipvsadm -Lnc prints it, in the kernel's order; with --persistent-conn
    /// also the persistence engine's name and data.
    #[arg(short = 'c', long, conflicts_with_all = ["timeout", "daemon", "tcp", "udp", "sctp", "fwmark"])]
    connection: bool,
    /// The services and real servers in the kernel's order instead of ipvsadm's sorted order.
    #[arg(long)]
    nosort: bool,
    /// The connection timeouts instead of the table.
    #[arg(long, conflicts_with = "daemon")]
    timeout: bool,
    /// The sync daemons instead of the table.
    #[arg(long)]
    daemon: bool,
    /// Numeric output: always the case; accepted for ipvsadm habits.
    #[arg(short = 'n', long)]
    numeric: bool,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

// `save`.
#[derive(Debug, clap::Args)]
pub(crate) struct SaveArgs {
    /// Extension: also save real-server thresholds (-x, -y), which ipvsadm does not save.
    #[arg(long)]
    thresholds: bool,
    /// Numeric output: always the case; accepted for ipvsadm habits.
    #[arg(short = 'n', long)]
    numeric: bool,
}

// `restore`.
#[derive(Debug, clap::Args)]
pub(crate) struct RestoreArgs {
    /// File to read; stdin when absent or "-".
    file: Option<PathBuf>,
    /// Make the table equal to the input, changing only what differs: services
    /// not in the input are deleted, services in both are edited in place (never
    /// deleted and re-created), real servers likewise. The input must be a table
    /// (-A and -a lines).
    #[arg(long)]
    replace: bool,
    /// Print the changes instead of applying them.
    #[arg(long)]
    dry_run: bool,
}

// `zero`.
#[derive(Debug, clap::Args)]
pub(crate) struct ZeroArgs {
    #[command(flatten)]
    key: ServiceKeyArgs,
}

// `timeout`.
#[derive(Debug, clap::Args)]
pub(crate) struct TimeoutArgs {
    /// New timeouts in seconds: TCP TCPFIN UDP (0 leaves one unchanged). None: show them.
    #[arg(value_name = "SECONDS", num_args = 3)]
    set: Vec<u32>,
    /// JSON instead of text (when showing).
    #[arg(long)]
    json: bool,
}

/// `sync start|stop|show`.
#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
pub(crate) enum SyncCmd {
    /// Start a sync daemon (ipvsadm --start-daemon).
    Start(SyncStartArgs),
    /// Stop a sync daemon (ipvsadm --stop-daemon).
    Stop {
        /// master or backup.
        state: StateArg,
    },
    /// Show the running sync daemons (ipvsadm -L --daemon).
    Show(JsonArg),
}

/// Sync daemon role.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum StateArg {
    /// Sends connection state.
    Master,
    /// Receives connection state.
    Backup,
}

impl From<StateArg> for SyncState {
    fn from(s: StateArg) -> SyncState {
        match s {
            StateArg::Master => SyncState::Master,
            StateArg::Backup => SyncState::Backup,
        }
    }
}

// `sync start`.
#[derive(Debug, clap::Args)]
pub(crate) struct SyncStartArgs {
    /// master or backup.
    state: StateArg,
    /// Multicast interface (ipvsadm's default eth0).
    #[arg(long = "mcast-interface", value_name = "IFNAME", default_value = "eth0")]
    mcast_interface: String,
    /// Sync id, 0..255.
    #[arg(long, value_name = "ID", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=255))]
    syncid: u32,
    /// Maximum sync message length.
    #[arg(long = "sync-maxlen", value_name = "BYTES", value_parser = clap::value_parser!(u16).range(1..))]
    sync_maxlen: Option<u16>,
    /// Multicast group, IPv4 or IPv6 (default 224.0.0.81).
    #[arg(long = "mcast-group", value_name = "ADDR")]
    mcast_group: Option<IpAddr>,
    /// Multicast UDP port (default 8848).
    #[arg(long = "mcast-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    mcast_port: Option<u16>,
    /// Multicast TTL, 1..255 (default 1).
    #[arg(long = "mcast-ttl", value_name = "TTL", value_parser = clap::value_parser!(u8).range(1..))]
    mcast_ttl: Option<u8>,
}

// `--json`.
#[derive(Debug, clap::Args)]
pub(crate) struct JsonArg {
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// What the failed request was about, for ipvsadm's wording of `ESRCH`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Service,
    RealServer,
}

/// A library error in ipvsadm's words (exit 2 for refused input, 4 not
/// permitted, 1 for anything else).
fn ipvsadm_error(e: ipvs::Error, ctx: Ctx) -> CliError {
    use ipvs::Error as E;
    let msg = match &e {
        E::ServiceExists(k) => format!("Service already exists: {k}"),
        E::NoSuchService(k) if ctx == Ctx::RealServer => format!("Service not defined: {k}"),
        E::NoSuchService(k) => format!("No such service: {k}"),
        E::DestinationExists { service, destination } => {
            format!("Destination already exists: {destination} in {service}")
        }
        E::NoSuchDestination { service, destination } => format!("No such destination: {destination} in {service}"),
        E::SchedulerNotFound { .. } => format!("Scheduler or persistence engine not found: {e}"),
        E::DaemonExists(s) => format!("Daemon has already run: {s} sync daemon"),
        E::NoSuchDaemon(s) => format!("No daemon is running: no {s} sync daemon"),
        E::PermissionDenied => "Permission denied (you must be root)".into(),
        E::NotAvailable(m) => format!(
            "Can't initialize ipvs: {m}\nAre you sure that IP Virtual Server is built in the kernel or as module?"
        ),
        E::Kernel { context, errno } if *errno == libc::EINVAL => {
            format!("Invalid operation.  Possibly wrong module version, address not unicast, ...: {context}")
        }
        E::Kernel { context, errno } if *errno == libc::ENODEV => format!("No such device: {context}"),
        other => other.to_string(),
    };
    match e {
        E::PermissionDenied => CliError::not_permitted(msg),
        E::Invalid(_) => CliError::usage(msg),
        _ => CliError::failure(msg),
    }
}

async fn connect() -> Result<Ipvs, CliError> {
    Ipvs::connect().await.map_err(|e| ipvsadm_error(e, Ctx::Service))
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::usage(msg)
}

fn out(s: &str) -> Result<ExitCode, CliError> {
    out_with(|o| o.write_all(s.as_bytes()))
}

/// Write to stdout with `write` (in pieces that each end a line: stdout is
/// line-buffered, so each goes out as it is), then flush; as [`out`].
fn out_with(
    write: impl FnOnce(&mut std::io::StdoutLock<'static>) -> std::io::Result<()>,
) -> Result<ExitCode, CliError> {
    let mut o = std::io::stdout().lock();
    match write(&mut o).and_then(|_| o.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A closed pipe (lvsctl list | head) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(CliError::failure(format!("writing to stdout: {e}"))),
    }
}

/// Hand a large table over to the end of the process instead of freeing its
/// allocations (one per service, plus the text) one by one: the command is
/// about to exit, and the kernel takes the memory back in one piece.
fn keep_until_exit<T>(big: T) {
    std::mem::forget(big);
}

/// [`out`] of a large text, then [`keep_until_exit`].
fn out_and_keep(text: String) -> Result<ExitCode, CliError> {
    let r = out(&text);
    keep_until_exit(text);
    r
}

fn json<T: serde::Serialize>(v: &T) -> Result<ExitCode, CliError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| CliError::failure(format!("encoding JSON: {e}")))?;
    out(&(s + "\n"))
}

pub(crate) async fn run(cmd: AdminCmd) -> Result<ExitCode, CliError> {
    match cmd {
        AdminCmd::Service(c) => service(c).await,
        AdminCmd::Real(c) => real(c).await,
        AdminCmd::List(a) => list_cmd(a).await,
        AdminCmd::Save(a) => {
            let h = connect().await?;
            let t = h.dump().await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
            let r = out_with(|w| save::write_save(w, &t, a.thresholds));
            keep_until_exit(t);
            r
        }
        AdminCmd::Restore(a) => restore(a).await,
        AdminCmd::Clear => {
            connect().await?.flush().await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
            Ok(ExitCode::SUCCESS)
        }
        AdminCmd::Zero(a) => {
            let key = a.key.key().map_err(usage)?;
            connect().await?.zero(key.as_ref()).await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
            Ok(ExitCode::SUCCESS)
        }
        AdminCmd::Timeout(a) => {
            let h = connect().await?;
            if let [tcp, tcp_fin, udp] = a.set[..] {
                h.set_timeouts(&Timeouts::new(tcp, tcp_fin, udp)).await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
                return Ok(ExitCode::SUCCESS);
            }
            let t = h.timeouts().await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
            if a.json {
                json(&t)
            } else {
                out(&list::format_timeouts(&t))
            }
        }
        AdminCmd::Sync(c) => sync(c).await,
        AdminCmd::Info(a) => {
            let i = connect().await?.info().await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
            if a.json {
                return json(&serde_json::json!({
                    "version": i.version_string(),
                    "conn_table_size": i.conn_table_size,
                }));
            }
            out(&format!("IP Virtual Server version {} (size={})\n", i.version_string(), i.conn_table_size))
        }
        AdminCmd::Completions { shell } => {
            let mut cmd = <crate::Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "lvsctl", &mut buf);
            out(&String::from_utf8_lossy(&buf))
        }
        AdminCmd::Man { command } => {
            let mut cmd = <crate::Cli as clap::CommandFactory>::command();
            if let Some(name) = command {
                let sub = cmd
                    .find_subcommand(&name)
                    .cloned()
                    .ok_or_else(|| usage(format!("no command {name:?}: see lvsctl --help")))?;
                cmd = sub
                    .display_name(format!("lvsctl-{name}"))
                    .bin_name(format!("lvsctl {name}"))
                    .version(env!("CARGO_PKG_VERSION"));
            }
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .map_err(|e| CliError::failure(format!("rendering the man page: {e}")))?;
            out(&String::from_utf8_lossy(&buf))
        }
    }
}

async fn service(c: ServiceCmd) -> Result<ExitCode, CliError> {
    let build = |a: &ServiceArgs| -> Result<ipvs::Service, CliError> {
        spec::build_service(a.key.required_key().map_err(usage)?, &a.opts).map_err(usage)
    };
    let op = match &c {
        ServiceCmd::Add(a) => ipvs::Op::AddService(build(a)?),
        ServiceCmd::Edit(a) => ipvs::Op::UpdateService(build(a)?),
        ServiceCmd::Del(a) => ipvs::Op::DeleteService(a.key.required_key().map_err(usage)?),
    };
    let h = connect().await?;
    let res = match &op {
        ipvs::Op::AddService(s) => h.add_service(s).await,
        ipvs::Op::UpdateService(s) => h.update_service(s).await,
        ipvs::Op::DeleteService(k) => h.delete_service(k).await,
        _ => unreachable!("only service operations are built here"),
    };
    res.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
    Ok(ExitCode::SUCCESS)
}

async fn real(c: RealCmd) -> Result<ExitCode, CliError> {
    if let RealCmd::Drain(a) = c {
        return drain::run(a).await;
    }
    let op = match &c {
        RealCmd::Add(a) | RealCmd::Edit(a) => {
            let key = a.key.required_key().map_err(usage)?;
            let d = spec::build_destination(&key, &a.real, &a.opts).map_err(usage)?;
            if matches!(c, RealCmd::Add(_)) {
                ipvs::Op::AddDestination(key, d)
            } else {
                ipvs::Op::UpdateDestination(key, d)
            }
        }
        RealCmd::Del(a) => {
            let key = a.key.required_key().map_err(usage)?;
            ipvs::Op::DeleteDestination(key, spec::real_server_addr(&key, &a.real, None).map_err(usage)?)
        }
        RealCmd::Drain(_) => unreachable!("drain returned above"),
    };
    let h = connect().await?;
    let res = match &op {
        ipvs::Op::AddDestination(k, d) => h.add_destination(k, d).await,
        ipvs::Op::UpdateDestination(k, d) => h.update_destination(k, d).await,
        ipvs::Op::DeleteDestination(k, a) => h.delete_destination(k, *a).await,
        _ => unreachable!("only real-server operations are built here"),
    };
    res.map_err(|e| ipvsadm_error(e, Ctx::RealServer))?;
    Ok(ExitCode::SUCCESS)
}

async fn list_cmd(a: ListArgs) -> Result<ExitCode, CliError> {
    let key = a.key.key().map_err(usage)?;
    let h = connect().await?;
    if a.connection {
        return connections(a.persistent_conn, a.json);
    }
    if a.timeout {
        let t = h.timeouts().await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
        return if a.json { json(&t) } else { out(&list::format_timeouts(&t)) };
    }
    if a.daemon {
        let d = h.sync_daemons().await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
        return if a.json { json(&d) } else { out(&list::format_daemons(&d)) };
    }
    let view = list::View {
        stats: a.stats,
        rate: a.rate,
        exact: a.exact,
        thresholds: a.thresholds,
        persistent_conn: a.persistent_conn,
        tun_info: a.tun_info,
        nosort: a.nosort,
    };
    let (info, table) = match key {
        Some(k) => {
            let s = h.service(&k).await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
            let d = h.destinations(&k).await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
            (None, vec![(s, d)])
        }
        None => {
            let info = h.info().await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
            (Some(info), h.dump().await.map_err(|e| ipvsadm_error(e, Ctx::Service))?)
        }
    };
    if a.json {
        return out(&list::format_json(&table, a.nosort));
    }
    let text = list::format_list(info.as_ref(), &table, &view);
    keep_until_exit(table);
    out_and_keep(text)
}

/// `list --connection`: /proc/net/ip_vs_conn of this network namespace (the
/// one `--netns` entered), as ipvsadm -Lnc or as JSON.
fn connections(persistent_conn: bool, as_json: bool) -> Result<ExitCode, CliError> {
    let f = std::fs::File::open(conn::CONN_PROC_FILE)
        .map_err(|_| CliError::failure(format!("cannot open file {}", conn::CONN_PROC_FILE)))?;
    let r = std::io::BufReader::with_capacity(64 * 1024, f);
    let read_err = |e: std::io::Error| CliError::failure(format!("reading {}: {e}", conn::CONN_PROC_FILE));
    if as_json {
        return json(&conn::parse(r).map_err(read_err)?);
    }
    let mut o = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let res = conn::write_text(r, &mut o, persistent_conn).and_then(|_| o.flush());
    match res {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A closed pipe (lvsctl list -c | head) is not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof) => {
            Err(CliError::failure(e.to_string()))
        }
        Err(e) => Err(read_err(e)),
    }
}

async fn restore(a: RestoreArgs) -> Result<ExitCode, CliError> {
    let mut text = String::new();
    match a.file.as_deref() {
        None => std::io::stdin().read_to_string(&mut text).map(|_| ()),
        Some(p) if p.as_os_str() == "-" => std::io::stdin().read_to_string(&mut text).map(|_| ()),
        Some(p) => std::fs::read_to_string(p).map(|t| text = t),
    }
    .map_err(|e| usage(format!("cannot read the rules: {e}")))?;
    // Everything is parsed and checked before anything is applied.
    // (operation, input line it came from)
    let (h, ops): (Ipvs, Vec<(ipvs::Op, Option<usize>)>) = if a.replace {
        // The input is parsed on a blocking thread while the table is read
        // (the kernel's work, done in this thread's and the dump helper's
        // system calls): a large reconcile costs about one dump, not a parse
        // plus a dump. Reading changes nothing, and a bad input is still
        // reported (before any other error) without anything applied.
        let parse = tokio::task::spawn_blocking(move || rules::parse_desired_table(&text).map_err(|e| e.to_string()));
        let h = connect().await;
        let current = match &h {
            Ok(h) => Some(h.dump().await),
            Err(_) => None,
        };
        let want = parse.await.map_err(|e| CliError::failure(format!("parsing the rules: {e}")))?.map_err(usage)?;
        let h = h?;
        let current = current.unwrap_or_else(|| unreachable!("dumped once connected"));
        let current = current.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
        let ops = plan(&current, &want, &Scope::All).into_iter().map(|o| (o, None)).collect();
        keep_until_exit((current, want));
        (h, ops)
    } else {
        let rules = rules::parse_rules(&text).map_err(|e| usage(e.to_string()))?;
        drop(text);
        (connect().await?, rules.into_iter().map(|r| (r.op, Some(r.line))).collect())
    };
    let (ops, lines): (Vec<ipvs::Op>, Vec<Option<usize>>) = ops.into_iter().unzip();
    if a.dry_run {
        let mut s = String::new();
        for op in &ops {
            s.push_str(&format!("{op}\n"));
        }
        return out(&s);
    }
    let applied = h.apply(&ops).await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
    let (outcomes, interrupted) = applied.into_parts();
    let mut failed = 0;
    for ((op, line), r) in ops.iter().zip(&lines).zip(outcomes) {
        if let ipvs::OpOutcome::Failed(e) = r {
            failed += 1;
            let ctx = match op {
                ipvs::Op::AddDestination(..) | ipvs::Op::UpdateDestination(..) | ipvs::Op::DeleteDestination(..) => {
                    Ctx::RealServer
                }
                _ => Ctx::Service,
            };
            let msg = ipvsadm_error(e, ctx).msg;
            match line {
                Some(n) => eprintln!("lvsctl: line {n}: {msg}"),
                None => eprintln!("lvsctl: {op}: {msg}"),
            }
        }
    }
    if let Some(e) = interrupted {
        // The changes after the cut may or may not have been applied.
        let msg = ipvsadm_error(e, Ctx::Service).msg;
        return Err(CliError::failure(format!(
            "{msg}: cut short; {failed} of {} changes failed, the others were applied or may have been (read the table again)",
            ops.len()
        )));
    }
    if failed > 0 {
        return Err(CliError::failure(format!("{failed} of {} changes failed (the others were applied)", ops.len())));
    }
    Ok(ExitCode::SUCCESS)
}

async fn sync(c: SyncCmd) -> Result<ExitCode, CliError> {
    let h = connect().await?;
    match c {
        SyncCmd::Start(a) => {
            let d = SyncDaemon::new(a.state.into(), a.mcast_interface, a.syncid)
                .with_max_len(a.sync_maxlen)
                .with_mcast_group(a.mcast_group)
                .with_mcast_port(a.mcast_port)
                .with_mcast_ttl(a.mcast_ttl);
            h.start_sync_daemon(&d).await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
        }
        SyncCmd::Stop { state } => {
            h.stop_sync_daemon(state.into()).await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
        }
        SyncCmd::Show(j) => {
            let d = h.sync_daemons().await.map_err(|e| ipvsadm_error(e, Ctx::Service))?;
            return if j.json { json(&d) } else { out(&list::format_daemons(&d)) };
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::Cli;

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    /// The subcommands are deferred: each one's description, once built, is
    /// still the one on its enum variant (a doc comment on its `Args` struct
    /// would replace it).
    #[test]
    fn deferred_subcommands_keep_their_descriptions() {
        let mut cmd = Cli::command();
        cmd.build();
        let about = |path: &[&str]| {
            let mut c = &cmd;
            for name in path {
                c = c.find_subcommand(name).unwrap_or_else(|| panic!("no subcommand {name}"));
            }
            c.get_about().map(|a| a.to_string()).unwrap_or_default()
        };
        let cases: [(&[&str], &str); 6] = [
            (&["director"], "Run this host as an LVS director"),
            (&["director", "run"], "Run as a daemon"),
            (&["realserver", "start"], "Put the VIPs on lo"),
            (&["service", "add"], "Add a virtual service"),
            (&["real", "drain"], "Weight 0 at once"),
            (&["list"], "List the table"),
        ];
        for (path, start) in cases {
            let got = about(path);
            assert!(got.starts_with(start), "{path:?}: {got:?}");
        }
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("lvsctl").chain(args.iter().copied()))
    }

    /// The admin command `args` parse into (panics on anything else).
    fn admin(args: &[&str]) -> AdminCmd {
        match parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}")).cmd {
            crate::cli::Cmd::Admin(a) => a,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    /// Each ipvsadm letter lands in the option it stands for, and builds
    /// what ipvsadm would send.
    #[test]
    fn ipvsadm_letters_on_the_command_line() {
        use ipvs::{Family, Forward, Netmask, Persistence, Scheduler, ServiceKey};
        let tcp80 = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());

        let AdminCmd::Service(ServiceCmd::Add(a)) =
            admin(&["service", "add", "-t", "10.0.0.1:80", "-s", "rr", "-p", "-M", "255.255.255.0"])
        else {
            panic!("not service add")
        };
        let key = a.key.key().unwrap().unwrap();
        assert_eq!(key, tcp80);
        let s = spec::build_service(key, &a.opts).unwrap();
        assert_eq!(s.scheduler, Scheduler::Rr);
        assert_eq!(
            s.persistence,
            Some(Persistence { timeout: 360, netmask: Some(Netmask::V4("255.255.255.0".parse().unwrap())) })
        );

        let AdminCmd::Service(ServiceCmd::Edit(a)) = admin(&["svc", "edit", "-f", "1", "-6", "-p", "60", "-M", "64"])
        else {
            panic!("not service edit")
        };
        let key = a.key.key().unwrap().unwrap();
        assert_eq!(key, ServiceKey::fwmark(1, Family::Inet6));
        let s = spec::build_service(key, &a.opts).unwrap();
        assert_eq!(s.persistence, Some(Persistence { timeout: 60, netmask: Some(Netmask::V6(64)) }));
        assert_eq!(s.scheduler, Scheduler::Wlc, "ipvsadm's default scheduler");

        let AdminCmd::Real(RealCmd::Add(a)) =
            admin(&["dest", "add", "-u", "10.0.0.1:53", "-r", "10.1.0.1:53", "-m", "-w", "3", "-x", "9", "-y", "1"])
        else {
            panic!("not real add")
        };
        let key = a.key.key().unwrap().unwrap();
        assert_eq!(key, ServiceKey::udp("10.0.0.1:53".parse().unwrap()));
        let d = spec::build_destination(&key, &a.real, &a.opts).unwrap();
        assert_eq!(d.addr, "10.1.0.1:53".parse().unwrap());
        assert_eq!(d.forward, Forward::Masq);
        assert_eq!((d.weight, d.upper_threshold, d.lower_threshold), (3, 9, 1));

        let AdminCmd::Real(RealCmd::Del(a)) = admin(&["real", "del", "-t", "10.0.0.1:80", "-r", "10.1.0.1"]) else {
            panic!("not real del")
        };
        assert_eq!((a.key.key().unwrap(), a.real.as_str()), (Some(tcp80), "10.1.0.1"));

        let AdminCmd::List(l) = admin(&["ls", "--stats", "--exact", "-t", "10.0.0.1:80"]) else { panic!("not list") };
        assert!(l.stats && l.exact && !l.rate && !l.connection);
        assert_eq!(l.key.key().unwrap(), Some(tcp80));
        let AdminCmd::List(l) = admin(&["list", "-n", "-c"]) else { panic!("not list") };
        assert!(l.numeric && l.connection && !l.persistent_conn && !l.json);
        let AdminCmd::List(l) = admin(&["list", "--connection", "--persistent-conn", "--json"]) else {
            panic!("not list")
        };
        assert!(l.connection && l.persistent_conn && l.json && !l.numeric);
        let AdminCmd::List(l) = admin(&["list", "--nosort", "--stats"]) else { panic!("not list") };
        assert!(l.nosort && l.stats && !l.timeout);
        // As in ipvsadm, -c lists every connection: not with a service, --timeout or --daemon.
        assert!(parse(&["list", "-c", "-t", "10.0.0.1:80"]).is_err());
        assert!(parse(&["list", "-c", "--timeout"]).is_err());
        assert!(parse(&["list", "-c", "--daemon"]).is_err());
        let c = parse(&["--netns", "x", "list", "--timeout"]).unwrap();
        assert_eq!(c.netns.as_deref(), Some("x"));
        let crate::cli::Cmd::Admin(AdminCmd::List(l)) = c.cmd else { panic!("not list") };
        assert!(l.timeout && !l.daemon);
        let AdminCmd::Timeout(t) = admin(&["timeout", "900", "120", "300"]) else { panic!("not timeout") };
        assert_eq!(t.set, [900, 120, 300]);
        assert!(parse(&["timeout", "900"]).is_err());
        let AdminCmd::Sync(SyncCmd::Start(s)) = admin(&[
            "sync",
            "start",
            "master",
            "--mcast-interface",
            "eth1",
            "--syncid",
            "9",
            "--sync-maxlen",
            "1400",
            "--mcast-group",
            "239.1.1.1",
            "--mcast-port",
            "9000",
            "--mcast-ttl",
            "2",
        ]) else {
            panic!("not sync start")
        };
        assert!(matches!(s.state, StateArg::Master));
        assert_eq!(s.mcast_interface, "eth1");
        assert_eq!(
            (s.syncid, s.sync_maxlen, s.mcast_group, s.mcast_port, s.mcast_ttl),
            (9, Some(1400), Some("239.1.1.1".parse().unwrap()), Some(9000), Some(2))
        );
        assert!(parse(&["sync", "start", "master", "--syncid", "256"]).is_err());
        // A usage error exits 2 (clap's exit code for usage errors).
        assert_eq!(parse(&["service", "add", "--bogus"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn completions_and_man_page_are_generated() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "lvsctl", &mut buf);
            let s = String::from_utf8(buf).unwrap();
            assert!(s.contains("restore") && s.contains("tun-remcsum"), "{shell}");
        }
        let mut buf = Vec::new();
        clap_mangen::Man::new(Cli::command()).render(&mut buf).unwrap();
        let s = String::from_utf8(buf).unwrap();
        assert!(s.contains(".TH lvsctl"), "{s}");
        let AdminCmd::Man { command } = admin(&["man", "restore"]) else { panic!("not man") };
        assert_eq!(command.as_deref(), Some("restore"));
    }
}
