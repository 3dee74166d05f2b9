//! `mixer`: the cost of positional voice. N voices (white noise, each moving around the listener so
//! its HRTF filter is replaced and crossfaded every 10 ms block) rendered with the MIT KEMAR HRTF into
//! 48 kHz stereo as fast as possible; the CPU time per second of audio is the share of one core that
//! the output thread would spend (`core_pct`), and apart from it what placing the voices and
//! preparing their filters costs the thread that moves them (`scene_core_pct`, here once per block:
//! a game at 100 frames a second).
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use streams_client::audio::source::NoiseSource;
use streams_client::audio::spatial::{BLOCK, Hrtf, Panning, SourceParams, SpatialScene};
use streams_proto::{MediaId, StreamId, TrackId};

/// The id of voice `n` (as a remote track's would be).
fn voice(n: u64) -> TrackId {
    TrackId::new(
        StreamId(n),
        MediaId::parse("a").unwrap_or_else(|_| unreachable!()),
    )
}

/// Runs the scenario and returns its JSON line.
pub fn mixer(voices: usize, seconds: u64, hrtf_path: &Path) -> Result<serde_json::Value, String> {
    let hrtf = Arc::new(Hrtf::load(hrtf_path).map_err(|e| e.to_string())?);
    let mut results = Vec::new();
    for panning in [Panning::Hrtf, Panning::EqualPower] {
        let (mut scene, mut mixer) = SpatialScene::new(Some(Arc::clone(&hrtf)));
        scene.set_panning(panning);
        for v in 0..voices {
            scene.add(
                voice(v as u64),
                Box::new(NoiseSource::new(0x9e37_79b9_7f4a_7c15 ^ v as u64, 0.1)),
                SourceParams::default(),
            );
        }
        let blocks = seconds as usize * 100;
        let mut out = vec![0.0f32; BLOCK * 2];
        let (mut placing, mut rendering) = (0.0, 0.0);
        for b in 0..blocks {
            let began = Instant::now();
            for v in 0..voices {
                // Each voice circles the listener at 3 m, a degree or more per block.
                let angle = (b as f32 * 0.02) + v as f32 * 0.7;
                scene.set_params(
                    voice(v as u64),
                    SourceParams {
                        position: [3.0 * angle.cos(), 0.0, 3.0 * angle.sin()],
                        ..SourceParams::default()
                    },
                );
            }
            scene.update();
            let placed = Instant::now();
            mixer.render(&mut out);
            placing += (placed - began).as_secs_f64();
            rendering += placed.elapsed().as_secs_f64();
        }
        results.push((
            100.0 * rendering / seconds as f64,
            100.0 * placing / seconds as f64,
        ));
    }
    Ok(serde_json::json!({
        "scenario": "mixer",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "voices": voices,
        "sample_rate": 48_000,
        "core_pct": results[0].0,
        "scene_core_pct": results[0].1,
        "core_pct_equal_power": results[1].0,
        "per_voice_core_pct": results[0].0 / voices.max(1) as f64,
    }))
}
