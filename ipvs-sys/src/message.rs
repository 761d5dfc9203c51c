//! Top-level attributes, commands and the IPVS generic netlink message.

use netlink_packet_core::{DecodeError, DefaultNla, Emitable, Nla, NlaBuffer, ParseableParametrized, NLA_F_NESTED};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use crate::constants::{attr as c, cmd, info, IPVS_GENL_NAME, IPVS_GENL_VERSION};
use crate::daemon::DaemonAttr;
use crate::dest::DestAttr;
use crate::service::ServiceAttr;
use crate::util::*;

/// An IPVS command (`IPVS_CMD_*`).
///
/// ```
/// use ipvs_sys::IpvsCmd;
/// assert_eq!(u8::from(IpvsCmd::GetService), 4);
/// // Replies come with their own command: a service dump answers with NEW_SERVICE.
/// assert_eq!(IpvsCmd::from(1), IpvsCmd::NewService);
/// assert_eq!(IpvsCmd::from(200), IpvsCmd::Other(200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpvsCmd {
    /// Add a virtual service.
    NewService,
    /// Modify a virtual service.
    SetService,
    /// Delete a virtual service.
    DelService,
    /// Get one or dump all virtual services (answered with [`IpvsCmd::NewService`]).
    GetService,
    /// Add a destination.
    NewDest,
    /// Modify a destination.
    SetDest,
    /// Delete a destination.
    DelDest,
    /// Dump the destinations of a service (answered with [`IpvsCmd::NewDest`]).
    GetDest,
    /// Start a sync daemon.
    NewDaemon,
    /// Stop a sync daemon.
    DelDaemon,
    /// Dump sync daemons (answered with [`IpvsCmd::NewDaemon`]).
    GetDaemon,
    /// Set timeouts.
    SetConfig,
    /// Get timeouts (answered with [`IpvsCmd::SetConfig`]).
    GetConfig,
    /// Info reply.
    SetInfo,
    /// Get version and table size (answered with [`IpvsCmd::SetInfo`]).
    GetInfo,
    /// Zero counters.
    Zero,
    /// Delete every service.
    Flush,
    /// A command number this crate does not know.
    Other(u8),
}

impl From<u8> for IpvsCmd {
    fn from(v: u8) -> Self {
        match v {
            cmd::NEW_SERVICE => Self::NewService,
            cmd::SET_SERVICE => Self::SetService,
            cmd::DEL_SERVICE => Self::DelService,
            cmd::GET_SERVICE => Self::GetService,
            cmd::NEW_DEST => Self::NewDest,
            cmd::SET_DEST => Self::SetDest,
            cmd::DEL_DEST => Self::DelDest,
            cmd::GET_DEST => Self::GetDest,
            cmd::NEW_DAEMON => Self::NewDaemon,
            cmd::DEL_DAEMON => Self::DelDaemon,
            cmd::GET_DAEMON => Self::GetDaemon,
            cmd::SET_CONFIG => Self::SetConfig,
            cmd::GET_CONFIG => Self::GetConfig,
            cmd::SET_INFO => Self::SetInfo,
            cmd::GET_INFO => Self::GetInfo,
            cmd::ZERO => Self::Zero,
            cmd::FLUSH => Self::Flush,
            other => Self::Other(other),
        }
    }
}

impl From<IpvsCmd> for u8 {
    fn from(c: IpvsCmd) -> u8 {
        match c {
            IpvsCmd::NewService => cmd::NEW_SERVICE,
            IpvsCmd::SetService => cmd::SET_SERVICE,
            IpvsCmd::DelService => cmd::DEL_SERVICE,
            IpvsCmd::GetService => cmd::GET_SERVICE,
            IpvsCmd::NewDest => cmd::NEW_DEST,
            IpvsCmd::SetDest => cmd::SET_DEST,
            IpvsCmd::DelDest => cmd::DEL_DEST,
            IpvsCmd::GetDest => cmd::GET_DEST,
            IpvsCmd::NewDaemon => cmd::NEW_DAEMON,
            IpvsCmd::DelDaemon => cmd::DEL_DAEMON,
            IpvsCmd::GetDaemon => cmd::GET_DAEMON,
            IpvsCmd::SetConfig => cmd::SET_CONFIG,
            IpvsCmd::GetConfig => cmd::GET_CONFIG,
            IpvsCmd::SetInfo => cmd::SET_INFO,
            IpvsCmd::GetInfo => cmd::GET_INFO,
            IpvsCmd::Zero => cmd::ZERO,
            IpvsCmd::Flush => cmd::FLUSH,
            IpvsCmd::Other(v) => v,
        }
    }
}

/// A top-level attribute. Attribute numbers mean different things in an info
/// reply, so parsing depends on the message's command.
///
/// ```
/// use ipvs_sys::{IpvsAttr, IpvsCmd, IpvsMessage};
/// // ipvsadm --set 900 120 300
/// let msg = IpvsMessage::new(
///     IpvsCmd::SetConfig,
///     vec![IpvsAttr::TimeoutTcp(900), IpvsAttr::TimeoutTcpFin(120), IpvsAttr::TimeoutUdp(300)],
/// );
/// # let _ = msg;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsAttr {
    /// Nested service attributes.
    Service(Vec<ServiceAttr>),
    /// Nested destination attributes.
    Dest(Vec<DestAttr>),
    /// Nested sync daemon attributes.
    Daemon(Vec<DaemonAttr>),
    /// TCP established timeout, seconds (0 = leave unchanged on set).
    TimeoutTcp(u32),
    /// TCP FIN_WAIT timeout, seconds.
    TimeoutTcpFin(u32),
    /// UDP timeout, seconds.
    TimeoutUdp(u32),
    /// IPVS version in an info reply (`0x010201` = 1.2.1).
    InfoVersion(u32),
    /// Connection table size in an info reply.
    InfoConnTabSize(u32),
    /// An attribute this crate does not know, kept as received.
    Other(DefaultNla),
}

impl IpvsAttr {
    /// Parse one top-level attribute of a message with command `cmd`.
    pub fn parse(buf: &NlaBuffer<&[u8]>, cmd: IpvsCmd) -> Result<Self, DecodeError> {
        let v = buf.value();
        if matches!(cmd, IpvsCmd::SetInfo | IpvsCmd::GetInfo) {
            return Ok(match buf.kind() {
                info::VERSION => Self::InfoVersion(u32_ne("info version", v)?),
                info::CONN_TAB_SIZE => Self::InfoConnTabSize(u32_ne("info table size", v)?),
                _ => Self::Other(other(buf)?),
            });
        }
        Ok(match buf.kind() {
            c::SERVICE => Self::Service(ServiceAttr::parse_all(v)?),
            c::DEST => Self::Dest(DestAttr::parse_all(v)?),
            c::DAEMON => Self::Daemon(DaemonAttr::parse_all(v)?),
            c::TIMEOUT_TCP => Self::TimeoutTcp(u32_ne("tcp timeout", v)?),
            c::TIMEOUT_TCP_FIN => Self::TimeoutTcpFin(u32_ne("tcpfin timeout", v)?),
            c::TIMEOUT_UDP => Self::TimeoutUdp(u32_ne("udp timeout", v)?),
            _ => Self::Other(other(buf)?),
        })
    }
}

impl Nla for IpvsAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Service(a) => nlas_len(a),
            Self::Dest(a) => nlas_len(a),
            Self::Daemon(a) => nlas_len(a),
            Self::TimeoutTcp(_)
            | Self::TimeoutTcpFin(_)
            | Self::TimeoutUdp(_)
            | Self::InfoVersion(_)
            | Self::InfoConnTabSize(_) => 4,
            Self::Other(a) => a.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Service(_) => c::SERVICE | NLA_F_NESTED,
            Self::Dest(_) => c::DEST | NLA_F_NESTED,
            Self::Daemon(_) => c::DAEMON | NLA_F_NESTED,
            Self::TimeoutTcp(_) => c::TIMEOUT_TCP,
            Self::TimeoutTcpFin(_) => c::TIMEOUT_TCP_FIN,
            Self::TimeoutUdp(_) => c::TIMEOUT_UDP,
            Self::InfoVersion(_) => info::VERSION,
            Self::InfoConnTabSize(_) => info::CONN_TAB_SIZE,
            Self::Other(a) => a.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            Self::Service(a) => emit_nlas(a, buf),
            Self::Dest(a) => emit_nlas(a, buf),
            Self::Daemon(a) => emit_nlas(a, buf),
            Self::TimeoutTcp(v)
            | Self::TimeoutTcpFin(v)
            | Self::TimeoutUdp(v)
            | Self::InfoVersion(v)
            | Self::InfoConnTabSize(v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            Self::Other(a) => a.emit_value(buf),
        }
    }
}

/// The payload of an IPVS generic netlink message: a command and its attributes.
///
/// Wrap it in [`netlink_packet_generic::GenlMessage`] and
/// [`netlink_packet_core::NetlinkMessage`] to send it, or use [`crate::emit_request`].
///
/// ```
/// use ipvs_sys::{emit_request, parse_replies, IpvsAttr, IpvsCmd, IpvsMessage, ReplyKind, ServiceAttr};
/// use ipvs_sys::constants::AF_INET6;
/// // GET_DEST for the IPv6 fwmark service 5.
/// let msg = IpvsMessage::new(
///     IpvsCmd::GetDest,
///     vec![IpvsAttr::Service(vec![ServiceAttr::AddressFamily(AF_INET6), ServiceAttr::Fwmark(5)])],
/// );
/// let mut buf = Vec::new();
/// emit_request(&mut buf, 0x20, 0x0001 | 0x0004 | 0x0300, 1, &msg);
/// let back = parse_replies(&buf, 0x20).next().unwrap().unwrap();
/// assert_eq!(back.kind, ReplyKind::Message(msg));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    /// The command.
    pub cmd: IpvsCmd,
    /// The attributes.
    pub attrs: Vec<IpvsAttr>,
}

impl IpvsMessage {
    /// A message with a command and attributes.
    pub fn new(cmd: IpvsCmd, attrs: Vec<IpvsAttr>) -> Self {
        Self { cmd, attrs }
    }

    /// Parse the attributes that follow a generic netlink header with command `cmd`.
    pub fn parse_attrs(payload: &[u8], cmd: IpvsCmd) -> Result<Self, DecodeError> {
        let attrs = parse_nlas(payload, |nla| IpvsAttr::parse(nla, cmd))?;
        Ok(Self { cmd, attrs })
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd.into()
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        nlas_len(&self.attrs)
    }

    fn emit(&self, buffer: &mut [u8]) {
        emit_nlas(&self.attrs, buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Self::parse_attrs(buf, IpvsCmd::from(header.cmd))
    }
}
