//! A reloaded configuration on one shard: every client's credentials
//! checked again (bcrypt and signatures on the auth pool), permissions and
//! accounts replaced, what the new rules forbid removed.

use super::Shard;
use crate::outbound::CloseReason;
use crate::runtime;
use crate::session::{Client, LocalSub};
use crate::shared::Dynamic;
use shoal_core::auth::{ConnectContext, FastCheck};
use shoal_engine::client::Recheck;
use std::rc::Rc;
use std::sync::Arc;

impl Shard {
    /// A reloaded configuration: every client's credentials are checked
    /// again, its account and permissions replaced, and subscriptions the
    /// new permissions forbid are removed with the subscription violation
    /// error; wildcard subscriptions kept filter what the new deny list
    /// forbids. The rules are the engine's (`ClientState::recheck`,
    /// `keeps_subscription`); this carries them out. New limits apply to
    /// new connections and new subscriptions.
    ///
    /// Checks that need bcrypt run on the auth pool, not here: a user whose
    /// password did not change is known to the new authenticator already
    /// (`Authenticator::keep_verified_from`), so only changed users cost one.
    pub(super) fn reload(self: &Rc<Self>, d: Arc<Dynamic>) {
        let old = std::mem::replace(&mut *self.dynamic.borrow_mut(), d.clone());
        let clients: Vec<_> = self.clients.borrow().values().cloned().collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_secs() as i64);
        for c in clients {
            if c.conn.is_closing() {
                continue;
            }
            let (opts, ctx) = {
                let state = c.state.borrow();
                if !state.is_authenticated() {
                    drop(state);
                    self.apply_recheck(&c, old.auth.required(), None);
                    continue;
                }
                (
                    state.connect_options().cloned().unwrap_or_default(),
                    state.connect_context(Some(c.addr.ip()), now),
                )
            };
            match d.auth.check_fast(&opts, &ctx) {
                FastCheck::Done(verdict) => {
                    self.apply_recheck(&c, old.auth.required(), Some(verdict))
                }
                FastCheck::NeedsSlowCheck => runtime::spawn_detached(recheck_off_shard(
                    self.clone(),
                    c,
                    opts,
                    ctx,
                    d.clone(),
                    old.auth.required(),
                )),
            }
        }
        self.flush_dirty();
    }

    /// Carries out the engine's verdict on a client after a reload
    /// (`verdict`: its credentials checked again; None for a client that
    /// never authenticated).
    fn apply_recheck(
        &self,
        c: &Rc<Client>,
        was_required: bool,
        verdict: Option<Result<shoal_core::auth::Session, shoal_core::auth::AuthError>>,
    ) {
        let d = self.current();
        let outcome = c.state.borrow_mut().recheck(
            was_required,
            d.auth.required(),
            verdict,
            d.auth.accounts(),
        );
        match outcome {
            Recheck::Refused(r) => self.refuse(c, &r),
            Recheck::AccountChanged(log) => {
                tracing::info!("{} - cid:{} - {}", c.addr, c.id, log.text);
                c.conn.close_after_flush(CloseReason::AccountChanged);
            }
            Recheck::Stays => {
                let subs: Vec<Rc<LocalSub>> = c.subs.borrow().values().cloned().collect();
                for s in subs {
                    let kept = c
                        .state
                        .borrow()
                        .keeps_subscription(&s.subject[s.prefix_len..]);
                    match kept {
                        Ok(deny_filter) => s.deny_filter.set(deny_filter),
                        Err(r) => {
                            self.refuse(c, &r);
                            self.unsubscribe(&s);
                        }
                    }
                }
            }
        }
    }
}

/// A reload's re-check of one client that needs bcrypt, on the auth pool.
/// Dropped when a newer reload came meanwhile (it re-checks on its own) or
/// the client is gone.
async fn recheck_off_shard(
    shard: Rc<Shard>,
    c: Rc<Client>,
    opts: shoal_core::proto::ConnectOptions,
    ctx: ConnectContext,
    d: Arc<Dynamic>,
    was_required: bool,
) {
    // A connected client whose credentials were valid must not be cut
    // because the pool is busy: wait for room (a reload of many clients
    // whose user changed can fill the queue).
    let verdict = loop {
        let checked_by = d.clone();
        let given = opts.clone();
        let ctx = ctx.clone();
        match shard
            .shared
            .auth_pool
            .run(move || checked_by.auth.authenticate(&given, &ctx))
            .await
        {
            Some(v) => break v,
            None => runtime::sleep(std::time::Duration::from_millis(50)).await,
        }
        if c.conn.is_closing() || !Arc::ptr_eq(&shard.current(), &d) {
            return;
        }
    };
    if c.conn.is_closing() || !Arc::ptr_eq(&shard.current(), &d) {
        return;
    }
    shard.apply_recheck(&c, was_required, Some(verdict));
    shard.flush_dirty();
}
