//! Checks of the expiry: touches, destroys, records that expire, and cleanup.

use std::time::Duration;

use serde_json::json;

use super::*;

pub(super) async fn touch_moves_expiry_only(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    let first = record(json!({"a": 1}), HOUR);
    insert(store, &key, &first).await?;
    let later = first.expires_at + HOUR;
    let touched = expect_ok("touch", touch(store, &key, first.expires_at, later).await?)?;
    expect(touched == Touched::Moved, || {
        format!("a touch from the stored expiry answered {touched:?}, not Moved")
    })?;
    let found = read_record(store, &key).await?;
    same_time("the expiry after a touch", found.expires_at, later)?;
    expect(found.data == first.data, || {
        format!("touch changed the data: {:?}", found.data)
    })?;
    same_time(
        "created_at after a touch",
        found.created_at,
        first.created_at,
    )
}

/// A touch moves the expiry only if the record still has the one the request read.
pub(super) async fn touch_is_a_compare_and_set(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let key = key();
    let first = record(json!({}), HOUR);
    insert(store, &key, &first).await?;
    for stale in [
        first.expires_at - HOUR,
        first.expires_at + Duration::from_millis(1),
    ] {
        let touched = expect_ok("touch", touch(store, &key, stale, stale + HOUR).await?)?;
        expect(touched == Touched::Superseded, || {
            format!("a touch from an expiry the record does not have answered {touched:?}")
        })?;
        let found = read_record(store, &key).await?;
        same_time(
            "the expiry after a refused touch",
            found.expires_at,
            first.expires_at,
        )?;
    }
    let second = first.expires_at + HOUR;
    expect_ok("touch", touch(store, &key, first.expires_at, second).await?)?;
    // The same touch again: the record no longer has the expiry it names.
    let again = expect_ok(
        "touch",
        touch(store, &key, first.expires_at, second + HOUR).await?,
    )?;
    expect(again == Touched::Superseded, || {
        format!("a repeated touch answered {again:?}, not Superseded")
    })?;
    same_time(
        "the expiry",
        read_record(store, &key).await?.expires_at,
        second,
    )
}

/// A slow request's touch after another request's write (which set a new expiry) leaves the
/// newer expiry alone.
pub(super) async fn touch_after_another_write_is_superseded(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let key = key();
    let first = record(json!({"a": 1}), HOUR);
    insert(store, &key, &first).await?;
    // Another request sets a day-long duration.
    let written = Record::new(first.data.clone(), first.created_at, now() + 24 * HOUR);
    expect_ok(
        "update",
        update(store, &key, &written, &Changes::new().with_set("a")).await?,
    )?;
    let touched = touch(store, &key, first.expires_at, now() + HOUR).await?;
    let touched = expect_ok("touch", touched)?;
    expect(touched == Touched::Superseded, || {
        format!("a stale touch answered {touched:?}, not Superseded")
    })?;
    same_time(
        "the expiry another request wrote",
        read_record(store, &key).await?.expires_at,
        written.expires_at,
    )
}

pub(super) async fn touch_never_recreates(store: &dyn SessionStore, _: Options) -> CheckResult {
    let key = key();
    let when = now() + HOUR;
    expect_gone(
        "a touch of an absent record",
        touch(store, &key, when, when + HOUR).await?,
    )?;
    let first = record(json!({}), HOUR);
    insert(store, &key, &first).await?;
    destroy(store, &key).await?;
    let touched = touch(store, &key, first.expires_at, first.expires_at + HOUR).await?;
    expect_gone("a touch after destroy", touched)?;
    expect(read(store, &key).await?.is_none(), || {
        "a touch recreated a record".to_owned()
    })
}

pub(super) async fn touch_never_rewrites_data(store: &dyn SessionStore, _: Options) -> CheckResult {
    // A touch that reads the record and writes it back loses an update that lands in
    // between. Against a server the two overlap; each round must keep the update.
    for round in 0..10 {
        let key = key();
        let first = record(json!({"n": 0}), HOUR);
        insert(store, &key, &first).await?;
        let changed = record(json!({"n": round + 1}), HOUR);
        let set_n = Changes::new().with_set("n");
        let (touched, updated) = tokio::join!(
            touch(store, &key, first.expires_at, first.expires_at + HOUR),
            update(store, &key, &changed, &set_n),
        );
        expect_ok("touch", touched?)?;
        expect_ok("update", updated?)?;
        let data = read_data(store, &key).await?;
        expect(data.get("n") == Some(&json!(round + 1)), || {
            format!("an update that raced a touch was lost: {data:?}")
        })?;
    }
    Ok(())
}

pub(super) async fn destroy_says_whether_a_live_record_went(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let key = key();
    let other = self::key();
    insert(store, &key, &record(json!({"a": 1}), HOUR)).await?;
    insert(store, &other, &record(json!({"b": 1}), HOUR)).await?;
    expect(destroy(store, &key).await?, || {
        "destroy of a live record answered false".to_owned()
    })?;
    expect(read(store, &key).await?.is_none(), || {
        "destroy left the record".to_owned()
    })?;
    expect(read(store, &other).await?.is_some(), || {
        "destroy removed another record".to_owned()
    })?;
    expect(!destroy(store, &key).await?, || {
        "destroy of an absent record answered true".to_owned()
    })?;
    // The key is free again.
    let again = record(json!({"again": true}), HOUR);
    insert(store, &key, &again).await?;
    let data = read_data(store, &key).await?;
    expect(data == again.data, || {
        format!("an insert after destroy read back {data:?}")
    })?;
    // A record the store still holds but that has expired was not live.
    let stale = self::key();
    insert(store, &stale, &expired(json!({}))).await?;
    expect(!destroy(store, &stale).await?, || {
        "destroy of an expired record answered true".to_owned()
    })
}

pub(super) async fn read_never_returns_expired(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let key = key();
    insert(store, &key, &expired(json!({"a": 1}))).await?;
    expect(read(store, &key).await?.is_none(), || {
        "read returned an expired record".to_owned()
    })?;
    let key = self::key();
    let first = record(json!({"a": 1}), HOUR);
    insert(store, &key, &first).await?;
    expect_ok(
        "touch",
        touch(store, &key, first.expires_at, now() - HOUR).await?,
    )?;
    expect(read(store, &key).await?.is_none(), || {
        "read returned a record touched to an expiry in the past".to_owned()
    })?;
    // A record that expires while it is held. Real time: this needs an unpaused clock.
    let key = self::key();
    insert(
        store,
        &key,
        &record(json!({"a": 1}), Duration::from_millis(1500)),
    )
    .await?;
    expect(read(store, &key).await?.is_some(), || {
        "a live record is missing".to_owned()
    })?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    expect(read(store, &key).await?.is_none(), || {
        "read returned a record after it expired".to_owned()
    })
}

pub(super) async fn expired_record_is_gone_for_update_and_touch(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let key = key();
    let old = expired(json!({"a": 1}));
    insert(store, &key, &old).await?;
    let record = record(json!({"a": 2}), HOUR);
    for changes in [Changes::new().with_set("a"), Changes::replace_all()] {
        let result = update(store, &key, &record, &changes).await?;
        expect_gone("an update of an expired record", result)?;
    }
    let touched = touch(store, &key, old.expires_at, now() + HOUR).await?;
    expect_gone("a touch of an expired record", touched)?;
    expect(read(store, &key).await?.is_none(), || {
        "an expired record came back".to_owned()
    })
}

pub(super) async fn insert_over_expired_record_succeeds(
    store: &dyn SessionStore,
    _: Options,
) -> CheckResult {
    let key = key();
    insert(store, &key, &expired(json!({"old": 1}))).await?;
    let fresh = record(json!({"new": 1}), HOUR);
    insert(store, &key, &fresh).await?;
    let data = read_data(store, &key).await?;
    expect(data == fresh.data, || {
        format!("an insert over an expired record left {data:?}")
    })
}

pub(super) async fn cleanup_removes_only_expired(
    store: &dyn SessionStore,
    options: Options,
) -> CheckResult {
    let live = key();
    insert(store, &live, &record(json!({"live": true}), HOUR)).await?;
    let dead: Vec<StoreKey> = (0..3).map(|_| key()).collect();
    for key in &dead {
        insert(store, key, &expired(json!({}))).await?;
    }
    let removed = timed("cleanup", store.cleanup()).await?;
    if !options.self_expiring {
        // Others may share the store, so more may go, but never fewer than ours.
        expect(removed >= 3, || {
            format!("cleanup removed {removed} records; at least the 3 expired ones must go")
        })?;
    }
    for key in &dead {
        expect(read(store, key).await?.is_none(), || {
            "an expired record survived cleanup".to_owned()
        })?;
    }
    expect(read(store, &live).await?.is_some(), || {
        "cleanup removed a live record".to_owned()
    })
}
