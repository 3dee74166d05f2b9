//! `audio-latency`: an in-process bridge on loopback and N publisher/subscriber pairs, each pair in its
//! own room; publishers send a paced tone, subscribers measure one-way latency (capture of a frame's
//! first sample → that frame leaving the jitter buffer) and loss. The pairs are alike, so the figures
//! are the median pair's median and the worst pair's 95th and 99th percentiles.
use std::time::Duration;

use streams_bridge::{Bridge, BridgeConfig};
use streams_client::audio::codec::{FrameDuration, VoiceSettings};
use streams_client::audio::source::ToneSource;
use streams_client::media::voice_session::{TrackReport, listen, publish_voice};
use streams_proto::Identity;

use crate::common::{client, room_with};

/// Runs the scenario and returns its JSON line.
pub fn audio_latency(
    pairs: usize,
    seconds: u64,
    frame_ms: u32,
) -> Result<serde_json::Value, String> {
    let frame = FrameDuration::from_millis(frame_ms)
        .ok_or_else(|| format!("--frame-ms must be 10 or 20, not {frame_ms}"))?;
    let bridge = Bridge::spawn(BridgeConfig::ephemeral()).map_err(|e| e.to_string())?;
    let url = bridge.url();
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..pairs)
            .map(|i| {
                let url = url.clone();
                scope.spawn(move || -> Result<(u64, TrackReport), String> {
                    let (speaker, hearer) = (Identity::generate(), Identity::generate());
                    let (s, h) = (client(&url, &speaker)?, client(&url, &hearer)?);
                    let room = room_with(&s, &hearer, &format!("bench {i}"))?;
                    std::thread::scope(|inner| {
                        let listening = inner.spawn(|| {
                            listen(
                                &h,
                                &hearer,
                                &url,
                                &room.id,
                                Duration::from_secs(seconds + 2),
                            )
                        });
                        // Let the listener subscribe first, as a room's members would be present.
                        std::thread::sleep(Duration::from_millis(500));
                        let sent = publish_voice(
                            &s,
                            &speaker,
                            &url,
                            &room.id,
                            Box::new(ToneSource::new(300.0 + 100.0 * i as f64, 0.5)),
                            VoiceSettings {
                                frame,
                                ..VoiceSettings::default()
                            },
                            Duration::from_secs(seconds),
                        )
                        .map_err(|e| e.to_string())?;
                        let reports = listening
                            .join()
                            .map_err(|_| "listener panicked".to_string())?
                            .map_err(|e| e.to_string())?;
                        let report = reports
                            .into_iter()
                            .next()
                            .ok_or("no track arrived".to_string())?;
                        Ok((sent.frames, report))
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "pair panicked".to_string())?)
            .collect::<Result<Vec<_>, String>>()
    })?;
    let sent: u64 = results.iter().map(|r| r.0).sum();
    let received: u64 = results.iter().map(|r| r.1.frames).sum();
    let lost: u64 = results.iter().map(|r| r.1.lost).sum();
    // The pairs are alike: the median pair's median, and the worst pair's tail.
    let figure = |of: fn(&TrackReport) -> Option<f64>, pick: fn(&[f64]) -> f64| {
        let mut values: Vec<f64> = results.iter().filter_map(|r| of(&r.1)).collect();
        values.sort_by(f64::total_cmp);
        if values.is_empty() {
            f64::NAN
        } else {
            pick(&values)
        }
    };
    let median = |v: &[f64]| v[v.len() / 2];
    let worst = |v: &[f64]| v[v.len() - 1];
    Ok(serde_json::json!({
        "scenario": "audio-latency",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "pairs": pairs,
        "frame_ms": frame_ms,
        "frames": received,
        "sent": sent,
        "loss_pct": if sent == 0 { 0.0 } else { 100.0 * (sent.saturating_sub(received)) as f64 / sent as f64 },
        "lost_in_stream": lost,
        "p50_ms": figure(|r| r.latency_p50_ms, median),
        "p95_ms": figure(|r| r.latency_p95_ms, worst),
        "p99_ms": figure(|r| r.latency_p99_ms, worst),
    }))
}
