//! Session ids and the keys the store sees for them.
//!
//! [`SessionId`] answers "is this a valid id" once, by its type: every id the engine holds was
//! generated here or validated on the way in. [`StoreKey`] is what a store is given instead of
//! the id: by default the SHA-256 digest of the id, so that a copy of the store reveals no live
//! cookie.

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, OnceLock};

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
#[must_use]
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| ID_CHARS[usize::from(b)])
}

/// Which bytes an id may hold: ASCII letters and digits, `-` and `_`.
const ID_CHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    table
};

/// A valid session id. Its `Debug` never prints it.
///
/// Clones share one buffer. An id read from a signed value keeps that value in the buffer too
/// (`id.tag`), so that the exact text the client sent can be sent back without signing again.
#[derive(Clone)]
pub(crate) struct SessionId {
    /// The id, or the signed value it was read from: the id is its first `len` bytes.
    text: Arc<str>,
    len: usize,
}

impl SessionId {
    /// A fresh id: 24 bytes from the operating system's CSPRNG, as 32 characters of base64url.
    pub(crate) fn generate() -> Result<Self, getrandom::Error> {
        let bytes = random_bytes()?;
        let mut text = [0u8; 32];
        let len = URL_SAFE_NO_PAD
            .encode_slice(bytes, &mut text)
            .expect("24 bytes are 32 characters of base64");
        let text = std::str::from_utf8(&text[..len]).expect("base64 is ASCII");
        Ok(Self {
            text: text.into(),
            len,
        })
    }

    /// `id`, if it is a valid id.
    pub(crate) fn parse(id: &str) -> Option<Self> {
        is_valid_id(id).then(|| Self {
            text: id.into(),
            len: id.len(),
        })
    }

    /// The id of `signed`, a signed value whose first `len` bytes are the id, if it is valid.
    pub(crate) fn parse_signed(signed: &str, len: usize) -> Option<Self> {
        is_valid_id(signed.get(..len)?).then(|| Self {
            text: signed.into(),
            len,
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text[..self.len]
    }

    /// The signed value this id was read from, if it was read from one.
    pub(crate) fn signed(&self) -> Option<&str> {
        (self.len < self.text.len()).then_some(&*self.text)
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

impl PartialEq for SessionId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for SessionId {}

/// Random bytes for one id, from the operating system's CSPRNG.
///
/// Each thread keeps a pool of OS randomness that one `getrandom` call fills for 32 ids, so an
/// id costs a copy, not a system call; every byte is used once. (A process that forks after
/// making ids would share its pool with the child: forking servers should make ids in the
/// children only, as any thread-local generator asks.)
///
/// Hand-written rather than `rand`'s `ThreadRng`, which the library does not depend on: the
/// ids stay the operating system's own bytes, with no user-space generator in between.
fn random_bytes() -> Result<[u8; ID_BYTES], getrandom::Error> {
    const POOL: usize = ID_BYTES * 32;
    thread_local! {
        static RANDOM: RefCell<([u8; POOL], usize)> = const { RefCell::new(([0; POOL], POOL)) };
    }
    RANDOM.with_borrow_mut(|(pool, used)| {
        if *used == POOL {
            getrandom::fill(pool)?;
            *used = 0;
        }
        let mut bytes = [0u8; ID_BYTES];
        bytes.copy_from_slice(&pool[*used..*used + ID_BYTES]);
        // Used once: a byte handed out is gone from the pool.
        pool[*used..*used + ID_BYTES].fill(0);
        *used += ID_BYTES;
        Ok(bytes)
    })
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
        /// Its base64url spelling, made when a store first asks for text (the memory store
        /// never does).
        text: OnceLock<[u8; DIGEST_TEXT_LEN]>,
    },
    Text(Box<str>),
}

impl StoreKey {
    /// The key of a hashed id: its digest.
    fn digest_of(id: &str) -> Self {
        Self(Repr::Digest {
            bytes: Sha256::digest(id.as_bytes()).into(),
            text: OnceLock::new(),
        })
    }

    /// The key as text: what a store that keeps text uses.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Digest { bytes, text } => {
                let text = text.get_or_init(|| {
                    let mut text = [0u8; DIGEST_TEXT_LEN];
                    URL_SAFE_NO_PAD
                        .encode_slice(bytes, &mut text)
                        .expect("32 bytes are 43 characters of base64");
                    text
                });
                std::str::from_utf8(text).expect("base64 is ASCII")
            }
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
    use sha2::{Digest, Sha256};
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
        let allowed: String = (0..=127_u8)
            .map(char::from)
            .filter(|c| is_valid_id(&c.to_string()))
            .collect();
        assert_eq!(
            allowed,
            "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
        );
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
