//! The daemon benchmark's table, written as an lvsctl config and as the
//! equivalent keepalived.conf.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::{parse_args, Res};

/// The TCP check of every real server, the same for both daemons.
#[derive(Debug, Clone, Copy)]
pub struct CheckCfg {
    /// lvsctl `interval`, keepalived `delay_loop` and `delay_before_retry`.
    pub interval: Duration,
    /// lvsctl `timeout`, keepalived `connect_timeout`.
    pub timeout: Duration,
    /// lvsctl `fall`, keepalived `retry` + 1 (failed attempts before down).
    pub fall: u32,
}

impl Default for CheckCfg {
    fn default() -> Self {
        Self { interval: Duration::from_secs(5), timeout: Duration::from_secs(2), fall: 2 }
    }
}

/// SERVICES TCP services (rr, DR) of REALS real servers each, port 80.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub services: u32,
    pub reals: u32,
    pub check: CheckCfg,
}

impl Table {
    /// Virtual service `i`: 10.1.0.1 + i.
    pub fn vip(&self, i: u32) -> SocketAddr {
        SocketAddr::new(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 1)) + i).into(), 80)
    }

    /// Real server `j` of service `i`: 10.128.0.1 + i*REALS + j; in the
    /// changed table every 100th one (1 %) is replaced by one in 10.192/10.
    pub fn rip(&self, i: u32, j: u32, changed: bool) -> Ipv4Addr {
        let g = i * self.reals + j;
        let base = if changed && g % 100 == 0 { Ipv4Addr::new(10, 192, 0, 1) } else { Ipv4Addr::new(10, 128, 0, 1) };
        Ipv4Addr::from(u32::from(base) + g)
    }

    /// Every real-server address of the table.
    pub fn addresses(&self, changed: bool) -> Vec<Ipv4Addr> {
        (0..self.services)
            .flat_map(|i| (0..self.reals).map(move |j| (i, j)))
            .map(|(i, j)| self.rip(i, j, changed))
            .collect()
    }

    /// `n` real servers to take down, each in another service (none of the
    /// ones the reload replaces): (service address, real server).
    pub fn victims(&self, n: u32) -> Vec<(SocketAddr, Ipv4Addr)> {
        let n = n.min(self.services);
        (0..n).map(|k| k * self.services / n).map(|i| (self.vip(i), self.rip(i, 1 % self.reals, false))).collect()
    }

    /// The real servers as `/proc/net/ip_vs` shows them (`0A800001:0050`), sorted.
    pub fn proc_lines(&self, changed: bool) -> Vec<String> {
        let mut v: Vec<String> =
            self.addresses(changed).iter().map(|a| format!("{:08X}:0050", u32::from(*a))).collect();
        v.sort();
        v
    }

    /// The lvsctl config (`director run`); the VIPs go on `dum0`.
    pub fn lvsctl(&self, changed: bool) -> String {
        let c = &self.check;
        let check = format!(
            "check = {{ type = \"tcp\", interval = \"{}ms\", timeout = \"{}ms\", rise = 1, fall = {} }}\n",
            c.interval.as_millis(),
            c.timeout.as_millis(),
            c.fall
        );
        let mut s = String::from("[director]\niface = \"dum0\"\n");
        for i in 0..self.services {
            // drain_time 0: a real server the reload removes is deleted at once,
            // as keepalived does (lvsctl's default lets it drain first).
            let _ = write!(s, "\n[[director.service]]\nvip = \"{}\"\nport = 80\nscheduler = \"rr\"\nforward = \"dr\"\ndrain_time = \"0s\"\n{check}real = [", self.vip(i).ip());
            for j in 0..self.reals {
                let _ = write!(s, "{}\"{}\"", if j > 0 { ", " } else { "" }, self.rip(i, j, changed));
            }
            s.push_str("]\n");
        }
        s
    }

    /// The same table as ipvsadm rules (`lvs-bench apply` reads them): the
    /// start's floor, the kernel's work with no config and no checks.
    pub fn rules(&self) -> String {
        let mut s = String::new();
        for i in 0..self.services {
            let vip = self.vip(i);
            let _ = writeln!(s, "-A -t {vip} -s rr");
            for j in 0..self.reals {
                let _ = writeln!(s, "-a -t {vip} -r {}:80 -g -w 1", self.rip(i, j, false));
            }
        }
        s
    }

    /// The same table as keepalived's `virtual_server` blocks
    /// (`inhibit_on_failure`: weight 0 on failure, as lvsctl's drain).
    pub fn keepalived(&self, changed: bool) -> String {
        let c = &self.check;
        let mut s = String::from("global_defs {\n    router_id lvsbench\n}\n");
        for i in 0..self.services {
            let _ = write!(
                s,
                "\nvirtual_server {} 80 {{\n    delay_loop {}\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n",
                self.vip(i).ip(),
                c.interval.as_secs()
            );
            for j in 0..self.reals {
                let _ = write!(
                    s,
                    "    real_server {} 80 {{\n        weight 1\n        inhibit_on_failure\n        TCP_CHECK {{\n            connect_timeout {}\n            retry {}\n            delay_before_retry {}\n        }}\n    }}\n",
                    self.rip(i, j, changed),
                    c.timeout.as_secs(),
                    c.fall - 1,
                    c.interval.as_secs()
                );
            }
            s.push_str("}\n");
        }
        s
    }
}

/// `lvs-bench daemon-gen`: write both configs (to look at them, or to run a daemon by hand).
pub fn gen(args: &[String]) -> Res<()> {
    let a = parse_args(args, &["services", "reals", "change", "lvsctl", "keepalived"])?;
    let t = Table { services: a.num("services", None)?, reals: a.num("reals", Some(4))?, ..Table::default() };
    let changed = a.num("change", Some(0))? > 0;
    for (opt, text) in [("lvsctl", t.lvsctl(changed)), ("keepalived", t.keepalived(changed))] {
        if let Some(p) = a.opts.get(opt) {
            std::fs::write(p, text).map_err(|e| format!("{p}: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_percent_changes_and_victims_stay() {
        let t = Table { services: 100, reals: 4, ..Table::default() };
        let (a, b) = (t.addresses(false), t.addresses(true));
        assert_eq!(a.iter().zip(&b).filter(|(x, y)| x != y).count(), 4);
        for (_, v) in t.victims(10) {
            assert!(b.contains(&v));
        }
        assert_eq!(t.keepalived(false).matches("real_server ").count(), 400);
        assert_eq!(t.lvsctl(true).matches("10.192.").count(), 4);
        assert_eq!(t.rules().lines().count(), 500);
    }
}
