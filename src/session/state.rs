//! [`State`]: where a session stands in its request, behind the handle's lock.

use std::time::SystemTime;

use super::data::Data;
use crate::cookie::Presented;
use crate::id::{SessionId, StoreKey};
use crate::observe::{Absence, Event, Marks, Metrics};

/// Where the session stands in its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Not started: no store call yet.
    Idle,
    Started,
    /// `destroy()` was called: the record is gone, nothing more is saved in this request, and
    /// the response removes the cookie.
    Destroyed,
    /// The record was found gone (destroyed or expired by another request): nothing more is
    /// saved, and the response sends no cookie at all, since the browser may already hold a
    /// newer one.
    Vanished,
}

/// Where a session stands in its request; its `Debug` would show data, so it has none.
pub(super) struct State {
    pub(super) phase: Phase,
    /// The id, once chosen by `set_id` or by `start`.
    pub(super) id: Option<SessionId>,
    /// The key of the session's record while the store holds one (the session is "stored").
    pub(super) key: Option<StoreKey>,
    /// The request's verified cookie, read once on first use; `Some(None)` when it had none.
    pub(super) presented: Option<Option<Presented>>,
    pub(super) data: Data,
    /// The record a roll left behind: destroyed once the new one is in.
    pub(super) rolled_from: Option<StoreKey>,
    pub(super) created_at: SystemTime,
    /// When this request started the session: the moment a login in this request counts from
    /// (`set_user`).
    pub(super) started_at: SystemTime,
    /// When the session expires, as `expires_at()` shows it: the stored expiry, or the one a
    /// write will give it (after `set_duration`).
    pub(super) expires_at: SystemTime,
    /// The expiry the store holds, as this request last read, wrote or touched it: the `from`
    /// of a touch, and what says whether one is due.
    pub(super) stored_expires_at: SystemTime,
    /// Whether `touch()` moved the expiry: the response refreshes the cookie.
    pub(super) touched: bool,
    /// Whether a touch found that another request wrote or touched the record since this one
    /// read it: the expiry held here is stale, so the end of the request neither touches nor
    /// refreshes (the other request's response carries the newer expiry).
    pub(super) superseded: bool,
    /// Whether a `destroy()` is under way: the end of the request must not save.
    pub(super) destroying: bool,
    /// Whether a login (`set_user`) happened in this request: once its record is written, the
    /// end of the request checks that it stands (`SessionEngine::after_login`).
    pub(super) login: bool,
    /// Whether `invalidate()` began this session in place of the one it destroyed: unless
    /// it is written, the response removes the cookie, as a `destroy()` would.
    pub(super) invalidated: bool,
    /// Whether the end of the request has begun: an `invalidate()` from a clone then ends the
    /// session without beginning another, so that its destroy wins as a `destroy()` does.
    pub(super) finishing: bool,
    /// What happened to the session in this request: its span's outcome.
    pub(super) marks: Marks,
}

impl State {
    pub(super) fn new() -> Self {
        Self {
            phase: Phase::Idle,
            id: None,
            key: None,
            presented: None,
            data: Data::default(),
            rolled_from: None,
            // Set by `start`; a session that is never started has no times.
            created_at: SystemTime::UNIX_EPOCH,
            started_at: SystemTime::UNIX_EPOCH,
            expires_at: SystemTime::UNIX_EPOCH,
            stored_expires_at: SystemTime::UNIX_EPOCH,
            touched: false,
            superseded: false,
            destroying: false,
            login: false,
            invalidated: false,
            finishing: false,
            marks: Marks::default(),
        }
    }

    /// What the absolute lifetime runs from: the last login, else the creation.
    pub(super) fn anchor(&self) -> SystemTime {
        self.data.login().unwrap_or(self.created_at)
    }

    /// Whether a `destroy()` has ended the session or is ending it.
    pub(super) fn destroyed(&self) -> bool {
        self.phase == Phase::Destroyed || self.destroying
    }

    /// Ends the session for the rest of the request: `destroy()` was called, or the record was
    /// found gone.
    pub(super) fn end(&mut self, phase: Phase) {
        self.phase = phase;
        self.key = None;
        self.rolled_from = None;
        self.data.clear();
        self.touched = false;
        self.destroying = false;
        self.login = false;
    }

    /// The record was found gone, unless a `destroy()` ended the session first.
    pub(super) fn vanish(&mut self, metrics: &Metrics) {
        if self.phase == Phase::Started {
            self.marks.set(Marks::ABSENT);
            metrics.count(Event::Absent(Absence::Gone));
        }
        if self.phase != Phase::Destroyed {
            self.end(Phase::Vanished);
        }
    }
}
