//! What the fuzz targets share: their secrets, and the values arbitrary input becomes.

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Number, Value};
use session_engine::fuzzing::Keys;

/// The secret that signs.
pub const SECRET: &[u8] = b"the-current-fuzzing-secret-of-32-bytes";
/// A retired secret, that still verifies.
pub const OLD_SECRET: &[u8] = b"a-retired-fuzzing-secret-of-32-bytes!!";
/// A secret the engine does not know.
pub const OTHER_SECRET: &[u8] = b"a-secret-that-signed-nothing-here-at-all";

/// The engine's keys: [`SECRET`] signs, [`OLD_SECRET`] still verifies.
pub fn keys() -> Keys {
    Keys::new(&[SECRET, OLD_SECRET]).expect("secrets of 32 bytes or more")
}

/// The keys before the rotation: [`OLD_SECRET`] alone.
pub fn old_keys() -> Keys {
    Keys::new(&[OLD_SECRET]).expect("a secret of 32 bytes or more")
}

const ID_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A valid session id: 1 to 128 characters of `[A-Za-z0-9_-]`.
pub fn session_id(u: &mut Unstructured<'_>) -> Result<String> {
    let len = u.int_in_range(1..=128usize)?;
    (0..len)
        .map(|_| {
            Ok(char::from(
                ID_ALPHABET[usize::from(u.arbitrary::<u8>()? % 64)],
            ))
        })
        .collect()
}

/// `text` with some of its characters (as `u` chooses, at least one) written as `%XX`.
pub fn percent_encode_some(u: &mut Unstructured<'_>, text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len() * 3);
    let forced = u.choose_index(text.len().max(1))?;
    for (i, c) in text.char_indices() {
        if i == forced || u.arbitrary::<bool>()? {
            let mut buffer = [0u8; 4];
            for byte in c.encode_utf8(&mut buffer).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Any JSON value, nested `depth` levels at most: numbers of each kind (floats included),
/// strings with any character (NUL too), arrays and objects.
pub fn json_value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let kinds = if depth == 0 { 6 } else { 8 };
    Ok(match u.choose_index(kinds)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::from(u.arbitrary::<u64>()?),
        4 => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        5 => Value::String(u.arbitrary()?),
        6 => Value::Array(
            (0..u.int_in_range(0..=4)?)
                .map(|_| json_value(u, depth - 1))
                .collect::<Result<_>>()?,
        ),
        _ => Value::Object(json_map(u, depth - 1)?),
    })
}

/// A JSON object of up to 8 keys (any text) and values of [`json_value`].
pub fn json_map(u: &mut Unstructured<'_>, depth: u32) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for _ in 0..u.int_in_range(0..=8)? {
        map.insert(u.arbitrary()?, json_value(u, depth)?);
    }
    Ok(map)
}

/// Whole milliseconds since the Unix epoch that `SystemTime` holds: what every store keeps.
pub fn millis(u: &mut Unstructured<'_>) -> Result<u64> {
    // Up to the year 2^38 or so: far past any expiry, well inside `SystemTime`.
    Ok(u.arbitrary::<u64>()? >> 20)
}
