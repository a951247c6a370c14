//! A reversible escape of U+0000 for PostgreSQL, whose `jsonb` and `text` refuse it.
//!
//! Every JSON string of the data (keys and values, at any depth) and the user column go in
//! with NUL written as [`ESCAPE`] `0` and [`ESCAPE`] itself as [`ESCAPE`] `1`, and come out
//! with the two reversed. A string that holds neither character is left as it is, so data
//! without them is stored exactly as it was written, and the escape needs no marker: a string
//! read back holds [`ESCAPE`] only where it was escaped. Whether the data needs the escape is
//! one scan of its JSON text for the way JSON writes the two characters (`\u0000`, `\u0001`),
//! so that a write without them pays that scan and nothing else; text that only looks like
//! them (a backslash written by the user) costs a parse and changes nothing.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::store::StoreError;

/// The character that starts an escape: U+0001, which `jsonb` and `text` hold, and which
/// session data hardly ever does.
pub(crate) const ESCAPE: char = '\u{1}';

/// Whether JSON text may hold a NUL or an [`ESCAPE`] in a string: it holds `\u0000` or
/// `\u0001` (how JSON writes them; serde_json and PostgreSQL write no other form), or an
/// [`ESCAPE`] as it is. False positives (a user's literal backslash) only cost a parse.
pub(crate) fn may_need(json: &str) -> bool {
    json.contains(ESCAPE)
        || json
            .match_indices("\\u000")
            .any(|(at, _)| matches!(json.as_bytes().get(at + 5), Some(b'0' | b'1')))
}

/// Whether JSON text read back may hold an escape: `\u0001`, or an [`ESCAPE`] as it is.
fn may_hold_escape(json: &str) -> bool {
    json.contains(ESCAPE) || json.contains("\\u0001")
}

/// `text` with NUL and [`ESCAPE`] escaped; borrowed when it holds neither.
pub(crate) fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['\0', ESCAPE]) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\0' => escaped.push_str("\u{1}0"),
            ESCAPE => escaped.push_str("\u{1}1"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// The inverse of [`escape`]. An [`ESCAPE`] followed by anything but `0` or `1` (never
/// written by [`escape`]) is kept as it is.
pub(crate) fn unescape(text: &str) -> Cow<'_, str> {
    if !text.contains(ESCAPE) {
        return Cow::Borrowed(text);
    }
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ESCAPE {
            plain.push(c);
            continue;
        }
        match chars.peek() {
            Some('0') => {
                chars.next();
                plain.push('\0');
            }
            Some('1') => {
                chars.next();
                plain.push(ESCAPE);
            }
            _ => plain.push(c),
        }
    }
    Cow::Owned(plain)
}

/// Applies `f` to every string of `value`, object keys included.
fn map_strings(value: Value, f: &impl Fn(&str) -> Cow<'_, str>) -> Value {
    match value {
        Value::String(text) => Value::String(owned(&text, f).unwrap_or(text)),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| map_strings(v, f)).collect()),
        Value::Object(map) => Value::Object(map_object(map, f)),
        other => other,
    }
}

fn map_object(map: Map<String, Value>, f: &impl Fn(&str) -> Cow<'_, str>) -> Map<String, Value> {
    map.into_iter()
        .map(|(key, value)| (owned(&key, f).unwrap_or(key), map_strings(value, f)))
        .collect()
}

/// `f(text)` when it changed `text`.
fn owned(text: &str, f: &impl Fn(&str) -> Cow<'_, str>) -> Option<String> {
    match f(text) {
        Cow::Borrowed(_) => None,
        Cow::Owned(changed) => Some(changed),
    }
}

/// JSON text (a value or an object) with every string escaped: `json` itself when it holds
/// no NUL and no [`ESCAPE`].
pub(crate) fn escape_json(json: String) -> Result<String, StoreError> {
    if !may_need(&json) {
        return Ok(json);
    }
    let value: Value = serde_json::from_str(&json).map_err(StoreError::backend)?;
    serde_json::to_string(&map_strings(value, &escape)).map_err(StoreError::backend)
}

/// Session data as PostgreSQL gives it back (`data::text`), decoded, with every string
/// unescaped.
pub(crate) fn decode(json: &str) -> Result<Map<String, Value>, StoreError> {
    let data = crate::store::decode_data(json.as_bytes())?;
    if !may_hold_escape(json) {
        return Ok(data);
    }
    Ok(map_object(data, &unescape))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// NUL, the escape character, both, and text that looks like either or like an escape.
    const ODD: &[&str] = &[
        "",
        "plain",
        "\0",
        "a\0b",
        "\u{1}",
        "\u{1}0",
        "\u{1}1",
        "\u{1}\u{1}",
        "\0\u{1}\0\u{1}",
        "\u{1}0\0",
        "\\u0000",
        "\\u0001",
        "\\\\u0000",
        "\u{1}\\u0000\0",
        "é\0ü\u{1}",
    ];

    #[test]
    fn r20_strings_round_trip_and_hold_no_nul() {
        for text in ODD {
            let escaped = escape(text);
            assert!(!escaped.contains('\0'), "{text:?} → {escaped:?}");
            assert_eq!(unescape(&escaped), *text, "{text:?} → {escaped:?}");
        }
        // Different strings stay different.
        let mut escaped: Vec<String> = ODD.iter().map(|t| escape(t).into_owned()).collect();
        escaped.sort();
        escaped.dedup();
        assert_eq!(escaped.len(), ODD.len());
    }

    #[test]
    fn r20_strings_without_nul_or_the_escape_are_left_alone() {
        for text in ["", "plain", "\\u0000", "\\\\u0001", "\u{2}"] {
            assert!(matches!(escape(text), Cow::Borrowed(_)), "{text:?}");
            assert!(matches!(unescape(text), Cow::Borrowed(_)), "{text:?}");
        }
        assert_eq!(escape("a\0b"), "a\u{1}0b");
        assert_eq!(escape("a\u{1}b"), "a\u{1}1b");
        // What `escape` never writes is read as it is.
        assert_eq!(unescape("a\u{1}"), "a\u{1}");
        assert_eq!(unescape("a\u{1}2"), "a\u{1}2");
    }

    #[test]
    fn r20_json_round_trips_keys_and_values_at_any_depth() {
        let mut data = Map::new();
        for (i, text) in ODD.iter().enumerate() {
            data.insert(
                format!("{text}{i}"),
                json!({ *text: [text, {"in": text, "n": i}], "k": [[[text]]] }),
            );
        }
        let json = crate::store::encode_data(&data);
        let escaped = escape_json(json).unwrap();
        fn holds_nul(value: &Value) -> bool {
            match value {
                Value::String(text) => text.contains('\0'),
                Value::Array(items) => items.iter().any(holds_nul),
                Value::Object(map) => map
                    .iter()
                    .any(|(key, value)| key.contains('\0') || holds_nul(value)),
                _ => false,
            }
        }
        assert!(
            !holds_nul(&serde_json::from_str(&escaped).unwrap()),
            "{escaped}"
        );
        assert_eq!(decode(&escaped).unwrap(), data);
    }

    #[test]
    fn r20_json_without_nul_or_the_escape_is_written_as_it_is() {
        for json in [
            r#"{"a":1}"#,
            r#"{"a":"\\u0000"}"#,
            r#"{"\\u0001":"b"}"#,
            r#"{"a":"\u0002"}"#,
        ] {
            assert!(!may_need(json) || json.contains("\\\\u000"), "{json}");
            assert_eq!(escape_json(json.to_owned()).unwrap(), json);
            let data: Map<String, Value> = serde_json::from_str(json).unwrap();
            assert_eq!(decode(json).unwrap(), data);
        }
        assert!(may_need(r#"{"a":"\u0000"}"#));
        assert!(may_need(r#"{"a":"\u0001"}"#));
        assert!(may_need("{\"a\":\"\u{1}\"}"));
        assert!(!may_need(r#"{"a":"\u0002"}"#));
    }
}
