//! Time-based one-time passwords for login protection (SPEC ACC-3: RFC 6238, ±1 step, each
//! code usable once).
//!
//! Sans-I/O: nothing here reads the clock or touches storage. The caller passes the current Unix
//! time and the last step it accepted for the account, and stores the step that [`verify`]
//! returns as the new last-used step; a code of that step or of any earlier step is then refused
//! as [`TotpError::Reused`].
//!
//! Parameters are the ones every authenticator app understands: HMAC-SHA-1, a 30-second step
//! ([`PERIOD_SECONDS`]), 6 digits ([`DIGITS`]), and one step of tolerance either side of the
//! current one ([`SKEW_STEPS`]) for clock drift and typing time.

use std::fmt;

use rand::CryptoRng;
use ring::hmac;

/// Length of one TOTP time step, in seconds (RFC 6238 `X`).
pub const PERIOD_SECONDS: u64 = 30;

/// Number of decimal digits in a code produced by [`code_at`] and accepted by [`verify`].
pub const DIGITS: u32 = 6;

/// How many steps before and after the current one [`verify`] also accepts.
pub const SKEW_STEPS: u64 = 1;

/// Length of a [`DIGITS`]-digit code as text.
const CODE_LEN: usize = DIGITS as usize;

/// Length of the secret in bytes (160 bits, the HMAC-SHA-1 output size recommended by RFC 4226).
const SECRET_LEN: usize = 20;

/// RFC 4648 base32 alphabet.
const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A TOTP shared secret: 160 random bits, shown to the user as base32 or as an `otpauth://` URI
/// (QR code) and kept by the server to compute the expected codes.
///
/// `Debug` does not print the secret.
#[derive(Clone)]
pub struct TotpSecret([u8; 20]);

impl TotpSecret {
    /// A fresh secret of 160 bits drawn from `rng`, which must be a cryptographically secure
    /// generator (for example `&mut rand::rng()`; see also [`TotpSecret::random`]).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; SECRET_LEN];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// A fresh secret from `rand::rng()`, the operating-system-seeded thread-local CSPRNG.
    pub fn random() -> Self {
        Self::generate(&mut rand::rng())
    }

    /// The secret with exactly these bytes (for example as loaded from storage).
    pub const fn from_bytes(bytes: [u8; 20]) -> Self {
        Self(bytes)
    }

    /// The raw bytes of the secret.
    pub const fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// The secret in RFC 4648 base32: uppercase, without padding, always 32 characters.
    pub fn to_base32(&self) -> String {
        base32_encode(&self.0)
    }

    /// Parses the base32 form of a secret, as typed or pasted by a person: letters may be of
    /// either case and ASCII spaces anywhere are ignored. Returns `None` unless what remains is
    /// exactly 32 base32 characters (no padding, no other characters).
    pub fn from_base32(text: &str) -> Option<Self> {
        let compact: String = text.chars().filter(|&c| c != ' ').collect();
        let bytes = base32_decode(&compact)?;
        <[u8; SECRET_LEN]>::try_from(bytes).ok().map(Self)
    }

    /// The Key URI that authenticator apps import (usually through a QR code):
    /// `otpauth://totp/Issuer:account?secret=...&issuer=Issuer&algorithm=SHA1&digits=6&period=30`.
    ///
    /// `issuer` and `account` are percent-encoded (everything but RFC 3986 unreserved characters,
    /// so a `:` inside either cannot be mistaken for the label separator). An empty `issuer`
    /// leaves out both the label prefix and the `issuer` parameter.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        let secret = self.to_base32();
        let account = percent_encode(account);
        let params = format!("algorithm=SHA1&digits={DIGITS}&period={PERIOD_SECONDS}");
        if issuer.is_empty() {
            format!("otpauth://totp/{account}?secret={secret}&{params}")
        } else {
            let issuer = percent_encode(issuer);
            format!("otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}&{params}")
        }
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// `uri` (an `otpauth://` URI) as a QR code in SVG: medium error correction, the standard
/// 4-module quiet zone, black on white, 4 px per module. One path with a segment per horizontal
/// run of dark modules (about 8 KiB; the crate's own SVG renderer, a rectangle per module, draws 22). `None` when the text
/// is too long for a QR code (an `otpauth://` URI with a bounded email address never is).
pub fn qr_svg(uri: &str) -> Option<String> {
    use std::fmt::Write as _;
    const QUIET: usize = 4;
    let code = qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    let size = width + 2 * QUIET;
    let px = size * 4;
    let mut path = String::with_capacity(width * width);
    for (y, row) in colors.chunks(width).enumerate() {
        let mut x = 0;
        while x < width {
            if row[x] == qrcode::Color::Dark {
                let run = row[x..].iter().take_while(|c| **c == qrcode::Color::Dark).count();
                // Writing to a String cannot fail.
                let _ = write!(path, "M{} {}h{run}v1h-{run}z", x + QUIET, y + QUIET);
                x += run;
            } else {
                x += 1;
            }
        }
    }
    Some(format!(
        "<?xml version=\"1.0\" standalone=\"yes\"?><svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" \
         width=\"{px}\" height=\"{px}\" viewBox=\"0 0 {size} {size}\" shape-rendering=\"crispEdges\">\
         <rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/><path fill=\"#000\" d=\"{path}\"/></svg>"
    ))
}

/// Why [`verify`] refused a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    /// The code is not exactly six ASCII digits.
    #[error("a TOTP code is exactly 6 digits")]
    Malformed,
    /// The code matches none of the accepted steps (wrong, or too old or too new).
    #[error("the TOTP code is wrong or expired")]
    Invalid,
    /// The code matches a step at or before the last step already used for this secret.
    #[error("the TOTP code has already been used")]
    Reused,
}

/// The 6-digit code of `secret` at `unix_seconds` (HMAC-SHA-1, 30-second step). Codes with
/// leading zeros are returned as smaller numbers; display them with `{:06}`.
pub fn code_at(secret: &TotpSecret, unix_seconds: u64) -> u32 {
    code_at_digits::<DIGITS>(secret, unix_seconds)
}

/// The `N`-digit code of `secret` at `unix_seconds` (HMAC-SHA-1, 30-second step); `N` must be
/// between 1 and 9. [`code_at`] is this with `N = 6`; other lengths exist for the 8-digit test
/// vectors of RFC 6238 Appendix B.
pub fn code_at_digits<const N: u32>(secret: &TotpSecret, unix_seconds: u64) -> u32 {
    const { assert!(N >= 1 && N <= 9, "a TOTP code has 1 to 9 digits") };
    hotp(&hmac_key(secret), unix_seconds / PERIOD_SECONDS, N)
}

/// Checks a code typed by the user at `unix_seconds`, given the last step already used for this
/// secret (`None` if none yet).
///
/// `code` is compared, in constant time, with the codes of the current step and of one step
/// either side. On success returns the matched step (`unix_seconds / 30`, give or take one),
/// which the caller must store as the account's new `last_used_step`. If the code matches more
/// than one step (a one-in-a-million collision), the latest of them counts.
///
/// # Errors
///
/// - [`TotpError::Malformed`] if `code` is not exactly six ASCII digits;
/// - [`TotpError::Invalid`] if it matches none of the three steps;
/// - [`TotpError::Reused`] if the step it matches is at or before `last_used_step`, so each code
///   logs in at most once and a code older than one already used is refused too.
pub fn verify(
    secret: &TotpSecret,
    code: &str,
    unix_seconds: u64,
    last_used_step: Option<u64>,
) -> Result<u64, TotpError> {
    let submitted = parse_code(code)?;
    let key = hmac_key(secret);
    let now = unix_seconds / PERIOD_SECONDS;
    let mut matched = None;
    // All candidate steps are checked, without stopping at the first match; the loop runs in
    // increasing order, so `matched` ends up as the latest matching step.
    for step in now.saturating_sub(SKEW_STEPS)..=now.saturating_add(SKEW_STEPS) {
        let expected = ascii_code(hotp(&key, step, DIGITS));
        if constant_time_eq(&expected, &submitted) {
            matched = Some(step);
        }
    }
    let step = matched.ok_or(TotpError::Invalid)?;
    if last_used_step.is_some_and(|last| step <= last) {
        return Err(TotpError::Reused);
    }
    Ok(step)
}

/// The HMAC-SHA-1 key of `secret`.
fn hmac_key(secret: &TotpSecret) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &secret.0)
}

/// RFC 4226 HOTP: HMAC-SHA-1 of the big-endian counter, dynamic truncation to 31 bits, the last
/// `digits` decimal digits.
fn hotp(key: &hmac::Key, counter: u64, digits: u32) -> u32 {
    let tag = hmac::sign(key, &counter.to_be_bytes());
    // An HMAC-SHA-1 tag is 20 bytes: `offset` is at most 15, so every index below is in range.
    let mac = tag.as_ref();
    let offset = usize::from(mac[19] & 0x0f);
    let binary = u32::from_be_bytes([mac[offset], mac[offset + 1], mac[offset + 2], mac[offset + 3]]) & 0x7fff_ffff;
    binary % 10u32.pow(digits)
}

/// The bytes of `code` if it is exactly [`CODE_LEN`] ASCII digits.
fn parse_code(code: &str) -> Result<[u8; CODE_LEN], TotpError> {
    let bytes = <[u8; CODE_LEN]>::try_from(code.as_bytes()).map_err(|_| TotpError::Malformed)?;
    if bytes.iter().all(u8::is_ascii_digit) { Ok(bytes) } else { Err(TotpError::Malformed) }
}

/// `code` as [`CODE_LEN`] ASCII digits, zero-padded on the left.
fn ascii_code(mut code: u32) -> [u8; CODE_LEN] {
    let mut out = [b'0'; CODE_LEN];
    for slot in out.iter_mut().rev() {
        // `code % 10` is below 10, so the cast is lossless.
        *slot = b'0' + (code % 10) as u8;
        code /= 10;
    }
    out
}

/// Whether `a == b`, looking at every byte whatever the earlier ones were.
fn constant_time_eq(a: &[u8; CODE_LEN], b: &[u8; CODE_LEN]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// RFC 4648 base32 of `bytes`, uppercase, without padding.
fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for &byte in bytes {
        buffer = (buffer << 8 | u32::from(byte)) & 0xfff;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32_ALPHABET[((buffer >> bits) & 0x1f) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32_ALPHABET[((buffer << (5 - bits)) & 0x1f) as usize]));
    }
    out
}

/// Decodes unpadded RFC 4648 base32 (either case). `None` on any other character, on a length
/// no encoder produces, or on non-zero trailing bits.
fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buffer = (buffer << 5 | u32::from(value)) & 0xfff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            // Masked to 8 bits, so the cast is lossless.
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    // A canonical encoding leaves fewer than 5 bits over, all zero.
    if bits >= 5 || buffer & ((1 << bits) - 1) != 0 {
        return None;
    }
    Some(out)
}

/// Percent-encodes every byte of `text` except RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// The SHA-1 secret of RFC 4226 Appendix D and RFC 6238 Appendix B.
    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(*b"12345678901234567890")
    }

    const RFC_SECRET_BASE32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn rfc6238_sha1_vectors() {
        // (T, TOTP) from RFC 6238 Appendix B, SHA-1 rows, 8 digits.
        let cases = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        let secret = rfc_secret();
        for (time, expected) in cases {
            assert_eq!(format!("{:08}", code_at_digits::<8>(&secret, time)), expected, "8 digits at T={time}");
            // Same truncated value, fewer digits: the 6-digit code is the last six.
            let six = &expected[2..];
            assert_eq!(format!("{:06}", code_at(&secret, time)), six, "6 digits at T={time}");
            assert_eq!(verify(&secret, six, time, None), Ok(time / 30), "verify at T={time}");
        }
    }

    #[test]
    fn rfc4226_hotp_vectors() {
        // RFC 4226 Appendix D: HOTP values for counters 0..=9; TOTP step k is HOTP counter k.
        let expected = [755_224, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871, 520_489];
        let secret = rfc_secret();
        for (counter, code) in (0u64..).zip(expected) {
            assert_eq!(code_at(&secret, counter * 30), code, "counter {counter}");
            assert_eq!(code_at(&secret, counter * 30 + 29), code, "counter {counter}, end of step");
        }
    }

    /// What a verification case submits.
    #[derive(Debug, Clone, Copy)]
    enum Submit {
        /// The correct code of the step this many steps from the current one.
        Step(i64),
        /// This literal text.
        Text(&'static str),
    }

    struct VerifyCase {
        name: &'static str,
        time: u64,
        submit: Submit,
        /// Last used step, relative to the current one.
        last_used: Option<i64>,
        /// Matched step relative to the current one, or the error.
        expected: Result<i64, TotpError>,
    }

    const NOW: u64 = 1_111_111_111;

    fn case(
        name: &'static str,
        submit: Submit,
        last_used: Option<i64>,
        expected: Result<i64, TotpError>,
    ) -> VerifyCase {
        VerifyCase { name, time: NOW, submit, last_used, expected }
    }

    fn run(case: &VerifyCase) {
        let secret = rfc_secret();
        let now_step = case.time / 30;
        let step = |offset: i64| now_step.checked_add_signed(offset).expect("step in range");
        let text = match case.submit {
            Submit::Step(offset) => format!("{:06}", code_at(&secret, step(offset) * 30)),
            Submit::Text(text) => text.to_owned(),
        };
        let got = verify(&secret, &text, case.time, case.last_used.map(step));
        assert_eq!(got, case.expected.map(step), "{}: code {text:?} at T={}", case.name, case.time);
    }

    #[test]
    fn verify_cases() {
        use Submit::{Step, Text};
        use TotpError::{Invalid, Malformed, Reused};
        let cases = [
            case("current step", Step(0), None, Ok(0)),
            case("previous step", Step(-1), None, Ok(-1)),
            case("next step", Step(1), None, Ok(1)),
            case("two steps ago", Step(-2), None, Err(Invalid)),
            case("two steps ahead", Step(2), None, Err(Invalid)),
            case("long ago", Step(-1000), None, Err(Invalid)),
            case("wrong code", Text("000000"), None, Err(Invalid)),
            case("replay of the same code", Step(0), Some(0), Err(Reused)),
            case("older step after a newer one", Step(-1), Some(0), Err(Reused)),
            case("current step after next one", Step(0), Some(1), Err(Reused)),
            case("replay far in the future", Step(0), Some(100), Err(Reused)),
            case("current after previous", Step(0), Some(-1), Ok(0)),
            case("next after current", Step(1), Some(0), Ok(1)),
            case("previous after older", Step(-1), Some(-5), Ok(-1)),
            case("wrong code with history", Text("000000"), Some(0), Err(Invalid)),
            case("empty", Text(""), None, Err(Malformed)),
            case("five digits", Text("12345"), None, Err(Malformed)),
            case("seven digits", Text("1234567"), None, Err(Malformed)),
            case("letter", Text("12a456"), None, Err(Malformed)),
            case("leading space", Text(" 123456"), None, Err(Malformed)),
            case("trailing space", Text("123456 "), None, Err(Malformed)),
            case("inner space", Text("123 456"), None, Err(Malformed)),
            case("trailing newline", Text("123456\n"), None, Err(Malformed)),
            case("sign", Text("+12345"), None, Err(Malformed)),
            case("non-ASCII digits", Text("١٢٣٤٥٦"), None, Err(Malformed)),
            case("full-width digits", Text("１２３４５６"), None, Err(Malformed)),
            case("malformed even if replayed", Text("12345"), Some(0), Err(Malformed)),
            VerifyCase {
                name: "first second of a step",
                time: 30 * 40_000_000,
                submit: Step(-1),
                last_used: None,
                expected: Ok(-1),
            },
            VerifyCase {
                name: "last second of a step",
                time: 30 * 40_000_000 + 29,
                submit: Step(1),
                last_used: None,
                expected: Ok(1),
            },
            VerifyCase { name: "epoch, current", time: 15, submit: Step(0), last_used: None, expected: Ok(0) },
            VerifyCase { name: "epoch, next", time: 15, submit: Step(1), last_used: None, expected: Ok(1) },
            VerifyCase { name: "epoch, two ahead", time: 15, submit: Step(2), last_used: None, expected: Err(Invalid) },
            VerifyCase { name: "epoch, replay", time: 0, submit: Step(0), last_used: Some(0), expected: Err(Reused) },
        ];
        for case in &cases {
            run(case);
        }
    }

    #[test]
    fn login_sequence_uses_each_code_once() {
        let secret = rfc_secret();
        let first = format!("{:06}", code_at(&secret, NOW));
        let step = verify(&secret, &first, NOW, None).expect("first login");
        assert_eq!(verify(&secret, &first, NOW + 5, Some(step)), Err(TotpError::Reused));
        let later = NOW + 30;
        let second = format!("{:06}", code_at(&secret, later));
        let step2 = verify(&secret, &second, later, Some(step)).expect("next step's code");
        assert_eq!(step2, step + 1);
        // The first code is still inside the ±1 window, but older than the one just used.
        assert_eq!(verify(&secret, &first, later, Some(step2)), Err(TotpError::Reused));
    }

    #[test]
    fn base32_rfc4648_vectors() {
        // RFC 4648 section 10, padding removed.
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "MY"),
            (b"fo", "MZXQ"),
            (b"foo", "MZXW6"),
            (b"foob", "MZXW6YQ"),
            (b"fooba", "MZXW6YTB"),
            (b"foobar", "MZXW6YTBOI"),
        ];
        for (bytes, text) in cases {
            assert_eq!(base32_encode(bytes), text, "encode {bytes:?}");
            assert_eq!(base32_decode(text).as_deref(), Some(bytes), "decode {text:?}");
            assert_eq!(base32_decode(&text.to_lowercase()).as_deref(), Some(bytes), "decode lowercase {text:?}");
        }
        // Lengths no encoder produces, and non-zero trailing bits.
        for text in ["M", "MZX", "MZXW6Y", "MZ", "MZXR"] {
            assert_eq!(base32_decode(text), None, "decode {text:?}");
        }
    }

    #[test]
    fn secret_from_base32_cases() {
        let rfc = Some(*b"12345678901234567890");
        let cases: [(&str, Option<[u8; 20]>); 17] = [
            (RFC_SECRET_BASE32, rfc),
            ("gezdgnbvgy3tqojqgezdgnbvgy3tqojq", rfc),
            ("GeZdGnBvGy3TqOjQgEzDgNbVgY3tQoJq", rfc),
            ("GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ", rfc),
            ("  GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ  ", rfc),
            ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Some([0; 20])),
            ("77777777777777777777777777777777", Some([0xff; 20])),
            ("", None),
            ("    ", None),
            ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ", None),
            ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQA", None),
            ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQAAAAAAAA", None),
            ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1", None),
            ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ8", None),
            ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ====", None),
            ("GEZDGNBVGY3TQOJQ\tGEZDGNBVGY3TQOJQ", None),
            ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJÉ", None),
        ];
        for (text, expected) in cases {
            assert_eq!(TotpSecret::from_base32(text).map(|s| *s.as_bytes()), expected, "{text:?}");
        }
    }

    #[test]
    fn base32_known_vector_and_round_trip() {
        assert_eq!(rfc_secret().to_base32(), RFC_SECRET_BASE32);
        let mut rng = StdRng::seed_from_u64(6238);
        let mut secrets: Vec<TotpSecret> = (0..200).map(|_| TotpSecret::generate(&mut rng)).collect();
        secrets.extend([TotpSecret::from_bytes([0; 20]), TotpSecret::from_bytes([0xff; 20]), TotpSecret::random()]);
        for secret in &secrets {
            let text = secret.to_base32();
            assert_eq!(text.len(), 32, "{text}");
            assert!(text.bytes().all(|b| BASE32_ALPHABET.contains(&b)), "{text}");
            let back = TotpSecret::from_base32(&text).expect("round trip");
            assert_eq!(back.as_bytes(), secret.as_bytes());
            let lower = TotpSecret::from_base32(&text.to_lowercase()).expect("lowercase round trip");
            assert_eq!(lower.as_bytes(), secret.as_bytes());
        }
    }

    #[test]
    fn generated_secrets_differ() {
        let a = TotpSecret::random();
        let b = TotpSecret::random();
        assert_ne!(a.as_bytes(), b.as_bytes());
        let mut rng = StdRng::seed_from_u64(1);
        let c = TotpSecret::generate(&mut rng);
        let d = TotpSecret::generate(&mut rng);
        assert_ne!(c.as_bytes(), d.as_bytes());
    }

    #[test]
    fn debug_does_not_reveal_the_secret() {
        let shown = format!("{:?}", rfc_secret());
        assert_eq!(shown, "TotpSecret(<redacted>)");
        assert!(!shown.contains("GEZD") && !shown.contains("49"));
    }

    #[test]
    fn otpauth_uri_cases() {
        let tail = "algorithm=SHA1&digits=6&period=30";
        let s = RFC_SECRET_BASE32;
        let cases = [
            ("Fleetpulse", "alice", format!("otpauth://totp/Fleetpulse:alice?secret={s}&issuer=Fleetpulse&{tail}")),
            (
                "Fleetpulse",
                "alice@example.com",
                format!("otpauth://totp/Fleetpulse:alice%40example.com?secret={s}&issuer=Fleetpulse&{tail}"),
            ),
            ("ACME Co", "bob", format!("otpauth://totp/ACME%20Co:bob?secret={s}&issuer=ACME%20Co&{tail}")),
            ("a:b", "c:d", format!("otpauth://totp/a%3Ab:c%3Ad?secret={s}&issuer=a%3Ab&{tail}")),
            (
                "x&y=z?#",
                "p/q+r%",
                format!("otpauth://totp/x%26y%3Dz%3F%23:p%2Fq%2Br%25?secret={s}&issuer=x%26y%3Dz%3F%23&{tail}"),
            ),
            ("Müller", "zoë", format!("otpauth://totp/M%C3%BCller:zo%C3%AB?secret={s}&issuer=M%C3%BCller&{tail}")),
            (
                "fleet-pulse_1.0~",
                "a-b_c.d~e",
                format!("otpauth://totp/fleet-pulse_1.0~:a-b_c.d~e?secret={s}&issuer=fleet-pulse_1.0~&{tail}"),
            ),
            ("", "alice", format!("otpauth://totp/alice?secret={s}&{tail}")),
        ];
        for (issuer, account, expected) in cases {
            assert_eq!(rfc_secret().otpauth_uri(issuer, account), expected, "issuer {issuer:?}, account {account:?}");
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(TotpError::Malformed.to_string(), "a TOTP code is exactly 6 digits");
        assert_eq!(TotpError::Invalid.to_string(), "the TOTP code is wrong or expired");
        assert_eq!(TotpError::Reused.to_string(), "the TOTP code has already been used");
    }
}
