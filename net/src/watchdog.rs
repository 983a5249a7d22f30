//! A shard that cannot make progress says so. One plain thread looks at
//! every shard twice a second: when work is waiting for a shard (messages or
//! control in its inbox, connections in its listen queue) and the shard has
//! not got anything done for `STALL_AFTER`, it logs a warning saying what
//! waits, counts it (`/varz` `shards[].stalls`, `stalls`), and sends the
//! shard an empty control message. That message is a cross-thread wake-up,
//! so a shard asleep with work waiting (the glommio defect described in
//! `runtime`) is woken; the warning stays, because this is a diagnostic of
//! a defect, not the way shards are meant to wake. Nothing here is on the
//! message path, and an idle shard is never woken by it.

use crate::stats::ShardStats;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a shard may show no progress while work waits for it.
pub(crate) const STALL_AFTER: Duration = Duration::from_secs(1);

const CHECK_EVERY: Duration = Duration::from_millis(500);

/// What the watchdog may look at for one shard. The inbox is seen through
/// closures so this module knows nothing of the bus (it only reads).
pub(crate) struct Watched {
    pub stats: Arc<ShardStats>,
    /// Message batches waiting in the shard's data inbox.
    pub inbox_depth: Box<dyn Fn() -> usize + Send>,
    /// Control messages sent to the shard and not yet applied.
    pub control_pending: Box<dyn Fn() -> usize + Send>,
    /// Sends the shard an empty control message (a cross-thread wake-up).
    pub wake: Box<dyn Fn() + Send>,
    /// The shard's listening socket; read only while `stats.accepting`.
    pub listen_fd: RawFd,
}

struct Seen {
    progress: u64,
    since: Instant,
    reported: bool,
}

/// Starts the watchdog thread; it ends when `stop` is set.
pub(crate) fn start(shards: Vec<Watched>, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("shoal-watchdog".into())
        .spawn(move || run(shards, stop));
    if let Err(e) = spawned {
        tracing::warn!("cannot start the shard watchdog: {e}");
    }
}

fn run(shards: Vec<Watched>, stop: Arc<AtomicBool>) {
    let now = Instant::now();
    let mut seen: Vec<Seen> = shards
        .iter()
        .map(|w| Seen {
            progress: w.stats.progress.load(Relaxed),
            since: now,
            reported: false,
        })
        .collect();
    while !stop.load(Relaxed) {
        std::thread::sleep(CHECK_EVERY);
        for (i, (w, s)) in shards.iter().zip(seen.iter_mut()).enumerate() {
            let progress = w.stats.progress.load(Relaxed);
            let waiting = Waiting::of(w);
            if progress != s.progress || waiting.is_empty() {
                s.progress = progress;
                s.since = Instant::now();
                s.reported = false;
                continue;
            }
            let idle_for = s.since.elapsed();
            if idle_for < STALL_AFTER || s.reported {
                continue;
            }
            s.reported = true;
            w.stats.stalls.fetch_add(1, Relaxed);
            tracing::warn!(
                "shard {i} has made no progress for {:.1} s with work waiting: {waiting}; waking it",
                idle_for.as_secs_f64()
            );
            (w.wake)();
        }
    }
}

/// What waits for one shard.
struct Waiting {
    inbox_batches: usize,
    control: usize,
    listen_queue: u32,
    blocked_writers: u64,
}

impl Waiting {
    fn of(w: &Watched) -> Self {
        Waiting {
            inbox_batches: (w.inbox_depth)(),
            control: (w.control_pending)(),
            listen_queue: if w.stats.accepting.load(Relaxed) {
                accept_queue(w.listen_fd)
            } else {
                0
            },
            blocked_writers: w.stats.blocked_writers.load(Relaxed),
        }
    }

    /// Blocked writers alone are no evidence (a slow consumer's socket is
    /// full whatever the shard does); they are reported as context.
    fn is_empty(&self) -> bool {
        self.inbox_batches == 0 && self.control == 0 && self.listen_queue == 0
    }
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} message batches and {} control messages in its inbox, {} connections in its listen queue, {} blocked writers",
            self.inbox_batches, self.control, self.listen_queue, self.blocked_writers
        )
    }
}

/// Connections waiting in a listening socket's accept queue (`TCP_INFO`'s
/// `tcpi_unacked` is the accept backlog for a listener). 0 when unknown.
fn accept_queue(fd: RawFd) -> u32 {
    // SAFETY: a zeroed tcp_info is valid; getsockopt writes at most `len`.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        if rc != 0 || info.tcpi_state != 10
        /* TCP_LISTEN */
        {
            return 0;
        }
        info.tcpi_unacked
    }
}
