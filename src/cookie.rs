//! The session cookie: its attributes, the `Set-Cookie` values we send, and reading our cookie
//! out of a request's `Cookie` headers (R2).
//!
//! Parsing works on bytes: a neighbour cookie that is not UTF-8, or not well formed, is skipped
//! without hiding ours.

use http::HeaderValue;

/// The longest cookie value that is looked at, in bytes (R2).
pub(crate) const MAX_VALUE_LEN: usize = 4096;

/// How many cookies carrying our name are checked at most (R2).
pub(crate) const MAX_CANDIDATES: usize = 4;

/// The `SameSite` attribute of the session cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SameSite {
    /// Sent only with same-site requests.
    Strict,
    /// Sent with same-site requests and top-level navigations (the default).
    #[default]
    Lax,
    /// Sent with every request; requires `Secure`.
    None,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "Strict",
            Self::Lax => "Lax",
            Self::None => "None",
        }
    }
}

/// The attributes of the session cookie, validated by the engine's builder.
#[derive(Clone, Debug)]
pub(crate) struct CookieConfig {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: "sid".to_owned(),
            path: "/".to_owned(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
        }
    }
}

/// `Set-Cookie` text that does not change between responses, built once with the engine.
#[derive(Clone, Debug)]
pub(crate) struct CookieFormat {
    /// `name=`
    prefix: String,
    /// `; Path=/; Secure; HttpOnly; SameSite=Lax`, and `; Domain=…` when set.
    attributes: String,
    removal: HeaderValue,
}

impl CookieFormat {
    pub(crate) fn new(config: &CookieConfig) -> Self {
        let mut attributes = format!("; Path={}", config.path);
        if let Some(domain) = &config.domain {
            attributes.push_str("; Domain=");
            attributes.push_str(domain);
        }
        if config.secure {
            attributes.push_str("; Secure");
        }
        if config.http_only {
            attributes.push_str("; HttpOnly");
        }
        attributes.push_str("; SameSite=");
        attributes.push_str(config.same_site.as_str());
        let prefix = format!("{}=", config.name);
        let removal =
            format!("{prefix}; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT{attributes}");
        let removal =
            HeaderValue::try_from(removal).expect("cookie attributes are validated by the builder");
        Self {
            prefix,
            attributes,
            removal,
        }
    }

    /// `name=value; Max-Age=N; …attributes`.
    pub(crate) fn set(&self, value: &str, max_age_secs: u64) -> HeaderValue {
        const MAX_AGE: &str = "; Max-Age=";
        let mut digits = [0u8; 20];
        let digits = decimal(max_age_secs, &mut digits);
        // Exactly the length needed, so the header takes the string's buffer as it is.
        let len = self.prefix.len() + value.len() + MAX_AGE.len() + digits.len();
        let mut out = String::with_capacity(len + self.attributes.len());
        out.push_str(&self.prefix);
        out.push_str(value);
        out.push_str(MAX_AGE);
        out.push_str(digits);
        out.push_str(&self.attributes);
        // Signed values are base64 and id characters; attributes were validated.
        HeaderValue::try_from(out).expect("a session cookie is a valid header value")
    }

    /// The cookie that tells the browser to drop ours: same name, path, domain and flags (R7).
    pub(crate) fn removal(&self) -> HeaderValue {
        self.removal.clone()
    }
}

/// The request's `Cookie` headers, kept for the session to read if it starts. Requests almost
/// always carry one `Cookie` header, which is kept without an allocation.
#[derive(Default)]
pub(crate) struct Cookies {
    first: Option<HeaderValue>,
    rest: Box<[HeaderValue]>,
}

impl Cookies {
    pub(crate) fn from_headers(headers: &http::HeaderMap) -> Self {
        let mut values = headers.get_all(http::header::COOKIE).iter();
        Self {
            first: values.next().cloned(),
            rest: values.cloned().collect(),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &HeaderValue> {
        self.first.iter().chain(self.rest.iter())
    }
}

/// Calls `check` with each value of a cookie named `name` in `headers`, in order, until it
/// returns `true` or [`MAX_CANDIDATES`] values have been checked. Returns whether one matched.
///
/// Values longer than [`MAX_VALUE_LEN`], or not UTF-8, are skipped; surrounding double quotes
/// are removed.
pub(crate) fn find<'a>(
    headers: impl IntoIterator<Item = &'a HeaderValue>,
    name: &str,
    mut check: impl FnMut(&str) -> bool,
) -> bool {
    let mut checked = 0;
    for header in headers {
        for pair in header.as_bytes().split(|&b| b == b';') {
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
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

/// `n` in decimal, written at the end of `buffer`.
fn decimal(mut n: u64, buffer: &mut [u8; 20]) -> &str {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[start..]).expect("ASCII digits")
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

/// Whether `name` is an RFC 6265 cookie name (an RFC 7230 token).
pub(crate) fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Whether `value` can stand in a cookie attribute: not empty, visible ASCII only (so no
/// control character or whitespace), and no `;` or `,`.
pub(crate) fn is_attribute_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
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
        let mut line = String::new();
        for i in 0..1000 {
            line.push_str(&format!("c{i}=v{i}; "));
        }
        line.push_str("sid=last");
        assert_eq!(all(&[hv(line.as_bytes())], "sid"), ["last"]);
        for garbage in [
            &b";;;;"[..],
            b"=",
            b"sid",
            b"sid=",
            b"  ;= ;",
            b"\"",
            b"sid=\"",
        ] {
            let _ = all(&[hv(garbage)], "sid");
        }
        assert_eq!(all(&[hv(b"sid=")], "sid"), [""]);
    }

    #[test]
    fn r2_quotes_and_whitespace() {
        assert_eq!(all(&[hv(b"sid=\"q\"")], "sid"), ["q"]);
        assert_eq!(all(&[hv(b" \tsid \t= v \t")], "sid"), ["v"]);
    }

    #[test]
    fn set_cookie_and_removal_mirror_attributes() {
        let config = CookieConfig {
            domain: Some("example.com".into()),
            path: "/app".into(),
            ..CookieConfig::default()
        };
        let format = CookieFormat::new(&config);
        assert_eq!(
            format.set("v", 60),
            "sid=v; Max-Age=60; Path=/app; Domain=example.com; Secure; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            format.removal(),
            "sid=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/app; \
             Domain=example.com; Secure; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn tokens_and_attribute_values() {
        assert!(is_token("sid"));
        assert!(is_token("__Host-sid"));
        for bad in ["", "a b", "a;b", "a=b", "a,b", "é", "a\"b", "a(b)"] {
            assert!(!is_token(bad), "{bad:?}");
        }
        assert!(is_attribute_value("/a/b"));
        for bad in [
            "",
            "/a;b",
            "/a b",
            "/a\nb",
            "/a\u{7f}",
            "/é",
            "/a,b",
            "/a\u{a0}b",
        ] {
            assert!(!is_attribute_value(bad), "{bad:?}");
        }
    }
}
