//! What the SFU changes in an offer before it answers: audio m-lines lose the transport-wide
//! sequence number extension and its `transport-cc` feedback. Congestion feedback is what a video
//! sender's bandwidth estimate runs on; Opus voice has a fixed rate, so on audio m-lines it only
//! cost a per-packet register in both directions and a feedback report from every subscriber
//! every 100 ms (a quarter of the SFU's CPU and two thirds of its memory per voice track, measured
//! with `streams-bench sfu-fanout`). The answer follows the offer, so both ends agree per m-line;
//! video m-lines keep it.

/// The URI of the transport-wide sequence number extension.
const TRANSPORT_CC_URI: &str = "transport-wide-cc-extensions";

/// `sdp` with congestion feedback removed from its audio m-lines (line endings kept).
pub fn without_audio_congestion_feedback(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    let mut in_audio = false;
    for line in sdp.split_inclusive('\n') {
        let text = line.trim_end();
        if text.starts_with("m=") {
            in_audio = text.starts_with("m=audio");
        }
        let congestion = (text.starts_with("a=extmap:") && text.contains(TRANSPORT_CC_URI))
            || (text.starts_with("a=rtcp-fb:") && text.ends_with(" transport-cc"));
        if !(in_audio && congestion) {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use str0m::media::{Direction, MediaKind};

    use super::*;

    /// The sections of `sdp`, each as its lines.
    fn sections(sdp: &str) -> Vec<Vec<&str>> {
        let mut sections = vec![Vec::new()];
        for line in sdp.lines() {
            if line.starts_with("m=") {
                sections.push(Vec::new());
            }
            sections.last_mut().unwrap().push(line);
        }
        sections
    }

    fn mentions_congestion(lines: &[&str]) -> bool {
        lines
            .iter()
            .any(|l| l.contains(TRANSPORT_CC_URI) || l.ends_with(" transport-cc"))
    }

    #[test]
    fn only_audio_m_lines_lose_congestion_feedback() {
        streams_rtc::dtls::prepare();
        let mut rtc = streams_rtc::profile().unwrap().build(Instant::now());
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, _) = api.apply().unwrap();
        let offer = offer.to_sdp_string();
        let before = sections(&offer);
        assert!(before[1..].iter().all(|s| mentions_congestion(s)));

        let changed = without_audio_congestion_feedback(&offer);
        let after = sections(&changed);
        assert_eq!(after.len(), 4);
        assert!(!mentions_congestion(&after[1]) && !mentions_congestion(&after[3]));
        assert_eq!(after[2], before[2], "the video m-line is unchanged");
        assert_eq!(after[0], before[0], "the session part is unchanged");
        assert!(changed.lines().count() < offer.lines().count());
        assert!(changed.ends_with("\r\n") && !changed.contains("\r\n\r\n"));
        str0m::change::SdpOffer::from_sdp_string(&changed).expect("still an offer");
    }
}
