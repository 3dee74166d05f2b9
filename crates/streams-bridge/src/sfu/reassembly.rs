//! Video frames of a recorded track, rebuilt from the RTP packets the SFU forwards (it forwards
//! packets; a recording keeps frames, and an Opus packet is already one). A frame is the packets
//! of one timestamp from a partition head to the marker, with no sequence number missing,
//! depacketized to Annex B. A frame with a packet missing is dropped: a recording never holds a
//! damaged frame, and the next keyframe repairs what follows.
use std::collections::BTreeMap;
use std::sync::Arc;

use str0m::format::CodecExtra;
use str0m::unversioned::{Depacketizer, H264Depacketizer};

/// Packets of one frame held at most (a 40 KB keyframe is about 40).
const MAX_PACKETS: usize = 1024;

/// One packet of the frame being rebuilt.
struct Piece {
    marker: bool,
    payload: Arc<[u8]>,
}

/// The H.264 frame being rebuilt from one track's packets.
#[derive(Default)]
pub struct VideoFrames {
    /// The frame's RTP timestamp.
    time: Option<u32>,
    /// Its packets by sequence number.
    pieces: BTreeMap<u64, Piece>,
    /// The last sequence number of the frames finished or given up: older packets are late.
    done: Option<u64>,
}

impl VideoFrames {
    /// Takes a packet; returns the frame it completes.
    pub fn push(
        &mut self,
        seq: u64,
        time: u32,
        marker: bool,
        payload: &Arc<[u8]>,
    ) -> Option<Vec<u8>> {
        if self.done.is_some_and(|done| seq <= done) {
            return None;
        }
        if self.time != Some(time) {
            let newest = self.pieces.last_key_value().map(|(seq, _)| *seq);
            if newest.is_some_and(|newest| seq < newest) {
                // A late packet of an earlier frame.
                return None;
            }
            // A later frame starts: the one held will not complete.
            self.give_up(newest);
            self.time = Some(time);
        }
        self.pieces.insert(
            seq,
            Piece {
                marker,
                payload: payload.clone(),
            },
        );
        if self.pieces.len() > MAX_PACKETS {
            let newest = self.pieces.last_key_value().map(|(seq, _)| *seq);
            self.give_up(newest);
            return None;
        }
        self.complete()
    }

    fn give_up(&mut self, newest: Option<u64>) {
        if newest.is_some() {
            self.done = newest;
        }
        self.pieces.clear();
        self.time = None;
    }

    /// The frame, if every packet from its head to its marker is here.
    fn complete(&mut self) -> Option<Vec<u8>> {
        let mut depacketizer = H264Depacketizer::default();
        let (&first, head) = self.pieces.first_key_value()?;
        let (&last, tail) = self.pieces.last_key_value()?;
        let whole = depacketizer.is_partition_head(&head.payload)
            && depacketizer.is_partition_tail(tail.marker, &tail.payload)
            && last - first + 1 == self.pieces.len() as u64;
        if !whole {
            return None;
        }
        let mut frame = Vec::new();
        let rebuilt = self.pieces.values().try_for_each(|piece| {
            depacketizer.depacketize(&piece.payload, &mut frame, &mut CodecExtra::None)
        });
        self.give_up(Some(last));
        rebuilt.ok().map(|()| frame)
    }
}

#[cfg(test)]
mod tests {
    use str0m::unversioned::{H264Packetizer, Packetizer};

    use super::*;

    /// An Annex-B frame of `size` bytes and its packets (1100-byte payloads).
    fn packets(size: usize) -> (Vec<u8>, Vec<Arc<[u8]>>) {
        let mut frame = vec![0, 0, 0, 1, 0x65];
        frame.extend((0..size).map(|i| (i % 251) as u8 | 1));
        let packets = H264Packetizer::default()
            .packetize(1100, &frame)
            .unwrap()
            .into_iter()
            .map(Arc::from)
            .collect();
        (frame, packets)
    }

    fn feed(
        frames: &mut VideoFrames,
        first: u64,
        time: u32,
        packets: &[Arc<[u8]>],
        order: &[usize],
    ) -> Vec<Vec<u8>> {
        order
            .iter()
            .filter_map(|&i| {
                let marker = i + 1 == packets.len();
                frames.push(first + i as u64, time, marker, &packets[i])
            })
            .collect()
    }

    #[test]
    fn a_frame_is_rebuilt_from_its_packets_in_any_order() {
        let (frame, packets) = packets(5000);
        assert!(packets.len() > 3);
        let mut frames = VideoFrames::default();
        let order: Vec<usize> = (0..packets.len()).rev().collect();
        assert_eq!(
            feed(&mut frames, 10, 900, &packets, &order),
            vec![frame.clone()]
        );
        // The next frame, in order; a duplicate of the last packet is late.
        let next = 10 + packets.len() as u64;
        let order: Vec<usize> = (0..packets.len()).collect();
        assert_eq!(feed(&mut frames, next, 3900, &packets, &order), vec![frame]);
        let last = packets.len() - 1;
        assert!(feed(&mut frames, next, 3900, &packets, &[last]).is_empty());
    }

    #[test]
    fn a_frame_missing_a_packet_is_dropped_and_the_next_one_kept() {
        let (frame, packets) = packets(5000);
        let mut frames = VideoFrames::default();
        let without_one: Vec<usize> = (0..packets.len()).filter(|i| *i != 1).collect();
        assert!(feed(&mut frames, 0, 900, &packets, &without_one).is_empty());
        let next = packets.len() as u64;
        let order: Vec<usize> = (0..packets.len()).collect();
        assert_eq!(feed(&mut frames, next, 3900, &packets, &order), vec![frame]);
        // The lost packet, arriving after its frame was given up, is late.
        assert!(feed(&mut frames, 0, 900, &packets, &[1]).is_empty());
    }
}
