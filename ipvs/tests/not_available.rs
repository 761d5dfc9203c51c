//! Connecting classifies the kernel honestly: on a kernel without IPVS (like
//! the development host this project is built on) `Ipvs::connect` gives
//! `Error::NotAvailable` after one `modprobe ip_vs` attempt; on one with IPVS
//! it connects (or, unprivileged, still connects: the family lookup needs no
//! privilege). Which case applies is read from the system, not assumed.

fn kernel_has_ipvs_now() -> bool {
    std::path::Path::new("/sys/module/ip_vs").exists() || std::path::Path::new("/proc/net/ip_vs").exists()
}

#[tokio::test]
async fn connect_reports_missing_ipvs_as_not_available() {
    let had = kernel_has_ipvs_now();
    let r = ipvs::Ipvs::connect().await;
    // connect may have loaded the module (modprobe ip_vs): look again.
    let has = kernel_has_ipvs_now();
    match r {
        Ok(_) => assert!(has, "connected although the system shows no IPVS"),
        Err(ipvs::Error::NotAvailable(msg)) => {
            assert!(!had && !has, "NotAvailable although the system has IPVS: {msg}");
            assert!(msg.contains("modprobe"), "{msg}");
        }
        Err(e) => panic!("connect: unexpected error {e:?}"),
    }
}

/// With module loading turned off, a kernel without the IPVS family is
/// `NotAvailable` without any `modprobe`.
#[tokio::test]
async fn without_module_loading_missing_ipvs_is_not_available() {
    let r = ipvs::Ipvs::builder().load_module(false).dump_sockets(0).connect().await;
    match r {
        Ok(_) => assert!(kernel_has_ipvs_now(), "connected although the system shows no IPVS"),
        Err(ipvs::Error::NotAvailable(msg)) => {
            // Another test of this file may load the module meanwhile: only
            // what this connection said is checked.
            assert!(!msg.contains("modprobe"), "no modprobe was run, yet: {msg}");
        }
        Err(e) => panic!("connect: unexpected error {e:?}"),
    }
}
