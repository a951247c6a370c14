//! The end of a request: what it does with the session, decided at once ([`Session::finish`]),
//! and the store calls it takes ([`Finishing`]), in order:
//!
//! - destroyed (or begun again by `invalidate()` and left unwritten): the removal cookie;
//! - found gone: no cookie at all (the browser may hold a newer one);
//! - modified: `write` (an insert for a new or rolled session, retried under a fresh id while
//!   the id is taken; then, after a roll, the destroy of the old record, and if that one was no
//!   longer live or its destroy failed, the destroy of the new one too; then, after a login,
//!   the check that no "log out everywhere" ended it meanwhile, and the end of the user's
//!   sessions beyond the limit), then the cookie with the expiry the store gave the record;
//! - stored, unmodified, touch due: `touch`, then the refreshed cookie;
//! - otherwise nothing, but the re-issue of a cookie signed with an older secret.
//!
//! A `destroy()` from a clone while this runs wins: whatever was just written is removed and
//! the removal cookie sent.
//!
//! [`Finishing`] is a future of its own, polled in place by the layer's response future: with
//! a store that answers at once it completes in its first poll, with no allocation. Dropped
//! half-way (the client went away), it finishes what must not be left half-done on a task of
//! its own: a record inserted is removed again (its cookie will never reach anyone), and the
//! record a roll left behind is destroyed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::sync::futures::OwnedNotified;

use super::Session;
use super::state::{Phase, State};
use crate::error::Error;
use crate::id::{SessionId, StoreKey};
use crate::lifetime::Lifetime;
use crate::observe::{Event, Marks};
use crate::store::{Changes, Record, StoreError, StoreFuture, Touched, WriteMode};

/// How many fresh ids an insert tries before giving up.
const INSERT_TRIES: usize = 3;

/// What the end of a request does, as far as it could be decided without waiting.
pub(crate) enum Finish {
    /// The session was never used: the response passes untouched.
    Untouched,
    /// Decided, with no store call.
    Done(Outcome),
    /// Store calls to make first.
    Running(Finishing),
}

/// What the end of a request does to the session cookie (and the session header). No
/// `Debug`: it holds the signed id.
pub(crate) enum Outcome {
    /// Nothing sent.
    Keep,
    /// The signed id, sent.
    Set(Issue),
    /// The removal.
    Remove,
}

/// The signed id a response sends, and the seconds it has left (the cookie's `Max-Age`).
pub(crate) struct Issue {
    signed: Signed,
    max_age: u64,
    /// Whether the cookie carries `Max-Age`: the session's choice, else the engine's.
    persistent: bool,
}

enum Signed {
    /// The request's own value, exactly what would be sent now: no new signature.
    Presented(SessionId),
    /// A new signature.
    Fresh(String),
}

impl Issue {
    /// The cookie's `Max-Age`: the seconds the session has left; `None` for a browser-session
    /// cookie.
    pub(crate) fn max_age(&self) -> Option<u64> {
        self.persistent.then_some(self.max_age)
    }

    /// The signed id: `id.tag`.
    pub(crate) fn value(&self) -> &str {
        match &self.signed {
            Signed::Presented(id) => id.signed().expect("only a signed id is resent"),
            Signed::Fresh(signed) => signed,
        }
    }
}

/// The store calls of the end of a request; see the module docs.
pub(crate) struct Finishing {
    session: Session,
    step: Step,
}

/// A record being written: under which id and key, with which times.
struct Writing {
    id: SessionId,
    key: StoreKey,
    created_at: SystemTime,
    /// The expiry as this request sees the record; once written, the one the store gave it.
    expires_at: SystemTime,
    /// When the end of the request decided: the `Max-Age` of the cookie counts from it.
    now: SystemTime,
    tries: usize,
    /// What writing it does to the session, once it is in: `Created`, `Rolled` (an insert
    /// that replaces the record a roll left behind) or `Written` (an update).
    event: Event,
}

enum Step {
    Insert(Writing, StoreFuture<SystemTime>),
    NewId(Writing, StoreFuture<String>),
    DestroyRolled(Writing, StoreFuture<bool>),
    Update(Writing, StoreFuture<SystemTime>),
    /// Whether a login written in this request stands (`SessionEngine::after_login`).
    Login(Writing, StoreFuture<bool>),
    Touch {
        to: SystemTime,
        cookie: Issue,
        call: StoreFuture<Touched>,
    },
    /// Waits for a clone's `destroy()` to end, then decides again.
    AwaitDestroy(Pin<Box<OwnedNotified>>),
    /// Removes a record just written, then answers `then`.
    Undo {
        then: Result<Outcome, Error>,
        call: StoreFuture<bool>,
    },
    Done,
}

/// What a step leads to.
enum Next {
    Step(Step),
    Done(Result<Outcome, Error>),
    /// Its store call has not answered yet: the step, as it was.
    Pending(Step),
}

impl Session {
    /// Decides what the end of the request does, once the inner service has answered with a
    /// status below 500.
    pub(crate) fn finish(&self) -> Finish {
        let engine = self.engine();
        let lifetime = engine.lifetime();
        let mut state = self.state();
        state.finishing = true;
        if state.destroying {
            // A clone's `destroy()` is under way: it wins if it succeeds, so its end decides.
            // Registered before the state is let go, the wait cannot miss it.
            let destroyed = self.inner.destroyed.get().expect("made by destroy()");
            let ended = Arc::clone(destroyed).notified_owned();
            return Finish::Running(Finishing {
                session: self.clone(),
                step: Step::AwaitDestroy(Box::pin(ended)),
            });
        }
        match state.phase {
            Phase::Idle => Finish::Untouched,
            Phase::Destroyed => Finish::Done(Outcome::Remove),
            Phase::Vanished => Finish::Done(Outcome::Keep),
            Phase::Started if state.data.is_dirty() => {
                let duration = lifetime.duration(state.data.custom_duration());
                let id = state.id.clone().expect("a started session has an id");
                // A stored session keeps its key; a new or rolled one gets the key of its id.
                let stored = state.key.clone();
                let now = lifetime.now();
                let writing = Writing {
                    key: stored.clone().unwrap_or_else(|| engine.store_key(&id)),
                    id,
                    created_at: state.created_at,
                    expires_at: lifetime.expiry(now, state.anchor(), duration),
                    now,
                    tries: 1,
                    event: match (&stored, &state.rolled_from) {
                        (Some(_), _) => Event::Written,
                        (None, Some(_)) => Event::Rolled,
                        (None, None) => Event::Created,
                    },
                };
                let changes = state.data.take_changes();
                let step = match stored {
                    Some(_) => {
                        let call = self.write(&mut state, &writing, &changes, WriteMode::Update);
                        Step::Update(writing, call)
                    }
                    None => {
                        let call = self.insert(&mut state, &writing);
                        Step::Insert(writing, call)
                    }
                };
                drop(state);
                Finish::Running(Finishing {
                    session: self.clone(),
                    step,
                })
            }
            Phase::Started => {
                let Some(key) = state.key.clone() else {
                    // New and unmodified: nothing is stored, nothing is sent; but the cookie of
                    // a session that `invalidate()` destroyed goes, as after `destroy()`.
                    let removed = state.invalidated.then_some(Outcome::Remove);
                    return Finish::Done(removed.unwrap_or(Outcome::Keep));
                };
                // One clock read serves the expiry, the touch interval and `Max-Age`.
                let now = lifetime.now();
                let duration = lifetime.duration(state.data.custom_duration());
                if state.superseded {
                    return Finish::Done(Outcome::Keep);
                }
                let due = (engine.automatic_touch() && !state.touched)
                    .then(|| {
                        let stored = state.stored_expires_at;
                        lifetime.touch_due(now, state.anchor(), stored, duration)
                    })
                    .flatten();
                if let Some(to) = due {
                    let cookie = self.issue(&mut state, to, now);
                    let call = engine.gateway().touch(&key, state.stored_expires_at, to);
                    drop(state);
                    return Finish::Running(Finishing {
                        session: self.clone(),
                        step: Step::Touch { to, cookie, call },
                    });
                }
                // A cookie signed with an older secret, or for another id, is re-issued with
                // the record's current expiry even when no touch is due; `touch()` refreshes.
                if state.touched || !self.presented_is_current(&mut state) {
                    let stored = state.stored_expires_at;
                    Finish::Done(Outcome::Set(self.issue(&mut state, stored, now)))
                } else {
                    Finish::Done(Outcome::Keep)
                }
            }
        }
    }

    /// Calls `write` with the session's data, lent to the record without a copy, and the rule
    /// its expiry follows.
    fn write(
        &self,
        state: &mut State,
        writing: &Writing,
        changes: &Changes,
        mode: WriteMode,
    ) -> StoreFuture<SystemTime> {
        let rule = self.engine().lifetime().rule(writing.now);
        let record =
            Record::new(state.data.lend(), writing.created_at, writing.expires_at).with_rule(rule);
        let call = self
            .engine()
            .gateway()
            .write(&writing.key, &record, changes, mode);
        state.data.restore(record.data);
        call
    }

    fn insert(&self, state: &mut State, writing: &Writing) -> StoreFuture<SystemTime> {
        self.write(state, writing, &Changes::replace_all(), WriteMode::Insert)
    }

    /// Whether the request's cookie is exactly what would be sent for the session's id now.
    fn presented_is_current(&self, state: &mut State) -> bool {
        self.resendable(state).is_some()
    }

    /// The session's id as the request presented it, when that value is exactly what would
    /// be sent for it now.
    fn resendable(&self, state: &mut State) -> Option<SessionId> {
        let id = state.id.clone()?;
        self.presented(state)
            .filter(|presented| presented.resend(&id).is_some())
            .map(|presented| presented.id.clone())
    }

    /// The signed id to send, with the seconds until `expires_at`: the request's own value
    /// when it already is exactly that, else a new signature.
    fn issue(&self, state: &mut State, expires_at: SystemTime, now: SystemTime) -> Issue {
        let max_age = Lifetime::seconds_left(now, expires_at);
        let signed = match self.resendable(state) {
            Some(presented) => Signed::Presented(presented),
            None => {
                let id = state.id.as_ref().expect("a started session has an id");
                Signed::Fresh(self.engine().keys().sign(id))
            }
        };
        let persistent =
            (state.data.persistent()).unwrap_or_else(|| self.engine().cookie().persistent());
        Issue {
            signed,
            max_age,
            persistent,
        }
    }
}

impl Finishing {
    /// The session being finished.
    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    /// The written record is in: after a roll, the old record goes next; after a login, the
    /// check that it stands; then the session is stored under its new key, unless a
    /// `destroy()` got there first.
    fn written(&mut self, writing: Writing, inserted: bool) -> Next {
        let mut state = self.session.state();
        if let (true, Some(old)) = (inserted, &state.rolled_from) {
            let call = self.session.engine().gateway().destroy(old);
            return Next::Step(Step::DestroyRolled(writing, call));
        }
        if state.destroyed() {
            drop(state);
            return self.undo(inserted, &writing.key, Ok(Outcome::Remove));
        }
        if std::mem::take(&mut state.login) {
            let user = state.data.user().map(str::to_owned);
            let login_at = state.data.login();
            if let (Some(user), Some(login_at)) = (user, login_at) {
                let engine = self.session.engine();
                let call = engine.after_login(user, writing.key.clone(), login_at);
                return Next::Step(Step::Login(writing, call));
            }
        }
        let mark = match writing.event {
            Event::Rolled => Marks::ROLLED,
            Event::Created => Marks::CREATED,
            _ => Marks::WRITTEN,
        };
        self.session.happened(&mut state, mark, writing.event);
        // An insert may have moved to a fresh id (the first was taken): the cookie follows.
        state.id = Some(writing.id);
        state.key = Some(writing.key);
        state.expires_at = writing.expires_at;
        state.stored_expires_at = writing.expires_at;
        let issue = self
            .session
            .issue(&mut state, writing.expires_at, writing.now);
        Next::Done(Ok(Outcome::Set(issue)))
    }

    /// Removes the record just inserted (when `inserted`), then answers `then`.
    fn undo(&self, inserted: bool, key: &StoreKey, then: Result<Outcome, Error>) -> Next {
        if !inserted {
            return Next::Done(then);
        }
        let call = self.session.engine().gateway().destroy(key);
        Next::Step(Step::Undo { then, call })
    }

    /// The answer once a touch, an update or a roll found the record gone: nothing is sent,
    /// unless a `destroy()` ended the session (then its removal cookie).
    fn vanished(&self) -> Outcome {
        let mut state = self.session.state();
        if state.destroyed() {
            return Outcome::Remove;
        }
        state.vanish(self.session.engine().metrics());
        Outcome::Keep
    }

    /// Takes `step` once its store call has answered; a call still pending gives the step
    /// back, as it was.
    fn advance(&mut self, step: Step, cx: &mut Context<'_>) -> Next {
        match step {
            Step::Insert(mut writing, mut call) => {
                let Poll::Ready(answer) = poll(&mut call, cx) else {
                    return Next::Pending(Step::Insert(writing, call));
                };
                match answer {
                    Ok(expires_at) => {
                        writing.expires_at = expires_at;
                        self.written(writing, true)
                    }
                    Err(StoreError::IdTaken) if writing.tries < INSERT_TRIES => {
                        writing.tries += 1;
                        let call = self.session.engine().gateway().id();
                        Next::Step(Step::NewId(writing, call))
                    }
                    Err(error) => Next::Done(Err(error.into())),
                }
            }
            Step::NewId(mut writing, mut call) => {
                let Poll::Ready(answer) = poll(&mut call, cx) else {
                    return Next::Pending(Step::NewId(writing, call));
                };
                let id = match answer {
                    Ok(id) => SessionId::parse(&id).ok_or(Error::InvalidId),
                    Err(error) => Err(error.into()),
                };
                match id {
                    Ok(id) => {
                        writing.key = self.session.engine().store_key(&id);
                        writing.id = id;
                        let call = self.session.insert(&mut self.session.state(), &writing);
                        Next::Step(Step::Insert(writing, call))
                    }
                    Err(error) => Next::Done(Err(error)),
                }
            }
            Step::DestroyRolled(writing, mut call) => {
                let Poll::Ready(answer) = poll(&mut call, cx) else {
                    return Next::Pending(Step::DestroyRolled(writing, call));
                };
                match answer {
                    Ok(true) => {
                        self.session.state().rolled_from = None;
                        self.written(writing, true)
                    }
                    // The old record was no longer live: a logout landed meanwhile. The new
                    // record must not outlive it.
                    Ok(false) => {
                        let then = self.vanished();
                        self.undo(true, &writing.key, Ok(then))
                    }
                    // The old record may still be live: the new one must not be live beside
                    // it, tied to the same user, with a cookie that never reached anyone.
                    Err(error) => self.undo(true, &writing.key, Err(error.into())),
                }
            }
            Step::Update(mut writing, mut call) => {
                let Poll::Ready(answer) = poll(&mut call, cx) else {
                    return Next::Pending(Step::Update(writing, call));
                };
                match answer {
                    // The expiry the record's own data calls for (R17), which another request
                    // may have changed since this one read it.
                    Ok(expires_at) => {
                        writing.expires_at = expires_at;
                        self.written(writing, false)
                    }
                    Err(StoreError::Gone) => Next::Done(Ok(self.vanished())),
                    Err(error) => Next::Done(Err(error.into())),
                }
            }
            Step::Touch {
                to,
                cookie,
                mut call,
            } => {
                let Poll::Ready(answer) = poll(&mut call, cx) else {
                    return Next::Pending(Step::Touch { to, cookie, call });
                };
                Next::Done(Ok(self.touched(answer, to, cookie)))
            }
            Step::Login(writing, mut call) => {
                let Poll::Ready(answer) = poll(&mut call, cx) else {
                    return Next::Pending(Step::Login(writing, call));
                };
                match answer {
                    Ok(true) => self.written(writing, false),
                    // Ended by a "log out everywhere" since the request began (R19): the
                    // record is gone, and nothing is sent.
                    Ok(false) => Next::Done(Ok(self.vanished())),
                    Err(error) => self.undo(true, &writing.key, Err(error.into())),
                }
            }
            Step::Undo { then, mut call } => {
                let Poll::Ready(answer) = poll(&mut call, cx) else {
                    return Next::Pending(Step::Undo { then, call });
                };
                match answer {
                    Ok(_) => Next::Done(then),
                    Err(error) => {
                        // The error the response answers with is the first one.
                        if then.is_err() {
                            tracing::warn!(
                                error = &error as &dyn std::error::Error,
                                "a session record written in a failed request could not be \
                                 removed; it expires as usual"
                            );
                            Next::Done(then)
                        } else {
                            Next::Done(Err(error.into()))
                        }
                    }
                }
            }
            Step::AwaitDestroy(mut ended) => {
                if ended.as_mut().poll(cx).is_pending() {
                    return Next::Pending(Step::AwaitDestroy(ended));
                }
                match self.session.finish() {
                    Finish::Untouched => Next::Done(Ok(Outcome::Keep)),
                    Finish::Done(outcome) => Next::Done(Ok(outcome)),
                    Finish::Running(mut finishing) => {
                        Next::Step(std::mem::replace(&mut finishing.step, Step::Done))
                    }
                }
            }
            Step::Done => panic!("Finishing polled after it completed"),
        }
    }

    /// The answer once the automatic touch has answered.
    fn touched(
        &self,
        answer: Result<Touched, StoreError>,
        to: SystemTime,
        cookie: Issue,
    ) -> Outcome {
        let mut state = self.session.state();
        match answer {
            _ if state.destroyed() => Outcome::Remove,
            Ok(Touched::Moved) => {
                state.expires_at = to;
                state.stored_expires_at = to;
                self.session
                    .happened(&mut state, Marks::TOUCHED, Event::Touched);
                Outcome::Set(cookie)
            }
            // Another request wrote or touched it since: its response carries the newer
            // expiry.
            Ok(Touched::Superseded) => Outcome::Keep,
            Err(StoreError::Gone) => {
                state.vanish(self.session.engine().metrics());
                Outcome::Keep
            }
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "session touch failed; the response goes without a cookie refresh"
                );
                Outcome::Keep
            }
        }
    }
}

impl Finishing {
    /// What the step under way leaves half-done if it is dropped here (the client went away
    /// before the response): the store calls that complete it, to run on a task of their
    /// own (R22).
    ///
    /// - A record being inserted, or just inserted (a roll's old record being destroyed, a
    ///   login being checked): once it is in, it is removed again, since its cookie will
    ///   never reach anyone, and the record a roll left behind is destroyed, as the roll
    ///   would have, so no logged-in record is left orphaned and no pre-login one live.
    /// - A record being removed again: its removal goes on.
    fn leftover(&self, step: Step) -> Option<StoreFuture<()>> {
        let gateway = self.session.engine().gateway().clone();
        let rolled_from = self.session.state().rolled_from.clone();
        let (inserted, new): (StoreFuture<bool>, StoreKey) = match step {
            Step::Insert(writing, call) => (
                StoreFuture::boxed(async move { Ok(call.await.is_ok()) }),
                writing.key,
            ),
            Step::DestroyRolled(writing, call) => (
                StoreFuture::boxed(async move {
                    let _ = call.await;
                    Ok(true)
                }),
                writing.key,
            ),
            Step::Login(writing, _) => (StoreFuture::ready(Ok(true)), writing.key),
            Step::Undo { call, .. } => {
                return Some(StoreFuture::boxed(async move { call.await.map(drop) }));
            }
            Step::NewId(..)
            | Step::Update(..)
            | Step::Touch { .. }
            | Step::AwaitDestroy(_)
            | Step::Done => return None,
        };
        Some(StoreFuture::boxed(async move {
            if inserted.await? {
                gateway.destroy(&new).await?;
                if let Some(old) = rolled_from {
                    gateway.destroy(&old).await?;
                }
            }
            Ok(())
        }))
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        let step = std::mem::replace(&mut self.step, Step::Done);
        let Some(leftover) = self.leftover(step) else {
            return;
        };
        let finish = async move {
            if let Err(error) = leftover.await {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "a session's end of request, left half-way by its client, could not be \
                     completed; its records expire as usual"
                );
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(finish)),
            Err(_) => tracing::warn!(
                "a session's end of request was left half-way outside a tokio runtime; its \
                 records expire as usual"
            ),
        }
    }
}

/// Polls a store call in place (store futures are `Unpin`).
fn poll<T>(call: &mut StoreFuture<T>, cx: &mut Context<'_>) -> Poll<Result<T, StoreError>> {
    Pin::new(call).poll(cx)
}

impl Future for Finishing {
    type Output = Result<Outcome, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            let step = std::mem::replace(&mut this.step, Step::Done);
            match this.advance(step, cx) {
                Next::Step(step) => this.step = step,
                Next::Done(result) => return Poll::Ready(result),
                Next::Pending(step) => {
                    this.step = step;
                    return Poll::Pending;
                }
            }
        }
    }
}
