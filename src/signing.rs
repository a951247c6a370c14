//! Cookie signing in the seed's format, with key rotation.
//!
//! A cookie value is `id + "." + base64(HMAC-SHA256(secret, id))`: the standard base64 alphabet
//! without padding (R3). Values are split at the last `.`, the MAC is checked in constant time,
//! and anything that is not exactly that shape is rejected.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The shortest secret that [`Key::new`] accepts, in bytes.
pub(crate) const MIN_SECRET_LEN: usize = 32;

/// Length of a base64 (no padding) HMAC-SHA256 tag.
const TAG_B64_LEN: usize = 43;

/// A signing secret.
///
/// The HMAC key schedule is computed once, when the key is made; signing and verifying clone
/// that prepared state instead of rehashing the secret on every request. `Debug` never prints
/// the secret and `==` compares in constant time.
#[derive(Clone)]
pub(crate) struct Key {
    secret: Box<[u8]>,
    mac: HmacSha256,
}

impl Key {
    /// Makes a key from a secret of at least [`MIN_SECRET_LEN`] bytes.
    ///
    /// # Errors
    ///
    /// Returns the secret's length when it is shorter than [`MIN_SECRET_LEN`].
    pub(crate) fn new(secret: impl AsRef<[u8]>) -> Result<Self, usize> {
        let secret = secret.as_ref();
        if secret.len() < MIN_SECRET_LEN {
            return Err(secret.len());
        }
        Ok(Self::new_unchecked(secret))
    }

    /// Makes a key from a secret of any length, for verifying values signed by other systems
    /// (see `Session::set_signed_id`).
    pub(crate) fn new_unchecked(secret: &[u8]) -> Self {
        // HMAC accepts keys of every length; this cannot fail.
        let mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        Self {
            secret: secret.into(),
            mac,
        }
    }

    /// Signs `id`: returns `id.base64(tag)`.
    pub(crate) fn sign(&self, id: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(id.len() + 1 + TAG_B64_LEN);
        out.push_str(id);
        out.push('.');
        STANDARD_NO_PAD.encode_string(tag, &mut out);
        out
    }

    /// Checks that `tag` is this key's MAC of `id`, in constant time.
    fn verify_tag(&self, id: &str, tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.verify_slice(tag).is_ok()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(REDACTED)")
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.secret.ct_eq(&other.secret).into()
    }
}

impl Eq for Key {}

/// Splits a signed value into its id and decoded tag, or `None` if it is not exactly
/// `id.base64(tag)` with a 32-byte tag in canonical base64.
fn split(value: &str) -> Option<(&str, [u8; 32])> {
    let (id, tag_b64) = value.rsplit_once('.')?;
    if tag_b64.len() != TAG_B64_LEN {
        return None;
    }
    let mut tag = [0u8; 32];
    // 43 characters decode to exactly 32 bytes; the decoder rejects non-canonical trailing
    // bits, so each tag has one spelling only.
    match STANDARD_NO_PAD.decode_slice(tag_b64, &mut tag) {
        Ok(32) => Some((id, tag)),
        _ => None,
    }
}

/// Verifies `value` with each key in turn. Returns the id and the index of the key that
/// verified it (0 is the current key), or `None`.
pub(crate) fn verify<'a>(keys: &[Key], value: &'a str) -> Option<(&'a str, usize)> {
    let (id, tag) = split(value)?;
    keys.iter()
        .position(|key| key.verify_tag(id, &tag))
        .map(|index| (id, index))
}

/// Decodes `%XX` escapes. `None` if an escape is malformed or the result is not UTF-8.
pub(crate) fn percent_decode(value: &str) -> Option<String> {
    fn hex(byte: u8) -> Option<u8> {
        match byte {
            b'0'..=b'9' => Some(byte - b'0'),
            b'a'..=b'f' => Some(byte - b'a' + 10),
            b'A'..=b'F' => Some(byte - b'A' + 10),
            _ => None,
        }
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = hex(*bytes.get(i + 1)?)?;
            let low = hex(*bytes.get(i + 2)?)?;
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> Key {
        Key::new(secret).unwrap()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn r3_seed_test_vector() {
        // The seed's secret is shorter than we accept; the format must still match.
        let key = Key::new_unchecked(b"tobiiscool");
        assert_eq!(
            key.sign("hello"),
            "hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI"
        );
        assert_eq!(
            verify(&[key], "hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI"),
            Some(("hello", 0))
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(Key::new("x".repeat(31)).unwrap_err(), 31);
        assert!(Key::new("x".repeat(32)).is_ok());
    }

    #[test]
    fn r3_round_trip_and_rotation() {
        let old = key(SECRET);
        let new = key("fedcba9876543210fedcba9876543210");
        let signed = old.sign("abc");
        assert_eq!(
            verify(&[new.clone(), old.clone()], &signed),
            Some(("abc", 1))
        );
        assert_eq!(verify(std::slice::from_ref(&new), &signed), None);
        assert_eq!(
            verify(&[new.clone(), old], &new.sign("abc")),
            Some(("abc", 0))
        );
    }

    #[test]
    fn r3_every_flipped_byte_rejects() {
        let k = key(SECRET);
        let signed = k.sign("some-session-id");
        for i in 0..signed.len() {
            for bit in [0x01u8, 0x02, 0x20, 0x40] {
                let mut bytes = signed.clone().into_bytes();
                bytes[i] ^= bit;
                let Ok(tampered) = String::from_utf8(bytes) else {
                    continue;
                };
                if tampered == signed {
                    continue;
                }
                assert_eq!(
                    verify(std::slice::from_ref(&k), &tampered),
                    None,
                    "byte {i} bit {bit:#x} accepted: {tampered}"
                );
            }
        }
    }

    #[test]
    fn r3_truncation_junk_and_missing_signature_reject() {
        let k = key(SECRET);
        let keys = std::slice::from_ref(&k);
        let signed = k.sign("some-session-id");
        for end in 0..signed.len() {
            assert_eq!(
                verify(keys, &signed[..end]),
                None,
                "prefix of {end} accepted"
            );
        }
        for junk in ["=", "==", "A", ".", " ", "x.y", "\0"] {
            assert_eq!(
                verify(keys, &format!("{signed}{junk}")),
                None,
                "junk {junk:?}"
            );
        }
        assert_eq!(verify(keys, "some-session-id"), None);
        assert_eq!(verify(keys, "some-session-id."), None);
        assert_eq!(verify(keys, ""), None);
        assert_eq!(verify(keys, "."), None);
        // A signature over another id does not transfer.
        let (_, tag) = k
            .sign("other")
            .rsplit_once('.')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        assert_eq!(verify(keys, &format!("some-session-id.{tag}")), None);
    }

    #[test]
    fn r3_ids_containing_dots_split_at_the_last() {
        let k = key(SECRET);
        let signed = k.sign("a.b.c");
        assert_eq!(
            verify(std::slice::from_ref(&k), &signed),
            Some(("a.b.c", 0))
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Bb%2fc").as_deref(), Some("a+b/c"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%FF"), None);
    }

    #[test]
    fn debug_redacts_and_eq_compares_secrets() {
        let k = key(SECRET);
        assert_eq!(format!("{k:?}"), "Key(REDACTED)");
        assert!(!format!("{k:?}").contains(SECRET));
        assert_eq!(k, key(SECRET));
        assert_ne!(k, key("fedcba9876543210fedcba9876543210"));
    }
}
