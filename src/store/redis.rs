//! [`RedisStore`]: sessions in Redis, standalone, Cluster or behind Sentinel, shared by every
//! instance of an app (feature `redis`, on the [`fred`] client; TLS with the feature
//! `redis-tls`).
//!
//! ```no_run
//! # async fn run() -> Result<(), session_engine::StoreError> {
//! use session_engine::SessionEngine;
//! use session_engine::store::redis::RedisStore;
//!
//! // Or "redis-cluster://127.0.0.1:7001?node=127.0.0.1:7002&node=127.0.0.1:7003", or
//! // "redis-sentinel://127.0.0.1:26379?sentinelServiceName=sessions", or with the feature
//! // `redis-tls`, "rediss://redis.example.com:6380" (see `RedisStore::connect`).
//! let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
//! let engine = SessionEngine::builder()
//!     .secret("a secret of at least thirty-two bytes!")
//!     .store(store)
//!     .build();
//! # let _ = engine;
//! # Ok(())
//! # }
//! ```
//!
//! Each session is one hash under `PREFIX + key` (the prefix is `session:` unless set): the
//! field `c` holds its creation time and `e` its expiry, both in milliseconds since the Unix
//! epoch, and each data key `k` is the field `.k` holding the value as JSON. Redis expires the
//! hash itself at `e` (`PEXPIREAT`), so [`cleanup`](SessionStore::cleanup) has nothing to do.
//!
//! Reads are one `HGETALL`. Writes, touches and destroys are each one Lua script, run
//! atomically by the server (a destroy's `DEL` says whether a live session was removed, since
//! Redis never keeps an expired key), so the rules of the store contract hold in Redis itself:
//!
//! - an insert fails if the hash exists, so it never overwrites a live session;
//! - an update and a touch fail if it does not, so they never recreate a destroyed one, and a
//!   touch only moves the expiry its request read;
//! - an update sets the fields of the keys that were set, removes those of the keys that were
//!   deleted and moves the expiry, so two requests that change different keys both keep
//!   their change;
//! - an update's expiry is the one the hash calls for as it stands after the update
//!   ([`Record::expiry_after`]): `now` plus its own duration (`.__cust_dur`) or the engine's,
//!   capped by `max_lifetime` from its last login (`.__login`) or its creation (`c`), to the
//!   millisecond. The store computes it from the request's view of the record and the script
//!   keeps it when those three fields are still what the request saw; when another request
//!   changed them meanwhile (a `set_duration`, a login), the script computes it again from the
//!   stored fields, so a slow request that changes another key never undoes them (R17).
//!   `write` returns that expiry, and Redis's own expiry follows it.
//!
//! Every script names one key, so every hook works on a Cluster. The scripts are sent by their
//! SHA-1 (`EVALSHA`) and loaded again when a server answers that it does not know them (after a
//! restart, or on a new Cluster node).
//!
//! # The user index
//!
//! A session tied to a user (`Session::set_user`) is also a member of the sorted set
//! `PREFIX + "user:" + user`, scored by when it was last indexed (the server's clock), which
//! [`user_sessions`](SessionStore::user_sessions) reads. On a Cluster that set and the user's
//! sessions live in different slots, which no script or transaction can span, so the index is self-healing instead of atomic, on every deployment
//! alike:
//!
//! - a write of a tied session adds it to the set *before* the session is written, and keeps
//!   the set alive for twice the session's remaining life. The write script writes nothing
//!   when the hash, as the update leaves it, is tied to another user than the one indexed
//!   (another request tied it meanwhile) or would expire later than the set was stretched
//!   for (another request gave it a longer duration): the store then indexes it under that
//!   user, for that expiry, and runs the script again. A touch that moves a tied session's
//!   expiry stretches the set's life in the same way, after it (and if that fails, moves the
//!   expiry back and fails the touch). So a live session is never missing from the set: a
//!   crash between the two steps leaves at worst a member whose session was never written;
//! - a destroy removes the member after the session is gone; a crash between the two leaves a
//!   stale member. A session that expires, or that an update unties or ties to another user,
//!   leaves its member behind too.
//!
//! [`user_sessions`](SessionStore::user_sessions) reads the set, then the fields of a summary
//! of every member's hash (`c`, `e`, `.__user`, `.__cust_dur`, `.__login`: an `HMGET` each, in
//! one pipeline that the client routes per node on a Cluster), never the data, and keeps the
//! live sessions still tied to that user. Then one script on the
//! set removes the other members, each only if it was last indexed more than a minute ago
//! ([`STALE_AFTER`]) by the time the script runs: a younger one may belong to a write that has
//! indexed its session and not yet written it, and a write that indexes a member while the
//! listing runs gives it a new score, so it stays. Stale members thus pile up only between
//! listings, and the set expires with the last of its sessions. A returning visitor's read
//! pays nothing for the index; a write of a tied session (a login, an update of a logged-in
//! session), a touch of one and a logout each pay one more round trip. Removing a member
//! after a destroy, and pruning after a listing, are best effort: if Redis fails them, the
//! destroy or the listing still stands, and the member is only stale.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use fred::bytes::Bytes;
use fred::clients::Client;
use fred::error::{Error as RedisError, ErrorKind};
use fred::interfaces::{ClientLike, HashesInterface, SortedSetsInterface};
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::scripts::Script;
use fred::types::{Builder, Value as RedisValue};
use serde_json::{Map, Value};

use crate::lifetime::MAX_DURATION;
use crate::store::{
    Changes, DURATION_KEY, LOGIN_KEY, Record, RecordSummary, SessionStore, StoreError, StoreFuture,
    StoreKey, Touched, USER_KEY, WriteMode, from_ms, to_ms, user_of,
};

pub use fred;

#[cfg(feature = "redis-tls")]
mod tls;

/// The key prefix used unless [`RedisStore::with_key_prefix`] sets another.
pub const DEFAULT_KEY_PREFIX: &str = "session:";

/// The query parameter of a `rediss` URL that names a CA file (PEM) to trust instead of the
/// platform's roots.
const TLS_CA_FILE: &str = "tls_ca_file";

/// The hash field of the creation time.
const CREATED: &str = "c";
/// The hash field of the expiry.
const EXPIRES: &str = "e";
/// What precedes each data key in its field's name, so data keys never meet `c` and `e`.
const DATA: &str = ".";
/// What follows the key prefix in the name of a user's set of sessions. A session's key is
/// base64url, which has no `:`, so the two never meet.
const USER_SET: &str = "user:";

/// How long a member of a user's set that names no live session of that user is kept since
/// it was last indexed: longer than a write takes between indexing its session and writing
/// it (a write held up longer than this, possible only with `store_timeout(None)`, could see
/// a listing remove its member; its next write or touch adds it again).
pub const STALE_AFTER: Duration = Duration::from_secs(60);
const STALE_AFTER_MS: u64 = STALE_AFTER.as_secs() * 1000;

/// How many times a write runs [`WRITE`] at most: once, and again each time it finds the
/// record tied to a user whose set must first be stretched (another request changed the
/// record's user or its own duration meanwhile, which is rare, so this is never reached but
/// under a storm of such changes).
const WRITE_ATTEMPTS: usize = 4;

/// Insert, update (replace or patch) a session hash; see the argument list at its top.
///
/// An update's expiry follows the fields as they stand after the update
/// ([`Record::expiry_after`]): `min(now + (own duration or the engine's), (last login or
/// creation) + max_lifetime)`, to the millisecond, as `crate::lifetime::expiry` computes it.
/// The store computes it from the request's view of the record; the script takes it as it is
/// when the stored creation, own duration and login that the update leaves are those the
/// request saw (nearly always), and computes it again from them when another request changed
/// them meanwhile. It writes nothing when the record is then tied to a user whose set was not
/// stretched to that expiry beforehand: it answers that user and the expiry, and
/// [`RedisStore::write`] stretches the set and runs it again. So a live session never
/// outlives its user's set.
static WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
-- KEYS[1]: the session's hash. ARGV:
--  [1] mode: 'insert', 'replace' or 'patch';
--  [2] the expiry (ms): an insert's, an update's without a rule, else the one the rule gives
--      the request's view of the record;
--  [3] the creation (ms) of the request's view (an update keeps the stored one);
--  [4], [5], [6]: what the write leaves in '.__cust_dur', '.__login' and '.__user': 's' what
--      is stored, 'n' nothing, '=' followed by the value (JSON);
--  [7], [8]: '.__cust_dur' and '.__login' in the request's view (JSON, '' for none);
--  [9] the rule, '' for none: its now (ms), now + the engine's duration (ms, to the
--      millisecond), the longest duration (ms) and the max lifetime (ms, absent for none),
--      separated by spaces (one argument, not four: each argument costs every call);
--  [10] the expiry (ms) up to which the set of the user [11] (its '.__user' field, '' for
--      none) was stretched;
--  [12] the number n of fields to delete, those n fields, then the fields to set, each
--      followed by its value.
-- Returns -1 when the hash exists for an insert or not for an update, the expiry (ms) once
-- written, {expiry, user field} when nothing was written because the set of that user must
-- first be stretched to that expiry. (A number costs less to answer than a table.)
local key = KEYS[1]
local mode = ARGV[1]
local stored = {}
if mode == 'insert' then
  if redis.call('EXISTS', key) == 1 then
    return -1
  end
else
  stored = redis.call('HMGET', key, 'c', '.__cust_dur', '.__login', '.__user')
  if not stored[1] then
    return -1
  end
end
local created = stored[1] or ARGV[3]
local at = ARGV[2]
if ARGV[9] ~= '' and (created ~= ARGV[3]
    or (ARGV[4] == 's' and (stored[2] or '') ~= ARGV[7])
    or (ARGV[5] == 's' and (stored[3] or '') ~= ARGV[8])) then
  -- Another request changed what the expiry follows: compute it from the record as it
  -- stands. A JSON integer from 0 to 2^64 - 1 (what a u64 holds) counts, as a number.
  local function whole(i)
    local json = ARGV[3 + i]
    if json == 's' then
      json = stored[1 + i]
    elseif json == 'n' then
      return nil
    else
      json = string.sub(json, 2)
    end
    if not json or not string.find(json, '^%d+$') then
      return nil
    end
    if #json > 20 or (#json == 20 and json > '18446744073709551615') then
      return nil
    end
    return tonumber(json)
  end
  local now, idle, longest, max = string.match(ARGV[9], '^(%d+) (%d+) (%d+) ?(%d*)$')
  local expires = tonumber(idle)
  local own = whole(1)
  if own then
    expires = tonumber(now) + math.min(own, tonumber(longest))
  end
  if max ~= '' then
    local anchor = whole(2) or tonumber(created) or tonumber(ARGV[3])
    expires = math.min(expires, anchor + tonumber(max))
  end
  at = string.format('%.0f', expires)
end
-- A JSON string is the only value that ties the session to a user.
local user = ARGV[6]
if user == 's' then
  user = stored[4]
elseif user == 'n' then
  user = false
else
  user = string.sub(user, 2)
end
if user and string.byte(user, 1) == 34
    and (user ~= ARGV[11] or tonumber(at) > tonumber(ARGV[10])) then
  return {tonumber(at), user}
end
if mode == 'replace' then
  redis.call('DEL', key)
end
local function chunked(command, first, last)
  for i = first, last, 1000 do
    redis.call(command, key, unpack(ARGV, i, math.min(i + 999, last)))
  end
end
local deleted = tonumber(ARGV[12])
chunked('HDEL', 13, 12 + deleted)
-- The times go in one HSET with the first 499 fields set (each call costs), the rest after.
local first = 13 + deleted
local last = math.min(first + 997, #ARGV)
if mode == 'patch' then
  redis.call('HSET', key, 'e', at, unpack(ARGV, first, last))
else
  redis.call('HSET', key, 'e', at, 'c', created, unpack(ARGV, first, last))
end
chunked('HSET', last + 1, #ARGV)
redis.call('PEXPIREAT', key, at)
return tonumber(at)
"#,
    )
});

/// Move the expiry of a live session hash, if it still has the one its request read.
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r"
-- KEYS[1]: the session's hash. ARGV[1]: the expiry the request read, ARGV[2]: the new one
-- (ms). Returns {0} when the hash is gone, {2} when its expiry is another, {1, its user field
-- or ''} when it moved.
local expires = redis.call('HGET', KEYS[1], 'e')
if not expires then
  return {0}
end
if expires ~= ARGV[1] then
  return {2}
end
redis.call('HSET', KEYS[1], 'e', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return {1, redis.call('HGET', KEYS[1], '.__user') or ''}
",
    )
});

/// Remove a session hash; say whether it was there and which user it was tied to.
static DESTROY: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r"
-- KEYS[1]: the session's hash. Returns {1, its user field or ''} when it was removed, {0}
-- when there was none.
local user = redis.call('HGET', KEYS[1], '.__user') or ''
if redis.call('DEL', KEYS[1]) == 0 then
  return {0}
end
return {1, user}
",
    )
});

/// Add a session to its user's set and keep the set alive at least as long as it asks.
static INDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r"
-- KEYS[1]: the user's sorted set. ARGV[1]: the session's key, ARGV[2]: how long the set must
-- live from now (ms), at least. The member's score is the server's clock (ms), so that PRUNE
-- compares times of one clock. A set's life is only ever stretched here, never cut.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
",
    )
});

/// Remove from a user's set the members that a listing found naming no live session of that
/// user, unless they were indexed again meanwhile or recently.
static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r"
-- KEYS[1]: the user's sorted set. ARGV[1]: how long ago (ms) a member must have been indexed
-- last to go; ARGV[2..]: the members. A member indexed since the listing read the set has a
-- new score and stays: an INDEX racing the listing always wins. Returns how many went.
local time = redis.call('TIME')
local before = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) - tonumber(ARGV[1])
local removed = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) < before then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
",
    )
});

/// A [`SessionStore`] in Redis or a Redis Cluster. See the [module docs](self).
#[derive(Clone)]
pub struct RedisStore {
    client: Client,
    prefix: Arc<str>,
}

impl RedisStore {
    /// Connects to `url` and waits for the first connection.
    ///
    /// | URL | connects to |
    /// | --- | --- |
    /// | `redis://[user:password@]host:port[/db]` | one server |
    /// | `redis-cluster://host:port?node=host:port&node=…` | a Cluster, found from any of the nodes named |
    /// | `redis-sentinel://host:port[/db]?sentinelServiceName=NAME&node=host:port…` | the primary that the Sentinels named (`host:port` and each `node`) call `NAME`, followed when they fail over to another |
    /// | `rediss://…`, `rediss-cluster://…`, `rediss-sentinel://…` | the same over TLS (feature `redis-tls`) |
    ///
    /// Over TLS the server's certificate must be valid for the host in the URL (or, behind
    /// Sentinel, the address the Sentinels give) and signed by one of the platform's root
    /// certificates (read where OpenSSL keeps them; `SSL_CERT_FILE` or `SSL_CERT_DIR` point
    /// elsewhere), or, with `?tls_ca_file=/path/ca.pem` in the URL, by a certificate in that
    /// PEM file, which then replaces the platform's roots: for a private CA, as self-hosted
    /// Redis servers and some managed ones use. TLS is rustls's, on ring; TLS 1.2 and 1.3.
    ///
    /// The client reconnects by itself after a lost connection (100 ms, doubling up to 2 s,
    /// for ever), gives up on a connection attempt (TLS handshake included) after 2 s and on
    /// a command after 3 s; meanwhile hooks fail with [`StoreError::Unavailable`] (answered
    /// 503), and they work again once the server is back. For other settings (client
    /// certificates, replicas, another TLS setup), build a [`fred`] client and use
    /// [`RedisStore::new`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] for a malformed URL or option, a TLS URL in a build without
    /// the feature `redis-tls`, a CA file that cannot be read, or a server whose certificate
    /// does not verify (the source is then a [`ConnectError`] that says which and why);
    /// [`StoreError::Unavailable`] when the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let url = ConnectUrl::parse(url).map_err(StoreError::backend)?;
        #[cfg_attr(not(feature = "redis-tls"), allow(unused_mut))]
        let mut config = Config::from_url(&url.fred).map_err(error)?;
        #[cfg(feature = "redis-tls")]
        let tls = match url.tls {
            Some(roots) => {
                let tls = tls::Tls::new(roots).map_err(StoreError::backend)?;
                config.tls = Some(tls.config());
                Some(tls)
            }
            None => None,
        };
        let client = Builder::from_config(config)
            .with_connection_config(|connection| {
                connection.connection_timeout = Duration::from_secs(2);
            })
            .with_performance_config(|performance| {
                performance.default_command_timeout = Duration::from_secs(3);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2000, 2))
            .build()
            .map_err(error)?;
        if let Err(failure) = client.init().await {
            #[cfg(feature = "redis-tls")]
            if let Some(tls) = &tls {
                return Err(tls.connect_error(failure));
            }
            return Err(error(failure));
        }
        Ok(Self::new(client))
    }

    /// A store on a [`fred`] client that is already initialized (`init()` was called).
    pub fn new(client: Client) -> Self {
        Self {
            client,
            prefix: DEFAULT_KEY_PREFIX.into(),
        }
    }

    /// Puts `prefix` (default `session:`) before every key, so that several apps can share
    /// one Redis. The user index lives under `prefix + "user:"`: give no other app a prefix
    /// that begins with that.
    #[must_use]
    pub fn with_key_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The client, for example to close it with `quit()`.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The key prefix.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    fn redis_key(&self, key: &StoreKey) -> String {
        let key = key.as_str();
        let mut redis_key = String::with_capacity(self.prefix.len() + key.len());
        redis_key.push_str(&self.prefix);
        redis_key.push_str(key);
        redis_key
    }

    /// The name of `user`'s sorted set of sessions.
    fn user_set(&self, user: &str) -> String {
        let mut set = String::with_capacity(self.prefix.len() + USER_SET.len() + user.len());
        set.push_str(&self.prefix);
        set.push_str(USER_SET);
        set.push_str(user);
        set
    }
}

/// Adds `member` to the sorted set `set` and keeps the set alive for twice the life left to a
/// session that expires at `expires_at`: a touch whose stretch of the set is lost (a crash
/// right after it) still leaves the set outliving the session it moved.
async fn index(
    client: &Client,
    set: String,
    member: &str,
    expires_at: SystemTime,
) -> Result<(), StoreError> {
    let life = to_ms(expires_at)
        .saturating_sub(to_ms(SystemTime::now()))
        .saturating_mul(2)
        .max(1);
    let args = vec![member.to_owned(), life.to_string()];
    let _: i64 = INDEX
        .evalsha_with_reload(client, set, args)
        .await
        .map_err(error)?;
    Ok(())
}

/// The user that a script found in a session's `.__user` field, when the reply has one: the
/// second item of `{code, field}`, `''` for none. A field that is not a JSON string ties the
/// session to no one, as [`user_of`] says.
fn reply(reply: &[RedisValue]) -> (i64, Option<String>) {
    let code = reply.first().and_then(RedisValue::as_i64).unwrap_or(0);
    (code, user_named(reply.get(1)))
}

/// The user that a session's `.__user` field names, when it is a JSON string.
fn user_named(field: Option<&RedisValue>) -> Option<String> {
    field
        .and_then(RedisValue::as_bytes)
        .and_then(|field| serde_json::from_slice::<String>(field).ok())
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Why [`RedisStore::connect`] refused a URL or could not verify a server: the source of the
/// [`StoreError::Backend`] it returns then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// A TLS URL (`rediss://`, the scheme given) in a build without the feature `redis-tls`.
    #[error("a `{0}://` URL uses TLS, which needs the cargo feature `redis-tls`")]
    TlsNotEnabled(String),
    /// `tls_ca_file` in a URL without TLS.
    #[error(
        "`tls_ca_file` is for TLS URLs only (`rediss://`, `rediss-cluster://`, `rediss-sentinel://`)"
    )]
    CaFileWithoutTls,
    /// `tls_ca_file` more than once in a URL.
    #[error("`tls_ca_file` is given more than once")]
    CaFileRepeated,
    /// The CA file cannot be read.
    #[error("cannot read the CA file {}", .path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds a PEM section that is not a valid certificate.
    #[error("the CA file {} holds an invalid certificate", .path.display())]
    CaFileInvalid {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The CA file holds no certificate (`-----BEGIN CERTIFICATE-----`).
    #[error("the CA file {} holds no PEM certificate", .path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The platform has no root certificates, and the URL names no CA file.
    #[error(
        "found no root certificates on this system: install them (Debian's ca-certificates), \
         point SSL_CERT_FILE at a bundle, or name a CA with `tls_ca_file`"
    )]
    NoPlatformRoots,
    /// The TLS handshake failed because the server's certificate did not verify: signed by a
    /// CA not trusted, issued for another host, expired.
    #[error(
        "the TLS handshake failed: certificate verification failed against {}",
        trusted(.ca_file.as_ref())
    )]
    CertificateRejected {
        /// The CA file trusted, or `None` for the platform's roots.
        ca_file: Option<PathBuf>,
        /// Why the certificate was refused.
        source: Box<dyn StdError + Send + Sync>,
    },
    /// TLS could not be set up.
    #[error("cannot set up TLS")]
    Tls(#[source] Box<dyn StdError + Send + Sync>),
}

/// What a connection trusts, for [`ConnectError::CertificateRejected`].
fn trusted(ca_file: Option<&PathBuf>) -> String {
    match ca_file {
        Some(path) => format!("the CA file {}", path.display()),
        None => "the platform's root certificates".to_owned(),
    }
}

/// A URL for [`RedisStore::connect`], split into what fred parses and what is added here.
#[derive(Debug)]
struct ConnectUrl {
    /// The URL without the parameters fred does not know.
    fred: String,
    /// For a TLS URL, what it trusts.
    #[cfg(feature = "redis-tls")]
    tls: Option<tls::Roots>,
}

impl ConnectUrl {
    fn parse(url: &str) -> Result<Self, ConnectError> {
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        let lower = scheme.to_ascii_lowercase();
        let tls = lower.starts_with("rediss") || lower.starts_with("valkeys");
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut ca_file = None;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match form_urlencoded::parse(pair.as_bytes()).next() {
                Some((name, value)) if name == TLS_CA_FILE => {
                    if ca_file.replace(PathBuf::from(&*value)).is_some() {
                        return Err(ConnectError::CaFileRepeated);
                    }
                }
                _ => kept.push(pair),
            }
        }
        if ca_file.is_some() && !tls {
            return Err(ConnectError::CaFileWithoutTls);
        }
        #[cfg(not(feature = "redis-tls"))]
        if tls {
            return Err(ConnectError::TlsNotEnabled(scheme.to_owned()));
        }
        let fred = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok(Self {
            fred,
            #[cfg(feature = "redis-tls")]
            tls: tls.then(|| ca_file.map_or(tls::Roots::Platform, tls::Roots::CaFile)),
        })
    }
}

/// Maps a Redis error: lost connections, time-outs and a Cluster that is re-sharding or down
/// are [`StoreError::Unavailable`] (the request may succeed later); the rest is
/// [`StoreError::Backend`]. The Redis error is kept as the source either way.
fn error(error: RedisError) -> StoreError {
    let unavailable = matches!(
        error.kind(),
        ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Backpressure
            | ErrorKind::Routing
            | ErrorKind::Cluster
    ) || [
        "CLUSTERDOWN",
        "TRYAGAIN",
        "LOADING",
        "MASTERDOWN",
        "BUSY",
        "READONLY",
    ]
    .iter()
    .any(|prefix| error.details().starts_with(prefix));
    if unavailable {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Backend(Box::new(error))
    }
}

fn field(key: &str) -> String {
    let mut field = String::with_capacity(key.len() + 1);
    field.push_str(DATA);
    field.push_str(key);
    field
}

fn json(value: &Value) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(StoreError::backend)
}

/// The data keys whose fields [`WRITE`] reads to compute an update's expiry and to find the
/// user it is tied to, in the order of its arguments 4 to 6.
const RULE_KEYS: [&str; 3] = [DURATION_KEY, LOGIN_KEY, USER_KEY];

/// Where the arguments of [`WRITE`] say up to when the set of which user was stretched.
const INDEXED_UNTIL: usize = 9;
const INDEXED_USER: usize = 10;
/// Where the arguments of [`WRITE`] give how many fields it deletes; the fields deleted, then
/// each field set and its value, follow.
pub(crate) const DELETED_COUNT: usize = 11;

/// What [`WRITE`] is told of a field of [`RULE_KEYS`] that the write leaves as it is stored.
const STORED: &str = "s";
/// What [`WRITE`] is told of a field of [`RULE_KEYS`] that the write leaves absent.
const NONE: &str = "n";

/// The arguments of [`WRITE`], and the expiry the write expects to store; `tied` is the
/// `.__user` field (JSON) of the user whose set is stretched to that expiry before the write.
pub(crate) fn write_args<'a>(
    record: &'a Record,
    changes: &Changes,
    mode: WriteMode,
    tied: Option<&str>,
) -> Result<(Vec<RedisValue>, SystemTime), StoreError> {
    // An insert's expiry is its own: it follows no rule.
    let rule = record.rule.filter(|_| mode == WriteMode::Update);
    let mode = match (mode, changes.is_replace()) {
        (WriteMode::Insert, _) => "insert",
        (WriteMode::Update, true) => "replace",
        (WriteMode::Update, false) => "patch",
    };
    // What the write leaves in each field of RULE_KEYS: `None` as stored, unless it sets
    // (`Some(Some(value))`) or deletes (`Some(None)`) it.
    let mut after: [Option<Option<&Value>>; 3] = [None; 3];
    let mut leaves = |key: &str, value: Option<&'a Value>| {
        if let Some(i) = RULE_KEYS.iter().position(|rule_key| *rule_key == key) {
            after[i] = Some(value);
        }
    };
    let mut deleted = Vec::new();
    let mut set = Vec::new();
    if mode == "patch" {
        for key in changes.deleted_keys() {
            leaves(key, None);
            deleted.push(field(key).into());
        }
        for key in changes.set_keys() {
            let value = record.data.get(key);
            leaves(key, value);
            match value {
                Some(value) => set.extend([field(key).into(), json(value)?.into()]),
                None => deleted.push(field(key).into()),
            }
        }
    } else {
        for key in RULE_KEYS {
            leaves(key, record.data.get(key));
        }
        for (key, value) in &record.data {
            set.extend([field(key).into(), json(value)?.into()]);
        }
    }
    // The expiry the request expects: the rule applied to its own view of the record,
    // with what this write leaves in the fields it follows. The script keeps it when the
    // stored fields are those the request saw, and computes it again when they are not.
    let expires = match rule {
        Some(rule) => {
            let mut follows = Map::new();
            for (i, key) in [DURATION_KEY, LOGIN_KEY].into_iter().enumerate() {
                if let Some(value) = after[i].unwrap_or_else(|| record.data.get(key)) {
                    follows.insert(key.to_owned(), value.clone());
                }
            }
            rule.expiry(&follows, record.created_at)
        }
        None => record.expires_at,
    };
    let mut args: Vec<RedisValue> = Vec::with_capacity(12 + deleted.len() + set.len());
    args.push(mode.into());
    args.push(to_ms(expires).to_string().into());
    args.push(to_ms(record.created_at).to_string().into());
    for left in after {
        args.push(match left {
            None => STORED.into(),
            Some(None) => NONE.into(),
            Some(Some(value)) => format!("={}", json(value)?).into(),
        });
    }
    // The request's view of the fields the expiry follows, which the script compares with
    // those stored that the write leaves.
    for key in [DURATION_KEY, LOGIN_KEY] {
        let seen = record.data.get(key).map(json).transpose()?;
        args.push(seen.unwrap_or_default().into());
    }
    args.push(match rule {
        Some(rule) => {
            let idle = crate::lifetime::expiry(rule.now, rule.now, rule.duration, None);
            let (now, idle, longest) = (to_ms(rule.now), to_ms(idle), ms(MAX_DURATION));
            match rule.max_lifetime {
                Some(max) => format!("{now} {idle} {longest} {}", ms(max.min(MAX_DURATION))),
                None => format!("{now} {idle} {longest}"),
            }
            .into()
        }
        None => "".into(),
    });
    match tied {
        Some(user) => args.extend([to_ms(expires).to_string().into(), user.into()]),
        None => args.extend(["0", ""].map(RedisValue::from)),
    }
    debug_assert_eq!(args.len(), DELETED_COUNT);
    args.push(deleted.len().to_string().into());
    args.extend(deleted);
    args.extend(set);
    Ok((args, expires))
}

/// Whole milliseconds in `duration`.
fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The fields of a session hash that [`RecordSummary`] needs: the times, then the fields of
/// the data keys [`USER_KEY`], [`DURATION_KEY`] and [`LOGIN_KEY`].
const SUMMARY_FIELDS: [&str; 5] = [CREATED, EXPIRES, ".__user", ".__cust_dur", ".__login"];

/// The summary of a live session hash from its [`SUMMARY_FIELDS`] (as HMGET answers them);
/// `None` for no such hash, an expired one or one tied to no user. The data keys are read
/// as [`RecordSummary::of`] reads them in a whole record.
fn summary_from(
    fields: Vec<Option<Bytes>>,
    now_ms: u64,
) -> Result<Option<RecordSummary>, StoreError> {
    let mut fields = fields.into_iter();
    let (Some(Some(created)), Some(Some(expires))) = (fields.next(), fields.next()) else {
        return Ok(None);
    };
    let mut hash = HashMap::from([
        (Bytes::from(CREATED), created),
        (Bytes::from(EXPIRES), expires),
    ]);
    for (name, value) in SUMMARY_FIELDS[2..].iter().zip(fields) {
        if let Some(value) = value {
            hash.insert(Bytes::from(*name), value);
        }
    }
    let record = record_from(hash, now_ms)?;
    Ok(record.as_ref().and_then(RecordSummary::of))
}

/// A record from the fields of its hash; `None` for an empty hash (no such key).
///
/// The fields are read as bytes: a value that is not text, or not JSON, makes the record
/// undecodable (absent for the request), never a failure of every request until it expires.
pub(crate) fn record_from(
    fields: HashMap<Bytes, Bytes>,
    now_ms: u64,
) -> Result<Option<Record>, StoreError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let time = |name: &str| {
        fields
            .get(name.as_bytes())
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(|value| value.parse::<u64>().ok())
            .ok_or_else(|| {
                StoreError::undecodable(format!("session hash has no valid `{name}` field"))
            })
    };
    let created = time(CREATED)?;
    let expires = time(EXPIRES)?;
    if expires <= now_ms {
        return Ok(None);
    }
    let mut data = Map::new();
    for (name, value) in &fields {
        let Some(key) = name.strip_prefix(DATA.as_bytes()) else {
            continue;
        };
        let key = std::str::from_utf8(key)
            .map_err(|_| StoreError::undecodable("a session hash field is not UTF-8"))?;
        let value: Value = serde_json::from_slice(value)
            .map_err(|error| StoreError::undecodable(crate::error::DataError::new(&error)))?;
        data.insert(key.to_owned(), value);
    }
    Ok(Some(Record::new(
        data,
        from_ms(created)?,
        from_ms(expires)?,
    )))
}

impl SessionStore for RedisStore {
    fn read(&self, key: &StoreKey) -> StoreFuture<Option<Record>> {
        let (client, key) = (self.client.clone(), self.redis_key(key));
        StoreFuture::boxed(async move {
            let fields: HashMap<Bytes, Bytes> = client.hgetall(key).await.map_err(error)?;
            record_from(fields, to_ms(SystemTime::now()))
        })
    }

    fn write(
        &self,
        key: &StoreKey,
        record: &Record,
        changes: &Changes,
        mode: WriteMode,
    ) -> StoreFuture<SystemTime> {
        // The user the request sees the record tied to: its set is stretched before the
        // write, so that a live session is never missing from it.
        let tied = user_of(&record.data);
        let field = match tied.map(serde_json::to_string).transpose() {
            Ok(field) => field,
            Err(failed) => return StoreFuture::ready(Err(StoreError::backend(failed))),
        };
        let (args, until) = match write_args(record, changes, mode, field.as_deref()) {
            Ok(written) => written,
            Err(error) => return StoreFuture::ready(Err(error)),
        };
        let set = tied.map(|user| self.user_set(user));
        let (store, member) = (self.clone(), key.clone());
        let key = self.redis_key(&member);
        StoreFuture::boxed(async move {
            if let Some(set) = set {
                index(&store.client, set, member.as_str(), until).await?;
            }
            let mut args = args;
            for _ in 0..WRITE_ATTEMPTS {
                // Kept for another attempt: a clone shares each argument's bytes.
                let written: RedisValue = WRITE
                    .evalsha_with_reload(&store.client, key.as_str(), args.clone())
                    .await
                    .map_err(error)?;
                match written {
                    RedisValue::Integer(-1) if mode == WriteMode::Insert => {
                        return Err(StoreError::IdTaken);
                    }
                    RedisValue::Integer(-1) => return Err(StoreError::Gone),
                    RedisValue::Integer(expires) => {
                        return u64::try_from(expires)
                            .map_err(StoreError::backend)
                            .and_then(from_ms);
                    }
                    RedisValue::Array(reply) => {
                        // Tied to a user whose set does not yet outlive the expiry the
                        // record calls for (another request tied it to that user, or gave
                        // it a longer duration): stretch that set, then write again.
                        let expires = reply.first().and_then(RedisValue::as_u64);
                        let field = reply.get(1).cloned().unwrap_or(RedisValue::Null);
                        let (Some(expires), Some(user)) = (expires, user_named(Some(&field)))
                        else {
                            return Err(StoreError::undecodable(
                                "the user field of a session hash is not a JSON string",
                            ));
                        };
                        let until = from_ms(expires)?;
                        let set = store.user_set(&user);
                        index(&store.client, set, member.as_str(), until).await?;
                        args[INDEXED_UNTIL] = to_ms(until).to_string().into();
                        args[INDEXED_USER] = field;
                    }
                    written => {
                        return Err(StoreError::backend(format!(
                            "unexpected answer of the write script: {written:?}"
                        )));
                    }
                }
            }
            Err(StoreError::unavailable(format!(
                "the user of a session changed under {WRITE_ATTEMPTS} writes in a row"
            )))
        })
    }

    fn touch(&self, key: &StoreKey, from: SystemTime, to: SystemTime) -> StoreFuture<Touched> {
        // A key's clone copies its digest: no allocation.
        let (store, member) = (self.clone(), key.clone());
        let key = self.redis_key(key);
        let args = vec![to_ms(from).to_string(), to_ms(to).to_string()];
        StoreFuture::boxed(async move {
            let touched: Vec<RedisValue> = TOUCH
                .evalsha_with_reload(&store.client, key, args)
                .await
                .map_err(error)?;
            match reply(&touched) {
                (0, _) => Err(StoreError::Gone),
                (2, _) => Ok(Touched::Superseded),
                (_, user) => {
                    let Some(user) = user else {
                        return Ok(Touched::Moved);
                    };
                    let set = store.user_set(&user);
                    if let Err(failed) = index(&store.client, set, member.as_str(), to).await {
                        // The set may not outlive the moved expiry: move it back (a
                        // compare-and-set, so a newer write stands), and fail the touch.
                        let back = vec![to_ms(to).to_string(), to_ms(from).to_string()];
                        let key = store.redis_key(&member);
                        let _: Result<Vec<RedisValue>, _> =
                            TOUCH.evalsha_with_reload(&store.client, key, back).await;
                        return Err(failed);
                    }
                    Ok(Touched::Moved)
                }
            }
        })
    }

    fn destroy(&self, key: &StoreKey) -> StoreFuture<bool> {
        let (store, member) = (self.clone(), key.clone());
        let key = self.redis_key(key);
        StoreFuture::boxed(async move {
            let destroyed: Vec<RedisValue> = DESTROY
                .evalsha_with_reload(&store.client, key, ())
                .await
                .map_err(error)?;
            let (removed, user) = reply(&destroyed);
            if let Some(user) = user {
                // The session is gone: a member left behind is only stale, so a failure here
                // fails nothing.
                let removal: Result<i64, _> = store
                    .client
                    .zrem(store.user_set(&user), member.as_str())
                    .await;
                if let Err(failed) = removal {
                    tracing::debug!(error = %failed, "a destroyed session stays in its user's index");
                }
            }
            Ok(removed == 1)
        })
    }

    /// Redis expires each session hash by itself, at its expiry: there is nothing to remove.
    fn cleanup(&self) -> StoreFuture<u64> {
        StoreFuture::ready(Ok(0))
    }

    /// Reads the user's set, then the times and the fields of `__user`, `__cust_dur` and
    /// `__login` of every member's hash (an `HMGET` each, in one pipeline), never the data;
    /// and removes the members that name no live session of that user and are older than
    /// [`STALE_AFTER`].
    fn user_sessions(&self, user: &str) -> StoreFuture<Vec<(StoreKey, RecordSummary)>> {
        let (store, user) = (self.clone(), user.to_owned());
        StoreFuture::boxed(async move {
            let set = store.user_set(&user);
            let members: Vec<String> = store
                .client
                .zrange(&set, 0, -1, None, false, None, false)
                .await
                .map_err(error)?;
            if members.is_empty() {
                return Ok(Vec::new());
            }
            // Only the fields of a summary, never the data: one HMGET per member, in one
            // pipeline (fred sends each command to the node of its key on a Cluster).
            let pipeline = store.client.pipeline();
            for member in &members {
                let mut key = String::with_capacity(store.prefix.len() + member.len());
                key.push_str(&store.prefix);
                key.push_str(member);
                let () = pipeline
                    .hmget(key, SUMMARY_FIELDS.to_vec())
                    .await
                    .map_err(error)?;
            }
            let hashes = pipeline.try_all::<Vec<Option<Bytes>>>().await;
            let now = to_ms(SystemTime::now());
            let (mut live, mut stale) = (Vec::new(), Vec::new());
            for (member, fields) in members.into_iter().zip(hashes) {
                // An undecodable summary counts as absent (R12).
                let summary = summary_from(fields.map_err(error)?, now).unwrap_or(None);
                match summary {
                    Some(summary) if summary.user == user => {
                        live.push((StoreKey::from(member), summary));
                    }
                    _ => stale.push(member),
                }
            }
            if !stale.is_empty() {
                let mut args = Vec::with_capacity(1 + stale.len());
                args.push(STALE_AFTER_MS.to_string());
                args.extend(stale);
                // The listing stands without it: stale members are only skipped again.
                let pruned: Result<i64, _> =
                    PRUNE.evalsha_with_reload(&store.client, set, args).await;
                if let Err(failed) = pruned {
                    tracing::debug!(error = %failed, "stale members stay in a user's index");
                }
            }
            Ok(live)
        })
    }

    fn indexes_users(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ExpiryRule;
    use serde_json::json;

    #[test]
    fn the_scripts_and_the_listing_read_the_fields_of_the_reserved_keys() {
        assert_eq!(field(USER_KEY), ".__user");
        let reserved = [USER_KEY, DURATION_KEY, LOGIN_KEY].map(field);
        assert_eq!(SUMMARY_FIELDS[2..], reserved);
        assert_eq!(RULE_KEYS.map(field), [".__cust_dur", ".__login", ".__user"]);
    }

    #[test]
    fn a_reply_names_the_user_of_a_json_string_field_only() {
        let named = [RedisValue::Integer(1), RedisValue::from("\"ann\"")];
        assert_eq!(reply(&named), (1, Some("ann".to_owned())));
        for field in ["", "42", "not json"] {
            assert_eq!(
                reply(&[RedisValue::Integer(1), RedisValue::from(field)]),
                (1, None)
            );
        }
        assert_eq!(reply(&[RedisValue::Integer(0)]), (0, None));
    }

    fn record() -> Record {
        let data = json!({"a": 1, "b": {"x": [true]}})
            .as_object()
            .unwrap()
            .clone();
        Record::new(data, from_ms(1_000).unwrap(), from_ms(2_000).unwrap())
    }

    fn strings(args: &[RedisValue]) -> Vec<String> {
        args.iter()
            .map(|value| value.as_string().unwrap_or_default())
            .collect()
    }

    /// `MAX_DURATION` in milliseconds, as the script gets it.
    const LONGEST: &str = "3153600000000";

    #[test]
    fn an_insert_sends_every_key_and_its_own_expiry() {
        let rule = ExpiryRule::new(from_ms(1_500).unwrap(), Duration::from_secs(1), None);
        let record = record().with_rule(rule);
        let changes = Changes::replace_all();
        let (args, expires) = write_args(&record, &changes, WriteMode::Insert, None).unwrap();
        assert_eq!(expires, record.expires_at);
        assert_eq!(
            strings(&args),
            [
                "insert",
                "2000",
                "1000",
                "n",
                "n",
                "n",
                "",
                "",
                "",
                "0",
                "",
                "0",
                ".a",
                "1",
                ".b",
                r#"{"x":[true]}"#
            ]
        );
    }

    #[test]
    fn a_patch_sends_only_the_changed_keys() {
        let changes = Changes::new()
            .with_set("a")
            .with_deleted("z")
            .with_set("missing");
        let (args, _) = write_args(&record(), &changes, WriteMode::Update, None).unwrap();
        assert_eq!(
            strings(&args),
            [
                "patch", "2000", "1000", "s", "s", "s", "", "", "", "0", "", "2", ".z", ".missing",
                ".a", "1"
            ]
        );
    }

    /// The rule goes to the script to the millisecond, as `lifetime::expiry` rounds: now
    /// and the default expiry floored, the max lifetime in whole milliseconds; and with it
    /// what the patch leaves in the reserved keys, the request's view of them, the expiry
    /// that view calls for, and the user whose set is stretched to it.
    #[test]
    fn a_patch_sends_its_rule_its_view_and_what_it_leaves_in_the_reserved_keys() {
        let now = from_ms(1_500).unwrap() + Duration::from_micros(700);
        let rule = ExpiryRule::new(
            now,
            Duration::from_micros(100_500),
            Some(Duration::from_micros(10_900)),
        );
        let mut record = record().with_rule(rule);
        record.data.insert(DURATION_KEY.into(), json!(5));
        record.data.insert(LOGIN_KEY.into(), json!(1_495));
        let changes = Changes::new().with_set(DURATION_KEY).with_deleted(USER_KEY);
        let tied = Some(r#""ann""#);
        let (args, expires) = write_args(&record, &changes, WriteMode::Update, tied).unwrap();
        // min(1500 + 5, 1495 + 10)
        assert_eq!(expires, from_ms(1_505).unwrap());
        assert_eq!(
            strings(&args),
            [
                "patch",
                "1505",
                "1000",
                "=5",
                "s",
                "n",
                "5",
                "1495",
                &format!("1500 1601 {LONGEST} 10"),
                "1505",
                r#""ann""#,
                "1",
                ".__user",
                ".__cust_dur",
                "5"
            ]
        );
        assert_eq!(
            strings(&args[INDEXED_UNTIL..=INDEXED_USER]),
            ["1505", r#""ann""#]
        );
        let huge = ExpiryRule::new(now, Duration::MAX, Some(Duration::MAX));
        let (args, _) = write_args(
            &record.clone().with_rule(huge),
            &Changes::new(),
            WriteMode::Update,
            None,
        )
        .unwrap();
        let longest = LONGEST.parse::<u64>().unwrap();
        let default = (1_500 + longest).to_string();
        assert_eq!(
            strings(&args[8..9]),
            [format!("1500 {default} {LONGEST} {LONGEST}")]
        );
        let no_max = ExpiryRule::new(now, Duration::from_secs(1), None);
        let (args, _) = write_args(
            &record.with_rule(no_max),
            &Changes::new(),
            WriteMode::Update,
            None,
        )
        .unwrap();
        assert_eq!(strings(&args[8..9]), [format!("1500 2500 {LONGEST}")]);
        // What is stored is left as it is, and the view of it (5 ms, the login) expected.
        assert_eq!(strings(&args[1..2]), ["1505"]);
    }

    /// What a write leaves in a reserved key, not the request's data, sets the expected
    /// expiry: a delete of the duration whose key the data still holds.
    #[test]
    fn the_expected_expiry_follows_what_the_write_leaves() {
        let rule = ExpiryRule::new(from_ms(1_500).unwrap(), Duration::from_millis(300), None);
        let mut record = record().with_rule(rule);
        record.data.insert(DURATION_KEY.into(), json!(5));
        let changes = Changes::new().with_deleted(DURATION_KEY);
        let (args, expires) = write_args(&record, &changes, WriteMode::Update, None).unwrap();
        assert_eq!(expires, from_ms(1_800).unwrap());
        assert_eq!(
            strings(&args[1..8]),
            ["1800", "1000", "n", "s", "s", "5", ""]
        );
    }

    #[test]
    fn a_replacement_says_what_it_leaves_in_each_reserved_key() {
        let mut record = record();
        record.data.insert(USER_KEY.into(), json!("ann"));
        record.data.insert(LOGIN_KEY.into(), json!(1_200));
        let changes = Changes::replace_all();
        let (args, _) = write_args(&record, &changes, WriteMode::Update, None).unwrap();
        assert_eq!(strings(&args[..1]), ["replace"]);
        assert_eq!(
            strings(&args[3..8]),
            ["n", "=1200", r#"="ann""#, "", "1200"]
        );
    }

    #[test]
    fn a_summary_holds_the_times_and_the_reserved_keys_only() {
        let some = |value: &[u8]| Some(Bytes::copy_from_slice(value));
        let fields = vec![
            some(b"1000"),
            some(b"5000"),
            some(br#""ann""#),
            some(b"60000"),
            some(b"1500"),
        ];
        let summary = summary_from(fields.clone(), 4_999).unwrap().unwrap();
        let expected = RecordSummary::new("ann", from_ms(1_000).unwrap(), from_ms(5_000).unwrap())
            .with_duration(Some(Duration::from_secs(60)))
            .with_login(Some(from_ms(1_500).unwrap()));
        assert_eq!(summary, expected);
        assert_eq!(
            summary_from(fields.clone(), 5_000).unwrap(),
            None,
            "expired"
        );
        let mut odd = fields.clone();
        (odd[3], odd[4]) = (some(b"1.5"), some(br#""1500""#));
        let summary = summary_from(odd, 0).unwrap().unwrap();
        assert_eq!((summary.duration, summary.login_at), (None, None));
        let mut untied = fields.clone();
        untied[2] = some(b"42");
        assert_eq!(summary_from(untied, 0).unwrap(), None);
        assert_eq!(
            summary_from(vec![None; 5], 0).unwrap(),
            None,
            "no such hash"
        );
        let mut spoiled = fields;
        spoiled[3] = some(b"{\"secret");
        let error = summary_from(spoiled, 0).unwrap_err();
        assert!(matches!(error, StoreError::Undecodable(_)), "{error:?}");
    }

    #[test]
    fn a_url_without_tls_ca_file_goes_to_fred_unchanged() {
        for url in [
            "redis://u:p@127.0.0.1:6379/2",
            "redis-sentinel://127.0.0.1:26379/1?sentinelServiceName=s&node=127.0.0.1:26380",
            "redis-cluster://127.0.0.1:7001?node=127.0.0.1:7002&node=127.0.0.1:7003",
        ] {
            assert_eq!(ConnectUrl::parse(url).unwrap().fred, url);
        }
    }

    #[cfg(feature = "redis-tls")]
    #[test]
    fn tls_ca_file_is_taken_out_of_the_url_fred_parses() {
        let url = "rediss-sentinel://h:26379/1?sentinelServiceName=s\
                   &tls_ca_file=%2Ftmp%2Fmy+ca%25.pem&node=h:26380";
        let parsed = ConnectUrl::parse(url).unwrap();
        assert_eq!(
            parsed.fred,
            "rediss-sentinel://h:26379/1?sentinelServiceName=s&node=h:26380"
        );
        let ca_file = |path: &str| Some(tls::Roots::CaFile(PathBuf::from(path)));
        assert_eq!(parsed.tls, ca_file("/tmp/my ca%.pem"));
        let parsed = ConnectUrl::parse("REDISS://h:6380?tls_ca_file=/ca.pem").unwrap();
        assert_eq!(parsed.fred, "REDISS://h:6380");
        assert_eq!(parsed.tls, ca_file("/ca.pem"));
        let parsed = ConnectUrl::parse("rediss://h:6380").unwrap();
        assert_eq!(parsed.tls, Some(tls::Roots::Platform));
        assert_eq!(ConnectUrl::parse("redis://h").unwrap().tls, None);
    }

    #[test]
    fn tls_ca_file_needs_a_tls_url_and_comes_once() {
        let error = ConnectUrl::parse("redis://h?tls_ca_file=/ca.pem").unwrap_err();
        assert!(matches!(error, ConnectError::CaFileWithoutTls), "{error:?}");
        let twice = "rediss://h?tls_ca_file=/a.pem&tls_ca_file=/b.pem";
        let error = ConnectUrl::parse(twice).unwrap_err();
        assert!(matches!(error, ConnectError::CaFileRepeated), "{error:?}");
    }

    #[cfg(not(feature = "redis-tls"))]
    #[test]
    fn a_tls_url_without_the_feature_names_it() {
        for (url, scheme) in [
            ("rediss://h:6380", "rediss"),
            ("Rediss-Cluster://h:6380", "Rediss-Cluster"),
        ] {
            let error = ConnectUrl::parse(url).unwrap_err();
            assert!(matches!(&error, ConnectError::TlsNotEnabled(s) if s == scheme));
            assert!(error.to_string().contains("`redis-tls`"), "{error}");
        }
    }

    /// A hash's fields, as HGETALL gives them.
    fn hash(fields: &[(&str, &[u8])]) -> HashMap<Bytes, Bytes> {
        fields
            .iter()
            .map(|(name, value)| {
                (
                    Bytes::copy_from_slice(name.as_bytes()),
                    Bytes::copy_from_slice(value),
                )
            })
            .collect()
    }

    #[test]
    fn a_hash_becomes_a_record_until_it_expires() {
        let fields = hash(&[
            ("c", b"1000"),
            ("e", b"2000"),
            (".a", b"1"),
            (".c", b"\"data key named c\""),
        ]);
        let record = record_from(fields.clone(), 1_999).unwrap().unwrap();
        assert_eq!(record.created_at, from_ms(1_000).unwrap());
        assert_eq!(record.expires_at, from_ms(2_000).unwrap());
        assert_eq!(
            Value::Object(record.data),
            json!({"a": 1, "c": "data key named c"})
        );
        assert!(record_from(fields, 2_000).unwrap().is_none());
        assert!(record_from(HashMap::new(), 0).unwrap().is_none());
    }

    #[test]
    fn r12_a_hash_that_cannot_be_decoded_is_undecodable_not_a_panic() {
        let times: [(&str, &[u8]); 2] = [("c", b"1"), ("e", b"9")];
        for bad in [
            hash(&[(".a", b"1")]),
            hash(&[times[0], times[1], (".a", b"{\"secret")]),
            hash(&[times[0], times[1], (".a", b"\"\xff\"")]),
            hash(&[times[0], ("e", b"\xff")]),
        ] {
            let error = record_from(bad, 0).unwrap_err();
            assert!(matches!(error, StoreError::Undecodable(_)), "{error:?}");
            let source = std::error::Error::source(&error).unwrap().to_string();
            assert!(!source.contains("secret"), "{source}");
        }
    }
}
