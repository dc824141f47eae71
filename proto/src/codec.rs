//! Length-prefixed frame codec (sans-I/O).
//!
//! A frame is a little-endian `u32` payload length followed by the rkyv bytes of one message.
//! The length is checked against the decoder's maximum before a single payload byte is buffered,
//! and the payload is validated by rkyv's checked API before it is deserialized: malformed bytes
//! are an error, never undefined behaviour.

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
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    aligned: AlignedVec,
    max_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    /// A decoder that rejects frames longer than `max_len` payload bytes.
    pub fn new(max_len: usize) -> Self {
        FrameDecoder { buf: BytesMut::new(), aligned: AlignedVec::new(), max_len }
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
        self.buf.advance(HEADER_LEN);
        let payload = self.buf.split_to(len);
        // rkyv needs its root aligned; copy the payload into an aligned scratch buffer.
        self.aligned.clear();
        self.aligned.extend_from_slice(&payload);
        rkyv::from_bytes::<T, rancor::Error>(&self.aligned).map(Some).map_err(|e| DecodeError::Malformed(e.to_string()))
    }
}

/// Serializes messages into frames, reusing its scratch buffer.
#[derive(Debug, Default)]
pub struct FrameEncoder {
    scratch: AlignedVec,
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
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let scratch = rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, scratch)
            .map_err(|e| EncodeError::Serialize(e.to_string()))?;
        let len = scratch.len();
        if len > MAX_FRAME_LEN {
            self.scratch = scratch;
            return Err(EncodeError::TooLarge(len));
        }
        out.reserve(HEADER_LEN + len);
        out.put_u32_le(u32::try_from(len).expect("len <= MAX_FRAME_LEN fits u32"));
        out.put_slice(&scratch);
        self.scratch = scratch;
        Ok(())
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
            Uplink::Data(DataFrame {
                seq: 3,
                sent_at_ms: 7,
                body: Message::Alarm(AlarmReport {
                    code: 105,
                    action: AlarmAction::Raise,
                    description: "crash".into(),
                    log: Some(vec![7; 1000]),
                }),
            }),
        ]
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
