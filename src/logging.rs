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
    /// `logtime` (`-T`): stamp each line (nats-server's default).
    time: bool,
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
        let level = match *event.metadata().level() {
            Level::ERROR => "ERR",
            Level::WARN => "WRN",
            Level::INFO => "INF",
            Level::DEBUG => "DBG",
            Level::TRACE => "TRC",
        };
        if self.time {
            // RFC 3339 with microseconds (UTC), reshaped to nats-server's
            // layout.
            let ts = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
            let ts = ts
                .trim_end_matches('Z')
                .replacen('T', " ", 1)
                .replace('-', "/");
            write!(w, "[{}] {} [{}] ", self.pid, ts, level)?;
        } else {
            write!(w, "[{}] [{}] ", self.pid, level)?;
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Changes the log level of the installed logger (configuration reload).
pub type SetLevel = Box<dyn Fn(&ServerConfig) -> Result<(), String> + Send + Sync>;

/// Reopens the log file (SIGUSR1, `--signal reopen`, after log rotation);
/// a no-op when logging to stderr.
pub type Reopen = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The log file, shared by every line written and swapped on reopen.
#[derive(Clone)]
struct LogFile(std::sync::Arc<std::sync::Mutex<std::fs::File>>);

impl std::io::Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock() {
            Ok(mut f) => f.write(buf),
            Err(_) => Err(std::io::Error::other("log file lock poisoned")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.lock() {
            Ok(mut f) => f.flush(),
            Err(_) => Ok(()),
        }
    }
}

fn open_log(path: &str) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open log file {path}: {e}"))
}

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
pub fn init(config: &ServerConfig) -> Result<(SetLevel, Reopen), String> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::prelude::*;
    let (writer, reopen): (BoxMakeWriter, Reopen) = match &config.log_file {
        Some(path) => {
            let file = LogFile(std::sync::Arc::new(std::sync::Mutex::new(open_log(path)?)));
            let shared = file.clone();
            let path = path.clone();
            let reopen: Reopen = Box::new(move || {
                let fresh = open_log(&path)?;
                let mut current = shared.0.lock().map_err(|_| "log file lock poisoned")?;
                *current = fresh;
                Ok(())
            });
            (BoxMakeWriter::new(move || file.clone()), reopen)
        }
        None => (BoxMakeWriter::new(std::io::stderr), Box::new(|| Ok(()))),
    };
    let (filter, handle) = tracing_subscriber::reload::Layer::new(level_of(config));
    let format = tracing_subscriber::fmt::layer()
        .event_format(NatsFormat {
            pid: std::process::id(),
            time: config.logtime,
        })
        .with_writer(writer);
    tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .try_init()
        .map_err(|e| e.to_string())?;
    let set_level: SetLevel =
        Box::new(move |c: &ServerConfig| handle.reload(level_of(c)).map_err(|e| e.to_string()));
    Ok((set_level, reopen))
}
