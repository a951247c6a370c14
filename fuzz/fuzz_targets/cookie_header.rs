//! The `Cookie` header parser (R2, R3): any `Cookie` headers a client sends, and the round trip
//! of the session cookie, from the `Set-Cookie` the engine writes to the `Cookie` a browser
//! sends back among its neighbours.
//!
//! Properties: no panic; the only id a request can present is one the engine signed (no
//! forgery, whatever surrounds it); what the formatter writes the parser reads back, with our
//! cookie first among any neighbours, raw (sent back as it is when the current key signed it)
//! or percent-encoded (re-issued).

#![no_main]

use arbitrary::{Result, Unstructured};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use session_engine::fuzzing::{Found, Keys, presented, set_cookie};
use session_engine_fuzz::{keys, old_keys, percent_encode_some, session_id};

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let mut u = Unstructured::new(data);
    let _ = run(&mut u, &keys);
});

fn run(u: &mut Unstructured<'_>, keys: &Keys) -> Result<()> {
    // The cookie's name, as the builder accepts it.
    let wanted: &str = u.arbitrary()?;
    let name = if set_cookie(wanted, "v", None).is_some() {
        wanted
    } else {
        "sid"
    };
    let id = session_id(u)?;
    let retired = u.arbitrary::<bool>()?;
    let signed = if retired { old_keys() } else { keys.clone() }
        .sign(&id)
        .expect("a valid id signs");
    let encoded = percent_encode_some(u, &signed)?;

    free_form(u, keys, name, &signed, &encoded)?;
    round_trip(u, keys, name, &id, &signed, &encoded, retired)
}

/// Any `Cookie` headers, where `@S` stands for the signed value and `@E` for a percent-encoded
/// spelling of it: a request presents an id only where a key's signature of it was sent (not
/// only `id`: libFuzzer learns the values compared in earlier runs, signed ones included).
fn free_form(
    u: &mut Unstructured<'_>,
    keys: &Keys,
    name: &str,
    signed: &str,
    encoded: &str,
) -> Result<()> {
    let mut headers = HeaderMap::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let text: &[u8] = u.arbitrary()?;
        let text = replace(
            &replace(text, b"@S", signed.as_bytes()),
            b"@E",
            encoded.as_bytes(),
        );
        if let Ok(value) = HeaderValue::from_bytes(&text) {
            headers.append(COOKIE, value);
        }
    }
    if let Some(found) = presented(&headers, Some(name), None, keys) {
        let current = keys.sign(&found.id).expect("a valid id");
        let retired = old_keys().sign(&found.id).expect("a valid id");
        let sent = |signed: &str, decode: bool| {
            headers.get_all(COOKIE).iter().any(|value| {
                let text: Vec<u8> = if decode {
                    percent_encoding::percent_decode(value.as_bytes()).collect()
                } else {
                    value.as_bytes().to_vec()
                };
                contains(&text, signed.as_bytes())
            })
        };
        assert!(
            sent(&current, true) || sent(&retired, true),
            "an id found that no key's signature sent"
        );
        if found.current {
            // Only the value itself, signed with the current key, is sent back as it is.
            assert!(
                sent(&current, false),
                "a value that was not sent is called current"
            );
            assert_eq!(found.resend.as_deref(), Some(current.as_str()));
        } else {
            assert_eq!(found.resend, None);
        }
    }
    // Our cookie alone, first: always found.
    let first = headers.get(COOKIE).map(HeaderValue::as_bytes);
    if first == Some(format!("{name}={signed}").as_bytes()) {
        assert!(presented(&headers, Some(name), None, keys).is_some());
    }
    // The cookie off: nothing is read.
    assert_eq!(presented(&headers, None, None, keys), None);
    Ok(())
}

/// `Set-Cookie` → the pair a browser keeps → `Cookie: neighbours; pair; anything`.
fn round_trip(
    u: &mut Unstructured<'_>,
    keys: &Keys,
    name: &str,
    id: &str,
    signed: &str,
    encoded: &str,
    retired: bool,
) -> Result<()> {
    let max_age = u.arbitrary::<Option<u64>>()?;
    let set = set_cookie(name, signed, max_age).expect("a valid name");
    let pair = set.split(';').next().expect("split yields one part");
    assert_eq!(pair, format!("{name}={signed}"));
    match max_age {
        Some(secs) => assert!(set.contains(&format!("; Max-Age={secs};"))),
        None => assert!(!set.contains("Max-Age")),
    }
    let percent = u.arbitrary::<bool>()?;
    let sent = if percent {
        format!("{name}={encoded}")
    } else {
        pair.to_owned()
    };

    // Neighbours before ours: any pairs with another name and no `;`.
    let mut line = Vec::new();
    for _ in 0..u.int_in_range(0..=8)? {
        let neighbour: &[u8] = u.arbitrary()?;
        let before_eq = neighbour.split(|b| *b == b'=').next().unwrap_or_default();
        if trim(before_eq) == name.as_bytes() || neighbour.contains(&b';') {
            continue;
        }
        line.extend_from_slice(neighbour);
        line.extend_from_slice(if u.arbitrary::<bool>()? { b"; " } else { b";" });
    }
    line.extend_from_slice(sent.as_bytes());
    // Anything after ours: other cookies, more of ours, garbage.
    if u.arbitrary::<bool>()? {
        line.push(b';');
        line.extend_from_slice(u.arbitrary::<&[u8]>()?);
    }
    let Ok(value) = HeaderValue::from_bytes(&line) else {
        return Ok(());
    };
    let mut headers = HeaderMap::new();
    headers.append(COOKIE, value);
    let current = !retired && !percent;
    let expected = Found {
        id: id.to_owned(),
        current,
        resend: current.then(|| signed.to_owned()),
    };
    assert_eq!(presented(&headers, Some(name), None, keys), Some(expected));
    Ok(())
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn replace(text: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if rest.starts_with(from) {
            out.extend_from_slice(to);
            rest = &rest[from.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}
