//! A shard's life after it stops accepting: lame duck mode, shutdown, and
//! the final wind-down (accepting itself is `client::accept_loop`, which
//! watches `Shard::stop_accepting`).
//!
//! Part of `shard` because the shard's control inbox runs it
//! (`Control::LameDuck`, `Control::Shutdown`) and it works on the shard's
//! own state (its clients, route links, inbox, stop events).

use super::Shard;
use crate::outbound::CloseReason;
use crate::runtime;
use shoal_core::proto;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tracing::info;

/// Lame duck mode: stop accepting, tell every client (`ldm` in INFO) so it
/// can reconnect elsewhere, wait the grace period, then close the clients
/// spread over the rest of `lame_duck_duration` (no thundering herd), then
/// stop.
/// Where a shard is in its life.
#[derive(Default)]
pub(crate) struct Life {
    /// Set when the shard stops accepting (lame duck or shutdown).
    pub stop_accepting: crate::runtime::LocalEvent,
    /// Set when the shard must end.
    pub stopped: crate::runtime::LocalEvent,
    /// The shard's final wind-down (`finish`) has started.
    pub finishing: std::cell::Cell<bool>,
}

pub(crate) fn enter_lame_duck(shard: Rc<Shard>) {
    if shard.life.stop_accepting.is_set() {
        return;
    }
    shard.life.stop_accepting.set();
    let clients: Vec<_> = shard.clients.borrow().values().cloned().collect();
    for c in &clients {
        let info = shard
            .shared
            .info_for(c.id, c.addr, c.state.borrow().nonce());
        let res = c.conn.queue(|b| proto::write_info(b, &info));
        shard.mark_dirty(&c.conn, res);
    }
    shard.flush_dirty();
    runtime::spawn_detached(async move {
        let cfg = &shard.shared.config;
        let started = std::time::Instant::now();
        let grace = cfg.lame_duck_grace_period.min(cfg.lame_duck_duration);
        runtime::sleep(grace).await;
        let clients: Vec<_> = shard.clients.borrow().values().cloned().collect();
        let spread = cfg.lame_duck_duration.saturating_sub(grace);
        for c in &clients {
            if shard.life.finishing.get() {
                // A shutdown overtook lame duck and closes everyone now.
                return;
            }
            c.conn.close_after_flush(CloseReason::LameDuck);
            shard.flush_dirty();
            runtime::sleep(close_interval(spread, clients.len())).await;
        }
        // Other shards close their clients within the duration: wait for
        // them that long (plus a write deadline) before closing route links.
        let others_by = started + cfg.lame_duck_duration + cfg.write_deadline;
        let budget = cfg.write_deadline;
        finish(shard, others_by, budget).await;
    });
}

/// The pause between two lame duck closes, as nats-server spaces them:
/// the remaining duration spread over the clients, but never more than a
/// second (ten idle clients are not kept for two minutes) and never zero.
fn close_interval(spread: Duration, clients: usize) -> Duration {
    if clients == 0 {
        return Duration::ZERO;
    }
    (spread / clients as u32).clamp(Duration::from_millis(1), Duration::from_secs(1))
}

/// Shutdown: stop accepting, flush and close every client, stop.
pub(crate) fn shutdown(shard: &Rc<Shard>) {
    shard.life.stop_accepting.set();
    shard.drain_data();
    let clients: Vec<_> = shard.clients.borrow().values().cloned().collect();
    for c in clients {
        c.conn.close_after_flush(CloseReason::ServerShutdown);
    }
    shard.flush_dirty();
    let budget = shutdown_flush_budget(shard.shared.config.write_deadline);
    let others_by = std::time::Instant::now() + budget;
    runtime::spawn_detached(finish(shard.clone(), others_by, budget));
}

/// How long a shutdown waits for one phase (clients, then route links) to
/// flush what is queued before cutting what is left: the write deadline, but
/// at most two seconds. A healthy connection flushes in microseconds; one
/// that does not read must not hold an operator's SIGTERM for a whole write
/// deadline per phase (nats-server exits promptly too).
pub(crate) fn shutdown_flush_budget(write_deadline: Duration) -> Duration {
    write_deadline.min(Duration::from_secs(2))
}

/// The longest a shutdown may take, whatever the clients and peers do:
/// both flush phases, the cut connections' clean-up, and a margin. The
/// process-level backstop (`shoal`'s signal thread) exits after this.
pub(crate) fn shutdown_limit(write_deadline: Duration) -> Duration {
    shutdown_flush_budget(write_deadline) * 2 + CUT_GRACE * 2 + Duration::from_secs(5)
}

/// After a flush budget ran out and the rest was cut: how long the cut
/// connections' tasks get to clean up (they only have to notice the closed
/// socket).
const CUT_GRACE: Duration = Duration::from_secs(1);

/// Polls `done` every 5 ms until it holds or `deadline` passes.
async fn wait_until(done: impl Fn() -> bool, deadline: std::time::Instant) {
    while !done() && std::time::Instant::now() < deadline {
        runtime::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (bounded) for the connection tasks to clean up, then closes the
/// route links once every shard's clients are gone (so what they published
/// is forwarded to peers first), then ends the shard.
///
/// Runs once per shard: a shutdown that overtakes lame duck (SIGUSR2 then
/// SIGTERM) must not count this shard twice at the barrier below, which
/// would let another shard close its route links while this one still
/// serves clients.
///
/// `budget` bounds each flush phase; what has not flushed by then (a peer
/// or client that stopped reading) is cut.
async fn finish(shard: Rc<Shard>, others_by: std::time::Instant, budget: Duration) {
    if shard.life.finishing.replace(true) {
        return;
    }
    let now = std::time::Instant::now;
    wait_until(|| shard.clients.borrow().is_empty(), now() + budget).await;
    let stuck: Vec<_> = shard.clients.borrow().values().cloned().collect();
    for c in &stuck {
        c.conn.close(CloseReason::ServerShutdown);
    }
    wait_until(|| shard.clients.borrow().is_empty(), now() + CUT_GRACE).await;
    let deadline = now() + budget;
    let shared = &shard.shared;
    shared.shards_without_clients.fetch_add(1, Relaxed);
    wait_until(
        || shared.shards_without_clients.load(Relaxed) >= shard.shards,
        others_by.max(deadline),
    )
    .await;
    shard.drain_data();
    for link in shard.route_links() {
        link.conn.close_after_flush(CloseReason::ServerShutdown);
    }
    wait_until(|| shard.route_links().is_empty(), now() + budget).await;
    for link in shard.route_links() {
        link.conn.close(CloseReason::ServerShutdown);
    }
    wait_until(|| shard.route_links().is_empty(), now() + CUT_GRACE).await;
    if shard.id == 0 {
        info!("Server Exiting..");
    }
    shard.stats.connections.store(0, Relaxed);
    shard.life.stopped.set();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lame_duck_closes_are_at_most_a_second_apart() {
        let two_min = Duration::from_secs(110);
        assert_eq!(close_interval(two_min, 6), Duration::from_secs(1));
        assert_eq!(close_interval(two_min, 1100), Duration::from_millis(100));
        assert_eq!(close_interval(two_min, 0), Duration::ZERO);
        assert_eq!(close_interval(Duration::ZERO, 5), Duration::from_millis(1));
    }
}
