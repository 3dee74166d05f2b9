//! `streams bot` and `streams listen`: publish synthetic or device media into a room, or receive
//! every remote track and report what arrived.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use streams_client::audio::codec::{FrameDuration, VoiceSettings};
use streams_client::audio::device::MicrophoneSource;
use streams_client::audio::source::{AudioSource, ClipSource, ToneSource};
use streams_client::media::voice_session::{Publication, listen_media, publish};
use streams_client::video::VideoSource;
use streams_client::video::camera::DEFAULT_CAMERA;
use streams_client::video::codec::VideoSettings;
use streams_client::video::pattern::PatternSource;
use streams_client::video::screen::{ScreenSource, ScreenTarget};
use streams_proto::wire::TrackKind;

use crate::common::{Globals, connect, identity, room_id};

#[derive(Args)]
pub(crate) struct BotArgs {
    /// The room id.
    #[arg(long)]
    room: String,
    /// Send a sine tone at this frequency (Hz).
    #[arg(long, conflicts_with = "file")]
    tone: Option<f64>,
    /// Send this WAV clip, looped.
    #[arg(long, conflicts_with = "mic")]
    file: Option<PathBuf>,
    /// Send the default microphone.
    #[arg(long, conflicts_with = "tone")]
    mic: bool,
    /// With --mic: the input device to use (see `streams devices`).
    #[arg(long, requires = "mic")]
    device: Option<String>,
    /// How long to send, from the moment the media connection is up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Opus frame duration: 10 or 20 ms.
    #[arg(long, default_value_t = 20)]
    frame_ms: u32,
    /// Publish video too (or only video, without an audio option).
    #[arg(long, value_enum)]
    video: Option<VideoChoice>,
    /// Picture width (pattern: 640, camera: 1280; the screen is captured at its own size).
    #[arg(long)]
    width: Option<usize>,
    /// Picture height (pattern: 360, camera: 720).
    #[arg(long)]
    height: Option<usize>,
    /// Frames per second (pattern: 30, screen and camera: 15).
    #[arg(long)]
    fps: Option<u32>,
    /// With --video camera: which camera (see `streams devices`).
    #[arg(long, default_value_t = 0)]
    camera: u32,
    /// With --video screen: capture this X11 window (id, decimal or 0x hex) instead of the screen.
    #[arg(long, value_parser = parse_window)]
    window: Option<u32>,
    /// A keyframe every this many frames (default: only when a receiver asks).
    #[arg(long)]
    keyframe_interval: Option<u32>,
    /// Highest video bitrate, kbit/s (default: from the picture size).
    #[arg(long)]
    max_kbps: Option<u32>,
    /// With --json: also print the running figures once a second (`{"progress":…}` lines).
    #[arg(long)]
    progress: bool,
}

fn parse_window(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("not a window id: {e}"))
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum VideoChoice {
    /// The moving test pattern (frame number and capture time in its pixels).
    Pattern,
    /// The X11 screen ($DISPLAY), or one window with --window.
    Screen,
    /// A camera.
    Camera,
}

fn audio_source(args: &BotArgs) -> Result<Option<Box<dyn AudioSource>>, String> {
    Ok(match (args.tone, &args.file) {
        _ if args.mic => Some(Box::new(
            MicrophoneSource::open(args.device.as_deref())
                .map_err(|e| format!("{e}; use --tone HZ or --file PATH instead"))?,
        )),
        (_, Some(path)) => Some(Box::new(ClipSource::load(path).map_err(|e| e.to_string())?)),
        (Some(hz), None) => Some(Box::new(ToneSource::new(hz, 0.5))),
        (None, None) => None,
    })
}

fn video_source(
    args: &BotArgs,
    choice: VideoChoice,
) -> Result<(Box<dyn VideoSource>, TrackKind), String> {
    let fps = args.fps.unwrap_or(match choice {
        VideoChoice::Pattern => 30,
        _ => DEFAULT_CAMERA.2,
    });
    Ok(match choice {
        VideoChoice::Pattern => (
            Box::new(
                PatternSource::new(args.width.unwrap_or(640), args.height.unwrap_or(360), fps)
                    .map_err(|e| e.to_string())?,
            ),
            TrackKind::Video,
        ),
        VideoChoice::Screen => {
            let target = args
                .window
                .map_or(ScreenTarget::Screen, ScreenTarget::Window);
            let screen = ScreenSource::open(None, target, fps)
                .map_err(|e| format!("{e}; use --video pattern instead"))?;
            (Box::new(screen), TrackKind::Screen)
        }
        VideoChoice::Camera => (camera_source(args, fps)?, TrackKind::Video),
    })
}

#[cfg(feature = "camera")]
fn camera_source(args: &BotArgs, fps: u32) -> Result<Box<dyn VideoSource>, String> {
    let width = args.width.map_or(DEFAULT_CAMERA.0, |w| w as u32);
    let height = args.height.map_or(DEFAULT_CAMERA.1, |h| h as u32);
    let camera = streams_client::video::camera::CameraSource::open(args.camera, width, height, fps)
        .map_err(|e| format!("{e}; use --video pattern instead"))?;
    Ok(Box::new(camera))
}

#[cfg(not(feature = "camera"))]
fn camera_source(_: &BotArgs, _: u32) -> Result<Box<dyn VideoSource>, String> {
    Err("this build has no camera support; use --video pattern instead".into())
}

pub(crate) fn bot(cli: &Globals, args: &BotArgs) -> Result<(), String> {
    let audio = audio_source(args)?;
    let video = args.video.map(|v| video_source(args, v)).transpose()?;
    if audio.is_none() && video.is_none() {
        return Err("give --tone HZ, --file PATH, --mic and/or --video SOURCE".into());
    }
    let frame = FrameDuration::from_millis(args.frame_ms)
        .ok_or_else(|| format!("--frame-ms must be 10 or 20, not {}", args.frame_ms))?;
    let video = video.map(|(source, kind)| {
        let (width, height) = source.size();
        let mut settings = VideoSettings::for_picture(width, height, source.frame_rate());
        settings.keyframe_interval = args.keyframe_interval;
        settings.screen_content = kind == TrackKind::Screen;
        if let Some(kbps) = args.max_kbps {
            settings.max_bitrate = kbps.max(100) * 1000;
            settings.start_bitrate = settings.start_bitrate.min(settings.max_bitrate);
        }
        (source, settings, kind)
    });
    let identity = identity(cli)?;
    let client = connect(cli, &identity)?;
    let publication = Publication {
        audio: audio.map(|source| {
            (
                source,
                VoiceSettings {
                    frame,
                    ..VoiceSettings::default()
                },
            )
        }),
        video,
    };
    let progress = cli.json && args.progress;
    let report = publish(
        &client,
        &identity,
        &cli.bridge,
        &room_id(&args.room)?,
        publication,
        Duration::from_secs(args.seconds),
        &mut |report| {
            if progress {
                println!("{}", serde_json::json!({ "progress": report }));
            }
        },
    )
    .map_err(|e| e.to_string())?;
    if cli.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        if report.frame_ms > 0 {
            println!(
                "sent {} audio frames of {} ms (key epochs {:?})",
                report.frames, report.frame_ms, report.epochs
            );
        }
        if let Some(v) = &report.video {
            println!(
                "sent {} video frames of {}x{} ({} keyframes, {} kbit/s target, encode p50 {:.1} ms)",
                v.frames,
                v.width,
                v.height,
                v.keyframes,
                v.target_bitrate / 1000,
                v.encode_ms_p50
            );
        }
    }
    match report.failure {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

pub(crate) fn listen(cli: &Globals, room: &str, seconds: u64) -> Result<(), String> {
    let identity = identity(cli)?;
    let client = connect(cli, &identity)?;
    let listened = listen_media(
        &client,
        &identity,
        &cli.bridge,
        &room_id(room)?,
        Duration::from_secs(seconds),
    )
    .map_err(|e| e.to_string())?;
    if listened.audio.is_empty() && listened.video.is_empty() && !cli.json {
        println!("no track arrived");
    }
    for r in listened.audio {
        if cli.json {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        } else {
            println!(
                "{} from {}: {} frames, {} lost, {} concealed, {} FEC, {} decrypt failures, {:.1} Hz, {:.1} dBFS, latency p50 {:?} ms",
                r.track_id,
                r.user_id,
                r.frames,
                r.lost,
                r.concealed,
                r.fec_recovered,
                r.decrypt_failures,
                r.freq_hz,
                r.level_dbfs,
                r.latency_p50_ms
            );
        }
    }
    for v in listened.video {
        if cli.json {
            println!("{}", serde_json::to_string(&v).unwrap_or_default());
        } else {
            println!(
                "{} from {}: {} frames of {}x{} at {:.1} fps, {} freezes, {} decrypt failures, PSNR {:?} dB, latency p50 {:?} ms",
                v.track_id,
                v.user_id,
                v.frames,
                v.width,
                v.height,
                v.fps,
                v.freezes,
                v.decrypt_failures,
                v.psnr_db.map(|p| (p * 10.0).round() / 10.0),
                v.latency_p50_ms
            );
        }
    }
    match listened.failure {
        Some(reason) => Err(reason.to_string()),
        None => Ok(()),
    }
}
