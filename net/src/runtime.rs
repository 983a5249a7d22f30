//! The seam to the executor. Everything glommio-specific that is not socket
//! I/O lives here, so moving to the maintained glommio fork (or another
//! thread-per-core runtime) stays a local change.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::task::{Poll, Waker};
use std::time::Duration;

pub(crate) use glommio::net::{TcpListener, TcpStream};

/// Runs a task on the current shard without awaiting it.
pub(crate) fn spawn_detached(fut: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(fut).detach();
}

/// How long glommio lets a task queue run before its preempt timer fires.
///
/// glommio 0.9 (and glommio-ng 0.12) park the executor with runnable tasks
/// when the preempt flag is already set as `run_task_queues` starts: the flag
/// is "the latency ring has an unconsumed completion", and the preempt timer
/// is such a completion. A timer that expires between the reactor's last
/// look at the ring and the scheduler's first check strands every task that
/// was runnable until some unrelated completion arrives, which in a
/// request-reply exchange is never. With the 1 ms timer and the 200 µs
/// `Latency::Matters` inbox queue this happened once in every few hundred
/// exchanges on a busy host (a descheduled thread makes the window as long
/// as the time it is off the CPU); see docs/runtime-notes.md.
///
/// So the preempt timer is only a backstop here, long enough that it cannot
/// expire inside that window unless the thread is off the CPU for this long
/// at exactly that instant, and no task queue asks for a shorter one (Shoal
/// creates no `Latency::Matters` queue). Fairness between tasks comes from
/// `TurnBudget` instead: a task that keeps finding work returns to the
/// reactor after `TASK_SLICE`.
pub(crate) const PREEMPT_BACKSTOP: Duration = Duration::from_secs(1);

/// The longest a task keeps the shard before it lets the reactor turn
/// (poll the rings, fire timers, take foreign wake-ups) and the other tasks
/// run. glommio's own reads never yield while data is waiting (it tries a
/// non-blocking `recv` first), so a busy publisher would otherwise hold its
/// shard until its socket ran dry.
pub(crate) const TASK_SLICE: Duration = Duration::from_micros(200);

/// Counts the time a task has spent working (from `begin` to `spend`)
/// since it last let the reactor turn. Time spent waiting for I/O does not
/// count: a request-reply connection that reads every few hundred
/// microseconds never needs to yield; a publisher whose socket always has
/// data does, every `TASK_SLICE` of work.
pub(crate) struct TurnBudget {
    began: std::time::Instant,
    used: Duration,
}

impl TurnBudget {
    pub(crate) fn new() -> Self {
        TurnBudget {
            began: std::time::Instant::now(),
            used: Duration::ZERO,
        }
    }

    /// Work starts (after an await that returned what to work on).
    pub(crate) fn begin(&mut self) {
        self.began = std::time::Instant::now();
    }

    /// Work ends; lets the reactor turn once the work adds up to
    /// `TASK_SLICE`.
    pub(crate) async fn spend(&mut self) {
        self.used += self.began.elapsed();
        if self.used >= TASK_SLICE {
            self.used = Duration::ZERO;
            yield_to_reactor().await;
        }
    }
}

/// Suspends the task until the reactor has turned once: a timer that is
/// already due by the next turn, so the executor polls its rings and fires
/// timers before this task runs again. (`yield_now` would not: glommio runs a
/// queue's runnable tasks again without polling I/O in between.)
pub(crate) async fn yield_to_reactor() {
    glommio::timer::sleep(Duration::from_micros(1)).await;
}

pub(crate) async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Settings for one shard's executor.
#[derive(Debug, Clone)]
pub(crate) struct ExecutorSpec {
    pub name: String,
    pub cpu: Option<usize>,
    pub spin_before_park: Option<Duration>,
}

/// Starts an executor on its own thread and runs `main` on it. Fails with a
/// clear message when io_uring is not available.
pub(crate) fn start_executor<F, Fut>(
    spec: ExecutorSpec,
    main: F,
) -> io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let name = spec.name.clone();
    let handle = std::thread::Builder::new().name(name).spawn(move || {
        let placement = match spec.cpu {
            Some(cpu) => glommio::Placement::Fixed(cpu),
            None => glommio::Placement::Unbound,
        };
        let mut builder = glommio::LocalExecutorBuilder::new(placement)
            .name(&spec.name)
            // Shoal does no file I/O: keep the locked io_uring buffer small so
            // the default memlock limit is enough.
            .io_memory(64 << 10)
            .preempt_timer(PREEMPT_BACKSTOP);
        if let Some(spin) = spec.spin_before_park {
            builder = builder.spin_before_park(spin);
        }
        let ex = match builder.make() {
            Ok(ex) => ex,
            Err(e) => {
                let _ = ready_tx.send(Err(explain_executor_error(e)));
                return;
            }
        };
        let _ = ready_tx.send(Ok(()));
        ex.run(main());
    })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => Err(io::Error::other("executor thread died while starting")),
    }
}

fn explain_executor_error(e: glommio::GlommioError<()>) -> io::Error {
    let text = e.to_string();
    io::Error::other(format!(
        "cannot start an io_uring executor ({text}). Shoal needs io_uring: check that \
         the kernel is 5.8 or newer, that the sysctl kernel.io_uring_disabled is 0, that a \
         container's seccomp profile allows io_uring_setup/io_uring_enter, and that the \
         locked-memory limit (ulimit -l) is at least 1 MiB"
    ))
}

/// A one-shot, shard-local event: tasks wait until it is set.
#[derive(Default)]
pub(crate) struct LocalEvent {
    set: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl LocalEvent {
    pub(crate) fn set(&self) {
        self.set.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.get()
    }

    pub(crate) async fn wait(&self) {
        futures_lite::future::poll_fn(|cx| {
            if self.set.get() {
                return Poll::Ready(());
            }
            // One entry per waiting task, however often it polls (a task
            // that waits in a loop must not grow this list).
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that always has work (as a publisher whose socket never runs
    /// dry) still lets the reactor turn: a timer set by another task fires
    /// while it works, not after it finished.
    #[test]
    fn a_busy_task_lets_timers_fire() {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 << 10)
            .preempt_timer(PREEMPT_BACKSTOP)
            .make()
            .expect("executor");
        ex.run(async {
            let fired = std::rc::Rc::new(Cell::new(false));
            let f = fired.clone();
            glommio::spawn_local(async move {
                sleep(Duration::from_millis(1)).await;
                f.set(true);
            })
            .detach();
            // Let the timer task register its timer first.
            yield_to_reactor().await;
            let mut budget = TurnBudget::new();
            let mut rounds = 0;
            while !fired.get() && rounds < 2_000 {
                budget.begin();
                let t = std::time::Instant::now();
                while t.elapsed() < Duration::from_micros(50) {
                    std::hint::spin_loop();
                }
                budget.spend().await;
                rounds += 1;
            }
            // 1 ms of timer at 50 µs a round: a few dozen rounds, never all.
            assert!(fired.get(), "the timer never fired while the task worked");
            assert!(rounds < 2_000);
        });
    }

    /// A task that waits on an event in a loop (as the accept loop does)
    /// must not add itself again on every poll: glommio counts wakers in an
    /// i16 and panics past 32,767.
    #[test]
    fn waiting_in_a_loop_registers_once() {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 << 10)
            .make()
            .expect("executor");
        ex.run(async {
            let event = std::rc::Rc::new(LocalEvent::default());
            let (tx, rx) = flume::unbounded::<u32>();
            let e = event.clone();
            let waiter = glommio::spawn_local(async move {
                let mut n = 0;
                loop {
                    let got =
                        futures_lite::future::or(async { rx.recv_async().await.ok() }, async {
                            e.wait().await;
                            None
                        })
                        .await;
                    match got {
                        Some(_) => n += 1,
                        None => return n,
                    }
                }
            });
            for i in 0..40_000 {
                tx.send(i).unwrap();
                glommio::yield_if_needed().await;
                glommio::executor().yield_task_queue_now().await;
            }
            assert!(
                event.waiters.borrow().len() <= 1,
                "{} wakers held",
                event.waiters.borrow().len()
            );
            event.set();
            let n = waiter.await;
            assert_eq!(n, 40_000);
        });
    }
}
