//! The relay link (ING-9): how `fleetpulse relay` carries its devices' exchanges to the server
//! over QUIC, on the devices' UDP address with ALPN [`RELAY_ALPN`] (sans-I/O).
//!
//! One exchange is one bidirectional stream. The relay writes a [`LinkRequest`] header (and, for
//! frames, the body), then finishes its side; the server writes one [`LinkAnswer`] and finishes
//! its side. Integers are little-endian, like the frame codec's length prefix.
//!
//! Request:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 1 | version, [`LINK_VERSION`] |
//! | 1 | 1 | kind: 1 frames, 2 frames resent (the answer was lost, or the device (re)connected), 3 wakes long poll |
//! | 2 | 2 | `C`, the relay credential's length, 1..=[`MAX_CREDENTIAL_LEN`] |
//! | 4 | `C` | the relay credential, UTF-8 |
//! | 4 + `C` | 8 | frames: the body's length; wakes: `after` (`u64::MAX`: none, learn where the log stands) |
//! | 12 + `C` | body | frames: the device's `Hello` and frames, length-prefixed as on a device's stream |
//!
//! Every stream carries the credential: the server checks it per exchange (through its grant
//! cache), so a revoked relay is refused within the cache's lifetime on a connection that stays
//! up.
//!
//! Answer (the status byte, then its fields; the stream ends after them):
//!
//! | status | fields |
//! | --- | --- |
//! | 0 ok | the server's frames for the device (`Welcome`, `Rejected`, `Ack`, `Command`), length-prefixed, to the end of the stream |
//! | 1 retry | `u32` milliseconds to wait; nothing was applied, send the same frames again |
//! | 2 refused | `u32` close code, `u16` reason length (≤ [`MAX_REASON_LEN`]), the reason (UTF-8) |
//! | 3 wakes | `u64` next, `u32` `N` (≤ [`MAX_WAKES`]), `N` × `u64` device ids |

/// ALPN of a relay's connection to the server (devices speak [`crate::ALPN`]).
pub const RELAY_ALPN: &[u8] = b"fleetpulse-relay/1";

/// The version byte of every request.
pub const LINK_VERSION: u8 = 1;

/// Bytes of a request header before the credential: version, kind, credential length.
pub const PREFIX_LEN: usize = 4;

/// Longest relay credential.
pub const MAX_CREDENTIAL_LEN: usize = 256;

/// Longest refusal reason (longer ones are cut when encoded).
pub const MAX_REASON_LEN: usize = 1024;

/// Most device ids in a wakes answer (the server's woken log holds no more).
pub const MAX_WAKES: usize = 65_536;

/// Bytes of a wakes answer before its device ids: the kind, `next` and the count.
const WAKES_HEADER_LEN: usize = 1 + 8 + 4;

/// Largest wakes answer: [`MAX_WAKES`] device ids.
pub const MAX_WAKES_ANSWER_LEN: usize = WAKES_HEADER_LEN + 8 * MAX_WAKES;

/// Longest answer a relay reads: 32 commands of the largest frame, and room for the rest.
pub const MAX_ANSWER_LEN: usize = 16 << 20;

const KIND_FRAMES: u8 = 1;
const KIND_FRAMES_RESENT: u8 = 2;
const KIND_WAKES: u8 = 3;

const STATUS_OK: u8 = 0;
const STATUS_RETRY: u8 = 1;
const STATUS_REFUSED: u8 = 2;
const STATUS_WAKES: u8 = 3;

/// Why link bytes could not be encoded or decoded. The stream they came on is answered with a
/// refusal (or, at the relay, the exchange fails); the connection and other streams go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The version byte is not [`LINK_VERSION`].
    #[error("relay link version {0}, this server speaks {LINK_VERSION}")]
    Version(u8),
    /// The kind byte is none of frames, frames resent, wakes.
    #[error("unknown relay link request kind {0}")]
    Kind(u8),
    /// The credential is empty or longer than [`MAX_CREDENTIAL_LEN`].
    #[error("relay credential of {0} bytes (1..={MAX_CREDENTIAL_LEN})")]
    CredentialLength(usize),
    /// The credential or the refusal reason is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// Fewer bytes than the fields need.
    #[error("truncated: {need} bytes needed, {got} present")]
    Truncated {
        /// Bytes the fields need.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// Bytes after the last field.
    #[error("{0} bytes after the last field")]
    Trailing(usize),
    /// The answer's status byte is unknown.
    #[error("unknown relay link answer status {0}")]
    Status(u8),
    /// A refusal reason longer than [`MAX_REASON_LEN`].
    #[error("refusal reason of {0} bytes (at most {MAX_REASON_LEN})")]
    ReasonLength(usize),
    /// A wakes answer with more than [`MAX_WAKES`] device ids.
    #[error("{0} woken devices (at most {MAX_WAKES})")]
    TooManyWakes(usize),
}

/// What a request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRequestKind {
    /// One device exchange: `body_len` bytes of frames follow the header.
    Frames {
        /// Sent before and the answer was lost, or the device (re)connected: commands it never
        /// accepted come again (the HTTPS form's resend header).
        resend: bool,
        /// Bytes of the body.
        body_len: u64,
    },
    /// The relay's long poll for woken devices of its scope after `after` (`None`: only where
    /// the server's log stands).
    Wakes {
        /// The `next` of the previous answer.
        after: Option<u64>,
    },
}

/// A request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRequest {
    /// The relay's own credential.
    pub credential: String,
    /// What it asks.
    pub kind: LinkRequestKind,
}

fn take<'a>(bytes: &mut &'a [u8], n: usize, need: usize, got: usize) -> Result<&'a [u8], LinkError> {
    if bytes.len() < n {
        return Err(LinkError::Truncated { need, got });
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn u64_at(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("eight bytes taken"))
}

fn u32_at(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes.try_into().expect("four bytes taken"))
}

impl LinkRequest {
    /// The header bytes (the body, if any, follows them on the stream).
    pub fn encode(&self) -> Result<Vec<u8>, LinkError> {
        let credential = self.credential.as_bytes();
        if credential.is_empty() || credential.len() > MAX_CREDENTIAL_LEN {
            return Err(LinkError::CredentialLength(credential.len()));
        }
        let (kind, value) = match self.kind {
            LinkRequestKind::Frames { resend: false, body_len } => (KIND_FRAMES, body_len),
            LinkRequestKind::Frames { resend: true, body_len } => (KIND_FRAMES_RESENT, body_len),
            LinkRequestKind::Wakes { after } => (KIND_WAKES, after.unwrap_or(u64::MAX)),
        };
        let mut out = Vec::with_capacity(PREFIX_LEN + credential.len() + 8);
        out.extend_from_slice(&[LINK_VERSION, kind]);
        out.extend_from_slice(&(credential.len() as u16).to_le_bytes());
        out.extend_from_slice(credential);
        out.extend_from_slice(&value.to_le_bytes());
        Ok(out)
    }

    /// How many header bytes follow the first [`PREFIX_LEN`], judged from those alone (the
    /// version, the kind and the credential's length are checked before anything more is read).
    pub fn rest_len(prefix: [u8; PREFIX_LEN]) -> Result<usize, LinkError> {
        if prefix[0] != LINK_VERSION {
            return Err(LinkError::Version(prefix[0]));
        }
        if !matches!(prefix[1], KIND_FRAMES | KIND_FRAMES_RESENT | KIND_WAKES) {
            return Err(LinkError::Kind(prefix[1]));
        }
        let credential = usize::from(u16::from_le_bytes([prefix[2], prefix[3]]));
        if credential == 0 || credential > MAX_CREDENTIAL_LEN {
            return Err(LinkError::CredentialLength(credential));
        }
        Ok(credential + 8)
    }

    /// A whole header: the [`PREFIX_LEN`] bytes and the [`LinkRequest::rest_len`] after them.
    pub fn decode(header: &[u8]) -> Result<LinkRequest, LinkError> {
        let got = header.len();
        let mut bytes = header;
        let prefix: [u8; PREFIX_LEN] =
            take(&mut bytes, PREFIX_LEN, PREFIX_LEN, got)?.try_into().expect("prefix bytes taken");
        let rest = LinkRequest::rest_len(prefix)?;
        let credential = take(&mut bytes, rest - 8, PREFIX_LEN + rest, got)?;
        let credential = std::str::from_utf8(credential).map_err(|_| LinkError::NotUtf8("the relay credential"))?;
        let value = u64_at(take(&mut bytes, 8, PREFIX_LEN + rest, got)?);
        if !bytes.is_empty() {
            return Err(LinkError::Trailing(bytes.len()));
        }
        let kind = match prefix[1] {
            KIND_FRAMES => LinkRequestKind::Frames { resend: false, body_len: value },
            KIND_FRAMES_RESENT => LinkRequestKind::Frames { resend: true, body_len: value },
            _ => LinkRequestKind::Wakes { after: (value != u64::MAX).then_some(value) },
        };
        Ok(LinkRequest { credential: credential.to_owned(), kind })
    }
}

/// The server's answer on an exchange's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAnswer {
    /// The frames are durable (or there were none): the server's frames for the device.
    Ok(Vec<u8>),
    /// Nothing was applied (rate limit, the device's other exchange in progress, the store or
    /// the server unavailable): send the same frames again after this wait.
    Retry {
        /// Milliseconds to wait.
        after_ms: u32,
    },
    /// The exchange is refused: the device's session ends with this close.
    Refused {
        /// One of [`crate::close_code`].
        close_code: u32,
        /// Why, for people.
        reason: String,
    },
    /// The answer to a wakes long poll.
    Wakes {
        /// The `after` of the next poll.
        next: u64,
        /// Woken devices of the relay's scope.
        devices: Vec<u64>,
    },
}

impl LinkAnswer {
    /// The answer's bytes (a refusal reason above [`MAX_REASON_LEN`] is cut at a character
    /// boundary; wakes above [`MAX_WAKES`] are cut to it, the rest come with the next poll's
    /// `next` unchanged).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            LinkAnswer::Ok(frames) => {
                let mut out = Vec::with_capacity(1 + frames.len());
                out.push(STATUS_OK);
                out.extend_from_slice(frames);
                out
            }
            LinkAnswer::Retry { after_ms } => {
                let mut out = vec![STATUS_RETRY];
                out.extend_from_slice(&after_ms.to_le_bytes());
                out
            }
            LinkAnswer::Refused { close_code, reason } => {
                let mut end = reason.len().min(MAX_REASON_LEN);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                let mut out = vec![STATUS_REFUSED];
                out.extend_from_slice(&close_code.to_le_bytes());
                out.extend_from_slice(&(end as u16).to_le_bytes());
                out.extend_from_slice(&reason.as_bytes()[..end]);
                out
            }
            LinkAnswer::Wakes { next, devices } => {
                let devices = &devices[..devices.len().min(MAX_WAKES)];
                let mut out = Vec::with_capacity(WAKES_HEADER_LEN + 8 * devices.len());
                out.push(STATUS_WAKES);
                out.extend_from_slice(&next.to_le_bytes());
                out.extend_from_slice(&(devices.len() as u32).to_le_bytes());
                for id in devices {
                    out.extend_from_slice(&id.to_le_bytes());
                }
                out
            }
        }
    }

    /// A whole answer (the relay reads the stream to its end, at most [`MAX_ANSWER_LEN`]).
    pub fn decode(answer: &[u8]) -> Result<LinkAnswer, LinkError> {
        let got = answer.len();
        let mut bytes = answer;
        let status = take(&mut bytes, 1, 1, got)?[0];
        let decoded = match status {
            STATUS_OK => return Ok(LinkAnswer::Ok(bytes.to_vec())),
            STATUS_RETRY => LinkAnswer::Retry { after_ms: u32_at(take(&mut bytes, 4, 5, got)?) },
            STATUS_REFUSED => {
                let close_code = u32_at(take(&mut bytes, 4, 7, got)?);
                let len = take(&mut bytes, 2, 7, got)?;
                let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
                if len > MAX_REASON_LEN {
                    return Err(LinkError::ReasonLength(len));
                }
                let reason = take(&mut bytes, len, 7 + len, got)?;
                let reason = std::str::from_utf8(reason).map_err(|_| LinkError::NotUtf8("the refusal reason"))?;
                LinkAnswer::Refused { close_code, reason: reason.to_owned() }
            }
            STATUS_WAKES => {
                let next = u64_at(take(&mut bytes, 8, WAKES_HEADER_LEN, got)?);
                let n = u32_at(take(&mut bytes, 4, WAKES_HEADER_LEN, got)?) as usize;
                if n > MAX_WAKES {
                    return Err(LinkError::TooManyWakes(n));
                }
                let ids = take(&mut bytes, 8 * n, WAKES_HEADER_LEN + 8 * n, got)?;
                LinkAnswer::Wakes { next, devices: ids.chunks_exact(8).map(u64_at).collect() }
            }
            other => return Err(LinkError::Status(other)),
        };
        if !bytes.is_empty() {
            return Err(LinkError::Trailing(bytes.len()));
        }
        Ok(decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: LinkRequestKind) -> LinkRequest {
        LinkRequest { credential: "relay-site-a-0123456789".into(), kind }
    }

    #[test]
    fn requests_round_trip_and_say_their_length_from_the_prefix() {
        for kind in [
            LinkRequestKind::Frames { resend: false, body_len: 0 },
            LinkRequestKind::Frames { resend: true, body_len: 4 << 20 },
            LinkRequestKind::Wakes { after: None },
            LinkRequestKind::Wakes { after: Some(0) },
            LinkRequestKind::Wakes { after: Some(41) },
        ] {
            let r = request(kind);
            let bytes = r.encode().unwrap();
            let prefix: [u8; PREFIX_LEN] = bytes[..PREFIX_LEN].try_into().unwrap();
            assert_eq!(PREFIX_LEN + LinkRequest::rest_len(prefix).unwrap(), bytes.len());
            assert_eq!(LinkRequest::decode(&bytes).unwrap(), r);
        }
    }

    #[test]
    fn malformed_requests_are_refused_with_their_reason() {
        let good = request(LinkRequestKind::Frames { resend: false, body_len: 9 }).encode().unwrap();
        let with = |i: usize, b: u8| {
            let mut v = good.clone();
            v[i] = b;
            v
        };
        assert_eq!(LinkRequest::decode(&with(0, 2)), Err(LinkError::Version(2)));
        assert_eq!(LinkRequest::decode(&with(1, 0)), Err(LinkError::Kind(0)));
        assert_eq!(LinkRequest::decode(&with(1, 4)), Err(LinkError::Kind(4)));
        assert_eq!(LinkRequest::rest_len([LINK_VERSION, 1, 0, 0]), Err(LinkError::CredentialLength(0)));
        assert_eq!(LinkRequest::rest_len([LINK_VERSION, 1, 1, 1]), Err(LinkError::CredentialLength(257)));
        assert_eq!(LinkRequest::rest_len([LINK_VERSION, 3, 0, 1]), Ok(256 + 8));
        assert!(matches!(LinkRequest::decode(&good[..3]), Err(LinkError::Truncated { need: 4, got: 3 })));
        assert!(matches!(
            LinkRequest::decode(&good[..good.len() - 1]),
            Err(LinkError::Truncated { got, .. }) if got == good.len() - 1
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(LinkRequest::decode(&trailing), Err(LinkError::Trailing(1)));
        assert_eq!(LinkRequest::decode(&with(PREFIX_LEN, 0xff)), Err(LinkError::NotUtf8("the relay credential")));
        let long = LinkRequest {
            credential: "x".repeat(MAX_CREDENTIAL_LEN + 1),
            kind: LinkRequestKind::Wakes { after: None },
        };
        assert_eq!(long.encode(), Err(LinkError::CredentialLength(MAX_CREDENTIAL_LEN + 1)));
        let empty = LinkRequest { credential: String::new(), kind: LinkRequestKind::Wakes { after: None } };
        assert_eq!(empty.encode(), Err(LinkError::CredentialLength(0)));
    }

    #[test]
    fn answers_round_trip() {
        for answer in [
            LinkAnswer::Ok(Vec::new()),
            LinkAnswer::Ok(vec![4, 0, 0, 0, 1, 2, 3, 4]),
            LinkAnswer::Retry { after_ms: 1500 },
            LinkAnswer::Refused { close_code: 1, reason: "unknown relay".into() },
            LinkAnswer::Refused { close_code: 3, reason: String::new() },
            LinkAnswer::Wakes { next: 7, devices: vec![] },
            LinkAnswer::Wakes { next: u64::MAX - 1, devices: vec![1, 2, u64::MAX] },
        ] {
            assert_eq!(LinkAnswer::decode(&answer.encode()).unwrap(), answer);
        }
    }

    #[test]
    fn long_reasons_and_wakes_are_cut_when_encoded() {
        let reason = "é".repeat(MAX_REASON_LEN);
        let LinkAnswer::Refused { reason: cut, .. } =
            LinkAnswer::decode(&LinkAnswer::Refused { close_code: 4, reason }.encode()).unwrap()
        else {
            panic!("a refusal")
        };
        assert_eq!(cut.len(), MAX_REASON_LEN);
        let many = LinkAnswer::Wakes { next: 1, devices: (0..MAX_WAKES as u64 + 5).collect() };
        let LinkAnswer::Wakes { devices, .. } = LinkAnswer::decode(&many.encode()).unwrap() else { panic!("wakes") };
        assert_eq!(devices.len(), MAX_WAKES);
    }

    #[test]
    fn malformed_answers_are_refused_with_their_reason() {
        assert!(matches!(LinkAnswer::decode(&[]), Err(LinkError::Truncated { need: 1, got: 0 })));
        assert_eq!(LinkAnswer::decode(&[9]), Err(LinkError::Status(9)));
        assert!(matches!(LinkAnswer::decode(&[STATUS_RETRY, 1, 2]), Err(LinkError::Truncated { need: 5, got: 3 })));
        assert_eq!(LinkAnswer::decode(&[STATUS_RETRY, 0, 0, 0, 0, 0]), Err(LinkError::Trailing(1)));
        let mut refused = vec![STATUS_REFUSED, 1, 0, 0, 0];
        refused.extend_from_slice(&(MAX_REASON_LEN as u16 + 1).to_le_bytes());
        assert_eq!(LinkAnswer::decode(&refused), Err(LinkError::ReasonLength(MAX_REASON_LEN + 1)));
        let mut short = vec![STATUS_REFUSED, 1, 0, 0, 0, 5, 0];
        short.extend_from_slice(b"abc");
        assert!(matches!(LinkAnswer::decode(&short), Err(LinkError::Truncated { need: 12, got: 10 })));
        let bad_utf8 = [STATUS_REFUSED, 1, 0, 0, 0, 1, 0, 0xff];
        assert_eq!(LinkAnswer::decode(&bad_utf8), Err(LinkError::NotUtf8("the refusal reason")));
        let mut wakes = vec![STATUS_WAKES];
        wakes.extend_from_slice(&3u64.to_le_bytes());
        wakes.extend_from_slice(&(MAX_WAKES as u32 + 1).to_le_bytes());
        assert_eq!(LinkAnswer::decode(&wakes), Err(LinkError::TooManyWakes(MAX_WAKES + 1)));
        let mut wakes = vec![STATUS_WAKES];
        wakes.extend_from_slice(&3u64.to_le_bytes());
        wakes.extend_from_slice(&2u32.to_le_bytes());
        wakes.extend_from_slice(&1u64.to_le_bytes());
        assert!(matches!(LinkAnswer::decode(&wakes), Err(LinkError::Truncated { need: 29, got: 21 })));
        wakes.extend_from_slice(&2u64.to_le_bytes());
        wakes.push(0);
        assert_eq!(LinkAnswer::decode(&wakes), Err(LinkError::Trailing(1)));
    }
}
