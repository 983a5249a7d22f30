//! A reloaded configuration on one shard: every client's credentials
//! checked again (bcrypt and signatures on the auth pool), permissions and
//! accounts replaced, what the new rules forbid removed.

use super::Shard;
use crate::outbound::{Client, CloseReason, LocalSub};
use crate::runtime;
use crate::shared::Dynamic;
use shoal_core::auth::{ConnectContext, FastCheck};
use shoal_core::proto;
use std::rc::Rc;
use std::sync::Arc;

impl Shard {
    /// A reloaded configuration: every client's credentials are checked
    /// again (closed with `Authorization Violation` when they no longer
    /// pass), its permissions replaced, and subscriptions the new permissions
    /// forbid are removed with the subscription violation error; wildcard
    /// subscriptions kept filter what the new deny list forbids. A client
    /// that never sent CONNECT (allowed while no authentication was
    /// required) is closed when the new configuration requires it. New
    /// limits apply to new connections and new subscriptions.
    ///
    /// Checks that need bcrypt run on the auth pool, not here: a user whose
    /// password did not change is known to the new authenticator already
    /// (`Authenticator::keep_verified_from`), so only changed users cost one.
    pub(super) fn reload(self: &Rc<Self>, d: Arc<Dynamic>) {
        let old = std::mem::replace(&mut *self.dynamic.borrow_mut(), d.clone());
        let clients: Vec<_> = self.clients.borrow().values().cloned().collect();
        for c in clients {
            if c.is_closing() {
                continue;
            }
            if !c.authenticated.get() {
                if !old.auth.required() && d.auth.required() {
                    self.apply_recheck(&c, Err(shoal_core::auth::AuthError));
                } else {
                    self.rebind_account(&c, d.auth.accounts().get(None));
                }
                continue;
            }
            let opts = c.meta.connect.borrow().clone().unwrap_or_default();
            let ctx = ConnectContext::now(c.meta.nonce.borrow().clone(), Some(c.addr.ip()));
            match d.auth.check_fast(&opts, &ctx) {
                FastCheck::Done(verdict) => self.apply_recheck(&c, verdict),
                FastCheck::NeedsSlowCheck => runtime::spawn_detached(recheck_off_shard(
                    self.clone(),
                    c,
                    opts,
                    ctx,
                    d.clone(),
                )),
            }
        }
        self.flush_dirty();
    }

    /// A client's credentials checked against a reloaded configuration.
    pub(super) fn apply_recheck(
        &self,
        c: &Rc<Client>,
        verdict: Result<shoal_core::auth::Session, shoal_core::auth::AuthError>,
    ) {
        match verdict {
            Err(e) => {
                tracing::error!(
                    "{} - cid:{} - authentication error (configuration reloaded)",
                    c.addr,
                    c.id
                );
                let res = c.queue(|b| proto::write_err(b, e.err_text()));
                self.mark_dirty(c, res);
                c.close_after_flush(CloseReason::AuthenticationViolation);
            }
            Ok(session) => {
                let account = self
                    .current()
                    .auth
                    .accounts()
                    .get(session.account.as_deref());
                if !self.rebind_account(c, account) {
                    return;
                }
                *c.perms.borrow_mut() = session
                    .permissions
                    .map(shoal_core::auth::ClientPermissions::new);
                let restricted = c.perms.borrow().is_some();
                let subs: Vec<Rc<LocalSub>> = c.subs.borrow().values().cloned().collect();
                for s in subs {
                    let allowed = c
                        .perms
                        .borrow_mut()
                        .as_mut()
                        .is_none_or(|p| p.may_subscribe(&s.subject[s.prefix_len..]));
                    if !allowed {
                        let text = format!(
                            "Permissions Violation for Subscription to \"{}\"",
                            String::from_utf8_lossy(&s.subject[s.prefix_len..])
                        );
                        let res = c.queue(|b| proto::write_err(b, &text));
                        self.mark_dirty(c, res);
                        self.unsubscribe(&s);
                    } else {
                        // The filter is decided by the permissions in force,
                        // not those at SUB time.
                        s.deny_filter
                            .set(restricted && shoal_core::subject::has_wildcard(&s.subject));
                    }
                }
            }
        }
    }

    /// Gives a client its account as the reloaded configuration defines it
    /// (its imports and exports may have changed). A client whose account
    /// is now another one (or whose space changed because accounts were
    /// turned on or off) is closed instead: its subscriptions are indexed
    /// in the old account's subject space, and a reconnect puts it in the
    /// new one. Returns whether the client stays.
    pub(super) fn rebind_account(
        &self,
        c: &Rc<Client>,
        account: Option<Arc<shoal_core::auth::Account>>,
    ) -> bool {
        let prefix = |a: &Option<Arc<shoal_core::auth::Account>>| {
            a.as_ref().map(|a| a.prefix.clone()).unwrap_or_default()
        };
        if prefix(&c.account.borrow()) != prefix(&account) {
            tracing::info!(
                "{} - cid:{} - account changed by a configuration reload, closing the connection so the client reconnects into it",
                c.addr,
                c.id
            );
            c.close_after_flush(CloseReason::AccountChanged);
            return false;
        }
        *c.account.borrow_mut() = account;
        true
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
        if c.is_closing() || !Arc::ptr_eq(&shard.current(), &d) {
            return;
        }
    };
    if c.is_closing() || !Arc::ptr_eq(&shard.current(), &d) {
        return;
    }
    shard.apply_recheck(&c, verdict);
    shard.flush_dirty();
}
