//! Numeric constants of the IPVS generic netlink family, from the kernel's
//! [`include/uapi/linux/ip_vs.h`](https://github.com/torvalds/linux/blob/master/include/uapi/linux/ip_vs.h).

/// Generic netlink family name.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// Generic netlink family version.
pub const IPVS_GENL_VERSION: u8 = 1;

/// Commands (`IPVS_CMD_*`).
pub mod cmd {
    /// Add a virtual service.
    pub const NEW_SERVICE: u8 = 1;
    /// Modify a virtual service.
    pub const SET_SERVICE: u8 = 2;
    /// Delete a virtual service.
    pub const DEL_SERVICE: u8 = 3;
    /// Get one service (do) or all services (dump).
    pub const GET_SERVICE: u8 = 4;
    /// Add a destination.
    pub const NEW_DEST: u8 = 5;
    /// Modify a destination.
    pub const SET_DEST: u8 = 6;
    /// Delete a destination.
    pub const DEL_DEST: u8 = 7;
    /// Dump the destinations of one service.
    pub const GET_DEST: u8 = 8;
    /// Start a sync daemon.
    pub const NEW_DAEMON: u8 = 9;
    /// Stop a sync daemon.
    pub const DEL_DAEMON: u8 = 10;
    /// Dump the running sync daemons.
    pub const GET_DAEMON: u8 = 11;
    /// Set timeouts.
    pub const SET_CONFIG: u8 = 12;
    /// Get timeouts.
    pub const GET_CONFIG: u8 = 13;
    /// Reply to `GET_INFO`.
    pub const SET_INFO: u8 = 14;
    /// Get version and connection table size.
    pub const GET_INFO: u8 = 15;
    /// Zero counters (all, or one service).
    pub const ZERO: u8 = 16;
    /// Delete every service.
    pub const FLUSH: u8 = 17;
}

/// Top-level attributes (`IPVS_CMD_ATTR_*`).
pub mod attr {
    /// Nested service attributes.
    pub const SERVICE: u16 = 1;
    /// Nested destination attributes.
    pub const DEST: u16 = 2;
    /// Nested sync daemon attributes.
    pub const DAEMON: u16 = 3;
    /// TCP timeout (u32 seconds).
    pub const TIMEOUT_TCP: u16 = 4;
    /// TCP FIN_WAIT timeout (u32 seconds).
    pub const TIMEOUT_TCP_FIN: u16 = 5;
    /// UDP timeout (u32 seconds).
    pub const TIMEOUT_UDP: u16 = 6;
}

/// Attributes of a `SET_INFO` reply (`IPVS_INFO_ATTR_*`); they share numbers with [`attr`].
pub mod info {
    /// IPVS version, `0x010201` = 1.2.1.
    pub const VERSION: u16 = 1;
    /// Size of the connection hash table.
    pub const CONN_TAB_SIZE: u16 = 2;
}

/// Service attributes (`IPVS_SVC_ATTR_*`).
pub mod svc {
    /// Address family (u16).
    pub const AF: u16 = 1;
    /// Transport protocol (u16).
    pub const PROTOCOL: u16 = 2;
    /// Virtual address (16 bytes, `union nf_inet_addr`).
    pub const ADDR: u16 = 3;
    /// Port (be16).
    pub const PORT: u16 = 4;
    /// Firewall mark (u32).
    pub const FWMARK: u16 = 5;
    /// Scheduler name (NUL-terminated string).
    pub const SCHED_NAME: u16 = 6;
    /// Flags and mask (`struct ip_vs_flags`).
    pub const FLAGS: u16 = 7;
    /// Persistence timeout (u32 seconds).
    pub const TIMEOUT: u16 = 8;
    /// Persistence netmask (be32 mask for IPv4, prefix length for IPv6).
    pub const NETMASK: u16 = 9;
    /// Nested 32-bit statistics.
    pub const STATS: u16 = 10;
    /// Persistence engine name (NUL-terminated string).
    pub const PE_NAME: u16 = 11;
    /// Nested 64-bit statistics.
    pub const STATS64: u16 = 12;
}

/// Destination attributes (`IPVS_DEST_ATTR_*`).
pub mod dest {
    /// Real server address (16 bytes).
    pub const ADDR: u16 = 1;
    /// Real server port (be16).
    pub const PORT: u16 = 2;
    /// Forwarding method and connection flags (u32).
    pub const FWD_METHOD: u16 = 3;
    /// Weight (u32, must not be negative).
    pub const WEIGHT: u16 = 4;
    /// Upper connection threshold (u32).
    pub const U_THRESH: u16 = 5;
    /// Lower connection threshold (u32).
    pub const L_THRESH: u16 = 6;
    /// Active connections (u32, read only).
    pub const ACTIVE_CONNS: u16 = 7;
    /// Inactive connections (u32, read only).
    pub const INACT_CONNS: u16 = 8;
    /// Persistent connections (u32, read only).
    pub const PERSIST_CONNS: u16 = 9;
    /// Nested 32-bit statistics.
    pub const STATS: u16 = 10;
    /// Address family of the destination (u16, 3.18+).
    pub const ADDR_FAMILY: u16 = 11;
    /// Nested 64-bit statistics (4.1+).
    pub const STATS64: u16 = 12;
    /// Tunnel type (u8).
    pub const TUN_TYPE: u16 = 13;
    /// Tunnel port (be16).
    pub const TUN_PORT: u16 = 14;
    /// Tunnel flags (u16).
    pub const TUN_FLAGS: u16 = 15;
}

/// Sync daemon attributes (`IPVS_DAEMON_ATTR_*`).
pub mod daemon {
    /// State: master or backup (u32).
    pub const STATE: u16 = 1;
    /// Multicast interface name (string).
    pub const MCAST_IFN: u16 = 2;
    /// Sync id (u32).
    pub const SYNC_ID: u16 = 3;
    /// Maximum sync message length (u16).
    pub const SYNC_MAXLEN: u16 = 4;
    /// IPv4 multicast group (be32).
    pub const MCAST_GROUP: u16 = 5;
    /// IPv6 multicast group (16 bytes).
    pub const MCAST_GROUP6: u16 = 6;
    /// Multicast port (u16, host order).
    pub const MCAST_PORT: u16 = 7;
    /// Multicast TTL (u8).
    pub const MCAST_TTL: u16 = 8;
}

/// Statistics attributes (`IPVS_STATS_ATTR_*`).
pub mod stats {
    /// Connections scheduled.
    pub const CONNS: u16 = 1;
    /// Incoming packets.
    pub const INPKTS: u16 = 2;
    /// Outgoing packets.
    pub const OUTPKTS: u16 = 3;
    /// Incoming bytes.
    pub const INBYTES: u16 = 4;
    /// Outgoing bytes.
    pub const OUTBYTES: u16 = 5;
    /// Connections per second.
    pub const CPS: u16 = 6;
    /// Incoming packets per second.
    pub const INPPS: u16 = 7;
    /// Outgoing packets per second.
    pub const OUTPPS: u16 = 8;
    /// Incoming bytes per second.
    pub const INBPS: u16 = 9;
    /// Outgoing bytes per second.
    pub const OUTBPS: u16 = 10;
    /// Padding for 64-bit alignment.
    pub const PAD: u16 = 11;
}

/// Service flags (`IP_VS_SVC_F_*`).
pub mod svc_flags {
    /// Persistent service.
    pub const PERSISTENT: u32 = 0x0001;
    /// Hashed entry (kernel internal; reported in dumps).
    pub const HASHED: u32 = 0x0002;
    /// One-packet scheduling.
    pub const ONEPACKET: u32 = 0x0004;
    /// Scheduler flag 1 (`sh-fallback`, `mh-fallback`).
    pub const SCHED1: u32 = 0x0008;
    /// Scheduler flag 2 (`sh-port`, `mh-port`).
    pub const SCHED2: u32 = 0x0010;
    /// Scheduler flag 3.
    pub const SCHED3: u32 = 0x0020;
}

/// Forwarding methods (`IP_VS_CONN_F_*` in the `FWD_METHOD` attribute).
pub mod fwd {
    /// Mask of the forwarding method bits.
    pub const MASK: u32 = 0x0007;
    /// NAT (masquerading).
    pub const MASQ: u32 = 0x0000;
    /// Local node.
    pub const LOCALNODE: u32 = 0x0001;
    /// IP tunnelling.
    pub const TUNNEL: u32 = 0x0002;
    /// Direct routing.
    pub const DROUTE: u32 = 0x0003;
    /// Cache bypass.
    pub const BYPASS: u32 = 0x0004;
}

/// Tunnel types (`IP_VS_CONN_F_TUNNEL_TYPE_*`).
pub mod tun_type {
    /// IP in IP.
    pub const IPIP: u8 = 0;
    /// Generic UDP encapsulation (5.2+).
    pub const GUE: u8 = 1;
    /// Generic routing encapsulation (5.3+).
    pub const GRE: u8 = 2;
}

/// Tunnel flags (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
pub mod tun_flags {
    /// No checksum.
    pub const NOCSUM: u16 = 0;
    /// Checksum.
    pub const CSUM: u16 = 1 << 0;
    /// Remote checksum offload.
    pub const REMCSUM: u16 = 1 << 1;
}

/// Sync daemon states (`IP_VS_STATE_*`).
pub mod state {
    /// Master sync daemon.
    pub const MASTER: u32 = 1;
    /// Backup sync daemon.
    pub const BACKUP: u32 = 2;
}

/// Address family IPv4 (`AF_INET`).
pub const AF_INET: u16 = 2;
/// Address family IPv6 (`AF_INET6`).
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u16 = 6;
/// `IPPROTO_UDP`.
pub const IPPROTO_UDP: u16 = 17;
/// `IPPROTO_SCTP`.
pub const IPPROTO_SCTP: u16 = 132;
/// Longest scheduler name the kernel accepts, without the NUL (`IP_VS_SCHEDNAME_MAXLEN - 1`).
pub const SCHEDNAME_MAXLEN: usize = 15;
/// Longest persistence engine name, without the NUL (`IP_VS_PENAME_MAXLEN - 1`).
pub const PENAME_MAXLEN: usize = 15;
/// Longest interface name, without the NUL (`IP_VS_IFNAME_MAXLEN - 1`).
pub const IFNAME_MAXLEN: usize = 15;
