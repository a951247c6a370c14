//! [`SessionEngineBuilder`]: every option of the engine, its default, and its validation.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderName;
use http::header::{COOKIE, SET_COOKIE};

use super::{Inner, SessionEngine};
use crate::cookie::{CookieConfig, CookieFormat, SameSite};
use crate::error::ConfigError;
use crate::lifetime::{Lifetime, MIN_DURATION, TouchInterval};
use crate::signing::Keys;
use crate::store::SessionStore;
use crate::store::gateway::Gateway;

/// The default idle lifetime: 30 minutes.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30 * 60);

/// The default limit on a session's data, as JSON: 1 MiB.
pub const DEFAULT_MAX_DATA_BYTES: usize = 1024 * 1024;

/// The default deadline of each store call: 5 seconds.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// The default bound on one user's live sessions: 100.
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 100;

/// Options for a [`SessionEngine`]; every setter documents its default.
///
/// ```
/// use std::time::Duration;
/// use session_engine::{SameSite, SessionEngine};
///
/// let engine = SessionEngine::builder()
///     .secret("a secret of at least thirty-two bytes!")
///     .cookie_name("__Host-sid")
///     .same_site(SameSite::Strict)
///     .duration(Duration::from_secs(20 * 60))
///     .max_lifetime(Duration::from_secs(12 * 3600))
///     .build()?;
/// # Ok::<(), session_engine::ConfigError>(())
/// ```
#[must_use]
pub struct SessionEngineBuilder {
    secrets: Vec<Vec<u8>>,
    cookie: CookieConfig,
    duration: Duration,
    max_lifetime: Option<Duration>,
    automatic_touch: bool,
    touch_interval: TouchInterval,
    hash_ids: bool,
    max_data_bytes: usize,
    store_timeout: Option<Duration>,
    store: Option<Arc<dyn SessionStore>>,
    clock: Option<Arc<dyn Fn() -> SystemTime + Send + Sync>>,
    send_cookie: bool,
    /// The header name as given; checked by `build`.
    header: Option<String>,
    track_users: bool,
    max_sessions_per_user: usize,
}

impl Default for SessionEngineBuilder {
    fn default() -> Self {
        Self {
            secrets: Vec::new(),
            cookie: CookieConfig::default(),
            duration: DEFAULT_DURATION,
            max_lifetime: None,
            automatic_touch: true,
            touch_interval: TouchInterval::Default,
            hash_ids: true,
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
            store_timeout: Some(DEFAULT_STORE_TIMEOUT),
            store: None,
            clock: None,
            send_cookie: true,
            header: None,
            track_users: false,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
        }
    }
}

impl fmt::Debug for SessionEngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionEngineBuilder")
            .field(
                "secrets",
                &format_args!("[REDACTED; {}]", self.secrets.len()),
            )
            .field("cookie", &self.cookie)
            .field("duration", &self.duration)
            .field("max_lifetime", &self.max_lifetime)
            .field("touch_interval", &self.touch_interval)
            .field("store_timeout", &self.store_timeout)
            .field("cookie_on", &self.send_cookie)
            .field("header", &self.header)
            .field("track_users", &self.track_users)
            .field("max_sessions_per_user", &self.max_sessions_per_user)
            .finish_non_exhaustive()
    }
}

impl SessionEngineBuilder {
    /// The secret that signs and verifies cookies, at least 32 random bytes. Required (this or
    /// [`secrets`](Self::secrets)); replaces any set before.
    ///
    /// Give session-engine secrets of its own, used for nothing else: the signature covers the
    /// id alone (the seed's format), not the cookie's name, so another component signing its
    /// own values with the same secret could mint values this engine accepts.
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secrets = vec![secret.as_ref().to_vec()];
        self
    }

    /// Several secrets, for key rotation: the first signs, every one verifies, and a cookie
    /// that verified only under an older one is re-issued under the first on that response.
    /// Each at least 32 bytes, and for session-engine alone (see [`secret`](Self::secret)).
    pub fn secrets<I, S>(mut self, secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        self.secrets = secrets.into_iter().map(|s| s.as_ref().to_vec()).collect();
        self
    }

    /// The idle lifetime: each write or touch sets the expiry to now + this. Default 30
    /// minutes; at least 1 ms (the unit stores keep times in: `build` refuses less, with
    /// [`ConfigError::DurationTooShort`]) and at most [`MAX_DURATION`](crate::MAX_DURATION).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// An absolute cap that no touch, write or roll extends: from the session's last login
    /// ([`Session::set_user`](crate::Session::set_user)) when it has one, else from its
    /// creation, so a login late in an anonymous visit gets the whole lifetime. Default none;
    /// at least 1 ms (`build` refuses less, with [`ConfigError::MaxLifetimeTooShort`]) and at
    /// most [`MAX_DURATION`](crate::MAX_DURATION).
    pub fn max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = Some(max_lifetime);
        self
    }

    /// Whether the end of a request touches a stored, unmodified, started session (moves its
    /// expiry and refreshes the cookie). Default true.
    pub fn automatic_touch(mut self, automatic_touch: bool) -> Self {
        self.automatic_touch = automatic_touch;
        self
    }

    /// How long after a session's last write or touch its next automatic touch is due; until
    /// then a returning visitor's read writes nothing to the store and sends no `Set-Cookie`,
    /// so an idle session ends between `duration - interval` and `duration` after its last
    /// use. `Duration::ZERO` touches on every request (as hyper-express-session does).
    ///
    /// Default `min(60 s, duration / 10)` of each session's own duration (a custom one from
    /// `set_duration` included). A fixed interval counts as at most half of a session's
    /// duration, so no session expires while it is in use.
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval = TouchInterval::Fixed(interval);
        self
    }

    /// The cookie name, an RFC 6265 token. Default `sid`.
    ///
    /// A `__Host-` prefix (`__Host-sid`) is recommended unless the app shares its cookie with
    /// subdomains: browsers then refuse the cookie from a sibling subdomain, which could
    /// otherwise plant cookies of the same name (and at most four cookies with the name are
    /// checked). It requires `Secure`, path `/` and no domain; a `__Secure-` prefix requires
    /// `Secure`. `build()` checks both.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie.name = name.into();
        self
    }

    /// The cookie `Path`. Default `/`.
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.cookie.path = path.into();
        self
    }

    /// The cookie `Domain`. Default none (host-only, the safer choice).
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.cookie.domain = Some(domain.into());
        self
    }

    /// The `Secure` attribute. Default true.
    pub fn secure(mut self, secure: bool) -> Self {
        self.cookie.secure = secure;
        self
    }

    /// The `HttpOnly` attribute. Default true.
    pub fn http_only(mut self, http_only: bool) -> Self {
        self.cookie.http_only = http_only;
        self
    }

    /// The `SameSite` attribute. Default [`SameSite::Lax`]; `None` requires `secure`.
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.cookie.same_site = same_site;
        self
    }

    /// Whether the cookie carries `Max-Age`. Default true. With `false` the cookie is a
    /// browser-session cookie, dropped when the browser closes; the session's expiry in the
    /// store is unchanged, and a removal still carries `Max-Age=0`.
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.cookie.persistent = persistent;
        self
    }

    /// Whether the store sees base64url(SHA-256(id)) instead of the id. Default true, so a
    /// copy of the store reveals no live cookie; turn it off only to share a store with an
    /// application that expects raw ids.
    pub fn hash_ids(mut self, hash_ids: bool) -> Self {
        self.hash_ids = hash_ids;
        self
    }

    /// The largest session data, as JSON, in bytes; a change past it is refused with
    /// [`Error::DataTooLarge`](crate::Error::DataTooLarge). Default 1 MiB.
    pub fn max_data_bytes(mut self, max_data_bytes: usize) -> Self {
        self.max_data_bytes = max_data_bytes;
        self
    }

    /// The deadline of each store call that has to wait; a slower call counts as the store
    /// being unavailable (503), so a store that hangs never hangs a request. Default 5
    /// seconds; `store_timeout(None)` turns it off. Needs a tokio runtime with its time driver
    /// (`#[tokio::main]` has one). A store that answers at once (`MemoryStore`) is never timed.
    ///
    /// A call past its deadline is abandoned, not undone: a write already on its way to the
    /// server may still land after the response said 503.
    pub fn store_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.store_timeout = timeout.into();
        self
    }

    /// The store. Default a new
    #[cfg_attr(feature = "memory-store", doc = "[`MemoryStore`](crate::MemoryStore)")]
    #[cfg_attr(not(feature = "memory-store"), doc = "`MemoryStore`")]
    /// (feature `memory-store`); without that feature a store is required.
    pub fn store(self, store: impl SessionStore) -> Self {
        self.shared_store(Arc::new(store))
    }

    /// The store, already shared (keep a clone to reach it while the engine serves).
    pub fn shared_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The time source. Default [`SystemTime::now`]. For tests that move time forward
    /// without sleeping; stores keep using their own clock.
    pub fn clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Also carries the signed id in the request and response header `name`, for clients that
    /// keep no cookies (mobile apps, command-line tools, single-page apps calling an API).
    /// Default none.
    ///
    /// A request that carries `name` is judged by it alone, even beside a valid cookie: one
    /// value, its signature checked as a cookie's is (percent-encoding is not accepted); two
    /// fields or more count as no session. Every response that sets the cookie also carries
    /// `name` with the signed id, and a removal carries it empty, whether the cookie is on or
    /// off. Such responses get `Cache-Control: no-store` as a `Set-Cookie` does, and a response
    /// whose session was used gets `Vary: name`. A browser app calling from another origin must
    /// be allowed to read the header: list it in `Access-Control-Expose-Headers` (tower-http's
    /// `CorsLayer::expose_headers`).
    pub fn header(mut self, name: impl Into<String>) -> Self {
        self.header = Some(name.into());
        self
    }

    /// Whether the session cookie is sent and read. Default true; `false` requires a
    /// [`header`](Self::header), and then the cookie is neither sent nor read.
    pub fn cookie(mut self, on: bool) -> Self {
        self.send_cookie = on;
        self
    }

    /// Whether sessions can be tied to users ([`Session::set_user`](crate::Session::set_user)),
    /// and a user's sessions listed and ended in one call ("log out everywhere"). Default
    /// false. Needs a store that indexes users (every store in this crate does); `build` fails
    /// with [`ConfigError::UsersNotIndexed`] on one that does not.
    pub fn track_users(mut self, on: bool) -> Self {
        self.track_users = on;
        self
    }

    /// How many live sessions one user may have, with [`track_users`](Self::track_users): a
    /// login that would exceed it ends that user's least recently used sessions first, so
    /// that no user can make their list of sessions (and ending them all) costly for the
    /// server. Default [`DEFAULT_MAX_SESSIONS_PER_USER`] (100); at least 1 (`build` refuses
    /// 0 with [`ConfigError::NoSessionsPerUser`]).
    pub fn max_sessions_per_user(mut self, max: usize) -> Self {
        self.max_sessions_per_user = max;
        self
    }

    /// Validates the options and makes the engine.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first option that is wrong.
    pub fn build(self) -> Result<SessionEngine, ConfigError> {
        let keys = Keys::new(&self.secrets)?;
        self.cookie.validate()?;
        if self.duration < MIN_DURATION {
            return Err(ConfigError::DurationTooShort);
        }
        if self.max_lifetime.is_some_and(|max| max < MIN_DURATION) {
            return Err(ConfigError::MaxLifetimeTooShort);
        }
        if self.store_timeout.is_some_and(|limit| limit.is_zero()) {
            return Err(ConfigError::ZeroStoreTimeout);
        }
        if self.max_sessions_per_user == 0 {
            return Err(ConfigError::NoSessionsPerUser);
        }
        let header = self.header.as_deref().map(header_name).transpose()?;
        if !self.send_cookie && header.is_none() {
            return Err(ConfigError::NoTransport);
        }
        let store = match self.store {
            Some(store) => store,
            #[cfg(feature = "memory-store")]
            None => Arc::new(crate::MemoryStore::new()),
            #[cfg(not(feature = "memory-store"))]
            None => return Err(ConfigError::MissingStore),
        };
        if self.track_users && !store.indexes_users() {
            return Err(ConfigError::UsersNotIndexed);
        }
        crate::observe::prepare_clock();
        Ok(SessionEngine {
            inner: Arc::new(Inner {
                keys,
                cookie: CookieFormat::new(&self.cookie),
                cookie_name: self.cookie.name,
                send_cookie: self.send_cookie,
                header,
                track_users: self.track_users,
                max_sessions_per_user: self.max_sessions_per_user,
                lifetime: Lifetime::new(
                    self.duration,
                    self.max_lifetime,
                    self.touch_interval,
                    self.clock,
                ),
                automatic_touch: self.automatic_touch,
                hash_ids: self.hash_ids,
                max_data_bytes: self.max_data_bytes,
                gateway: Gateway::new(store, self.store_timeout),
            }),
        })
    }
}

/// A header name the engine can carry the id in: valid, and neither of the cookie headers.
fn header_name(name: &str) -> Result<HeaderName, ConfigError> {
    let name = HeaderName::try_from(name).map_err(|_| ConfigError::InvalidHeaderName)?;
    if name == COOKIE || name == SET_COOKIE {
        return Err(ConfigError::InvalidHeaderName);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn build(
        f: impl FnOnce(SessionEngineBuilder) -> SessionEngineBuilder,
    ) -> Result<(), ConfigError> {
        f(SessionEngine::builder().secret(SECRET)).build().map(drop)
    }

    #[test]
    fn each_bad_option_has_its_own_error() {
        use ConfigError as E;
        assert_eq!(
            SessionEngine::builder().build().unwrap_err(),
            E::MissingSecret
        );
        assert_eq!(
            build(|b| b.secret("short")),
            Err(E::SecretTooShort { index: 0, len: 5 })
        );
        assert_eq!(build(|b| b.cookie_name("a b")), Err(E::InvalidCookieName));
        for short in [Duration::ZERO, Duration::from_micros(999)] {
            assert_eq!(build(|b| b.duration(short)), Err(E::DurationTooShort));
            assert_eq!(
                build(|b| b.max_lifetime(short)),
                Err(E::MaxLifetimeTooShort)
            );
        }
        assert_eq!(build(|b| b.duration(Duration::from_millis(1))), Ok(()));
        assert_eq!(build(|b| b.max_lifetime(Duration::from_millis(1))), Ok(()));
        assert_eq!(
            build(|b| b.store_timeout(Duration::ZERO)),
            Err(E::ZeroStoreTimeout)
        );
        assert_eq!(build(|b| b.store_timeout(None)), Ok(()));
        assert_eq!(
            build(|b| b.max_sessions_per_user(0)),
            Err(E::NoSessionsPerUser)
        );
        assert_eq!(build(|b| b.cookie_name("__Host-sid")), Ok(()));
        for bad in ["", "x session", "cookie", "Set-Cookie", "é"] {
            assert_eq!(
                build(|b| b.header(bad)),
                Err(E::InvalidHeaderName),
                "{bad:?}"
            );
        }
        assert_eq!(build(|b| b.cookie(false)), Err(E::NoTransport));
        assert_eq!(build(|b| b.cookie(false).header("X-Session")), Ok(()));
    }

    #[test]
    fn r15_defaults() {
        let builder = SessionEngine::builder();
        assert_eq!(builder.store_timeout, Some(DEFAULT_STORE_TIMEOUT));
        assert_eq!(builder.touch_interval, TouchInterval::Default);
        assert_eq!(builder.duration, DEFAULT_DURATION);
        assert!(builder.automatic_touch && builder.hash_ids && builder.cookie.persistent);
        assert_eq!(builder.max_data_bytes, DEFAULT_MAX_DATA_BYTES);
    }

    #[test]
    fn r14_debug_redacts_secrets() {
        let builder = SessionEngine::builder().secrets([SECRET, &SECRET.repeat(2)]);
        assert!(!format!("{builder:?}").contains(SECRET));
        let engine = builder.build().unwrap();
        let debug = format!("{engine:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(debug.contains("REDACTED"));
    }
}
