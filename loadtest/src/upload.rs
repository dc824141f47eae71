//! Fake files of simulated devices and their upload on a unidirectional QUIC stream (ING-8): a
//! length-prefixed [`FileHeader`] frame with the size and SHA-256 of the content, then the bytes.
//!
//! The content is generated chunk by chunk from the command id, so a file of any size costs one
//! chunk of memory: it is generated once to compute the checksum and once more while it is sent.

use fleetpulse_proto::FrameEncoder;
use fleetpulse_proto::wire::FileHeader;
use ring::digest;

use crate::responder::Upload;

/// Bytes generated and written at a time.
const CHUNK: usize = 16 * 1024;

/// The fake content of the file answering `command_id`, `size` bytes, chunk by chunk (each at
/// most 16 KiB): a first line naming the command, then a repeating pattern.
pub fn fake_content(command_id: u64, size: u64) -> impl Iterator<Item = Vec<u8>> {
    let head = format!("fleetpulse-loadtest fake file for command {command_id}\n").into_bytes();
    let mut offset = 0u64;
    std::iter::from_fn(move || {
        if offset >= size {
            return None;
        }
        let len = usize::try_from((size - offset).min(CHUNK as u64)).expect("at most CHUNK");
        let chunk: Vec<u8> = (offset..offset + len as u64)
            .map(|i| match usize::try_from(i).ok().and_then(|i| head.get(i)) {
                Some(&b) => b,
                None => b"0123456789abcdef"[usize::try_from(i % 16).expect("below 16")],
            })
            .collect();
        offset += len as u64;
        Some(chunk)
    })
}

/// The header of an upload: its size and the SHA-256 of [`fake_content`].
pub fn header(upload: &Upload) -> FileHeader {
    let mut sha = digest::Context::new(&digest::SHA256);
    for chunk in fake_content(upload.command_id, upload.size) {
        sha.update(&chunk);
    }
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(sha.finish().as_ref());
    FileHeader { command_id: upload.command_id, name: upload.name.to_owned(), size: upload.size, sha256 }
}

/// How an upload stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadEnd {
    /// Every byte was written and the stream finished; the outcome follows on the control stream.
    Sent,
    /// The server stopped the stream (it refuses the file); the reason follows on the control
    /// stream as `FileRefused`.
    Stopped(u64),
    /// The connection was lost; the upload starts again on the next one.
    ConnectionLost,
    /// Anything else (the command fails with this text).
    Failed(String),
}

/// Opens a unidirectional stream on `conn` and writes the header and content of `upload`.
pub(crate) async fn send_file(conn: quinn::Connection, upload: Upload) -> UploadEnd {
    let mut stream = match conn.open_uni().await {
        Ok(stream) => stream,
        Err(_) => return UploadEnd::ConnectionLost,
    };
    let mut frame = bytes::BytesMut::new();
    if let Err(error) = FrameEncoder::default().encode(&header(&upload), &mut frame) {
        return UploadEnd::Failed(format!("encoding the file header: {error}"));
    }
    let chunks = std::iter::once(frame.to_vec()).chain(fake_content(upload.command_id, upload.size));
    for chunk in chunks {
        match stream.write_all(&chunk).await {
            Ok(()) => {}
            Err(quinn::WriteError::Stopped(code)) => return UploadEnd::Stopped(code.into_inner()),
            Err(quinn::WriteError::ConnectionLost(_)) => return UploadEnd::ConnectionLost,
            Err(other) => return UploadEnd::Failed(other.to_string()),
        }
    }
    match stream.finish() {
        Ok(()) => UploadEnd::Sent,
        Err(error) => UploadEnd::Failed(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_has_the_declared_size_and_checksum() {
        for size in [0, 1, 10, 16 * 1024, 16 * 1024 + 1, 100_000] {
            let upload = Upload { command_id: 42, name: "syslog.txt", size };
            let bytes: Vec<u8> = fake_content(42, size).flatten().collect();
            assert_eq!(bytes.len() as u64, size);
            let h = header(&upload);
            assert_eq!(h.size, size);
            assert_eq!(h.sha256.as_slice(), digest::digest(&digest::SHA256, &bytes).as_ref());
            assert!(fake_content(42, size).all(|c| c.len() <= CHUNK));
        }
        let a: Vec<u8> = fake_content(1, 100).flatten().collect();
        let b: Vec<u8> = fake_content(2, 100).flatten().collect();
        assert_ne!(a, b, "the content names its command");
        assert!(a.starts_with(b"fleetpulse-loadtest fake file for command 1\n"));
    }
}
