//! Random secrets (session tokens, provisioning credentials, generated passwords) and their
//! hashes. All randomness comes from `rand::rng()`, a CSPRNG seeded and periodically reseeded
//! from the operating system.

use rand::RngCore;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

use fleetpulse_store::TokenHash;

/// Lowercase hexadecimal form of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// `N` random bytes, hex-encoded (`2 * N` characters).
pub(crate) fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}

/// A random alphanumeric password of `len` characters (about 5.95 bits each).
pub(crate) fn random_password(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// A fresh bearer token: 32 random bytes, hex-encoded.
pub(crate) fn new_session_token() -> String {
    random_hex::<32>()
}

/// What the store keeps of a bearer token: the SHA-256 of its text.
pub(crate) fn token_hash(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths (not on where they
/// differ): for comparing secrets and values derived from them.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn hex_encodes_every_nibble() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn tokens_and_passwords_have_their_sizes_and_differ() {
        let (a, b) = (new_session_token(), new_session_token());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        let pw = random_password(20);
        assert_eq!(pw.len(), 20);
        assert!(pw.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn token_hash_is_sha256_of_the_text() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(hex(&token_hash("abc").0), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
