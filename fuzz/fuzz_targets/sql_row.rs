//! The SQL stores' row decoding (R12): the data column (JSON text) and the creation and expiry
//! columns (integer milliseconds) into a `Record`, as `SqliteStore` and `PostgresStore` read
//! them.
//!
//! Properties: no panic, whatever the row holds (data that is not a JSON object is
//! `Undecodable`); the times are the columns' (negative ones, never written, count as the
//! epoch); and the round trip, as each store writes and reads: any data (any keys, any JSON,
//! floats, NUL and U+0001 characters too) and times decode to the same record, and no NUL
//! reaches PostgreSQL (whose `jsonb` refuses it).

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use session_engine::StoreError;
use session_engine::fuzzing::{sql_data, sql_millis, sql_record};
use session_engine::store::to_ms;
use session_engine_fuzz::{json_map, millis};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    // As PostgreSQL's store reads and writes (NUL escaped), or SQLite's.
    let postgres: bool = u.arbitrary()?;
    any_row(u, postgres)?;
    round_trip(u, postgres)
}

fn any_row(u: &mut Unstructured<'_>, postgres: bool) -> Result<()> {
    let (created, expires): (i64, i64) = u.arbitrary()?;
    let data: &str = u.arbitrary()?;
    match sql_record(postgres, data, created, expires) {
        Ok(record) => {
            let object: serde_json::Value = serde_json::from_str(data).expect("JSON");
            if !postgres || !data.contains(['\u{1}', '\\']) {
                // Nothing that may be an escape: the data as it is.
                assert_eq!(object, serde_json::Value::Object(record.data));
            }
            assert_eq!(to_ms(record.created_at), created.max(0).unsigned_abs());
            assert_eq!(to_ms(record.expires_at), expires.max(0).unsigned_abs());
        }
        Err(StoreError::Undecodable(_)) => {
            assert!(
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(data).is_err()
            );
        }
        Err(other) => panic!("a row that cannot be decoded is undecodable: {other:?}"),
    }
    Ok(())
}

fn round_trip(u: &mut Unstructured<'_>, postgres: bool) -> Result<()> {
    let data = json_map(u, 3)?;
    let created = UNIX_EPOCH + Duration::from_millis(millis(u)?);
    let expires = UNIX_EPOCH + Duration::from_millis(millis(u)?);
    let text = sql_data(postgres, &data).expect("any JSON map is written");
    if postgres {
        let written: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert!(!holds_nul(&written), "a NUL reached PostgreSQL");
    }
    let record = sql_record(postgres, &text, sql_millis(created), sql_millis(expires))
        .expect("what the store wrote decodes");
    assert_eq!(record.data, data);
    assert_eq!(record.created_at, created);
    assert_eq!(record.expires_at, expires);
    Ok(())
}

/// Whether a string of `value` (a key or a value, at any depth) holds a NUL.
fn holds_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || holds_nul(value)),
        _ => false,
    }
}
