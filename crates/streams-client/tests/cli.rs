//! The `streams` command line as a new user runs it, against a real bridge on loopback: three keys,
//! a room for two of them with private metadata, listings as each (the outsider sees nothing), a bridge
//! restart, the private metadata read back by a member, and no plaintext in the bridge's files.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use streams_bridge::{Bridge, BridgeConfig, BridgeHandle, SqliteStore, Store, TlsSource};
use streams_proto::{ContextId, UserId};

const STREAMS: &str = env!("CARGO_BIN_EXE_streams");

/// The bot tests send real-time media; on a 2-core machine every test here runs one at a time, so that
/// their frame counts measure the code, not the contention between the processes the tests start.
static REAL_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    REAL_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// `streams` against `bridge` as the holder of `key`; a TLS bridge's certificate is pinned.
fn streams(bridge: &BridgeHandle, key: &Path, args: &[&str]) -> Output {
    streams_command(bridge, key).args(args).output().unwrap()
}

fn streams_command(bridge: &BridgeHandle, key: &Path) -> Command {
    let mut command = Command::new(STREAMS);
    command
        .arg("--bridge")
        .arg(bridge.url())
        .arg("--key")
        .arg(key);
    if let Some(pin) = bridge.cert_fingerprint() {
        command.arg("--bridge-cert-sha256").arg(pin.to_string());
    }
    command
}

fn ok_stdout(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn keygen(path: &Path) -> UserId {
    let out = Command::new(STREAMS)
        .args(["keygen", "--out"])
        .arg(path)
        .output()
        .unwrap();
    UserId::parse(ok_stdout(out).trim()).unwrap()
}

fn start(db: &Path) -> BridgeHandle {
    Bridge::spawn(BridgeConfig {
        db: db.to_path_buf(),
        open: false,
        ..BridgeConfig::ephemeral()
    })
    .unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap()
}

#[test]
fn a_new_user_creates_lists_restarts_and_reads_back() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("bridge.db");
    let (alice_key, bob_key, eve_key) = (
        keys.join("alice.key"),
        keys.join("bob.key"),
        keys.join("eve.key"),
    );
    let alice = keygen(&alice_key);
    let bob = keygen(&bob_key);
    let eve = keygen(&eve_key);
    {
        let mut store = SqliteStore::open(&db).unwrap();
        for user in [&alice, &bob, &eve] {
            store.add_user(user, &ContextId::default(), 0).unwrap();
        }
    }

    let mut bridge = start(&db);
    let room_id = ok_stdout(streams(
        &bridge,
        &alice_key,
        &[
            "room",
            "create",
            "--name",
            "Harbor plans",
            "--user",
            bob.as_str(),
            "--public-meta",
            "map: harbor",
            "--private-meta",
            "meet at the lighthouse",
        ],
    ))
    .trim()
    .to_string();

    for (key, expected) in [(&alice_key, 1), (&bob_key, 1), (&eve_key, 0)] {
        let listing = json(&ok_stdout(streams(
            &bridge,
            key,
            &["room", "list", "--json"],
        )));
        assert_eq!(listing["total"], expected, "{listing}");
        assert_eq!(
            listing["rooms"].as_array().unwrap().len(),
            expected as usize
        );
    }

    // Restart the bridge on the same database (a new port, like a redeploy).
    drop(bridge);
    bridge = start(&db);
    let room = json(&ok_stdout(streams(
        &bridge,
        &bob_key,
        &["room", "get", &room_id, "--json"],
    )));
    assert_eq!(room["name"], "Harbor plans");
    assert_eq!(room["private_meta"], "meet at the lighthouse");
    assert_eq!(room["public_meta"], "map: harbor");
    assert_eq!(room["users"][0], bob.as_str());
    assert_eq!(room["managers"][0], alice.as_str());

    let denied = streams(&bridge, &eve_key, &["room", "get", &room_id]);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("no such room"));

    // Alice removes Bob: a new epoch, and Bob is out.
    let updated = json(&ok_stdout(streams(
        &bridge,
        &alice_key,
        &[
            "room",
            "update",
            &room_id,
            "--remove-user",
            bob.as_str(),
            "--json",
        ],
    )));
    assert_eq!(updated["key_epoch"], 1);
    assert!(
        !streams(&bridge, &bob_key, &["room", "get", &room_id])
            .status
            .success()
    );
    drop(bridge);

    for entry in std::fs::read_dir(&data).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for secret in [&b"meet at the lighthouse"[..], b"Harbor plans"] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret));
        }
    }
}

#[test]
fn events_print_json_lines_and_loose_key_files_are_refused() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bridge.db");
    let (alice_key, bob_key) = (dir.path().join("alice.key"), dir.path().join("bob.key"));
    let alice = keygen(&alice_key);
    let bob = keygen(&bob_key);
    {
        let mut store = SqliteStore::open(&db).unwrap();
        store.add_user(&alice, &ContextId::default(), 0).unwrap();
        store.add_user(&bob, &ContextId::default(), 0).unwrap();
    }
    let bridge = start(&db);

    let mut listener = Command::new(STREAMS)
        .args(["--bridge", &bridge.url(), "--key"])
        .arg(&bob_key)
        .args(["events", "--seconds", "12"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(listener.stdout.take().unwrap()).lines();
    let first = json(&lines.next().unwrap().unwrap());
    assert_eq!(first["event"], "subscribed");

    let room_id = ok_stdout(streams(
        &bridge,
        &alice_key,
        &["room", "create", "--name", "Ops", "--user", bob.as_str()],
    ))
    .trim()
    .to_string();
    // Every line until the listener's 12 s are over: the room's creation exactly once.
    let rest: Vec<serde_json::Value> = lines.map(|l| json(&l.unwrap())).collect();
    assert!(listener.wait().unwrap().success());
    let created: Vec<&serde_json::Value> = rest
        .iter()
        .filter(|v| v["event"] == "room_created")
        .collect();
    assert_eq!(created.len(), 1, "{rest:?}");
    assert_eq!(created[0]["room"]["id"], room_id.as_str());
    assert_eq!(created[0]["room"]["name"], "Ops", "events arrive decrypted");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bob_key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let out = streams(&bridge, &bob_key, &["room", "list"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("chmod 600"), "{err}");
    }
}

/// Signaling over `wss://` with the bridge's self-signed certificate pinned by fingerprint; a wrong
/// pin is refused at once with the fingerprint error.
#[test]
fn a_bot_tone_reaches_a_listener_through_a_bridge_on_wss_with_a_pinned_certificate() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (alice_key, bob_key) = (dir.path().join("alice.key"), dir.path().join("bob.key"));
    let _alice = keygen(&alice_key);
    let bob = keygen(&bob_key);
    let bridge = Bridge::spawn(BridgeConfig {
        tls: Some(TlsSource::SelfSigned {
            dir: dir.path().to_owned(),
            names: vec!["localhost".into()],
        }),
        ..BridgeConfig::ephemeral()
    })
    .unwrap();
    assert!(bridge.url().starts_with("wss://"));
    let wrong = Command::new(STREAMS)
        .args(["--bridge", &bridge.url(), "--key"])
        .arg(&alice_key)
        .args(["--bridge-cert-sha256", &"AB".repeat(32), "room", "list"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && said.contains("fingerprint"),
        "{said}"
    );
    let room_id = ok_stdout(streams(
        &bridge,
        &alice_key,
        &["room", "create", "--name", "Voice", "--user", bob.as_str()],
    ))
    .trim()
    .to_string();

    // The listener starts first; the bot sends 3 s of 440 Hz once its media connection is up (the
    // listener's 8 s leave 5 s for the bot's process to start and connect).
    let listener = streams_command(&bridge, &bob_key)
        .args(["listen", "--room", &room_id, "--seconds", "8", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sent = json(&ok_stdout(streams(
        &bridge,
        &alice_key,
        &[
            "bot",
            "--room",
            &room_id,
            "--tone",
            "440",
            "--seconds",
            "3",
            "--json",
        ],
    )));
    let sent_frames = sent["frames"].as_u64().unwrap();
    assert!(sent_frames >= 140, "{sent}");
    let out = listener.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let tracks: Vec<serde_json::Value> = text.lines().map(json).collect();
    assert_eq!(tracks.len(), 1, "{text}");
    let track = &tracks[0];
    assert_eq!(track["kind"], "audio");
    assert_eq!(track["decrypt_failures"], 0);
    let freq = track["freq_hz"].as_f64().unwrap();
    assert!((freq - 440.0).abs() <= 5.0, "{track}");
    let frames = track["frames"].as_u64().unwrap();
    assert!(
        frames * 10 >= sent_frames * 9,
        "{frames} of {sent_frames}: {track}"
    );
    assert!(track["latency_p50_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_bot_pattern_reaches_a_listener_through_the_bridge() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (alice_key, bob_key) = (dir.path().join("alice.key"), dir.path().join("bob.key"));
    let _alice = keygen(&alice_key);
    let bob = keygen(&bob_key);
    let bridge = Bridge::spawn(BridgeConfig::ephemeral()).unwrap();
    let room_id = ok_stdout(streams(
        &bridge,
        &alice_key,
        &["room", "create", "--name", "Video", "--user", bob.as_str()],
    ))
    .trim()
    .to_string();
    let listener = Command::new(STREAMS)
        .args(["--bridge", &bridge.url(), "--key"])
        .arg(&bob_key)
        .args(["listen", "--room", &room_id, "--seconds", "9", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Video only (no audio option): 4 s of the 640×360 pattern at 30 fps.
    let sent = json(&ok_stdout(streams(
        &bridge,
        &alice_key,
        &[
            "bot",
            "--room",
            &room_id,
            "--video",
            "pattern",
            "--seconds",
            "4",
            "--json",
        ],
    )));
    let sent_frames = sent["video"]["frames"].as_u64().unwrap();
    assert!(sent_frames >= 100, "{sent}");
    assert_eq!(sent["frames"], 0, "no audio track: {sent}");
    let out = listener.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let tracks: Vec<serde_json::Value> = text.lines().map(json).collect();
    assert_eq!(tracks.len(), 1, "{text}");
    let track = &tracks[0];
    assert_eq!(track["kind"], "video");
    assert_eq!(
        (track["width"].as_u64(), track["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert_eq!(track["decrypt_failures"], 0);
    let frames = track["frames"].as_u64().unwrap();
    assert!(
        frames * 10 >= sent_frames * 9,
        "{frames} of {sent_frames}: {track}"
    );
    assert!(track["psnr_db"].as_f64().unwrap() >= 30.0, "{track}");
    assert!(track["fps"].as_f64().unwrap() >= 20.0, "{track}");
    let p50 = track["latency_p50_ms"].as_f64().unwrap();
    let p95 = track["latency_p95_ms"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p95, "{track}");
}

#[test]
fn a_missing_camera_or_display_is_a_clear_error() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("alice.key");
    keygen(&key);
    let bridge = Bridge::spawn(BridgeConfig::ephemeral()).unwrap();
    let room_id = ok_stdout(streams(&bridge, &key, &["room", "create", "--name", "R"]))
        .trim()
        .to_string();
    let out = streams(
        &bridge,
        &key,
        &[
            "bot", "--room", &room_id, "--video", "camera", "--camera", "9",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("camera 9") && err.contains("--video pattern"),
        "{err}"
    );
    let out = Command::new(STREAMS)
        .args(["--bridge", &bridge.url(), "--key"])
        .arg(&key)
        .args(["bot", "--room", &room_id, "--video", "screen"])
        .env("DISPLAY", ":4243")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":4243"), "{err}");
}

#[test]
fn a_bot_recorded_through_the_cli_exports_to_a_file_ffprobe_reads() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (alice_key, bob_key) = (dir.path().join("alice.key"), dir.path().join("bob.key"));
    let _alice = keygen(&alice_key);
    let bob = keygen(&bob_key);
    let bridge = Bridge::spawn(BridgeConfig {
        recordings: Some(dir.path().join("recordings")),
        ..BridgeConfig::ephemeral()
    })
    .unwrap();
    let room_id = ok_stdout(streams(
        &bridge,
        &alice_key,
        &["room", "create", "--name", "Rec", "--user", bob.as_str()],
    ))
    .trim()
    .to_string();
    // The recording's clock starts with it and its last frame comes before the stop: its length lies
    // between the bot's 5 s of media and the time from start to stop.
    let started = std::time::Instant::now();
    ok_stdout(streams(
        &bridge,
        &alice_key,
        &["record", "start", "--room", &room_id],
    ));
    ok_stdout(streams(
        &bridge,
        &alice_key,
        &[
            "bot",
            "--room",
            &room_id,
            "--tone",
            "440",
            "--video",
            "pattern",
            "--seconds",
            "5",
        ],
    ));
    let recorded_for = started.elapsed().as_secs_f64();
    ok_stdout(streams(
        &bridge,
        &alice_key,
        &["record", "stop", "--room", &room_id],
    ));
    let listed = json(&ok_stdout(streams(
        &bridge,
        &bob_key,
        &["--json", "record", "list", "--room", &room_id],
    )));
    let recording = listed["recording_id"].as_str().unwrap().to_string();
    let out = dir.path().join("export");
    let printed = ok_stdout(streams(
        &bridge,
        &bob_key,
        &[
            "export",
            "--room",
            &room_id,
            "--recording",
            &recording,
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    let file = printed.lines().next().expect("a file path").to_string();
    assert!(
        file.ends_with(".mkv") && Path::new(&file).exists(),
        "{printed}"
    );
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name",
        ])
        .args(["-show_entries", "format=duration", "-of", "json", &file])
        .output()
        .expect("ffprobe (apt-get install ffmpeg)");
    let probe = json(&ok_stdout(probe));
    let kinds: Vec<(&str, &str)> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap(),
                s["codec_name"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("audio", "opus")) && kinds.contains(&("video", "h264")),
        "{probe}"
    );
    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (4.5..recorded_for + 0.5).contains(&duration),
        "{duration} s of a recording {recorded_for} s long"
    );
    // An outsider's key exports nothing from the same bridge.
    let carol_key = dir.path().join("carol.key");
    keygen(&carol_key);
    let refused = streams(
        &bridge,
        &carol_key,
        &[
            "export",
            "--room",
            &room_id,
            "--recording",
            &recording,
            "--out",
            "/tmp/none",
        ],
    );
    assert!(!refused.status.success());
}
