//! Video through the bridge, end to end with the real engine: the test pattern arrives decoded in
//! order with good PSNR; a late subscriber's first picture comes from the keyframe its PLI asked for;
//! under 5% random loss (nftables) the picture keeps coming; a removed member cannot open frames of
//! the new epoch.
mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::media::until_a_second_after;
use common::nft::NftLoss;
use common::*;
use streams_client::StreamsClient;
use streams_client::clock::wall_us_now;
use streams_client::media::voice_session::{
    Listened, Publication, PublishReport, listen_media_while, publish,
};
use streams_client::video::VideoSource;
use streams_client::video::codec::VideoSettings;
use streams_client::video::pattern::{PatternSource, read_stamp};
use streams_client::video::receiver::VideoReceiver;
use streams_client::video::sender::VideoSender;
use streams_client::{Room, RoomUpdate};
use streams_proto::Identity;
use streams_proto::frame_crypto::DeviceSession;
use streams_proto::wire::TrackKind;

/// These tests run real-time media; on a 2-core machine they run one at a time.
static REAL_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    REAL_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

const WIDTH: usize = 320;
const HEIGHT: usize = 240;
const FPS: u32 = 30;

fn pattern_publication(size: (usize, usize), keyframe_interval: Option<u32>) -> Publication {
    let source = PatternSource::new(size.0, size.1, FPS).unwrap();
    let mut settings = VideoSettings::for_picture(size.0, size.1, FPS);
    settings.keyframe_interval = keyframe_interval;
    Publication {
        audio: None,
        video: Some((Box::new(source), settings, TrackKind::Video)),
    }
}

struct Pair {
    bridge: TestBridge,
    alice: Identity,
    bob: Identity,
    a: StreamsClient,
    b: StreamsClient,
    room: Room,
}

fn pair() -> Pair {
    pair_with(&[])
}

/// Alice and Bob in a room, on a bridge where `others` are registered too.
fn pair_with(others: &[&Identity]) -> Pair {
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let mut users = vec![&alice, &bob];
    users.extend_from_slice(others);
    let bridge = bridge_with_users(&users);
    let url = bridge.handle.url();
    let (a, b) = (connect(&url, &alice), connect(&url, &bob));
    let room = create_room(&a, "video", &[bob.user_id()]);
    Pair {
        bridge,
        alice,
        bob,
        a,
        b,
        room,
    }
}

/// Alice publishes the pattern for `publish_for` of media; Bob starts listening once she has sent
/// `join_after` frames (0: at once, before her media is up) and stops a second after she is done.
/// Both are counted in frames and from her media connection, not in wall time from the start, so a
/// busy machine makes the run slower, not different.
fn run(
    pair: &Pair,
    size: (usize, usize),
    keyframe_interval: Option<u32>,
    join_after: u64,
    publish_for: Duration,
) -> (PublishReport, Listened) {
    let url = pair.bridge.handle.url();
    let (join_tx, join_rx) = std::sync::mpsc::channel::<()>();
    let published: Mutex<Option<Instant>> = Mutex::new(None);
    std::thread::scope(|scope| {
        let (url, published) = (&url, &published);
        let listener = scope.spawn(move || {
            join_rx
                .recv()
                .expect("Alice sent the frames Bob joins after");
            let until = until_a_second_after(published);
            listen_media_while(&pair.b, &pair.bob, url, &pair.room.id, &until).unwrap()
        });
        let mut join = Some(join_tx);
        let mut progress = |report: &PublishReport| {
            let sent = report.video.as_ref().map_or(0, |v| v.frames);
            if sent >= join_after
                && let Some(join) = join.take()
            {
                let _ = join.send(());
            }
        };
        progress(&PublishReport::default());
        let sent = publish(
            &pair.a,
            &pair.alice,
            url,
            &pair.room.id,
            pattern_publication(size, keyframe_interval),
            publish_for,
            &mut progress,
        )
        .unwrap();
        *published.lock().unwrap() = Some(Instant::now());
        (sent, listener.join().unwrap())
    })
}

#[test]
fn the_pattern_arrives_decoded_in_order_with_good_psnr() {
    let _serial = one_at_a_time();
    let pair = pair();
    let (sent, heard) = run(&pair, (WIDTH, HEIGHT), None, 0, Duration::from_secs(3));
    let sent = sent.video.expect("a video track was published");
    assert!(sent.frames >= 75, "{sent:?}");
    assert_eq!(heard.video.len(), 1, "{heard:?}");
    let track = &heard.video[0];
    let pattern = track.pattern.as_ref().expect("the pattern's stamps read");
    assert_eq!((track.width, track.height), (WIDTH, HEIGHT));
    assert_eq!(track.decrypt_failures, 0, "{track:?}");
    assert_eq!(
        pattern.out_of_order, 0,
        "frame numbers only increase: {track:?}"
    );
    // Counted from the first picture: before it Bob waits for the keyframe his PLI asked for.
    let first = u64::from(pattern.first_frame.unwrap());
    let since_first = sent.frames.saturating_sub(first);
    assert!(
        first < sent.frames / 2,
        "the first picture came at frame {first}: {track:?}"
    );
    assert!(
        pattern.distinct_frames * 10 >= since_first * 9,
        "{} of {since_first} frames since the first picture: {track:?}",
        pattern.distinct_frames,
    );
    assert!(track.psnr_db.unwrap() >= 30.0, "{track:?}");
    assert!(pattern.psnr_min_db.unwrap() >= 30.0, "{track:?}");
    let latency = track.latency_p50_ms.unwrap();
    assert!(latency > 0.0 && latency < 500.0, "{track:?}");
}

#[test]
fn a_late_subscriber_starts_from_the_keyframe_its_request_produced() {
    let _serial = one_at_a_time();
    let pair = pair();
    // No periodic keyframes: after the first, only requests make one. Bob joins two seconds of
    // frames in.
    let (sent, heard) = run(&pair, (WIDTH, HEIGHT), None, 60, Duration::from_secs(6));
    let sent = sent.video.unwrap();
    let track = &heard.video[0];
    let pattern = track.pattern.as_ref().expect("pictures decoded");
    let forwarded = pair.bridge.handle.keyframe_requests_forwarded();
    assert!(track.keyframe_requests >= 1, "{track:?}");
    assert!(forwarded >= 1, "the bridge passed the request on");
    // A picture dropped on the way out (the engine fell behind its capture) restarts the stream
    // with a keyframe too.
    assert!(
        sent.keyframes >= 2 && sent.keyframes <= 1 + forwarded + sent.dropped,
        "the first keyframe plus requested ones only: {sent:?}, {forwarded} forwarded"
    );
    // Bob joined 60 frames in: his first picture (read from its pixels) is from then, not frame 0.
    let first = pattern.first_frame.unwrap();
    assert!(first >= 45, "first decoded frame {first}: {track:?}");
    assert!(pattern.latency_p50_ms.unwrap() < 500.0, "{track:?}");
    assert!(pattern.distinct_frames >= 30, "{track:?}");
}

#[test]
fn under_five_percent_loss_the_picture_keeps_coming() {
    let _serial = one_at_a_time();
    let pair = pair();
    let loss = NftLoss::from_port(pair.bridge.handle.media_addr().port(), 5)
        .expect("nftables loss rule (needs root and nftables)");
    // 640×360: about 1 Mbit/s, so 5% of the packets is dozens of losses, some inside keyframes.
    let (sent, heard) = run(&pair, (640, 360), None, 0, Duration::from_secs(6));
    let dropped = loss.dropped();
    drop(loss);
    let sent = sent.video.unwrap();
    let track = &heard.video[0];
    let pattern = track.pattern.as_ref().unwrap();
    assert!(dropped >= 10, "the rule dropped {dropped} packets");
    assert_eq!(track.decrypt_failures, 0, "{track:?}");
    // NACK repairs most losses; what it cannot is bridged by a requested keyframe. Counted from the
    // first picture: before it the subscriber waits for the keyframe its PLI asked for (and the
    // PLI itself may be lost on the way to the publisher).
    let first = u64::from(pattern.first_frame.unwrap());
    let since_first = sent.frames.saturating_sub(first);
    assert!(
        first < sent.frames / 2,
        "the first picture came at frame {first}: {track:?}"
    );
    assert!(
        pattern.distinct_frames * 10 >= since_first * 8,
        "{} of {since_first} frames since the first picture: {track:?}",
        pattern.distinct_frames,
    );
    assert!(
        pattern.last_frame.unwrap() + 15 >= sent.frames as u32,
        "pictures came to the end: {track:?}"
    );
    assert!(track.freezes <= 6, "{track:?}");
    assert!(track.psnr_db.unwrap() >= 30.0, "{track:?}");
    println!(
        "5% loss: {dropped} packets dropped, {} of {} frames, {} freezes, {} keyframe requests, {} skipped",
        pattern.distinct_frames, sent.frames, track.freezes, track.keyframe_requests, track.skipped
    );
}

#[test]
fn a_removed_member_cannot_open_video_of_the_new_epoch() {
    let _serial = one_at_a_time();
    let carol = Identity::generate();
    let pair = pair_with(&[&carol]);
    let mut add = RoomUpdate::new(pair.room.id.clone());
    add.add_users = vec![carol.user_id().clone()];
    pair.a.update_room(add).unwrap();
    let mut remove = RoomUpdate::new(pair.room.id.clone());
    remove.remove_users = vec![carol.user_id().clone()];
    let updated = pair.a.update_room(remove).unwrap();
    let epoch = updated.key_epoch;
    let latest = updated.record.latest().unwrap();
    assert!(latest.unwrap_secret(&carol).is_err(), "no key for Carol");
    let new_secret = latest.unwrap_secret(&pair.alice).unwrap();

    // Alice's frames of the new epoch.
    let encryptor = DeviceSession::random()
        .encryptor(&new_secret, epoch, pair.alice.user_id(), 1)
        .unwrap();
    let source: Box<dyn VideoSource> = Box::new(PatternSource::new(WIDTH, HEIGHT, FPS).unwrap());
    let mut sender = VideoSender::start(
        source,
        VideoSettings::for_picture(WIDTH, HEIGHT, FPS),
        encryptor,
        Box::new(|| {}),
    )
    .unwrap();
    let mut frames = Vec::new();
    while frames.len() < 10 {
        frames.extend(sender.poll().unwrap());
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(sender);

    // Carol holds every secret she ever had, even under the new epoch's number: nothing opens.
    let carols_old = updated
        .record
        .epochs
        .iter()
        .find_map(|e| e.unwrap_secret(&carol).ok())
        .expect("Carol had an epoch");
    let mut carols = VideoReceiver::new(
        pair.alice.user_id().clone(),
        streams_proto::TrackId::parse("1:x").unwrap(),
        false,
        None,
    )
    .unwrap();
    carols.add_epoch(epoch, carols_old);
    // Bob, still a member, opens the same frames.
    let mut bobs = VideoReceiver::new(
        pair.alice.user_id().clone(),
        streams_proto::TrackId::parse("1:x").unwrap(),
        false,
        None,
    )
    .unwrap();
    bobs.add_epoch(epoch, latest.unwrap_secret(&pair.bob).unwrap());
    for frame in &frames {
        carols.accept(wall_us_now(), &frame.data);
        bobs.accept(wall_us_now(), &frame.data);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while bobs.stats().frames < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(bobs.stats().frames, 10, "{:?}", bobs.stats());
    let (_, latest_picture) = bobs.slot().newer_than(0).unwrap();
    // The pattern's tenth picture, or a later one if a stall dropped one on the way out.
    assert!(read_stamp(&latest_picture.picture).unwrap().frame >= 9);
    assert_eq!(carols.stats().frames, 0);
    assert_eq!(carols.stats().decrypt_failures, 10, "{:?}", carols.stats());
    // And the frames carry no picture the bridge could read: no H.264 start of an IDR in clear.
    assert!(
        frames
            .iter()
            .all(|f| !f.data[5..].windows(4).any(|w| w == [0, 0, 0, 1]))
    );
}
