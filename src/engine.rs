//! [`SessionEngine`]: the cookie settings, secrets and timings, and the store; and its builder.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::cookie::{self, CookieConfig, CookieFormat, SameSite};
use crate::error::ConfigError;
use crate::signing::Key;
use crate::store::{Changes, Record, SessionStore, StoreError};

/// The default idle lifetime: 30 minutes.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30 * 60);

/// The longest duration or lifetime that counts: 100 years. Longer ones are treated as this.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The default limit on a session's data, as JSON: 1 MiB.
pub const DEFAULT_MAX_DATA_BYTES: usize = 1024 * 1024;

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The session settings and the store, shared by every request (cheap to clone).
///
/// Made with [`SessionEngine::builder`]; served by [`SessionLayer`](crate::SessionLayer).
#[derive(Clone)]
pub struct SessionEngine {
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    /// The first signs; all verify.
    pub(crate) keys: Box<[Key]>,
    pub(crate) cookie: CookieConfig,
    pub(crate) cookie_format: CookieFormat,
    pub(crate) duration: Duration,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) automatic_touch: bool,
    pub(crate) touch_interval: Option<Duration>,
    pub(crate) hash_ids: bool,
    pub(crate) max_data_bytes: usize,
    pub(crate) store_timeout: Option<Duration>,
    pub(crate) store: Arc<dyn SessionStore>,
    /// `store` itself when it is the built-in `MemoryStore`, called without boxing futures.
    #[cfg(feature = "memory-store")]
    memory: Option<Arc<crate::MemoryStore>>,
    clock: Option<Clock>,
}

impl SessionEngine {
    /// A builder with every option at its default. A secret is required.
    pub fn builder() -> SessionEngineBuilder {
        SessionEngineBuilder::default()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.inner.store
    }

    /// Removes expired records from the store; returns how many.
    ///
    /// # Errors
    ///
    /// The store's error.
    pub async fn cleanup(&self) -> Result<u64, StoreError> {
        self.inner.call(self.inner.store.cleanup()).await
    }

    /// Spawns a tokio task that calls [`cleanup`](Self::cleanup) every `period`, logging
    /// failures, until the returned handle is aborted or the runtime shuts down.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or if `period` is zero.
    pub fn spawn_cleanup(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        assert!(!period.is_zero(), "the cleanup period must not be zero");
        let engine = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match engine.cleanup().await {
                    Ok(removed) => tracing::debug!(removed, "session cleanup"),
                    Err(error) => tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "session cleanup failed"
                    ),
                }
            }
        })
    }
}

impl EngineInner {
    pub(crate) fn now(&self) -> SystemTime {
        match &self.clock {
            Some(clock) => clock(),
            None => SystemTime::now(),
        }
    }

    /// The key the store sees for `id`: base64url(SHA-256(id)) unless `hash_ids` is off.
    pub(crate) fn store_key(&self, id: &str) -> String {
        if self.hash_ids {
            URL_SAFE_NO_PAD.encode(Sha256::digest(id.as_bytes()))
        } else {
            id.to_owned()
        }
    }

    /// The store, when it is the built-in `MemoryStore`: its hooks need no `.await`.
    #[cfg(feature = "memory-store")]
    pub(crate) fn memory(&self) -> Option<&crate::MemoryStore> {
        self.memory.as_deref()
    }

    /// The store's `id` hook.
    pub(crate) async fn id(&self) -> Result<String, StoreError> {
        #[cfg(feature = "memory-store")]
        if self.memory.is_some() {
            return crate::store::random_id();
        }
        self.call(self.store.id()).await
    }

    /// The store's `read` hook, under `store_timeout`.
    pub(crate) async fn read(&self, key: &str) -> Result<Option<Record>, StoreError> {
        #[cfg(feature = "memory-store")]
        if let Some(memory) = &self.memory {
            return memory.read_now(key);
        }
        self.call(self.store.read(key)).await
    }

    /// The store's `write` hook, under `store_timeout`.
    pub(crate) async fn write(
        &self,
        key: &str,
        record: &Record,
        changes: &Changes,
        stored: bool,
    ) -> Result<(), StoreError> {
        #[cfg(feature = "memory-store")]
        if let Some(memory) = &self.memory {
            return memory.write_now(key, record, changes, stored);
        }
        self.call(self.store.write(key, record, changes, stored))
            .await
    }

    /// The store's `touch` hook, under `store_timeout`.
    pub(crate) async fn touch(&self, key: &str, expires_at: SystemTime) -> Result<(), StoreError> {
        #[cfg(feature = "memory-store")]
        if let Some(memory) = &self.memory {
            return memory.touch_now(key, expires_at);
        }
        self.call(self.store.touch(key, expires_at)).await
    }

    /// The store's `destroy` hook, under `store_timeout`.
    pub(crate) async fn destroy(&self, key: &str) -> Result<(), StoreError> {
        #[cfg(feature = "memory-store")]
        if let Some(memory) = &self.memory {
            memory.destroy_now(key);
            return Ok(());
        }
        self.call(self.store.destroy(key)).await
    }

    /// Runs a store hook under `store_timeout`.
    pub(crate) async fn call<T>(
        &self,
        hook: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match self.store_timeout {
            None => hook.await,
            Some(limit) => tokio::time::timeout(limit, hook)
                .await
                .unwrap_or_else(|elapsed| Err(StoreError::unavailable(elapsed))),
        }
    }

    /// The expiry of a session created at `created_at` that is written or touched now with
    /// idle lifetime `duration`: now + duration, capped by `max_lifetime`.
    pub(crate) fn expiry(&self, created_at: SystemTime, duration: Duration) -> SystemTime {
        self.expiry_at(self.now(), created_at, duration)
    }

    /// [`expiry`](Self::expiry) for a `now` the caller has already read.
    pub(crate) fn expiry_at(
        &self,
        now: SystemTime,
        created_at: SystemTime,
        duration: Duration,
    ) -> SystemTime {
        let idle = later(now, duration);
        match self.max_lifetime {
            Some(max) => idle.min(later(created_at, max)),
            None => idle,
        }
    }

    /// Whether a record with these times is past its expiry or its absolute lifetime (R6).
    pub(crate) fn is_expired(&self, created_at: SystemTime, expires_at: SystemTime) -> bool {
        let now = self.now();
        expires_at <= now
            || self
                .max_lifetime
                .is_some_and(|max| later(created_at, max) <= now)
    }
}

/// `time + duration`, with durations capped at [`MAX_DURATION`] so that no option can
/// overflow `SystemTime`.
fn later(time: SystemTime, duration: Duration) -> SystemTime {
    time.checked_add(duration.min(MAX_DURATION)).unwrap_or(time)
}

impl fmt::Debug for SessionEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("SessionEngine")
            .field("secrets", &inner.keys)
            .field("cookie", &inner.cookie)
            .field("duration", &inner.duration)
            .field("max_lifetime", &inner.max_lifetime)
            .field("automatic_touch", &inner.automatic_touch)
            .field("touch_interval", &inner.touch_interval)
            .field("hash_ids", &inner.hash_ids)
            .field("max_data_bytes", &inner.max_data_bytes)
            .field("store_timeout", &inner.store_timeout)
            .finish_non_exhaustive()
    }
}

/// Options for a [`SessionEngine`]; every setter documents its default.
#[must_use]
pub struct SessionEngineBuilder {
    secrets: Vec<Vec<u8>>,
    cookie: CookieConfig,
    duration: Duration,
    max_lifetime: Option<Duration>,
    automatic_touch: bool,
    touch_interval: Option<Duration>,
    hash_ids: bool,
    max_data_bytes: usize,
    store_timeout: Option<Duration>,
    store: Option<Arc<dyn SessionStore>>,
    #[cfg(feature = "memory-store")]
    memory: Option<Arc<crate::MemoryStore>>,
    clock: Option<Clock>,
}

impl Default for SessionEngineBuilder {
    fn default() -> Self {
        Self {
            secrets: Vec::new(),
            cookie: CookieConfig::default(),
            duration: DEFAULT_DURATION,
            max_lifetime: None,
            automatic_touch: true,
            touch_interval: None,
            hash_ids: true,
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
            store_timeout: None,
            store: None,
            #[cfg(feature = "memory-store")]
            memory: None,
            clock: None,
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
            .finish_non_exhaustive()
    }
}

impl SessionEngineBuilder {
    /// The secret that signs and verifies cookies, at least 32 bytes. Required (this or
    /// [`secrets`](Self::secrets)); replaces any set before.
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secrets = vec![secret.as_ref().to_vec()];
        self
    }

    /// Several secrets for key rotation: the first signs, every one verifies, and a cookie
    /// that verified only under an older one is re-issued under the first. Each at least 32
    /// bytes.
    pub fn secrets<I, S>(mut self, secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        self.secrets = secrets.into_iter().map(|s| s.as_ref().to_vec()).collect();
        self
    }

    /// The idle lifetime: each write or touch sets the expiry to now + this. Default 30
    /// minutes; at most [`MAX_DURATION`].
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// An absolute cap from creation that no touch, write or roll extends. Default none; at
    /// most [`MAX_DURATION`].
    pub fn max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = Some(max_lifetime);
        self
    }

    /// Whether the end of a request touches a stored, unmodified, started session. Default
    /// true.
    pub fn automatic_touch(mut self, automatic_touch: bool) -> Self {
        self.automatic_touch = automatic_touch;
        self
    }

    /// Skips the automatic touch (and the cookie refresh) when the last one was less than
    /// this long ago. Default none: every request touches.
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval = Some(interval);
        self
    }

    /// The cookie name, an RFC 6265 token. Default `sid`. A `__Host-` or `__Secure-` prefix
    /// is checked against the other attributes.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie.name = name.into();
        self
    }

    /// The cookie `Path`. Default `/`.
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.cookie.path = path.into();
        self
    }

    /// The cookie `Domain`. Default none (host-only).
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

    /// A limit on each store hook; a slower hook counts as the store being unavailable (503).
    /// Default none. Needs a tokio runtime with the time driver enabled. The built-in
    /// `MemoryStore` answers without waiting, so its hooks are not timed.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = Some(timeout);
        self
    }

    /// The store. Default a new [`MemoryStore`](crate::MemoryStore) (feature
    /// `memory-store`); without that feature a store is required.
    pub fn store(mut self, store: impl SessionStore) -> Self {
        let store = Arc::new(store);
        #[cfg(feature = "memory-store")]
        {
            let any: Arc<dyn std::any::Any + Send + Sync> = store.clone();
            self.memory = any.downcast::<crate::MemoryStore>().ok();
        }
        self.store = Some(store);
        self
    }

    /// The store, already shared. A `MemoryStore` is called faster when given to
    /// [`store`](Self::store) (keep a clone of it to inspect it: clones share their records).
    pub fn shared_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = Some(store);
        #[cfg(feature = "memory-store")]
        {
            self.memory = None;
        }
        self
    }

    /// The time source. Default [`SystemTime::now`]. For tests that move time forward
    /// without sleeping; stores keep using their own clock.
    pub fn clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Validates the options and makes the engine.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first option that is wrong.
    pub fn build(self) -> Result<SessionEngine, ConfigError> {
        if self.secrets.is_empty() {
            return Err(ConfigError::MissingSecret);
        }
        let keys = self
            .secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| {
                Key::new(secret).map_err(|len| ConfigError::SecretTooShort { index, len })
            })
            .collect::<Result<Box<[Key]>, _>>()?;
        validate_cookie(&self.cookie)?;
        if self.duration.is_zero() {
            return Err(ConfigError::ZeroDuration);
        }
        if self.max_lifetime.is_some_and(|max| max.is_zero()) {
            return Err(ConfigError::ZeroMaxLifetime);
        }
        #[cfg(feature = "memory-store")]
        let (store, memory) = match self.store {
            Some(store) => (store, self.memory),
            None => {
                let memory = Arc::new(crate::MemoryStore::new());
                (memory.clone() as Arc<dyn SessionStore>, Some(memory))
            }
        };
        #[cfg(not(feature = "memory-store"))]
        let store = self.store.ok_or(ConfigError::MissingStore)?;
        Ok(SessionEngine {
            inner: Arc::new(EngineInner {
                keys,
                cookie_format: CookieFormat::new(&self.cookie),
                cookie: self.cookie,
                duration: self.duration,
                max_lifetime: self.max_lifetime,
                automatic_touch: self.automatic_touch,
                touch_interval: self.touch_interval,
                hash_ids: self.hash_ids,
                max_data_bytes: self.max_data_bytes,
                store_timeout: self.store_timeout,
                store,
                #[cfg(feature = "memory-store")]
                memory,
                clock: self.clock,
            }),
        })
    }
}

fn validate_cookie(cookie: &CookieConfig) -> Result<(), ConfigError> {
    if !cookie::is_token(&cookie.name) {
        return Err(ConfigError::InvalidCookieName);
    }
    if !cookie.path.starts_with('/') || !cookie::is_attribute_value(&cookie.path) {
        return Err(ConfigError::InvalidCookiePath);
    }
    if let Some(domain) = &cookie.domain {
        if !cookie::is_attribute_value(domain) {
            return Err(ConfigError::InvalidCookieDomain);
        }
    }
    if cookie.same_site == SameSite::None && !cookie.secure {
        return Err(ConfigError::SameSiteNoneRequiresSecure);
    }
    // Browsers match these prefixes case-insensitively.
    let lower = cookie.name.to_ascii_lowercase();
    if lower.starts_with("__host-")
        && (!cookie.secure || cookie.path != "/" || cookie.domain.is_some())
    {
        return Err(ConfigError::HostPrefix);
    }
    if lower.starts_with("__secure-") && !cookie.secure {
        return Err(ConfigError::SecurePrefix);
    }
    Ok(())
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
    fn defaults_build() {
        let engine = SessionEngine::builder().secret(SECRET).build().unwrap();
        let inner = &engine.inner;
        assert_eq!(inner.duration, DEFAULT_DURATION);
        assert!(inner.automatic_touch && inner.hash_ids);
        assert_eq!(inner.cookie.name, "sid");
        assert_eq!(inner.cookie.same_site, SameSite::Lax);
        assert!(inner.cookie.secure && inner.cookie.http_only);
        assert_eq!(inner.max_data_bytes, DEFAULT_MAX_DATA_BYTES);
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
        assert_eq!(
            build(|b| b.secrets([SECRET, "x".repeat(31).as_str()])),
            Err(E::SecretTooShort { index: 1, len: 31 })
        );
        for name in ["", "a b", "a;b", "a=b", "sé"] {
            assert_eq!(build(|b| b.cookie_name(name)), Err(E::InvalidCookieName));
        }
        for path in ["", "app", "/a;b", "/a b", "/a\nb"] {
            assert_eq!(build(|b| b.cookie_path(path)), Err(E::InvalidCookiePath));
        }
        for domain in ["", "a;b.com", "a b", "a\r\n"] {
            assert_eq!(
                build(|b| b.cookie_domain(domain)),
                Err(E::InvalidCookieDomain)
            );
        }
        assert_eq!(
            build(|b| b.same_site(SameSite::None).secure(false)),
            Err(E::SameSiteNoneRequiresSecure)
        );
        assert_eq!(
            build(|b| b.cookie_name("__Host-s").secure(false)),
            Err(E::HostPrefix)
        );
        assert_eq!(
            build(|b| b.cookie_name("__Host-s").cookie_path("/a")),
            Err(E::HostPrefix)
        );
        assert_eq!(
            build(|b| b.cookie_name("__host-s").cookie_domain("example.com")),
            Err(E::HostPrefix)
        );
        assert_eq!(build(|b| b.cookie_name("__Host-s")), Ok(()));
        assert_eq!(
            build(|b| b.cookie_name("__Secure-s").secure(false)),
            Err(E::SecurePrefix)
        );
        assert_eq!(
            build(|b| b.cookie_name("__Secure-s").cookie_domain("example.com")),
            Ok(())
        );
        assert_eq!(build(|b| b.duration(Duration::ZERO)), Err(E::ZeroDuration));
        assert_eq!(
            build(|b| b.max_lifetime(Duration::ZERO)),
            Err(E::ZeroMaxLifetime)
        );
    }

    #[test]
    fn r14_debug_redacts_secrets() {
        let engine = SessionEngine::builder()
            .secrets([SECRET, &SECRET.repeat(2)])
            .build()
            .unwrap();
        let debug = format!("{engine:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(debug.contains("REDACTED"));
        let builder = format!("{:?}", SessionEngine::builder().secret(SECRET));
        assert!(!builder.contains(SECRET), "{builder}");
    }

    #[tokio::test]
    async fn spawned_cleanup_removes_expired_records() {
        use crate::store::{Changes, Record};
        let store = Arc::new(crate::MemoryStore::new());
        let engine = SessionEngine::builder()
            .secret(SECRET)
            .shared_store(store.clone())
            .build()
            .unwrap();
        let past = SystemTime::now() - Duration::from_secs(60);
        let expired = Record::new(Default::default(), past, past);
        let live = Record::new(
            Default::default(),
            past,
            SystemTime::now() + DEFAULT_DURATION,
        );
        let replace = Changes::replace_all();
        store
            .write("expired", &expired, &replace, false)
            .await
            .unwrap();
        store.write("live", &live, &replace, false).await.unwrap();
        let task = engine.spawn_cleanup(Duration::from_millis(5));
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while store.len() != 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        task.abort();
        assert!(
            waited.is_ok(),
            "the cleanup task never removed the expired record"
        );
        assert!(store.read("live").await.unwrap().is_some());
    }

    #[test]
    fn ids_are_hashed_for_the_store() {
        let engine = SessionEngine::builder().secret(SECRET).build().unwrap();
        let key = engine.inner.store_key("abc");
        assert_eq!(key.len(), 43);
        assert_ne!(key, "abc");
        let raw = SessionEngine::builder()
            .secret(SECRET)
            .hash_ids(false)
            .build()
            .unwrap();
        assert_eq!(raw.inner.store_key("abc"), "abc");
    }
}
