//! The recording format: what the bridge writes while a room is recorded, and what a member's
//! export reads. The bridge never holds a key, so a recording is the forwarded ciphertext plus timing.
//!
//! ```text
//! <recordings>/<room id>/<recording id>/
//!   recording.json     a Manifest (JSON): format, room, recording id, start/stop times, tracks
//!   <track id>.frames  one FrameRecord after another, as each frame was forwarded
//! ```
//!
//! A frame record is a 21-byte header and the payload, all integers big-endian:
//!
//! ```text
//! u32 payload length | u64 arrival time (µs since the Unix epoch, bridge clock)
//! u64 RTP time (the track's clock: 48 kHz audio, 90 kHz video) | u8 flags (bit 0: keyframe hint)
//! payload: the frame exactly as forwarded — an SFrame ciphertext (audio), or the one-NAL carriage
//!          of an SFrame ciphertext (video)
//! ```
//!
//! A record cut short (a crash, a truncated copy) ends the readable part of a file; [`read_records`]
//! says how many bytes were left unread.
use serde::{Deserialize, Serialize};

use crate::ids::{RoomId, UserId};
use crate::wire::TrackKind;

/// The format version this code writes and reads.
pub const FORMAT: u32 = 1;
/// The manifest's file name.
pub const MANIFEST: &str = "recording.json";
/// Bytes before each record's payload.
pub const RECORD_HEADER: usize = 21;
/// The largest payload a record may claim (a corrupted length is not followed).
pub const MAX_PAYLOAD: usize = 4 << 20;

/// What a recording holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The room.
    pub room_id: RoomId,
    /// The recording.
    pub recording_id: String,
    /// When recording started, µs since the Unix epoch (bridge clock).
    pub started_us: u64,
    /// When it stopped (`None` while it runs, or if the bridge stopped first).
    pub stopped_us: Option<u64>,
    /// The tracks seen while recording.
    pub tracks: Vec<RecordedTrack>,
}

/// One recorded track.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedTrack {
    /// The track id (as in the room's stream listing).
    pub track_id: crate::track::TrackId,
    /// Its publisher.
    pub user_id: UserId,
    /// What it carries.
    pub kind: TrackKind,
    /// `opus` or `h264`.
    pub codec: String,
    /// Its frames file, in the recording's directory.
    pub file: String,
}

/// One forwarded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameRecord {
    /// Arrival at the bridge, µs since the Unix epoch.
    pub arrival_us: u64,
    /// RTP time on the track's clock.
    pub rtp_time: u64,
    /// The clear keyframe hint (video).
    pub keyframe: bool,
    /// The frame as forwarded (ciphertext).
    pub payload: Vec<u8>,
}

impl FrameRecord {
    /// Appends the record's bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.arrival_us.to_be_bytes());
        out.extend_from_slice(&self.rtp_time.to_be_bytes());
        out.push(u8::from(self.keyframe));
        out.extend_from_slice(&self.payload);
    }
}

/// The records of a frames file, and how many bytes at its end could not be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    /// The intact records, in order.
    pub records: Vec<FrameRecord>,
    /// Bytes after the last intact record (0 for a whole file).
    pub unread: usize,
}

/// Reads records until the data ends or a record is cut short or claims an impossible length.
pub fn read_records(data: &[u8]) -> Records {
    let mut records = Vec::new();
    let mut at = 0;
    while data.len() - at >= RECORD_HEADER {
        let head = &data[at..at + RECORD_HEADER];
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > MAX_PAYLOAD || head[20] > 1 || data.len() - at - RECORD_HEADER < len {
            break;
        }
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[i..i + 8]);
            u64::from_be_bytes(b)
        };
        records.push(FrameRecord {
            arrival_us: word(4),
            rtp_time: word(12),
            keyframe: head[20] == 1,
            payload: data[at + RECORD_HEADER..at + RECORD_HEADER + len].to_vec(),
        });
        at += RECORD_HEADER + len;
    }
    Records {
        records,
        unread: data.len() - at,
    }
}

/// Whether `name` is safe as a recording id or file name (no paths, no hidden files).
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> FrameRecord {
        FrameRecord {
            arrival_us: 1_000 + u64::from(n),
            rtp_time: 960 * u64::from(n),
            keyframe: n.is_multiple_of(2),
            payload: vec![n; usize::from(n) * 3],
        }
    }

    #[test]
    fn records_round_trip_and_a_cut_record_ends_the_readable_part() {
        let mut data = Vec::new();
        for n in 0..5 {
            record(n).encode_into(&mut data);
        }
        let whole = read_records(&data);
        assert_eq!(whole.records, (0..5).map(record).collect::<Vec<_>>());
        assert_eq!(whole.unread, 0);
        let cut = read_records(&data[..data.len() - 3]);
        assert_eq!(cut.records.len(), 4);
        assert_eq!(cut.unread, RECORD_HEADER + 12 - 3);
        // A corrupted length is not followed.
        let mut bad = data.clone();
        bad[0] = 0xFF;
        let bad = read_records(&bad);
        assert!(bad.records.is_empty());
        assert_eq!(bad.unread, data.len());
        assert_eq!(read_records(&[]), Records::default());
    }

    #[test]
    fn only_plain_names_are_accepted() {
        assert!(is_plain_name("rec-1700000000-ab12"));
        assert!(is_plain_name("1-a.frames"));
        for bad in ["", "..", ".hidden", "a/b", "../x", "a b", "a\\b"] {
            assert!(!is_plain_name(bad), "{bad}");
        }
    }
}
