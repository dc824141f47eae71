//! Length-prefixed frame codec (sans-I/O).
//!
//! A frame is a little-endian `u32` payload length followed by the rkyv bytes of one message.
//! The length is checked against the decoder's maximum before a single payload byte is buffered,
//! and the payload is validated by rkyv's checked API before it is deserialized: malformed bytes
//! are an error, never undefined behaviour.

use std::cell::RefCell;

use bytes::{Buf, BufMut, BytesMut};
use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::de::Pool;
use rkyv::rancor::{self, Strategy};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// Default maximum payload length: enough for an alarm log of [`crate::domain::MAX_ALARM_LOG`].
pub const MAX_FRAME_LEN: usize = 256 * 1024;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be decoded. Either error ends the connection that sent it.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix announced more than the maximum; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced payload length.
        len: usize,
        /// The decoder's maximum.
        max: usize,
    },
    /// The payload failed validation or deserialization.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Accumulates bytes from a stream and yields complete, validated frames.
///
/// A decoder with nothing buffered holds no memory: its buffer is released once every byte in it
/// was decoded, and the aligned copy rkyv validates is a scratch buffer of the thread's, not the
/// decoder's. A server holds one decoder per connected device, most of them idle, and a buffer
/// kept after a 256 KiB frame would otherwise stay with its device for the connection's life.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_len: usize,
}

thread_local! {
    /// The aligned scratch buffer payloads are copied into for rkyv (one per thread, reused).
    static ALIGNED: RefCell<AlignedVec> = RefCell::new(AlignedVec::new());
}

/// Largest scratch buffer a thread keeps between frames; a larger one is released after use.
const MAX_KEPT_SCRATCH: usize = 64 * 1024;

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    /// A decoder that rejects frames longer than `max_len` payload bytes.
    pub fn new(max_len: usize) -> Self {
        FrameDecoder { buf: BytesMut::new(), max_len }
    }

    /// Appends bytes received from the stream.
    ///
    /// Callers bound memory by pushing only after [`FrameDecoder::next_frame`] returned `None`;
    /// the buffer then never holds more than one frame plus one read chunk.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Checks the length prefix of the next frame, if it has arrived, without consuming it.
    fn peek_len(&self) -> Result<Option<usize>, DecodeError> {
        let Some(header) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(header.try_into().expect("slice has HEADER_LEN bytes")) as usize;
        if len > self.max_len {
            return Err(DecodeError::TooLarge { len, max: self.max_len });
        }
        Ok(Some(len))
    }

    /// Decodes the next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame<T>(&mut self) -> Result<Option<T>, DecodeError>
    where
        T: Archive,
        T::Archived:
            for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + Deserialize<T, Strategy<Pool, rancor::Error>>,
    {
        let Some(len) = self.peek_len()? else {
            return Ok(None);
        };
        if self.buf.len() < HEADER_LEN + len {
            // Reserve once for the whole frame: the length is already known to be within bounds.
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        let frame = ALIGNED.with(|aligned| {
            // rkyv needs its root aligned: the payload is copied into the thread's scratch buffer.
            let mut aligned = aligned.borrow_mut();
            aligned.clear();
            aligned.extend_from_slice(&self.buf[HEADER_LEN..HEADER_LEN + len]);
            let frame = rkyv::from_bytes::<T, rancor::Error>(&aligned);
            if aligned.capacity() > MAX_KEPT_SCRATCH {
                *aligned = AlignedVec::new();
            }
            frame
        });
        self.buf.advance(HEADER_LEN + len);
        if self.buf.is_empty() {
            // Nothing left to decode: give the buffer back rather than keep it while idle.
            self.buf = BytesMut::new();
        }
        frame.map(Some).map_err(|e| DecodeError::Malformed(e.to_string()))
    }

    /// Bytes the decoder holds allocated (its buffer's capacity), for tests and sizing.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Serializes messages into frames, through the thread's scratch buffer (so an encoder kept per
/// connection holds no memory of its own).
#[derive(Debug, Default)]
pub struct FrameEncoder {
    _private: (),
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// rkyv serialization failed.
    #[error("serialization failed: {0}")]
    Serialize(String),
    /// The encoded message is larger than [`MAX_FRAME_LEN`].
    #[error("message of {0} bytes exceeds the maximum frame size")]
    TooLarge(usize),
}

impl FrameEncoder {
    /// Appends one frame holding `value` to `out`.
    pub fn encode<T>(&mut self, value: &T, out: &mut BytesMut) -> Result<(), EncodeError>
    where
        T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    {
        // Taken out of the thread's slot for the call: serializing cannot re-enter it.
        let mut scratch = ALIGNED.with(|aligned| std::mem::take(&mut *aligned.borrow_mut()));
        scratch.clear();
        let scratch = rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, scratch)
            .map_err(|e| EncodeError::Serialize(e.to_string()))?;
        let len = scratch.len();
        let result = if len > MAX_FRAME_LEN {
            Err(EncodeError::TooLarge(len))
        } else {
            out.reserve(HEADER_LEN + len);
            out.put_u32_le(u32::try_from(len).expect("len <= MAX_FRAME_LEN fits u32"));
            out.put_slice(&scratch);
            Ok(())
        };
        if scratch.capacity() <= MAX_KEPT_SCRATCH {
            ALIGNED.with(|aligned| *aligned.borrow_mut() = scratch);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;

    fn sample() -> Vec<Uplink> {
        vec![
            Uplink::Hello(Hello {
                protocol_version: 1,
                mac: "001565aabbcc".into(),
                serial: String::new(),
                model: "T54W".into(),
                firmware: "96.86.0.100".into(),
                credential: "secret".into(),
                heartbeat_interval_s: 30,
            }),
            Uplink::Data(DataFrame { seq: 1, sent_at_ms: 5, body: Message::Heartbeat(Heartbeat { uptime_s: 9 }) }),
            Uplink::Data(DataFrame {
                seq: 2,
                sent_at_ms: 6,
                body: Message::StatusChange(StatusChange {
                    lines: vec![SipLine { line: 1, account: "100@pbx".into(), state: SipState::Registered }],
                    call_status: CallStatus::InCall,
                    firmware: "1.2".into(),
                    public_ip: Some(IpAddress::V4([203, 0, 113, 7])),
                    private_ip: Some(IpAddress::V6([1; 16])),
                    uptime_s: 100,
                    last_reboot_ms: Some(1),
                }),
            }),
            crash_alarm(3, 7, 1000),
        ]
    }

    /// A raised crash alarm (type 105) whose log is `log_len` bytes.
    fn crash_alarm(seq: u64, sent_at_ms: i64, log_len: usize) -> Uplink {
        Uplink::Data(DataFrame {
            seq,
            sent_at_ms,
            body: Message::Alarm(AlarmReport {
                code: 105,
                action: AlarmAction::Raise,
                description: "crash".into(),
                log: Some(vec![7; log_len]),
            }),
        })
    }

    fn encode_all(msgs: &[Uplink]) -> BytesMut {
        let mut enc = FrameEncoder::default();
        let mut out = BytesMut::new();
        for m in msgs {
            enc.encode(m, &mut out).expect("encodes");
        }
        out
    }

    /// A `Hello` as protocol version 1 encoded it (bytes recorded from the version 1 build).
    const HELLO_V1: &str = "a0000000303031353635616162626363534e2d313233343536373839303132333435363738393039362e38362e302e313030000000000000010000008c000000c8ffffff97000000ccffffff54353457ffffffff8b000000d3ffffff736563726574ffff1e000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn the_hello_layout_is_frozen_across_versions() {
        let hello = Hello {
            protocol_version: 1,
            mac: "001565aabbcc".into(),
            serial: "SN-12345678901234567890".into(),
            model: "T54W".into(),
            firmware: "96.86.0.100".into(),
            credential: "secret".into(),
            heartbeat_interval_s: 30,
        };
        let bytes = encode_all(&[Uplink::Hello(hello.clone())]);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, HELLO_V1, "the Hello frame changed: older devices could not be refused clearly");
        let mut dec = FrameDecoder::default();
        dec.push(&bytes);
        assert_eq!(dec.next_frame::<Uplink>().expect("decodes"), Some(Uplink::Hello(hello)));
    }

    #[test]
    fn round_trips_when_fed_one_byte_at_a_time() {
        let msgs = sample();
        let bytes = encode_all(&msgs);
        let mut dec = FrameDecoder::default();
        let mut got = Vec::new();
        for b in bytes.iter() {
            dec.push(&[*b]);
            while let Some(m) = dec.next_frame::<Uplink>().expect("valid") {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
        assert_eq!(dec.buffered(), 0);
    }

    /// An idle device's decoder holds nothing: the buffer goes back once every byte was decoded,
    /// even after a large frame, and stays while a frame is only partly received.
    #[test]
    fn a_drained_decoder_holds_no_buffer() {
        let alarm = crash_alarm(1, 1, 100_000);
        let bytes = encode_all(std::slice::from_ref(&alarm));
        let mut dec = FrameDecoder::default();
        dec.push(&bytes[..bytes.len() - 1]);
        assert_eq!(dec.next_frame::<Uplink>().expect("valid"), None);
        assert!(dec.capacity() >= bytes.len() - 1, "a partial frame is kept");
        dec.push(&bytes[bytes.len() - 1..]);
        assert_eq!(dec.next_frame::<Uplink>().expect("valid"), Some(alarm));
        assert_eq!(dec.capacity(), 0, "nothing buffered, nothing held");
        // The next frame after the large one decodes as before.
        let msgs = sample();
        dec.push(&encode_all(&msgs));
        let mut got = Vec::new();
        while let Some(m) = dec.next_frame::<Uplink>().expect("valid") {
            got.push(m);
        }
        assert_eq!(got, msgs);
        assert_eq!(dec.capacity(), 0);
    }

    #[test]
    fn oversized_length_is_rejected_before_the_payload_arrives() {
        let mut dec = FrameDecoder::new(1024);
        dec.push(&1025u32.to_le_bytes());
        assert!(matches!(dec.next_frame::<Uplink>(), Err(DecodeError::TooLarge { len: 1025, max: 1024 })));
        let mut dec = FrameDecoder::new(1024);
        dec.push(&u32::MAX.to_le_bytes());
        assert!(matches!(dec.next_frame::<Uplink>(), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn garbage_payload_is_malformed_not_a_panic() {
        for payload in [vec![0xffu8; 16], vec![0u8; 3], vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]] {
            let mut dec = FrameDecoder::default();
            dec.push(&(payload.len() as u32).to_le_bytes());
            dec.push(&payload);
            assert!(matches!(dec.next_frame::<Uplink>(), Err(DecodeError::Malformed(_))), "{payload:?}");
        }
    }

    #[test]
    fn truncated_frames_wait_for_more_bytes() {
        let bytes = encode_all(&sample()[..1]);
        let mut dec = FrameDecoder::default();
        dec.push(&bytes[..bytes.len() - 1]);
        assert!(dec.next_frame::<Uplink>().expect("not an error yet").is_none());
        dec.push(&bytes[bytes.len() - 1..]);
        assert!(dec.next_frame::<Uplink>().expect("valid").is_some());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut dec = FrameDecoder::new(4096);
            dec.push(&data);
            for _ in 0..64 {
                match dec.next_frame::<Uplink>() {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
