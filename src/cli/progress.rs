//! Progress on stderr: bars with rate and ETA on a terminal, plain lines every few seconds
//! otherwise (logs, CI).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dify_bundle::digest::Digest;
use dify_bundle::progress::Progress;
use dify_bundle::units;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

const PLAIN_INTERVAL: Duration = Duration::from_secs(5);
/// Blobs smaller than this get no bar of their own.
const BAR_MIN_BYTES: u64 = 1 << 20;

pub struct Reporter {
    bars: Option<MultiProgress>,
    state: Mutex<State>,
}

struct State {
    total: u64,
    done: u64,
    at_start: u64,
    positions: HashMap<Digest, u64>,
    blob_bars: HashMap<Digest, ProgressBar>,
    total_bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
    reported_end: bool,
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Reporter {
    pub fn new() -> Self {
        let bars = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Reporter {
            bars,
            state: Mutex::new(State {
                total: 0,
                done: 0,
                at_start: 0,
                positions: HashMap::new(),
                blob_bars: HashMap::new(),
                total_bar: None,
                started: Instant::now(),
                last_line: Instant::now(),
                reported_end: false,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn println(&self, line: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// Clears the bars and prints a final plain progress line.
    pub fn finish(&self) {
        let mut state = self.state();
        if let Some(bar) = state.total_bar.take() {
            bar.finish_and_clear();
        }
        for (_, bar) in state.blob_bars.drain() {
            bar.finish_and_clear();
        }
    }

    fn plain_line(&self, state: &mut State, force: bool) {
        if self.bars.is_some() || state.total == 0 {
            return;
        }
        if !force && state.last_line.elapsed() < PLAIN_INTERVAL {
            return;
        }
        state.last_line = Instant::now();
        let elapsed = state.started.elapsed().as_secs_f64().max(0.001);
        let rate = (state.done.saturating_sub(state.at_start)) as f64 / elapsed;
        let left = state.total.saturating_sub(state.done);
        let eta = if rate > 0.0 {
            format!("{:.0}s", left as f64 / rate)
        } else {
            "?".to_owned()
        };
        eprintln!(
            "  {} of {} ({:.0}%), {}/s, ETA {eta}",
            units::bytes(state.done),
            units::bytes(state.total),
            100.0 * state.done as f64 / state.total as f64,
            units::bytes(rate as u64),
        );
    }
}

impl Progress for Reporter {
    fn step(&self, message: &str) {
        self.println(&format!("{message}…"));
    }

    fn total(&self, bytes: u64, already: u64) {
        let mut state = self.state();
        if let Some(bar) = state.total_bar.take() {
            bar.finish_and_clear();
        }
        state.total = bytes;
        state.done = already;
        state.at_start = already;
        state.positions.clear();
        state.started = Instant::now();
        state.reported_end = already >= bytes;
        if let Some(bars) = &self.bars {
            let bar = bars.add(ProgressBar::new(bytes));
            bar.set_style(bar_style(
                "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            ));
            bar.set_prefix("total");
            bar.set_position(already);
            bar.reset_eta();
            state.total_bar = Some(bar);
        }
    }

    fn blob_started(&self, digest: &Digest, size: u64, already: u64) {
        let mut state = self.state();
        let previous = state.positions.insert(digest.clone(), already).unwrap_or(0);
        state.done = state.done + already - previous.min(state.done + already);
        if let Some(bar) = &state.total_bar {
            bar.set_position(state.done);
        }
        if let Some(bars) = &self.bars {
            if size >= BAR_MIN_BYTES && !state.blob_bars.contains_key(digest) {
                let bar = bars.add(ProgressBar::new(size));
                bar.set_style(bar_style(
                    "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
                ));
                bar.set_prefix(digest.hex()[..8].to_owned());
                bar.set_position(already);
                state.blob_bars.insert(digest.clone(), bar);
            } else if let Some(bar) = state.blob_bars.get(digest) {
                bar.set_position(already);
            }
        }
    }

    fn blob_advanced(&self, digest: &Digest, bytes: u64) {
        let mut state = self.state();
        state.done += bytes;
        if let Some(position) = state.positions.get_mut(digest) {
            *position += bytes;
        }
        if let Some(bar) = &state.total_bar {
            bar.set_position(state.done);
        }
        if let Some(bar) = state.blob_bars.get(digest) {
            bar.inc(bytes);
        }
        self.plain_line(&mut state, false);
    }

    fn blob_retrying(&self, digest: &Digest, reason: &str) {
        self.println(&format!("  retrying {}: {reason}", digest.short()));
    }

    fn blob_finished(&self, digest: &Digest) {
        let mut state = self.state();
        if let Some(bar) = state.blob_bars.remove(digest) {
            bar.finish_and_clear();
        }
        if state.done >= state.total && !state.reported_end {
            state.reported_end = true;
            self.plain_line(&mut state, true);
        }
    }

    fn note(&self, message: &str) {
        self.println(message);
    }
}
