//! Log lines in nats-server's shape, so tools that watch its output keep
//! working: `[PID] YYYY/MM/DD HH:MM:SS.ffffff [INF] message`.

use shoal_core::config::ServerConfig;
use std::fmt;
use tracing::level_filters::LevelFilter;
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

/// Changes the log level of the installed logger (configuration reload).
pub type SetLevel = Box<dyn Fn(&ServerConfig) -> Result<(), String> + Send + Sync>;

fn level_of(config: &ServerConfig) -> LevelFilter {
    if config.trace {
        LevelFilter::TRACE
    } else if config.debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    }
}

/// Installs the global logger: stderr (or the log file), INFO by default,
/// DEBUG with `-D` (`debug: true`), TRACE with `-V` (`trace: true`). Returns
/// what changes the level later.
pub fn init(config: &ServerConfig) -> Result<SetLevel, String> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::prelude::*;
    let writer = match &config.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {path}: {e}"))?;
            BoxMakeWriter::new(std::sync::Mutex::new(file))
        }
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let (filter, handle) = tracing_subscriber::reload::Layer::new(level_of(config));
    let format = tracing_subscriber::fmt::layer()
        .event_format(NatsFormat {
            pid: std::process::id(),
        })
        .with_writer(writer);
    tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(Box::new(move |c: &ServerConfig| {
        handle.reload(level_of(c)).map_err(|e| e.to_string())
    }))
}
