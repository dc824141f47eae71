//! The device protocol's messages, as rkyv types (ING-3).
//!
//! A device opens one bidirectional QUIC stream. Uplink: one [`Uplink::Hello`], then
//! [`Uplink::Data`] frames, each with the next per-device sequence number. Downlink: one
//! [`Downlink::Welcome`] telling the device the highest sequence number the server holds, then
//! cumulative [`Downlink::Ack`]s. These are *wire* types: they are validated and converted into
//! [`crate::domain`] types before anything else uses them.

use rkyv::{Archive, Deserialize, Serialize};

/// Every frame a device sends.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Uplink {
    /// Opens the session; must be the first frame, exactly once.
    Hello(Hello),
    /// A sequenced message.
    Data(DataFrame),
}

/// Identifies and authenticates a device (ING-2).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Hello {
    /// [`crate::PROTOCOL_VERSION`] the device speaks.
    pub protocol_version: u16,
    /// MAC address, 12 lowercase hex digits; empty when the device identifies by serial.
    pub mac: String,
    /// Serial number; empty when the device identifies by MAC.
    pub serial: String,
    /// Model name, e.g. "T54W".
    pub model: String,
    /// Firmware version string.
    pub firmware: String,
    /// The enterprise's provisioning credential.
    pub credential: String,
    /// How often the device sends heartbeats, in seconds.
    pub heartbeat_interval_s: u32,
}

/// A sequenced message from a device.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DataFrame {
    /// Per-device sequence number, starting at 1 and increasing by one per frame.
    pub seq: u64,
    /// Device clock at sending time, milliseconds since the Unix epoch.
    pub sent_at_ms: i64,
    /// The message.
    pub body: Message,
}

/// The sequenced message kinds.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Message {
    /// Liveness; not persisted, refreshes the device's last-seen time.
    Heartbeat(Heartbeat),
    /// A change of the device's status fields; persisted.
    StatusChange(StatusChange),
    /// CPU and memory; persisted.
    ResourceReport(ResourceReport),
    /// An alarm raised or cleared by the device; persisted.
    Alarm(AlarmReport),
    /// The result of a server command (ING-8); reserved, not yet sent by the server.
    CommandResult(CommandResult),
}

/// Liveness signal, sent every heartbeat interval.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// Seconds since the device booted.
    pub uptime_s: u64,
}

/// An IP address on the wire.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub enum IpAddress {
    /// IPv4 octets.
    V4([u8; 4]),
    /// IPv6 octets.
    V6([u8; 16]),
}

/// SIP registration state of one line.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub enum SipState {
    /// The line is registered.
    Registered,
    /// The line tried and failed or is not registered.
    Unregistered,
    /// The device does not know.
    Unknown,
}

/// One SIP line (account) of a device.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SipLine {
    /// Line number as the device numbers them (1-based).
    pub line: u8,
    /// The SIP account (user@domain), may be empty.
    pub account: String,
    /// Registration state.
    pub state: SipState,
}

/// Call status of the device.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub enum CallStatus {
    /// No call in progress.
    Idle,
    /// At least one call in progress.
    InCall,
}

/// The device's full status after a change (ING-3).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StatusChange {
    /// SIP registration per line.
    pub lines: Vec<SipLine>,
    /// Call status.
    pub call_status: CallStatus,
    /// Firmware version.
    pub firmware: String,
    /// Public (NAT outside) address as the device knows it, if any.
    pub public_ip: Option<IpAddress>,
    /// Private (LAN) address.
    pub private_ip: Option<IpAddress>,
    /// Seconds since boot.
    pub uptime_s: u64,
    /// Time of the last reboot, milliseconds since the Unix epoch.
    pub last_reboot_ms: Option<i64>,
}

/// CPU and memory usage (reported every 15 minutes by default).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ResourceReport {
    /// CPU usage in hundredths of a percent (0..=10000).
    pub cpu_centi_pct: u16,
    /// Memory in use, bytes.
    pub mem_used_bytes: u64,
    /// Total memory, bytes.
    pub mem_total_bytes: u64,
}

/// Whether an alarm report raises or clears its alarm.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub enum AlarmAction {
    /// The condition occurred (again).
    Raise,
    /// The device reports that the condition ended.
    Clear,
}

/// An alarm from the device, by alarm type code (SPEC §3).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AlarmReport {
    /// Alarm type code from [`crate::ALARM_TYPES`].
    pub code: u16,
    /// Raise or clear.
    pub action: AlarmAction,
    /// Free text from the device (untrusted).
    pub description: String,
    /// Alarm log; only for the types that carry one (crash, no response, kernel panic).
    pub log: Option<Vec<u8>>,
}

/// Result of a server command (ING-8).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CommandResult {
    /// The command this answers.
    pub command_id: u64,
    /// Whether it succeeded.
    pub ok: bool,
    /// Output or error text.
    pub output: Vec<u8>,
}

/// Every frame the server sends.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Downlink {
    /// Answers `Hello`.
    Welcome(Welcome),
    /// Cumulative acknowledgement: every frame with `seq <= Ack::seq` is applied and durable.
    Ack(Ack),
    /// A frame was well-formed but its content invalid; it is acknowledged and not stored.
    Rejected(Rejected),
}

/// The server's answer to `Hello`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Welcome {
    /// The device's identifier in the store.
    pub device_id: u64,
    /// Highest sequence number the server has applied for this device (0 if none). The device
    /// resends frames above it and continues numbering after it.
    pub last_seq: u64,
    /// Server time, milliseconds since the Unix epoch.
    pub server_time_ms: i64,
}

/// Cumulative acknowledgement.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Ack {
    /// Every frame with a sequence number up to and including this one is safe.
    pub seq: u64,
}

/// A frame whose content was rejected (it counts as acknowledged; it will not be stored).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Sequence number of the rejected frame.
    pub seq: u64,
    /// Why, for the device's log.
    pub reason: String,
}
