//! SPEC 7.4: the `session` span of each request that uses its session, with its outcome; the
//! `session_store` span of each store call; the counters and the latency histogram recorded
//! through the `metrics` facade. Every outcome is driven (new, read, written, touched, rolled,
//! destroyed, absent, a store error, a time-out), and no field or label ever carries an id, a
//! store key, a user name or a data value. With 7.5's read cache, its hits, misses, fills,
//! invalidations and resets, and whether it serves.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use session_engine::observability;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

use crate::faults::{Fault, Hook};
use crate::harness::{Harness, MINUTE, store_key};

/// A span as the subscriber saw it: its name, its parent's name, and its fields as text.
#[derive(Clone, Debug)]
struct Seen {
    name: &'static str,
    parent: Option<&'static str>,
    fields: BTreeMap<&'static str, String>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// Where a span's record sits in the captured list.
struct Index(usize);

/// A `tracing` layer that keeps every span with its fields, those recorded later too.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Seen>>>);

struct Fields<'a>(&'a mut BTreeMap<&'static str, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a new span is known");
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.0.lock().unwrap();
        spans.push(Seen {
            name: attrs.metadata().name(),
            parent: span.parent().map(|parent| parent.name()),
            fields,
        });
        span.extensions_mut().insert(Index(spans.len() - 1));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a recorded span is known");
        let extensions = span.extensions();
        let Index(index) = extensions.get::<Index>().expect("indexed when made");
        values.record(&mut Fields(&mut self.0.lock().unwrap()[*index].fields));
    }
}

impl Spans {
    fn named(&self, name: &str) -> Vec<Seen> {
        let spans = self.0.lock().unwrap();
        spans.iter().filter(|s| s.name == name).cloned().collect()
    }

    /// The outcomes of the `session` spans, in order; emptied.
    fn outcomes(&self) -> Vec<String> {
        let outcomes = self
            .named("session")
            .iter()
            .map(|s| s.field("outcome").unwrap_or("(none)").to_owned())
            .collect();
        self.0.lock().unwrap().retain(|s| s.name != "session");
        outcomes
    }

    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
}

/// What this test thread's spans and metrics show, while it lives.
struct Watch {
    spans: Spans,
    metrics: Snapshotter,
    /// What the snapshots taken so far held (a snapshot drains the recorder, each gauge
    /// included: its values add up to the gauge's).
    totals: Mutex<BTreeMap<String, f64>>,
    _tracing: DefaultGuard,
    _metrics: metrics::LocalRecorderGuard<'static>,
}

impl Watch {
    /// Captures this thread's spans (a `#[tokio::test]` runs its tasks on it) and metrics.
    fn new() -> Self {
        // As in `logs::capture`: a second dispatcher that lives as long as the process makes
        // every callsite's interest consult this thread's subscriber too.
        static SECOND: OnceLock<tracing::Dispatch> = OnceLock::new();
        SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
        let spans = Spans::default();
        let subscriber = tracing_subscriber::registry().with(spans.clone());
        let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
        Self {
            spans,
            metrics: recorder.snapshotter(),
            totals: Mutex::default(),
            _tracing: tracing::subscriber::set_default(subscriber),
            _metrics: metrics::set_default_local_recorder(recorder),
        }
    }

    /// Every metric recorded so far: its name and labels, and its value (a histogram's
    /// number of samples).
    fn metrics(&self) -> BTreeMap<String, f64> {
        let mut totals = self.totals.lock().unwrap();
        for (name, value) in self.snapshot() {
            *totals.entry(name).or_default() += value;
        }
        totals.clone()
    }

    /// What the recorder holds since the last snapshot.
    fn snapshot(&self) -> Vec<(String, f64)> {
        self.metrics
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let labels: Vec<String> = key
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                let name = format!("{}{{{}}}", key.name(), labels.join(","));
                let value = match value {
                    DebugValue::Counter(n) => n as f64,
                    DebugValue::Histogram(samples) => samples.len() as f64,
                    DebugValue::Gauge(value) => value.into_inner(),
                };
                (name, value)
            })
            .collect()
    }

    /// A counter's value, or a histogram's number of samples.
    fn metric(&self, name: &str) -> u64 {
        let value = self.gauge(name);
        assert!(value >= 0.0 && value.fract() == 0.0, "{name}: {value}");
        value as u64
    }

    fn gauge(&self, name: &str) -> f64 {
        self.metrics().get(name).copied().unwrap_or(0.0)
    }

    /// No span field and no metric label holds any of `secrets`.
    fn assert_nothing_of(&self, secrets: &[&str]) {
        let spans = self.spans.all();
        assert!(!spans.is_empty());
        for span in &spans {
            for (field, value) in &span.fields {
                for secret in secrets {
                    assert!(
                        !value.contains(secret),
                        "{field} of {span:?} holds {secret}"
                    );
                }
            }
        }
        for name in self.metrics().keys() {
            for secret in secrets {
                assert!(!name.contains(secret), "{name} holds {secret}");
            }
        }
    }
}

#[tokio::test]
async fn r7_4_each_outcome_has_its_span_and_its_counter() {
    let watch = Watch::new();
    let h = Harness::new();

    // new
    let first = h.get("/set?key=colour&value=ultramarine-42", None).await;
    assert_eq!(first.status, StatusCode::OK);
    let cookie = first.cookie();
    let id = first.cookie_id();
    assert_eq!(watch.spans.outcomes(), ["new"]);
    assert_eq!(
        watch.metric(&format!("{}{{}}", observability::SESSIONS_CREATED)),
        1
    );

    // read: within the touch interval, nothing is written
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "0");
    assert_eq!(watch.spans.outcomes(), ["read"]);

    // written
    assert_eq!(h.get("/visits", Some(&cookie)).await.body, "1");
    assert_eq!(watch.spans.outcomes(), ["written"]);
    assert_eq!(watch.metric("session_engine_sessions_written_total{}"), 1);

    // touched: past the touch interval (a minute by default)
    h.advance(2 * MINUTE);
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "1");
    assert_eq!(watch.spans.outcomes(), ["touched"]);
    assert_eq!(watch.metric("session_engine_sessions_touched_total{}"), 1);

    // rolled
    let login = h.post("/login?user=ada-lovelace", Some(&cookie)).await;
    assert_eq!(login.body, "true");
    let rolled_id = login.cookie_id();
    let cookie = login.cookie();
    assert_eq!(watch.spans.outcomes(), ["rolled"]);
    assert_eq!(watch.metric("session_engine_sessions_rolled_total{}"), 1);
    // A roll is no creation.
    assert_eq!(watch.metric("session_engine_sessions_created_total{}"), 1);

    // destroyed
    assert_eq!(h.post("/logout", Some(&cookie)).await.body, "ok");
    assert_eq!(watch.spans.outcomes(), ["destroyed"]);
    assert_eq!(watch.metric("session_engine_sessions_destroyed_total{}"), 1);

    // absent: the destroyed id, a forged cookie; a new session stored in its place is new
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "0");
    assert_eq!(h.get("/peek", Some("sid=forged.signature")).await.body, "0");
    assert_eq!(watch.spans.outcomes(), ["absent", "absent"]);
    assert_eq!(
        watch.metric("session_engine_sessions_absent_total{reason=missing}"),
        1
    );
    assert_eq!(
        watch.metric("session_engine_sessions_absent_total{reason=invalid}"),
        1
    );
    assert_eq!(h.get("/visits", Some(&cookie)).await.body, "1");
    assert_eq!(watch.spans.outcomes(), ["new"]);
    assert_eq!(
        watch.metric("session_engine_sessions_absent_total{reason=missing}"),
        2
    );

    // expired: a record the store still returns, which the engine's clock has seen expire
    let (cookie, _) = h.new_session().await;
    watch.spans.outcomes();
    h.advance(31 * MINUTE);
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "0");
    assert_eq!(watch.spans.outcomes(), ["absent"]);
    assert_eq!(
        watch.metric("session_engine_sessions_absent_total{reason=expired}"),
        1
    );

    // A request that never uses its session has no span, and calls no store.
    assert_eq!(h.get("/untouched", Some(&cookie)).await.body, "ok");
    assert_eq!(h.get("/health", None).await.body, "ok");
    assert!(watch.spans.outcomes().is_empty());

    // Every store call has its span, under its request's, with its hook, the store's name, its
    // outcome and its duration; and is in the histogram of its hook.
    let calls = watch.spans.named("session_store");
    assert!(calls.len() >= 10, "{calls:?}");
    for call in &calls {
        assert_eq!(call.parent, Some("session"), "{call:?}");
        assert_eq!(call.field("store"), Some("FaultyStore"), "{call:?}");
        assert_eq!(call.field("outcome"), Some("ok"), "{call:?}");
        let ms: f64 = call
            .field("duration_ms")
            .expect("a duration")
            .parse()
            .unwrap();
        assert!(ms >= 0.0, "{call:?}");
    }
    for hook in ["id", "read", "write", "touch", "destroy"] {
        let spans = calls
            .iter()
            .filter(|c| c.field("hook") == Some(hook))
            .count();
        assert!(spans > 0, "{hook}");
        let histogram = format!("session_engine_store_call_seconds{{hook={hook}}}");
        assert_eq!(watch.metric(&histogram), spans as u64, "{hook}");
    }
    let metrics = watch.metrics();
    assert!(
        !metrics
            .keys()
            .any(|k| k.contains("errors") || k.contains("timeouts")),
        "{metrics:?}"
    );

    let keys = [store_key(&id), store_key(&rolled_id)];
    watch.assert_nothing_of(&[
        &id,
        &rolled_id,
        &keys[0],
        &keys[1],
        "ada-lovelace",
        "ultramarine-42",
        "colour",
    ]);
}

#[tokio::test]
async fn r7_4_store_errors_are_counted_by_hook_and_kind() {
    let watch = Watch::new();
    let h = Harness::new();
    let (cookie, id) = h.new_session().await;
    watch.spans.outcomes();

    h.store.fail(Hook::Read, Fault::Backend);
    assert_eq!(
        h.get("/peek", Some(&cookie)).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    h.store.fail(Hook::Read, Fault::Unavailable);
    assert_eq!(
        h.get("/peek", Some(&cookie)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    h.store.heal(Hook::Read);
    h.store.fail(Hook::Write, Fault::Backend);
    assert_eq!(
        h.get("/visits", Some(&cookie)).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    h.store.heal(Hook::Write);
    assert_eq!(watch.spans.outcomes(), ["failed", "failed", "failed"]);
    assert_eq!(
        watch.metric("session_engine_store_errors_total{hook=read,kind=backend}"),
        1
    );
    assert_eq!(
        watch.metric("session_engine_store_errors_total{hook=read,kind=unavailable}"),
        1
    );
    assert_eq!(
        watch.metric("session_engine_store_errors_total{hook=write,kind=backend}"),
        1
    );
    let failed: Vec<_> = watch
        .spans
        .named("session_store")
        .into_iter()
        .filter_map(|s| Some((s.field("hook")?.to_owned(), s.field("outcome")?.to_owned())))
        .filter(|(_, outcome)| outcome != "ok")
        .collect();
    let failed: Vec<(&str, &str)> = failed
        .iter()
        .map(|(h, o)| (h.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        failed,
        [
            ("read", "backend"),
            ("read", "unavailable"),
            ("write", "backend")
        ]
    );

    // An undecodable record counts as an error of the store, and the session as absent.
    h.store.fail_times(Hook::Read, Fault::Undecodable, 1);
    assert_eq!(h.get("/peek", Some(&cookie)).await.body, "0");
    assert_eq!(watch.spans.outcomes(), ["absent"]);
    assert_eq!(
        watch.metric("session_engine_store_errors_total{hook=read,kind=undecodable}"),
        1
    );
    assert_eq!(
        watch.metric("session_engine_sessions_absent_total{reason=undecodable}"),
        1
    );

    // `Gone` is an answer of the contract, not a failure: the session is absent, found gone.
    h.store.fail_times(Hook::Write, Fault::Gone, 1);
    assert_eq!(h.get("/visits", Some(&cookie)).await.status, StatusCode::OK);
    assert_eq!(watch.spans.outcomes(), ["absent"]);
    assert_eq!(
        watch.metric("session_engine_sessions_absent_total{reason=gone}"),
        1
    );
    assert!(!watch.metrics().keys().any(|k| k.contains("kind=gone")));

    // Outside a request: the clean-up's span has no parent.
    h.store.fail(Hook::Cleanup, Fault::Backend);
    assert!(h.engine.cleanup().await.is_err());
    let cleanup = watch
        .spans
        .named("session_store")
        .pop()
        .expect("the clean-up's span");
    assert_eq!(
        (cleanup.field("hook"), cleanup.parent),
        (Some("cleanup"), None)
    );
    assert_eq!(
        watch.metric("session_engine_store_errors_total{hook=cleanup,kind=backend}"),
        1
    );

    let key = store_key(&id);
    watch.assert_nothing_of(&[&id, &key, super::faults::FAULT_MESSAGE]);
}

#[tokio::test(start_paused = true)]
async fn r7_4_a_timeout_is_counted_apart_from_errors() {
    let watch = Watch::new();
    let h = Harness::with(|b| b.store_timeout(Duration::from_secs(1)));
    let (cookie, id) = h.new_session().await;
    watch.spans.outcomes();
    h.store.delay(Hook::Read, Duration::from_secs(10));
    assert_eq!(
        h.get("/peek", Some(&cookie)).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(watch.spans.outcomes(), ["failed"]);
    let read = watch
        .spans
        .named("session_store")
        .pop()
        .expect("the read's span");
    assert_eq!(
        (read.field("hook"), read.field("outcome")),
        (Some("read"), Some("timeout"))
    );
    let ms: f64 = read.field("duration_ms").unwrap().parse().unwrap();
    assert!((1000.0..2000.0).contains(&ms), "{ms}");
    assert_eq!(
        watch.metric("session_engine_store_timeouts_total{hook=read}"),
        1
    );
    assert!(
        !watch.metrics().keys().any(|k| k.contains("errors")),
        "{:?}",
        watch.metrics()
    );
    let key = store_key(&id);
    watch.assert_nothing_of(&[&id, &key]);
}

/// `describe_metrics` gives every metric its help text, each name follows Prometheus'
/// conventions under one prefix, and the observability guide lists each one.
#[test]
fn r7_4_every_metric_is_described_under_one_prefix() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        observability::describe_metrics();
        for (name, kind, _) in observability::ALL {
            match kind {
                observability::Kind::Counter => metrics::counter!(name).increment(0),
                observability::Kind::Gauge => metrics::gauge!(name).set(0.0),
                observability::Kind::Histogram => metrics::histogram!(name).record(0.0),
            }
        }
    });
    let described = snapshotter.snapshot().into_vec();
    assert_eq!(described.len(), observability::ALL.len());
    for (key, unit, help, _) in described {
        let name = key.key().name();
        assert!(name.starts_with("session_engine_"), "{name}");
        assert!(help.is_some_and(|h| !h.is_empty()), "{name}");
        let kind = observability::ALL
            .iter()
            .find_map(|(n, kind, _)| (*n == name).then_some(*kind))
            .expect("listed");
        // A counter's name ends in `_total`, a histogram's in its unit, a gauge's in neither.
        let histogram = name.ends_with("_seconds");
        let counter = name.ends_with("_total");
        assert_eq!(histogram, kind == observability::Kind::Histogram, "{name}");
        assert_eq!(counter, kind == observability::Kind::Counter, "{name}");
        assert_eq!(unit.is_some(), histogram, "{name}");
    }
    // The guide's table has a row for each.
    let guide = include_str!("../../docs/observability.md");
    for (name, _, _) in observability::ALL {
        assert!(guide.contains(&format!("| `{name}` |")), "{name}");
    }
}

/// SPEC 7.4 with 7.5: the read cache counts each hit, miss, fill, refused fill, invalidation
/// (by origin) and reset (by cause), as `NearCache::stats` does, and a gauge says whether it
/// serves; no label holds a key.
#[cfg(feature = "near-cache")]
#[tokio::test]
async fn r7_4_the_near_cache_counts_its_hits_misses_and_invalidations() {
    use session_engine::store::cache::NearCache;
    use session_engine::{Changes, MemoryStore, Record, SessionStore as _, StoreKey, WriteMode};

    const HITS: &str = "session_engine_near_cache_hits_total{}";
    const MISSES: &str = "session_engine_near_cache_misses_total{}";
    const FILLS: &str = "session_engine_near_cache_fills_total{}";
    const REFUSED: &str = "session_engine_near_cache_fills_refused_total{}";
    const BY_CHANNEL: &str = "session_engine_near_cache_invalidations_total{origin=channel}";
    const OWN: &str = "session_engine_near_cache_invalidations_total{origin=own}";
    const SERVING: &str = "session_engine_near_cache_serving{}";
    let resets = |cause: &str| format!("session_engine_near_cache_resets_total{{cause={cause}}}");

    let watch = Watch::new();
    let cache = NearCache::new(MemoryStore::new(), 10);
    let feed = cache.invalidations();
    let key = StoreKey::from("near-cache-key-0042");
    let now = std::time::SystemTime::now();
    let record = Record::new(Default::default(), now, now + 30 * MINUTE);
    async fn read(cache: &NearCache<MemoryStore>, key: &StoreKey) {
        cache.read(key).await.unwrap().expect("the record");
    }

    // Not serving yet: every read is a miss, and nothing is kept. An own write drops its key
    // before the call and once it is answered.
    cache
        .write(&key, &record, &Changes::replace_all(), WriteMode::Insert)
        .await
        .unwrap();
    read(&cache, &key).await;
    assert_eq!(watch.metric(OWN), 2);
    assert_eq!((watch.metric(MISSES), watch.metric(FILLS)), (1, 0));
    assert_eq!(watch.gauge(SERVING), 0.0);

    // Up: a miss fills, then hits.
    feed.up();
    assert_eq!(watch.metric(&resets("up")), 1);
    assert_eq!(watch.gauge(SERVING), 1.0);
    for _ in 0..3 {
        read(&cache, &key).await;
    }
    assert_eq!(
        (
            watch.metric(MISSES),
            watch.metric(FILLS),
            watch.metric(HITS)
        ),
        (2, 1, 2)
    );

    // The channel drops the key; a read in flight across another drop is not kept.
    feed.invalidate(key.as_str());
    assert_eq!(watch.metric(BY_CHANNEL), 1);
    let in_flight = cache.read(&key);
    feed.invalidate(key.as_str());
    assert!(in_flight.await.unwrap().is_some());
    assert_eq!(
        (
            watch.metric(MISSES),
            watch.metric(REFUSED),
            watch.metric(BY_CHANNEL)
        ),
        (3, 1, 2)
    );

    // Messages lost: emptied, still serving. Down: emptied, not serving; up again.
    read(&cache, &key).await;
    feed.clear();
    assert_eq!(
        (watch.metric(&resets("clear")), watch.gauge(SERVING)),
        (1, 1.0)
    );
    feed.down();
    assert_eq!(
        (watch.metric(&resets("down")), watch.gauge(SERVING)),
        (1, 0.0)
    );
    read(&cache, &key).await;
    assert_eq!(watch.metric(FILLS), 2, "a read while down is not kept");
    feed.down();
    assert_eq!(
        watch.gauge(SERVING),
        0.0,
        "down twice is one cache not serving"
    );
    feed.up();
    assert_eq!(watch.gauge(SERVING), 1.0);

    // The metrics and `stats()` agree.
    let stats = cache.stats();
    let metrics = watch.metrics();
    let sum = |prefix: &str| -> u64 {
        let values = metrics.iter().filter(|(name, _)| name.starts_with(prefix));
        values.map(|(_, value)| *value as u64).sum()
    };
    assert_eq!(stats.hits, sum("session_engine_near_cache_hits_total"));
    assert_eq!(stats.misses, sum("session_engine_near_cache_misses_total"));
    assert_eq!(stats.fills, sum("session_engine_near_cache_fills_total"));
    assert_eq!(stats.fills_refused, sum(REFUSED));
    assert_eq!(
        stats.invalidations,
        sum("session_engine_near_cache_invalidations_total")
    );
    assert_eq!(stats.resets, sum("session_engine_near_cache_resets_total"));
    for name in metrics.keys() {
        assert!(!name.contains(key.as_str()), "{name} holds the key");
    }

    // The last handle on a serving cache gone: one cache fewer serving.
    drop(feed);
    drop(cache);
    assert_eq!(watch.gauge(SERVING), 0.0);
}
