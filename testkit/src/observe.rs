//! What a test waits for that a service does not report where the test
//! could ask without disturbing it: connections a server has taken from
//! its listener's queue, offsets a consumer group has committed. Checks
//! for [`wait_until`](crate::wait_until).

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::net::SocketAddr;
use std::time::Duration;

/// How many connections to `addr` (an IPv4 listener of this machine) a
/// server has accepted and still holds open. A connection the kernel has
/// completed but no `accept()` has taken yet is not counted: in
/// `/proc/net/tcp` it has no socket inode until it is accepted (Linux).
/// For a listener with a connection cap, where asking the server itself
/// would take a connection and be counted.
pub fn accepted_connections(addr: SocketAddr) -> anyhow::Result<usize> {
    let SocketAddr::V4(v4) = addr else {
        anyhow::bail!("{addr}: only IPv4 listeners are looked up");
    };
    // `/proc/net/tcp` writes the address as its bytes (network order) read
    // as a native integer, in hex, and the port in hex.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    );
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    Ok(table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        // local_address, state 01 (ESTABLISHED), inode (0: not accepted).
        .filter(|f| f.len() > 9 && f[1] == local && f[3] == "01" && f[9] != "0")
        .count())
}

/// The offset consumer group `group` has committed on `topic`'s
/// `partition` (the next record it will read), `None` if none yet.
/// Asks the group's coordinator without joining the group. Blocking.
pub fn committed_offset(
    brokers: &str,
    group: &str,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Option<i64>> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, partition);
    let committed = consumer.committed_offsets(wanted, Duration::from_secs(10))?;
    Ok(
        match committed
            .find_partition(topic, partition)
            .map(|p| p.offset())
        {
            Some(Offset::Offset(n)) => Some(n),
            _ => None,
        },
    )
}
