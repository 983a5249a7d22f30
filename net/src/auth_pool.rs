//! Threads that run bcrypt checks, so no shard ever does.
//!
//! A bcrypt check costs 50-200 ms by design. On a shard it would freeze
//! every connection, inbox and route link the shard owns; a handful of
//! unauthenticated CONNECTs per second would do it. The shards send those
//! checks here and await the answer (their other tasks keep running);
//! successes are remembered by the authenticator, so a client that
//! reconnects, and every client at a reload, costs bcrypt once.
//!
//! The queue is bounded: when it is full the check is refused (the client
//! gets `Authorization Violation`, as if its password were wrong), so a
//! flood of CONNECTs costs the attacker connections and the server a fixed
//! amount of memory. A leaf module: it knows nothing of shards.

use std::thread;

/// Threads checking passwords: bcrypt is CPU-bound and one check at a time
/// per thread; two keep up with a reconnect wave without taking every CPU.
const THREADS: usize = 2;

/// Checks waiting for a thread before new ones are refused.
const QUEUE: usize = 1024;

type Job = Box<dyn FnOnce() + Send>;

/// The handle shards hold (cheap to share: one channel sender).
#[derive(Clone)]
pub(crate) struct AuthPool {
    jobs: flume::Sender<Job>,
}

impl AuthPool {
    /// Starts the threads; they end when the last handle is dropped.
    pub(crate) fn start() -> AuthPool {
        let (jobs, rx) = flume::bounded::<Job>(QUEUE);
        for i in 0..THREADS {
            let rx = rx.clone();
            let started = thread::Builder::new()
                .name(format!("shoal-auth-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                });
            if let Err(e) = started {
                // Fewer threads only slow bcrypt checks down; with none,
                // `run` answers `None` (refused) rather than hanging.
                tracing::error!("cannot start a password checking thread: {e}");
            }
        }
        AuthPool { jobs }
    }

    /// Runs `f` on a pool thread and returns its result; `None` when the
    /// queue is full or no thread is left.
    pub(crate) async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = flume::bounded(1);
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs.try_send(job).ok()?;
        rx.recv_async().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_off_the_calling_thread_and_answers() {
        let pool = AuthPool::start();
        let me = thread::current().id();
        let other = futures_lite::future::block_on(pool.run(move || thread::current().id() != me));
        assert_eq!(other, Some(true));
    }
}
