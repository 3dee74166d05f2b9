//! The audio output path is real-time safe. For ten seconds an output thread renders, like a device
//! callback at 44.1 kHz, both outputs a client has: the positional mix (HRTF, stereo) and the mono
//! mixer. Meanwhile the network side — decrypting frames of two remote members, ending one voice and
//! handing over another, changing a volume, moving the listener — runs on the test's thread. A
//! counting global allocator sees every allocation and free made on the output thread: there must be
//! none, and both outputs must have played the voices.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use streams_client::audio::codec::{FrameDuration, VoiceSettings};
use streams_client::audio::handoff::VoiceOutput;
use streams_client::audio::mixer::Mixer;
use streams_client::audio::output::{MonoOutput, StereoOutput};
use streams_client::audio::source::ToneSource;
use streams_client::audio::spatial::{Hrtf, Pose, SourceParams, SpatialScene};
use streams_client::clock::wall_us_now;
use streams_client::media::voice::{VoiceReceiver, VoiceSender};
use streams_proto::frame_crypto::DeviceSession;
use streams_proto::{Identity, MediaId, RoomSecret, StreamId, TrackId};

/// Counts allocations, reallocations and frees made on threads that watch.
struct Counting;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
}

static SEEN: AtomicU64 = AtomicU64::new(0);

fn note() {
    if WATCHING.try_with(Cell::get).unwrap_or(false) {
        SEEN.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; counting touches only an
// atomic and a const-initialised thread-local without a destructor (neither allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A remote member: the sender of their voice, and the network halves receiving it for each output.
/// The track ids of Alice's and Carol's voices.
fn alice_voice() -> TrackId {
    TrackId::new(StreamId(1), MediaId::parse("a").unwrap())
}

fn carol_voice() -> TrackId {
    TrackId::new(StreamId(3), MediaId::parse("a").unwrap())
}

struct Remote {
    sender: VoiceSender,
    receivers: Vec<VoiceReceiver>,
    frames: u64,
}

impl Remote {
    /// A member sending a tone, received for both outputs (each gets its own playout).
    fn new(tone: f64, secret: &RoomSecret, outputs: &[&VoiceOutput], name: TrackId) -> Remote {
        let member = Identity::generate();
        let encryptor = DeviceSession::random()
            .encryptor(secret, 0, member.user_id(), 0)
            .unwrap();
        let sender = VoiceSender::new(
            Box::new(ToneSource::new(tone, 0.5)),
            VoiceSettings::default(),
            encryptor,
        )
        .unwrap();
        let receivers = outputs
            .iter()
            .map(|output| {
                let (mut receiver, playout) =
                    VoiceReceiver::new(member.user_id().clone(), FrameDuration::Ms20).unwrap();
                receiver.add_epoch(0, secret.clone(), wall_us_now());
                output.hand_over(name, playout).unwrap();
                receiver
            })
            .collect();
        Remote {
            sender,
            receivers,
            frames: 0,
        }
    }

    /// Sends the frames due by `elapsed` (20 ms each) to every receiver.
    fn send_due(&mut self, elapsed: Duration) {
        while self.frames * 20 <= elapsed.as_millis() as u64 {
            let now = wall_us_now();
            let frame = self.sender.next_frame(now).unwrap();
            for receiver in &mut self.receivers {
                receiver.accept(now, frame.clone());
            }
            self.frames += 1;
        }
    }
}

#[test]
fn ten_seconds_of_remote_voices_render_without_one_allocation_on_the_output_thread() {
    let hrtf = Hrtf::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../assets/hrtf/mit_kemar_normal_pinna.sofa"),
    )
    .unwrap();
    let (scene_output, scene_inbox) = VoiceOutput::new();
    let (mono_output, mono_inbox) = VoiceOutput::new();
    let (mut scene, mut mix) = SpatialScene::new(Some(Arc::new(hrtf)));
    let mut mono = Mixer::new(mono_inbox);

    // The output thread: 10 ms of 44.1 kHz audio from each output every 10 ms, as device
    // callbacks would ask for it; everything it does is watched.
    let stop = Arc::new(AtomicBool::new(false));
    let device = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut stereo_out = StereoOutput::new(44_100);
            let mut mono_out = MonoOutput::new(44_100);
            let mut stereo = vec![0.0f32; 2 * 441];
            let mut single = vec![0.0f32; 441];
            let (mut loudest_stereo, mut loudest_mono, mut periods) = (0.0f32, 0.0f32, 0u32);
            let start = Instant::now();
            WATCHING.set(true);
            while !stop.load(Ordering::Relaxed) {
                stereo_out.render(&mut mix, &mut stereo, 2);
                mono_out.render(&mut mono, &mut single, 1);
                for s in &stereo {
                    loudest_stereo = loudest_stereo.max(s.abs());
                }
                for s in &single {
                    loudest_mono = loudest_mono.max(s.abs());
                }
                periods += 1;
                let due = start + Duration::from_millis(10) * periods;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            WATCHING.set(false);
            (loudest_stereo, loudest_mono, periods, mono)
        })
    };

    // The network and game side.
    let secret = RoomSecret::random();
    let outputs = [&scene_output, &mono_output];
    let mut alice = Some(Remote::new(440.0, &secret, &outputs, alice_voice()));
    let mut carol: Option<Remote> = None;
    let mut turned_down = false;
    let params = SourceParams {
        position: [2.0, 0.0, 0.0],
        ..SourceParams::default()
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let elapsed = start.elapsed();
        if let Some(alice) = alice.as_mut() {
            alice.send_due(elapsed);
        }
        if let Some(carol) = carol.as_mut() {
            carol.send_due(elapsed);
        }
        // At 4 s Alice's voice ends and Carol's begins; at 6 s Carol is turned down.
        if elapsed >= Duration::from_secs(4) && carol.is_none() {
            alice = None;
            carol = Some(Remote::new(660.0, &secret, &outputs, carol_voice()));
        }
        if elapsed >= Duration::from_secs(6)
            && !turned_down
            && let Some(carol) = carol.as_mut()
        {
            for receiver in &mut carol.receivers {
                receiver.set_volume(0.5, false);
            }
            turned_down = true;
        }
        // A game frame: the listener turns, the scene places the voices.
        let turn = elapsed.as_secs_f32();
        scene.adopt(&scene_inbox, params);
        scene.set_listener(Pose {
            forward: [turn.sin(), 0.0, -turn.cos()],
            ..Pose::default()
        });
        scene.update();
        mono_output.collect_retired();
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let (loudest_stereo, loudest_mono, periods, mono) = device.join().unwrap();

    assert_eq!(
        SEEN.load(Ordering::Relaxed),
        0,
        "allocations or frees on the output thread"
    );
    assert!(periods >= 900, "the output ran for 10 s: {periods} periods");
    assert!(
        loudest_stereo > 0.1,
        "the positional mix played: {loudest_stereo}"
    );
    assert!(loudest_mono > 0.1, "the mono mix played: {loudest_mono}");
    // Alice's ended voices came back from the outputs and were freed on this side.
    let ids = scene.ids();
    assert_eq!(ids, [carol_voice()], "{ids:?}");
    assert_eq!(mono.track_ids().count(), 1);
}
