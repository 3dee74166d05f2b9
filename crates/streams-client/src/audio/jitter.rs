//! An adaptive jitter buffer for one remote audio source. Sans-IO: packets go in with their arrival time,
//! and the audio thread pulls one frame per frame period with the current time.
//!
//! - **Target delay** follows measured jitter: an RFC 3550 style smoothed inter-arrival jitter `J`, and
//!   a target of `ceil((3·J + margin) / frame)` frames, clamped to `[0, max]`. On a clean network the
//!   target is 0 frames: a packet plays at the first pull after it arrives (on average half a frame).
//! - **Gaps**: a missing frame with later packets queued is lost: recovered from its successor's in-band
//!   FEC when the successor is here, concealed otherwise. An empty queue is an underflow: the frame is
//!   concealed and the play position waits (the delay stretches by a frame; drift correction trims it
//!   later). Packets arriving after their slot are counted late and dropped.
//! - **Clock drift and stretch**: when more than `target` frames stay queued for a second (a sender
//!   clock faster than ours, or delay added by an earlier underflow), the oldest frame is dropped, so
//!   the queue never grows without bound and latency returns to the target; a slower sender shows as
//!   occasional concealment.
//! - A source silent for longer than [`JitterBuffer::RESTART_AFTER_US`] rebuffers from its next packet.
//!
//! Pushing and pulling never allocate: packets are copied into slots allocated with the buffer (it
//! runs on the audio output thread).

/// What to play for one frame period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Playout {
    /// The frame's own packet.
    /// Its payload is [`JitterBuffer::played`] until the next pull.
    Packet {
        /// Sequence number.
        seq: u64,
        /// Capture time of its first sample, if the sender said (microseconds, sender clock).
        capture_us: Option<u64>,
    },
    /// The frame was lost but its successor is here: decode the successor's FEC (its payload is
    /// [`JitterBuffer::played`] until the next pull; the successor stays queued).
    Recover {
        /// The lost frame's sequence number.
        seq: u64,
    },
    /// The frame was lost: conceal it.
    Conceal {
        /// The lost frame's sequence number.
        seq: u64,
    },
    /// The frame has not arrived yet and nothing later has (an underflow): conceal one output period
    /// and ask again; the play position waits for the frame.
    Wait {
        /// The awaited frame's sequence number.
        seq: u64,
    },
    /// Nothing to play yet (buffering, or the source is silent).
    Silence,
}

/// Counters of one buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct JitterStats {
    /// Packets accepted.
    pub received: u64,
    /// Frames played from their own packet.
    pub played: u64,
    /// Frames whose packet had not arrived by their slot while later ones had.
    pub lost: u64,
    /// Lost frames recovered from FEC.
    pub fec_recovered: u64,
    /// Frames concealed: lost without FEC, and underflows in the middle of the stream (the trailing
    /// underflow of a source that stopped is not counted).
    pub concealed: u64,
    /// Packets that arrived after their slot.
    pub late: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Frames dropped to correct clock drift (or because the queue was full).
    pub drift_dropped: u64,
    /// Packets too large to be a voice frame (dropped).
    pub oversized: u64,
}

/// The longest payload a slot holds: a voice frame rides in one RTP packet, so it is under an MTU.
pub const MAX_PAYLOAD: usize = 1500;

/// One queued packet, stored in place.
#[derive(Clone)]
struct Slot {
    seq: u64,
    capture_us: Option<u64>,
    len: usize,
    data: [u8; MAX_PAYLOAD],
}

impl Slot {
    const EMPTY: Slot = Slot {
        seq: 0,
        capture_us: None,
        len: 0,
        data: [0; MAX_PAYLOAD],
    };

    fn payload(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// The jitter buffer.
pub struct JitterBuffer {
    frame_us: u64,
    margin_us: f64,
    max_target_frames: u64,
    /// Queued packets in sequence order (capacity [`JitterBuffer::MAX_QUEUED`] + 1, never grown).
    queue: Vec<Slot>,
    /// The payload of the last [`Playout::Packet`] or [`Playout::Recover`].
    played: Box<Slot>,
    next_seq: Option<u64>,
    last_transit: Option<i64>,
    jitter_us: f64,
    last_arrival_us: Option<u64>,
    over_target_pulls: u32,
    /// Underflow concealments not yet known to be mid-stream.
    pending_underflows: u64,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A source silent this long (µs) starts over with buffering.
    pub const RESTART_AFTER_US: u64 = 500_000;
    /// Most frames queued (two seconds of 20 ms frames, far beyond the largest target); beyond it the
    /// oldest are dropped (a flood cannot grow memory).
    pub const MAX_QUEUED: usize = 100;
    /// A sequence number this far ahead of the play position restarts the buffer (a sender restart
    /// or a hostile counter), rather than being waited for.
    const MAX_JUMP: u64 = 3_000;
    /// Consecutive pulls (about a second of them) with too deep a queue before a frame is dropped.
    fn drift_pulls(&self) -> u32 {
        (1_000_000 / self.frame_us).max(1) as u32
    }

    /// A buffer for frames of `frame_ms`.
    pub fn new(frame_ms: u32) -> Self {
        JitterBuffer {
            frame_us: u64::from(frame_ms.max(1)) * 1000,
            margin_us: 1_000.0,
            max_target_frames: 10,
            queue: Vec::with_capacity(Self::MAX_QUEUED + 1),
            played: Box::new(Slot::EMPTY),
            next_seq: None,
            last_transit: None,
            jitter_us: 0.0,
            last_arrival_us: None,
            over_target_pulls: 0,
            pending_underflows: 0,
            stats: JitterStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The smoothed inter-arrival jitter in microseconds.
    pub fn jitter_us(&self) -> f64 {
        self.jitter_us
    }

    /// The target queue depth in frames.
    pub fn target_frames(&self) -> u64 {
        let frames =
            ((3.0 * self.jitter_us + self.margin_us) / self.frame_us as f64).floor() as u64;
        frames.min(self.max_target_frames)
    }

    /// The target delay the buffer adds, in microseconds (plus on average half a frame of pull phase).
    pub fn target_delay_us(&self) -> u64 {
        self.target_frames() * self.frame_us
    }

    /// Frames queued ahead of the play position.
    pub fn depth(&self) -> usize {
        self.queue.len()
    }

    /// The payload to decode for the last [`Playout::Packet`] (or, for [`Playout::Recover`], the
    /// successor carrying the FEC).
    pub fn played(&self) -> &[u8] {
        self.played.payload()
    }

    fn position(&self, seq: u64) -> Result<usize, usize> {
        self.queue.binary_search_by_key(&seq, |slot| slot.seq)
    }

    /// Accepts one packet with sequence number `seq` (extended, see [`SeqExtender`]) arriving at
    /// `now_us`. A payload over [`MAX_PAYLOAD`] bytes is no voice frame of ours and is dropped.
    pub fn push(&mut self, now_us: u64, seq: u64, payload: &[u8], capture_us: Option<u64>) {
        if payload.len() > MAX_PAYLOAD {
            self.stats.oversized += 1;
            return;
        }
        if self.next_seq.is_some_and(|next| seq < next) {
            self.stats.late += 1;
            return;
        }
        if self
            .next_seq
            .is_some_and(|next| seq.saturating_sub(next) > Self::MAX_JUMP)
        {
            // Not a gap worth concealing: start over from this packet.
            self.queue.clear();
            self.next_seq = None;
            self.last_transit = None;
        }
        let at = match self.position(seq) {
            Ok(_) => {
                self.stats.duplicates += 1;
                return;
            }
            Err(at) => at,
        };
        self.stats.received += 1;
        // Transit relative to the sender's nominal timeline (seq × frame): its variation is jitter.
        let nominal = seq.wrapping_mul(self.frame_us);
        let transit = (now_us as i64).wrapping_sub(nominal as i64);
        if let Some(last) = self.last_transit {
            let d = transit.wrapping_sub(last).unsigned_abs() as f64;
            self.jitter_us += (d - self.jitter_us) / 16.0;
        }
        self.last_transit = Some(transit);
        self.last_arrival_us = Some(now_us);
        if self.queue.len() == Self::MAX_QUEUED {
            // Full: the oldest goes (its slot is reused, so nothing is allocated).
            if at == 0 {
                self.stats.drift_dropped += 1;
                return;
            }
            self.queue.remove(0);
            self.stats.drift_dropped += 1;
            self.insert(at - 1, seq, payload, capture_us);
        } else {
            self.insert(at, seq, payload, capture_us);
        }
    }

    /// Copies a packet in at index `at` (within capacity: never allocates).
    fn insert(&mut self, at: usize, seq: u64, payload: &[u8], capture_us: Option<u64>) {
        self.queue.insert(at, Slot::EMPTY);
        let slot = &mut self.queue[at];
        slot.seq = seq;
        slot.capture_us = capture_us;
        slot.len = payload.len();
        slot.data[..payload.len()].copy_from_slice(payload);
    }

    /// What to play for the frame period starting at `now_us`.
    pub fn pull(&mut self, now_us: u64) -> Playout {
        let silent_too_long = self
            .last_arrival_us
            .is_none_or(|t| now_us.saturating_sub(t) > Self::RESTART_AFTER_US);
        let Some(next) = self.next_seq else {
            // Buffering: start once enough frames are queued.
            let Some(first) = self.queue.first().map(|slot| slot.seq) else {
                return Playout::Silence;
            };
            if (self.queue.len() as u64) <= self.target_frames() {
                return Playout::Silence;
            }
            self.next_seq = Some(first);
            return self.pull(now_us);
        };
        if self.queue.is_empty() {
            if silent_too_long {
                self.next_seq = None;
                self.last_transit = None;
                self.pending_underflows = 0;
                return Playout::Silence;
            }
            // Underflow: conceal and wait for the frame rather than skip it.
            self.pending_underflows += 1;
            return Playout::Wait { seq: next };
        }
        // Audio goes on: the underflows before this were gaps in the stream.
        self.stats.concealed += std::mem::take(&mut self.pending_underflows);
        self.next_seq = Some(next.saturating_add(1));
        let out = if let Ok(at) = self.position(next) {
            self.stats.played += 1;
            self.played.as_mut().clone_from(&self.queue[at]);
            self.queue.remove(at);
            Playout::Packet {
                seq: next,
                capture_us: self.played.capture_us,
            }
        } else {
            self.stats.lost += 1;
            match self.position(next.saturating_add(1)) {
                Ok(at) => {
                    self.stats.fec_recovered += 1;
                    self.played.as_mut().clone_from(&self.queue[at]);
                    Playout::Recover { seq: next }
                }
                Err(_) => {
                    self.stats.concealed += 1;
                    Playout::Conceal { seq: next }
                }
            }
        };
        self.correct_drift();
        out
    }

    fn correct_drift(&mut self) {
        if self.queue.len() as u64 > self.target_frames() {
            self.over_target_pulls += 1;
            if self.over_target_pulls >= self.drift_pulls() {
                self.over_target_pulls = 0;
                if let Some(next) = self.next_seq
                    && let Ok(at) = self.position(next)
                {
                    self.queue.remove(at);
                    self.next_seq = Some(next.saturating_add(1));
                    self.stats.drift_dropped += 1;
                }
            }
        } else {
            self.over_target_pulls = 0;
        }
    }
}

/// Extends 16-bit RTP sequence numbers to a monotonic 64-bit count (handles wrap-around and reordering
/// across it).
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqExtender {
    last: Option<u64>,
}

impl SeqExtender {
    /// The extended number of `seq`.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let Some(last) = self.last else {
            let first = u64::from(seq) + (1 << 16);
            self.last = Some(first);
            return first;
        };
        let base = last & !0xFFFF;
        let candidates = [base.wrapping_sub(1 << 16), base, base + (1 << 16)];
        let extended = candidates
            .into_iter()
            .map(|b| b | u64::from(seq))
            .min_by_key(|c| c.abs_diff(last))
            .unwrap_or(last);
        if extended > last {
            self.last = Some(extended);
        }
        extended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: u64 = 20_000;

    /// A reproducible pseudo-random number (splitmix64).
    fn mix(i: u64) -> u64 {
        let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Runs a source of `n` frames: `arrival(i)` gives each packet's arrival time (None = lost);
    /// pulls happen every frame starting at `pull_phase`. Returns the playouts and the buffer.
    fn run(
        n: u64,
        arrival: impl Fn(u64) -> Option<u64>,
        pull_phase: u64,
        pull_period: u64,
    ) -> (Vec<Playout>, JitterBuffer) {
        let mut jb = JitterBuffer::new(20);
        let mut arrivals: Vec<(u64, u64)> =
            (0..n).filter_map(|i| arrival(i).map(|t| (t, i))).collect();
        arrivals.sort();
        // Stop pulling once the last packet can have played (later pulls would be end-of-stream
        // underflows, which the paused-source test covers).
        let end = arrivals.last().map_or(0, |a| a.0) + FRAME;
        let mut out = Vec::new();
        let mut next_arrival = 0;
        let mut t = pull_phase;
        while t < end {
            while next_arrival < arrivals.len() && arrivals[next_arrival].0 <= t {
                let (at, seq) = arrivals[next_arrival];
                jb.push(at, seq, &[seq as u8], Some(seq * FRAME));
                next_arrival += 1;
            }
            out.push(jb.pull(t));
            t += pull_period;
        }
        (out, jb)
    }

    fn played(out: &[Playout]) -> Vec<u64> {
        out.iter()
            .filter_map(|p| match p {
                Playout::Packet { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_clean_network_adds_less_than_a_frame() {
        let (out, jb) = run(500, |i| Some(i * FRAME + 3_000), 10_000, FRAME);
        assert_eq!(jb.target_frames(), 0);
        assert_eq!(played(&out), (0..500).collect::<Vec<_>>());
        let s = jb.stats();
        assert_eq!((s.lost, s.late, s.concealed), (0, 0, 0));
        // Packet i arrives at i·20 ms + 3 ms and is pulled at the next pull, 7 ms later.
        assert_eq!(jb.target_delay_us(), 0);
    }

    #[test]
    fn jitter_raises_the_target_and_is_absorbed() {
        // Arrival delay varies pseudo-randomly in 0..35 ms.
        let delay = |i: u64| (mix(i) % 35_000) + 1_000;
        let (out, jb) = run(1500, |i| Some(i * FRAME + delay(i)), 5_000, FRAME);
        assert!(jb.target_frames() >= 1, "target {}", jb.target_frames());
        assert!(jb.target_frames() <= 6, "target {}", jb.target_frames());
        let s = jb.stats();
        // After the estimate settles, nearly everything plays on time.
        assert!(s.lost * 100 / 1500 < 5, "{s:?}");
        assert!(played(&out).windows(2).all(|w| w[0] < w[1]), "in order");
    }

    #[test]
    fn losses_are_counted_and_recovered_from_fec_when_possible() {
        // Every 10th packet is lost (10%).
        let (out, jb) = run(
            1000,
            |i| (i % 10 != 5).then_some(i * FRAME + 2_000),
            8_000,
            FRAME,
        );
        let s = jb.stats();
        assert_eq!(s.lost, 100);
        assert_eq!(s.fec_recovered, 100, "each lost frame's successor is there");
        // The first loss finds the queue empty (an underflow: one concealed frame, the delay stretches
        // by one frame); from then on each successor is already queued when its predecessor is missed.
        assert_eq!(s.concealed, 1);
        assert!(out.iter().any(|p| matches!(p, Playout::Recover { seq: 5 })));
        // Two in a row: two underflow pulls wait for 50; when 52 arrives, 50 is declared lost and
        // concealed, and 51 is recovered from 52's FEC.
        let (_, jb) = run(
            100,
            |i| (i != 50 && i != 51).then_some(i * FRAME + 2_000),
            8_000,
            FRAME,
        );
        let s = jb.stats();
        assert_eq!((s.lost, s.concealed, s.fec_recovered), (2, 3, 1));
    }

    #[test]
    fn a_fast_sender_clock_does_not_grow_the_queue() {
        // The sender's frames come 1% faster than we pull: 60 s of audio.
        let (_, jb) = run(3000, |i| Some(i * 19_800 + 2_000), 10_000, FRAME);
        assert!(jb.stats().drift_dropped > 0);
        assert!(
            jb.depth() <= jb.target_frames() as usize + 4,
            "depth {}",
            jb.depth()
        );
    }

    #[test]
    fn late_and_duplicate_packets_are_dropped_and_counted() {
        let mut jb = JitterBuffer::new(20);
        jb.push(0, 10, &[10], None);
        jb.push(1, 10, &[10], None);
        assert!(matches!(jb.pull(2), Playout::Packet { seq: 10, .. }));
        // Nothing queued: an underflow conceals and waits for 11.
        assert!(matches!(jb.pull(20_002), Playout::Wait { seq: 11 }));
        jb.push(20_003, 12, &[12], None);
        // 12 is here but 11 is not: 11 is lost, recovered from 12's FEC; 12 plays next.
        assert!(matches!(jb.pull(40_002), Playout::Recover { seq: 11 }));
        assert_eq!(
            jb.played(),
            &[12],
            "the successor's payload carries the FEC"
        );
        jb.push(40_003, 11, &[11], None);
        assert!(matches!(jb.pull(60_002), Playout::Packet { seq: 12, .. }));
        let s = jb.stats();
        assert_eq!((s.duplicates, s.late, s.lost, s.concealed), (1, 1, 1, 1));
    }

    #[test]
    fn a_paused_source_rebuffers_instead_of_concealing_forever() {
        let mut jb = JitterBuffer::new(20);
        jb.push(0, 1, &[1], None);
        assert!(matches!(jb.pull(1_000), Playout::Packet { seq: 1, .. }));
        let mut concealed = 0;
        for k in 1..100 {
            if matches!(
                jb.pull(1_000 + k * FRAME),
                Playout::Conceal { .. } | Playout::Wait { .. }
            ) {
                concealed += 1;
            }
        }
        assert!(concealed <= 26, "{concealed} frames concealed for a pause");
        jb.push(3_000_000, 200, &[200], None);
        assert!(matches!(
            jb.pull(3_001_000),
            Playout::Packet { seq: 200, .. }
        ));
    }

    #[test]
    fn hostile_counters_and_floods_neither_panic_nor_grow_without_bound() {
        let mut jb = JitterBuffer::new(20);
        jb.push(0, u64::MAX - 1, &[1], None);
        jb.push(1, u64::MAX, &[2], None);
        assert!(matches!(jb.pull(2), Playout::Packet { .. }));
        assert!(matches!(jb.pull(20_002), Playout::Packet { .. }));
        jb.pull(40_002);
        // A jump far ahead restarts instead of waiting for thousands of frames.
        let mut jb = JitterBuffer::new(20);
        jb.push(0, 10, &[10], None);
        assert!(matches!(jb.pull(1), Playout::Packet { seq: 10, .. }));
        jb.push(2, 1_000_000, &[0], None);
        assert!(matches!(
            jb.pull(20_001),
            Playout::Packet { seq: 1_000_000, .. }
        ));
        // A flood is capped.
        for seq in 2_000_000..2_002_000 {
            jb.push(30_000, seq, &[0], None);
        }
        assert!(jb.depth() <= JitterBuffer::MAX_QUEUED);
    }

    #[test]
    fn sequence_numbers_extend_across_wraparound() {
        let mut ext = SeqExtender::default();
        let a = ext.extend(65_534);
        let b = ext.extend(65_535);
        let c = ext.extend(0);
        let d = ext.extend(65_533); // reordered from before the wrap
        let e = ext.extend(1);
        assert_eq!((b - a, c - b, e - c), (1, 1, 1));
        assert_eq!(a - d, 1);
    }
}
