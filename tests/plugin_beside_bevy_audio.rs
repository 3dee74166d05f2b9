//! A game that plays its own sounds through `bevy_audio` keeps them beside our positional voice: both
//! open the same default output at once. This machine has no sound card, so ALSA's default device is
//! made a `null` PCM (through `$HOME/.asoundrc`, set before anything touches ALSA) — a real device
//! to both libraries, which accept and discard what they play.
use std::sync::Arc;
use std::time::{Duration, Instant};

use bevy::audio::{AudioPlugin, AudioSink, AudioSinkPlayback, AudioSource as BevySound};
use bevy::prelude::*;
use bevy_streams::prelude::*;
use bevy_streams::streams_client::audio::source::ToneSource;
use bevy_streams::streams_client::audio::spatial::SourceParams;

#[test]
fn bevy_audio_plays_beside_the_positional_voice_mix() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join(".asoundrc"),
        "pcm.!default { type null }\nctl.!default { type hw card 0 }\n",
    )
    .unwrap();
    // SAFETY: the only test in this binary, before any thread of ours exists or ALSA is loaded.
    unsafe { std::env::set_var("HOME", home.path()) };

    let mut app = App::new();
    let mut plugin = StreamsPlugin::embedded();
    plugin.audio_output = true;
    app.add_plugins((
        MinimalPlugins,
        AssetPlugin::default(),
        AudioPlugin::default(),
        TransformPlugin,
        plugin,
    ));
    let device = app.world().resource::<SpatialAudio>().output_device();
    assert!(
        device.is_some(),
        "the positional mix opened the default output"
    );
    // Our mix plays a tone voice...
    let scene = app.world().resource::<SpatialAudio>().scene();
    let tone = TrackId::parse("1:tone").unwrap();
    scene.lock().unwrap().add(
        tone,
        Box::new(ToneSource::new(440.0, 0.3)),
        SourceParams::default(),
    );
    // ...while the game plays its own sound, looped, through bevy_audio.
    let wav = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/speech/bot_greeting.wav"
    ))
    .unwrap();
    let sound = app
        .world_mut()
        .resource_mut::<Assets<BevySound>>()
        .add(BevySound {
            bytes: Arc::from(wav.into_boxed_slice()),
        });
    let game_sound = app
        .world_mut()
        .spawn((AudioPlayer(sound), PlaybackSettings::LOOP))
        .id();
    let started = Instant::now();
    let mut position = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(20) {
        app.update();
        std::thread::sleep(Duration::from_millis(10));
        if let Some(sink) = app.world().get::<AudioSink>(game_sound) {
            position = sink.position();
            if position > Duration::from_millis(500) {
                break;
            }
        }
    }
    assert!(
        position > Duration::from_millis(500),
        "bevy_audio's sink plays (at {position:?})"
    );
    let level = app
        .world()
        .resource::<SpatialAudio>()
        .levels()
        .into_iter()
        .find(|(id, _)| *id == tone)
        .map(|(_, level)| level)
        .unwrap();
    assert!(
        level > -30.0,
        "the output thread pulls our mix: {level} dBFS"
    );
}
