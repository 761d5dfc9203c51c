//! Privileged tests of the `ipvs` library against the real kernel.

use ipvs::*;
use lvsctl_tests::*;

#[test]
#[ignore = "privileged: needs root and IPVS (scripts/privileged-tests)"]
fn smoke_add_list_delete() {
    in_fresh_netns(|| async {
        let h = connect().await;
        let info = h.info().await.unwrap();
        assert_eq!(info.version_string(), "1.2.1");
        let key = ServiceKey::tcp("10.19.70.166:15858".parse().unwrap());
        h.add_service(&Service::new(key, Scheduler::Rr)).await.unwrap();
        let d = Destination::new("10.18.68.186:15858".parse().unwrap(), Forward::Route);
        h.add_destination(&key, &d).await.unwrap();
        let table = h.dump().await.unwrap();
        assert_eq!(table.len(), 1);
        assert_eq!(table[0].0.service, Service::new(key, Scheduler::Rr));
        assert_eq!(table[0].1.len(), 1);
        assert_eq!(table[0].1[0].destination, d);
        let saved = ipvsadm(&["-Sn"]);
        assert_eq!(saved, "-A -t 10.19.70.166:15858 -s rr\n-a -t 10.19.70.166:15858 -r 10.18.68.186:15858 -g -w 1\n");
        h.delete_service(&key).await.unwrap();
        assert!(h.services().await.unwrap().is_empty());
    });
}
