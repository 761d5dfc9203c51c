//! `lvsctl director start|stop|status|run` (and the hidden `ha-standby`
//! keepalived runs): the flags, and what each prints.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ipvs::Stats;
use lvsctl::config::{self, Config, DirectorConfig, ForwardMethod, IfName, Origin, RealConfig, ServiceConfig};
use lvsctl::director::{Director, Status};
use lvsctl::spec::DirectorSpec;

use super::{done, stopped, CliError};

// Arguments of `lvsctl director`.
#[derive(Debug, clap::Args)]
pub(crate) struct DirectorArgs {
    #[command(subcommand)]
    cmd: DirectorCmd,
}

#[derive(Debug, clap::Subcommand)]
#[command(defer = true)]
enum DirectorCmd {
    /// Put the VIPs on their interface and create the virtual services and
    /// their real servers; run again to reconcile (prints what it changed).
    Start(StartArgs),
    /// Remove exactly what start created (its services and VIPs); never flushes.
    Stop,
    /// Compare the kernel with what start configured. Exit status: 0 running,
    /// 1 degraded (prints what is missing), 3 not running, 4 not permitted.
    Status(StatusArgs),
    /// Run as a daemon: apply the config like start, then health-check every
    /// real server and act (weight 0 or removal, sorry server); SIGHUP
    /// reloads, SIGTERM/SIGINT stop (see docs/health-daemon.md).
    Run(RunArgs),
    /// Connect to ADDR:PORT COUNT times and print each answer (for scripts/demo).
    #[command(hide = true)]
    DemoConnect {
        /// Where to connect.
        #[arg(long)]
        to: SocketAddr,
        /// How many connections, one after the other.
        #[arg(long, default_value_t = 6)]
        count: u32,
    },
    /// Failover: the standby weights, straight in the kernel (keepalived runs
    /// this when the host leaves MASTER; see lvsctl::ha).
    #[command(hide = true)]
    HaStandby {
        /// Where to log what is done.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Nothing is done while this process (`director run`) lives: it
        /// handles the roles itself.
        #[arg(long, value_name = "PID")]
        unless_pid: Option<u32>,
        /// First wait for this process (keepalived) to end.
        #[arg(long, value_name = "PID")]
        wait_pid: Option<u32>,
        /// Do it in this process (else in a detached copy of it, which
        /// keepalived cannot kill when it stops right after running it).
        #[arg(long)]
        foreground: bool,
        /// The VIPs of the services to adjust.
        vips: Vec<IpAddr>,
    },
}

// `director start` flags (or `--config FILE`).
#[derive(Debug, Default, clap::Args)]
pub(crate) struct StartArgs {
    /// TOML configuration with a [director] section (see docs/configuration.md); excludes the other flags.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Virtual IP address (IPv4 or IPv6).
    #[arg(long, value_name = "ADDR")]
    vip: Option<String>,
    /// Port of the virtual service, 1..65535; 0 = every port (needs --persistence).
    #[arg(long, value_name = "N")]
    port: Option<String>,
    /// Interface the VIP goes on (facing clients and real servers).
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// A real server (repeatable); the port defaults to the service's, weight to 1.
    #[arg(long = "real", value_name = "ADDR[:PORT][,weight=N]")]
    reals: Vec<String>,
    /// Scheduler: rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos.
    #[arg(long, value_name = "NAME")]
    scheduler: Option<String>,
    /// Protocol of the virtual service.
    #[arg(long, value_name = "tcp|udp|sctp")]
    protocol: Option<String>,
    /// Persistence timeout in seconds.
    #[arg(long, value_name = "SECS")]
    persistence: Option<String>,
    /// Forwarding method to the real servers.
    #[arg(long, value_name = "dr|tunnel|nat")]
    forward: Option<String>,
}

// `status` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

// Arguments of `lvsctl director run`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    /// The TOML config (the file `director start --config` takes, with `check`
    /// settings). It must be writable by root only.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// On SIGTERM or SIGINT, remove the virtual services and VIPs (as `director
    /// stop` does) instead of leaving them in place.
    #[arg(long)]
    teardown_on_exit: bool,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (wins over the
    /// config's `metrics`; e.g. 127.0.0.1:9101).
    #[arg(long, value_name = "ADDR:PORT", value_parser = lvsctl::spec::parse_metrics_addr)]
    metrics: Option<std::net::SocketAddr>,
}

pub(crate) async fn run(args: DirectorArgs) -> Result<ExitCode, CliError> {
    match args.cmd {
        DirectorCmd::Start(a) => start(a).await,
        DirectorCmd::Stop => stop().await,
        DirectorCmd::Status(a) => status(a).await,
        DirectorCmd::Run(a) => {
            let mut opts = lvsctl::daemon::Options::new(a.config);
            opts.teardown_on_exit = a.teardown_on_exit;
            opts.metrics = a.metrics;
            lvsctl::daemon::run(opts).await?;
            Ok(ExitCode::SUCCESS)
        }
        DirectorCmd::DemoConnect { to, count } => demo_connect(to, count),
        DirectorCmd::HaStandby { state_dir, unless_pid, wait_pid, foreground, vips } => {
            lvsctl::ha::standby(state_dir.as_deref(), unless_pid, wait_pid, foreground, &vips).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The validated spec from `--config` or the flags. Touches nothing.
fn start_spec(a: &StartArgs) -> Result<DirectorSpec, CliError> {
    let usage = |e: config::ConfigError| CliError::usage(e.0);
    if let Some(path) = &a.config {
        let extra: Vec<&str> = [
            ("--vip", a.vip.is_some()),
            ("--port", a.port.is_some()),
            ("--iface", a.iface.is_some()),
            ("--real", !a.reals.is_empty()),
            ("--scheduler", a.scheduler.is_some()),
            ("--protocol", a.protocol.is_some()),
            ("--persistence", a.persistence.is_some()),
            ("--forward", a.forward.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect();
        if !extra.is_empty() {
            return Err(CliError::usage(format!("--config cannot be combined with {}", extra.join(", "))));
        }
        return Config::load(path).and_then(|c| c.director()).map_err(usage);
    }
    let svc = flag_service(a)?;
    let iface = svc.iface.clone();
    let d = DirectorConfig { iface, services: vec![toml::Spanned::new(0..0, svc)], ..Default::default() };
    config::validate_director(&d, &Origin::flags(), None).map_err(usage)
}

/// The `[[director.service]]` table the flags stand for, built directly.
fn flag_service(a: &StartArgs) -> Result<ServiceConfig, CliError> {
    let missing: Vec<&str> = [("--vip", a.vip.is_none()), ("--port", a.port.is_none()), ("--iface", a.iface.is_none())]
        .into_iter()
        .filter_map(|(n, m)| m.then_some(n))
        .collect();
    if !missing.is_empty() {
        return Err(CliError::usage(format!("director start needs {} (or --config FILE)", missing.join(", "))));
    }
    let vip_s = a.vip.as_deref().unwrap_or_default();
    let vip: IpAddr = vip_s
        .parse()
        .map_err(|_| CliError::usage(format!("malformed VIP {vip_s:?}: expected an IPv4 or IPv6 address")))?;
    let port_s = a.port.as_deref().unwrap_or_default();
    let port: u16 = port_s
        .parse()
        .map_err(|_| CliError::usage(format!("invalid port {port_s:?}: expected 1..65535 (0 = every port)")))?;
    let iface: IfName = a.iface.as_deref().unwrap_or_default().parse().map_err(CliError::usage)?;
    let mut svc = ServiceConfig::new(vip, Some(port));
    svc.iface = Some(iface);
    if let Some(p) = &a.protocol {
        svc.protocol = p.parse().map_err(|e: ipvs::Error| CliError::usage(e.to_string()))?;
    }
    if let Some(s) = &a.scheduler {
        svc.scheduler = s.parse().map_err(CliError::usage)?;
    }
    if let Some(p) = &a.persistence {
        svc.persistence = Some(p.parse::<u32>().ok().filter(|t| *t > 0).ok_or_else(|| {
            CliError::usage(format!("invalid persistence {p:?}: expected a number of seconds, at least 1"))
        })?);
    }
    if let Some(f) = &a.forward {
        svc.forward = f.parse::<ForwardMethod>().map_err(CliError::usage)?;
    }
    for r in &a.reals {
        svc.reals.push(toml::Spanned::new(0..0, RealConfig::parse(r).map_err(CliError::usage)?));
    }
    Ok(svc)
}

async fn start(args: StartArgs) -> Result<ExitCode, CliError> {
    let spec = start_spec(&args)?;
    lvsctl::host::require_root("lvsctl director start")?;
    let mut director = Director::connect().await?;
    let report = done("director", director.reconcile(&spec, &spec.desired_services()).await)?;
    if report.changes.is_empty() {
        println!("director: already running as configured; nothing changed");
    } else {
        println!("director: running ({} virtual services, {} real servers)", report.services, report.real_servers);
    }
    Ok(ExitCode::SUCCESS)
}

async fn stop() -> Result<ExitCode, CliError> {
    lvsctl::host::require_root("lvsctl director stop")?;
    let mut director = Director::connect().await?;
    let had_state = lvsctl::state::path(director.state_dir(), lvsctl::state::Role::Director)?.exists();
    stopped("director", had_state, director.stop().await)
}

async fn status(args: StatusArgs) -> Result<ExitCode, CliError> {
    let director = Director::connect().await?;
    let s = director.status().await?;
    print_status(&s, args.json);
    Ok(ExitCode::from(s.exit_code))
}

/// Width of the left part of the table lines (ipvsadm's `-Ln` columns).
const LEFT: usize = 70;

fn stats_cols(s: Option<&Stats>) -> String {
    match s {
        Some(s) => format!(" {:>8} {:>8} {:>8} {:>8} {:>8}", s.conns, s.in_pkts, s.out_pkts, s.in_bytes, s.out_bytes),
        None => String::new(),
    }
}

fn print_status(s: &Status, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(s).unwrap_or_default());
    } else {
        print!("{}", render(s, s.info));
    }
}

/// The human status: state, problems, VIPs, then the table of `ipvsadm -Ln
/// --stats` with forwarding method, weight and connection columns.
fn render(s: &Status, info: Option<ipvs::Info>) -> String {
    let mut out = String::new();
    match s.problems.len() {
        0 => out.push_str(&format!("director: {}\n", s.status)),
        n => {
            out.push_str(&format!("director: {} ({n} problem{})\n", s.status, if n == 1 { "" } else { "s" }));
            for p in &s.problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
    }
    if s.exit_code == 3 {
        return out;
    }
    for a in &s.addresses {
        let what = if a.present { "present" } else { "MISSING" };
        out.push_str(&format!("VIP {}/{} on {}: {what}\n", a.addr, a.prefix_len, a.iface));
    }
    for c in &s.sysctls {
        out.push_str(&c.line());
        out.push('\n');
    }
    if let Some(i) = info {
        out.push_str(&format!("IP Virtual Server version {} (size={})\n", i.version_string(), i.conn_table_size));
    }
    out.push_str(&format!(
        "{:<LEFT$} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        "Prot LocalAddress:Port Scheduler Flags", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
    ));
    out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
    for svc in &s.services {
        render_service(&mut out, svc);
    }
    if let Some(h) = &s.health {
        out.push_str(&h.render());
    }
    out
}

/// A service's lines in the table of `render`.
fn render_service(out: &mut String, svc: &lvsctl::director::status::ServiceStatus) {
    let mut left = format!("{:<4} {} {}", svc.protocol, svc.address, svc.scheduler);
    if let Some(p) = svc.persistence {
        left.push_str(&format!(" persistent {p}"));
    }
    if !svc.present {
        left.push_str(" (MISSING)");
    }
    out.push_str(format!("{left:<LEFT$}{}", stats_cols(svc.stats.as_ref())).trim_end());
    out.push('\n');
    for r in &svc.real_servers {
        let mut left = format!(
            "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
            r.address.to_string(),
            r.forward,
            r.weight,
            r.active_conns,
            r.inactive_conns
        );
        if !r.present {
            left = format!("  -> {:<28} (MISSING)", r.address.to_string());
        } else if !r.configured {
            left.push_str(" (not configured)");
        }
        out.push_str(format!("{left:<LEFT$}{}", stats_cols(r.stats.as_ref())).trim_end());
        out.push('\n');
    }
}

fn demo_connect(to: SocketAddr, count: u32) -> Result<ExitCode, CliError> {
    for i in 1..=count {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .map_err(|e| CliError::failure(format!("connection {i} to {to}: {e}")))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let _ = s.write_all(b"hello\n");
        let mut answer = String::new();
        s.read_to_string(&mut answer).map_err(|e| CliError::failure(format!("connection {i} to {to}: {e}")))?;
        println!("connection {i} to {to}: answered by {}", answer.trim());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs::ServiceKey;
    use lvsctl::director::plan::forwarding_sysctls;
    use lvsctl::director::status::{AddrStatus, RealStatus, ServiceStatus};

    fn args(f: impl FnOnce(&mut StartArgs)) -> StartArgs {
        let mut a = StartArgs {
            vip: Some("10.19.70.166".into()),
            port: Some("15858".into()),
            iface: Some("enp1s0".into()),
            reals: vec!["10.18.68.186".into(), "10.18.68.187".into()],
            ..Default::default()
        };
        f(&mut a);
        a
    }

    fn err(a: StartArgs) -> CliError {
        start_spec(&a).unwrap_err()
    }

    #[test]
    fn run_takes_a_metrics_address() {
        use clap::Parser;
        let run = |extra: &[&str]| {
            let argv = [&["lvsctl", "director", "run", "--config", "/etc/lvsctl.toml"][..], extra].concat();
            crate::cli::Cli::try_parse_from(argv)
        };
        let metrics = |c: crate::cli::Cli| match c.cmd {
            crate::cli::Cmd::Director(DirectorArgs { cmd: DirectorCmd::Run(r) }) => r.metrics,
            _ => panic!("not director run"),
        };
        assert_eq!(metrics(run(&[]).unwrap()), None);
        assert_eq!(metrics(run(&["--metrics", "127.0.0.1:9101"]).unwrap()), Some("127.0.0.1:9101".parse().unwrap()));
        for bad in ["127.0.0.1", "localhost:9101", "127.0.0.1:0", "127.0.0.1:99999"] {
            let e = run(&["--metrics", bad]).unwrap_err().to_string();
            assert!(e.contains("--metrics") && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn seed_flags() {
        let s = start_spec(&args(|_| {})).unwrap();
        assert_eq!(s.services.len(), 1);
        let d = &s.services[0].desired;
        assert_eq!(d.service.key, ServiceKey::tcp("10.19.70.166:15858".parse().unwrap()));
        assert_eq!(d.service.scheduler, ipvs::Scheduler::Rr);
        assert_eq!(d.destinations.len(), 2);
        assert!(d.destinations.iter().all(|x| x.weight == 1 && x.forward == ipvs::Forward::Route));
    }

    #[test]
    fn only_nat_needs_forwarding_in_the_family_of_its_real_servers() {
        assert!(forwarding_sysctls(&start_spec(&args(|_| {})).unwrap()).is_empty());
        for f in ["dr", "tunnel"] {
            assert!(forwarding_sysctls(&start_spec(&args(|a| a.forward = Some(f.into()))).unwrap()).is_empty());
        }
        let nat = start_spec(&args(|a| a.forward = Some("nat".into()))).unwrap();
        assert_eq!(forwarding_sysctls(&nat), vec![(false, "all".to_owned(), "forwarding", "1")]);
        let nat6 = start_spec(&args(|a| {
            a.forward = Some("nat".into());
            a.vip = Some("2001:db8::10".into());
            a.reals = vec!["2001:db8::11".into(), "2001:db8::12".into()];
        }))
        .unwrap();
        assert_eq!(forwarding_sysctls(&nat6), vec![(true, "all".to_owned(), "forwarding", "1")]);
    }

    #[test]
    fn bad_flags_are_usage_errors_of_one_line() {
        for (a, want) in [
            (args(|a| a.vip = Some("10.19.70.1666".into())), "malformed VIP"),
            (args(|a| a.reals.push("10.18.68".into())), "malformed real server address"),
            (args(|a| a.scheduler = Some("fastest".into())), "unknown scheduler \"fastest\""),
            (args(|a| a.reals.push("10.18.68.188,weight=65536".into())), "weight 65536 is out of range"),
            (args(|a| a.reals.push("2001:db8::1".into())), "address families must match"),
            (args(|a| a.port = Some("65536".into())), "invalid port"),
            (args(|a| a.port = Some("0".into())), "needs persistence"),
            (args(|a| a.persistence = Some("4294968".into())), "persistence timeout 4294968 is out of range"),
            (args(|a| a.protocol = Some("icmp".into())), "unknown protocol"),
            (args(|a| a.forward = Some("magic".into())), "unknown forwarding method"),
            (args(|a| a.iface = Some("a/b".into())), "invalid interface name"),
            (args(|a| a.vip = None), "needs --vip"),
            (args(|a| a.config = Some("/x.toml".into())), "--config cannot be combined"),
            (args(|a| a.reals.push("10.18.68.186".into())), "listed twice"),
        ] {
            let e = err(a);
            assert_eq!(e.code, 2, "{}", e.msg);
            assert!(e.msg.contains(want), "{:?} does not contain {want:?}", e.msg);
            assert!(!e.msg.contains('\n'));
        }
        let e = err(StartArgs { config: Some("/nonexistent/lvsctl.toml".into()), ..Default::default() });
        assert!(e.msg.starts_with("cannot read config file /nonexistent/lvsctl.toml"), "{}", e.msg);
    }

    #[test]
    fn human_status_lines_up_like_ipvsadm_stats() {
        let stats = |conns, pkts, bytes| {
            let mut s = Stats::default();
            (s.conns, s.in_pkts, s.out_pkts, s.in_bytes, s.out_bytes) = (conns, pkts, pkts, bytes, bytes);
            s
        };
        let real = |a: &str, present, n| RealStatus {
            address: a.parse().unwrap(),
            forward: "Route",
            weight: 1,
            configured: true,
            present,
            active_conns: 1,
            inactive_conns: 2,
            stats: present.then(|| stats(n, 10, 1000)),
        };
        let s = Status {
            role: "director",
            status: "degraded",
            exit_code: 1,
            problems: vec!["real server 10.18.68.187:15858 of tcp 10.19.70.166:15858 is missing".into()],
            addresses: vec![AddrStatus {
                addr: "10.19.70.166".parse().unwrap(),
                prefix_len: 32,
                iface: "enp1s0".into(),
                present: true,
            }],
            sysctls: vec![],
            services: vec![ServiceStatus {
                protocol: "TCP".into(),
                address: "10.19.70.166:15858".into(),
                scheduler: "rr".into(),
                persistence: None,
                present: true,
                stats: Some(stats(5, 16, 2918)),
                real_servers: vec![real("10.18.68.186:15858", true, 5), real("10.18.68.187:15858", false, 0)],
            }],
            health: None,
            info: None,
        };
        let want = "\
director: degraded (1 problem)
  - real server 10.18.68.187:15858 of tcp 10.19.70.166:15858 is missing
VIP 10.19.70.166/32 on enp1s0: present
Prot LocalAddress:Port Scheduler Flags                                    Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.19.70.166:15858 rr                                                    5       16       16     2918     2918
  -> 10.18.68.186:15858           Route   1      1          2                 5       10       10     1000     1000
  -> 10.18.68.187:15858           (MISSING)
";
        assert_eq!(render(&s, None), want);
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["services"][0]["real_servers"][0]["stats"]["conns"], 5);
        assert_eq!(v["services"][0]["real_servers"][1]["present"], false);
    }

    #[test]
    fn port_zero_with_persistence_is_fine() {
        let s = start_spec(&args(|a| {
            a.port = Some("0".into());
            a.persistence = Some("300".into());
        }))
        .unwrap();
        assert_eq!(s.services[0].desired.destinations[0].addr.port(), 0);
    }
}
