//! `lvs-bench replay`: the user-space work of a table dump on the host, no
//! IPVS needed, to be profiled (`valgrind --tool=callgrind`). The generated
//! table (as `lvs-bench gen` makes it) is turned into the datagrams the
//! kernel would send for it (`ipvs::replay::kernel_datagrams`: one message
//! per entry, the services in a scrambled order as the kernel's hash table
//! gives them, each service's destinations newest first as the kernel lists
//! them); then, `--reps` times, [`replay_once`] parses them as `Ipvs::dump`
//! does and prints them as `lvs-bench dump` does, into a discarding writer.
//! Profile only that part with `--toggle-collect='*replay_once*'`.

use std::io::Write;

use ipvs::{Destination, DestinationEntry, Forward, Scheduler, Service, ServiceEntry, ServiceKey, Table};
use lvs_bench::Res;

use crate::{parse_args, rip, vip, write_table};

/// The family id the replayed datagrams carry (any will do).
const FAMILY_ID: u16 = 0x20;

pub(crate) fn run(args: &[String]) -> Res<()> {
    let a = parse_args(args, &["services", "dests", "reps"])?;
    let (n, m, reps) = (a.num("services", Some(10_000))?, a.num("dests", Some(10))?, a.num("reps", Some(1))?);
    let stats = a.flags.iter().any(|f| f == "stats");
    let (services, dests) = ipvs::replay::kernel_datagrams(FAMILY_ID, &kernel_order(n, m));
    let mut bytes = 0;
    for _ in 0..reps {
        bytes = replay_once(&services, &dests, stats)?;
    }
    eprintln!("replayed {n} x {m}, {reps} time(s): {bytes} bytes of text each");
    Ok(())
}

/// Parse the datagrams and print the table; the bytes printed.
#[inline(never)]
pub(crate) fn replay_once(services: &[Vec<u8>], dests: &[Vec<Vec<u8>>], stats: bool) -> Res<u64> {
    let table = ipvs::replay::dump(FAMILY_ID, services, dests).map_err(|e| format!("replay: {e}"))?;
    let mut sink = Counter(0);
    write_table(&mut sink, &table, stats)?;
    Ok(sink.0)
}

/// The generated table in the order a kernel dump lists it.
fn kernel_order(n: u32, m: u32) -> Table {
    // A fixed permutation of the services (multiplying by an odd number
    // modulo a power of two above n, skipping what falls outside).
    let size = n.next_power_of_two().max(1);
    let order = (0..size).map(|k| k.wrapping_mul(0x9e37_79b1) & (size - 1)).filter(|i| *i < n);
    order
        .map(|i| {
            let svc = ServiceEntry::from(Service::new(ServiceKey::tcp(vip(i)), Scheduler::Wrr));
            let dests = (0..m)
                .rev()
                .map(|j| {
                    let d = Destination::new(rip(i, j, m, false), Forward::Route).with_weight(1 + (i + j) % 10);
                    DestinationEntry::from(d)
                })
                .collect();
            (svc, dests)
        })
        .collect()
}

/// A writer that only counts.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
