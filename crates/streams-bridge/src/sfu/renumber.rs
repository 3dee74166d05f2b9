//! Renumbering what one sending m-line of a subscriber forwards. The SFU writes each publisher's
//! RTP packets on the subscriber's own stream (its SSRC), so their sequence numbers and timestamps
//! are rewritten: a packet keeps its distance from the others of its source (a gap upstream stays
//! a gap the subscriber can NACK, a reordering stays a reordering), and when the m-line starts
//! carrying another source (a new subscription, or the publisher restarting its stream) the
//! numbers go on from the last ones sent instead of jumping, so the subscriber sees one stream.
use std::time::Instant;

use str0m::rtp::{SeqNo, Ssrc};
use streams_proto::TrackId;

/// Where a packet sits in its source stream.
#[derive(Clone, Copy, Debug)]
pub struct SourcePosition {
    /// The published track.
    pub track: TrackId,
    /// The publisher's stream of it (a restarted stream has a new one).
    pub ssrc: Ssrc,
    /// Its extended sequence number in that stream.
    pub seq: SeqNo,
    /// Its RTP timestamp.
    pub time: u32,
    /// The codec's clock rate (Hz).
    pub clock_rate: u32,
    /// When it reached the SFU.
    pub arrived: Instant,
}

/// The offsets from the current source to the numbers sent.
#[derive(Clone, Copy, Debug)]
struct Base {
    track: TrackId,
    ssrc: Ssrc,
    /// Sent sequence number minus the source's.
    seq_offset: i64,
    /// The first sequence number sent for this source: packets from before it are stale.
    first_seq: i64,
    /// Sent timestamp minus the source's (wrapping).
    time_offset: u32,
}

/// The highest packet sent so far.
#[derive(Clone, Copy, Debug)]
struct Sent {
    seq: i64,
    time: u32,
    arrived: Instant,
}

/// The numbering state of one sending m-line.
#[derive(Debug, Default)]
pub struct Renumber {
    base: Option<Base>,
    highest: Option<Sent>,
}

impl Renumber {
    /// Whether this m-line carries `packet`'s source already (a packet of another source would
    /// start it carrying that one).
    pub fn carries(&self, packet: &SourcePosition) -> bool {
        self.base
            .is_some_and(|b| b.track == packet.track && b.ssrc == packet.ssrc)
    }

    /// The sequence number and timestamp to send `packet` with, or `None` if it is older than
    /// the moment this m-line started carrying its source (a late packet of an earlier source
    /// would land among numbers already used).
    pub fn map(&mut self, packet: &SourcePosition) -> Option<(SeqNo, u32)> {
        let source_seq = i64::try_from(*packet.seq).ok()?;
        let base = match self.base {
            Some(base) if base.track == packet.track && base.ssrc == packet.ssrc => base,
            _ => self.rebase(packet, source_seq),
        };
        let seq = source_seq + base.seq_offset;
        if seq < base.first_seq {
            return None;
        }
        let time = packet.time.wrapping_add(base.time_offset);
        if self.highest.is_none_or(|h| seq > h.seq) {
            self.highest = Some(Sent {
                seq,
                time,
                arrived: packet.arrived,
            });
        }
        Some((SeqNo::from(seq as u64), time))
    }

    /// Starts numbering `packet`'s source: right after the last packet sent, its timestamp
    /// advanced by the time that passed since (at least one tick); the first source keeps its
    /// own timestamp and the low 16 bits of its sequence number (no rollover counter to signal).
    fn rebase(&mut self, packet: &SourcePosition, source_seq: i64) -> Base {
        let (first_seq, first_time) = match self.highest {
            None => (i64::from(packet.seq.as_u16()), packet.time),
            Some(sent) => {
                let elapsed = packet.arrived.saturating_duration_since(sent.arrived);
                let ticks = (elapsed.as_secs_f64() * f64::from(packet.clock_rate)) as u32;
                (sent.seq + 1, sent.time.wrapping_add(ticks.max(1)))
            }
        };
        let base = Base {
            track: packet.track,
            ssrc: packet.ssrc,
            seq_offset: first_seq - source_seq,
            first_seq,
            time_offset: first_time.wrapping_sub(packet.time),
        };
        self.base = Some(base);
        base
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use streams_proto::{MediaId, StreamId};

    use super::*;

    fn track(stream: u64) -> TrackId {
        TrackId::new(StreamId(stream), MediaId::parse("a").unwrap())
    }

    fn at(track: TrackId, ssrc: u32, seq: u64, time: u32, arrived: Instant) -> SourcePosition {
        SourcePosition {
            track,
            ssrc: ssrc.into(),
            seq: seq.into(),
            time,
            clock_rate: 48_000,
            arrived,
        }
    }

    fn sent(r: &mut Renumber, p: SourcePosition) -> Option<(u64, u32)> {
        r.map(&p).map(|(seq, time)| (*seq, time))
    }

    #[test]
    fn the_first_source_keeps_its_numbers_below_one_rollover() {
        let t0 = Instant::now();
        let mut r = Renumber::default();
        let first = 3 * 65_536 + 100;
        assert_eq!(
            sent(&mut r, at(track(1), 7, first, 5000, t0)),
            Some((100, 5000))
        );
        // A gap stays a gap, a late packet keeps its place.
        assert_eq!(
            sent(&mut r, at(track(1), 7, first + 3, 5960, t0)),
            Some((103, 5960))
        );
        assert_eq!(
            sent(&mut r, at(track(1), 7, first + 2, 5640, t0)),
            Some((102, 5640))
        );
        // Older than the start: stale.
        assert_eq!(sent(&mut r, at(track(1), 7, first - 1, 4680, t0)), None);
    }

    #[test]
    fn a_new_source_continues_where_the_last_one_stopped() {
        let t0 = Instant::now();
        let mut r = Renumber::default();
        assert_eq!(
            sent(&mut r, at(track(1), 7, 10, 1000, t0)),
            Some((10, 1000))
        );
        assert_eq!(
            sent(&mut r, at(track(1), 7, 11, 1960, t0)),
            Some((11, 1960))
        );
        // Another publisher's track 100 ms later: next number, timestamp 100 ms on.
        let later = t0 + Duration::from_millis(100);
        assert_eq!(
            sent(&mut r, at(track(2), 9, 40_000, 77, later)),
            Some((12, 1960 + 4800))
        );
        assert_eq!(
            sent(&mut r, at(track(2), 9, 40_001, 77 + 960, later)),
            Some((13, 1960 + 4800 + 960))
        );
        // A late packet of the old source takes the next number too: none is ever used twice.
        let (seq, _) = sent(&mut r, at(track(1), 7, 12, 2920, later)).unwrap();
        assert_eq!(seq, 14);
    }
}
