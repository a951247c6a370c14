//! SHA-256 and HMAC-SHA256 of short messages, straight on the compression function.
//!
//! Every request hashes its session id (the store key) and checks an HMAC over it (the
//! cookie). Ids fit one 64-byte block, and the HMAC key's two padded blocks are hashed once,
//! when the key is made: so a hash costs one compression and an HMAC two, with none of the
//! buffering, cloning and finalizing of the general-purpose `Digest` and `Mac` types. Messages
//! that do not fit one block ([`ONE_BLOCK`]) go through those types instead.

use hmac::{Hmac, Mac};
use sha2::digest::consts::U64;
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};

/// The longest message that fits one block with its padding: 64 bytes less the `0x80` byte and
/// the 8-byte length.
pub(crate) const ONE_BLOCK: usize = 55;

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

type Block = GenericArray<u8, U64>;

/// The digest of `prefix` whole blocks (hashed into `state`) followed by `tail`, which must fit
/// one block.
fn finish(mut state: [u32; 8], prefix: u64, tail: &[u8]) -> [u8; 32] {
    debug_assert!(tail.len() <= ONE_BLOCK);
    let mut block = Block::default();
    block[..tail.len()].copy_from_slice(tail);
    block[tail.len()] = 0x80;
    let bits = (prefix * 64 + tail.len() as u64) * 8;
    block[56..].copy_from_slice(&bits.to_be_bytes());
    sha2::compress256(&mut state, &[block]);
    let mut digest = [0; 32];
    for (bytes, word) in digest.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

/// SHA-256 of `message`.
pub(crate) fn sha256(message: &[u8]) -> [u8; 32] {
    if message.len() <= ONE_BLOCK {
        finish(IV, 0, message)
    } else {
        Sha256::digest(message).into()
    }
}

/// An HMAC-SHA256 key with its inner and outer padded blocks already hashed.
#[derive(Clone)]
pub(crate) struct HmacKey {
    inner: [u32; 8],
    outer: [u32; 8],
    /// For messages longer than one block.
    mac: Hmac<Sha256>,
}

impl HmacKey {
    pub(crate) fn new(secret: &[u8]) -> Self {
        // RFC 2104: a key longer than a block is hashed first; then it is padded with zeros.
        let mut key = Block::default();
        if secret.len() > key.len() {
            key[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            key[..secret.len()].copy_from_slice(secret);
        }
        let padded = |pad: u8| {
            let mut block = key;
            block.iter_mut().for_each(|byte| *byte ^= pad);
            let mut state = IV;
            sha2::compress256(&mut state, &[block]);
            state
        };
        Self {
            inner: padded(0x36),
            outer: padded(0x5c),
            mac: Hmac::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    /// HMAC-SHA256 of `message`.
    pub(crate) fn tag(&self, message: &[u8]) -> [u8; 32] {
        if message.len() <= ONE_BLOCK {
            let inner = finish(self.inner, 1, message);
            finish(self.outer, 1, &inner)
        } else {
            let mut mac = self.mac.clone();
            mac.update(message);
            mac.finalize().into_bytes().into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length around the one-block limit, against the general-purpose types.
    #[test]
    fn matches_sha2_and_hmac_at_every_length() {
        let message: Vec<u8> = (0..200_u8).map(|i| i.wrapping_mul(37)).collect();
        for secret_len in [0, 1, 32, 63, 64, 65, 100] {
            let secret = vec![0xa5; secret_len];
            let key = HmacKey::new(&secret);
            for len in 0..=message.len() {
                let message = &message[..len];
                let expected: [u8; 32] = Sha256::digest(message).into();
                assert_eq!(sha256(message), expected, "SHA-256 of {len} bytes");
                let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
                mac.update(message);
                let expected: [u8; 32] = mac.finalize().into_bytes().into();
                assert_eq!(
                    key.tag(message),
                    expected,
                    "HMAC of {len} bytes, key {secret_len}"
                );
            }
        }
    }

    /// FIPS 180-2's "abc" and RFC 4231's test case 2.
    #[test]
    fn known_answers() {
        let hex = |bytes: [u8; 32]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(HmacKey::new(b"Jefe").tag(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
