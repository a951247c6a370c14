//! The session cookie: its attributes and their validation ([`CookieConfig`]), reading it out of
//! a request (`parse`), and the `Set-Cookie` values sent back (`format`).

mod format;
mod parse;

pub(crate) use format::CookieFormat;
pub(crate) use parse::{Credentials, Presented, decode_signed, presented};
#[cfg(feature = "fuzzing")]
pub(crate) use parse::{MAX_CANDIDATES, MAX_VALUE_LEN};

use crate::error::ConfigError;

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

/// The attributes of the session cookie, as the builder collects them.
#[derive(Clone, Debug)]
pub(crate) struct CookieConfig {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    /// Whether the cookie carries `Max-Age`; without it, it ends when the browser closes.
    pub(crate) persistent: bool,
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
            persistent: true,
        }
    }
}

impl CookieConfig {
    /// Refuses attributes a browser would reject or that would let the cookie leak.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !is_token(&self.name) {
            return Err(ConfigError::InvalidCookieName);
        }
        if !self.path.starts_with('/') || !is_attribute_value(&self.path) {
            return Err(ConfigError::InvalidCookiePath);
        }
        if self
            .domain
            .as_deref()
            .is_some_and(|d| !is_attribute_value(d))
        {
            return Err(ConfigError::InvalidCookieDomain);
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(ConfigError::SameSiteNoneRequiresSecure);
        }
        // Browsers match these prefixes case-insensitively.
        let lower = self.name.to_ascii_lowercase();
        if lower.starts_with("__host-")
            && (!self.secure || self.path != "/" || self.domain.is_some())
        {
            return Err(ConfigError::HostPrefix);
        }
        if lower.starts_with("__secure-") && !self.secure {
            return Err(ConfigError::SecurePrefix);
        }
        Ok(())
    }
}

/// Whether `name` is an RFC 6265 cookie name (an RFC 7230 token).
fn is_token(name: &str) -> bool {
    const SEPARATORS: &[u8] = b"!#$%&'*+-.^_`|~";
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || SEPARATORS.contains(&b))
}

/// Whether `value` can stand in a cookie attribute: not empty, visible ASCII only (so no
/// control character or whitespace), and no `;` or `,`.
fn is_attribute_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: impl FnOnce(&mut CookieConfig)) -> Result<(), ConfigError> {
        let mut config = CookieConfig::default();
        f(&mut config);
        config.validate()
    }

    #[test]
    fn each_bad_attribute_has_its_own_error() {
        use ConfigError as E;
        assert_eq!(check(|_| {}), Ok(()));
        for name in ["", "a b", "a;b", "a=b", "a,b", "é", "a\"b", "a(b)"] {
            assert_eq!(check(|c| c.name = name.into()), Err(E::InvalidCookieName));
        }
        for path in ["", "app", "/a;b", "/a b", "/a\nb", "/a\u{7f}", "/é", "/a,b"] {
            assert_eq!(check(|c| c.path = path.into()), Err(E::InvalidCookiePath));
        }
        for domain in ["", "a;b.com", "a b", "a\r\n", "a\u{a0}b"] {
            assert_eq!(
                check(|c| c.domain = Some(domain.into())),
                Err(E::InvalidCookieDomain)
            );
        }
        assert_eq!(
            check(|c| {
                c.same_site = SameSite::None;
                c.secure = false;
            }),
            Err(E::SameSiteNoneRequiresSecure)
        );
        let host = |c: &mut CookieConfig| c.name = "__Host-s".into();
        assert_eq!(check(host), Ok(()));
        assert_eq!(
            check(|c| {
                host(c);
                c.secure = false;
            }),
            Err(E::HostPrefix)
        );
        assert_eq!(
            check(|c| {
                host(c);
                c.path = "/a".into();
            }),
            Err(E::HostPrefix)
        );
        assert_eq!(
            check(|c| {
                c.name = "__host-s".into();
                c.domain = Some("example.com".into());
            }),
            Err(E::HostPrefix)
        );
        assert_eq!(
            check(|c| {
                c.name = "__Secure-s".into();
                c.secure = false;
            }),
            Err(E::SecurePrefix)
        );
        assert_eq!(
            check(|c| {
                c.name = "__Secure-s".into();
                c.domain = Some("example.com".into());
            }),
            Ok(())
        );
    }
}
