//! The positional mix, scene and mixer together.
use std::path::Path;
use std::sync::Arc;

use streams_proto::{MediaId, StreamId, TrackId};

use super::*;
use crate::audio::source::{NoiseSource, ToneSource};

/// The id of test voice `n`.
fn voice(n: u64) -> TrackId {
    TrackId::new(StreamId(n), MediaId::parse("a").unwrap())
}

/// The bundled MIT KEMAR set.
fn kemar() -> Arc<Hrtf> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/hrtf/mit_kemar_normal_pinna.sofa");
    Arc::new(Hrtf::load(&path).unwrap())
}

/// Renders `frames` as a game and an output would: the scene published once per block.
fn render(mix: &mut (SpatialScene, SpatialMixer), frames: usize) -> (Vec<f32>, Vec<f32>) {
    let mut out = vec![0.0; frames * 2];
    for piece in out.chunks_mut(2 * BLOCK) {
        mix.0.update();
        mix.1.render(piece);
    }
    let left = out.iter().step_by(2).copied().collect();
    let right = out.iter().skip(1).step_by(2).copied().collect();
    (left, right)
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|s| s * s).sum::<f32>() / x.len() as f32).sqrt()
}

/// The lag (in samples) at which `right` best matches `left`: positive when the right ear leads.
fn lead_of_right(left: &[f32], right: &[f32], max_lag: usize) -> i64 {
    let mut best = (f32::MIN, 0i64);
    for lag in -(max_lag as i64)..=max_lag as i64 {
        let mut sum = 0.0;
        for i in max_lag..left.len() - max_lag {
            sum += right[i] * left[(i as i64 + lag) as usize];
        }
        if sum > best.0 {
            best = (sum, lag);
        }
    }
    best.1
}

#[test]
fn distance_models_follow_webaudio() {
    let inverse = Attenuation::default();
    assert_eq!(inverse.gain(0.5), 1.0);
    assert!((inverse.gain(2.0) - 0.5).abs() < 1e-6);
    assert!((inverse.gain(10.0) - 0.1).abs() < 1e-6);
    let linear = Attenuation {
        model: DistanceModel::Linear,
        ref_distance: 1.0,
        max_distance: 11.0,
        rolloff: 1.0,
    };
    assert!((linear.gain(6.0) - 0.5).abs() < 1e-6);
    assert_eq!(linear.gain(20.0), 0.0);
    let exponential = Attenuation {
        model: DistanceModel::Exponential,
        rolloff: 2.0,
        ..Attenuation::default()
    };
    assert!((exponential.gain(4.0) - 1.0 / 16.0).abs() < 1e-6);
}

#[test]
fn equal_power_pans_right_and_left_and_keeps_power() {
    let (l, r) = equal_power_gains([1.0, 0.0, 0.0]);
    assert!(l.abs() < 1e-6 && (r - 1.0).abs() < 1e-6);
    let (l, r) = equal_power_gains([0.0, 0.0, 1.0]);
    assert!((l - r).abs() < 1e-6 && (l * l + r * r - 1.0).abs() < 1e-5);
    let (l, r) = equal_power_gains([-0.7, 0.0, -0.7]); // behind, to the left
    assert!(l > r);
}

#[test]
fn a_source_to_the_right_is_louder_and_earlier_in_the_right_ear_with_hrtf() {
    let mut mixer = SpatialScene::new(Some(kemar()));
    // Bevy's default listener looks along −Z; +X is to its right.
    let params = SourceParams {
        position: [2.0, 0.0, 0.0],
        ..SourceParams::default()
    };
    mixer.0.add(
        voice(0),
        Box::new(NoiseSource::new(0x9e37_79b9_7f4a_7c15, 0.25)),
        params,
    );
    render(&mut mixer, 4 * BLOCK); // let the filter settle
    let (left, right) = render(&mut mixer, 20 * BLOCK);
    assert!(
        rms(&right) > 2.0 * rms(&left),
        "{} vs {}",
        rms(&right),
        rms(&left)
    );
    let lead = lead_of_right(&left, &right, 60);
    // KEMAR's interaural time difference at 90°: about 0.6 ms (29 samples at 48 kHz).
    let ms = lead as f32 / 48.0;
    println!("interaural time difference at 90° right: {ms:.3} ms ({lead} samples)");
    assert!(
        (0.45..=0.8).contains(&ms),
        "the right ear leads by {ms:.2} ms"
    );
}

#[test]
fn equal_power_fallback_and_distance_attenuation_in_the_mix() {
    let mut mixer = SpatialScene::new(None);
    mixer.0.add(
        voice(1),
        Box::new(ToneSource::new(440.0, 0.5)),
        SourceParams {
            position: [-1.0, 0.0, 0.0],
            ..SourceParams::default()
        },
    );
    let (left, right) = render(&mut mixer, 10 * BLOCK);
    assert!(rms(&left) > 10.0 * rms(&right).max(1e-6), "to the left");
    let near = rms(&left);
    mixer.0.set_params(
        voice(1),
        SourceParams {
            position: [-4.0, 0.0, 0.0],
            ..SourceParams::default()
        },
    );
    render(&mut mixer, 2 * BLOCK);
    let (left, _) = render(&mut mixer, 10 * BLOCK);
    // Inverse model, ref 1: 4 m is a quarter of the gain (−12 dB).
    let ratio = rms(&left) / near;
    assert!((ratio - 0.25).abs() < 0.02, "{ratio}");
    let levels = mixer.0.levels();
    assert!(levels[0].1 < -10.0 && levels[0].1 > -30.0, "{levels:?}");
}

#[test]
fn the_limiter_keeps_many_loud_voices_under_full_scale() {
    let mut mixer = SpatialScene::new(None);
    for i in 0..8 {
        mixer.0.add(
            voice(i as u64),
            Box::new(ToneSource::new(200.0 + 50.0 * i as f64, 0.9)),
            SourceParams::default(),
        );
    }
    let (left, right) = render(&mut mixer, 20 * BLOCK);
    let peak = left
        .iter()
        .chain(&right)
        .fold(0.0f32, |m, s| m.max(s.abs()));
    assert!(peak <= CEILING + 1e-4, "{peak}");
    assert!(rms(&left) > 0.2);
}
