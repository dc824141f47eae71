//! The device protocol's messages, as rkyv types (ING-3, ING-8).
//!
//! A device opens one bidirectional QUIC stream, the *control stream*. Uplink: one
//! [`Uplink::Hello`], then [`Uplink::Data`] frames, each with the next per-device sequence
//! number. Downlink: one [`Downlink::Welcome`] telling the device the highest sequence number the
//! server holds and the protocol version of the session, then cumulative [`Downlink::Ack`]s,
//! [`Downlink::Rejected`] notes and, from protocol version 2, [`Downlink::Command`]s and the
//! outcome of file uploads ([`Downlink::FileStored`], [`Downlink::FileRefused`]).
//!
//! # Versions
//!
//! The [`Hello`] layout is frozen: every version of the protocol starts with the same bytes, so a
//! server can always read the version a device speaks and refuse it clearly (close code
//! [`crate::close_code::UNSUPPORTED_VERSION`], the reason naming the versions it speaks) instead
//! of failing to decode what follows. A device sends the highest version it speaks; the server
//! answers with [`crate::SUPPORTED_PROTOCOL_VERSIONS`].
//!
//! # Commands (version 2)
//!
//! The server sends [`Downlink::Command`] on the control stream: an id, a kind, JSON arguments
//! and a deadline. The device answers with [`Message::CommandResult`] *data frames* (accepted,
//! running, succeeded, failed), so answers are sequenced, acknowledged and durable like every
//! other frame. A command may arrive more than once (the server resends commands the device had
//! not accepted when the session ended): the device keeps the ids of the commands it has accepted
//! until their deadline passes, and answers a command it already knows with its last answer
//! instead of executing it again. That is how a command runs at most once.
//!
//! # Files (version 2)
//!
//! A device uploads a file (a log, a capture, a configuration export, a screenshot, a diagnosis
//! bundle) on a unidirectional stream of its own: one length-prefixed [`FileHeader`] frame
//! declaring the command it answers, a name, the size and the SHA-256 of the content, then
//! exactly `size` raw bytes, then the end of the stream. The server refuses a file above its
//! limit before reading it and a file whose bytes do not match the size or the checksum after
//! reading it; in both cases it stores nothing and answers [`Downlink::FileRefused`] on the
//! control stream. A stored file is answered with [`Downlink::FileStored`]. The device sends its
//! command's result after the outcome of its files.
//!
//! These are *wire* types: they are validated and converted into [`crate::domain`] types before
//! anything else uses them.

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
///
/// Frozen: every protocol version keeps this layout (see the module documentation).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Hello {
    /// The highest protocol version the device speaks ([`crate::PROTOCOL_VERSION`]).
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
    /// The device's answer to a server command (ING-8, version 2).
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

/// Where a command stands on the device.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub enum CommandStatus {
    /// The device took the command and will run it.
    Accepted,
    /// The device is running it (progress; may be sent more than once).
    Running,
    /// It finished successfully.
    Succeeded,
    /// It failed; `reason` says why.
    Failed,
}

/// The device's answer to a server command (ING-8).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CommandResult {
    /// The command this answers ([`Command::command_id`]).
    pub command_id: u64,
    /// Where it stands.
    pub status: CommandStatus,
    /// What the command printed (for `Succeeded` and `Failed`; empty otherwise), at most
    /// [`crate::domain::MAX_COMMAND_OUTPUT`] bytes.
    pub output: String,
    /// Why it failed (for `Failed`), at most [`crate::domain::MAX_COMMAND_REASON`] bytes.
    pub reason: String,
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
    /// A command for the device to run (version 2).
    Command(Command),
    /// A file upload was stored (version 2).
    FileStored(FileStored),
    /// A file upload was refused and nothing of it stored (version 2).
    FileRefused(FileRefused),
}

/// The server's answer to `Hello`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Welcome {
    /// The device's identifier in the store.
    pub device_id: u64,
    /// Highest sequence number the server has acknowledged or stored for this device (0 if
    /// none): every frame up to it is safe. The device resends its unacknowledged frames above it
    /// and continues numbering after it (or after its own highest, if higher).
    pub last_seq: u64,
    /// Server time, milliseconds since the Unix epoch.
    pub server_time_ms: i64,
    /// The protocol version of this session (the device's, when the server speaks it).
    pub protocol_version: u16,
    /// Largest file the server accepts on an upload stream, bytes.
    pub max_file_bytes: u64,
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

/// A command for the device (ING-8).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Command {
    /// The command's id; the device's answers and files name it.
    pub command_id: u64,
    /// What to do: `reboot`, `ping`, ... (`[a-z0-9_]{1,64}`).
    pub kind: String,
    /// Arguments as a JSON object or `null`, at most 4 KiB.
    pub args_json: String,
    /// After this time (server clock, milliseconds since the Unix epoch) the command must not be
    /// started any more; the server marks it expired.
    pub deadline_ms: i64,
}

/// Opens a file upload stream (see the module documentation).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FileHeader {
    /// The command whose result the file is.
    pub command_id: u64,
    /// File name: 1 to 128 bytes of `[A-Za-z0-9._-]`, not starting with a dot.
    pub name: String,
    /// Exact length of the content that follows, bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
}

/// A file upload was stored.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FileStored {
    /// The command the file answers.
    pub command_id: u64,
    /// The file's name, as declared.
    pub name: String,
    /// The stored file's id (for the API's download route).
    pub file_id: u64,
}

/// A file upload was refused; nothing of it is stored.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FileRefused {
    /// The command the file answers (0 if the header could not be read).
    pub command_id: u64,
    /// The file's name, as declared (empty if the header could not be read).
    pub name: String,
    /// Why: too large, bad checksum, short content, unknown command, ...
    pub reason: String,
}
