//! The release store: every release the dashboard has seen, by window.
//!
//! Holds noisy data only. A window is stored once; a second copy of the same
//! window (a replay) is ignored and counted, never shown.

use hushmap_schema::Release;
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct ReleaseStore {
    by_window: BTreeMap<i64, Release>,
    duplicates: u64,
}

impl ReleaseStore {
    /// Stores a release; returns false if its window was already stored.
    pub fn insert(&mut self, release: Release) -> bool {
        let start = release.meta.window_start;
        if self.by_window.contains_key(&start) {
            self.duplicates += 1;
            return false;
        }
        self.by_window.insert(start, release);
        true
    }

    pub fn get(&self, window_start: i64) -> Option<&Release> {
        self.by_window.get(&window_start)
    }

    pub fn latest(&self) -> Option<&Release> {
        self.by_window.values().next_back()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Release> {
        self.by_window.values()
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}
