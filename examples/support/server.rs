//! What every example server shares and is not about sessions: its settings from the
//! environment, the store they name, logging, and serving until Ctrl-C or SIGTERM.
//!
//! The settings are the demo's (its documentation, `examples/demo.rs`, lists them): `PORT`,
//! `SESSION_SECRETS`, `SESSION_STORE`, `SESSION_DURATION_MS`, `SESSION_MAX_LIFETIME_MS`,
//! `SESSION_TOUCH_INTERVAL_MS`, `SESSION_COOKIE_SECURE`, `SESSION_HEADER`, `SESSION_COOKIE`,
//! `SESSION_NEAR_CACHE` and `RUST_LOG`.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use session_engine::store::random_id;
use session_engine::{ConfigError, MemoryStore, SessionEngine, SessionStore, StoreError};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The longest duration accepted from the environment or a request: one year. Longer values
/// are almost certainly typos, and keep expiry arithmetic far from overflow.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How often expired sessions are swept from the store.
const CLEANUP_PERIOD: Duration = Duration::from_secs(60);

/// Runs the server `name`: the routes `app` makes for the engine of the environment's
/// settings, logged, on `127.0.0.1:$PORT`, until Ctrl-C or SIGTERM.
pub(crate) async fn main(name: &str, app: impl FnOnce(SessionEngine) -> Router) -> ExitCode {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|filter| filter.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer())
        .with(filter)
        .init();
    match run(name, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(name: &str, app: impl FnOnce(SessionEngine) -> Router) -> Result<(), Fatal> {
    let config = Config::from_env()?;
    let store = open_store(&config.store, config.near_cache).await?;

    // Every bundled store indexes users: the demo lists a user's sessions.
    let mut builder = SessionEngine::builder()
        .secrets(&config.secrets)
        .secure(config.secure)
        .track_users(true)
        .shared_store(store);
    if let Some(duration) = config.duration {
        builder = builder.duration(duration);
    }
    if let Some(max_lifetime) = config.max_lifetime {
        builder = builder.max_lifetime(max_lifetime);
    }
    if let Some(interval) = config.touch_interval {
        builder = builder.touch_interval(interval);
    }
    if let Some(header) = &config.header {
        builder = builder.header(header);
    }
    let engine = builder.cookie(config.cookie).build().map_err(|error| {
        let setting = match error {
            ConfigError::InvalidHeaderName => "SESSION_HEADER: ",
            ConfigError::NoTransport => "SESSION_COOKIE=false without SESSION_HEADER: ",
            _ => "",
        };
        Fatal(format!("invalid session settings: {setting}{error}"))
    })?;
    let _cleanup = engine.spawn_cleanup(CLEANUP_PERIOD);

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, config.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| Fatal(format!("cannot listen on {addr}: {error}")))?;
    // The address bound, which tells the port the system chose for `PORT=0`.
    let addr = listener.local_addr().unwrap_or(addr);
    // The one surprise of plain HTTP: a `Secure` cookie set by any host but localhost never
    // comes back, so every request would start a new session, silently.
    let secure_note = if config.secure {
        " (the cookie is Secure: browsers send it back only over HTTPS or to localhost; \
         for plain HTTP to another host, set SESSION_COOKIE_SECURE=false)"
    } else {
        ""
    };
    tracing::info!(
        %addr,
        store = config.store.scheme(),
        secure = config.secure,
        secrets = config.secrets.len(),
        "session-engine {name} listening{secure_note}"
    );

    let app = app(engine).layer(middleware::from_fn(log_request));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|error| Fatal(format!("server error: {error}")))?;
    tracing::info!("shut down");
    Ok(())
}

/// Logs each request's method, path and status (never its headers: they carry the cookie).
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::info!(%method, %path, status = response.status().as_u16(), "request");
    response
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

// ---- stores ----

/// Where sessions are kept, from `SESSION_STORE`.
#[derive(Debug)]
enum StoreUrl {
    Memory,
    /// `scheme://…`, for the stores behind cargo features.
    Url(String),
}

impl StoreUrl {
    fn parse(value: &str) -> Result<Self, Fatal> {
        if value == "memory" {
            return Ok(Self::Memory);
        }
        match value.split_once("://") {
            Some((scheme, _)) if !scheme.is_empty() => Ok(Self::Url(value.to_owned())),
            _ => Err(Fatal(format!(
                "SESSION_STORE must be `memory` or a URL such as `sqlite://PATH`, \
                 `redis://HOST` or `postgres://HOST/DB`; got {value:?}"
            ))),
        }
    }

    /// The store's kind, for logs and errors: never the URL, which may hold a password.
    fn scheme(&self) -> &str {
        match self {
            Self::Memory => "memory",
            Self::Url(url) => url.split_once("://").map_or(url, |(scheme, _)| scheme),
        }
    }
}

/// Opens the store that `url` names; the SQL stores create their table if it is missing.
async fn open_store(
    url: &StoreUrl,
    near_cache: Option<usize>,
) -> Result<Arc<dyn SessionStore>, Fatal> {
    let scheme = url.scheme();
    if near_cache.is_some()
        && !matches!(
            feature_for(scheme),
            Some("redis" | "redis-tls" | "postgres")
        )
    {
        return Err(Fatal(format!(
            "SESSION_NEAR_CACHE: the read cache sits in front of a Redis or PostgreSQL store \
             (SESSION_STORE=redis://… or postgres://…), not of the {scheme} store"
        )));
    }
    let StoreUrl::Url(text) = url else {
        return Ok(Arc::new(MemoryStore::new()));
    };
    let feature = feature_for(scheme).ok_or_else(|| {
        Fatal(format!(
            "SESSION_STORE: unknown store `{scheme}://`; use `memory`, `sqlite://PATH`, \
             `redis://…`, `redis-cluster://…`, `redis-sentinel://…` (or `rediss…` for TLS) \
             or `postgres://…`"
        ))
    })?;
    let opened = open_feature_store(feature, text, near_cache)
        .await
        .ok_or_else(|| {
            Fatal(format!(
                "SESSION_STORE: the {scheme} store needs the cargo feature `{feature}`, which is \
             not built into this binary: run with `--features {feature}`, or use \
             SESSION_STORE=memory"
            ))
        })?;
    opened.map_err(|error| {
        let mut message = format!("SESSION_STORE: the {scheme} store could not be opened: {error}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        Fatal(message)
    })
}

/// Opens the store of a cargo feature at `url`; `None` when this binary was built without
/// that feature.
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres")),
    allow(unused_variables)
)]
async fn open_feature_store(
    feature: &str,
    url: &str,
    near_cache: Option<usize>,
) -> Option<Result<Arc<dyn SessionStore>, StoreError>> {
    match (feature, url) {
        #[cfg(feature = "sqlite")]
        ("sqlite", url) => Some(open_sqlite(url).await),
        #[cfg(feature = "postgres")]
        ("postgres", url) => Some(open_postgres(url, near_cache).await),
        #[cfg(feature = "redis")]
        ("redis", url) => Some(open_redis(url, near_cache).await),
        #[cfg(feature = "redis-tls")]
        ("redis-tls", url) => Some(open_redis(url, near_cache).await),
        _ => None,
    }
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(url: &str) -> Result<Arc<dyn SessionStore>, StoreError> {
    let store = session_engine::store::sqlite::SqliteStore::open(url).await?;
    store.migrate().await?;
    Ok(Arc::new(store))
}

#[cfg(feature = "redis")]
async fn open_redis(
    url: &str,
    near_cache: Option<usize>,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    let store = session_engine::store::redis::RedisStore::connect(url).await?;
    match near_cache {
        None => Ok(Arc::new(store)),
        #[cfg(feature = "near-cache")]
        Some(capacity) => {
            let cached = session_engine::store::cache::NearCache::redis(store, capacity).await?;
            tracing::info!(
                capacity,
                "near cache on, kept coherent by Redis client tracking"
            );
            Ok(Arc::new(cached))
        }
        #[cfg(not(feature = "near-cache"))]
        Some(_) => Err(StoreError::backend(
            "SESSION_NEAR_CACHE needs the cargo feature `near-cache`, which is not built into \
             this binary: run with `--features redis,near-cache`",
        )),
    }
}

#[cfg(feature = "postgres")]
async fn open_postgres(
    url: &str,
    near_cache: Option<usize>,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    let store = session_engine::store::postgres::PostgresStore::connect(url).await?;
    store.migrate().await?;
    match near_cache {
        None => Ok(Arc::new(store)),
        #[cfg(feature = "near-cache")]
        Some(capacity) => {
            let cached = session_engine::store::cache::NearCache::postgres(store, capacity).await?;
            tracing::info!(
                capacity,
                "near cache on, kept coherent by PostgreSQL LISTEN/NOTIFY"
            );
            Ok(Arc::new(cached))
        }
        #[cfg(not(feature = "near-cache"))]
        Some(_) => Err(StoreError::backend(
            "SESSION_NEAR_CACHE needs the cargo feature `near-cache`, which is not built into \
             this binary: run with `--features postgres,near-cache`",
        )),
    }
}

/// The cargo feature that provides the store for a URL scheme.
fn feature_for(scheme: &str) -> Option<&'static str> {
    match scheme.to_ascii_lowercase().as_str() {
        "sqlite" => Some("sqlite"),
        "redis" | "redis-cluster" | "redis-sentinel" => Some("redis"),
        "rediss" | "rediss-cluster" | "rediss-sentinel" => Some("redis-tls"),
        "postgres" | "postgresql" => Some("postgres"),
        _ => None,
    }
}

// ---- configuration ----

struct Config {
    port: u16,
    secrets: Vec<String>,
    store: StoreUrl,
    /// `SESSION_NEAR_CACHE`: the capacity, in records, of a read cache in front of the store.
    near_cache: Option<usize>,
    duration: Option<Duration>,
    max_lifetime: Option<Duration>,
    touch_interval: Option<Duration>,
    secure: bool,
    /// The session header, when clients may carry the id in it.
    header: Option<String>,
    cookie: bool,
}

impl Config {
    fn from_env() -> Result<Self, Fatal> {
        let port = match var("PORT")? {
            None => 3000,
            Some(value) => value.trim().parse().map_err(|_| {
                Fatal(format!(
                    "PORT must be a port number (0 to 65535); got {value:?}"
                ))
            })?,
        };
        let secrets = match var("SESSION_SECRETS")? {
            Some(value) => parse_secrets(&value)?,
            None => {
                tracing::warn!(
                    "SESSION_SECRETS is not set: signing with a random secret made for this \
                     run, so sessions will not survive a restart"
                );
                // Two ids of 24 random bytes: 64 characters, 384 bits.
                let secret = random_id()
                    .and_then(|a| random_id().map(|b| a + &b))
                    .map_err(|error| Fatal(format!("cannot make a random secret: {error}")))?;
                vec![secret]
            }
        };
        let store = StoreUrl::parse(var("SESSION_STORE")?.as_deref().unwrap_or("memory"))?;
        let near_cache = match var("SESSION_NEAR_CACHE")? {
            None => None,
            Some(value) => match value.parse::<usize>() {
                Ok(capacity) if capacity > 0 => Some(capacity),
                _ => {
                    return Err(Fatal(format!(
                        "SESSION_NEAR_CACHE must be a number of records, at least 1; got {value:?}"
                    )));
                }
            },
        };
        let duration = duration_var("SESSION_DURATION_MS")?;
        let max_lifetime = duration_var("SESSION_MAX_LIFETIME_MS")?;
        let touch_interval = interval_var("SESSION_TOUCH_INTERVAL_MS")?;
        let secure = match var("SESSION_COOKIE_SECURE")? {
            None => true,
            Some(value) => parse_bool(&value).ok_or_else(|| {
                Fatal(format!(
                    "SESSION_COOKIE_SECURE must be `true` or `false`; got {value:?}"
                ))
            })?,
        };
        let header = var("SESSION_HEADER")?;
        let cookie = match var("SESSION_COOKIE")? {
            None => true,
            Some(value) => parse_bool(&value).ok_or_else(|| {
                Fatal(format!(
                    "SESSION_COOKIE must be `true` or `false`; got {value:?}"
                ))
            })?,
        };
        Ok(Self {
            port,
            secrets,
            store,
            near_cache,
            duration,
            max_lifetime,
            touch_interval,
            secure,
            header,
            cookie,
        })
    }
}

/// An environment variable; unset or empty is `None`.
fn var(name: &str) -> Result<Option<String>, Fatal> {
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Fatal(format!("{name} is not valid UTF-8"))),
    }
}

/// `SESSION_SECRETS`: comma-separated; the lengths are checked by the engine's builder. The
/// secrets themselves never appear in a message.
fn parse_secrets(value: &str) -> Result<Vec<String>, Fatal> {
    let secrets: Vec<String> = value.split(',').map(|s| s.trim().to_owned()).collect();
    if let Some(index) = secrets.iter().position(String::is_empty) {
        return Err(Fatal(format!(
            "SESSION_SECRETS: secret #{index} is empty (secrets are separated by commas)"
        )));
    }
    Ok(secrets)
}

/// A duration in milliseconds: a whole number from 1 to [`MAX_DURATION`].
fn duration_var(name: &str) -> Result<Option<Duration>, Fatal> {
    let Some(value) = var(name)? else {
        return Ok(None);
    };
    let duration = value
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis)
        .filter(|d| !d.is_zero() && *d <= MAX_DURATION)
        .ok_or_else(|| {
            Fatal(format!(
                "{name} must be a whole number of milliseconds from 1 to {}; got {value:?}",
                MAX_DURATION.as_millis()
            ))
        })?;
    Ok(Some(duration))
}

/// A touch interval in milliseconds: a whole number from 0 (every request) to
/// [`MAX_DURATION`].
fn interval_var(name: &str) -> Result<Option<Duration>, Fatal> {
    let Some(value) = var(name)? else {
        return Ok(None);
    };
    let interval = value
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| {
            Fatal(format!(
                "{name} must be a whole number of milliseconds from 0 to {}; got {value:?}",
                MAX_DURATION.as_millis()
            ))
        })?;
    Ok(Some(interval))
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A setting or start-up failure, as the message printed before exiting.
#[derive(Debug)]
pub(crate) struct Fatal(String);

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
