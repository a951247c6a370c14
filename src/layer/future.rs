//! [`ResponseFuture`]: the inner service's response, then the end of the session's request.

use std::fmt;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::response;
use crate::error;
use crate::error::Error;
use crate::session::{Finish, Finishing, Outcome, Session};

pin_project! {
    /// The response future of [`SessionService`](super::SessionService): the inner service's
    /// response, then the session's end-of-request store calls when some are needed. With a
    /// store that answers at once, both happen within one poll and nothing is allocated.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner {
            #[pin]
            future: F,
            session: Session,
        },
        // Boxed: only a store that must be waited for gets here, and the future stays small
        // for every other request.
        Finishing {
            finishing: Pin<Box<Finishing>>,
            response: Option<Response<B>>,
        },
        Done,
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn new(future: F, session: Session) -> Self {
        Self {
            state: State::Inner { future, session },
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { future, session } => {
                    let result = ready!(future.poll(cx));
                    let session = session.clone();
                    this.state.set(State::Done);
                    let mut response = result?;
                    // A failed response saves nothing and sets no cookie.
                    if response.status().is_server_error() {
                        if session.was_used() {
                            response::vary(response.headers_mut(), session.engine());
                        }
                        session.record_outcome(true);
                        return Poll::Ready(Ok(response));
                    }
                    // The end of the request's store calls belong to its session span. A
                    // store that answers at once finishes here, in this poll, with nothing
                    // moved into the state.
                    let finish = session.in_span(|| {
                        let mut finish = session.finish();
                        if let Finish::Running(finishing) = &mut finish {
                            if let Poll::Ready(result) = Pin::new(finishing).poll(cx) {
                                return ControlFlow::Break(result);
                            }
                        }
                        ControlFlow::Continue(finish)
                    });
                    match finish {
                        ControlFlow::Break(result) => {
                            return Poll::Ready(Ok(respond(response, &session, result)));
                        }
                        ControlFlow::Continue(Finish::Untouched) => {
                            session.record_outcome(false);
                            return Poll::Ready(Ok(response));
                        }
                        ControlFlow::Continue(Finish::Done(outcome)) => {
                            response::apply(response.headers_mut(), &session, outcome);
                            session.record_outcome(false);
                            return Poll::Ready(Ok(response));
                        }
                        ControlFlow::Continue(Finish::Running(finishing)) => {
                            this.state.set(State::Finishing {
                                finishing: Box::pin(finishing),
                                response: Some(response),
                            });
                        }
                    }
                }
                StateProj::Finishing {
                    finishing,
                    response,
                } => {
                    let session = finishing.session().clone();
                    let result = ready!(session.in_span(|| finishing.as_mut().poll(cx)));
                    let response = response.take().expect("set with the state");
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(respond(response, &session, result)));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// The response once the session's store calls have answered: with the session's headers, or
/// replaced by the opaque failure response.
fn respond<B: Default>(
    mut response: Response<B>,
    session: &Session,
    result: Result<Outcome, Error>,
) -> Response<B> {
    session.record_outcome(result.is_err());
    match result {
        Ok(outcome) => {
            response::apply(response.headers_mut(), session, outcome);
            response
        }
        Err(error) => {
            let mut failure = error::failure(&error);
            response::vary(failure.headers_mut(), session.engine());
            failure
        }
    }
}
