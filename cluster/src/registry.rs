//! The membership state of one node: its live links, what it knows of the
//! cluster, and the rules that keep the mesh to one link per pair of nodes.
//! Pure data and decisions (no I/O), so the rules are unit-tested.

use shoal_net::route::RouteId;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A live link as membership sees it.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub server_id: String,
    pub route_url: String,
    /// Where the peer accepts routes (its route URL resolved, and the address
    /// this node dialed), to tell whether a URL is already connected.
    pub addrs: Vec<SocketAddr>,
    pub client_urls: Vec<String>,
    /// Server id of the node that dialed this link.
    pub dialer: String,
    pub snapshot_done: bool,
    pub lame_duck: bool,
}

/// What to do with a freshly handshaken link.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Attach,
    /// Attach, and close this existing link to the same node.
    Replace(RouteId),
    /// Close the new link: the existing one wins.
    Reject,
}

/// Whether a new link replaces an existing one to the same node. Both ends
/// apply the same rule to the same two links, so they keep the same one: the
/// link dialed by the lower server id. Two links dialed by the same node
/// mean it redialed, so the newer wins (the older is on its way out).
pub(crate) fn new_link_wins(existing_dialer: &str, new_dialer: &str) -> bool {
    existing_dialer == new_dialer || new_dialer < existing_dialer
}

/// Delay before redial attempt `attempt` (1-based): exponential from 50 ms,
/// capped at 2 s, with jitter (between half and all of it) so nodes that lost
/// the same peer do not redial in lockstep.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 50u64.saturating_mul(1 << attempt.min(10).saturating_sub(1));
    let capped = base.min(2_000);
    Duration::from_millis(capped / 2 + fastrand::u64(..=capped / 2))
}

/// Redials of a peer learned by gossip before it is forgotten (seeds are
/// redialed forever): about a minute at the capped delay.
pub(crate) const GOSSIP_ATTEMPTS: u32 = 40;

#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub links: BTreeMap<RouteId, Link>,
    /// URLs with a dialer thread.
    pub dialing: BTreeSet<String>,
    /// URLs that turned out to be this node.
    pub self_urls: BTreeSet<String>,
    /// URLs whose first dial attempt has not finished (readiness).
    pub first_attempts: BTreeSet<String>,
    /// Until then a node without any link is not ready: peers that know it
    /// (a restarted seed has no routes of its own, but every other node
    /// redials it) get the time of one capped redial to come back.
    pub peer_grace_until: Option<Instant>,
    /// The cluster name, adopted from the first peer when not configured.
    pub cluster: String,
    pub ready: bool,
    pub lame_duck: bool,
}

impl Registry {
    /// The rule for a new link to `server_id` dialed by `dialer`.
    pub(crate) fn decide(&self, server_id: &str, dialer: &str) -> Decision {
        match self.links.iter().find(|(_, l)| l.server_id == server_id) {
            None => Decision::Attach,
            Some((id, l)) if new_link_wins(&l.dialer, dialer) => Decision::Replace(*id),
            Some(_) => Decision::Reject,
        }
    }

    pub(crate) fn connected_to(&self, addrs: &[SocketAddr]) -> bool {
        self.links
            .values()
            .any(|l| l.addrs.iter().any(|a| addrs.contains(a)))
    }

    /// Route URLs of the linked peers (gossip).
    pub(crate) fn peer_urls(&self) -> Vec<String> {
        let set: BTreeSet<_> = self.links.values().map(|l| l.route_url.clone()).collect();
        set.into_iter().collect()
    }

    /// The cluster's client URLs: this node's (unless in lame duck mode) and
    /// those of every linked peer not in lame duck mode.
    pub(crate) fn connect_urls(&self, own: &[String]) -> Vec<String> {
        let mut set = BTreeSet::new();
        if !self.lame_duck {
            set.extend(own.iter().cloned());
        }
        for l in self.links.values().filter(|l| !l.lame_duck) {
            set.extend(l.client_urls.iter().cloned());
        }
        set.into_iter().collect()
    }

    /// Ready once every seed and learned peer has been tried, every link's
    /// interest snapshot has arrived, and a node still without any link has
    /// waited out the peer grace. Returns true on the transition.
    pub(crate) fn check_ready(&mut self, now: Instant) -> bool {
        if self.ready {
            return false;
        }
        let alone_in_grace =
            self.links.is_empty() && self.peer_grace_until.is_some_and(|t| now < t);
        if !alone_in_grace
            && self.first_attempts.is_empty()
            && self.links.values().all(|l| l.snapshot_done)
        {
            self.ready = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(server: &str, dialer: &str) -> Link {
        Link {
            server_id: server.into(),
            route_url: format!("nats://{server}:1"),
            addrs: vec![],
            client_urls: vec![format!("{server}:4222")],
            dialer: dialer.into(),
            snapshot_done: false,
            lame_duck: false,
        }
    }

    fn rid(slot: u32) -> RouteId {
        RouteId { shard: 0, slot }
    }

    #[test]
    fn both_ends_keep_the_link_dialed_by_the_lower_id() {
        // Node A (lower id) and node B dial each other at once: link 1 is
        // A's dial, link 2 is B's. Whichever order each side sees them in,
        // both keep link 1.
        for (first, second) in [("A", "B"), ("B", "A")] {
            for me in ["A", "B"] {
                let peer = if me == "A" { "B" } else { "A" };
                let mut reg = Registry::default();
                assert_eq!(reg.decide(peer, first), Decision::Attach);
                reg.links.insert(rid(1), link(peer, first));
                let kept_first = match reg.decide(peer, second) {
                    Decision::Reject => true,
                    Decision::Replace(old) => {
                        assert_eq!(old, rid(1));
                        false
                    }
                    Decision::Attach => panic!("a second link to the same node"),
                };
                let kept_dialer = if kept_first { first } else { second };
                assert_eq!(kept_dialer, "A", "me={me} first={first}");
            }
        }
    }

    #[test]
    fn a_redial_by_the_same_node_replaces_the_old_link() {
        let mut reg = Registry::default();
        reg.links.insert(rid(1), link("B", "B"));
        assert_eq!(reg.decide("B", "B"), Decision::Replace(rid(1)));
        assert_eq!(reg.decide("C", "B"), Decision::Attach);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for attempt in 1..50 {
            let d = backoff(attempt).as_millis() as u64;
            let cap = (50u64 << (attempt.min(10) - 1)).min(2000);
            assert!(d >= cap / 2 && d <= cap, "attempt {attempt}: {d} ms");
        }
        let samples: BTreeSet<_> = (0..50).map(|_| backoff(20)).collect();
        assert!(samples.len() > 1, "no jitter");
    }

    #[test]
    fn connect_urls_leave_out_lame_ducks() {
        let mut reg = Registry::default();
        reg.links.insert(rid(1), link("B", "B"));
        let mut c = link("C", "C");
        c.lame_duck = true;
        reg.links.insert(rid(2), c);
        assert_eq!(
            reg.connect_urls(&["me:4222".into()]),
            vec!["B:4222", "me:4222"]
        );
        reg.lame_duck = true;
        assert_eq!(reg.connect_urls(&["me:4222".into()]), vec!["B:4222"]);
    }

    #[test]
    fn ready_waits_for_first_attempts_and_snapshots() {
        let now = Instant::now();
        let mut reg = Registry::default();
        reg.first_attempts.insert("nats://b:1".into());
        reg.links.insert(rid(1), link("B", "B"));
        assert!(!reg.check_ready(now));
        reg.first_attempts.clear();
        assert!(!reg.check_ready(now));
        reg.links.get_mut(&rid(1)).unwrap().snapshot_done = true;
        assert!(reg.check_ready(now));
        assert!(reg.ready);
        assert!(!reg.check_ready(now), "the transition is reported once");
    }

    #[test]
    fn a_node_without_links_waits_out_the_peer_grace() {
        let now = Instant::now();
        let grace = now + Duration::from_secs(3);
        let mut reg = Registry {
            peer_grace_until: Some(grace),
            ..Registry::default()
        };
        assert!(!reg.check_ready(now), "no link yet: peers may be redialing");
        assert!(reg.check_ready(grace), "alone after the grace: ready");
        // A link (with its snapshot) ends the wait at once.
        let mut reg = Registry {
            peer_grace_until: Some(grace),
            ..Registry::default()
        };
        let mut l = link("B", "B");
        l.snapshot_done = true;
        reg.links.insert(rid(1), l);
        assert!(reg.check_ready(now));
    }
}
