//! The workload a plan measures: message classes at their stated rates, as a
//! small TOML file or, for one request-reply class, as flags.
//!
//! ```toml
//! name = "checkout RPC + order events"
//!
//! [[rpc]]
//! name = "checkout"
//! rate = 2000        # requests/s at the stated load
//! size = 256         # request and reply payload, bytes
//! p99_ms = 2.0       # objective (or p999_ms)
//! responders = 2     # queue group members answering
//! requesters = 1     # connections sending requests
//!
//! [[events]]
//! name = "orders"
//! rate = 5000        # messages/s published at the stated load
//! size = 512
//! fanout = 3         # subscribers each receiving every message
//! # queue = 2        # or: a queue group of 2, each message to one member
//! # p99_ms = 5.0     # optional objective for delivery latency
//! ```

use serde::{Deserialize, Serialize};

/// A request-reply class with its latency objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcClass {
    pub name: String,
    /// Requests per second at the stated load.
    pub rate: f64,
    /// Request (and echoed reply) payload in bytes; at least 8 (the
    /// sequence number travels in the payload).
    #[serde(default = "default_size")]
    pub size: usize,
    #[serde(default)]
    pub p99_ms: Option<f64>,
    #[serde(default)]
    pub p999_ms: Option<f64>,
    #[serde(default = "one")]
    pub responders: usize,
    #[serde(default = "one")]
    pub requesters: usize,
}

/// A publish-subscribe class: fan-out to every subscriber, or a queue group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventClass {
    pub name: String,
    /// Messages published per second at the stated load.
    pub rate: f64,
    #[serde(default = "default_size")]
    pub size: usize,
    /// Subscribers that each receive every message.
    #[serde(default)]
    pub fanout: Option<usize>,
    /// Members of one queue group: each message goes to one of them.
    #[serde(default)]
    pub queue: Option<usize>,
    #[serde(default = "one")]
    pub publishers: usize,
    #[serde(default)]
    pub p99_ms: Option<f64>,
    #[serde(default)]
    pub p999_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub rpc: Vec<RpcClass>,
    #[serde(default)]
    pub events: Vec<EventClass>,
}

fn default_size() -> usize {
    128
}
fn one() -> usize {
    1
}
fn default_name() -> String {
    "workload".into()
}

/// A latency objective: this quantile at or under this many microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Objective {
    pub quantile: f64,
    pub max_us: f64,
}

impl Objective {
    pub fn label(&self) -> String {
        format!("{} ≤ {}", quantile_name(self.quantile), fmt_us(self.max_us))
    }
}

pub fn quantile_name(q: f64) -> &'static str {
    if q >= 0.999 {
        "p99.9"
    } else {
        "p99"
    }
}

/// `1500` → `1.5 ms`, `80` → `80 µs`.
pub fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{} ms", trim(us / 1000.0))
    } else {
        format!("{} µs", trim(us))
    }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn objective(name: &str, p99: Option<f64>, p999: Option<f64>) -> Result<Option<Objective>, String> {
    match (p99, p999) {
        (Some(_), Some(_)) => Err(format!("{name}: give p99_ms or p999_ms, not both")),
        (Some(ms), None) => Ok(Some(Objective {
            quantile: 0.99,
            max_us: ms * 1000.0,
        })),
        (None, Some(ms)) => Ok(Some(Objective {
            quantile: 0.999,
            max_us: ms * 1000.0,
        })),
        (None, None) => Ok(None),
    }
}

impl RpcClass {
    pub fn objective(&self) -> Option<Objective> {
        objective(&self.name, self.p99_ms, self.p999_ms)
            .ok()
            .flatten()
    }
}

impl EventClass {
    pub fn objective(&self) -> Option<Objective> {
        objective(&self.name, self.p99_ms, self.p999_ms)
            .ok()
            .flatten()
    }

    /// Deliveries per message published.
    pub fn deliveries_per_msg(&self) -> usize {
        self.fanout.unwrap_or(1)
    }

    /// How many subscribing connections the class uses.
    pub fn receivers(&self) -> usize {
        self.fanout.or(self.queue).unwrap_or(1)
    }
}

impl Workload {
    pub fn parse(text: &str) -> Result<Workload, String> {
        let w: Workload = toml::from_str(text).map_err(|e| format!("workload: {e}"))?;
        w.validate()?;
        Ok(w)
    }

    pub fn load(path: &str) -> Result<Workload, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("workload {path}: {e}"))?;
        Self::parse(&text).map_err(|e| format!("{path}: {e}"))
    }

    /// Every rule a file or flags must meet, with the class named.
    pub fn validate(&self) -> Result<(), String> {
        if self.rpc.is_empty() && self.events.is_empty() {
            return Err("workload has no [[rpc]] or [[events]] class".into());
        }
        let mut names = std::collections::HashSet::new();
        let positive = |name: &str, what: &str, x: f64| {
            if x.is_finite() && x > 0.0 {
                Ok(())
            } else {
                Err(format!("{name}: {what} must be a positive number, got {x}"))
            }
        };
        for c in &self.rpc {
            if !names.insert(c.name.clone()) {
                return Err(format!("two classes are named {:?}", c.name));
            }
            positive(&c.name, "rate", c.rate)?;
            if c.size < 8 {
                return Err(format!("{}: size must be at least 8 bytes", c.name));
            }
            if c.responders == 0 || c.requesters == 0 {
                return Err(format!(
                    "{}: needs at least one requester and responder",
                    c.name
                ));
            }
            let o = objective(&c.name, c.p99_ms, c.p999_ms)?;
            match o {
                None => return Err(format!("{}: an rpc class needs p99_ms or p999_ms", c.name)),
                Some(o) => positive(&c.name, "the objective", o.max_us)?,
            }
        }
        for c in &self.events {
            if !names.insert(c.name.clone()) {
                return Err(format!("two classes are named {:?}", c.name));
            }
            positive(&c.name, "rate", c.rate)?;
            if c.size < 8 {
                return Err(format!("{}: size must be at least 8 bytes", c.name));
            }
            match (c.fanout, c.queue) {
                (Some(_), Some(_)) => {
                    return Err(format!("{}: give fanout or queue, not both", c.name))
                }
                (Some(0), _) | (_, Some(0)) => {
                    return Err(format!("{}: fanout/queue must be at least 1", c.name))
                }
                _ => {}
            }
            if c.publishers == 0 {
                return Err(format!("{}: needs at least one publisher", c.name));
            }
            if let Some(o) = objective(&c.name, c.p99_ms, c.p999_ms)? {
                positive(&c.name, "the objective", o.max_us)?;
            }
        }
        Ok(())
    }

    /// Messages per second the clients send at `factor` × the stated load
    /// (requests and publishes; replies are the responders' answer).
    pub fn offered(&self, factor: f64) -> f64 {
        factor
            * (self.rpc.iter().map(|c| c.rate).sum::<f64>()
                + self.events.iter().map(|c| c.rate).sum::<f64>())
    }

    /// Messages per second through the server at `factor` (in plus out):
    /// a request is 2 in and 2 out (request, reply); an event 1 in and one
    /// out per delivery.
    pub fn server_msgs(&self, factor: f64) -> f64 {
        factor
            * (self.rpc.iter().map(|c| 4.0 * c.rate).sum::<f64>()
                + self
                    .events
                    .iter()
                    .map(|c| c.rate * (1 + c.deliveries_per_msg()) as f64)
                    .sum::<f64>())
    }

    /// One line per class, for reports.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.rpc {
            out.push(format!(
                "rpc `{}`: {} req/s, {} B, {} requester(s) → queue group of {} responder(s), objective {}",
                c.name,
                c.rate,
                c.size,
                c.requesters,
                c.responders,
                c.objective().map_or("none".into(), |o| o.label())
            ));
        }
        for c in &self.events {
            let to = match (c.fanout, c.queue) {
                (_, Some(q)) => format!("queue group of {q}"),
                (f, None) => format!("fan-out to {}", f.unwrap_or(1)),
            };
            out.push(format!(
                "events `{}`: {} msgs/s, {} B, {} publisher(s), {to}, objective {}",
                c.name,
                c.rate,
                c.size,
                c.publishers,
                c.objective()
                    .map_or("none (loss and stalls only)".into(), |o| o.label())
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
name = "mix"
[[rpc]]
name = "checkout"
rate = 2000
size = 256
p99_ms = 2.0
responders = 2

[[events]]
name = "orders"
rate = 5000
size = 512
fanout = 3

[[events]]
name = "jobs"
rate = 100
queue = 4
p999_ms = 10
"#;

    #[test]
    fn parses_a_workload_file() {
        let w = Workload::parse(FILE).unwrap();
        assert_eq!(w.name, "mix");
        assert_eq!(w.rpc.len(), 1);
        let r = &w.rpc[0];
        assert_eq!(
            (r.rate, r.size, r.responders, r.requesters),
            (2000.0, 256, 2, 1)
        );
        assert_eq!(
            r.objective(),
            Some(Objective {
                quantile: 0.99,
                max_us: 2000.0
            })
        );
        assert_eq!(w.events[0].deliveries_per_msg(), 3);
        assert_eq!(w.events[0].receivers(), 3);
        assert_eq!(w.events[1].deliveries_per_msg(), 1);
        assert_eq!(w.events[1].receivers(), 4);
        assert_eq!(w.events[1].objective().unwrap().quantile, 0.999);
        assert_eq!(w.events[1].size, 128, "default size");
        assert_eq!(w.events[0].objective(), None);
    }

    #[test]
    fn load_arithmetic() {
        let w = Workload::parse(FILE).unwrap();
        assert_eq!(w.offered(1.0), 7100.0);
        assert_eq!(w.offered(0.5), 3550.0);
        // 2000×4 + 5000×(1+3) + 100×(1+1)
        assert_eq!(w.server_msgs(1.0), 8000.0 + 20000.0 + 200.0);
    }

    #[test]
    fn refuses_what_cannot_be_measured() {
        let bad = [
            ("", "no [[rpc]] or [[events]]"),
            ("[[rpc]]\nname='a'\nrate=10\n", "needs p99_ms or p999_ms"),
            (
                "[[rpc]]\nname='a'\nrate=10\np99_ms=1\np999_ms=2\n",
                "not both",
            ),
            (
                "[[rpc]]\nname='a'\nrate=0\np99_ms=1\n",
                "rate must be a positive",
            ),
            (
                "[[rpc]]\nname='a'\nrate=1\nsize=4\np99_ms=1\n",
                "at least 8 bytes",
            ),
            (
                "[[events]]\nname='a'\nrate=1\nfanout=2\nqueue=2\n",
                "fanout or queue",
            ),
            ("[[events]]\nname='a'\nrate=1\nfanout=0\n", "at least 1"),
            (
                "[[events]]\nname='a'\nrate=1\n[[events]]\nname='a'\nrate=2\n",
                "two classes",
            ),
            ("[[events]]\nname='a'\nrate=1\nfan_out=2\n", "unknown field"),
        ];
        for (text, want) in bad {
            let e = Workload::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn describes_each_class() {
        let w = Workload::parse(FILE).unwrap();
        let d = w.describe();
        assert_eq!(d.len(), 3);
        assert!(d[0].contains("objective p99 ≤ 2 ms"), "{}", d[0]);
        assert!(d[1].contains("fan-out to 3"), "{}", d[1]);
        assert!(
            d[2].contains("queue group of 4") && d[2].contains("p99.9 ≤ 10 ms"),
            "{}",
            d[2]
        );
        assert_eq!(fmt_us(80.0), "80 µs");
        assert_eq!(fmt_us(1500.0), "1.5 ms");
    }
}
