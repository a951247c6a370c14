//! Cookie signing in the seed's format, with key rotation.
//!
//! A signed id is `id + "." + base64(HMAC-SHA256(secret, id))`: the standard base64 alphabet
//! without padding. Values are split at the last `.`, the MAC is checked in constant time, and
//! anything that is not exactly that shape is rejected. [`Keys`] holds the secrets: the first
//! signs, every one verifies.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::ConfigError;
use crate::id::SessionId;

/// The shortest secret the engine accepts, in bytes.
pub(crate) const MIN_SECRET_LEN: usize = 32;

/// Length of a base64 (no padding) HMAC-SHA256 tag.
const TAG_B64_LEN: usize = 43;

/// A signing secret.
///
/// The HMAC is keyed once, when the key is made, and cloned for each id: the key's padded
/// blocks are hashed then, not on every request. `Debug` never prints the secret and `==`
/// compares in constant time.
#[derive(Clone)]
pub(crate) struct Key {
    secret: Box<[u8]>,
    mac: Hmac<Sha256>,
}

impl Key {
    /// A key from a secret of any length: for verifying values signed by other systems (see
    /// `Session::set_signed_id`). The engine's own keys come from [`Keys::new`].
    pub(crate) fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.into(),
            mac: Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    /// The keyed HMAC over `id`, ready to finalize or verify.
    fn mac(&self, id: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac
    }

    /// `id.base64(tag)`.
    fn sign(&self, id: &str) -> String {
        let tag = self.mac(id).finalize().into_bytes();
        let mut out = String::with_capacity(id.len() + 1 + TAG_B64_LEN);
        out.push_str(id);
        out.push('.');
        STANDARD_NO_PAD.encode_string(tag, &mut out);
        out
    }

    /// Whether `tag` is this key's MAC of `id`, compared in constant time.
    fn verifies(&self, id: &str, tag: &[u8]) -> bool {
        self.mac(id).verify_slice(tag).is_ok()
    }

    /// The id of `value` if this key signed it.
    pub(crate) fn verify(&self, value: &str) -> Option<SessionId> {
        let (id, tag) = split(value)?;
        if self.verifies(id, &tag) {
            SessionId::parse_signed(value, id.len())
        } else {
            None
        }
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

/// The engine's secrets: the first signs, every one verifies.
#[derive(Clone, Debug)]
pub(crate) struct Keys(Box<[Key]>);

/// A value that verified: its id, and whether the current key signed it.
#[derive(Debug)]
pub(crate) struct Verified {
    pub(crate) id: SessionId,
    /// Whether the first (signing) key verified it; `false` for an older one, whose cookie is
    /// re-issued under the current key.
    pub(crate) current: bool,
}

impl Keys {
    /// Checks the secrets: at least one, each at least [`MIN_SECRET_LEN`] bytes.
    pub(crate) fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Result<Self, ConfigError> {
        if secrets.is_empty() {
            return Err(ConfigError::MissingSecret);
        }
        secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| {
                let secret = secret.as_ref();
                if secret.len() < MIN_SECRET_LEN {
                    Err(ConfigError::SecretTooShort {
                        index,
                        len: secret.len(),
                    })
                } else {
                    Ok(Key::new(secret))
                }
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// `id` signed with the current key.
    pub(crate) fn sign(&self, id: &SessionId) -> String {
        self.0[0].sign(id.as_str())
    }

    /// Verifies `value` with each key in turn.
    pub(crate) fn verify(&self, value: &str) -> Option<Verified> {
        let (id, tag) = split(value)?;
        let index = self.0.iter().position(|key| key.verifies(id, &tag))?;
        Some(Verified {
            id: SessionId::parse_signed(value, id.len())?,
            current: index == 0,
        })
    }
}

/// Splits a signed value into its id and decoded tag, or `None` if it is not exactly
/// `id.base64(tag)` with a 32-byte tag in canonical base64.
fn split(value: &str) -> Option<(&str, [u8; 32])> {
    // The tag has no `.`, so the last one is where a well-formed value has it: just before
    // its last 43 bytes. A value with a `.` inside those bytes fails to decode.
    let dot = value.len().checked_sub(TAG_B64_LEN + 1)?;
    let (id, tag) = (value.get(..dot)?, value.get(dot..)?.strip_prefix('.')?);
    Some((id, decode_tag(tag)?))
}

/// Decodes the 43 characters of a tag into its 32 bytes: standard base64 without padding, and
/// canonical (`STANDARD_NO_PAD` refuses a last character whose two spare bits are not zero), so
/// each tag has one spelling.
fn decode_tag(text: &str) -> Option<[u8; 32]> {
    let mut tag = [0u8; 32];
    let len = STANDARD_NO_PAD.decode_slice(text, &mut tag).ok()?;
    (len == tag.len()).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    const OTHER: &str = "fedcba9876543210fedcba9876543210";

    fn keys(secrets: &[&str]) -> Keys {
        Keys::new(secrets).unwrap()
    }

    fn id(id: &str) -> SessionId {
        SessionId::parse(id).unwrap()
    }

    fn verified(keys: &Keys, value: &str) -> Option<(String, bool)> {
        keys.verify(value)
            .map(|v| (v.id.as_str().to_owned(), v.current))
    }

    #[test]
    fn r3_seed_test_vector() {
        // The seed's secret is shorter than the engine accepts; the format must still match.
        let key = Key::new(b"tobiiscool");
        let signed = "hello.DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI";
        assert_eq!(key.sign("hello"), signed);
        assert_eq!(key.verify(signed), Some(id("hello")));
    }

    #[test]
    fn secrets_are_checked() {
        assert_eq!(
            Keys::new::<&str>(&[]).unwrap_err(),
            ConfigError::MissingSecret
        );
        assert_eq!(
            Keys::new(&[SECRET, &"x".repeat(31)]).unwrap_err(),
            ConfigError::SecretTooShort { index: 1, len: 31 }
        );
        assert!(Keys::new(&["x".repeat(32)]).is_ok());
    }

    #[test]
    fn r3_round_trip_and_rotation() {
        let old = keys(&[SECRET]);
        let rotated = keys(&[OTHER, SECRET]);
        let signed = old.sign(&id("abc"));
        assert_eq!(verified(&rotated, &signed), Some(("abc".into(), false)));
        assert_eq!(verified(&keys(&[OTHER]), &signed), None);
        let current = rotated.sign(&id("abc"));
        assert_eq!(verified(&rotated, &current), Some(("abc".into(), true)));
    }

    #[test]
    fn r3_every_flipped_byte_rejects() {
        let keys = keys(&[SECRET]);
        let signed = keys.sign(&id("some-session-id"));
        for i in 0..signed.len() {
            for bit in [0x01u8, 0x02, 0x20, 0x40] {
                let mut bytes = signed.clone().into_bytes();
                bytes[i] ^= bit;
                let Ok(tampered) = String::from_utf8(bytes) else {
                    continue;
                };
                assert_eq!(
                    verified(&keys, &tampered),
                    None,
                    "byte {i} bit {bit:#x} accepted: {tampered}"
                );
            }
        }
    }

    #[test]
    fn r3_truncation_junk_and_missing_signature_reject() {
        let keys = keys(&[SECRET]);
        let signed = keys.sign(&id("some-session-id"));
        for end in 0..signed.len() {
            assert_eq!(verified(&keys, &signed[..end]), None, "prefix of {end}");
        }
        for junk in ["=", "==", "A", ".", " ", "x.y", "\0"] {
            assert_eq!(
                verified(&keys, &format!("{signed}{junk}")),
                None,
                "{junk:?}"
            );
        }
        for bad in ["some-session-id", "some-session-id.", "", "."] {
            assert_eq!(verified(&keys, bad), None, "{bad:?}");
        }
        // A signature over another id does not transfer.
        let other = keys.sign(&id("other"));
        let (_, tag) = other.rsplit_once('.').unwrap();
        assert_eq!(verified(&keys, &format!("some-session-id.{tag}")), None);
    }

    #[test]
    fn r3_a_valid_signature_over_an_invalid_id_rejects() {
        let key = Key::new(SECRET.as_bytes());
        let keys = keys(&[SECRET]);
        for bad in ["a.b.c", "a b", ""] {
            let signed = key.sign(bad);
            assert_eq!(verified(&keys, &signed), None, "{bad:?}");
            assert_eq!(key.verify(&signed), None, "{bad:?}");
        }
    }

    #[test]
    fn tags_decode_as_canonical_base64() {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for seed in 0u8..=255 {
            let bytes: [u8; 32] =
                std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7));
            let text = STANDARD_NO_PAD.encode(bytes);
            assert_eq!(text.len(), TAG_B64_LEN);
            assert_eq!(decode_tag(&text), Some(bytes));
            // Any other character in any place: refused, or another tag.
            for place in [0, 20, 41, 42] {
                for byte in [b'=', b'-', b'_', b' ', b'.', 0, 0x7F] {
                    let mut bad = text.clone().into_bytes();
                    bad[place] = byte;
                    let bad = String::from_utf8(bad).unwrap();
                    assert_eq!(decode_tag(&bad), None, "{place} {byte}");
                }
            }
            // The spare bits of the last character must be zero.
            let last = ALPHABET.iter().position(|&c| c == text.as_bytes()[42]);
            let mut spare = text.clone().into_bytes();
            spare[42] = ALPHABET[last.unwrap() | 1];
            assert_eq!(decode_tag(std::str::from_utf8(&spare).unwrap()), None);
            // A padded or shorter tag is not one.
            assert_eq!(decode_tag(&format!("{text}=")), None);
            assert_eq!(decode_tag(&text[..42]), None);
        }
    }

    /// RFC 4231's test cases 2 (a key shorter than a block) and 6 (a key longer than a block,
    /// hashed first), through a [`Key`]: its tag is HMAC-SHA256 as the RFC defines it.
    #[test]
    fn r3_tags_are_rfc_4231_hmac_sha256() {
        let hex = |text: &str| -> Vec<u8> {
            (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
                .collect()
        };
        for (secret, message, tag) in [
            (
                b"Jefe".to_vec(),
                "what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 131],
                "Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ] {
            let key = Key::new(&secret);
            let signed = key.sign(message);
            assert_eq!(
                signed,
                format!("{message}.{}", STANDARD_NO_PAD.encode(hex(tag))),
                "{message}"
            );
            let (_, decoded) = split(&signed).unwrap();
            assert!(key.verifies(message, &decoded), "{message}");
        }
    }

    #[test]
    fn debug_redacts_and_eq_compares_secrets() {
        let key = Key::new(SECRET.as_bytes());
        assert_eq!(format!("{key:?}"), "Key(REDACTED)");
        assert!(!format!("{:?}", keys(&[SECRET])).contains(SECRET));
        assert_eq!(key, Key::new(SECRET.as_bytes()));
        assert_ne!(key, Key::new(OTHER.as_bytes()));
    }
}
