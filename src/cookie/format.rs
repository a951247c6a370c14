//! The `Set-Cookie` values the engine sends: the session cookie and its removal.
//!
//! Hand-written, not the `cookie` crate's `Cookie` builder, which would make `time` a
//! dependency of every build and format each attribute again on every response. Here the
//! attributes, the same on every response, are formatted once with the engine, and each
//! `Set-Cookie` is one string of the exact length, which the header takes without a copy.

use http::HeaderValue;

use super::CookieConfig;

/// The removal's expiry: a date in the past, for browsers that ignore `Max-Age=0`.
const EXPIRED: &str = "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT";

/// `Set-Cookie` text that does not change between responses, built once with the engine.
#[derive(Clone, Debug)]
pub(crate) struct CookieFormat {
    /// `name=`
    prefix: String,
    /// `; Path=/; Secure; HttpOnly; SameSite=Lax`, and `; Domain=…` when set.
    attributes: String,
    persistent: bool,
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
        let removal = HeaderValue::try_from(format!("{prefix}{EXPIRED}{attributes}"))
            .expect("cookie attributes are validated by the builder");
        Self {
            prefix,
            attributes,
            persistent: config.persistent,
            removal,
        }
    }

    /// Whether the engine's cookies carry `Max-Age` (a session may choose otherwise).
    pub(crate) fn persistent(&self) -> bool {
        self.persistent
    }

    /// `name=value; Max-Age=N; …attributes`; no `Max-Age` when `max_age_secs` is `None` (a
    /// browser-session cookie).
    pub(crate) fn set(&self, value: &str, max_age_secs: Option<u64>) -> HeaderValue {
        const MAX_AGE: &str = "; Max-Age=";
        let mut buffer = itoa::Buffer::new();
        let digits = max_age_secs.map(|secs| buffer.format(secs));
        let max_age_len = digits.map_or(0, |digits| MAX_AGE.len() + digits.len());
        // Exactly the length needed, so the header takes the string's buffer as it is.
        let len = self.prefix.len() + value.len() + max_age_len + self.attributes.len();
        let mut out = String::with_capacity(len);
        out.push_str(&self.prefix);
        out.push_str(value);
        if let Some(digits) = digits {
            out.push_str(MAX_AGE);
            out.push_str(digits);
        }
        out.push_str(&self.attributes);
        // Signed values are base64 and id characters; attributes were validated.
        HeaderValue::try_from(out).expect("a session cookie is a valid header value")
    }

    /// The cookie that tells the browser to drop ours: the same name, path, domain and flags,
    /// an empty value, `Max-Age=0` and an `Expires` in the past.
    pub(crate) fn removal(&self) -> HeaderValue {
        self.removal.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(f: impl FnOnce(&mut CookieConfig)) -> CookieFormat {
        let mut config = CookieConfig {
            domain: Some("example.com".into()),
            path: "/app".into(),
            ..CookieConfig::default()
        };
        f(&mut config);
        CookieFormat::new(&config)
    }

    #[test]
    fn set_cookie_and_removal_mirror_attributes() {
        let format = format(|_| {});
        assert_eq!(
            format.set("v", Some(60)),
            "sid=v; Max-Age=60; Path=/app; Domain=example.com; Secure; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            format.set("v", Some(u64::MAX)).to_str().unwrap(),
            format!(
                "sid=v; Max-Age={}; Path=/app; Domain=example.com; Secure; HttpOnly; \
                 SameSite=Lax",
                u64::MAX
            )
        );
        assert_eq!(
            format.removal(),
            "sid=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/app; \
             Domain=example.com; Secure; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn a_browser_session_cookie_has_no_max_age_but_its_removal_does() {
        let format = format(|c| c.persistent = false);
        assert!(!format.persistent());
        assert_eq!(
            format.set("v", None),
            "sid=v; Path=/app; Domain=example.com; Secure; HttpOnly; SameSite=Lax"
        );
        assert!(
            format
                .removal()
                .to_str()
                .unwrap()
                .contains("; Max-Age=0; Expires=")
        );
    }
}
