//! Writing a forwarded RTP packet on one subscriber's sending m-line: the payload type that
//! m-line negotiated for the packet's codec, the stream (SSRC) str0m made for it, and the
//! renumbering of [`super::renumber`]. str0m then encrypts it, answers the subscriber's NACKs from
//! its resend cache (video) and paces it; the payload itself is shared, never copied, between legs.
use std::sync::Arc;
use std::time::Duration;

use str0m::Rtc;
use str0m::format::Codec;
use str0m::media::{Mid, Pt};
use str0m::rtp::{RtpWrite, Ssrc};

use super::renumber::{Renumber, SourcePosition};

/// How long a video leg keeps what it sent, to answer NACKs: a resend older than this would
/// arrive after the picture it belongs to was shown or given up (str0m's default is 3 s, which
/// made the resend cache most of a video leg's memory).
pub const RESEND_HISTORY: Duration = Duration::from_secs(1);

/// The most packets a video leg keeps for resends (a second of a 4 Mbit/s stream).
const RESEND_PACKETS: usize = 512;

/// Resends beyond this share of what a leg sends are dropped (str0m's default).
const RESEND_RATIO_CAP: f32 = 0.15;

/// A packet from a publisher, as every leg of its track forwards it.
#[derive(Debug)]
pub struct Forwarded {
    /// Its place in the source stream.
    pub position: SourcePosition,
    /// Its codec (payload types differ between sessions).
    pub codec: Codec,
    /// The RTP marker bit (the last packet of a video frame).
    pub marker: bool,
    /// Whether a subscriber's NACK may ask for it again (video: yes; audio: Opus conceals).
    pub nackable: bool,
    /// Whether it is the first packet of a frame (every Opus packet is). A leg starts carrying a
    /// source only at one: a receiver given the middle of a frame first holds what follows,
    /// waiting for a beginning it never NACKs (it never saw the sequence numbers before).
    pub starts_frame: bool,
    /// The payload (SFrame ciphertext, packetized by the publisher).
    pub payload: Arc<[u8]>,
}

/// Why a leg did not send a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotSent {
    /// The m-line did not negotiate the codec, or has no sending stream.
    #[error("the m-line cannot carry this codec")]
    NoStream,
    /// The packet is older than this m-line's current source.
    #[error("stale packet")]
    Stale,
    /// The m-line starts carrying this source at the next frame.
    #[error("waiting for the start of a frame")]
    MidFrame,
}

/// The state of one sending m-line of a subscriber.
#[derive(Debug, Default)]
pub struct Outgoing {
    renumber: Renumber,
    /// The m-line's sending stream, found on its first packet.
    ssrc: Option<Ssrc>,
    /// The payload type last used and the codec it carries.
    pt: Option<(Codec, Pt)>,
}

impl Outgoing {
    /// Forgets the stream and payload type found: a new negotiation may have changed them (the
    /// numbering goes on, so the subscriber still sees one stream).
    pub fn renegotiated(&mut self) {
        self.ssrc = None;
        self.pt = None;
    }

    /// Queues `packet` on `rtc`'s m-line `mid`.
    pub fn send(&mut self, rtc: &mut Rtc, mid: Mid, packet: &Forwarded) -> Result<(), NotSent> {
        if !packet.starts_frame && !self.renumber.carries(&packet.position) {
            return Err(NotSent::MidFrame);
        }
        let pt = match self.pt {
            Some((codec, pt)) if codec == packet.codec => pt,
            _ => {
                let pt = negotiated_pt(rtc, mid, packet.codec).ok_or(NotSent::NoStream)?;
                self.pt = Some((packet.codec, pt));
                pt
            }
        };
        let mut api = rtc.direct_api();
        let stream = match self.ssrc {
            Some(ssrc) => api.stream_tx(&ssrc),
            None => {
                let mut stream = api.stream_tx_by_mid(mid, None);
                if let Some(stream) = stream.as_mut() {
                    self.ssrc = Some(stream.ssrc());
                    if packet.nackable {
                        stream.set_rtx_cache(
                            RESEND_PACKETS,
                            RESEND_HISTORY,
                            Some(RESEND_RATIO_CAP),
                        );
                    }
                }
                stream
            }
        }
        .ok_or(NotSent::NoStream)?;
        let (seq, time) = self.renumber.map(&packet.position).ok_or(NotSent::Stale)?;
        stream.write_rtp(
            RtpWrite::new(
                pt,
                seq,
                time,
                packet.position.arrived,
                packet.payload.clone(),
            )
            .marker(packet.marker)
            .nackable(packet.nackable),
        );
        Ok(())
    }
}

/// The payload type m-line `mid` of `rtc` negotiated for `codec`.
fn negotiated_pt(rtc: &Rtc, mid: Mid, codec: Codec) -> Option<Pt> {
    let accepted = rtc.media(mid)?.remote_pts();
    rtc.codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == codec && accepted.contains(&p.pt()))
        .map(|p| p.pt())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use str0m::media::Mid;
    use streams_proto::{MediaId, StreamId, TrackId};

    use super::*;

    fn packet(starts_frame: bool) -> Forwarded {
        Forwarded {
            position: SourcePosition {
                track: TrackId::new(StreamId(1), MediaId::parse("v0").unwrap()),
                ssrc: 7.into(),
                seq: 100.into(),
                time: 3000,
                clock_rate: 90_000,
                arrived: Instant::now(),
            },
            codec: Codec::H264,
            marker: false,
            nackable: true,
            starts_frame,
            payload: Arc::from(&[1u8, 2, 3][..]),
        }
    }

    #[test]
    fn a_leg_does_not_start_in_the_middle_of_a_frame() {
        let mut rtc = Rtc::new(Instant::now());
        let mut leg = Outgoing::default();
        let mid = Mid::from("v0");
        assert_eq!(
            leg.send(&mut rtc, mid, &packet(false)),
            Err(NotSent::MidFrame)
        );
        // A frame's first packet gets past the wait (this Rtc has no such m-line to send on).
        assert_eq!(
            leg.send(&mut rtc, mid, &packet(true)),
            Err(NotSent::NoStream)
        );
    }
}
