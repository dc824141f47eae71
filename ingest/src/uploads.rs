//! File upload streams of a v2 session (ING-8): a device answers a command with a file on a
//! unidirectional stream of its own — a length-prefixed [`FileHeader`], then exactly `size` raw
//! bytes, then the end of the stream.
//!
//! The header is read alone (bounded by [`MAX_HEADER_LEN`]) and checked before any content is
//! read: the name, the command (it exists, is the device's own and is pending) and the size
//! (at most [`crate::IngestConfig::max_file_bytes`]). A refusal stops the stream with
//! [`FILE_REFUSED`] and answers [`Downlink::FileRefused`] on the control stream. Accepted content
//! streams into a temporary file under [`crate::IngestConfig::upload_dir`] while its SHA-256 is
//! computed, holding at most one read chunk in memory; more bytes than declared, fewer, or a
//! checksum mismatch are refused and nothing is stored. A complete file goes to the
//! [`fleetpulse_store::FileStore`] and is answered [`Downlink::FileStored`]. The temporary file
//! is deleted however the upload ends.
//!
//! *Architecture invariant*: at most [`MAX_UPLOADS`] uploads run at once per connection; more
//! are refused, never queued.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleetpulse_proto::codec::HEADER_LEN;
use fleetpulse_proto::domain::check_file_name;
use fleetpulse_proto::wire::{Downlink, FileHeader, FileRefused, FileStored};
use fleetpulse_proto::{CommandId, DeviceId, EnterpriseId, FILE_REFUSED, FrameDecoder, UnixMillis, close_code};
use fleetpulse_store::{NewFile, StoreError};
use quinn::{RecvStream, VarInt};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use crate::Context;
use crate::metrics::ReasonLabel;
use crate::outbound::Outbound;
use crate::queue;
use crate::session::Close;

/// Uploads one connection may run at once.
pub(crate) const MAX_UPLOADS: usize = 2;

/// Largest file header accepted, bytes (a header is well below: a name of at most 128 bytes).
pub(crate) const MAX_HEADER_LEN: usize = 1024;

/// Largest piece of content read (and held) at once.
const READ_CHUNK: usize = 64 * 1024;

/// Suffix of temporary upload files (swept at start).
const PART_SUFFIX: &str = ".part";

/// The device an upload connection belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Uploader {
    pub device: DeviceId,
    pub enterprise: EnterpriseId,
}

/// Why an upload was refused: the metric label and the reason the device is told.
#[derive(Debug)]
struct Refusal {
    label: &'static str,
    reason: String,
}

fn refusal(label: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal { label, reason: reason.into() }
}

/// Creates the upload folder and deletes temporary files an earlier process left behind.
pub(crate) fn prepare_upload_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == &PART_SUFFIX[1..]) {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

/// Accepts the connection's upload streams until it closes, running at most [`MAX_UPLOADS`] at
/// once. `Err` (closing the session) only when the store fails while checking a header.
pub(crate) async fn receive_uploads(
    ctx: Arc<Context>,
    conn: quinn::Connection,
    uploader: Uploader,
    out: queue::WeakSender<Outbound>,
) -> Result<(), Close> {
    loop {
        // While no upload runs (most of a session's life) the task holds only this wait; the
        // uploads, their set and the select are boxed (issue 14).
        let Ok(first) = conn.accept_uni().await else { return Ok(()) };
        if !Box::pin(run_uploads(&ctx, &conn, uploader, &out, first)).await? {
            return Ok(());
        }
    }
}

/// Runs the upload `first` and the ones accepted beside it until none is running: `Ok(true)`,
/// or `Ok(false)` when the connection ended. Returning drops the set, which aborts the uploads
/// still running; their temporary files go with them.
async fn run_uploads(
    ctx: &Arc<Context>,
    conn: &quinn::Connection,
    uploader: Uploader,
    out: &queue::WeakSender<Outbound>,
    first: RecvStream,
) -> Result<bool, Close> {
    let mut running: JoinSet<Result<(), Close>> = JoinSet::new();
    running.spawn(receive_upload(ctx.clone(), uploader, first, out.clone()));
    while !running.is_empty() {
        tokio::select! {
            accepted = conn.accept_uni() => {
                let Ok(mut recv) = accepted else { return Ok(false) };
                if running.len() >= MAX_UPLOADS {
                    let refused = refusal("too_many_uploads", format!("at most {MAX_UPLOADS} uploads at once"));
                    refuse(ctx, &mut recv, out, 0, String::new(), refused).await;
                    continue;
                }
                running.spawn(receive_upload(ctx.clone(), uploader, recv, out.clone()));
            }
            Some(done) = running.join_next() => match done {
                Ok(Ok(())) => {}
                Ok(Err(close)) => return Err(close),
                Err(error) => tracing::error!(message = "An upload task failed.", %error),
            },
        }
    }
    Ok(true)
}

/// Stops the stream and tells the device why on the control stream.
async fn refuse(
    ctx: &Context,
    recv: &mut RecvStream,
    out: &queue::WeakSender<Outbound>,
    command_id: u64,
    name: String,
    refused: Refusal,
) {
    let _ = recv.stop(VarInt::from_u32(FILE_REFUSED));
    ctx.metrics.files_refused.get_or_create(&ReasonLabel { reason: refused.label }).inc();
    tracing::debug!(message = "File upload refused.", command_id, reason = %refused.reason);
    let frame = Downlink::FileRefused(FileRefused { command_id, name, reason: refused.reason });
    if let Some(tx) = out.upgrade() {
        let _ = tx.send(Outbound::Frame(Box::new(frame))).await;
    }
}

/// One upload stream, from its header to the store.
async fn receive_upload(
    ctx: Arc<Context>,
    uploader: Uploader,
    mut recv: RecvStream,
    out: queue::WeakSender<Outbound>,
) -> Result<(), Close> {
    let header = match read_header(&mut recv).await {
        Ok(header) => header,
        Err(refused) => {
            refuse(&ctx, &mut recv, &out, 0, String::new(), refused).await;
            return Ok(());
        }
    };
    let (command_id, name) = (header.command_id, header.name.clone());
    let outcome = match check_header(&ctx, uploader, &header).await? {
        Err(refused) => Err(refused),
        Ok(()) => receive_content(&ctx, uploader, &mut recv, header).await,
    };
    match outcome {
        Ok(file_id) => {
            let frame = Downlink::FileStored(FileStored { command_id, name, file_id });
            if let Some(tx) = out.upgrade() {
                let _ = tx.send(Outbound::Frame(Box::new(frame))).await;
            }
        }
        Err(refused) => refuse(&ctx, &mut recv, &out, command_id, name, refused).await,
    }
    Ok(())
}

/// Reads the length-prefixed header and nothing after it.
async fn read_header(recv: &mut RecvStream) -> Result<FileHeader, Refusal> {
    let ended = |e: quinn::ReadExactError| refusal("bad_header", format!("no complete file header: {e}"));
    let mut prefix = [0u8; HEADER_LEN];
    recv.read_exact(&mut prefix).await.map_err(ended)?;
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_HEADER_LEN {
        return Err(refusal("bad_header", format!("a file header of {len} bytes exceeds {MAX_HEADER_LEN}")));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(ended)?;
    let mut decoder = FrameDecoder::new(MAX_HEADER_LEN);
    decoder.push(&prefix);
    decoder.push(&body);
    match decoder.next_frame::<FileHeader>() {
        Ok(Some(header)) => Ok(header),
        Ok(None) => Err(refusal("bad_header", "incomplete file header")),
        Err(e) => Err(refusal("bad_header", e.to_string())),
    }
}

/// Checks a header before any content is read. The outer `Err` is a store failure.
async fn check_header(ctx: &Context, uploader: Uploader, header: &FileHeader) -> Result<Result<(), Refusal>, Close> {
    if let Err(e) = check_file_name(&header.name) {
        return Ok(Err(refusal("bad_name", e.to_string())));
    }
    let command = ctx.commands.command(CommandId(header.command_id)).await.map_err(|error| {
        tracing::error!(message = "Command store failed during an upload.", %error);
        Close::new(close_code::SERVER_ERROR, "store unavailable; reconnect later")
    })?;
    let Some(command) = command.filter(|c| c.device_id == uploader.device) else {
        return Ok(Err(refusal(
            "unknown_command",
            format!("command {} is not a command of this device", header.command_id),
        )));
    };
    if !command.state.is_pending() {
        return Ok(Err(refusal(
            "command_finished",
            format!("command {} is {} and takes no more files", command.id, command.state.as_str()),
        )));
    }
    let max = ctx.config.max_file_bytes;
    if header.size > max {
        return Ok(Err(refusal("too_large", format!("a file of {} bytes exceeds the limit of {max}", header.size))));
    }
    Ok(Ok(()))
}

/// A temporary upload file, deleted when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Streams the content into a temporary file, checks length and checksum, and stores the file.
async fn receive_content(
    ctx: &Context,
    uploader: Uploader,
    recv: &mut RecvStream,
    header: FileHeader,
) -> Result<u64, Refusal> {
    let server = |e: std::io::Error| {
        tracing::error!(message = "Writing an upload's temporary file failed.", error = %e);
        refusal("server_error", "server error")
    };
    let temp = TempFile(ctx.config.upload_dir.join(format!(
        "{}-{:016x}{PART_SUFFIX}",
        uploader.device,
        rand::random::<u64>()
    )));
    let mut file = tokio::fs::File::create(&temp.0).await.map_err(server)?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut received = 0u64;
    loop {
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => {
                received += chunk.bytes.len() as u64;
                if received > header.size {
                    return Err(refusal("too_long", format!("more than the {} bytes declared", header.size)));
                }
                digest.update(&chunk.bytes);
                file.write_all(&chunk.bytes).await.map_err(server)?;
            }
            Ok(None) => break,
            Err(e) => return Err(refusal("stream_failed", format!("the upload stream failed: {e}"))),
        }
    }
    if received < header.size {
        return Err(refusal("short", format!("{received} of the {} bytes declared", header.size)));
    }
    if digest.finish().as_ref() != header.sha256 {
        return Err(refusal("checksum", "the content does not match its SHA-256"));
    }
    file.flush().await.map_err(server)?;
    drop(file);
    let now = UnixMillis::now();
    let retention = i64::try_from(ctx.config.file_retention.as_millis()).unwrap_or(i64::MAX);
    let new = NewFile {
        device_id: uploader.device,
        enterprise_id: uploader.enterprise,
        command_id: Some(CommandId(header.command_id)),
        name: header.name,
        size: header.size,
        sha256: header.sha256,
        created_at: now,
        expires_at: UnixMillis(now.0.saturating_add(retention)),
    };
    match ctx.files.store_file(new, &temp.0).await {
        Ok(stored) => {
            ctx.metrics.files_stored.inc();
            ctx.metrics.file_bytes_stored.inc_by(stored.size);
            Ok(stored.id.0)
        }
        Err(StoreError::LimitExceeded(reason)) => Err(refusal("file_limit", reason)),
        Err(StoreError::InvalidInput(reason)) => Err(refusal("store_refused", reason)),
        Err(error) => {
            tracing::error!(message = "Storing an uploaded file failed.", %error);
            Err(refusal("server_error", "server error; upload again later"))
        }
    }
}
