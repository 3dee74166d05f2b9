//! `textures`: the Bevy main thread's cost of showing N remote videos. N latest-frame slots are fed
//! 640×360 RGBA pictures at 30 fps by a producer thread (standing in for the decode threads); the app
//! (MinimalPlugins, assets, the streams plugin) runs at 60 frames a second. Timed each frame: the
//! plugin's `StreamsSystems::Receive` set (where pictures are written into the images in place;
//! `ms_per_frame_*`) and the whole `App::update` (`update_ms_*`). The GPU upload that a renderer does
//! afterwards is not part of it (the render world extracts changed images on its own schedule).
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_streams::{LatestPicture, RemoteVideo, StreamsPlugin, StreamsSystems, VideoFeed};
use streams_client::video::I420Frame;
use streams_client::video::receiver::{DecodedVideo, VideoSlot};

const WIDTH: usize = 640;
const HEIGHT: usize = 360;
const PICTURE_FPS: u64 = 30;
const APP_FPS: u64 = 60;

/// Runs the scenario with `videos` tracks for `seconds`.
pub fn textures(videos: usize, seconds: u64) -> Result<serde_json::Value, String> {
    let mut app = App::new();
    // No bridge is needed: the plugin's client retries a closed port in the background.
    let mut plugin = StreamsPlugin::url("ws://127.0.0.1:9");
    plugin.audio_output = false;
    plugin.hrtf = None;
    app.add_plugins((MinimalPlugins, AssetPlugin::default(), plugin))
        .init_asset::<Image>()
        .init_resource::<ReceiveTimes>()
        .add_systems(
            PreUpdate,
            (
                (|mut t: ResMut<ReceiveTimes>| t.started = Some(Instant::now()))
                    .before(StreamsSystems::Receive),
                (|mut t: ResMut<ReceiveTimes>| {
                    if let Some(started) = t.started.take() {
                        t.ms.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                })
                .after(StreamsSystems::Receive),
            ),
        );
    let slots: Vec<VideoSlot> = (0..videos).map(|_| VideoSlot::default()).collect();
    for (i, slot) in slots.iter().enumerate() {
        let image = app
            .world_mut()
            .resource_mut::<Assets<Image>>()
            .add(Image::default());
        app.world_mut().spawn((
            Name::new(format!("video {i}")),
            RemoteVideo {
                image,
                frames_shown: 0,
            },
            VideoFeed::new(slot.clone()),
            LatestPicture::default(),
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let pictures = draw_pictures();
    let producer = {
        let stop = Arc::clone(&stop);
        let slots = slots.clone();
        std::thread::spawn(move || produce(&slots, &pictures, &stop))
    };
    // Warm up (first pictures resize the images), then measure.
    let frame = Duration::from_micros(1_000_000 / APP_FPS);
    let mut times = Vec::new();
    let warmup = Instant::now() + Duration::from_secs(1);
    let end = warmup + Duration::from_secs(seconds);
    let mut next = Instant::now();
    let mut shown_before = None;
    let mut measured_from = None;
    while Instant::now() < end {
        let started = Instant::now();
        app.update();
        if started > warmup {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            shown_before.get_or_insert_with(|| shown(&mut app));
            measured_from.get_or_insert(app.world().resource::<ReceiveTimes>().ms.len());
        }
        next += frame;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    let shown = shown(&mut app) - shown_before.unwrap_or(0);
    times.sort_by(f64::total_cmp);
    let mut receive =
        app.world().resource::<ReceiveTimes>().ms[measured_from.unwrap_or(0)..].to_vec();
    receive.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "scenario": "textures",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "videos": videos,
        "width": WIDTH,
        "height": HEIGHT,
        "picture_fps": PICTURE_FPS,
        "app_fps": APP_FPS,
        "frames": times.len(),
        "pictures_written": shown,
        "pictures_written_per_s": shown as f64 / seconds as f64,
        "ms_per_frame_p50": percentile(&receive, 50.0),
        "ms_per_frame_p95": percentile(&receive, 95.0),
        "ms_per_frame_max": receive.last().copied().unwrap_or(0.0),
        "update_ms_p50": percentile(&times, 50.0),
        "update_ms_p95": percentile(&times, 95.0),
    }))
}

/// When the receive set started this frame, and how long it took each frame (ms).
#[derive(Resource, Default)]
struct ReceiveTimes {
    started: Option<Instant>,
    ms: Vec<f64>,
}

/// Pictures written into images so far.
fn shown(app: &mut App) -> u64 {
    app.world_mut()
        .query::<&RemoteVideo>()
        .iter(app.world())
        .map(|v| v.frames_shown)
        .sum()
}

/// The `p`th percentile of sorted values (0 when empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A second of distinct pictures (a moving bar), drawn before measuring.
fn draw_pictures() -> Vec<Vec<u8>> {
    (0..PICTURE_FPS as usize)
        .map(|n| {
            let bar = n * WIDTH / PICTURE_FPS as usize;
            let mut row = vec![0u8; WIDTH * 4];
            for (x, pixel) in row.chunks_exact_mut(4).enumerate() {
                let on = x.abs_diff(bar) < 16;
                pixel.copy_from_slice(if on {
                    &[255, 255, 255, 255]
                } else {
                    &[20, 20, 40, 255]
                });
            }
            row.repeat(HEIGHT)
        })
        .collect()
}

/// Puts a fresh picture into every slot 30 times a second: the producer costs little more than the
/// decoders' hand-over (a copy of each picture).
fn produce(slots: &[VideoSlot], pictures: &[Vec<u8>], stop: &AtomicBool) {
    let period = Duration::from_micros(1_000_000 / PICTURE_FPS);
    let black = I420Frame::black(WIDTH, HEIGHT);
    let mut next = Instant::now();
    let mut index = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let rgba = &pictures[index as usize % pictures.len()];
        for slot in slots {
            slot.put(DecodedVideo {
                picture: black.clone(),
                rgba: Some(rgba.clone()),
                capture_us: 0,
                decoded_us: 0,
                index,
            });
        }
        index += 1;
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}
