//! Entry points for the fuzz targets in the repository's `fuzz/` directory (feature `fuzzing`).
//!
//! **Not a public API.** Hidden from the docs, outside semver, and changed or removed in any
//! release: these are thin wrappers that let the targets reach the parsers and decoders the
//! crate keeps private, so that what is fuzzed is the library's own code, not a copy of it.
//! Nothing here is needed to use the crate; do not enable the feature in an application.

use http::{HeaderMap, HeaderName};

use crate::cookie::{self, CookieConfig, CookieFormat, Credentials};
use crate::id::SessionId;
use crate::signing;

/// The longest cookie or header value the request parser looks at, in bytes.
pub const MAX_VALUE_LEN: usize = cookie::MAX_VALUE_LEN;
/// How many cookies with the session's name are checked at most.
pub const MAX_CANDIDATES: usize = cookie::MAX_CANDIDATES;

/// The engine's signing keys: the first signs, every one verifies.
#[derive(Clone, Debug)]
pub struct Keys(signing::Keys);

/// A signed value that verified, or the session id a request presented.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The session id.
    pub id: String,
    /// Whether the current key signed it (and, for a request, it came raw, not
    /// percent-encoded).
    pub current: bool,
    /// What the engine would send back as it is instead of signing again, if anything.
    pub resend: Option<String>,
}

impl Keys {
    /// The keys of `secrets`, as the engine's builder checks them (`None` where it refuses).
    #[must_use]
    pub fn new(secrets: &[&[u8]]) -> Option<Self> {
        signing::Keys::new(secrets).ok().map(Self)
    }

    /// `id` signed with the current key; `None` when `id` is not a valid session id.
    #[must_use]
    pub fn sign(&self, id: &str) -> Option<String> {
        SessionId::parse(id).map(|id| self.0.sign(&id))
    }

    /// `value` verified with each key in turn.
    #[must_use]
    pub fn verify(&self, value: &str) -> Option<Found> {
        self.0.verify(value).map(|verified| Found {
            resend: (verified.current)
                .then(|| verified.id.signed().map(str::to_owned))
                .flatten(),
            id: verified.id.as_str().to_owned(),
            current: verified.current,
        })
    }
}

/// `value` verified with a single secret of any length, as `Session::set_signed_id` does with
/// the secret it is given (raw or percent-encoded).
#[must_use]
pub fn verify_with_secret(secret: &[u8], value: &str) -> Option<String> {
    cookie::decode_signed(value, |value| {
        let id = signing::Key::new(secret).verify(value)?;
        Some(signing::Verified { id, current: false })
    })
    .map(|presented| presented.id.as_str().to_owned())
}

/// The `Set-Cookie` value the engine sends for `value` under a cookie named `name` (with the
/// default attributes); `None` when the builder would refuse the name.
#[must_use]
pub fn set_cookie(name: &str, value: &str, max_age_secs: Option<u64>) -> Option<String> {
    let config = CookieConfig {
        name: name.to_owned(),
        ..CookieConfig::default()
    };
    config.validate().ok()?;
    let header = CookieFormat::new(&config).set(value, max_age_secs);
    Some(header.to_str().ok()?.to_owned())
}

/// The session id a request with `headers` presents to an engine whose cookie is named
/// `cookie_name` (`None`: the cookie is off) and whose session header is `header`, as the
/// layer reads it.
#[must_use]
pub fn presented(
    headers: &HeaderMap,
    cookie_name: Option<&str>,
    header: Option<&HeaderName>,
    keys: &Keys,
) -> Option<Found> {
    let credentials = Credentials::from_headers(headers, cookie_name.is_some(), header);
    let presented = cookie::presented(&credentials, cookie_name.unwrap_or(""), &keys.0)?;
    Some(Found {
        resend: presented.resend(&presented.id).map(str::to_owned),
        id: presented.id.as_str().to_owned(),
        current: presented.current,
    })
}

/// The Redis store's decoding of a session hash (`HGETALL`'s fields) at `now_ms`.
///
/// # Errors
///
/// What the store's `read` answers for a hash it cannot decode.
#[cfg(feature = "redis")]
pub fn redis_record(
    fields: std::collections::HashMap<fred::bytes::Bytes, fred::bytes::Bytes>,
    now_ms: u64,
) -> Result<Option<crate::Record>, crate::StoreError> {
    crate::store::redis::record_from(fields, now_ms)
}

/// The hash the Redis store's insert leaves: what its write script sets (`e`, `c`, then each
/// field and value) from the arguments the store sends for `record`.
///
/// # Errors
///
/// What the store's `write` answers for data it cannot encode.
#[cfg(feature = "redis")]
pub fn redis_insert(
    record: &crate::Record,
) -> Result<std::collections::HashMap<fred::bytes::Bytes, fred::bytes::Bytes>, crate::StoreError> {
    use fred::bytes::Bytes;

    use crate::store::redis::DELETED_COUNT;

    let (args, _) = crate::store::redis::write_args(
        record,
        &crate::Changes::replace_all(),
        crate::WriteMode::Insert,
        None,
    )?;
    let bytes = |value: &fred::types::Value| {
        Bytes::copy_from_slice(value.as_bytes().expect("the write's arguments are strings"))
    };
    // ARGV: mode, expiry, creation, …, the number of fields to delete (none for an insert) at
    // DELETED_COUNT, the fields to delete, then each field to set and its value.
    let deleted: usize = String::from_utf8_lossy(&bytes(&args[DELETED_COUNT]))
        .parse()
        .expect("a count");
    let mut hash = std::collections::HashMap::new();
    hash.insert(Bytes::from_static(b"e"), bytes(&args[1]));
    hash.insert(Bytes::from_static(b"c"), bytes(&args[2]));
    for pair in args[DELETED_COUNT + 1 + deleted..].chunks(2) {
        hash.insert(bytes(&pair[0]), bytes(&pair[1]));
    }
    Ok(hash)
}

/// The SQL stores' decoding of a row: its data column (JSON text, as `PostgresStore` when
/// `postgres`, which unescapes NUL, else as `SqliteStore`) and its creation and expiry columns
/// (milliseconds).
///
/// # Errors
///
/// What the store's `read` answers for a row it cannot decode.
#[cfg(feature = "postgres")]
pub fn sql_record(
    postgres: bool,
    data: &str,
    created_ms: i64,
    expires_ms: i64,
) -> Result<crate::Record, crate::StoreError> {
    use crate::store::sql;
    if postgres {
        sql::record_from_row(data, created_ms, expires_ms, sql::nul::decode)
    } else {
        sql::record_from_row(data, created_ms, expires_ms, |data| {
            crate::store::decode_data(data.as_bytes())
        })
    }
}

/// The data column the SQL stores write for `data`: its JSON text, with NUL escaped when
/// `postgres`, as `PostgresStore` writes it.
///
/// # Errors
///
/// What the store's `write` answers for data it cannot encode.
#[cfg(feature = "postgres")]
pub fn sql_data(
    postgres: bool,
    data: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, crate::StoreError> {
    let text = crate::store::encode_data(data);
    if postgres {
        crate::store::sql::nul::escape_json(text)
    } else {
        Ok(text)
    }
}

/// A time as the SQL stores bind it: integer milliseconds since the Unix epoch.
#[cfg(feature = "postgres")]
#[must_use]
pub fn sql_millis(time: std::time::SystemTime) -> i64 {
    crate::store::sql::millis(time)
}
