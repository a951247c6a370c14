//! [`StoreFuture`]: what every store hook returns, either the answer itself or a boxed future
//! that will give it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::StoreError;

/// The answer of a store hook: ready at once, or to come.
///
/// A store that answers without waiting (in this process's memory, say) returns
/// [`StoreFuture::ready`]: the engine then takes the answer as it is, with no allocation and no
/// timer, and can finish a request within one poll. A store that waits on I/O returns
/// [`StoreFuture::boxed`].
///
/// As with a Tower `Service`'s future, a boxed future owns what it needs (`'static`): clone
/// the store's client or pool into it, and turn the hook's arguments into the query before
/// boxing.
///
/// ```
/// use session_engine::store::{StoreError, StoreFuture, StoreKey};
///
/// # #[derive(Clone)] struct Client;
/// # impl Client { async fn delete(&self, _key: String) -> Result<bool, StoreError> { Ok(true) } }
/// # struct MyStore { client: Client }
/// # impl MyStore {
/// fn destroy(&self, key: &StoreKey) -> StoreFuture<bool> {
///     let (client, key) = (self.client.clone(), key.as_str().to_owned());
///     StoreFuture::boxed(async move { client.delete(key).await })
/// }
/// # }
/// ```
#[must_use = "a store future does nothing unless awaited"]
pub struct StoreFuture<T>(Inner<T>);

enum Inner<T> {
    /// The answer; taken when polled.
    Ready(Option<Result<T, StoreError>>),
    Boxed(Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>),
}

impl<T> StoreFuture<T> {
    /// An answer the store already has.
    pub fn ready(result: Result<T, StoreError>) -> Self {
        Self(Inner::Ready(Some(result)))
    }

    /// An answer to come from `future`.
    pub fn boxed(future: impl Future<Output = Result<T, StoreError>> + Send + 'static) -> Self {
        Self(Inner::Boxed(Box::pin(future)))
    }

    /// The answer, if the store gave it at once; else the future itself, to await.
    ///
    /// # Errors
    ///
    /// The store future back when it is boxed (or its answer was already taken).
    pub fn into_ready(self) -> Result<Result<T, StoreError>, Self> {
        match self.0 {
            Inner::Ready(Some(result)) => Ok(result),
            inner => Err(Self(inner)),
        }
    }
}

// The answer is never pinned (it is moved out when taken) and the future is boxed: moving a
// `StoreFuture` is always fine, whatever `T` is.
impl<T> Unpin for StoreFuture<T> {}

impl<T> From<Result<T, StoreError>> for StoreFuture<T> {
    fn from(result: Result<T, StoreError>) -> Self {
        Self::ready(result)
    }
}

impl<T> Future for StoreFuture<T> {
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Inner::Ready(result) => Poll::Ready(
                result
                    .take()
                    .expect("a StoreFuture polled after it completed"),
            ),
            Inner::Boxed(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for StoreFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.0 {
            Inner::Ready(Some(_)) => "ready",
            Inner::Ready(None) => "taken",
            Inner::Boxed(_) => "boxed",
        };
        f.debug_tuple("StoreFuture").field(&state).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_answer_is_taken_without_polling() {
        let future = StoreFuture::ready(Ok(7));
        assert_eq!(future.into_ready().ok().map(Result::unwrap), Some(7));
        let boxed = StoreFuture::boxed(async { Ok(7) });
        assert!(boxed.into_ready().is_err());
    }

    #[tokio::test]
    async fn both_kinds_can_be_awaited() {
        assert_eq!(StoreFuture::ready(Ok(1)).await.unwrap(), 1);
        assert_eq!(StoreFuture::boxed(async { Ok(2) }).await.unwrap(), 2);
        let failed: StoreFuture<()> = Err(StoreError::Gone).into();
        assert!(matches!(failed.await, Err(StoreError::Gone)));
    }
}
