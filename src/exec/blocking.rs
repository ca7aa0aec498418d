//! Blocking verbs from the async code: a [`BlockingExecutor`] seen as an
//! [`Executor`] whose futures are ready at once, and a tiny `block_on` that
//! drives them. Every `*_blocking` verb of the crate is its async verb run
//! this way, so there is one body of logic for both worlds.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use super::{BlockingExecutor, Executor, Transactional};
use crate::{BuiltQuery, Result};

/// A blocking client behind the async traits. Each call runs the client's
/// method on the spot and returns a future that is already complete.
pub(crate) struct Blocking<'a, C: ?Sized>(Mutex<&'a mut C>);

impl<'a, C: BlockingExecutor + ?Sized> Blocking<'a, C> {
    pub(crate) fn new(client: &'a mut C) -> Self {
        Blocking(Mutex::new(client))
    }

    fn client(&self) -> MutexGuard<'_, &'a mut C> {
        // A panic while the client was in use leaves it usable as it is.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn client_mut(&mut self) -> &mut C {
        self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<C> Executor for Blocking<'_, C>
where
    C: BlockingExecutor + Send + ?Sized,
    C::Row: Send,
{
    type Row = C::Row;

    fn rows(&self, q: &BuiltQuery) -> impl Future<Output = Result<Vec<Self::Row>>> + Send {
        std::future::ready(self.client().rows(q))
    }

    fn run(&self, q: &BuiltQuery) -> impl Future<Output = Result<u64>> + Send {
        std::future::ready(self.client().run(q))
    }

    fn run_script(&self, sql: &str) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(self.client().run_script(sql))
    }

    fn is_transaction(&self) -> bool {
        self.client().is_transaction()
    }
}

impl<C> Transactional for Blocking<'_, C>
where
    C: BlockingExecutor + Send + ?Sized,
    C::Row: Send,
{
    fn run_in_transaction(
        &mut self,
        queries: &[BuiltQuery],
    ) -> impl Future<Output = Result<Vec<u64>>> + Send {
        std::future::ready(self.client_mut().run_in_transaction(queries))
    }

    fn rows_rolled_back(
        &mut self,
        q: &BuiltQuery,
    ) -> impl Future<Output = Result<Vec<Self::Row>>> + Send {
        std::future::ready(self.client_mut().rows_rolled_back(q))
    }
}

/// Wakes the thread that waits in [`block_on`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread. The crate's futures over
/// [`Blocking`] are complete on their first poll; anything else (a future
/// that waits on a timer) parks the thread until it is woken.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

/// Runs an async verb against a blocking client:
/// `run_blocking(db, async |db| spec.count(db).await)`.
pub(crate) fn run_blocking<C, T>(client: &mut C, verb: impl AsyncFnOnce(&Blocking<'_, C>) -> T) -> T
where
    C: BlockingExecutor + Send + ?Sized,
    C::Row: Send,
{
    let db = Blocking::new(client);
    block_on(verb(&db))
}

/// [`run_blocking`] for verbs that need `&mut` (transactions).
pub(crate) fn run_blocking_mut<C, T>(
    client: &mut C,
    verb: impl AsyncFnOnce(&mut Blocking<'_, C>) -> T,
) -> T
where
    C: BlockingExecutor + Send + ?Sized,
    C::Row: Send,
{
    let mut db = Blocking::new(client);
    block_on(verb(&mut db))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_futures_finish_on_the_first_poll() {
        assert_eq!(block_on(async { 1 + 1 }), 2);
    }

    #[test]
    fn a_pending_future_is_woken_and_finished() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let waiter = thread::spawn(move || {
            block_on(std::future::poll_fn(move |cx| {
                if rx.try_recv().is_ok() {
                    return Poll::Ready(7);
                }
                let waker = cx.waker().clone();
                thread::spawn(move || {
                    thread::sleep(std::time::Duration::from_millis(5));
                    waker.wake();
                });
                Poll::Pending
            }))
        });
        tx.send(()).unwrap();
        assert_eq!(waiter.join().unwrap(), 7);
    }
}
