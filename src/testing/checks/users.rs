//! Checks of `user_sessions`, run only on a store that indexes users: every live record tied to
//! the user, none other, through every write that ties, moves or unties a record.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::*;
use crate::store::{RecordSummary, USER_KEY};

/// A user name of this run's own, so that checks never see each other's records.
fn user() -> String {
    format!("user-{}", random_id().expect("the OS CSPRNG works"))
}

fn tied(user: &str, extra: Value) -> Record {
    let mut data = object(extra);
    data.insert(USER_KEY.to_owned(), Value::from(user));
    Record::new(data, now(), now() + HOUR)
}

/// The keys `user_sessions(user)` answers, checking that each record is tied to `user`.
async fn listed(store: &dyn SessionStore, user: &str) -> Result<BTreeSet<String>, String> {
    let found = timed("user_sessions", store.user_sessions(user)).await?;
    let mut keys = BTreeSet::new();
    for (key, summary) in &found {
        let tie = &summary.user;
        expect(tie == user, || {
            format!("user_sessions({user:?}) returned a record tied to {tie:?}")
        })?;
        expect(keys.insert(key.as_str().to_owned()), || {
            format!("user_sessions returned {key:?} twice")
        })?;
    }
    Ok(keys)
}

fn set(keys: &[&StoreKey]) -> BTreeSet<String> {
    keys.iter().map(|key| key.as_str().to_owned()).collect()
}

async fn expect_listed(
    store: &dyn SessionStore,
    user: &str,
    want: &[&StoreKey],
    when: &str,
) -> CheckResult {
    let found = listed(store, user).await?;
    let want = set(want);
    expect(found == want, || {
        format!("{when}: user_sessions listed {found:?}, want {want:?}")
    })
}

pub(super) async fn users_every_tied_record_is_listed_and_no_other(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let (ada, bob) = (user(), user());
    let (a1, a2, a3, b1, none) = (key(), key(), key(), key(), key());
    for (key, record) in [
        (&a1, tied(&ada, json!({"n": 1}))),
        (&a2, tied(&ada, json!({}))),
        (&a3, tied(&ada, json!({"big": "x".repeat(5000)}))),
        (&b1, tied(&bob, json!({"n": 1}))),
        (&none, record(json!({"n": 1}), HOUR)),
    ] {
        insert(store, key, &record).await?;
    }
    expect_listed(store, &ada, &[&a1, &a2, &a3], "three of ada's").await?;
    expect_listed(store, &bob, &[&b1], "one of bob's").await?;
    // Names are matched exactly: no prefix, no case folding, no pattern.
    for other in [
        format!("{ada}x"),
        ada.to_uppercase(),
        ada[..ada.len() - 1].to_owned(),
        format!("{}%", &ada[..5]),
        String::new(),
    ] {
        expect_listed(store, &other, &[], &format!("{other:?}")).await?;
    }
    Ok(())
}

pub(super) async fn users_updates_tie_move_and_untie(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let (ada, bob) = (user(), user());
    let key = key();
    let mut written = record(json!({"n": 1}), HOUR);
    insert(store, &key, &written).await?;
    expect_listed(store, &ada, &[], "before the tie").await?;

    // A delta write that sets the user ties the record.
    written
        .data
        .insert(USER_KEY.to_owned(), Value::from(ada.as_str()));
    let changes = Changes::new().with_set(USER_KEY);
    expect_ok("a tie", update(store, &key, &written, &changes).await?)?;
    expect_listed(store, &ada, &[&key], "after a delta write tied it").await?;

    // Another write that leaves the user alone keeps it listed.
    written.data.insert("n".to_owned(), Value::from(2));
    let changes = Changes::new().with_set("n");
    expect_ok("an update", update(store, &key, &written, &changes).await?)?;
    expect_listed(store, &ada, &[&key], "after a write of another key").await?;

    // Tied to another user: moved.
    written
        .data
        .insert(USER_KEY.to_owned(), Value::from(bob.as_str()));
    let changes = Changes::new().with_set(USER_KEY);
    expect_ok("a move", update(store, &key, &written, &changes).await?)?;
    expect_listed(store, &ada, &[], "after the move, the old user").await?;
    expect_listed(store, &bob, &[&key], "after the move, the new user").await?;

    // Untied.
    written.data.remove(USER_KEY);
    let changes = Changes::new().with_deleted(USER_KEY);
    expect_ok("an untie", update(store, &key, &written, &changes).await?)?;
    expect_listed(store, &bob, &[], "after the untie").await?;

    // A write that replaces the whole data ties it again.
    written
        .data
        .insert(USER_KEY.to_owned(), Value::from(ada.as_str()));
    let changes = Changes::replace_all();
    expect_ok("a replace", update(store, &key, &written, &changes).await?)?;
    expect_listed(store, &ada, &[&key], "after a replace").await
}

pub(super) async fn users_destroyed_expired_and_rolled_records_leave_the_list(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let ada = user();
    let (destroyed, expiring, rolled, kept) = (key(), key(), key(), key());
    let expiring_record = tied(&ada, json!({}));
    for (key, record) in [
        (&destroyed, tied(&ada, json!({}))),
        (&expiring, expiring_record.clone()),
        (&rolled, tied(&ada, json!({"n": 1}))),
        (&kept, tied(&ada, json!({}))),
    ] {
        insert(store, key, &record).await?;
    }
    expect(destroy(store, &destroyed).await?, || {
        "destroy of a live record said false".to_owned()
    })?;
    // Expired at once: a touch to a moment past.
    expect_ok(
        "touch",
        touch(store, &expiring, expiring_record.expires_at, now() - HOUR).await?,
    )?;
    // A roll: the data under a new key, then the old key destroyed.
    let new = key();
    insert(store, &new, &tied(&ada, json!({"n": 1}))).await?;
    expect_listed(store, &ada, &[&rolled, &kept, &new], "mid-roll, both keys").await?;
    destroy(store, &rolled).await?;
    expect_listed(
        store,
        &ada,
        &[&kept, &new],
        "after a destroy, an expiry and a roll",
    )
    .await?;
    // An expired record does not come back, even after an insert over it.
    insert(store, &expiring, &record(json!({}), HOUR)).await?;
    expect_listed(
        store,
        &ada,
        &[&kept, &new],
        "after an insert over the expired key",
    )
    .await
}

/// Section 7.2 (v3): each listed record comes with its summary (its tie, its times, its own
/// idle lifetime and its last login), true to the record after every write; a user name holds
/// any character, NUL included (R20).
pub(super) async fn users_listing_summarizes_each_record(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let ada = format!("{}\u{0}é", user());
    let (own, plain) = (key(), key());
    let now = now();
    let login = now - Duration::from_secs(60);
    let mut own_record = tied(
        &ada,
        json!({"__cust_dur": 60_000, "__login": to_ms(login), "big": "x".repeat(10_000)}),
    );
    own_record.created_at = now - Duration::from_secs(600);
    own_record.expires_at = now + Duration::from_secs(60);
    let plain_record = tied(&ada, json!({}));
    insert(store, &own, &own_record).await?;
    insert(store, &plain, &plain_record).await?;

    let want = |record: &Record, duration: Option<u64>, login: Option<SystemTime>| {
        RecordSummary::new(ada.as_str(), record.created_at, record.expires_at)
            .with_duration(duration.map(Duration::from_millis))
            .with_login(login)
    };
    expect_summaries(
        store,
        &ada,
        &[
            (&own, want(&own_record, Some(60_000), Some(login))),
            (&plain, want(&plain_record, None, None)),
        ],
        "as inserted",
    )
    .await?;

    // A write that gives the plain record a duration of its own moves its expiry with it.
    let mut changed = plain_record.clone();
    changed.data.insert(DURATION_KEY.to_owned(), json!(120_000));
    let at = super::now();
    changed.expires_at = at + Duration::from_secs(120);
    let changed = changed.with_rule(ExpiryRule::new(at, HOUR, None));
    expect_ok(
        "an update",
        update(
            store,
            &plain,
            &changed,
            &Changes::new().with_set(DURATION_KEY),
        )
        .await?,
    )?;
    expect_summaries(
        store,
        &ada,
        &[
            (&own, want(&own_record, Some(60_000), Some(login))),
            (&plain, want(&changed, Some(120_000), None)),
        ],
        "after an update of the duration",
    )
    .await
}

async fn expect_summaries(
    store: &dyn SessionStore,
    user: &str,
    want: &[(&StoreKey, RecordSummary)],
    when: &str,
) -> CheckResult {
    let mut found = timed("user_sessions", store.user_sessions(user)).await?;
    found.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let mut want: Vec<_> = want
        .iter()
        .map(|(key, summary)| ((*key).clone(), summary.clone()))
        .collect();
    want.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    expect(found == want, || {
        format!("{when}: user_sessions answered {found:?}, want {want:?}")
    })
}
