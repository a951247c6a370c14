//! The header transport (SPEC 7.3): the session header, alone or beside the cookie.
//!
//! Properties: no panic; one session header decides alone, exactly as the signature check reads
//! its raw value (never percent-decoded, at most 4096 bytes), whatever the cookies say; two or
//! more mean no session; without one, the cookies decide as if there were no header; the value
//! the engine sends in the header, sent back, is found and sent back as it is.

#![no_main]

use arbitrary::{Result, Unstructured};
use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use session_engine::fuzzing::{Found, Keys, MAX_VALUE_LEN, presented};
use session_engine_fuzz::{keys, old_keys, percent_encode_some, session_id};

const HEADER: &str = "x-session";

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let mut u = Unstructured::new(data);
    let _ = run(&mut u, &keys);
});

/// One of the values a client may send: `id`'s signed value under the current or the retired
/// key, raw or percent-encoded, or any bytes.
fn value(u: &mut Unstructured<'_>, keys: &Keys, id: &str) -> Result<Vec<u8>> {
    Ok(match u.choose_index(5)? {
        0 => keys.sign(id).expect("valid").into_bytes(),
        1 => old_keys().sign(id).expect("valid").into_bytes(),
        2 => percent_encode_some(u, &keys.sign(id).expect("valid"))?.into_bytes(),
        3 => format!("sid={}", keys.sign(id).expect("valid")).into_bytes(),
        _ => u.arbitrary::<&[u8]>()?.to_vec(),
    })
}

fn run(u: &mut Unstructured<'_>, keys: &Keys) -> Result<()> {
    let name = HeaderName::from_static(HEADER);
    let id = session_id(u)?;
    let mut headers = HeaderMap::new();
    let mut sent = Vec::new();
    for _ in 0..u.int_in_range(0..=6)? {
        let is_header = u.arbitrary::<bool>()?;
        let Ok(value) = HeaderValue::from_bytes(&value(u, keys, &id)?) else {
            continue;
        };
        if is_header {
            sent.push(value.clone());
            headers.append(&name, value);
        } else {
            headers.append(COOKIE, value);
        }
    }
    let cookies = u.arbitrary::<bool>()?.then_some("sid");
    let found = presented(&headers, cookies, Some(&name), keys);
    match &sent[..] {
        [] => assert_eq!(found, presented(&headers, cookies, None, keys)),
        [one] => {
            let expected = one
                .to_str()
                .ok()
                .filter(|value| value.len() <= MAX_VALUE_LEN)
                .and_then(|value| keys.verify(value));
            assert_eq!(found, expected);
            if one.as_bytes() == keys.sign(&id).expect("valid").as_bytes() {
                let signed = keys.sign(&id).expect("valid");
                let round_trip = Found {
                    id: id.clone(),
                    current: true,
                    resend: Some(signed),
                };
                assert_eq!(found, Some(round_trip));
            }
        }
        _ => assert_eq!(found, None, "two session headers present no session"),
    }
    // No forgery: an id is found only where a key's signature of it was sent. (Not only `id`:
    // libFuzzer learns the values compared in earlier runs, signed ones included.)
    if let Some(found) = found {
        let signatures = [keys.sign(&found.id), old_keys().sign(&found.id)];
        let sent = headers.values().any(|value| {
            let decoded: Vec<u8> = percent_encoding::percent_decode(value.as_bytes()).collect();
            signatures
                .iter()
                .flatten()
                .any(|signed| contains(&decoded, signed.as_bytes()))
        });
        assert!(sent, "an id found that no key's signature sent");
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
