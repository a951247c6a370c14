//! Sessions tied to users (SPEC 7.2): a session tied to the user who logged in on it, and that
//! user's sessions listed and ended in one call ("log out everywhere"), on an engine built with
//! `track_users(true)`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use super::Session;
use crate::engine::SessionEngine;
use crate::error::Error;
use crate::id::StoreKey;
use crate::store::{
    Changes, ExpiryRule, Record, RecordSummary, StoreError, StoreFuture, WriteMode, to_ms,
};

/// One of a user's sessions, as [`Session::user_sessions`] lists it: what a "your devices"
/// page shows, and never its id or its store key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserSession {
    /// Whether it is the session of the request that asked.
    pub current: bool,
    /// When it was created (kept by a roll: the login's first request).
    pub created_at: SystemTime,
    /// When it expires unless it is used again.
    pub expires_at: SystemTime,
    /// When it was last written or touched: its expiry less its idle lifetime. Requests
    /// within a touch interval of that moment leave it as it is; `None` when the absolute
    /// lifetime (`max_lifetime`) set the expiry, which hides the moment.
    pub last_active: Option<SystemTime>,
}

impl Session {
    /// Ties the session to `user`, for [`user_sessions`](Self::user_sessions) and
    /// [`end_other_sessions`](Self::end_other_sessions): call it at login, beside
    /// [`roll`](Self::roll). A session is tied to one user at most; tying it to another moves
    /// it. Saved with the session at the end of the request.
    ///
    /// # Errors
    ///
    /// [`Error::UsersNotTracked`] unless the engine was built with
    /// [`track_users(true)`](crate::SessionEngineBuilder::track_users); [`Error::NotStarted`];
    /// [`Error::DataTooLarge`].
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn login(session: session_engine::Session, user: String) -> Result<(), session_engine::Error> {
    /// session.roll().await?;
    /// session.set_user(user)?;
    /// # Ok(()) }
    /// ```
    pub fn set_user(&self, user: impl Into<String>) -> Result<&Self, Error> {
        if !self.engine().tracks_users() {
            return Err(Error::UsersNotTracked);
        }
        let limit = self.engine().max_data_bytes();
        let mut state = self.started()?;
        let at = state.started_at;
        state.data.set_user(user.into(), at, limit)?;
        state.login = true;
        Ok(self)
    }

    /// Unties the session from its user; it is no longer listed nor ended with theirs.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`].
    pub fn clear_user(&self) -> Result<&Self, Error> {
        self.started()?.data.clear_user();
        Ok(self)
    }

    /// The user the session is tied to, if any.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`].
    pub fn user(&self) -> Result<Option<String>, Error> {
        Ok(self.started()?.data.user().map(str::to_owned))
    }

    /// The live sessions of this session's user, this one marked
    /// [`current`](UserSession::current), in no particular order; none when the session is
    /// not tied to a user. One store call.
    ///
    /// # Errors
    ///
    /// [`Error::UsersNotTracked`]; [`Error::NotStarted`]; the store's error.
    pub async fn user_sessions(&self) -> Result<Vec<UserSession>, Error> {
        let (user, mine) = self.user_and_keys()?;
        let Some(user) = user else {
            return Ok(Vec::new());
        };
        let engine = self.engine();
        Ok(engine
            .records_of(&user)
            .instrument(self.span().clone())
            .await?
            .iter()
            .map(|(key, summary)| engine.listed(summary, mine.contains(key)))
            .collect())
    }

    /// Ends every other session of this session's user ("log out my other devices"): each is
    /// destroyed in the store. Returns how many live ones were ended; none when the session
    /// is not tied to a user.
    ///
    /// # Errors
    ///
    /// [`Error::UsersNotTracked`]; [`Error::NotStarted`]; the store's error (the sessions
    /// ended before it stay ended).
    pub async fn end_other_sessions(&self) -> Result<u64, Error> {
        let (user, mine) = self.user_and_keys()?;
        match user {
            Some(user) => {
                let ending = self.engine().end_sessions_of(&user, &mine);
                ending.instrument(self.span().clone()).await
            }
            None => Ok(0),
        }
    }

    /// Ends every session of this session's user, this one included ("log out
    /// everywhere"): the others are destroyed in the store, then this one as
    /// [`destroy`](Self::destroy) does (the response removes the cookie). Returns how many
    /// live ones were ended.
    ///
    /// # Errors
    ///
    /// As [`end_other_sessions`](Self::end_other_sessions), and [`destroy`](Self::destroy)'s.
    pub async fn end_all_sessions(&self) -> Result<u64, Error> {
        let others = self.end_other_sessions().await?;
        let this = self.destroy().await?;
        Ok(others + u64::from(this))
    }

    /// The user, and the store keys that are this session's: its record, and the one it
    /// rolled from in this request (still stored until the end of the request).
    fn user_and_keys(&self) -> Result<(Option<String>, Vec<StoreKey>), Error> {
        if !self.engine().tracks_users() {
            return Err(Error::UsersNotTracked);
        }
        let state = self.started()?;
        let mine = state
            .key
            .iter()
            .chain(state.rolled_from.iter())
            .cloned()
            .collect();
        Ok((state.data.user().map(str::to_owned), mine))
    }
}

impl SessionEngine {
    /// The live sessions of `user`, from outside a request (an admin page, a password reset):
    /// none is [`current`](UserSession::current). One store call.
    ///
    /// # Errors
    ///
    /// [`Error::UsersNotTracked`] unless the engine was built with
    /// [`track_users(true)`](crate::SessionEngineBuilder::track_users); the store's error.
    pub async fn user_sessions(&self, user: &str) -> Result<Vec<UserSession>, Error> {
        Ok(self
            .records_of(user)
            .await?
            .iter()
            .map(|(_, summary)| self.listed(summary, false))
            .collect())
    }

    /// Ends every session of `user`, from outside a request (after a password change or
    /// reset, or when an account is closed). Returns how many live ones were ended; a user
    /// with none is not an error.
    ///
    /// # Errors
    ///
    /// As [`user_sessions`](Self::user_sessions).
    pub async fn end_user_sessions(&self, user: &str) -> Result<u64, Error> {
        self.end_sessions_of(user, &[]).await
    }

    /// The live records tied to `user`, checked again here: tied to `user`, and not expired
    /// by the engine's clock.
    async fn records_of(&self, user: &str) -> Result<Vec<(StoreKey, RecordSummary)>, Error> {
        if !self.tracks_users() {
            return Err(Error::UsersNotTracked);
        }
        let now = self.lifetime().now();
        let found = self.gateway().user_sessions(user).await?;
        Ok(found
            .into_iter()
            .filter(|(_, summary)| {
                let anchor = summary.login_at.unwrap_or(summary.created_at);
                summary.user == user && !self.lifetime().is_expired(now, anchor, summary.expires_at)
            })
            .collect())
    }

    /// Destroys every session of `user` but those under `keep`; returns how many were live.
    ///
    /// First it marks the moment (R19): a login of `user` whose request started its session
    /// before it, and whose record lands after the listing below, is ended by the end of its
    /// own request ([`after_login`](Self::after_login)), so no session tied before the call
    /// survives it.
    async fn end_sessions_of(&self, user: &str, keep: &[StoreKey]) -> Result<u64, Error> {
        self.mark_ended(user).await?;
        let mut ended = 0;
        for (key, _) in self.records_of(user).await? {
            if !keep.contains(&key) && self.gateway().destroy(&key).await? {
                self.metrics().count(crate::observe::Event::Destroyed);
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Records in the store that `user`'s sessions were ended now: the record under
    /// [`ended_key`], whose `__ended` is the moment. An earlier moment never replaces a
    /// later one.
    async fn mark_ended(&self, user: &str) -> Result<(), Error> {
        let key = ended_key(user);
        let now = self.lifetime().now();
        let data = Map::from_iter([(ENDED_KEY.to_owned(), Value::from(to_ms(now)))]);
        let record = Record::new(data, now, now + ENDED_HORIZON).with_rule(ExpiryRule::new(
            now,
            ENDED_HORIZON,
            None,
        ));
        let gateway = self.gateway();
        let replace = Changes::replace_all();
        for _ in 0..3 {
            match gateway
                .write(&key, &record, &replace, WriteMode::Insert)
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::IdTaken) => {}
                Err(error) => return Err(error.into()),
            }
            let marked = gateway.read(&key).await?.as_ref().and_then(ended_at);
            if marked.is_some_and(|marked| marked >= now) {
                return Ok(());
            }
            match gateway
                .write(&key, &record, &replace, WriteMode::Update)
                .await
            {
                Ok(_) => return Ok(()),
                // Expired or removed meanwhile: insert again.
                Err(StoreError::Gone) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::backend("the end of a user's sessions could not be recorded").into())
    }

    /// What the end of a request does once it has written a record that a login in this
    /// request tied to `user` (logged in at `login_at`, the moment the request started the
    /// session), under `key`: whether the login stands.
    ///
    /// - A "log out everywhere" of `user` that began after `login_at` ends it (R19): the
    ///   record is destroyed and the answer is `false`. So is a login older than the moments
    ///   kept (a request that started its session more than a day ago).
    /// - The user's least recently used sessions beyond `max_sessions_per_user` are ended
    ///   (never this one); a failure there is logged, and the login stands.
    pub(crate) fn after_login(
        &self,
        user: String,
        key: StoreKey,
        login_at: SystemTime,
    ) -> StoreFuture<bool> {
        let engine = self.clone();
        StoreFuture::boxed(async move {
            let gateway = engine.gateway();
            let now = engine.lifetime().now();
            let marked = gateway.read(&ended_key(&user)).await?;
            let ended = marked.as_ref().and_then(ended_at);
            let too_old = now.duration_since(login_at).unwrap_or_default() >= ENDED_HORIZON;
            if too_old || ended.is_some_and(|ended| ended >= login_at) {
                gateway.destroy(&key).await?;
                return Ok(false);
            }
            if let Err(error) = engine.trim_sessions(&user, &key).await {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "a user's oldest sessions could not be ended; the login stands"
                );
            }
            Ok(true)
        })
    }

    /// Ends `user`'s least recently used sessions while more than `max_sessions_per_user`
    /// are live, never the one under `current`.
    async fn trim_sessions(&self, user: &str, current: &StoreKey) -> Result<(), Error> {
        let max = self.max_sessions_per_user();
        let mut sessions = self.records_of(user).await?;
        if sessions.len() <= max {
            return Ok(());
        }
        // Least recently used first: the last write or touch when it is known, else the
        // expiry, which the absolute lifetime capped.
        sessions.retain(|(key, _)| key != current);
        sessions.sort_by_key(|(_, summary)| {
            let listed = self.listed(summary, false);
            listed.last_active.unwrap_or(listed.expires_at)
        });
        let excess = sessions.len() + 1 - max;
        for (key, _) in sessions.into_iter().take(excess) {
            if self.gateway().destroy(&key).await? {
                self.metrics().count(crate::observe::Event::Destroyed);
            }
        }
        Ok(())
    }

    fn listed(&self, summary: &RecordSummary, current: bool) -> UserSession {
        let lifetime = self.lifetime();
        let duration = lifetime.duration(summary.duration);
        let anchor = summary.login_at.unwrap_or(summary.created_at);
        UserSession {
            current,
            created_at: summary.created_at,
            expires_at: summary.expires_at,
            last_active: lifetime.last_active(anchor, summary.expires_at, duration),
        }
    }
}

/// The data key of the record that says when a user's sessions were last ended.
const ENDED_KEY: &str = "__ended";

/// How long the moment a user's sessions were ended is kept: longer than any login request
/// takes; a login whose request started its session longer ago than this is refused.
const ENDED_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// The store key of the record that says when `user`'s sessions were last ended. A `.`
/// never appears in an id nor in a hashed key, so it names no session.
fn ended_key(user: &str) -> StoreKey {
    let digest = Sha256::digest(user.as_bytes());
    StoreKey::from(format!("ended.{}", URL_SAFE_NO_PAD.encode(digest)))
}

/// The moment such a record holds.
fn ended_at(record: &Record) -> Option<SystemTime> {
    let ms = record.data.get(ENDED_KEY)?.as_u64()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}
