//! How long-running library work reports progress: through a [`Progress`]
//! the caller passes. The library never prints on its own; the binaries
//! pass [`Bar`] (a terminal progress bar on standard error), tests and
//! library users [`Silent`].

/// Receives progress reports. Called from several threads at once.
pub trait Progress: Sync {
    /// A new phase: `total` units of work, of which `done` are already done
    /// (a resumed run).
    fn begin(&self, _phase: &str, _total: u64, _done: u64) {}
    /// `n` more units are done.
    fn advance(&self, _n: u64) {}
    /// A short status shown beside the bar (loss, rates).
    fn message(&self, _msg: &str) {}
    /// Work up to here is on disk and survives a crash: `count` units of
    /// `what` (for example 3 "shards complete").
    fn saved(&self, _what: &str, _count: u64) {}
    /// The phase is over.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}

/// A terminal progress bar (indicatif) showing rate and ETA; draws nothing
/// when standard error is not a terminal.
pub struct Bar {
    bar: indicatif::ProgressBar,
}

impl Bar {
    pub fn new() -> Bar {
        Bar {
            bar: indicatif::ProgressBar::hidden(),
        }
    }
}

impl Default for Bar {
    fn default() -> Self {
        Bar::new()
    }
}

impl Progress for Bar {
    fn begin(&self, phase: &str, total: u64, done: u64) {
        self.bar
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.bar.set_length(total);
        self.bar.set_position(done);
        self.bar.reset_eta();
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len}  {per_sec}  ETA {eta}  {msg}",
        ) {
            self.bar.set_style(style.progress_chars("=> "));
        }
        self.bar.set_prefix(phase.to_string());
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    fn message(&self, msg: &str) {
        self.bar.set_message(msg.to_string());
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
