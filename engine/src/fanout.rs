//! The fan-out: where one message goes, over the targets that match its
//! subject, written once for every origin.
//!
//! A message reaches a shard from one of three origins, and the origin
//! decides which targets it may still reach (the eligibility table; a
//! message makes at most one hop between nodes and one per shard):
//!
//! | origin \ target            | local sub | other shard | route (peer node) |
//! |----------------------------|-----------|-------------|-------------------|
//! | client of this shard       | plain, queue (no echo: not the publisher's own) | plain, queue | plain, queue |
//! | peer node (route)          | plain, queue | plain, queue | never (one hop) |
//! | other shard of this node   | plain, queue | queue, only shards that have not declined it | queue, unless it came from a route |
//!
//! Plain subscribers get every message; a queue group gets each message
//! once, at a member picked uniformly among those that can take it now
//! (eligibility is checked before the pick, so a member that cannot take
//! it is passed over rather than the message dropped). With
//! `prefer_local`, a member on this node is preferred when one can take
//! it (no extra hop). A shard that was picked for a group and finds no
//! member able to take it passes the message on with its own bit in
//! [`Fallback::declined`], so the pass-ons end.
//!
//! [`Router::route`] walks the matches once and tells a [`Sink`] what to
//! do: deliver to a local subscription now (the glue appends straight into
//! the connection's buffer), or send to another shard or a route link (the
//! glue gathers those into its batches). It allocates nothing; randomness
//! comes from the sink.

use crate::ids::{RouteId, ShardId, Target};
use bytes::Bytes;
use shoal_core::index::{Matches, QueueGroup};

/// What a shard receiving a forwarded message needs to pass a queue group
/// on when none of its members can take the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fallback {
    /// Shards that found no member able to take it (a bit per shard):
    /// never picked again, so a message makes at most one hop per shard.
    pub declined: u64,
    /// The publisher's connection when it asked not to get its own
    /// messages (`echo: false`): not a candidate should the message come
    /// back to its shard.
    pub no_echo: Option<u64>,
    /// It came from a route: it goes to this node's members only (one hop).
    pub from_route: bool,
}

/// Where a message being routed on this shard came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client of this shard; `no_echo` is its connection when it asked
    /// not to get its own messages.
    Client { no_echo: Option<u64> },
    /// A peer node, through a route link.
    Route,
    /// Another shard of this node, which already did the plain fan-out to
    /// shards and routes.
    Shard(Fallback),
}

/// Which kind of target, for the eligibility table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    Shard,
    Route,
}

impl Origin {
    /// Whether a plain (non-queue) subscription of `kind` may get a message
    /// from this origin: the table's plain column, in one place.
    pub const fn plain_reaches(&self, kind: Kind) -> bool {
        match (self, kind) {
            (_, Kind::Local) => true,
            (Origin::Client { .. }, _) => true,
            (Origin::Route, Kind::Shard) => true,
            // One hop between nodes.
            (Origin::Route, Kind::Route) => false,
            // The shard the message entered on did those.
            (Origin::Shard(_), _) => false,
        }
    }

    /// What travels with a message this shard forwards to another shard.
    pub const fn forward_fallback(&self, me: ShardId) -> Fallback {
        match *self {
            Origin::Client { no_echo } => Fallback {
                declined: 0,
                no_echo,
                from_route: false,
            },
            Origin::Route => Fallback {
                declined: 0,
                no_echo: None,
                from_route: true,
            },
            Origin::Shard(f) => Fallback {
                declined: f.declined | 1 << me,
                ..f
            },
        }
    }

    fn no_echo(&self) -> Option<u64> {
        match *self {
            Origin::Client { no_echo } => no_echo,
            Origin::Route => None,
            Origin::Shard(f) => f.no_echo,
        }
    }
}

/// What the message is wanted for on this shard.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    /// Its plain subscribers.
    pub plain: bool,
    /// One member of each of these queue groups (the sender picked this
    /// node or shard for them); `None`: of every matching group.
    pub queues: Option<&'a [Bytes]>,
}

impl Want<'_> {
    /// A client's publish: everything that matches.
    pub const ALL: Want<'static> = Want {
        plain: true,
        queues: None,
    };
}

/// What the glue does with the engine's decisions for one message.
pub trait Sink {
    /// Its handle on a local subscription.
    type Local;

    /// Delivers to a local subscription now; `false` when it could not
    /// take the message after all (queueing it made the connection a slow
    /// consumer, which now closes).
    fn deliver(&mut self, sub: &Self::Local) -> bool;

    /// Whether a local subscription can take the message now (its
    /// connection is not closing, it has not reached its `UNSUB` max, its
    /// permissions do not deny the subject).
    fn can_take(&self, sub: &Self::Local) -> bool;

    /// The connection of a local subscription.
    fn connection(&self, sub: &Self::Local) -> u64;

    /// A plain subscription of the publisher itself, skipped for `echo:
    /// false` (message tracing records it).
    fn skipped_echo(&mut self, sub: &Self::Local);

    /// Send to another shard of this node: to its plain subscribers, and/or
    /// to one member of queue group `queue` there.
    fn to_shard(&mut self, shard: ShardId, plain: bool, queue: Option<&Bytes>);

    /// Send through a route link: to the peer's plain subscribers, and/or
    /// to one member of queue group `queue` there.
    fn to_route(&mut self, route: RouteId, plain: bool, queue: Option<&Bytes>);

    /// A uniform draw in `0..n` (`n > 0`): the engine has no RNG of its own.
    fn draw(&self, n: u64) -> u64;
}

/// One shard's router.
#[derive(Debug, Clone, Copy)]
pub struct Router {
    pub shard: ShardId,
    /// Prefer a queue member on this node (`cluster { queue_prefer_local }`).
    pub prefer_local: bool,
}

/// Which members of a queue group may be picked for one message.
#[derive(Clone, Copy)]
struct QueueRule {
    /// The publisher's connection when it asked not to get its own messages.
    no_echo: Option<u64>,
    /// Shards not to pick (a bit per shard).
    skip_shards: u64,
    /// Whether members on peer nodes may be picked.
    routes: bool,
}

/// The outcome of a queue pick.
enum Pick {
    /// Delivered to a local member.
    Delivered,
    /// A member on another shard was picked.
    Shard(ShardId),
    /// A member on a peer node was picked.
    Route(RouteId),
    /// No member can take the message.
    Nobody,
}

impl Router {
    /// Routes one message over `m`, the targets matching its subject.
    /// Returns whether anyone got it or will (a local delivery, or a send
    /// to another shard or node): a request nobody got is answered with
    /// no-responders.
    pub fn route<S: Sink>(
        &self,
        m: &Matches<Target<S::Local>>,
        origin: Origin,
        want: Want<'_>,
        sink: &mut S,
    ) -> bool {
        let mut delivered = false;
        if want.plain {
            let no_echo = origin.no_echo();
            for t in &m.plain {
                match t {
                    Target::Local(s) => {
                        if no_echo.is_some() && no_echo == Some(sink.connection(s)) {
                            sink.skipped_echo(s);
                        } else {
                            delivered |= sink.deliver(s);
                        }
                    }
                    Target::Shard(j) if origin.plain_reaches(Kind::Shard) => {
                        debug_assert_ne!(*j, self.shard, "a shard mirrors only the others");
                        sink.to_shard(*j, true, None);
                        delivered = true;
                    }
                    Target::Route(r) if origin.plain_reaches(Kind::Route) => {
                        sink.to_route(*r, true, None);
                        delivered = true;
                    }
                    Target::Shard(_) | Target::Route(_) => {}
                }
            }
        }
        match want.queues {
            None => {
                for g in &m.queues {
                    delivered |= self.route_group(g, origin, sink);
                }
            }
            Some(names) => {
                for q in names {
                    // The group's last member here may have left since the
                    // sender picked us: then nobody here gets it.
                    if let Some(g) = m.queues.iter().find(|g| g.name == q) {
                        delivered |= self.route_group(g, origin, sink);
                    }
                }
            }
        }
        delivered
    }

    /// One member of group `g` gets the message, as the origin allows.
    fn route_group<S: Sink>(
        &self,
        g: &QueueGroup<Target<S::Local>>,
        origin: Origin,
        sink: &mut S,
    ) -> bool {
        let pick = match origin {
            Origin::Client { no_echo } => self.pick(
                g,
                QueueRule {
                    no_echo,
                    skip_shards: 0,
                    routes: true,
                },
                sink,
            ),
            Origin::Route => self.pick(
                g,
                QueueRule {
                    no_echo: None,
                    skip_shards: 0,
                    routes: false,
                },
                sink,
            ),
            Origin::Shard(f) => {
                // This shard was picked: its own members first, then
                // another shard that has not declined it, then (unless it
                // came from a route) a peer node.
                let here = QueueRule {
                    no_echo: f.no_echo,
                    skip_shards: u64::MAX,
                    routes: false,
                };
                match self.pick_among(g, here, sink) {
                    Pick::Nobody => self.pick(
                        g,
                        QueueRule {
                            no_echo: f.no_echo,
                            skip_shards: f.declined | 1 << self.shard,
                            routes: !f.from_route,
                        },
                        sink,
                    ),
                    done => done,
                }
            }
        };
        match pick {
            Pick::Nobody => false,
            Pick::Delivered => true,
            Pick::Shard(j) => {
                sink.to_shard(j, false, Some(&g.name));
                true
            }
            Pick::Route(r) => {
                sink.to_route(r, false, Some(&g.name));
                true
            }
        }
    }

    /// With `prefer_local`, a member on this node when one can take the
    /// message, else any member `rule` admits.
    fn pick<S: Sink>(
        &self,
        g: &QueueGroup<Target<S::Local>>,
        rule: QueueRule,
        sink: &mut S,
    ) -> Pick {
        if rule.routes && self.prefer_local {
            let on_node = QueueRule {
                routes: false,
                ..rule
            };
            match self.pick_among(g, on_node, sink) {
                Pick::Nobody => {}
                done => return done,
            }
        }
        self.pick_among(g, rule, sink)
    }

    /// Picks a member of `g` that `rule` admits; a local one gets the
    /// message right away. A local delivery can still fail (queueing it
    /// made the connection a slow consumer, which then no longer can take
    /// messages): the pick is made again.
    fn pick_among<S: Sink>(
        &self,
        g: &QueueGroup<Target<S::Local>>,
        rule: QueueRule,
        sink: &mut S,
    ) -> Pick {
        // Each failed delivery rules out at least one entry: bounded.
        for _ in 0..=g.members.len() {
            let chosen = g.pick(
                |t| match t {
                    Target::Local(s) => {
                        rule.no_echo != Some(sink.connection(s)) && sink.can_take(s)
                    }
                    Target::Shard(j) => rule.skip_shards & (1 << j) == 0,
                    Target::Route(_) => rule.routes,
                },
                |n| sink.draw(n),
            );
            match chosen {
                None => return Pick::Nobody,
                Some(Target::Local(s)) => {
                    if sink.deliver(s) {
                        return Pick::Delivered;
                    }
                }
                Some(Target::Shard(j)) => return Pick::Shard(*j),
                Some(Target::Route(r)) => return Pick::Route(*r),
            }
        }
        Pick::Nobody
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_table() {
        let client = Origin::Client { no_echo: None };
        let shard = Origin::Shard(Fallback::default());
        for (origin, local, other_shard, route) in [
            (client, true, true, true),
            (Origin::Route, true, true, false),
            (shard, true, false, false),
        ] {
            assert_eq!(origin.plain_reaches(Kind::Local), local, "{origin:?}");
            assert_eq!(origin.plain_reaches(Kind::Shard), other_shard, "{origin:?}");
            assert_eq!(origin.plain_reaches(Kind::Route), route, "{origin:?}");
        }
    }

    #[test]
    fn fallbacks_accumulate_declines_and_keep_the_route_mark() {
        assert_eq!(
            Origin::Client { no_echo: Some(7) }.forward_fallback(3),
            Fallback {
                declined: 0,
                no_echo: Some(7),
                from_route: false
            }
        );
        assert!(Origin::Route.forward_fallback(0).from_route);
        let f = Fallback {
            declined: 0b1,
            no_echo: None,
            from_route: true,
        };
        let next = Origin::Shard(f).forward_fallback(2);
        assert_eq!(next.declined, 0b101);
        assert!(next.from_route);
    }
}
