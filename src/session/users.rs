//! Sessions tied to users (SPEC 7.2): a session tied to the user who logged in on it, and that
//! user's sessions listed and ended in one call ("log out everywhere"), on an engine built with
//! `track_users(true)`.

use std::time::SystemTime;

use super::Session;
use super::data::custom_duration_of;
use crate::engine::SessionEngine;
use crate::error::Error;
use crate::id::StoreKey;
use crate::store::{Record, user_of};

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
    /// session.start().await?;
    /// session.roll().await?;
    /// session.set_user(user)?;
    /// # Ok(()) }
    /// ```
    pub fn set_user(&self, user: impl Into<String>) -> Result<&Self, Error> {
        if !self.engine().tracks_users() {
            return Err(Error::UsersNotTracked);
        }
        let limit = self.engine().max_data_bytes();
        self.started()?.data.set_user(user.into(), limit)?;
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
            .await?
            .iter()
            .map(|(key, record)| engine.listed(record, mine.contains(key)))
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
            Some(user) => self.engine().end_sessions_of(&user, &mine).await,
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
            .map(|(_, record)| self.listed(record, false))
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
    async fn records_of(&self, user: &str) -> Result<Vec<(StoreKey, Record)>, Error> {
        if !self.tracks_users() {
            return Err(Error::UsersNotTracked);
        }
        let now = self.lifetime().now();
        let found = self.gateway().user_sessions(user).await?;
        Ok(found
            .into_iter()
            .filter(|(_, record)| {
                user_of(&record.data) == Some(user)
                    && !self
                        .lifetime()
                        .is_expired(now, record.created_at, record.expires_at)
            })
            .collect())
    }

    /// Destroys every session of `user` but those under `keep`; returns how many were live.
    async fn end_sessions_of(&self, user: &str, keep: &[StoreKey]) -> Result<u64, Error> {
        let mut ended = 0;
        for (key, _) in self.records_of(user).await? {
            if !keep.contains(&key) && self.gateway().destroy(&key).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    fn listed(&self, record: &Record, current: bool) -> UserSession {
        let lifetime = self.lifetime();
        let duration = lifetime.duration(custom_duration_of(&record.data));
        UserSession {
            current,
            created_at: record.created_at,
            expires_at: record.expires_at,
            last_active: lifetime.last_active(record.created_at, record.expires_at, duration),
        }
    }
}
