//! What every device transport shares before the shard: admitting a `Hello` (validation,
//! authentication, registration, the delivery mark) and turning an uplink frame into a sequenced
//! [`Frame`] (protocol order, content validation, command answers recorded durably first).
//!
//! The QUIC session ([`crate::session`]) and HTTPS ingest ([`crate::https`]) both call these, so
//! a device is admitted and its frames are judged the same way whatever carries them. Failures are
//! a [`Close`] (a QUIC close code and a reason); HTTPS maps the code to a status.

use fleetpulse_proto::domain::{CommandProgress, DeviceHello, DeviceMessage, InvalidMessage};
use fleetpulse_proto::wire::{Hello, Uplink};
use fleetpulse_proto::{CommandId, DecodeError, DeviceId, EnterpriseId, UnixMillis, close_code};
use fleetpulse_store::{NewDevice, StoreError};

use crate::Context;
use crate::commands::{Answer, record_answer};
use crate::metrics::ReasonLabel;
use crate::session::Close;
use crate::shard::Frame;

/// A device whose `Hello` was accepted.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The validated `Hello`.
    pub hello: DeviceHello,
    pub device: DeviceId,
    pub enterprise: EnterpriseId,
    /// The store's delivery mark (`Welcome.last_seq`).
    pub committed: u64,
}

/// Counts a protocol error under `reason` and closes with `code`.
pub(crate) fn protocol_error(ctx: &Context, reason: &'static str, code: u32, detail: String) -> Close {
    ctx.metrics.connection_errors.get_or_create(&ReasonLabel { reason }).inc();
    Close::new(code, detail)
}

/// The close of a frame that could not be decoded.
pub(crate) fn decode_error(ctx: &Context, error: DecodeError) -> Close {
    match error {
        DecodeError::TooLarge { len, max } => protocol_error(
            ctx,
            "frame_too_large",
            close_code::FRAME_TOO_LARGE,
            format!("frame of {len} bytes exceeds {max}"),
        ),
        DecodeError::Malformed(e) => protocol_error(ctx, "malformed_frame", close_code::MALFORMED_FRAME, e),
    }
}

/// Logs a store failure and closes with `SERVER_ERROR` (the cause is not shown to the device).
pub(crate) fn server_error(ctx: &Context, error: StoreError) -> Close {
    tracing::error!(message = "Store failed during a device handshake.", %error);
    protocol_error(ctx, "server_error", close_code::SERVER_ERROR, "server error".into())
}

/// Validates `hello`, authenticates its credential, registers the device (ING-2 auto-add) and
/// reads its delivery mark.
pub(crate) async fn admit(ctx: &Context, hello: Hello) -> Result<Admitted, Close> {
    let (hello, enterprise) = authenticate_hello(ctx, hello).await?;
    register(ctx, hello, enterprise).await
}

/// Validates `hello` and authenticates its credential: the enterprise it belongs to.
pub(crate) async fn authenticate_hello(ctx: &Context, hello: Hello) -> Result<(DeviceHello, EnterpriseId), Close> {
    let hello = DeviceHello::try_from(hello).map_err(|e| match e {
        InvalidMessage::ProtocolVersion(v) => {
            let supported = fleetpulse_proto::SUPPORTED_PROTOCOL_VERSIONS;
            let detail = format!(
                "protocol version {v} is not supported: this server speaks versions {}..={}",
                supported.start(),
                supported.end()
            );
            protocol_error(ctx, "unsupported_version", close_code::UNSUPPORTED_VERSION, detail)
        }
        e => protocol_error(ctx, "bad_hello", close_code::BAD_HELLO, e.to_string()),
    })?;
    let enterprise = authenticate(ctx, &hello.credential).await?;
    Ok((hello, enterprise))
}

/// Registers an authenticated device (ING-2 auto-add) and reads its delivery mark.
pub(crate) async fn register(ctx: &Context, hello: DeviceHello, enterprise: EnterpriseId) -> Result<Admitted, Close> {
    let registered = ctx
        .devices
        .register_device(NewDevice {
            enterprise_id: enterprise,
            key: hello.key.clone(),
            serial: hello.serial.clone(),
            model: hello.model.clone(),
            firmware: hello.firmware.clone(),
            at: UnixMillis::now(),
        })
        .await
        .map_err(|e| match e {
            StoreError::DeviceConflict => protocol_error(
                ctx,
                "device_conflict",
                close_code::DEVICE_CONFLICT,
                "device registered to another enterprise".into(),
            ),
            e => server_error(ctx, e),
        })?;
    let device = registered.device.id;
    if registered.created {
        tracing::debug!(message = "Device auto-added.", %device, %enterprise);
    }
    let committed = ctx.events.last_seq(device).await.map_err(|e| server_error(ctx, e))?;
    Ok(Admitted { hello, device, enterprise, committed })
}

/// The enterprise of a provisioning credential (cached; at most 100,000 entries).
pub(crate) async fn authenticate(ctx: &Context, credential: &str) -> Result<EnterpriseId, Close> {
    if let Some(e) = ctx.credentials.get(credential) {
        return Ok(*e);
    }
    match ctx.tenants.enterprise_by_credential(credential).await {
        Ok(Some(e)) => {
            if ctx.credentials.len() < 100_000 {
                ctx.credentials.insert(credential.to_owned(), e.id);
            }
            Ok(e.id)
        }
        Ok(None) => {
            ctx.metrics.auth_failures.inc();
            Err(Close::new(close_code::BAD_CREDENTIAL, "unknown provisioning credential"))
        }
        Err(e) => Err(server_error(ctx, e)),
    }
}

/// An uplink frame after `Hello`, judged without waiting for anything.
pub(crate) enum Judged {
    /// The frame to hand to the shard and, when its content was refused, the reason to send back
    /// as `Rejected` (the frame still takes its seq).
    Frame(Frame, Option<String>),
    /// A command's answer, which [`record`] makes durable before its frame goes to the shard.
    Answer(PendingAnswer),
}

/// A command's answer not recorded yet.
pub(crate) struct PendingAnswer {
    seq: u64,
    command_id: CommandId,
    progress: CommandProgress,
}

/// Judges an uplink frame after `Hello`. A caller awaits [`record`] for an answer, boxed: answers
/// are rare, and inline that future would size every session's task for every frame (issue 14).
pub(crate) fn judge(ctx: &Context, uplink: Uplink) -> Result<Judged, Close> {
    let df = match uplink {
        Uplink::Hello(_) => {
            return Err(protocol_error(ctx, "second_hello", close_code::PROTOCOL_VIOLATION, "Hello sent twice".into()));
        }
        Uplink::Data(df) if df.seq == 0 => {
            return Err(protocol_error(ctx, "zero_seq", close_code::PROTOCOL_VIOLATION, "seq starts at 1".into()));
        }
        Uplink::Data(df) => df,
    };
    let seq = df.seq;
    match DeviceMessage::try_from(df.body) {
        Ok(DeviceMessage::CommandResult { command_id, progress }) => {
            Ok(Judged::Answer(PendingAnswer { seq, command_id, progress }))
        }
        Ok(msg) => Ok(Judged::Frame(Frame { seq, msg: Some(msg) }, None)),
        Err(invalid) => {
            ctx.metrics.rejected_frames.get_or_create(&ReasonLabel { reason: "invalid_content" }).inc();
            Ok(Judged::Frame(Frame { seq, msg: None }, Some(invalid.to_string())))
        }
    }
}

/// Records a command's answer, durable before its frame can be acknowledged: the frame to hand
/// to the shard and, for an answer to a command the store does not know, the reason to send back
/// as `Rejected`.
pub(crate) async fn record(
    ctx: &Context,
    device: DeviceId,
    answer: PendingAnswer,
) -> Result<(Frame, Option<String>), Close> {
    let PendingAnswer { seq, command_id, progress } = answer;
    match record_answer(ctx, device, command_id, progress.clone()).await? {
        Answer::Recorded => Ok((Frame { seq, msg: Some(DeviceMessage::CommandResult { command_id, progress }) }, None)),
        Answer::Unknown(reason) => {
            ctx.metrics.rejected_frames.get_or_create(&ReasonLabel { reason: "unknown_command" }).inc();
            Ok((Frame { seq, msg: None }, Some(reason)))
        }
    }
}
