//! A minimal `log` backend writing to stderr, its level taken from `PETREL_LOG`.

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "petrel: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger. `PETREL_LOG` is one of error, warn (the default), info, debug, trace.
pub fn init() {
    let level = std::env::var("PETREL_LOG")
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::Warn);
    // A second init (there is none) would be harmless, so its error is ignored.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
