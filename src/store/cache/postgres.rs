//! The invalidation channel of a [`PostgresStore`]: `LISTEN`/`NOTIFY`.
//!
//! `NearCache::postgres` installs triggers on the store's table that, after any statement that
//! updates or deletes rows (the store's writes, touches, destroys and clean-up, and the update
//! branch of its insert, which overwrites an expired row), send the keys of those rows with
//! `pg_notify` on the table's channel, `session_engine.<the table's oid>`. A connection of
//! the cache's own `LISTEN`s on that channel, and each key it is told drops the record from
//! the cache. The triggers are statement-level, reading the statement's old rows from a
//! transition table: a clean-up that deletes a thousand rows sends about seven notifications
//! (of up to 7,000 bytes, some 140 session keys each), not one per row.
//!
//! A lost listening connection (closed, terminated, or an error on it) turns the cache off and
//! empty until a new connection listens again. Every second the channel is checked end to end:
//! the cache sends a probe on the channel (`pg_notify`, from the store's pool), and if it has
//! not come back 2 s later the channel counts as behind (or silently gone): off, and a new
//! connection listens. After any loss the cache serves again only once a probe sent after the
//! new `LISTEN` has come back.
//!
//! What the triggers cost every writer, and how to remove them, is told in the docs of
//! `NearCache::postgres`.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Invalidations, NearCache};
use crate::store::StoreError;
use crate::store::sql::{self, postgres::PostgresStore};

/// How long to wait before connecting again after a failed attempt to listen.
const RETRY: Duration = Duration::from_millis(200);
/// How often the channel is checked end to end: a probe sent on it must come back.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How late the probe may be before the channel counts as behind (or silently gone).
const PROBE_LATE: Duration = Duration::from_secs(2);
/// How long `NearCache::postgres` waits for its first probe.
const FIRST_PROBE: Duration = Duration::from_secs(5);
/// The function the triggers call, in the table's schema.
const FUNCTION: &str = "session_engine_near_cache";
/// The triggers, one per event: a trigger with a transition table has one event only.
const TRIGGERS: [(&str, &str); 3] = [
    (
        "session_engine_near_cache_update",
        "AFTER UPDATE ON {t} REFERENCING OLD TABLE AS gone",
    ),
    (
        "session_engine_near_cache_delete",
        "AFTER DELETE ON {t} REFERENCING OLD TABLE AS gone",
    ),
    (
        "session_engine_near_cache_truncate",
        "AFTER TRUNCATE ON {t}",
    ),
];
/// What the function does: the keys of the statement's old rows, sent on the table's channel
/// separated by newlines, in notifications of at most 7,000 bytes (PostgreSQL takes payloads
/// under 8,000). A key that cannot be sent so (longer than 1,000 bytes, or holding a newline;
/// no key the engine makes) and a `TRUNCATE` send an empty payload instead: drop everything.
const BODY: &str = "
DECLARE
  channel text := 'session_engine.' || TG_RELID;
  batch text;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_notify(channel, '');
    RETURN NULL;
  END IF;
  FOR batch IN
    SELECT string_agg(key, E'\\n') FROM (
      SELECT key, sum(octet_length(key) + 1)
        OVER (ORDER BY key ROWS UNBOUNDED PRECEDING) / 6000 AS part
      FROM gone WHERE octet_length(key) <= 1000 AND strpos(key, E'\\n') = 0
    ) AS keys GROUP BY part
  LOOP
    PERFORM pg_notify(channel, batch);
  END LOOP;
  IF EXISTS (SELECT 1 FROM gone WHERE octet_length(key) > 1000 OR strpos(key, E'\\n') > 0) THEN
    PERFORM pg_notify(channel, '');
  END IF;
  RETURN NULL;
END
";

/// What runs a [`NearCache`]'s PostgreSQL invalidation channel: the task that listens. Ended
/// (the task aborted, its connection closed) when the last clone of the cache is dropped.
pub struct PostgresListener {
    task: JoinHandle<()>,
    channel: Arc<str>,
    /// The process id of the listening backend; 0 while none listens.
    pid: Arc<AtomicU32>,
}

impl fmt::Debug for PostgresListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresListener")
            .field("channel", &self.channel)
            .field("backend_pid", &self.backend_pid())
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PostgresListener {
    /// The channel it listens on: `session_engine.<the table's oid>`.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The process id of the server backend that listens now (as `pg_stat_activity` and
    /// `pg_terminate_backend` know it), or `None` while it is connecting again.
    #[must_use]
    pub fn backend_pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }
}

impl NearCache<PostgresStore> {
    /// A cache of at most `capacity` records in front of `store`, kept coherent by PostgreSQL
    /// `LISTEN`/`NOTIFY` on a connection of its own, made with the store pool's settings (the
    /// same server, credentials and TLS).
    ///
    /// Returns once the connection listens and a probe sent on the channel has come back, so
    /// the cache serves from the start. From then on, a lost connection (closed, terminated, or
    /// failed) turns the cache off and empty until a new connection listens; a probe sent every
    /// second that has not come back 2 s later (a silent connection, or one that fell behind)
    /// does too. Either way the cache serves again only once a probe sent after the new
    /// `LISTEN` has come back.
    ///
    /// # The triggers it installs
    ///
    /// It first installs on the store's table, if they are not there yet, three
    /// statement-level triggers (`session_engine_near_cache_update`, `…_delete` and
    /// `…_truncate`, after `UPDATE`, `DELETE` and `TRUNCATE`) and the function they call,
    /// `session_engine_near_cache()`, in the table's schema. After each statement that
    /// changes or removes rows, they send the keys of those rows with `pg_notify` on the
    /// table's channel, `session_engine.<the table's oid>`, up to about 140 keys a notification
    /// (a `TRUNCATE`: one notification that empties the caches). The store's insert overwrites
    /// only an expired row, through `ON CONFLICT … DO UPDATE`, which the update trigger sees;
    /// a fresh insert needs no notice. The table must exist ([`PostgresStore::migrate`]).
    /// Installing them takes a lock on the table that waits for its writes in flight, once;
    /// instances starting at once install them one after another, under an advisory lock. The
    /// role needs the rights to create a function in the table's schema and triggers on the
    /// table (its owner's).
    ///
    /// What they cost: every update and delete of the table runs the function once (and so
    /// does the store's insert, whose `ON CONFLICT … DO UPDATE` runs the update triggers even
    /// when it inserts), and every statement that changes or removes rows sends a
    /// notification. PostgreSQL queues notifications at commit under a lock that is global to
    /// the server, so commits that notify are serialized, across every database of the
    /// server. For session writes (short, one row) the cost is small, but every writer of the
    /// table pays it, instances that run no cache and other programs included. A listening
    /// connection that stops reading holds back the server's notification queue (8 GB), and
    /// once it is full every notifying commit fails; the cache's own reads all the time, and
    /// is replaced once it falls 2 s behind.
    ///
    /// The triggers stay when the app stops. To remove them:
    ///
    /// ```sql
    /// DROP TRIGGER session_engine_near_cache_update ON sessions;
    /// DROP TRIGGER session_engine_near_cache_delete ON sessions;
    /// DROP TRIGGER session_engine_near_cache_truncate ON sessions;
    /// DROP FUNCTION session_engine_near_cache(); -- once no table of the schema uses it
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the server cannot be reached; [`StoreError::Backend`]
    /// when the table does not exist, the triggers cannot be made, or the probe does not come
    /// back within 5 s (`LISTEN` needs a session of its own on the server: through a pooler in
    /// transaction mode the probe never comes back).
    pub async fn postgres(store: PostgresStore, capacity: usize) -> Result<Self, StoreError> {
        let channel: Arc<str> = install(store.pool(), store.table_name()).await?.into();
        let options = PgConnectOptions::clone(&store.pool().connect_options());
        let mut probe = Probe::new(store.pool().clone(), Arc::clone(&channel));
        let cache = Self::new(store, capacity);
        let feed = cache.invalidations();
        let mut connection = Connection::open(options.clone(), &channel, &feed, &probe.prefix)
            .await
            .map_err(sql::postgres::error)?;
        let sent = probe.send();
        let back = tokio::time::timeout(FIRST_PROBE, async {
            while let Some(payload) = connection.probes.recv().await {
                if payload.as_deref() == Some(sent.as_str()) {
                    return true;
                }
            }
            false
        })
        .await;
        if back != Ok(true) {
            return Err(StoreError::backend(format!(
                "the probe sent on channel {channel} did not come back to the listening \
                 connection within {} s: LISTEN/NOTIFY does not reach it (through a pooler in \
                 transaction mode, it cannot)",
                FIRST_PROBE.as_secs()
            )));
        }
        feed.up();
        let pid = Arc::new(AtomicU32::new(connection.pid));
        let task = tokio::spawn(run(
            options,
            Arc::clone(&channel),
            probe,
            feed,
            connection,
            Arc::clone(&pid),
        ));
        Ok(cache.with_source(PostgresListener { task, channel, pid }))
    }

    /// What runs the invalidation channel of a cache made by `NearCache::postgres`.
    pub fn listener(&self) -> Option<&PostgresListener> {
        let source: &(dyn Any + Send + Sync) = self._source.as_deref()?;
        source.downcast_ref::<PostgresListener>()
    }
}

/// A name as PostgreSQL quotes it.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Installs the function and the triggers on `table` if they are not all there, as they are
/// now; returns the table's channel.
async fn install(pool: &PgPool, table: &str) -> Result<String, StoreError> {
    let quoted = sql::quote_table(table, true)?;
    let found = sqlx::query(
        "SELECT c.oid::int8, n.nspname::text, c.relname::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
    )
    .bind(&quoted)
    .fetch_optional(pool)
    .await
    .map_err(sql::postgres::error)?;
    let Some(found) = found else {
        return Err(StoreError::backend(format!(
            "table {table} does not exist: run PostgresStore::migrate first"
        )));
    };
    let (oid, schema, name): (i64, String, String) = (found.get(0), found.get(1), found.get(2));
    let channel = format!("session_engine.{oid}");
    let names: Vec<&str> = TRIGGERS.iter().map(|(name, _)| *name).collect();
    // The triggers there, calling the function as it is now: a read of the catalog, which
    // takes no lock that waits for the sessions' writes.
    let installed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid \
         WHERE t.tgrelid = $1::oid AND t.tgname = ANY($2) AND p.prosrc = $3",
    )
    .bind(oid)
    .bind(&names)
    .bind(BODY)
    .fetch_one(pool)
    .await
    .map_err(sql::postgres::error)?;
    if installed == 3 {
        return Ok(channel);
    }

    let table = format!("{}.{}", ident(&schema), ident(&name));
    let function = format!("{}.{FUNCTION}", ident(&schema));
    let mut tx = pool.begin().await.map_err(sql::postgres::error)?;
    // Instances starting at once install one after another; one lock for every table, since
    // tables of one schema share the function, which two cannot replace at once.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('session-engine near-cache'))")
        .execute(&mut *tx)
        .await
        .map_err(sql::postgres::error)?;
    sqlx::query(AssertSqlSafe(format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $body${BODY}$body$"
    )))
    .execute(&mut *tx)
    .await
    .map_err(sql::postgres::error)?;
    let present: Vec<String> = sqlx::query_scalar(
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = $1::oid AND tgname = ANY($2)",
    )
    .bind(oid)
    .bind(&names)
    .fetch_all(&mut *tx)
    .await
    .map_err(sql::postgres::error)?;
    for (trigger, when) in TRIGGERS {
        if present.iter().any(|name| name == trigger) {
            continue;
        }
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TRIGGER {trigger} {} FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
            when.replace("{t}", &table)
        )))
        .execute(&mut *tx)
        .await
        .map_err(sql::postgres::error)?;
    }
    tx.commit().await.map_err(sql::postgres::error)?;
    Ok(channel)
}

/// One listening connection. Its reading task drops the keys it is told at once, and passes
/// on the probes (`Some(payload)`), then `None` once the connection is lost; it ends when the
/// connection is dropped.
struct Connection {
    probes: mpsc::UnboundedReceiver<Option<String>>,
    pid: u32,
    reader: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    /// A connection of its own (a pool of one, so that a broken connection goes with it) that
    /// listens on `channel`, dropping from `feed` the keys it is told; a payload that starts
    /// with `probe` is a probe.
    async fn open(
        options: PgConnectOptions,
        channel: &str,
        feed: &Invalidations,
        probe: &str,
    ) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.ignore_pool_close_event(true);
        // A lost connection is told at once, not after a new one is made: the cache must stop
        // serving first.
        listener.eager_reconnect(false);
        listener.listen(channel).await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut listener)
            .await?;
        let (tx, probes) = mpsc::unbounded_channel();
        let (feed, probe) = (feed.clone(), probe.to_owned());
        let reader = tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        let payload = notification.payload();
                        if payload.starts_with(&probe) {
                            if tx.send(Some(payload.to_owned())).is_err() {
                                return;
                            }
                        } else if payload.is_empty() {
                            // A truncate, or keys too long to send: what changed is unknown.
                            feed.clear();
                        } else {
                            for key in payload.split('\n') {
                                feed.invalidate(key);
                            }
                        }
                    }
                    Ok(None) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                }
            }
        });
        Ok(Self {
            probes,
            pid: u32::try_from(pid).unwrap_or_default(),
            reader,
        })
    }
}

/// The probes sent on the channel, each with a payload of its own.
struct Probe {
    pool: PgPool,
    channel: Arc<str>,
    prefix: String,
    count: u64,
}

impl Probe {
    fn new(pool: PgPool, channel: Arc<str>) -> Self {
        // No key the engine makes has a `:`.
        let prefix = format!(
            "near-cache-probe:{}:",
            crate::store::random_id().unwrap_or_default()
        );
        Self {
            pool,
            channel,
            prefix,
            count: 0,
        }
    }

    /// Sends a new probe on the channel from the store's pool, without waiting for the answer;
    /// returns its payload.
    fn send(&mut self) -> String {
        self.count += 1;
        let payload = format!("{}{}", self.prefix, self.count);
        let (pool, channel, sent) = (
            self.pool.clone(),
            Arc::clone(&self.channel),
            payload.clone(),
        );
        tokio::spawn(async move {
            let _ = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&*channel)
                .bind(sent)
                .execute(&pool)
                .await;
        });
        payload
    }
}

async fn run(
    options: PgConnectOptions,
    channel: Arc<str>,
    mut probe: Probe,
    feed: Invalidations,
    mut connection: Connection,
    pid: Arc<AtomicU32>,
) {
    // The probe in flight: its payload, and when it was sent.
    let mut pending: Option<(String, Instant)> = None;
    // A new connection listens, the cache off until a probe sent after it comes back.
    let mut confirming = false;
    let mut tick = Instant::now() + PROBE_EVERY;
    loop {
        let lost = match tokio::time::timeout_at(tick.into(), connection.probes.recv()).await {
            Ok(Some(Some(payload))) => {
                if pending.as_ref().is_some_and(|(sent, _)| *sent == payload) {
                    pending = None;
                    if confirming {
                        // Listening again, and told of a notification sent after it.
                        confirming = false;
                        feed.up();
                    }
                }
                false
            }
            // The connection is lost, or it failed.
            Ok(Some(None) | None) => true,
            Err(_) => {
                tick = Instant::now() + PROBE_EVERY;
                match &pending {
                    // The last probe is late: the channel is behind or gone.
                    Some((_, sent)) if sent.elapsed() > PROBE_LATE => true,
                    Some(_) => false,
                    None => {
                        pending = Some((probe.send(), Instant::now()));
                        false
                    }
                }
            }
        };
        if lost {
            feed.down();
            pid.store(0, Ordering::Release);
            tracing::debug!("near cache: PostgreSQL invalidation channel lost, listening again");
            // Closes the old connection (a late one would otherwise keep the server's queue).
            drop(connection);
            connection = loop {
                match Connection::open(options.clone(), &channel, &feed, &probe.prefix).await {
                    Ok(connection) => break connection,
                    Err(failure) => {
                        tracing::debug!(%failure, "near cache: not listening yet");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            };
            pid.store(connection.pid, Ordering::Release);
            // Serving again once a probe sent after the LISTEN comes back, not before.
            confirming = true;
            pending = Some((probe.send(), Instant::now()));
            tick = Instant::now() + PROBE_EVERY;
        }
    }
}
