//! [`Typed`]: a value of the app's own type kept in the session under one key, and an axum
//! extractor for it; [`SessionData`], the trait that names the key.

use std::fmt;
use std::ops::Deref;

use axum_core::extract::FromRequestParts;
use http::request::Parts;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{DataError, Error};
use crate::extract::SessionRejection;
use crate::session::Session;

/// A type kept in the session under one key: the app names the key once, with the type, and
/// handlers take [`Typed<Self>`](Typed) instead of spelling it.
///
/// A value that is absent reads as [`Default::default`], so a new visitor needs no special
/// case. The key must not begin with `__` (those are the engine's): [`Typed::load`] refuses it
/// with [`Error::ReservedKey`].
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use session_engine::SessionData;
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Cart {
///     items: Vec<String>,
/// }
///
/// impl SessionData for Cart {
///     const KEY: &'static str = "cart";
/// }
/// ```
///
/// The value is kept as JSON, so a struct can change between releases the way serde allows:
/// a field added with `#[serde(default)]` reads as its default from older sessions, and a
/// field removed is ignored. A change that serde cannot read (a field whose type changed) is
/// an [`Error::Deserialize`] naming the key, never a panic; see [`Typed`] for starting over.
pub trait SessionData: Serialize + DeserializeOwned + Default {
    /// The session key the value is kept under.
    const KEY: &'static str;
}

/// The request's session, started, and the [`SessionData`] value `T` read from it: an axum
/// extractor that dereferences to `T`, whose [`set`](Self::set), [`update`](Self::update) and
/// [`remove`](Self::remove) write back through [`Session::set`] and [`Session::delete`].
///
/// Changes follow every rule of the session's own data: a value whose JSON is unchanged is no
/// change (and an absent value counts as its default, so a visitor who only reads gets no
/// session), a change that would take the data past
/// [`max_data_bytes`](crate::SessionEngineBuilder::max_data_bytes) or nest too deep is
/// refused and leaves the value as it was, and the store is sent only the key that changed.
///
/// ```
/// use axum::Router;
/// use axum::routing::{get, post};
/// use serde::{Deserialize, Serialize};
/// use session_engine::{Error, SessionData, SessionEngine, SessionLayer, Typed};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Cart {
///     items: Vec<String>,
/// }
///
/// impl SessionData for Cart {
///     const KEY: &'static str = "cart";
/// }
///
/// async fn show(cart: Typed<Cart>) -> String {
///     cart.items.join(", ")
/// }
///
/// async fn add(mut cart: Typed<Cart>) -> Result<String, Error> {
///     let count = cart.update(|cart| {
///         cart.items.push("tea".to_owned());
///         cart.items.len()
///     })?;
///     Ok(count.to_string())
/// }
///
/// # fn app() -> Result<Router, session_engine::ConfigError> {
/// let engine = SessionEngine::builder()
///     .secret("a secret of at least thirty-two bytes!")
///     .build()?;
/// let app: Router = Router::new()
///     .route("/cart", get(show))
///     .route("/cart/tea", post(add))
///     .layer(SessionLayer::new(engine));
/// # Ok(app) }
/// # app().unwrap();
/// ```
///
/// The value is read once, when the extractor runs; [`update`](Self::update) starts from the
/// session's current value, so it never undoes a change made through another handle, and
/// [`session`](Self::session) gives the [`Session`] itself (for `roll`, `destroy`,
/// `invalidate`, or other keys).
///
/// # Rejections
///
/// As the [`Session`] extractor's: a 500 naming `SessionLayer` without one, and the opaque 503
/// or 500 of a store that fails to start the session. A stored value that is not a `T` (written
/// by an older release whose type had another shape) is [`SessionRejection::Data`], an opaque
/// 500 that logs the [`Error::Deserialize`] naming the key; the session and its other keys are
/// untouched. A handler that would rather start over takes the [`Session`] and loads the value
/// itself:
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Default, Serialize, Deserialize)]
/// # struct Cart { items: Vec<String> }
/// # impl SessionData for Cart { const KEY: &'static str = "cart"; }
/// use session_engine::{Error, Session, SessionData, Typed};
///
/// async fn show(session: Session) -> Result<String, Error> {
///     let cart = match Typed::<Cart>::load(session.clone()).await {
///         // Kept by a release whose cart had another shape: an empty cart instead.
///         Err(Error::Deserialize { .. }) => {
///             session.delete(Cart::KEY)?;
///             Typed::load(session).await?
///         }
///         cart => cart?,
///     };
///     Ok(cart.items.join(", "))
/// }
/// ```
#[derive(Clone)]
pub struct Typed<T> {
    session: Session,
    value: T,
}

impl<T: SessionData> Typed<T> {
    /// Starts `session` (as the [`Session`] extractor does) and reads `T` from it: the value
    /// under [`T::KEY`](SessionData::KEY), or `T::default()` when there is none.
    ///
    /// # Errors
    ///
    /// The errors of [`Session::start`] (the store failed); [`Error::Deserialize`], naming the
    /// key, when the stored value is not a `T`; [`Error::ReservedKey`] when `T::KEY` begins
    /// with `__`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Default, Serialize, Deserialize)]
    /// # struct Cart { items: Vec<String> }
    /// # impl session_engine::SessionData for Cart { const KEY: &'static str = "cart"; }
    /// use session_engine::{Error, LazySession, Typed};
    ///
    /// /// The cart's size, read only when the page shows it: other pages read no session.
    /// async fn badge(session: LazySession, shown: bool) -> Result<Option<usize>, Error> {
    ///     if !shown {
    ///         return Ok(None);
    ///     }
    ///     let cart = Typed::<Cart>::load(session.into_inner()).await?;
    ///     Ok(Some(cart.items.len()))
    /// }
    /// ```
    pub async fn load(session: Session) -> Result<Self, Error> {
        session.start().await?;
        Self::read(session)
    }

    /// Reads `T` from a started session.
    fn read(session: Session) -> Result<Self, Error> {
        if T::KEY.starts_with("__") {
            return Err(Error::ReservedKey);
        }
        let value = session.get::<T>(T::KEY)?.unwrap_or_default();
        Ok(Self { session, value })
    }

    /// Replaces the value with `value`, in this handle and in the session.
    ///
    /// # Errors
    ///
    /// The errors of [`Session::set`]: [`Error::Serialize`], [`Error::TooDeep`] and
    /// [`Error::DataTooLarge`]; the value is then unchanged, here and in the session.
    ///
    /// # Examples
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Default, Serialize, Deserialize)]
    /// # struct Cart { items: Vec<String> }
    /// # impl session_engine::SessionData for Cart { const KEY: &'static str = "cart"; }
    /// # async fn empty(mut cart: session_engine::Typed<Cart>) -> Result<(), session_engine::Error> {
    /// cart.set(Cart::default())?;
    /// assert!(cart.items.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn set(&mut self, value: T) -> Result<(), Error> {
        let stored = self.session.get::<Value>(T::KEY)?;
        self.write(stored, value)
    }

    /// Changes the value in place with `change` and writes the result back; returns what
    /// `change` returned. It starts from the session's current value (which is this handle's
    /// unless another handle changed the key), and writes only a value whose JSON differs.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set), and [`Error::Deserialize`] when another handle stored something
    /// that is not a `T` under the key since this one read it. On an error the value is
    /// unchanged, here and in the session.
    ///
    /// # Examples
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Default, Serialize, Deserialize)]
    /// # struct Cart { items: Vec<String> }
    /// # impl session_engine::SessionData for Cart { const KEY: &'static str = "cart"; }
    /// # async fn add(mut cart: session_engine::Typed<Cart>) -> Result<(), session_engine::Error> {
    /// let count = cart.update(|cart| {
    ///     cart.items.push("scones".to_owned());
    ///     cart.items.len()
    /// })?;
    /// assert_eq!(count, cart.items.len());
    /// # Ok(()) }
    /// ```
    pub fn update<R>(&mut self, change: impl FnOnce(&mut T) -> R) -> Result<R, Error> {
        let stored = self.session.get::<Value>(T::KEY)?;
        let mut value = match &stored {
            Some(json) => decode(json)?,
            None => T::default(),
        };
        let result = change(&mut value);
        self.write(stored, value)?;
        Ok(result)
    }

    /// Deletes the key from the session; the value reads as `T::default()` from now on.
    /// Returns the value this handle held.
    ///
    /// # Errors
    ///
    /// The errors of [`Session::delete`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Default, Serialize, Deserialize)]
    /// # struct Cart { items: Vec<String> }
    /// # impl session_engine::SessionData for Cart { const KEY: &'static str = "cart"; }
    /// # async fn checkout(mut cart: session_engine::Typed<Cart>) -> Result<String, session_engine::Error> {
    /// let bought = cart.remove()?;
    /// Ok(format!("{} items on their way", bought.items.len()))
    /// # }
    /// ```
    pub fn remove(&mut self) -> Result<T, Error> {
        self.session.delete(T::KEY)?;
        Ok(std::mem::take(&mut self.value))
    }

    /// Writes `value` where `stored` was (`None`: absent), unless its JSON is the same (an
    /// absent value's being its default's), then keeps it.
    fn write(&mut self, stored: Option<Value>, value: T) -> Result<(), Error> {
        let json =
            serde_json::to_value(&value).map_err(|e| Error::Serialize(DataError::new(&e)))?;
        let unchanged = match stored {
            Some(stored) => stored == json,
            None => {
                let default = serde_json::to_value(T::default())
                    .map_err(|e| Error::Serialize(DataError::new(&e)))?;
                default == json
            }
        };
        if !unchanged {
            self.session.set(T::KEY, json)?;
        }
        self.value = value;
        Ok(())
    }
}

impl<T> Typed<T> {
    /// The session the value is kept in: for `roll`, `destroy`, `invalidate`, `save` or other
    /// keys.
    #[must_use]
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The value, without the session.
    #[must_use]
    pub fn into_inner(self) -> T {
        self.value
    }
}

/// The key and the session, never the value: session data stays out of logs, as the
/// session's own `Debug` keeps it out.
impl<T: SessionData> fmt::Debug for Typed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Typed")
            .field("key", &T::KEY)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl<T> Deref for Typed<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// `T` from its stored JSON, or the error that names the key.
fn decode<T: SessionData>(json: &Value) -> Result<T, Error> {
    T::deserialize(json).map_err(|error| Error::Deserialize {
        key: T::KEY.to_owned(),
        source: DataError::new(&error),
    })
}

/// Starts the session, as the [`Session`] extractor does, and reads `T`.
impl<T, S> FromRequestParts<S> for Typed<T>
where
    T: SessionData + Send,
    S: Send + Sync,
{
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state).await?;
        Self::read(session).map_err(SessionRejection::Data)
    }
}

#[cfg(all(test, feature = "memory-store"))]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;
    use crate::engine::SessionEngine;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Cart {
        items: Vec<String>,
    }

    impl SessionData for Cart {
        const KEY: &'static str = "cart";
    }

    /// A value that can be made as large or as deep as a test needs.
    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Blob(Value);

    impl SessionData for Blob {
        const KEY: &'static str = "blob";
    }

    #[derive(Default, Serialize, Deserialize)]
    struct Reserved;

    impl SessionData for Reserved {
        const KEY: &'static str = "__mine";
    }

    /// A new visitor's session, not started, on an engine whose data may hold 200 bytes.
    fn session() -> Session {
        let engine = SessionEngine::builder()
            .secret("a test secret of at least 32 bytes")
            .max_data_bytes(200)
            .build()
            .expect("the test engine builds");
        let credentials = engine.credentials(&http::HeaderMap::new());
        Session::new(engine, credentials)
    }

    fn items(names: &[&str]) -> Cart {
        Cart {
            items: names.iter().map(|&name| name.to_owned()).collect(),
        }
    }

    #[tokio::test]
    async fn load_starts_the_session_and_reads_an_absent_value_as_its_default() {
        let session = session();
        let cart = Typed::<Cart>::load(session.clone()).await.unwrap();
        assert!(session.ready());
        assert_eq!(*cart, Cart::default());
        // Reading stored nothing.
        assert_eq!(session.get::<Value>("cart").unwrap(), None);
    }

    #[tokio::test]
    async fn set_update_and_remove_write_through_the_session() {
        let session = session();
        let mut cart = Typed::<Cart>::load(session.clone()).await.unwrap();
        cart.set(items(&["tea"])).unwrap();
        assert_eq!(session.get::<Cart>("cart").unwrap(), Some(items(&["tea"])));
        let count = cart
            .update(|cart| {
                cart.items.push("scones".to_owned());
                cart.items.len()
            })
            .unwrap();
        assert_eq!(count, 2);
        assert_eq!(*cart, items(&["tea", "scones"]));
        assert_eq!(
            session.get::<Cart>("cart").unwrap(),
            Some(items(&["tea", "scones"]))
        );
        assert_eq!(cart.remove().unwrap(), items(&["tea", "scones"]));
        assert_eq!(*cart, Cart::default());
        assert_eq!(session.get::<Value>("cart").unwrap(), None);
        // A later handle of the same session reads what is there.
        assert_eq!(
            *Typed::<Cart>::load(session).await.unwrap(),
            Cart::default()
        );
    }

    #[tokio::test]
    async fn r7_the_default_where_nothing_is_stored_is_no_change() {
        let session = session();
        let mut cart = Typed::<Cart>::load(session.clone()).await.unwrap();
        cart.update(|cart| cart.items.retain(|item| item != "tea"))
            .unwrap();
        cart.set(Cart::default()).unwrap();
        assert_eq!(session.get::<Value>("cart").unwrap(), None);
        // Where something is stored, the default replaces it.
        cart.set(items(&["tea"])).unwrap();
        cart.set(Cart::default()).unwrap();
        assert_eq!(
            session.get::<Value>("cart").unwrap(),
            Some(json!({"items": []}))
        );
    }

    #[tokio::test]
    async fn update_starts_from_the_sessions_current_value() {
        let session = session();
        let mut cart = Typed::<Cart>::load(session.clone()).await.unwrap();
        // Another handle of the same request changes the key meanwhile.
        session.set("cart", items(&["jam"])).unwrap();
        cart.update(|cart| cart.items.push("tea".to_owned()))
            .unwrap();
        assert_eq!(*cart, items(&["jam", "tea"]));
        assert_eq!(
            session.get::<Cart>("cart").unwrap(),
            Some(items(&["jam", "tea"]))
        );
        // A logout that begins a fresh session: the next update starts from an empty cart.
        session.invalidate().await.unwrap();
        cart.update(|cart| cart.items.push("scones".to_owned()))
            .unwrap();
        assert_eq!(*cart, items(&["scones"]));
        assert_eq!(
            session.get::<Cart>("cart").unwrap(),
            Some(items(&["scones"]))
        );
    }

    #[tokio::test]
    async fn an_undecodable_value_is_an_error_naming_the_key_and_the_rest_works() {
        let session = session();
        session.start().await.unwrap();
        session
            .set("cart", 7)
            .unwrap()
            .set("theme", "dark")
            .unwrap();
        let error = Typed::<Cart>::load(session.clone()).await.unwrap_err();
        assert!(
            matches!(&error, Error::Deserialize { key, .. } if key == "cart"),
            "{error:?}"
        );
        assert!(error.to_string().contains("\"cart\""), "{error}");
        // The session and its other keys are untouched.
        assert_eq!(
            session.get::<String>("theme").unwrap().as_deref(),
            Some("dark")
        );
        assert_eq!(session.get::<u64>("cart").unwrap(), Some(7));
        // A handle that read the cart before another one broke it fails to update it, and
        // changes nothing.
        session.set("cart", items(&["tea"])).unwrap();
        let mut cart = Typed::<Cart>::load(session.clone()).await.unwrap();
        session.set("cart", "not a cart").unwrap();
        let error = cart.update(|cart| cart.items.clear()).unwrap_err();
        assert!(matches!(&error, Error::Deserialize { key, .. } if key == "cart"));
        assert_eq!(*cart, items(&["tea"]));
        // Replacing it works.
        cart.set(items(&["jam"])).unwrap();
        assert_eq!(session.get::<Cart>("cart").unwrap(), Some(items(&["jam"])));
        // Starting over, as the docs show: delete the key, load again.
        session.set("cart", 7).unwrap();
        assert!(Typed::<Cart>::load(session.clone()).await.is_err());
        session.delete(Cart::KEY).unwrap();
        assert_eq!(
            *Typed::<Cart>::load(session).await.unwrap(),
            Cart::default()
        );
    }

    #[tokio::test]
    async fn r20_a_change_past_the_limits_is_refused_and_changes_nothing() {
        let session = session();
        let mut blob = Typed::<Blob>::load(session.clone()).await.unwrap();
        blob.set(Blob(json!("small"))).unwrap();
        let error = blob
            .update(|blob| blob.0 = json!("x".repeat(300)))
            .unwrap_err();
        assert!(matches!(error, Error::DataTooLarge { .. }), "{error:?}");
        assert_eq!(*blob, Blob(json!("small")));
        assert_eq!(
            session.get::<Blob>("blob").unwrap(),
            Some(Blob(json!("small")))
        );

        // Deeper than any store can read back.
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!([deep]);
        }
        let error = blob.set(Blob(deep)).unwrap_err();
        assert!(matches!(error, Error::TooDeep { .. }), "{error:?}");
        assert_eq!(*blob, Blob(json!("small")));
    }

    #[tokio::test]
    async fn r14_debug_never_shows_the_value() {
        let mut cart = Typed::<Cart>::load(session()).await.unwrap();
        cart.set(items(&["a secret gift"])).unwrap();
        let debug = format!("{cart:?}");
        assert!(debug.contains("\"cart\""), "{debug}");
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[tokio::test]
    async fn a_reserved_key_is_refused() {
        let error = Typed::<Reserved>::load(session()).await.unwrap_err();
        assert!(matches!(error, Error::ReservedKey), "{error:?}");
    }
}
