//! The soak's verdict and its Markdown section: RSS growth after the warm-up, and the requests
//! and errors counted by kind.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Open file descriptors beyond the idle server's that may remain after the load: SQLite's
/// read pool grows to 4 connections, each with the database and its WAL open.
const FD_SLACK: u64 = 16;

/// Whether `now` open file descriptors are back near `idle` (the database's files can be open
/// on a few more pooled connections than at start-up).
pub fn fds_returned(idle: u64, now: u64) -> bool {
    now <= idle + FD_SLACK
}

/// One look at the server.
pub struct Sample {
    /// Since the load started.
    pub at: Duration,
    pub rss_kib: u64,
    /// Open file descriptors (sockets, the database, the log).
    pub fds: u64,
    /// Chat turns completed so far (SSE and WebSocket).
    pub chats: u64,
    pub errors: u64,
}

pub struct Report {
    pub opts_duration: Duration,
    pub warmup: Duration,
    /// When the last worker had finished its last operation.
    pub drained: Duration,
    pub samples: Vec<Sample>,
    /// One sample period after the load stopped and the client's connections were closed.
    pub after: Sample,
    pub ok: BTreeMap<&'static str, u64>,
    pub errors: BTreeMap<String, u64>,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// RSS over the samples taken after the warm-up.
pub struct Growth {
    pub samples: usize,
    pub min_kib: u64,
    pub max_kib: u64,
    pub last_kib: u64,
    /// Least-squares slope, KiB per minute.
    pub slope_kib_min: f64,
    /// The fitted line's rise over the measured span, relative to its value at the start of it.
    pub fit_pct: f64,
    /// (last − min) / min.
    pub last_vs_min_pct: f64,
}

impl Report {
    pub fn growth(&self) -> Option<Growth> {
        let post: Vec<&Sample> = self.samples.iter().filter(|s| s.at >= self.warmup).collect();
        if post.len() < 3 {
            return None;
        }
        let n = post.len() as f64;
        let xs: Vec<f64> = post.iter().map(|s| s.at.as_secs_f64()).collect();
        let ys: Vec<f64> = post.iter().map(|s| s.rss_kib as f64).collect();
        let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
        let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
        let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        let slope = sxy / sxx;
        let (x0, x1) = (xs[0], xs[xs.len() - 1]);
        let fit_start = my + slope * (x0 - mx);
        let min_kib = post.iter().map(|s| s.rss_kib).min().unwrap_or(0);
        let last_kib = post[post.len() - 1].rss_kib;
        Some(Growth {
            samples: post.len(),
            min_kib,
            max_kib: post.iter().map(|s| s.rss_kib).max().unwrap_or(0),
            last_kib,
            slope_kib_min: slope * 60.0,
            fit_pct: slope * (x1 - x0) / fit_start * 100.0,
            last_vs_min_pct: (last_kib as f64 - min_kib as f64) / min_kib as f64 * 100.0,
        })
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Whether the file descriptors the server holds once the load is gone are back near where
    /// they started.
    pub fn fds_returned(&self) -> bool {
        fds_returned(self.samples.first().map_or(0, |s| s.fds), self.after.fds)
    }

    /// Passed: no error, RSS after the warm-up grew by at most `max_growth_pct` both by the fitted
    /// line and as (last − min) / min, and the sockets were all closed once the load was gone.
    pub fn passed(&self, max_growth_pct: f64) -> bool {
        self.errors_total() == 0
            && self.growth().is_some_and(|g| g.fit_pct <= max_growth_pct && g.last_vs_min_pct <= max_growth_pct)
            && self.fds_returned()
    }

    /// The `## Soak` section of docs/benchmarks.md. `load` describes the mix; `date` and
    /// `machine` are printed as given.
    pub fn markdown(&self, load: &str, date: &str, machine: &str, max_growth_pct: f64) -> anyhow::Result<String> {
        let mib = |k: u64| k as f64 / 1024.0;
        let mut md = String::new();
        writeln!(md, "## Soak\n")?;
        writeln!(
            md,
            "Written by `scripts/soak.sh` on {date}: {} of steady mixed load against one release build (SQLite, loopback, a temporary data dir). Not run by CI; run it by hand (`scripts/soak.sh [minutes]`, default 10). {machine}\n",
            match self.opts_duration.as_secs() / 60 {
                1 => "1 minute".to_string(),
                m => format!("{m} minutes"),
            },
        )?;
        writeln!(md, "{load}\n")?;
        let g = self.growth();
        let verdict = if self.passed(max_growth_pct) { "**passed**" } else { "**failed**" };
        match &g {
            Some(g) => writeln!(
                md,
                "Result: {verdict} — {} errors; open fds back to the idle level after the load: {}; RSS after the warm-up (the first {} s) grew **{:+.1} %** by the fitted line ({:+.0} KiB/min over {} samples; the limit is {max_growth_pct} %); min {:.1} MiB, max {:.1} MiB, last {:.1} MiB, so (last − min) / min = **{:.1} %** (also at most {max_growth_pct} %).\n",
                self.errors_total(),
                if self.fds_returned() { "yes" } else { "**no**" },
                self.warmup.as_secs(),
                g.fit_pct,
                g.slope_kib_min,
                g.samples,
                mib(g.min_kib),
                mib(g.max_kib),
                mib(g.last_kib),
                g.last_vs_min_pct,
            )?,
            None => writeln!(md, "Result: {verdict} — too few samples after the warm-up to judge RSS.\n")?,
        }
        writeln!(
            md,
            "Growth measure: a least-squares line through every RSS sample taken after the warm-up; its rise from the first to the last of those samples, relative to its value at the first. Every sample counts, so neither one low reading (the allocator handing memory back) nor one high one (a burst of connections) decides the verdict, while memory that grows with the work done — a leak — shows as a slope. The warm-up is left out because caches, pools and the allocator's arenas fill during it. (last − min) / min must also stay within the limit, so a step that the line would average away fails the run too.\n"
        )?;
        writeln!(md, "| operation | completed |\n|---|---|")?;
        for (op, n) in &self.ok {
            writeln!(md, "| {op} | {n} |")?;
        }
        let secs = self.opts_duration.as_secs_f64();
        let chats: u64 = self
            .ok
            .iter()
            .filter(|(op, _)| op.contains("chat turn") || op.starts_with("SSE chat"))
            .map(|(_, n)| n)
            .sum();
        writeln!(
            md,
            "\n{chats} chat turns in all ({:.1} per second); {:.1} MiB uploaded, {:.1} MiB downloaded and compared. The last operations finished {:.1} s after the deadline.\n",
            chats as f64 / secs,
            mib(self.bytes_up / 1024),
            mib(self.bytes_down / 1024),
            (self.drained.as_secs_f64() - secs).max(0.0),
        )?;
        if self.errors.is_empty() {
            writeln!(md, "Errors: none.\n")?;
        } else {
            writeln!(md, "| error | count |\n|---|---|")?;
            for (e, n) in &self.errors {
                writeln!(md, "| {e} | {n} |")?;
            }
            writeln!(md)?;
        }
        writeln!(md, "RSS of the astrgate process (`VmRSS`), every {} s:\n", self.sample_every_secs())?;
        writeln!(md, "| elapsed | RSS MiB | open fds | chat turns done | errors |\n|---|---|---|---|---|")?;
        for s in &self.samples {
            let mark = if s.at < self.warmup { " (warm-up)" } else { "" };
            writeln!(
                md,
                "| {} s{mark} | {:.1} | {} | {} | {} |",
                s.at.as_secs(),
                mib(s.rss_kib),
                s.fds,
                s.chats,
                s.errors
            )?;
        }
        writeln!(
            md,
            "\n{} s after the load stopped and the load generator closed its connections (astrgate keeps idle upstream connections for 90 s, closed by a timer of that period; the last sample is taken once the open fds are back near the idle level, or after the settle time): RSS {:.1} MiB, {} open fds (at the start: {}; the verdict wants at most {FD_SLACK} more — {}).",
            (self.after.at.as_secs_f64() - self.drained.as_secs_f64()).round(),
            mib(self.after.rss_kib),
            self.after.fds,
            self.samples.first().map(|s| s.fds).unwrap_or(0),
            if self.fds_returned() { "met" } else { "**missed**: sockets or files were left open" },
        )?;
        Ok(md)
    }

    fn sample_every_secs(&self) -> u64 {
        match self.samples.as_slice() {
            [a, b, ..] => (b.at.as_secs_f64() - a.at.as_secs_f64()).round() as u64,
            _ => 0,
        }
    }
}
