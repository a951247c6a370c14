//! The lifecycle of a session within its request: `start`, `roll`, `touch` and `destroy`, the
//! methods that call the store while the handler runs.

use super::state::{Phase, State};
use super::{Session, data};
use crate::error::Error;
use crate::id::SessionId;
use crate::observe::{Absence, Event, Marks};
use crate::store::{StoreError, Touched, login_of};

impl Session {
    /// Starts the session: reads the record of the cookie's id (or of the id chosen with
    /// `set_id`) from the store. Without a valid cookie, or when the id has no live record,
    /// the session gets a fresh id and no data; the presented id is never reused. A record
    /// the store cannot decode counts as absent (and is logged, without its data).
    /// Idempotent, and safe to call from several clones at once: the store is read at most
    /// once; only when that read fails does a waiting clone try again.
    ///
    /// # Errors
    ///
    /// The store's `read` or `id` hook failed or timed out; the session stays unstarted, so a
    /// later call tries again. The error is `IntoResponse` (an opaque 500, or 503 when the
    /// store is unavailable).
    ///
    /// The axum extractor `Session` calls it before the handler runs. A handler that takes
    /// `LazySession` instead, or a Tower service that takes the handle from the request's
    /// extensions, calls it once it knows it needs the session.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn handler(session: session_engine::LazySession, counted: bool) -> Result<String, session_engine::Error> {
    /// if !counted {
    ///     return Ok("not counted".to_owned()); // no store call, no cookie
    /// }
    /// session.start().await?;
    /// let visits = session.get::<u64>("visits")?.unwrap_or(0);
    /// Ok(visits.to_string())
    /// # }
    /// ```
    pub async fn start(&self) -> Result<&Self, Error> {
        if self.state().phase == Phase::Idle {
            let _gate = self.gate().await;
            self.start_locked().await?;
        }
        Ok(self)
    }

    /// The gate (see `Inner::gate`): taken at once when free, as it nearly always is, without
    /// the waiting future that `lock` sets up.
    async fn gate(&self) -> tokio::sync::MutexGuard<'_, ()> {
        match self.inner.gate.try_lock() {
            Ok(gate) => gate,
            Err(_) => self.inner.gate.lock().await,
        }
    }

    /// `start`, for a caller that holds the gate.
    async fn start_locked(&self) -> Result<(), Error> {
        let engine = self.engine();
        let candidate = {
            let mut state = self.state();
            if state.phase != Phase::Idle {
                return Ok(());
            }
            self.candidate(&mut state)
        };
        let absence = match candidate {
            Some(id) => {
                let key = engine.store_key(&id);
                let read = self.call(|gateway| gateway.read(&key));
                let (record, undecodable) = match read.await {
                    Ok(record) => (record, false),
                    Err(StoreError::Undecodable(_)) => {
                        // Never the source: it may quote the data.
                        tracing::warn!(
                            "a session record cannot be decoded; starting a fresh session"
                        );
                        (None, true)
                    }
                    Err(error) => return Err(error.into()),
                };
                let lifetime = engine.lifetime();
                // The engine checks expiry itself: a store may hold an expired record.
                let now = lifetime.now();
                match record {
                    Some(record)
                        if !lifetime.is_expired(
                            now,
                            login_of(&record.data).unwrap_or(record.created_at),
                            record.expires_at,
                        ) =>
                    {
                        let mut state = self.state();
                        state.phase = Phase::Started;
                        state.id = Some(id);
                        state.key = Some(key);
                        state.data = data::Data::stored(record.data);
                        state.created_at = record.created_at;
                        state.started_at = now;
                        state.expires_at = record.expires_at;
                        state.stored_expires_at = record.expires_at;
                        state.marks.set(Marks::READ);
                        return Ok(());
                    }
                    Some(_) => Some(Absence::Expired),
                    None if undecodable => Some(Absence::Undecodable),
                    None => Some(Absence::Missing),
                }
            }
            // A cookie or header that names a session but does not verify.
            None => self
                .inner
                .credentials
                .names_session(engine.cookie_name())
                .then_some(Absence::Invalid),
        };
        // No valid cookie, or no live record: a fresh id, never the presented one.
        let id = self.new_id().await?;
        let mut state = self.state();
        if let Some(absence) = absence {
            self.happened(&mut state, Marks::ABSENT, Event::Absent(absence));
        }
        self.begin(&mut state, id);
        Ok(())
    }

    /// Makes the session a new one under `id`: started, with no data, created now.
    fn begin(&self, state: &mut State, id: SessionId) {
        let lifetime = self.engine().lifetime();
        let now = lifetime.now();
        state.phase = Phase::Started;
        state.id = Some(id);
        state.marks.set(Marks::BEGUN);
        state.created_at = now;
        state.started_at = now;
        state.expires_at = lifetime.expiry(now, now, lifetime.duration(None));
    }

    /// The id `start` should read: the one set with `set_id`, else the cookie's.
    fn candidate(&self, state: &mut State) -> Option<SessionId> {
        if state.id.is_some() {
            return state.id.clone();
        }
        self.presented(state).map(|presented| presented.id.clone())
    }

    /// Rolls the session to a fresh id, keeping its data, its custom duration and its
    /// creation time: call it at every change of privilege (a login), so that an id planted
    /// or seen before is worthless. At the end of the request the new record is inserted,
    /// then the old one destroyed; if the insert fails the old one stays. If the old record
    /// was destroyed meanwhile (a logout elsewhere), the new one is removed too and no cookie
    /// is sent: a logout is never undone. Returns `true`; `false` for a session that was
    /// destroyed or found gone.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] before `start`; the store's `id` hook failed.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn login(session: session_engine::Session, user: String) -> Result<(), session_engine::Error> {
    /// session.roll().await?;
    /// session.set("user", user)?;
    /// # Ok(()) }
    /// ```
    pub async fn roll(&self) -> Result<bool, Error> {
        let check = |phase: Phase| match phase {
            Phase::Idle => Err(Error::NotStarted),
            Phase::Destroyed | Phase::Vanished => Ok(false),
            Phase::Started => Ok(true),
        };
        if !check(self.state().phase)? {
            return Ok(false);
        }
        let id = self.new_id().await?;
        let mut state = self.state();
        if !check(state.phase)? {
            return Ok(false);
        }
        // A second roll in one request keeps the first one's stored record to destroy.
        if let Some(stored) = state.key.take() {
            state.rolled_from = Some(stored);
        }
        state.id = Some(id);
        state.data.mark_replaced();
        Ok(true)
    }

    /// Moves the stored session's expiry to now + its duration (capped by `max_lifetime`),
    /// starting the session first if needed; the response then refreshes the cookie, whatever
    /// the touch interval. A session that is not stored yet has nothing to touch. If another
    /// request wrote or touched the record since this one read it, its newer expiry stands.
    /// If the record is found gone, the session ends for this request, and no cookie is sent.
    ///
    /// # Errors
    ///
    /// The store's error.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn keep_alive(session: session_engine::Session) -> Result<(), session_engine::Error> {
    /// session.touch().await?;
    /// # Ok(()) }
    /// ```
    pub async fn touch(&self) -> Result<&Self, Error> {
        let _gate = self.gate().await;
        self.start_locked().await?;
        let lifetime = self.engine().lifetime();
        let (key, from, to) = {
            let state = self.state();
            let Some(key) = state.key.clone().filter(|_| state.phase == Phase::Started) else {
                return Ok(self);
            };
            let duration = lifetime.duration(state.data.custom_duration());
            let to = lifetime.expiry(lifetime.now(), state.anchor(), duration);
            (key, state.stored_expires_at, to)
        };
        let touched = self.call(|gateway| gateway.touch(&key, from, to)).await;
        let mut state = self.state();
        match touched {
            Ok(Touched::Moved) if state.phase == Phase::Started => {
                state.expires_at = to;
                state.stored_expires_at = to;
                state.touched = true;
                self.happened(&mut state, Marks::TOUCHED, Event::Touched);
            }
            Ok(Touched::Superseded) => state.superseded = true,
            Ok(Touched::Moved) => {}
            Err(StoreError::Gone) => state.vanish(self.engine().metrics()),
            Err(error) => return Err(error.into()),
        }
        Ok(self)
    }

    /// Destroys the session: removes its record from the store at once, clears its data, and
    /// sends a removal cookie at the end of the request. Nothing is saved for the rest of the
    /// request, even when a clone calls this while the end of the request is already writing
    /// (the record just written is removed again). Needs no `start`: without one, the
    /// cookie's record is removed unread.
    ///
    /// Returns whether a live record was removed: `false` for a session that was never
    /// stored, already destroyed, or ended meanwhile by another request (a logout in another
    /// tab, say, or a login that rolled it to a new id: that session lives on under its new
    /// id, and the handler may want to say so).
    ///
    /// # Errors
    ///
    /// The store's `destroy` hook failed; the session is then unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn logout(session: session_engine::Session) -> Result<&'static str, session_engine::Error> {
    /// if session.destroy().await? {
    ///     Ok("bye")
    /// } else {
    ///     Ok("you were not logged in here")
    /// }
    /// # }
    /// ```
    pub async fn destroy(&self) -> Result<bool, Error> {
        let _gate = self.gate().await;
        self.destroy_locked(None).await
    }

    /// Destroys the session as [`destroy`](Self::destroy) does, then begins a fresh one in
    /// its place, within this request: a new id, no data, none of the engine's own keys (no
    /// user tie, no custom duration, the engine's cookie kind), created now. Whatever the
    /// handler sets afterwards goes into the fresh session, which the end of the request
    /// inserts, sending its cookie; if nothing is set, the response removes the cookie as
    /// after `destroy()`. The old record stays destroyed: nothing of it is ever written again.
    ///
    /// It is a logout that still leaves something for the browser, a flash message say. Once
    /// the end of the request has begun (a clone kept past the handler), it is a `destroy()`
    /// alone, which wins as `destroy()` does.
    ///
    /// Returns whether a live record was removed, as `destroy()` does.
    ///
    /// # Errors
    ///
    /// The store's `id` hook or `destroy` hook failed; the session is then unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// # async fn logout(session: session_engine::Session) -> Result<&'static str, session_engine::Error> {
    /// session.invalidate().await?;
    /// // In a fresh session, tied to no user: the next page shows it once.
    /// session.set("flash", "you have been logged out")?;
    /// Ok("bye")
    /// # }
    /// ```
    pub async fn invalidate(&self) -> Result<bool, Error> {
        let _gate = self.gate().await;
        // The new id first: if the store cannot make one, nothing has changed.
        let id = self.new_id().await?;
        self.destroy_locked(Some(id)).await
    }

    /// `destroy`, for a caller that holds the gate; then, given an id, the fresh session of
    /// `invalidate` under it, unless the end of the request has begun.
    async fn destroy_locked(&self, fresh: Option<SessionId>) -> Result<bool, Error> {
        let key = {
            let mut state = self.state();
            let key = match state.phase {
                Phase::Destroyed if fresh.is_none() => return Ok(false),
                Phase::Destroyed | Phase::Vanished => None,
                // At most one of the two is set: a roll moves the stored key aside.
                Phase::Started => state.key.clone().or_else(|| state.rolled_from.clone()),
                Phase::Idle => self
                    .candidate(&mut state)
                    .map(|id| self.engine().store_key(&id)),
            };
            // Made before the flag is set: whoever sees the flag finds it.
            self.inner.destroyed.get_or_init(Default::default);
            state.destroying = true;
            key
        };
        // The end of the request waits for this destroy; however it ends (done, failed, or
        // dropped half-way by a caller's time-out), the guard tells it so.
        let _destroying = Destroying(self);
        let removed = match key {
            Some(key) => self.call(|gateway| gateway.destroy(&key)).await?,
            None => false,
        };
        let mut state = self.state();
        state.marks.set(Marks::DESTROYED);
        if removed {
            self.engine().metrics().count(Event::Destroyed);
        }
        state.end(Phase::Destroyed);
        if let Some(id) = fresh.filter(|_| !state.finishing) {
            // Nothing of the destroyed session is kept but the request's own cookie.
            *state = State {
                presented: state.presented.take(),
                marks: state.marks,
                invalidated: true,
                ..State::new()
            };
            self.begin(&mut state, id);
        }
        Ok(removed)
    }
}

/// A `destroy()` under way: when it ends, the session no longer counts as being destroyed
/// (it was, or the destroy failed) and the end of the request, if it waits, decides again.
struct Destroying<'s>(&'s Session);

impl Drop for Destroying<'_> {
    fn drop(&mut self) {
        self.0.state().destroying = false;
        if let Some(destroyed) = self.0.inner.destroyed.get() {
            destroyed.notify_waiters();
        }
    }
}
