//! `impair`: a call through the real bridge over an impaired path, one JSON line per condition —
//! clean, 100 ± 30 ms of delay and jitter, 5/10/20 % loss, 1 % reordering, a 300 kbit/s cap. A
//! publisher of a 440 Hz tone and the 640×360 test pattern reaches the bridge through our
//! impairment relay (`streams_testkit::udp_relay`: the bridge's answers name the relay instead of
//! its media port, rewritten by a signaling proxy), both ways; a subscriber on a clean path
//! reports what arrived: audio concealment, loss and latency; video frame rate, freezes, the
//! longest pause between pictures and PSNR against the pattern.
//!
//! Loss and reordering hit media packets only (RTP), as on a congested path that still lets the
//! connection's handshakes through; delay, jitter and the cap hit everything.
use std::sync::Arc;
use std::time::Duration;

use streams_bridge::{Bridge, BridgeConfig};
use streams_client::audio::codec::VoiceSettings;
use streams_client::audio::source::ToneSource;
use streams_client::media::voice_session::{Listened, Publication, PublishReport};
use streams_client::video::codec::VideoSettings;
use streams_client::video::pattern::PatternSource;
use streams_proto::Identity;
use streams_proto::wire::TrackKind;
use streams_testkit::Direction;
use streams_testkit::udp_relay::{Impairment, UdpRelay};
use streams_testkit::ws_proxy::{Message, Verdict, WsProxy};

use crate::common::{Member, call, client, room_with};

/// The picture the publisher sends.
const PICTURE: (usize, usize, u32) = (640, 360, 30);

/// One network condition.
struct Condition {
    name: &'static str,
    /// On the publisher's path to the bridge.
    uplink: Impairment,
    /// On the bridge's path back to the publisher (feedback: NACKs, reports, estimates).
    downlink: Impairment,
}

/// The same impairment both ways.
fn both(name: &'static str, impairment: Impairment) -> Condition {
    Condition {
        name,
        uplink: impairment.clone(),
        downlink: impairment,
    }
}

fn conditions() -> Vec<Condition> {
    let loss = |percent| Impairment {
        drop_percent: percent,
        ..Impairment::default()
    };
    vec![
        both("clean", Impairment::default()),
        both(
            "jitter 100±30 ms",
            Impairment {
                delay: Duration::from_millis(70),
                jitter: Duration::from_millis(60),
                ..Impairment::default()
            },
        ),
        both("loss 5%", loss(5.0)),
        both("loss 10%", loss(10.0)),
        both("loss 20%", loss(20.0)),
        both(
            "reorder 1%",
            Impairment {
                reorder_percent: 1.0,
                ..Impairment::default()
            },
        ),
        Condition {
            name: "cap 300 kbit/s",
            uplink: Impairment {
                rate_bps: Some(300_000),
                ..Impairment::default()
            },
            downlink: Impairment::default(),
        },
    ]
}

/// Runs every condition for `seconds` each and returns one JSON line per condition.
pub fn impair(seconds: u64, only: Option<&str>) -> Result<Vec<serde_json::Value>, String> {
    let mut lines = Vec::new();
    for condition in conditions() {
        if only.is_some_and(|name| name != condition.name) {
            continue;
        }
        eprintln!("impair: {} ({seconds} s)", condition.name);
        lines.push(run(&condition, seconds)?);
    }
    if lines.is_empty() {
        let names: Vec<&str> = conditions().iter().map(|c| c.name).collect();
        return Err(format!(
            "no condition named that; one of: {}",
            names.join(", ")
        ));
    }
    Ok(lines)
}

fn run(condition: &Condition, seconds: u64) -> Result<serde_json::Value, String> {
    let bridge = Bridge::spawn(BridgeConfig::ephemeral()).map_err(|e| e.to_string())?;
    let url = bridge.url();
    let media = bridge.media_addr();
    let relay = UdpRelay::start(media, 0x1a7a1).map_err(|e| e.to_string())?;
    relay.impair(Direction::ToServer, condition.uplink.clone());
    relay.impair(Direction::ToClient, condition.downlink.clone());
    // The publisher's signaling goes through a proxy that points its answers at the relay.
    let (from, to) = (
        format!("{} {}", media.ip(), media.port()),
        format!("{} {}", relay.addr().ip(), relay.addr().port()),
    );
    let proxy = WsProxy::start(&url).map_err(|e| e.to_string())?;
    proxy.set_rule(Some(Arc::new(
        move |direction, message: &Message| match message {
            Message::Text(text) if direction == Direction::ToClient && text.contains(&from) => {
                Verdict::Replace(Message::text(text.replace(&from, &to)))
            }
            _ => Verdict::Pass,
        },
    )));
    let (publisher, subscriber) = (Identity::generate(), Identity::generate());
    let (p, s) = (
        client(&proxy.url(), &publisher)?,
        client(&url, &subscriber)?,
    );
    let room = room_with(&p, &subscriber, "impair bench")?;
    let (width, height, fps) = PICTURE;
    let pattern = PatternSource::new(width, height, fps).map_err(|e| e.to_string())?;
    let publication = Publication {
        audio: Some((
            Box::new(ToneSource::new(440.0, 0.5)),
            VoiceSettings::default(),
        )),
        video: Some((
            Box::new(pattern),
            VideoSettings::for_picture(width, height, fps),
            TrackKind::Video,
        )),
    };
    let (sent, heard) = call(
        Member {
            client: &p,
            identity: &publisher,
            url: &proxy.url(),
        },
        Member {
            client: &s,
            identity: &subscriber,
            url: &url,
        },
        &room.id,
        publication,
        seconds,
        Duration::from_secs(3),
        &mut |_| {},
    )?;
    Ok(line(condition.name, &sent, &heard))
}

/// The condition's JSON line from what was sent and what arrived.
fn line(name: &str, sent: &PublishReport, heard: &Listened) -> serde_json::Value {
    let sent_audio = sent.frames;
    let percent = |n: u64| (n as f64 * 1000.0 / sent_audio.max(1) as f64).round() / 10.0;
    let audio = heard.audio.first().map(|a| {
        serde_json::json!({
            "sent": sent_audio,
            "decoded": a.frames,
            "lost_percent": percent(a.lost),
            "concealed_percent": percent(a.concealed),
            "fec_recovered": a.fec_recovered,
            "late": a.late,
            "freq_hz": a.freq_hz,
            "latency_p50_ms": a.latency_p50_ms,
            "latency_p95_ms": a.latency_p95_ms,
        })
    });
    let video = heard.video.first().map(|v| {
        serde_json::json!({
            "frames": v.frames,
            "fps": (v.fps * 10.0).round() / 10.0,
            "freezes": v.freezes,
            "longest_freeze_ms": v.longest_pause_ms,
            "psnr_db": v.psnr_db.map(|p| (p * 10.0).round() / 10.0),
            "keyframe_requests": v.keyframe_requests,
            "latency_p50_ms": v.latency_p50_ms,
            // What the sender's encoder aimed at and sent at the end (from the estimate).
            "target_kbps": sent.video.as_ref().map(|s| s.target_bitrate / 1000),
            "sent_kbps": sent.video.as_ref().map(|s| s.sent_bitrate / 1000),
        })
    });
    serde_json::json!({
        "scenario": "impair",
        "condition": name,
        "audio": audio,
        "video": video,
    })
}
