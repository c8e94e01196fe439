//! The single topology's window bookkeeping, without Kafka: which records
//! each open window holds, which are refused (late, replayed, over the
//! cap), and how far every input partition has been read.
//!
//! [`stream`](crate::stream) feeds it what the consumer delivers and asks
//! it which windows may close; everything here is a pure function of what
//! it was given, so it is tested on its own below.

use crate::first_record::Arrival;
use crate::intake::has_room;
use crate::records::SequencedRecord;
use crate::schedule::WindowSchedule;
use hushmap_schema::{CoarseRecord, Window};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Records of one window, with the first offset seen per partition.
#[derive(Debug, Default)]
pub struct WindowBuffer {
    pub records: Vec<SequencedRecord>,
    /// Where and when each of `records` was read (same order): what the
    /// provisional series orders a contributor's records by.
    pub arrivals: Vec<Arrival>,
    /// Seal ids of the records buffered, to drop replayed copies.
    seals: HashSet<u128>,
    /// Per partition, the offset of the window's first record: committed
    /// offsets never pass a window that is not yet published.
    pub first_offsets: HashMap<i32, i64>,
    /// A record was refused for the buffer cap.
    full: bool,
}

/// What became of one opened record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Accepted,
    /// Its window is decided (or before the epoch), or it arrived after
    /// the window's deadline.
    Late,
    /// A copy of a record this window already holds (same seal id).
    Replayed,
    /// The window holds `max_buffered_records_per_window` already.
    WindowFull,
}

/// The open windows and the read position of each input partition.
#[derive(Debug)]
pub struct WindowBook {
    open: BTreeMap<i64, WindowBuffer>,
    /// Every input partition (assigned at start-up).
    partitions: Vec<i32>,
    /// Latest append timestamp (the broker's) seen per partition.
    latest_arrival: HashMap<i32, i64>,
    /// Per partition, the latest instant by which it had been read to the
    /// end: its leader, asked then, held nothing beyond what was read.
    read_to_end_at: HashMap<i32, i64>,
    next_seq: u64,
    cap: usize,
}

impl WindowBook {
    /// A book over `partitions`, holding at most `cap` records a window.
    pub fn new(partitions: Vec<i32>, cap: usize) -> WindowBook {
        WindowBook {
            open: BTreeMap::new(),
            partitions,
            latest_arrival: HashMap::new(),
            read_to_end_at: HashMap::new(),
            next_seq: 0,
            cap,
        }
    }

    /// A message was read from `partition`, appended by the broker at
    /// `arrived_ms` (whether or not it opens to a record).
    pub fn read(&mut self, partition: i32, arrived_ms: i64) {
        let latest = self.latest_arrival.entry(partition).or_insert(arrived_ms);
        *latest = (*latest).max(arrived_ms);
    }

    /// `partition`'s leader, asked at `asked_at`, held nothing beyond what
    /// had been read (see
    /// [`read_to_end_now`](hushmap_service::consumer::read_to_end_now)).
    pub fn read_to_end(&mut self, partition: i32, asked_at: i64) {
        let at = self.read_to_end_at.entry(partition).or_insert(asked_at);
        *at = (*at).max(asked_at);
    }

    /// Buffers `record` (read from `partition` at `offset`, appended at
    /// `arrived_ms`) in its window, or says why not. Lateness is judged by
    /// when the broker appended the record (the input topic's
    /// `LogAppendTime`, checked at start), not when it was read, so records
    /// replayed after a restart count in the window they were on time for,
    /// and every reader judges a record alike.
    pub fn admit(
        &mut self,
        schedule: &WindowSchedule,
        record: CoarseRecord,
        seal_id: u128,
        partition: i32,
        offset: i64,
        arrived_ms: i64,
    ) -> Admission {
        let window = record.window;
        if !schedule.wants(&window) || schedule.deadline(&window) <= arrived_ms {
            return Admission::Late;
        }
        let buffer = self.open.entry(window.start_ms).or_default();
        if buffer.seals.contains(&seal_id) {
            return Admission::Replayed;
        }
        if !has_room(
            buffer.records.len(),
            self.cap,
            &mut buffer.full,
            window.start_ms,
        ) {
            return Admission::WindowFull;
        }
        buffer.seals.insert(seal_id);
        buffer.first_offsets.entry(partition).or_insert(offset);
        buffer.records.push(SequencedRecord {
            seq: self.next_seq,
            record,
        });
        buffer.arrivals.push(Arrival {
            produced_ms: arrived_ms,
            partition,
            offset,
        });
        self.next_seq += 1;
        Admission::Accepted
    }

    /// The instant up to which every partition has been read: a partition
    /// counts as far as its latest record's append time, or as the last
    /// instant it was known to be read to its end if that is later. A
    /// window closes only once its deadline is behind this too: after a
    /// restart, every partition's backlog is replayed before a window is
    /// closed on partial data, and while a partition's leader cannot be
    /// reached nothing it may hold is given up for lost (an end seen once
    /// is not taken to hold for ever).
    pub fn read_frontier(&self) -> i64 {
        self.partitions
            .iter()
            .map(|p| self.frontier_of(*p))
            .min()
            .unwrap_or(i64::MIN)
    }

    fn frontier_of(&self, partition: i32) -> i64 {
        let arrival = self.latest_arrival.get(&partition).copied();
        let end = self.read_to_end_at.get(&partition).copied();
        arrival.max(end).unwrap_or(i64::MIN)
    }

    /// The partitions read to less than `instant`: those to ask about
    /// before a window with that deadline can close.
    pub fn behind(&self, instant: i64) -> Vec<i32> {
        self.partitions
            .iter()
            .copied()
            .filter(|p| self.frontier_of(*p) < instant)
            .collect()
    }

    /// Takes `window`'s buffer out of the book (empty if it held nothing).
    pub fn close(&mut self, window: &Window) -> WindowBuffer {
        self.open.remove(&window.start_ms).unwrap_or_default()
    }

    /// The records `window` holds so far, without closing it (empty if
    /// none): what its provisional numbers count.
    pub fn peek(&self, window: &Window) -> Option<&WindowBuffer> {
        self.open.get(&window.start_ms)
    }

    /// How many windows hold records.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// The input partitions.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Per open window, the first offset it holds of each partition.
    pub fn first_offsets(&self) -> impl Iterator<Item = &HashMap<i32, i64>> {
        self.open.values().map(|b| &b.first_offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushmap_schema::region::RegionResolution;
    use hushmap_schema::{
        AgeBand, ContributorKey, RegionCell, RiskLevel, SymptomSet, WindowLength,
    };

    const LENGTH_MS: i64 = 60_000;
    const LATENESS_MS: i64 = 5_000;

    fn schedule() -> WindowSchedule {
        let length = WindowLength::from_secs(60).unwrap();
        WindowSchedule::starting(length, LATENESS_MS, 3_600_000, Some(0), None, 0)
    }

    fn record(window_start: i64) -> CoarseRecord {
        let length = WindowLength::from_secs(60).unwrap();
        CoarseRecord {
            window: Window::from_start(window_start, length).unwrap(),
            window_length: length,
            region: RegionCell::from_coordinate(-33.87, 151.21, RegionResolution::new(5).unwrap())
                .unwrap(),
            age_band: AgeBand::ALL[2],
            risk: RiskLevel::ALL[0],
            symptoms: SymptomSet::default(),
            contributor: ContributorKey([7; 16]),
        }
    }

    #[test]
    fn records_on_time_are_held_in_their_window_in_arrival_order() {
        let (s, mut book) = (schedule(), WindowBook::new(vec![0, 1], 10));
        assert_eq!(
            book.admit(&s, record(0), 1, 0, 40, 1_000),
            Admission::Accepted
        );
        assert_eq!(
            book.admit(&s, record(0), 2, 1, 7, 2_000),
            Admission::Accepted
        );
        assert_eq!(
            book.admit(&s, record(LENGTH_MS), 3, 0, 41, LENGTH_MS),
            Admission::Accepted
        );
        assert_eq!(book.open_windows(), 2);
        let first = book.close(&record(0).window);
        let seqs: Vec<u64> = first.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [0, 1]);
        assert_eq!(first.first_offsets, HashMap::from([(0, 40), (1, 7)]));
        assert_eq!(book.open_windows(), 1);
        assert!(
            book.close(&record(0).window).records.is_empty(),
            "closed once"
        );
    }

    #[test]
    fn a_record_produced_after_its_deadline_is_late_whenever_it_is_read() {
        let (s, mut book) = (schedule(), WindowBook::new(vec![0], 10));
        let deadline = LENGTH_MS + LATENESS_MS;
        assert_eq!(
            book.admit(&s, record(0), 1, 0, 0, deadline - 1),
            Admission::Accepted
        );
        assert_eq!(
            book.admit(&s, record(0), 2, 0, 1, deadline),
            Admission::Late
        );
    }

    #[test]
    fn a_decided_window_takes_nothing_more() {
        let (mut s, mut book) = (schedule(), WindowBook::new(vec![0], 10));
        s.decided(record(0).window);
        assert_eq!(book.admit(&s, record(0), 1, 0, 0, 10), Admission::Late);
        assert_eq!(book.open_windows(), 0);
    }

    #[test]
    fn a_replayed_copy_is_refused_and_the_cap_holds() {
        let (s, mut book) = (schedule(), WindowBook::new(vec![0], 2));
        assert_eq!(book.admit(&s, record(0), 9, 0, 0, 10), Admission::Accepted);
        assert_eq!(book.admit(&s, record(0), 9, 0, 1, 11), Admission::Replayed);
        assert_eq!(book.admit(&s, record(0), 10, 0, 2, 12), Admission::Accepted);
        assert_eq!(
            book.admit(&s, record(0), 11, 0, 3, 13),
            Admission::WindowFull
        );
        // The same seal in another window is another record.
        assert_eq!(
            book.admit(&s, record(LENGTH_MS), 9, 0, 4, 14),
            Admission::Accepted
        );
        assert_eq!(book.close(&record(0).window).records.len(), 2);
    }

    #[test]
    fn the_read_frontier_waits_for_the_slowest_partition() {
        let mut book = WindowBook::new(vec![0, 1], 10);
        assert_eq!(book.read_frontier(), i64::MIN, "nothing read yet");
        assert_eq!(book.behind(0), [0, 1]);
        book.read(0, 500);
        assert_eq!(book.read_frontier(), i64::MIN, "partition 1 unread");
        book.read(1, 300);
        assert_eq!(book.read_frontier(), 300);
        assert_eq!(book.behind(400), [1]);
        book.read_to_end(1, 1_000);
        assert_eq!(book.read_frontier(), 500, "1 was at its end at 1000");
        book.read_to_end(0, 900);
        assert_eq!(book.read_frontier(), 900);
        assert!(book.behind(900).is_empty());
        // A record read since does not undo what was known at 900.
        book.read(0, 200);
        assert_eq!(book.read_frontier(), 900);
        // An older answer does not either.
        book.read_to_end(0, 800);
        assert_eq!(book.read_frontier(), 900);
    }

    #[test]
    fn an_end_seen_once_is_not_taken_to_hold_later() {
        // The leader of partition 0 stops answering after the end was seen
        // at 1000: however late the clock gets, the frontier stays there
        // until the leader is asked again, so records it took after 1000
        // (and acknowledged) are not given up for lost.
        let mut book = WindowBook::new(vec![0], 10);
        book.read(0, 100);
        book.read_to_end(0, 1_000);
        for _ in 0..3 {
            assert_eq!(book.read_frontier(), 1_000);
            assert_eq!(book.behind(61_000), [0]);
        }
    }
}
