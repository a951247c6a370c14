//! The signed-id check (R3): `id.base64(HMAC-SHA256(secret, id))`, with key rotation.
//!
//! Properties: a value that verifies was made with one of the keys, for the id it names, and is
//! the one spelling of that signature (signing the id again gives it back); what a key signs it
//! verifies, as current or not as its place in the rotation says; any change to a signed value
//! (a byte replaced, cut, added) is refused; ids that are not valid are never signed; the
//! single-secret check of `Session::set_signed_id` agrees, raw or percent-encoded.

#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use session_engine::fuzzing::{Found, Keys, verify_with_secret};
use session_engine::store::is_valid_id;
use session_engine_fuzz::{OTHER_SECRET, SECRET, keys, old_keys, percent_encode_some, session_id};

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let mut u = Unstructured::new(data);
    let _ = run(&mut u, &keys);
});

fn run(u: &mut Unstructured<'_>, keys: &Keys) -> Result<()> {
    // Any text: whatever verifies is exactly what a key makes for its id.
    let value: &str = u.arbitrary()?;
    if let Some(found) = keys.verify(value) {
        let signer = if found.current {
            keys.clone()
        } else {
            old_keys()
        };
        assert_eq!(signer.sign(&found.id).as_deref(), Some(value));
        assert!(value.starts_with(&format!("{}.", found.id)));
        let resend = found.current.then_some(value);
        assert_eq!(found.resend.as_deref(), resend);
    }
    if let Some(id) = verify_with_secret(SECRET, value) {
        let decoded = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        assert_eq!(keys.sign(&id).as_deref(), Some(&*decoded));
    }
    // Ids: only valid ones are signed.
    let raw: &str = u.arbitrary()?;
    assert_eq!(keys.sign(raw).is_some(), is_valid_id(raw), "{raw:?}");

    // A valid id: signed, it verifies as current; under the rotation that follows it still
    // verifies, not as current; under a key that never signed it, not at all.
    let id = session_id(u)?;
    let signed = keys.sign(&id).expect("a valid id signs");
    let found = Found {
        id: id.clone(),
        current: true,
        resend: Some(signed.clone()),
    };
    assert_eq!(keys.verify(&signed), Some(found));
    let rotated = Keys::new(&[OTHER_SECRET, SECRET]).expect("valid secrets");
    assert_eq!(
        rotated.verify(&signed).map(|f| (f.id, f.current)),
        Some((id.clone(), false))
    );
    assert_eq!(
        Keys::new(&[OTHER_SECRET]).expect("valid").verify(&signed),
        None
    );
    assert_eq!(verify_with_secret(SECRET, &signed).as_deref(), Some(&*id));
    let encoded = percent_encode_some(u, &signed)?;
    assert_eq!(verify_with_secret(SECRET, &encoded).as_deref(), Some(&*id));
    // Percent-decoding is the cookie's, never the signature check's.
    assert_eq!(keys.verify(&encoded), None);

    // Tampered: one byte replaced, the value cut or extended.
    let mut bytes = signed.clone().into_bytes();
    let at = u.choose_index(bytes.len())?;
    let byte: u8 = u.arbitrary()?;
    if bytes[at] != byte {
        bytes[at] = byte;
        if let Ok(tampered) = String::from_utf8(bytes) {
            assert_eq!(keys.verify(&tampered), None, "{tampered:?}");
        }
    }
    let cut = u.choose_index(signed.len())?;
    assert_eq!(keys.verify(&signed[..cut]), None);
    let extra: &str = u.arbitrary()?;
    if !extra.is_empty() {
        assert_eq!(keys.verify(&format!("{signed}{extra}")), None);
        assert_eq!(keys.verify(&format!("{extra}{signed}")), None);
    }
    Ok(())
}
