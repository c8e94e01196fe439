//! [`ProvisionalBoard`]: the latest provisional release of each window
//! still open, from the aggregator's provisional topic. Memory only and
//! small (one release per open window, the coarsest level's regions): a
//! window's provisional numbers are replaced by its final release, which
//! is what is stored, exported and served as history.

use hushmap_schema::Release;
use std::collections::BTreeMap;

/// Windows kept at most (the open one and, while its final release is
/// late, the one before).
const KEPT_WINDOWS: usize = 4;

/// The newest provisional release per window.
#[derive(Debug, Default)]
pub struct ProvisionalBoard {
    latest: BTreeMap<i64, Release>,
}

impl ProvisionalBoard {
    /// Takes in `release` if it is provisional and newer than what the
    /// board holds for its window (messages may be read again after a
    /// restart); returns whether it was kept.
    ///
    /// ```
    /// use hushmap_dashboard::provisional::ProvisionalBoard;
    /// let board = ProvisionalBoard::default();
    /// assert!(board.current(None).is_none());
    /// ```
    pub fn insert(&mut self, release: Release) -> bool {
        let Some(incoming) = release.meta.provisional.as_ref() else {
            return false;
        };
        let start = release.meta.window_start;
        if let Some(held) = self
            .latest
            .get(&start)
            .and_then(|r| r.meta.provisional.as_ref())
            && held.sub_windows_in >= incoming.sub_windows_in
        {
            return false;
        }
        self.latest.insert(start, release);
        while self.latest.len() > KEPT_WINDOWS {
            self.latest.pop_first();
        }
        true
    }

    /// The provisional release to show: the newest window's, unless its
    /// final release is out (`final_through`, the end of the newest final
    /// release), which replaces it.
    pub fn current(&self, final_through: Option<i64>) -> Option<&Release> {
        self.latest
            .values()
            .next_back()
            .filter(|r| final_through.is_none_or(|end| r.meta.window_start >= end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushmap_schema::ProvisionalMeta;

    fn provisional(window: i64, sub_windows_in: u32) -> Release {
        let mut r = crate::store::tests::sample_release(window, 0);
        r.meta.provisional = Some(Box::new(ProvisionalMeta {
            sub_windows_in,
            sub_windows: 24,
            sub_window_ms: 1,
            through_ms: r.meta.window_start + i64::from(sub_windows_in),
            level: 5,
            node_noise_scale: 1.0,
            intervals: Vec::new(),
        }));
        r
    }

    #[test]
    fn the_newest_sub_window_of_the_newest_window_is_shown_until_its_final_release() {
        let mut board = ProvisionalBoard::default();
        assert!(!board.insert(crate::store::tests::sample_release(0, 0)));
        assert!(board.insert(provisional(0, 3)));
        // Read again after a restart, or out of order: the newer stays.
        assert!(!board.insert(provisional(0, 2)));
        assert!(!board.insert(provisional(0, 3)));
        assert!(board.insert(provisional(0, 4)));
        let shown = board.current(None).unwrap();
        assert_eq!(shown.meta.provisional.as_ref().unwrap().sub_windows_in, 4);
        let start = shown.meta.window_start;
        let end = shown.meta.window_end;
        // The final release of an earlier window leaves it shown; its own
        // final release replaces it.
        assert!(board.current(Some(start)).is_some());
        assert!(board.current(Some(end)).is_none());
        for w in 1..=6 {
            board.insert(provisional(w, 1));
        }
        assert_eq!(board.latest.len(), KEPT_WINDOWS);
    }
}
