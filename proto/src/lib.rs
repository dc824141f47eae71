//! Wire format and shared domain types of fleetpulse.
//!
//! This crate does no I/O. It holds:
//! - typed identifiers ([`ids`]) used across every crate API;
//! - the device protocol: rkyv messages ([`wire`]) carried in length-prefixed frames ([`codec`]);
//! - the command catalog: every command kind and its arguments ([`commands`]);
//! - the alarm type table of SPEC §3 with stable codes and severities ([`alarm_types`]);
//! - domain types decoded and validated from the wire ([`domain`]);
//! - the device catalog: the kind of device a model is ([`catalog`]);
//! - the relay link: how a relay carries its devices' exchanges to the server ([`relay_link`]).
//!
//! Network bytes only ever reach rkyv through its checked API (`from_bytes`), after the frame
//! length has been checked against a maximum *before* any allocation.

pub mod alarm_types;
pub mod catalog;
pub mod codec;
pub mod commands;
pub mod domain;
pub mod ids;
pub mod relay_link;
pub mod wire;

pub use alarm_types::{ALARM_TYPES, AlarmType, AlarmTypeCode, Severity};
pub use codec::{DecodeError, FrameDecoder, FrameEncoder, MAX_FRAME_LEN};
pub use ids::{
    AccountId, ChannelId, CommandId, DeviceId, EnterpriseId, FileId, FirmwareId, GroupId, IncidentId, MAX_ID, Mac,
    MacError, OrderId, ProfileId, RpsDeviceId, SiteId, StrategyId, TaskId, UnixMillis, WindowId, deserialize_id,
    parse_id,
};

/// ALPN protocol identifier spoken by devices and the ingest tier.
pub const ALPN: &[u8] = b"fleetpulse/1";

pub use relay_link::RELAY_ALPN;

/// The newest version of the message set in [`wire`]; a device sends the highest version it
/// speaks in its `Hello`.
///
/// | version | adds |
/// | --- | --- |
/// | 1 | telemetry: heartbeats, status, resources, alarms, acknowledgements |
/// | 2 | the downlink: commands and their results, file uploads; `Welcome` names the version |
pub const PROTOCOL_VERSION: u16 = 2;

/// The protocol versions this build speaks. A `Hello` with any other version is refused with
/// [`close_code::UNSUPPORTED_VERSION`] and a reason naming this range.
pub const SUPPORTED_PROTOCOL_VERSIONS: std::ops::RangeInclusive<u16> = 2..=2;

/// Error code with which the server stops a file upload stream it refuses (the reason follows on
/// the control stream as [`wire::Downlink::FileRefused`]).
pub const FILE_REFUSED: u32 = 1;

/// QUIC application error codes with which the ingest tier closes a device connection.
///
/// They are part of the protocol: a device (or the load tester) can tell why it was closed.
pub mod close_code {
    /// Normal close (shutdown of a session by either side without error).
    pub const NORMAL: u32 = 0;
    /// The provisioning credential in `Hello` is unknown.
    pub const BAD_CREDENTIAL: u32 = 1;
    /// A frame announced a length above the maximum frame size.
    pub const FRAME_TOO_LARGE: u32 = 2;
    /// A frame's bytes failed rkyv validation.
    pub const MALFORMED_FRAME: u32 = 3;
    /// Frames arrived out of protocol order (data before `Hello`, a second `Hello`, ...).
    pub const PROTOCOL_VIOLATION: u32 = 4;
    /// The device identity is already registered to another enterprise.
    pub const DEVICE_CONFLICT: u32 = 5;
    /// A newer connection of the same device replaced this one.
    pub const REPLACED: u32 = 6;
    /// The server is shutting down; reconnect later.
    pub const SHUTTING_DOWN: u32 = 7;
    /// The server failed internally; reconnect later.
    pub const SERVER_ERROR: u32 = 8;
    /// No `Hello` arrived in time after the connection opened.
    pub const HELLO_TIMEOUT: u32 = 9;
    /// The `Hello` itself was invalid (bad MAC, bad heartbeat interval, ...).
    pub const BAD_HELLO: u32 = 10;
    /// The device speaks a protocol version this server does not; the reason names the versions
    /// the server speaks.
    pub const UNSUPPORTED_VERSION: u32 = 11;
    /// An admin deleted the device; it is added anew (a new id) if it connects again with its
    /// enterprise's credential.
    pub const DEVICE_DELETED: u32 = 12;
    /// An admin moved the device to another enterprise; it must reconnect with that
    /// enterprise's credential.
    pub const DEVICE_MOVED: u32 = 13;
    /// The server holds as many connections of this kind as it allows (relay links: `[ingest]
    /// max_relay_connections`); the connection is closed before it is served. Reconnect later.
    pub const TOO_MANY_CONNECTIONS: u32 = 14;
}
