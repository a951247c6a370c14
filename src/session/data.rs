//! [`Data`]: a session's data, what the request changed in it, and its size, with the rules
//! on keys: `__`-prefixed keys are the engine's (the custom duration lives under
//! `__cust_dur`), an equal value is no change, and no change may take the data past the
//! engine's limit.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{DataError, Error};
use crate::store::{
    Changes, DURATION_KEY, LOGIN_KEY, MAX_DEPTH, USER_KEY, custom_duration_of, login_of, to_ms,
    user_of,
};

/// The data key that keeps a session's own choice of a persistent cookie (a boolean), when it
/// differs from the engine's.
pub(crate) const PERSISTENT_KEY: &str = "__persist";

/// A session's data and what the request changed in it.
#[derive(Default)]
pub(super) struct Data {
    map: Map<String, Value>,
    /// The size of `map` as JSON, computed when first needed and then kept up to date.
    len: Option<usize>,
    changes: Changes,
    /// Whether anything must be written at the end of the request.
    dirty: bool,
}

impl Data {
    /// Data read from the store: unchanged so far.
    pub(super) fn stored(map: Map<String, Value>) -> Self {
        Self {
            map,
            ..Self::default()
        }
    }

    pub(super) fn map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// Lends the map out (to build a record without copying it); it must be given back with
    /// [`restore`](Self::restore).
    pub(super) fn lend(&mut self) -> Map<String, Value> {
        std::mem::take(&mut self.map)
    }

    pub(super) fn restore(&mut self, map: Map<String, Value>) {
        self.map = map;
    }

    pub(super) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// What changed, for the write at the end of the request; the data counts as saved.
    pub(super) fn take_changes(&mut self) -> Changes {
        self.dirty = false;
        std::mem::take(&mut self.changes)
    }

    /// The whole data is to be written again (a roll moves it to a new record).
    pub(super) fn mark_replaced(&mut self) {
        self.changes.record_replace();
        self.dirty = true;
    }

    /// Forgets everything: the session was destroyed.
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    /// The custom duration set with `set_duration`, if any.
    pub(super) fn custom_duration(&self) -> Option<Duration> {
        custom_duration_of(&self.map)
    }

    /// When the session's last login was, if it had one.
    pub(super) fn login(&self) -> Option<SystemTime> {
        login_of(&self.map)
    }

    /// Whether the session's cookie carries `Max-Age`, when the session chose.
    pub(super) fn persistent(&self) -> Option<bool> {
        self.map.get(PERSISTENT_KEY).and_then(Value::as_bool)
    }

    /// Chooses whether the session's cookie carries `Max-Age`; `None` leaves it to the engine.
    pub(super) fn set_persistent(
        &mut self,
        persistent: Option<bool>,
        limit: usize,
    ) -> Result<(), Error> {
        match persistent {
            Some(persistent) => self.put(PERSISTENT_KEY.to_owned(), Value::Bool(persistent), limit),
            None => {
                self.remove(PERSISTENT_KEY);
                Ok(())
            }
        }
    }

    /// Stores the session at the end of the request even if nothing changed.
    pub(super) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Removes the custom duration; returns whether there was one.
    pub(super) fn clear_custom_duration(&mut self) -> bool {
        let had = self.map.contains_key(DURATION_KEY);
        self.remove(DURATION_KEY);
        had
    }

    /// The user the session is tied to, if any.
    pub(super) fn user(&self) -> Option<&str> {
        user_of(&self.map)
    }

    /// Ties the session to `user`, logged in at `at`. All or nothing.
    pub(super) fn set_user(
        &mut self,
        user: String,
        at: SystemTime,
        limit: usize,
    ) -> Result<(), Error> {
        let login = Value::from(to_ms(at));
        self.merge(
            Map::from_iter([
                (USER_KEY.to_owned(), Value::String(user)),
                (LOGIN_KEY.to_owned(), login),
            ]),
            limit,
        )
    }

    /// Unties the session from its user.
    pub(super) fn clear_user(&mut self) {
        self.remove(USER_KEY);
    }

    pub(super) fn set_custom_duration(
        &mut self,
        duration: Duration,
        limit: usize,
    ) -> Result<(), Error> {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        self.put(DURATION_KEY.to_owned(), Value::from(millis), limit)
    }

    pub(super) fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.map.get(key) {
            Some(value) if !is_reserved(key) => {
                T::deserialize(value)
                    .map(Some)
                    .map_err(|error| Error::Deserialize {
                        key: key.to_owned(),
                        source: DataError::new(&error),
                    })
            }
            _ => Ok(None),
        }
    }

    /// All data but the engine's own keys.
    pub(super) fn get_all(&self) -> Map<String, Value> {
        self.map
            .iter()
            .filter(|(key, _)| !is_reserved(key))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    /// Sets a user's `key`.
    pub(super) fn set(
        &mut self,
        key: String,
        value: impl Serialize,
        limit: usize,
    ) -> Result<(), Error> {
        check_key(&key)?;
        let value =
            serde_json::to_value(value).map_err(|e| Error::Serialize(DataError::new(&e)))?;
        check_depth(&value)?;
        self.put(key, value, limit)
    }

    /// Sets every key of `object`, all or nothing.
    pub(super) fn set_many(&mut self, object: impl Serialize, limit: usize) -> Result<(), Error> {
        self.merge(to_object(object)?, limit)
    }

    /// Sets every key of `object`, reserved ones included, all or nothing.
    fn merge(&mut self, object: Map<String, Value>, limit: usize) -> Result<(), Error> {
        let changed: Vec<(String, Value)> = object
            .into_iter()
            .filter(|(key, value)| self.map.get(key) != Some(value))
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let mut merged = self.map.clone();
        merged.extend(changed.iter().cloned());
        let len = checked_len(&merged, limit)?;
        self.map = merged;
        self.len = Some(len);
        for (key, _) in changed {
            self.changes.record_set(key);
        }
        self.dirty = true;
        Ok(())
    }

    /// Replaces the user's keys with `object`'s; the engine's own keys are kept.
    pub(super) fn reset(&mut self, object: impl Serialize, limit: usize) -> Result<(), Error> {
        let mut data = to_object(object)?;
        for (key, value) in self.map.iter().filter(|(key, _)| is_reserved(key)) {
            data.insert(key.clone(), value.clone());
        }
        if data == self.map {
            return Ok(());
        }
        let len = checked_len(&data, limit)?;
        self.map = data;
        self.len = Some(len);
        self.mark_replaced();
        Ok(())
    }

    /// Deletes a user's `key`; an absent key is no change.
    pub(super) fn delete(&mut self, key: &str) -> Result<(), Error> {
        check_key(key)?;
        self.remove(key);
        Ok(())
    }

    /// Deletes every key but the engine's own.
    pub(super) fn delete_all(&mut self) {
        let keys: Vec<String> = self
            .map
            .keys()
            .filter(|key| !is_reserved(key))
            .cloned()
            .collect();
        for key in keys {
            self.remove(&key);
        }
    }

    /// Sets `key`, keeping the size within `limit`; an equal value is no change.
    fn put(&mut self, key: String, value: Value, limit: usize) -> Result<(), Error> {
        if self.map.get(&key) == Some(&value) {
            return Ok(());
        }
        let len = self.len();
        let new_len = match self.map.get(&key) {
            Some(old) => len - entry_len(&key, old) + entry_len(&key, &value),
            None if self.map.is_empty() => 1 + entry_len(&key, &value),
            None => len + entry_len(&key, &value),
        };
        check_len(new_len, limit)?;
        self.map.insert(key.clone(), value);
        self.len = Some(new_len);
        self.changes.record_set(key);
        self.dirty = true;
        Ok(())
    }

    fn remove(&mut self, key: &str) {
        let len = self.len();
        if let Some(old) = self.map.remove(key) {
            let entry = entry_len(key, &old);
            self.len = Some(if self.map.is_empty() { 2 } else { len - entry });
            self.changes.record_delete(key.to_owned());
            self.dirty = true;
        }
    }

    /// The size of the data as JSON.
    fn len(&mut self) -> usize {
        *self.len.get_or_insert_with(|| json_len(&self.map))
    }
}

fn is_reserved(key: &str) -> bool {
    key.starts_with("__")
}

fn check_key(key: &str) -> Result<(), Error> {
    if is_reserved(key) {
        Err(Error::ReservedKey)
    } else {
        Ok(())
    }
}

fn to_object(object: impl Serialize) -> Result<Map<String, Value>, Error> {
    match serde_json::to_value(object).map_err(|e| Error::Serialize(DataError::new(&e)))? {
        Value::Object(map) if map.keys().any(|key| is_reserved(key)) => Err(Error::ReservedKey),
        Value::Object(map) => {
            map.values().try_for_each(check_depth)?;
            Ok(map)
        }
        _ => Err(Error::NotAnObject),
    }
}

/// Refuses a value nested deeper than [`MAX_DEPTH`], looking no deeper than that.
fn check_depth(value: &Value) -> Result<(), Error> {
    fn within(value: &Value, levels: usize) -> bool {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => return true,
        };
        levels > 0 && children.into_iter().all(|child| within(child, levels - 1))
    }
    if within(value, MAX_DEPTH) {
        Ok(())
    } else {
        Err(Error::TooDeep { limit: MAX_DEPTH })
    }
}

fn check_len(size: usize, limit: usize) -> Result<(), Error> {
    if size > limit {
        return Err(Error::DataTooLarge { size, limit });
    }
    Ok(())
}

fn checked_len(map: &Map<String, Value>, limit: usize) -> Result<usize, Error> {
    let len = json_len(map);
    check_len(len, limit)?;
    Ok(len)
}

/// The size of `value` as JSON, in bytes, without building the string.
fn json_len(value: &impl Serialize) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serializing a `Value` or a map of them cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// The bytes `"key":value` adds to an object, with its separating comma.
fn entry_len(key: &str, value: &Value) -> usize {
    json_len(&key) + 1 + json_len(value) + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMIT: usize = 1 << 20;

    /// The kept size must equal the real JSON size after every kind of change.
    #[test]
    fn the_size_is_tracked_exactly() {
        let mut data = Data::default();
        let exact = |data: &mut Data| {
            let real = serde_json::to_string(&data.map).unwrap().len();
            assert_eq!(data.len(), real, "data {:?}", data.map);
        };
        exact(&mut data);
        data.set("a".into(), 1, LIMIT).unwrap();
        exact(&mut data);
        data.set("b".into(), "text with \"quotes\" and é", LIMIT)
            .unwrap();
        exact(&mut data);
        data.set("a".into(), json!({"nested": [1, 2, 3]}), LIMIT)
            .unwrap();
        exact(&mut data);
        data.set_custom_duration(Duration::from_secs(5), LIMIT)
            .unwrap();
        exact(&mut data);
        data.delete("b").unwrap();
        exact(&mut data);
        data.set_many(json!({"x": 1, "a": null}), LIMIT).unwrap();
        exact(&mut data);
        data.delete_all();
        exact(&mut data);
        data.reset(json!({"r": "s"}), LIMIT).unwrap();
        exact(&mut data);
        data.delete("r").unwrap();
        exact(&mut data);
    }

    #[test]
    fn oversize_changes_are_refused_and_lose_nothing() {
        // {"a":"xxxxx"} is 13 bytes.
        let mut data = Data::default();
        data.set("a".into(), "xxxxx", 13).unwrap();
        let refused = data.set("a".into(), "xxxxxx", 13).unwrap_err();
        assert!(
            matches!(
                refused,
                Error::DataTooLarge {
                    size: 14,
                    limit: 13
                }
            ),
            "{refused:?}"
        );
        assert!(matches!(
            data.set_many(json!({"b": 1}), 13),
            Err(Error::DataTooLarge { .. })
        ));
        assert!(matches!(
            data.reset(json!({"a": "xxxxxxx"}), 13),
            Err(Error::DataTooLarge { .. })
        ));
        assert_eq!(data.get::<String>("a").unwrap().as_deref(), Some("xxxxx"));
        assert_eq!(data.get_all().len(), 1);
    }

    #[test]
    fn r20_values_nested_deeper_than_the_limit_are_refused_and_lose_nothing() {
        fn nested(depth: usize) -> Value {
            (1..depth).fold(json!([]), |inner, _| json!([inner]))
        }
        let mut data = Data::default();
        data.set("deep".into(), nested(MAX_DEPTH), LIMIT).unwrap();
        assert!(matches!(
            data.set("deeper".into(), nested(MAX_DEPTH + 1), LIMIT),
            Err(Error::TooDeep { limit: MAX_DEPTH })
        ));
        assert!(matches!(
            data.set_many(json!({"a": 1, "b": nested(MAX_DEPTH + 1)}), LIMIT),
            Err(Error::TooDeep { .. })
        ));
        assert!(matches!(
            data.reset(json!({"c": nested(200)}), LIMIT),
            Err(Error::TooDeep { .. })
        ));
        assert_eq!(data.get_all().len(), 1);
        // What was accepted is read back: the data is one level more, within the parser's.
        let text = serde_json::to_string(&data.map).unwrap();
        let back: Map<String, Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, data.map);
    }

    #[test]
    fn reserved_keys_are_the_engines() {
        let mut data = Data::default();
        data.set_custom_duration(Duration::from_secs(60), LIMIT)
            .unwrap();
        assert!(matches!(
            data.set("__x".into(), 1, LIMIT),
            Err(Error::ReservedKey)
        ));
        assert!(matches!(
            data.set_many(json!({"__y": 1}), LIMIT),
            Err(Error::ReservedKey)
        ));
        assert!(matches!(data.delete(DURATION_KEY), Err(Error::ReservedKey)));
        assert_eq!(data.get::<u64>(DURATION_KEY).unwrap(), None);
        data.reset(json!({"a": 1}), LIMIT).unwrap();
        data.delete_all();
        assert_eq!(data.custom_duration(), Some(Duration::from_secs(60)));
        assert!(data.get_all().is_empty());
    }

    #[test]
    fn r14_a_value_of_the_wrong_type_is_reported_without_the_value() {
        let mut data = Data::default();
        data.set("token".into(), "hunter2", LIMIT).unwrap();
        let error = data.get::<u64>("token").unwrap_err();
        let chain = format!(
            "{error} {:?} {}",
            error,
            std::error::Error::source(&error).unwrap()
        );
        assert!(!chain.contains("hunter2"), "{chain}");
        assert!(chain.contains("token"), "{chain}");
    }

    #[test]
    fn r7_equal_values_are_no_change() {
        let mut data = Data::stored(json!({"a": 1}).as_object().unwrap().clone());
        data.set("a".into(), 1, LIMIT).unwrap();
        data.set_many(json!({"a": 1}), LIMIT).unwrap();
        data.reset(json!({"a": 1}), LIMIT).unwrap();
        data.delete("absent").unwrap();
        assert!(!data.is_dirty());
        data.set("a".into(), 2, LIMIT).unwrap();
        assert!(data.is_dirty());
        assert_eq!(data.take_changes(), Changes::new().with_set("a"));
        assert!(!data.is_dirty());
    }
}
