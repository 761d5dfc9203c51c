//! `lvsctl realserver start|stop|status`: the flags, and what each prints.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lvsctl::config::{self, Config, IfName, Origin};
use lvsctl::realserver::{self as rs, Status};
use lvsctl::spec::RealserverSpec;

use super::{done, stopped, CliError};

// Arguments of `lvsctl realserver`.
#[derive(Debug, clap::Args)]
pub(crate) struct RealserverArgs {
    #[command(subcommand)]
    cmd: RealserverCmd,
}

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
enum RealserverCmd {
    /// Put the VIPs on lo and set arp_ignore=1, arp_announce=2 (all, lo, the interface).
    Start(StartArgs),
    /// Remove the VIPs start added and restore every sysctl to its previous value.
    Stop,
    /// Compare addresses and sysctls with what start configured. Exit status:
    /// 0 running, 1 degraded (prints what is missing), 3 not running, 4 not permitted.
    Status(StatusArgs),
    /// Answer every TCP connection on PORT with NAME (for scripts/demo).
    #[command(hide = true)]
    DemoServe {
        /// What to answer.
        #[arg(long)]
        name: String,
        /// TCP port to listen on (all addresses).
        #[arg(long)]
        port: u16,
    },
}

// `realserver start` flags (or `--config FILE`).
#[derive(Debug, Default, clap::Args)]
pub(crate) struct StartArgs {
    /// TOML configuration with a [realserver] section (see docs/configuration.md); excludes --vip and --iface.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A virtual IP to accept traffic for (repeatable).
    #[arg(long = "vip", value_name = "ADDR")]
    vips: Vec<String>,
    /// The interface facing clients and the director (its ARP sysctls are set too).
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
}

// `status` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(args: RealserverArgs) -> Result<ExitCode, CliError> {
    match args.cmd {
        RealserverCmd::Start(a) => start(a).await,
        RealserverCmd::Stop => stop().await,
        RealserverCmd::Status(a) => status(a).await,
        RealserverCmd::DemoServe { name, port } => demo_serve(&name, port),
    }
}

/// The validated spec from `--config` or the flags. Touches nothing.
fn start_spec(a: &StartArgs) -> Result<RealserverSpec, CliError> {
    if let Some(path) = &a.config {
        if !a.vips.is_empty() || a.iface.is_some() {
            return Err(CliError::usage("--config cannot be combined with --vip or --iface"));
        }
        return Config::load(path).and_then(|c| c.realserver()).map_err(|e| CliError::usage(e.0));
    }
    let mut vips = Vec::new();
    for v in &a.vips {
        vips.push(
            v.parse::<IpAddr>()
                .map_err(|_| CliError::usage(format!("malformed VIP {v:?}: expected an IPv4 or IPv6 address")))?,
        );
    }
    let iface = match &a.iface {
        Some(i) => Some(i.parse::<IfName>().map_err(CliError::usage)?),
        None => None,
    };
    config::validate_realserver(vips, iface, &Origin::flags(), None).map_err(|e| CliError::usage(e.0))
}

async fn start(args: StartArgs) -> Result<ExitCode, CliError> {
    let spec = start_spec(&args)?;
    let report = done("realserver", rs::start(&spec).await)?;
    if report.changes.is_empty() {
        println!("realserver: already running as configured; nothing changed");
    } else {
        println!("realserver: running ({} VIPs on lo)", spec.vips.len());
    }
    Ok(ExitCode::SUCCESS)
}

async fn stop() -> Result<ExitCode, CliError> {
    lvsctl::host::require_root("lvsctl realserver stop")?;
    let dir = lvsctl::state::dir();
    let had_state = lvsctl::state::path(&dir, lvsctl::state::Role::Realserver)?.exists();
    stopped("realserver", had_state, rs::stop().await)
}

async fn status(args: StatusArgs) -> Result<ExitCode, CliError> {
    let s = rs::status().await?;
    print_status(&s, args.json);
    Ok(ExitCode::from(s.exit_code))
}

fn print_status(s: &Status, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(s).unwrap_or_default());
        return;
    }
    let mut out = String::new();
    match s.problems.len() {
        0 => out.push_str(&format!("realserver: {}\n", s.status)),
        n => {
            out.push_str(&format!("realserver: {} ({n} problem{})\n", s.status, if n == 1 { "" } else { "s" }));
            for p in &s.problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
    }
    for a in &s.addresses {
        let what = if a.present { "present" } else { "MISSING" };
        out.push_str(&format!("VIP {}/{} on {}: {what}\n", a.addr, a.prefix_len, a.iface));
    }
    for c in &s.sysctls {
        out.push_str(&c.line());
        out.push('\n');
    }
    print!("{out}");
}

fn demo_serve(name: &str, port: u16) -> Result<ExitCode, CliError> {
    let l = TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))
        .or_else(|_| TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))))
        .map_err(|e| CliError::failure(format!("cannot listen on port {port}: {e}")))?;
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        c.set_read_timeout(Some(Duration::from_millis(200))).ok();
        let mut buf = [0u8; 64];
        let _ = c.read(&mut buf);
        let _ = c.write_all(format!("{name}\n").as_bytes());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lvsctl::realserver::sysctl_targets;

    #[test]
    fn seed_flags_and_targets() {
        let a = StartArgs { vips: vec!["10.19.70.166".into()], iface: Some("enp1s0".into()), ..Default::default() };
        let s = start_spec(&a).unwrap();
        assert_eq!(sysctl_targets(&s), ["all", "lo", "enp1s0"]);
        let a = StartArgs { vips: vec!["2001:db8::1".into()], ..Default::default() };
        assert!(sysctl_targets(&start_spec(&a).unwrap()).is_empty());
    }

    #[test]
    fn bad_flags() {
        for (a, want) in [
            (StartArgs { vips: vec!["10.19.70".into()], ..Default::default() }, "malformed VIP"),
            (StartArgs::default(), "no VIP"),
            (StartArgs { vips: vec!["1.2.3.4".into()], iface: Some("x y".into()), ..Default::default() }, "interface"),
            (StartArgs { vips: vec!["1.2.3.4".into()], config: Some("/c".into()), ..Default::default() }, "--config"),
        ] {
            let e = start_spec(&a).unwrap_err();
            assert_eq!(e.code, 2);
            assert!(e.msg.contains(want), "{} lacks {want}", e.msg);
        }
    }
}
