//! Keep-alive: PINGs the server sends and the peer must answer. One rule
//! for client connections and route links: every tick sends a PING, and a
//! tick that finds `max` PINGs unanswered ends the connection as stale
//! (a peer that vanished without a FIN).

/// What a keep-alive tick asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    Ping,
    Stale,
}

/// PINGs sent and not yet answered.
#[derive(Debug, Default, Clone)]
pub struct KeepAlive {
    outstanding: u32,
}

impl KeepAlive {
    /// The timer fired; `max` is `ping_max`.
    pub fn tick(&mut self, max: u32) -> Tick {
        if self.outstanding >= max {
            return Tick::Stale;
        }
        self.outstanding += 1;
        Tick::Ping
    }

    /// The peer answered (any PONG answers every PING sent before it).
    pub fn pong(&mut self) {
        self.outstanding = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_after_max_unanswered_and_a_pong_resets() {
        let mut k = KeepAlive::default();
        assert_eq!(k.tick(2), Tick::Ping);
        assert_eq!(k.tick(2), Tick::Ping);
        assert_eq!(k.tick(2), Tick::Stale);
        k.pong();
        assert_eq!(k.tick(2), Tick::Ping);
        assert_eq!(KeepAlive::default().tick(0), Tick::Stale);
    }
}
