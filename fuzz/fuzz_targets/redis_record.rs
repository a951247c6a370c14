//! The Redis store's record decoding (R12): a session hash, as `HGETALL` gives it, into a
//! `Record`.
//!
//! Properties: no panic, whatever the hash holds (a hash damaged or written by another program
//! is `Undecodable`, never a failure of the server); a record decoded is live at the time of
//! the read, and holds one data key per data field and the hash's own times; and the round trip:
//! the hash the store's insert leaves for any data (any keys, any JSON, floats and NUL
//! characters too) and times decodes to the same record.

#![no_main]

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use session_engine::fuzzing::{redis_insert, redis_record};
use session_engine::store::redis::fred::bytes::Bytes;
use session_engine::store::to_ms;
use session_engine::{Record, StoreError};
use session_engine_fuzz::{json_map, millis};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    any_hash(u)?;
    round_trip(u)
}

/// Any fields, with the field names the store uses made likely.
fn any_hash(u: &mut Unstructured<'_>) -> Result<()> {
    let mut fields = HashMap::new();
    for _ in 0..u.int_in_range(0..=8)? {
        let name: Vec<u8> = match u.choose_index(4)? {
            0 => b"c".to_vec(),
            1 => b"e".to_vec(),
            2 => [b".".as_slice(), u.arbitrary()?].concat(),
            _ => u.arbitrary()?,
        };
        let value: Vec<u8> = if u.arbitrary()? {
            u.arbitrary::<u64>()?.to_string().into_bytes()
        } else {
            u.arbitrary()?
        };
        fields.insert(Bytes::from(name), Bytes::from(value));
    }
    let now_ms: u64 = u.arbitrary()?;
    match redis_record(fields.clone(), now_ms) {
        Ok(Some(record)) => {
            let number = |name: &[u8]| -> u64 {
                std::str::from_utf8(&fields[name])
                    .expect("text")
                    .parse()
                    .expect("a number")
            };
            assert_eq!(to_ms(record.created_at), number(b"c"));
            assert_eq!(to_ms(record.expires_at), number(b"e"));
            assert!(
                to_ms(record.expires_at) > now_ms,
                "a record past its expiry"
            );
            let data_fields = fields.keys().filter(|name| name.starts_with(b".")).count();
            assert_eq!(record.data.len(), data_fields);
            for key in record.data.keys() {
                assert!(fields.contains_key(format!(".{key}").as_bytes()));
            }
        }
        Ok(None) => {}
        Err(StoreError::Undecodable(_)) => {}
        Err(other) => panic!("a hash that cannot be decoded is undecodable: {other:?}"),
    }
    Ok(())
}

/// Any data and times, inserted then read.
fn round_trip(u: &mut Unstructured<'_>) -> Result<()> {
    let data = json_map(u, 3)?;
    let created = UNIX_EPOCH + Duration::from_millis(millis(u)?);
    let expires = UNIX_EPOCH + Duration::from_millis(millis(u)?.max(1));
    let record = Record::new(data, created, expires);
    let hash = redis_insert(&record).expect("any JSON map is written");
    let now_ms = to_ms(expires).saturating_sub(1);
    let read = redis_record(hash.clone(), now_ms)
        .expect("what the store wrote decodes")
        .expect("a live record");
    assert_eq!(read.data, record.data);
    assert_eq!(read.created_at, record.created_at);
    assert_eq!(read.expires_at, record.expires_at);
    // Past its expiry, it is gone.
    assert!(
        redis_record(hash, to_ms(expires))
            .expect("decodes")
            .is_none()
    );
    Ok(())
}
