//! Session ids and the keys the store sees for them.
//!
//! [`SessionId`] answers "is this a valid id" once, by its type: every id the engine holds was
//! generated here or validated on the way in. [`StoreKey`] is what a store is given instead of
//! the id: by default the SHA-256 digest of the id, so that a copy of the store reveals no live
//! cookie.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The longest session id that is accepted, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// How many random bytes a generated id carries: 192 bits.
const ID_BYTES: usize = 24;

/// The length of a digest as base64url without padding.
const DIGEST_TEXT_LEN: usize = 43;

/// Whether `id` is acceptable as a session id: 1 to [`MAX_ID_LEN`] bytes of `[A-Za-z0-9_-]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A valid session id. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SessionId(Box<str>);

impl SessionId {
    /// A fresh id: 24 bytes from the operating system's CSPRNG, as 32 characters of base64url.
    pub(crate) fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes).into()))
    }

    /// `id`, if it is a valid id.
    pub(crate) fn parse(id: &str) -> Option<Self> {
        is_valid_id(id).then(|| Self(id.into()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The key the store sees for this id: its hash when `hashed`, else the id itself.
    pub(crate) fn store_key(&self, hashed: bool) -> StoreKey {
        if hashed {
            StoreKey::digest_of(self.as_str())
        } else {
            StoreKey::from(self.as_str())
        }
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(REDACTED)")
    }
}

/// The key under which a store keeps a session.
///
/// By default it is base64url(SHA-256(id)), 43 characters, and [`digest`](Self::digest) gives
/// the 32 bytes themselves (an in-process store can use them as they are); with
/// `hash_ids(false)` it is the raw id. Stores that keep text use [`as_str`](Self::as_str). A
/// key made from any other text (`StoreKey::from("…")`, for tests and tools) has no digest.
///
/// Its `Debug` never prints the key, which may be a live id.
#[derive(Clone)]
pub struct StoreKey(Repr);

#[derive(Clone)]
enum Repr {
    Digest {
        bytes: [u8; 32],
        text: [u8; DIGEST_TEXT_LEN],
    },
    Text(Box<str>),
}

impl StoreKey {
    /// The key of a hashed id: the digest and its base64url spelling.
    fn digest_of(id: &str) -> Self {
        let bytes: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        let mut text = [0u8; DIGEST_TEXT_LEN];
        let written = URL_SAFE_NO_PAD
            .encode_slice(bytes, &mut text)
            .expect("32 bytes are 43 characters of base64");
        debug_assert_eq!(written, DIGEST_TEXT_LEN);
        Self(Repr::Digest { bytes, text })
    }

    /// The key as text: what a store that keeps text uses.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Digest { text, .. } => std::str::from_utf8(text).expect("base64 is ASCII"),
            Repr::Text(text) => text,
        }
    }

    /// The SHA-256 digest this key spells, when it is the hash of an id.
    pub fn digest(&self) -> Option<&[u8; 32]> {
        match &self.0 {
            Repr::Digest { bytes, .. } => Some(bytes),
            Repr::Text(_) => None,
        }
    }
}

impl From<&str> for StoreKey {
    fn from(text: &str) -> Self {
        Self(Repr::Text(text.into()))
    }
}

impl From<String> for StoreKey {
    fn from(text: String) -> Self {
        Self(Repr::Text(text.into()))
    }
}

impl PartialEq for StoreKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for StoreKey {}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(REDACTED)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn generated_ids_are_32_urlsafe_chars_and_distinct() {
        let ids: BTreeSet<String> = (0..1000)
            .map(|_| SessionId::generate().unwrap().as_str().to_owned())
            .collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 32 && is_valid_id(id)));
    }

    #[test]
    fn validation() {
        assert!(is_valid_id("a"));
        assert!(is_valid_id(&"a".repeat(MAX_ID_LEN)));
        for bad in ["", "a.b", "a b", "a+b", "a/b", "é", "a=b"] {
            assert!(!is_valid_id(bad), "{bad:?}");
            assert!(SessionId::parse(bad).is_none());
        }
        assert!(!is_valid_id(&"a".repeat(MAX_ID_LEN + 1)));
    }

    #[test]
    fn a_hashed_key_is_the_base64url_of_the_digest() {
        let id = SessionId::parse("abc").unwrap();
        let key = id.store_key(true);
        let digest: [u8; 32] = Sha256::digest(b"abc").into();
        assert_eq!(key.digest(), Some(&digest));
        assert_eq!(key.as_str(), URL_SAFE_NO_PAD.encode(digest));
        let raw = id.store_key(false);
        assert_eq!((raw.as_str(), raw.digest()), ("abc", None));
        // The same text is the same key, whether it came with its digest or not.
        assert_eq!(StoreKey::from(key.as_str()), key);
        assert_eq!(StoreKey::from(key.as_str()).digest(), None);
    }

    #[test]
    fn debug_never_prints_an_id_or_a_key() {
        let id = SessionId::parse("secret-id").unwrap();
        assert!(!format!("{id:?}").contains("secret"));
        assert!(!format!("{:?}", id.store_key(false)).contains("secret"));
    }
}
