//! Set up an LVS-DR virtual service with two real servers (by default those
//! of a database coordinator pair: VIP 10.19.70.166:15858, round robin), using the desired-state reconcile: run it
//! twice and the second run changes nothing.
//!
//! ```text
//! cargo run -p ipvs-examples --example dr_service -- 10.19.70.166:15858 10.18.68.186 10.18.68.187
//! ```

use ipvs::reconcile::{plan, DesiredService, Scope};
use ipvs::{Destination, Forward, Scheduler, Service, ServiceKey};
use std::net::{IpAddr, SocketAddr};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let vip: SocketAddr = args.next().unwrap_or_else(|| "10.19.70.166:15858".into()).parse()?;
    let mut reals: Vec<IpAddr> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    if reals.is_empty() {
        reals = vec!["10.18.68.186".parse()?, "10.18.68.187".parse()?];
    }
    let key = ServiceKey::tcp(vip);
    let want = DesiredService {
        service: Service::new(key, Scheduler::Rr),
        // DR cannot change the port: the real servers listen on the VIP's port.
        destinations: reals
            .iter()
            .map(|ip| Destination::new(SocketAddr::new(*ip, vip.port()), Forward::Route))
            .collect(),
    };
    let ipvs = ipvs::Ipvs::connect().await?;
    let ops = plan(&ipvs.dump().await?, &[want], &Scope::Owned(vec![key]));
    for op in &ops {
        println!("{op}");
    }
    let applied = ipvs.apply(&ops).await?;
    if let Some(e) = applied.interrupted() {
        return Err(format!("cut short, run again: {e}").into());
    }
    for (op, outcome) in ops.iter().zip(applied) {
        if let ipvs::OpOutcome::Failed(e) = outcome {
            return Err(format!("{op}: {e}").into());
        }
    }
    println!("{} change(s) applied", ops.len());
    Ok(())
}
