//! [`WindowSchedule`]: which windows are released, decided by the clock
//! alone.
//!
//! Every window from the schedule's epoch on is decided in order, once:
//! counted, noised, charged and published (also when nobody submitted),
//! refused by the ledger (a decision that depends only on earlier
//! windows, themselves scheduled), or, when this process started too long
//! after the window's deadline for its records to still be on the topic,
//! published empty and marked [`Coverage::Missed`] at no cost. Nothing
//! here looks at a record: for any two datasets the same windows are
//! released, which is what makes the existence of a window carry no
//! information (docs/PRIVACY.md, "Which windows are released").
//!
//! ```
//! use hushmap_aggregate::schedule::{Decision, WindowSchedule};
//! use hushmap_schema::WindowLength;
//!
//! let minute = WindowLength::from_secs(60).unwrap();
//! // Started 30 s after the Unix epoch, with no history: the first window is [60 s, 120 s).
//! let mut s = WindowSchedule::starting(minute, 5_000, 600_000, None, None, 30_000);
//! assert_eq!(s.next().start_ms, 60_000);
//! // At 125 s the first window's deadline (120 s + 5 s lateness) has passed.
//! let due: Vec<_> = s.due(125_000).collect();
//! assert_eq!(due.len(), 1);
//! assert_eq!(due[0].1, Decision::Count);
//! s.decided(due[0].0);
//! assert_eq!(s.next().start_ms, 120_000);
//! ```

use hushmap_privacy::release::{CellCounts, WindowData};
use hushmap_schema::{Window, WindowLength};

/// What happens to a scheduled window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Its records are counted, noised and published (ledger permitting).
    Count,
    /// Its records may already be gone from the topic: it is published
    /// without data, marked missed, at no cost.
    Missed,
}

impl Decision {
    /// What the release step is given for a window decided so: its
    /// bounded counts, or nothing for a window published without data.
    pub fn data(self, cells: &[CellCounts]) -> WindowData<'_> {
        match self {
            Decision::Count => WindowData::Counted(cells),
            Decision::Missed => WindowData::Missed,
        }
    }
}

/// The windows a streaming aggregator releases, in order, from an epoch.
#[derive(Debug, Clone)]
pub struct WindowSchedule {
    length: WindowLength,
    lateness_ms: i64,
    epoch: i64,
    next: i64,
    /// Windows whose deadline plus the replay horizon had passed when this
    /// process started are [`Decision::Missed`].
    started_ms: i64,
    replay_horizon_ms: i64,
}

impl WindowSchedule {
    /// The schedule of a process started at `started_ms`.
    ///
    /// - `epoch`: the configured or persisted first window start; `None`
    ///   takes the first window at or after `started_ms`.
    /// - `released_through`: the end of the latest window on the ledger;
    ///   the schedule continues after it (a restart never decides a
    ///   window twice), but never starts before the epoch.
    /// - `replay_horizon_ms`: how long after a window's deadline its
    ///   records are surely still on the submissions topic.
    pub fn starting(
        length: WindowLength,
        lateness_ms: i64,
        replay_horizon_ms: i64,
        epoch: Option<i64>,
        released_through: Option<i64>,
        started_ms: i64,
    ) -> WindowSchedule {
        let epoch = epoch.unwrap_or_else(|| first_window_at_or_after(started_ms, length));
        let next = released_through
            .map(|end| first_window_at_or_after(end, length))
            .map_or(epoch, |after| after.max(epoch));
        WindowSchedule {
            length,
            lateness_ms,
            epoch,
            next,
            started_ms,
            replay_horizon_ms,
        }
    }

    /// The first window of the schedule (persisted, so a restart keeps it).
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The next window to decide.
    pub fn next(&self) -> Window {
        Window::from_start(self.next, self.length).expect("aligned by construction")
    }

    /// The instant after which no record of `window` is accepted.
    pub fn deadline(&self, window: &Window) -> i64 {
        window.end_ms.saturating_add(self.lateness_ms)
    }

    /// How `window` is decided (whatever the data).
    pub fn decision(&self, window: &Window) -> Decision {
        let gone_by = self.deadline(window).saturating_add(self.replay_horizon_ms);
        if gone_by <= self.started_ms {
            Decision::Missed
        } else {
            Decision::Count
        }
    }

    /// Whether records of `window` are still wanted: not decided yet, and
    /// to be counted.
    pub fn wants(&self, window: &Window) -> bool {
        window.start_ms >= self.next && self.decision(window) == Decision::Count
    }

    /// The undecided windows whose deadline is at or before `frontier`
    /// (what every input partition has been read up to), oldest first.
    pub fn due(&self, frontier: i64) -> impl Iterator<Item = (Window, Decision)> + '_ {
        let length = self.length;
        std::iter::successors(Some(self.next), move |s| s.checked_add(length.millis()))
            .map_while(move |start| Window::from_start(start, length))
            .take_while(move |w| self.deadline(w) <= frontier)
            .map(|w| (w, self.decision(&w)))
    }

    /// Marks `window` decided; windows are decided in order.
    pub fn decided(&mut self, window: Window) {
        debug_assert_eq!(window.start_ms, self.next, "windows are decided in order");
        self.next = self.next.max(window.end_ms);
    }
}

/// The start of the first window at or after `t_ms`.
pub fn first_window_at_or_after(t_ms: i64, length: WindowLength) -> i64 {
    let w = Window::containing(t_ms, length);
    if w.start_ms == t_ms {
        w.start_ms
    } else {
        w.end_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn minute() -> WindowLength {
        WindowLength::from_secs(60).unwrap()
    }

    #[test]
    fn the_default_epoch_is_the_first_window_at_or_after_start_up() {
        let s = WindowSchedule::starting(minute(), 0, 0, None, None, 10 * MIN + 1);
        assert_eq!((s.epoch(), s.next().start_ms), (11 * MIN, 11 * MIN));
        let s = WindowSchedule::starting(minute(), 0, 0, None, None, 10 * MIN);
        assert_eq!(s.next().start_ms, 10 * MIN);
    }

    #[test]
    fn a_restart_continues_after_the_latest_release_never_before_the_epoch() {
        let s = WindowSchedule::starting(minute(), 0, 0, Some(5 * MIN), Some(8 * MIN), 20 * MIN);
        assert_eq!((s.epoch(), s.next().start_ms), (5 * MIN, 8 * MIN));
        // Releases from before a later epoch do not pull the schedule back.
        let s = WindowSchedule::starting(minute(), 0, 0, Some(30 * MIN), Some(8 * MIN), 20 * MIN);
        assert_eq!(s.next().start_ms, 30 * MIN);
    }

    #[test]
    fn every_window_is_due_in_order_once_its_deadline_is_read_past() {
        let mut s = WindowSchedule::starting(minute(), 5_000, 3_600_000, Some(0), None, 0);
        assert_eq!(s.due(MIN + 4_999).count(), 0);
        let due: Vec<_> = s.due(3 * MIN + 5_000).map(|(w, _)| w.start_ms).collect();
        assert_eq!(due, vec![0, MIN, 2 * MIN]);
        for w in s.due(3 * MIN + 5_000).map(|(w, _)| w).collect::<Vec<_>>() {
            s.decided(w);
        }
        assert_eq!(s.next().start_ms, 3 * MIN);
        assert!(!s.wants(&Window::from_start(2 * MIN, minute()).unwrap()));
        assert!(s.wants(&Window::from_start(3 * MIN, minute()).unwrap()));
    }

    #[test]
    fn windows_gone_from_the_topic_at_start_up_are_missed_by_the_clock_alone() {
        // Started at 100 min with a 30 min replay horizon and 1 min lateness:
        // a window ending at or before 69 min is missed.
        let s = WindowSchedule::starting(minute(), MIN, 30 * MIN, Some(0), None, 100 * MIN);
        let w = |m: i64| Window::from_start(m * MIN, minute()).unwrap();
        assert_eq!(s.decision(&w(68)), Decision::Missed);
        assert_eq!(s.decision(&w(69)), Decision::Count);
        assert!(!s.wants(&w(10)));
        let decisions: Vec<_> = s.due(100 * MIN).map(|(_, d)| d).collect();
        assert_eq!(decisions.len(), 99);
        assert_eq!(
            decisions.iter().filter(|d| **d == Decision::Missed).count(),
            69
        );
    }
}
