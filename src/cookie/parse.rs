//! Reading the signed session id out of a request: its `Cookie` headers, or the session header
//! when the engine has one; and decoding a signed value that may be percent-encoded.
//!
//! Parsing works on bytes: a neighbour cookie that is not UTF-8, or not well formed, is skipped
//! without hiding ours. Only `Cookie` headers count; at most [`MAX_CANDIDATES`] values with our
//! name are checked, and values over [`MAX_VALUE_LEN`] bytes are ignored.
//!
//! Hand-written, not the `cookie` crate's `Cookie::split_parse`: that one takes text, so a
//! header with one neighbour that is not UTF-8 could not be read at all and would hide ours,
//! and it parses every pair on the line into a `Cookie` where only ours is wanted. Here the
//! bounds above are applied while the bytes are scanned.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::id::SessionId;
use crate::signing::{Keys, Verified};

/// The longest cookie or header value that is looked at, in bytes.
pub(crate) const MAX_VALUE_LEN: usize = 4096;

/// How many cookies carrying our name are checked at most.
pub(crate) const MAX_CANDIDATES: usize = 4;

/// What a request carried that may name its session, kept for the session to read if it
/// starts: its `Cookie` headers (none when the cookie is off) and the session header's values.
/// Requests almost always carry one `Cookie` header, which is kept without an allocation.
#[derive(Default)]
pub(crate) struct Credentials {
    first: Option<HeaderValue>,
    rest: Box<[HeaderValue]>,
    header: Carried,
}

/// The session header in a request.
#[derive(Default)]
enum Carried {
    /// Not there (or the engine has no session header): the cookie decides.
    #[default]
    Absent,
    /// One field: it alone decides.
    One(HeaderValue),
    /// Two fields or more: no session, whatever the cookie says.
    Several,
}

impl Credentials {
    /// Reads `headers`: the `Cookie` headers when `cookies` is on, and `header`'s values.
    pub(crate) fn from_headers(
        headers: &HeaderMap,
        cookies: bool,
        header: Option<&HeaderName>,
    ) -> Self {
        let carried = match header.map(|name| headers.get_all(name).iter()) {
            None => Carried::Absent,
            Some(mut values) => match (values.next(), values.next()) {
                (None, _) => Carried::Absent,
                (Some(value), None) => Carried::One(value.clone()),
                (Some(_), Some(_)) => Carried::Several,
            },
        };
        if !cookies || !matches!(carried, Carried::Absent) {
            // The header decides, or the cookie is off: the cookies are never read.
            return Self {
                header: carried,
                ..Self::default()
            };
        }
        let mut values = headers.get_all(http::header::COOKIE).iter();
        Self {
            first: values.next().cloned(),
            rest: values.cloned().collect(),
            header: carried,
        }
    }

    fn cookies(&self) -> impl Iterator<Item = &HeaderValue> {
        self.first.iter().chain(self.rest.iter())
    }

    /// Whether the request names a session at all: a session header, or a cookie named
    /// `name` (whether or not it verifies).
    pub(crate) fn names_session(&self, name: &str) -> bool {
        !matches!(self.header, Carried::Absent) || find(self.cookies(), name, |_| true)
    }
}

/// The session id a request presented, verified.
pub(crate) struct Presented {
    /// The id, read from the signed value it came in.
    pub(crate) id: SessionId,
    /// Whether that value is exactly what the engine would send for the id now (signed with
    /// the current key, not percent-encoded): a refresh sends it back instead of signing
    /// again. When false, the cookie is re-issued.
    pub(crate) current: bool,
}

impl Presented {
    /// The value to send back for `id`, when the request's own value can be sent as it is.
    pub(crate) fn resend(&self, id: &SessionId) -> Option<&str> {
        self.id.signed().filter(|_| self.current && self.id == *id)
    }
}

/// The session id a request presented: from the session header when it carries one (one
/// value, raw, never percent-decoded), else the first cookie named `name` that verifies under
/// `keys`.
pub(crate) fn presented(credentials: &Credentials, name: &str, keys: &Keys) -> Option<Presented> {
    match &credentials.header {
        Carried::One(value) => {
            let value = value.to_str().ok().filter(|v| v.len() <= MAX_VALUE_LEN)?;
            let verified = keys.verify(value)?;
            return Some(Presented {
                id: verified.id,
                current: verified.current,
            });
        }
        Carried::Several => return None,
        Carried::Absent => {}
    }
    let mut found = None;
    find(credentials.cookies(), name, |value| {
        found = decode_signed(value, |value| keys.verify(value));
        found.is_some()
    });
    found
}

/// Verifies a signed value given raw or percent-encoded, with `verify`.
pub(crate) fn decode_signed(
    value: &str,
    verify: impl FnOnce(&str) -> Option<Verified>,
) -> Option<Presented> {
    let encoded = memchr::memchr(b'%', value.as_bytes()).is_some();
    let decoded = if encoded {
        Cow::Owned(percent_decode(value)?)
    } else {
        Cow::Borrowed(value)
    };
    let verified = verify(&decoded)?;
    Some(Presented {
        id: verified.id,
        current: verified.current && !encoded,
    })
}

/// Calls `check` with each value of a cookie named `name` in `headers`, in order, until it
/// returns `true` or [`MAX_CANDIDATES`] values have been checked. Returns whether one matched.
///
/// Values longer than [`MAX_VALUE_LEN`], or not UTF-8, are skipped; surrounding double quotes
/// are removed.
fn find<'a>(
    headers: impl IntoIterator<Item = &'a HeaderValue>,
    name: &str,
    mut check: impl FnMut(&str) -> bool,
) -> bool {
    let mut checked = 0;
    for header in headers {
        let mut rest = header.as_bytes();
        while !rest.is_empty() {
            // memchr: a header is scanned a word at a time, not byte by byte.
            let (pair, next) = match memchr::memchr(b';', rest) {
                Some(end) => (&rest[..end], &rest[end + 1..]),
                None => (rest, &[][..]),
            };
            rest = next;
            let Some(eq) = memchr::memchr(b'=', pair) else {
                continue;
            };
            if trim(&pair[..eq]) != name.as_bytes() {
                continue;
            }
            let mut value = trim(&pair[eq + 1..]);
            if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
                value = &value[1..value.len() - 1];
            }
            if value.len() > MAX_VALUE_LEN {
                continue;
            }
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            if check(value) {
                return true;
            }
            checked += 1;
            if checked == MAX_CANDIDATES {
                return false;
            }
        }
    }
    false
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

/// Decodes `%XX` escapes; `None` when the result is not UTF-8. A malformed escape (`%zz`, a
/// `%` at the end) is kept as it is, and the value then fails its signature check: no signed
/// value holds a `%`.
fn percent_decode(value: &str) -> Option<String> {
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(headers: &[HeaderValue], name: &str) -> Vec<String> {
        let mut seen = Vec::new();
        find(headers, name, |v| {
            seen.push(v.to_owned());
            false
        });
        seen
    }

    fn hv(bytes: &[u8]) -> HeaderValue {
        HeaderValue::from_bytes(bytes).unwrap()
    }

    #[test]
    fn r2_finds_our_cookie_among_others() {
        let h = [hv(b"a=1; sid=abc.def ;b=2")];
        assert_eq!(all(&h, "sid"), ["abc.def"]);
        assert_eq!(all(&h, "si"), Vec::<String>::new());
    }

    #[test]
    fn r2_non_utf8_neighbours_do_not_hide_ours() {
        let h = [hv(b"x=\xff\xfe; \xc3\x28=1; sid=good; y=\x80")];
        assert_eq!(all(&h, "sid"), ["good"]);
        let h = [hv(b"sid=\xff\xfe; sid=good")];
        assert_eq!(all(&h, "sid"), ["good"]);
    }

    #[test]
    fn r2_at_most_four_candidates_are_checked() {
        let h = [hv(b"sid=1; sid=2; sid=3"), hv(b"sid=4; sid=5")];
        assert_eq!(all(&h, "sid"), ["1", "2", "3", "4"]);
        let mut matched = None;
        assert!(find(&h, "sid", |v| {
            matched = Some(v.to_owned());
            v == "2"
        }));
        assert_eq!(matched.as_deref(), Some("2"));
    }

    #[test]
    fn r2_oversized_values_are_ignored() {
        let big = format!("sid={}; sid=ok", "a".repeat(MAX_VALUE_LEN + 1));
        assert_eq!(all(&[hv(big.as_bytes())], "sid"), ["ok"]);
        let big = format!("sid={}", "a".repeat(64 * 1024));
        assert!(all(&[hv(big.as_bytes())], "sid").is_empty());
        let edge = format!("sid={}", "a".repeat(MAX_VALUE_LEN));
        assert_eq!(all(&[hv(edge.as_bytes())], "sid").len(), 1);
    }

    #[test]
    fn r2_thousand_cookies_and_garbage() {
        let mut line: String = (0..1000).map(|i| format!("c{i}=v{i}; ")).collect();
        line.push_str("sid=last");
        assert_eq!(all(&[hv(line.as_bytes())], "sid"), ["last"]);
        for garbage in [&b";;;;"[..], b"=", b"sid", b"  ;= ;", b"\"", b"sid=\""] {
            assert!(all(&[hv(garbage)], "sid").len() <= 1, "{garbage:?}");
        }
        assert_eq!(all(&[hv(b"sid=")], "sid"), [""]);
    }

    #[test]
    fn r2_quotes_and_whitespace() {
        assert_eq!(all(&[hv(b"sid=\"q\"")], "sid"), ["q"]);
        assert_eq!(all(&[hv(b" \tsid \t= v \t")], "sid"), ["v"]);
    }

    #[test]
    fn r3_percent_decoding() {
        assert_eq!(percent_decode("a%2Bb%2fc").as_deref(), Some("a+b/c"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%FF"), None);
        // Malformed escapes stay as they are: the `%` then fails the signature check.
        for kept in ["bad%2", "bad%zz", "%", "%+1"] {
            assert_eq!(percent_decode(kept).as_deref(), Some(kept), "{kept:?}");
        }
    }

    #[test]
    fn r3_only_a_raw_value_signed_with_the_current_key_is_sent_back_as_it_is() {
        let keys = Keys::new(&["0123456789abcdef0123456789abcdef"]).unwrap();
        let id = SessionId::parse("abc").unwrap();
        let signed = keys.sign(&id);
        let raw = decode_signed(&signed, |v| keys.verify(v)).unwrap();
        assert_eq!(raw.resend(&id), Some(signed.as_str()));
        let other = SessionId::parse("abd").unwrap();
        assert_eq!(raw.resend(&other), None);
        let encoded = signed.replace('.', "%2E");
        let decoded = decode_signed(&encoded, |v| keys.verify(v)).unwrap();
        assert!(decoded.id == id);
        assert_eq!(decoded.resend(&id), None);
    }
}
