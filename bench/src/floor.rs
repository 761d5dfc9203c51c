//! `lvs-bench floor-report FILE [--notes FILE]`: the report of `scripts/bench --floor`,
//! the dump of one table by `ipvsadm -Sn`, `lvsctl save`, `lvs-bench dump` (the
//! library) and `floor` (bench/floor.c: the same netlink requests and nothing else).
//!
//! FILE holds `lvs-bench measure` lines labelled `SIZE|floor|TOOL`; the tools ran
//! interleaved in one VM, round after round, so that a load change on the host
//! touches all of them alike. Per size and tool: the median wall, user and system
//! time, the ratio to ipvsadm (ipvsadm's time / the tool's: higher is faster) and
//! the ratio to the floor (the tool's time / the floor's: 1.00x is the floor).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lvs_bench::Res;

/// The tools of a floor run, in report order.
const TOOLS: [&str; 4] = ["ipvsadm -Sn", "lvsctl save", "library dump", "floor"];

/// Median wall, user and system seconds of one label's runs, and whether all exited 0.
#[derive(Clone, Copy)]
struct Med {
    wall: f64,
    user: f64,
    sys: f64,
    ok: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The runs of FILE by label: (wall, user, sys, exit) each.
fn read_runs(path: &str) -> Res<BTreeMap<String, Vec<[f64; 4]>>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut runs: BTreeMap<String, Vec<[f64; 4]>> = BTreeMap::new();
    for f in text.lines().map(|l| l.split('\t').collect::<Vec<_>>()).filter(|f| f.len() >= 6) {
        let num = |i: usize| f[i].parse::<f64>().unwrap_or(f64::NAN);
        runs.entry(f[0].to_owned()).or_default().push([num(1), num(4), num(5), num(3)]);
    }
    Ok(runs)
}

fn summarize(runs: &[[f64; 4]]) -> Med {
    let col = |i: usize| median(runs.iter().map(|r| r[i]).collect());
    Med { wall: col(0), user: col(1), sys: col(2), ok: runs.iter().all(|r| r[3] == 0.0) }
}

pub fn report(args: &[String]) -> Res<()> {
    let path = args.first().ok_or("floor-report RESULTS [--notes FILE]")?;
    let notes = match args.get(1..3) {
        Some([flag, file]) if flag == "--notes" => std::fs::read_to_string(file).unwrap_or_default(),
        _ => String::new(),
    };
    let runs = read_runs(path)?;
    let mut sizes: Vec<&str> =
        runs.keys().filter(|k| k.contains("|floor|")).filter_map(|k| k.split('|').next()).collect();
    sizes.sort_by_key(|s| s.split('x').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0));
    sizes.dedup();
    let mut out = String::from(
        "Median of the rounds (the tools ran interleaved, round after round, in one VM). \
         vs ipvsadm = ipvsadm's wall time / the tool's (higher is faster); vs floor = the tool's \
         wall time / the floor's (1.00x is the floor: the same netlink requests, nothing else).\n\n\
         | table | tool | wall | user | sys | vs ipvsadm | vs floor |\n|---|---|---|---|---|---|---|\n",
    );
    for size in sizes {
        let get = |tool: &str| runs.get(&format!("{size}|floor|{tool}")).map(|r| summarize(r));
        let (base, floor) = (get("ipvsadm -Sn"), get("floor"));
        for tool in TOOLS {
            let Some(m) = get(tool) else { continue };
            let vs = |num: Option<f64>, den: Option<f64>| match (num, den) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {size} | `{tool}` | {:.3} s{} | {:.3} s | {:.3} s | {} | {} |",
                m.wall,
                if m.ok { "" } else { " **FAILED**" },
                m.user,
                m.sys,
                vs(base.map(|b| b.wall), Some(m.wall)),
                vs(Some(m.wall), floor.map(|f| f.wall)),
            );
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes);
    }
    print!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn runs_are_read_by_label_and_a_failed_one_shows() {
        let path = std::env::temp_dir().join(format!("lvs-bench-floor-{}.tsv", std::process::id()));
        let lines = "10x10|floor|floor\t1.0\t100\t0\t0.1\t0.9\n\
                     10x10|floor|floor\t3.0\t100\t1\t0.3\t2.7\n\
                     10x10|floor|ipvsadm -Sn\t4.0\t100\t0\t1.0\t3.0\n\
                     short line\n";
        std::fs::write(&path, lines).unwrap();
        let runs = read_runs(path.to_str().unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(runs.len(), 2);
        let floor = summarize(&runs["10x10|floor|floor"]);
        assert_eq!((floor.wall, floor.ok), (2.0, false));
        assert!(summarize(&runs["10x10|floor|ipvsadm -Sn"]).ok);
    }
}
