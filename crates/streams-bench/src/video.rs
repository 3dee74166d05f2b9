//! `video`: an in-process bridge on loopback, one publisher of the moving test pattern and one
//! subscriber in a room. The publisher encodes in real time (H.264, bitrate from the bandwidth
//! estimate); the subscriber decodes every picture and reads its stamp, so glass-to-glass latency is
//! capture (in the pixels) → decoded picture, and PSNR is measured against the pattern redrawn from
//! the stamp. One JSON line with what was sustained.
use std::time::Duration;

use streams_bridge::{Bridge, BridgeConfig};
use streams_client::media::voice_session::Publication;
use streams_client::video::codec::VideoSettings;
use streams_client::video::pattern::PatternSource;
use streams_proto::Identity;
use streams_proto::wire::TrackKind;

use crate::common::{Member, call, client, room_with};

/// Runs the scenario and returns its JSON line.
pub fn video(
    width: usize,
    height: usize,
    fps: u32,
    seconds: u64,
) -> Result<serde_json::Value, String> {
    let source = PatternSource::new(width, height, fps).map_err(|e| e.to_string())?;
    let bridge = Bridge::spawn(BridgeConfig::ephemeral()).map_err(|e| e.to_string())?;
    let url = bridge.url();
    let (publisher, subscriber) = (Identity::generate(), Identity::generate());
    let (p, s) = (client(&url, &publisher)?, client(&url, &subscriber)?);
    let room = room_with(&p, &subscriber, "video bench")?;
    let publication = Publication {
        audio: None,
        video: Some((
            Box::new(source),
            VideoSettings::for_picture(width, height, fps),
            TrackKind::Video,
        )),
    };
    let (sent, heard) = call(
        Member {
            client: &p,
            identity: &publisher,
            url: &url,
        },
        Member {
            client: &s,
            identity: &subscriber,
            url: &url,
        },
        &room.id,
        publication,
        seconds,
        Duration::from_secs(2),
        &mut |report| {
            if let Some(v) = &report.video {
                eprintln!(
                    "target {} kbit/s, sent {} kbit/s",
                    v.target_bitrate / 1000,
                    v.sent_bitrate / 1000
                );
            }
        },
    )?;
    let local = sent.video.ok_or("no video track was published")?;
    let track = heard.video.first().ok_or("no video track arrived")?;
    let pattern = track.pattern.clone().unwrap_or_default();
    Ok(serde_json::json!({
        "scenario": "video",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "width": width,
        "height": height,
        "fps": fps,
        "seconds": seconds,
        "frames_sent": local.frames,
        "frames_decoded": track.frames,
        "sent_fps": local.frames as f64 / seconds as f64,
        "decoded_fps": track.fps,
        "keyframes": local.keyframes,
        "target_kbps": local.target_bitrate / 1000,
        "encode_ms_p50": local.encode_ms_p50,
        "decode_ms_p50": track.decode_ms_p50,
        "glass_to_glass_ms_p50": pattern.latency_p50_ms,
        "glass_to_glass_ms_p95": pattern.latency_p95_ms,
        "psnr_db": pattern.psnr_db,
        "psnr_min_db": pattern.psnr_min_db,
        "freezes": track.freezes,
        "decrypt_failures": track.decrypt_failures,
    }))
}
