//! The errors of the engine's builder ([`ConfigError`]) and of the session handle ([`Error`]).

use http::StatusCode;

use crate::store::StoreError;

/// Why a [`Session`](crate::Session) method failed.
///
/// With the `axum` feature it is `IntoResponse`: a store that is unreachable or too slow
/// answers 503, anything else 500, both with an opaque body, so `?` in a handler is safe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A data method or `roll` was called before `start` (R5).
    #[error("the session has not been started")]
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
    /// `set_duration` was given zero: a session that expires as it is written.
    #[error("a session duration must be greater than zero")]
    ZeroDuration,
    /// A change would make the data larger than the engine's `max_data_bytes`; it was not
    /// applied.
    #[error("session data of {size} bytes would exceed the limit of {limit} bytes")]
    DataTooLarge {
        /// The size the data would have had, as JSON.
        size: usize,
        /// The engine's limit.
        limit: usize,
    },
    /// `set_many` or `reset` was given something that is not a JSON object.
    #[error("session data must be a JSON object")]
    NotAnObject,
    /// A value could not be turned into JSON.
    #[error("could not serialize a session value")]
    Serialize(#[source] serde_json::Error),
    /// A stored value did not have the type that was asked for.
    #[error("could not deserialize a session value")]
    Deserialize(#[source] serde_json::Error),
    /// A store hook failed (or took longer than `store_timeout`).
    #[error("session store error")]
    Store(#[from] StoreError),
}

impl Error {
    /// The HTTP status this error answers with: 503 when the store is unavailable, else 500.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
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
    /// A session duration of zero.
    #[error("the session duration must be greater than zero")]
    ZeroDuration,
    /// A `max_lifetime` of zero.
    #[error("max_lifetime must be greater than zero")]
    ZeroMaxLifetime,
    /// No store was given and the `memory-store` feature, which provides the default, is off.
    #[error("a store is required when the `memory-store` feature is off")]
    MissingStore,
}
