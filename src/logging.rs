//! Log lines in nats-server's shape, so tools that watch its output keep
//! working: `[PID] YYYY/MM/DD HH:MM:SS.ffffff [INF] message`.

use shoal_core::config::ServerConfig;
use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

struct NatsFormat {
    pid: u32,
}

impl<S, N> FormatEvent<S, N> for NatsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // RFC 3339 with microseconds, reshaped to nats-server's layout.
        let ts = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
        let ts = ts
            .trim_end_matches('Z')
            .replacen('T', " ", 1)
            .replace('-', "/");
        let level = match *event.metadata().level() {
            Level::ERROR => "ERR",
            Level::WARN => "WRN",
            Level::INFO => "INF",
            Level::DEBUG => "DBG",
            Level::TRACE => "TRC",
        };
        write!(w, "[{}] {} [{}] ", self.pid, ts, level)?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Installs the global logger: stderr (or the log file), INFO by default,
/// DEBUG with `-D`, TRACE with `-V`.
pub fn init(config: &ServerConfig) -> Result<(), String> {
    let level = if config.trace {
        Level::TRACE
    } else if config.debug {
        Level::DEBUG
    } else {
        Level::INFO
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .event_format(NatsFormat {
            pid: std::process::id(),
        });
    match &config.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {path}: {e}"))?;
            builder.with_writer(std::sync::Mutex::new(file)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}
