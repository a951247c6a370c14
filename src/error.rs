//! The errors of the engine's builder ([`ConfigError`]) and of the session handle ([`Error`]),
//! and the one opaque response that every session failure answers with.

use std::fmt;

use http::header::CACHE_CONTROL;
use http::{HeaderValue, Response, StatusCode};

use crate::store::StoreError;

/// Why a [`Session`](crate::Session) method failed.
///
/// With the `axum` feature it is `IntoResponse`: a store that is unreachable or too slow
/// answers 503, anything else 500, both with an empty body, so `?` in a handler is safe. The
/// cause is logged, never sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A data method or `roll` was called before `start`: on a handle taken from the
    /// request's extensions, or from a `LazySession`, call `start().await` first (the axum
    /// extractor [`Session`](crate::Session) does).
    #[error(
        "the session has not been started: call `session.start().await` first, or take the \
         `Session` extractor, which starts it"
    )]
    NotStarted,
    /// `set_id` or `set_signed_id` was called after `start`; use `roll` to change the id of a
    /// started session.
    #[error("the session has already been started")]
    AlreadyStarted,
    /// A key beginning with `__` was set or deleted; those are the engine's.
    #[error("session keys beginning with `__` are reserved")]
    ReservedKey,
    /// An id that is empty, longer than 128 bytes, or has characters outside `[A-Za-z0-9_-]`.
    #[error("invalid session id")]
    InvalidId,
    /// A signed id whose signature did not verify.
    #[error("invalid session id signature")]
    BadSignature,
    /// `set_duration` was given less than a millisecond, the unit stores keep times in: a
    /// session that would expire as it is written.
    #[error("a session duration must be at least 1 ms")]
    DurationTooShort,
    /// A change would make the data larger than the engine's `max_data_bytes`; it was not
    /// applied.
    #[error("session data of {size} bytes would exceed the limit of {limit} bytes")]
    DataTooLarge {
        /// The size the data would have had, as JSON.
        size: usize,
        /// The engine's limit.
        limit: usize,
    },
    /// A value nests arrays and objects deeper than `limit` levels, more than every store can
    /// read back; it was not applied.
    #[error("session values may nest at most {limit} levels deep")]
    TooDeep {
        /// The deepest nesting a value may have.
        limit: usize,
    },
    /// `set_many` or `reset` was given something that is not a JSON object.
    #[error("session data must be a JSON object")]
    NotAnObject,
    /// A value could not be turned into JSON.
    #[error("could not serialize a session value")]
    Serialize(#[source] DataError),
    /// The value stored under `key` is not of the type that was asked for.
    #[error("the session value under {key:?} is not of the type asked for")]
    Deserialize {
        /// The key that was read.
        key: String,
        /// What went wrong, without the value.
        #[source]
        source: DataError,
    },
    /// A user's sessions were asked for, or a session tied to a user, on an engine built
    /// without [`track_users`](crate::SessionEngineBuilder::track_users).
    #[error("users are not tracked: build the engine with `track_users(true)`")]
    UsersNotTracked,
    /// A store hook failed (or took longer than `store_timeout`).
    #[error("session store error")]
    Store(#[from] StoreError),
}

impl Error {
    /// The HTTP status this error answers with: 503 when the store is unavailable or too slow,
    /// else 500.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What serde reported about a session value, without the value itself.
///
/// serde's messages quote the data they could not convert ("invalid type: string \"…\""), and
/// session data may hold anything a user typed, so only the kind of failure and its position
/// are kept: errors are logged, and logs must never carry session data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataError {
    kind: &'static str,
    line: usize,
    column: usize,
}

impl DataError {
    pub(crate) fn new(error: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let kind = match error.classify() {
            Category::Io => "an I/O error",
            Category::Syntax => "malformed JSON",
            Category::Data => "a value of another type or shape",
            Category::Eof => "JSON that ends early",
        };
        Self {
            kind,
            line: error.line(),
            column: error.column(),
        }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind)?;
        if self.line > 0 {
            write!(f, " at line {} column {}", self.line, self.column)?;
        }
        Ok(())
    }
}

impl std::error::Error for DataError {}

/// The response that replaces one whose session failed: the error's status, an empty body
/// and `Cache-Control: no-store`. A handler's `Error` and a failure at the end of a request
/// both answer with it; the cause goes to the log (never an id, a secret or session data).
pub(crate) fn failure<B: Default>(error: &Error) -> Response<B> {
    opaque(error.status(), error)
}

/// The opaque response of [`failure`], with `status`, for a failure that is not an [`Error`].
pub(crate) fn opaque<B: Default>(
    status: StatusCode,
    error: &(dyn std::error::Error + 'static),
) -> Response<B> {
    tracing::error!(error, "session error; answering with an opaque error");
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Why [`SessionEngineBuilder::build`](crate::SessionEngineBuilder::build) refused the options.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No secret was given.
    #[error("a secret is required to sign session cookies")]
    MissingSecret,
    /// A secret is shorter than 32 bytes.
    #[error("secret #{index} is {len} bytes long; at least 32 are required")]
    SecretTooShort {
        /// Its position in the list (0 is the signing secret).
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// The cookie name is not an RFC 6265 token.
    #[error("the cookie name is not a valid RFC 6265 token")]
    InvalidCookieName,
    /// The cookie path is empty, does not start with `/`, or has a `;`, `,`, control
    /// character, whitespace or non-ASCII character.
    #[error("the cookie path must start with `/` and hold only visible ASCII but `;` and `,`")]
    InvalidCookiePath,
    /// The cookie domain is empty or has a `;`, `,`, control character, whitespace or
    /// non-ASCII character (use its punycode form).
    #[error("the cookie domain must hold only visible ASCII but `;` and `,`")]
    InvalidCookieDomain,
    /// `SameSite=None` without `Secure`: browsers refuse such cookies.
    #[error("SameSite=None requires the Secure attribute")]
    SameSiteNoneRequiresSecure,
    /// A `__Host-` name without `Secure`, with a path other than `/`, or with a domain.
    #[error("a `__Host-` cookie requires Secure, path `/` and no domain")]
    HostPrefix,
    /// A `__Secure-` name without `Secure`.
    #[error("a `__Secure-` cookie requires Secure")]
    SecurePrefix,
    /// A session duration under 1 ms, the unit stores keep times in: every session would
    /// expire as it is written.
    #[error("the session duration must be at least 1 ms")]
    DurationTooShort,
    /// A `max_lifetime` under 1 ms.
    #[error("max_lifetime must be at least 1 ms")]
    MaxLifetimeTooShort,
    /// A `store_timeout` of zero: every store call would fail.
    #[error("store_timeout must be greater than zero (use `None` to turn it off)")]
    ZeroStoreTimeout,
    /// No store was given and the `memory-store` feature, which provides the default, is off.
    #[error("a store is required when the `memory-store` feature is off")]
    MissingStore,
    /// The session header's name is not a valid header name, or is one the engine cannot
    /// use (`Cookie`, `Set-Cookie`).
    #[error("the session header must be a valid header name other than Cookie and Set-Cookie")]
    InvalidHeaderName,
    /// `cookie(false)` without `header(…)`: the session id would travel nowhere.
    #[error("with the cookie turned off, a session header is required")]
    NoTransport,
    /// `max_sessions_per_user(0)`: no user could log in.
    #[error("max_sessions_per_user must be at least 1")]
    NoSessionsPerUser,
    /// `track_users(true)` on a store that does not index users
    /// ([`SessionStore::indexes_users`](crate::SessionStore::indexes_users)).
    #[error("track_users needs a store that indexes users, and this one does not")]
    UsersNotIndexed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r14_a_data_error_never_quotes_the_value() {
        let secret = "hunter2-in-the-session";
        let error = serde_json::from_value::<u64>(serde_json::json!(secret)).unwrap_err();
        assert!(
            error.to_string().contains(secret),
            "serde quotes it: {error}"
        );
        let data = DataError::new(&error);
        assert!(!data.to_string().contains("hunter2"), "{data}");
        assert!(!format!("{data:?}").contains("hunter2"));
        let syntax = serde_json::from_str::<serde_json::Value>("{\"a\": hunter2").unwrap_err();
        assert_eq!(
            DataError::new(&syntax).to_string(),
            "malformed JSON at line 1 column 7"
        );
    }

    #[test]
    fn the_failure_response_is_opaque() {
        let error = Error::Store(StoreError::unavailable("db at 10.0.0.1 is down"));
        let response: Response<String> = failure(&error);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.body(), "");
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        let response: Response<String> = failure(&Error::NotStarted);
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
