//! List everything, like `ipvsadm -Ln --stats`.
//!
//! ```text
//! cargo run -p ipvs-examples --example list
//! ```

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ipvs::Error> {
    let ipvs = ipvs::Ipvs::connect().await?;
    let info = ipvs.info().await?;
    println!("IP Virtual Server version {} (size={})", info.version_string(), info.conn_table_size);
    println!(
        "{:<40} {:>8} {:>8} {:>8} {:>10} {:>10}",
        "Service / -> Real server", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
    );
    for (svc, dests) in ipvs.dump().await? {
        let s = &svc.stats;
        println!(
            "{:<40} {:>8} {:>8} {:>8} {:>10} {:>10}",
            format!("{} {}", svc.service.key, svc.service.scheduler),
            s.conns,
            s.in_pkts,
            s.out_pkts,
            s.in_bytes,
            s.out_bytes
        );
        for d in dests {
            let s = &d.stats;
            println!(
                "{:<40} {:>8} {:>8} {:>8} {:>10} {:>10}",
                format!("  -> {} {} w={}", d.destination.addr, d.destination.forward.name(), d.destination.weight),
                s.conns,
                s.in_pkts,
                s.out_pkts,
                s.in_bytes,
                s.out_bytes
            );
        }
    }
    Ok(())
}
