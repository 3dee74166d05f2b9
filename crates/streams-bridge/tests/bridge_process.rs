//! The `streams-bridge` binary as an operator runs it: registration, restart, kill -9, reconnecting
//! clients, and no private plaintext on disk or in its logs.
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use streams_client::{ClientConfig, ClientEvent, ConnectionState, RoomEvent, StreamsClient};
use streams_proto::wire::EventScope;
use streams_proto::{CertFingerprint, ContextId, Identity};

const BIN: &str = env!("CARGO_BIN_EXE_streams-bridge");

struct Running {
    child: Child,
    log: Arc<Mutex<String>>,
    /// The WebSocket port it listens on.
    port: u16,
    /// The TLS certificate's fingerprint, as its start-up log prints it.
    fingerprint: Option<CertFingerprint>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // A bridge left running would outlive the test (and hold its stdout open).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on `port` (0: one the kernel picks, so parallel tests never collide) and waits
/// for its "listening on" log line, which says the port.
fn start(data_dir: &Path, port: u16) -> Running {
    start_with(data_dir, port, &[])
}

/// [`start`] with more arguments; with TLS, the fingerprint line comes before the listening line.
fn start_with(data_dir: &Path, port: u16, args: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--media-listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(&log);
    let tls = args.contains(&"--tls-self-signed");
    std::thread::spawn(move || {
        let mut port = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some((_, rest)) = line.split_once("://127.0.0.1:") {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                port = digits.parse::<u16>().ok();
                if !tls {
                    let _ = ready_tx.send((port, None));
                }
            }
            if let Some((_, printed)) = line.split_once("SHA-256 fingerprint: ") {
                let _ = ready_tx.send((port, CertFingerprint::parse(printed.trim()).ok()));
            }
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let (port, fingerprint) = ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("bridge did not start listening");
    let port = port.expect("the listening line names the port");
    assert_eq!(
        fingerprint.is_some(),
        tls,
        "the fingerprint is printed with TLS"
    );
    Running {
        child,
        log,
        port,
        fingerprint,
    }
}

fn users_add(data_dir: &Path, identity: &Identity) {
    let out = Command::new(BIN)
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(["users", "add", identity.user_id().as_str()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn client(port: u16, identity: &Identity) -> StreamsClient {
    let mut config = ClientConfig::new(format!("ws://127.0.0.1:{port}"), identity.clone());
    config.backoff = streams_client::backoff::Backoff::new(
        Duration::from_millis(50),
        Duration::from_millis(400),
    );
    let client = StreamsClient::start(config).unwrap();
    client.wait_connected(Duration::from_secs(30)).unwrap();
    client
}

#[test]
fn rooms_survive_restart_and_kill_9_without_plaintext_on_disk() {
    let data = tempfile::tempdir().unwrap();
    let (alice, bob, eve) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    for user in [&alice, &bob, &eve] {
        users_add(data.path(), user);
    }
    let mut bridge = start(data.path(), 0);
    let port = bridge.port;
    let room = {
        let a = client(port, &alice);
        create_room(&a, "Persistent", &[bob.user_id()])
    };
    // A clean stop, then a restart.
    let _ = Command::new("kill")
        .args(["-INT", &bridge.child.id().to_string()])
        .status();
    let _ = bridge.child.wait();
    let mut log = bridge.log.lock().unwrap().clone();
    drop(bridge);
    bridge = start(data.path(), port);
    {
        let b = client(port, &bob);
        let seen = b.get_room(&room.id).unwrap();
        assert_eq!(
            seen.private_meta(),
            Some(&b"private plan of Persistent"[..])
        );
        // An update is committed, then the process is killed without warning.
        let mut update = streams_client::RoomUpdate::new(room.id.clone());
        update.private_meta = Some(b"written before the crash".to_vec());
        assert!(
            b.update_room(update).is_err(),
            "plain users may not update by default"
        );
        let a = client(port, &alice);
        let mut update = streams_client::RoomUpdate::new(room.id.clone());
        update.private_meta = Some(b"written before the crash".to_vec());
        a.update_room(update).unwrap();
    }
    bridge.child.kill().unwrap(); // SIGKILL
    let _ = bridge.child.wait();
    log.push_str(&bridge.log.lock().unwrap());
    drop(bridge);
    bridge = start(data.path(), port);
    {
        let b = client(port, &bob);
        let seen = b.get_room(&room.id).unwrap();
        assert_eq!(seen.private_meta(), Some(&b"written before the crash"[..]));
        assert_eq!(seen.version, 2);
        let e = client(port, &eve);
        assert_eq!(e.list_rooms(None, Default::default()).unwrap().total, 0);
    }
    bridge.child.kill().unwrap();
    let _ = bridge.child.wait();
    log.push_str(&bridge.log.lock().unwrap());

    assert!(log.contains("client authenticated"), "logs were captured");
    for secret in [
        &b"private plan of Persistent"[..],
        b"written before the crash",
        b"Persistent",
    ] {
        assert!(!dir_contains(data.path(), secret), "plaintext on disk");
        assert!(
            !log.as_bytes().windows(secret.len()).any(|w| w == secret),
            "plaintext in logs"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for entry in std::fs::read_dir(data.path()).unwrap() {
            let mode = entry.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "store files are owner-only");
        }
    }
}

#[test]
fn clients_reconnect_and_resubscribe_after_the_bridge_restarts() {
    let data = tempfile::tempdir().unwrap();
    let (alice, bob) = (Identity::generate(), Identity::generate());
    users_add(data.path(), &alice);
    users_add(data.path(), &bob);
    let bridge = start(data.path(), 0);
    let port = bridge.port;
    // Bob is in a dozen rooms, joined and subscribed to each, and to the context's room events:
    // restoring all that takes a couple of dozen round trips after the reconnect.
    let rooms: Vec<_> = {
        let a = client(port, &alice);
        (0..12)
            .map(|i| create_room(&a, &format!("room {i}"), &[bob.user_id()]))
            .collect()
    };
    let b = client(port, &bob);
    for room in &rooms {
        b.subscribe(EventScope::Room(room.id.clone())).unwrap();
        b.join_room(&room.id).unwrap();
    }
    b.subscribe(EventScope::Context(ContextId::default()))
        .unwrap();

    drop(bridge); // SIGKILL
    let mut saw_disconnect = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(ClientEvent::Connection(ConnectionState::Disconnected { .. })) =
            b.events().recv_timeout(Duration::from_millis(500))
        {
            saw_disconnect = true;
            break;
        }
    }
    assert!(saw_disconnect, "bob notices the bridge is gone");
    // While the bridge is down, operations fail with a typed error instead of hanging.
    let err = b.get_room(&streams_proto::RoomId::random()).unwrap_err();
    assert!(
        matches!(
            err,
            streams_client::ClientError::Disconnected(_) | streams_client::ClientError::Timeout
        ),
        "{err:?}"
    );

    let _bridge = start(data.path(), port);
    // Alice is connected before Bob is, so the room is created the moment Bob reports himself
    // connected: every subscription and join must be renewed by then.
    let a = client(port, &alice);
    b.wait_connected(Duration::from_secs(30)).unwrap();
    let room = create_room(&a, "after restart", &[bob.user_id()]);
    let event = wait_event(
        &b,
        Duration::from_secs(30),
        |ev| matches!(ev, RoomEvent::Created(r) if r.id == room.id),
    );
    assert!(
        event.is_some(),
        "the room created right after the reconnect is announced"
    );
    for room in &rooms {
        let present = a.participants(&room.id).unwrap();
        assert!(present.contains(bob.user_id()), "bob rejoined {}", room.id);
    }
}

#[test]
fn a_self_signed_bridge_prints_its_fingerprint_and_keeps_it_across_restarts() {
    let data = tempfile::tempdir().unwrap();
    let alice = Identity::generate();
    users_add(data.path(), &alice);
    let bridge = start_with(data.path(), 0, &["--tls-self-signed"]);
    let (port, pin) = (bridge.port, bridge.fingerprint.unwrap());
    drop(bridge);
    let bridge = start_with(data.path(), port, &["--tls-self-signed"]);
    assert_eq!(
        bridge.fingerprint,
        Some(pin),
        "the same certificate after a restart"
    );
    assert!(
        bridge
            .log
            .lock()
            .unwrap()
            .contains(&format!("wss://127.0.0.1:{port}"))
    );
    let mut config = ClientConfig::new(format!("wss://127.0.0.1:{port}"), alice.clone());
    config.tls = streams_client::TlsTrust::Pinned(pin);
    let client = StreamsClient::start(config).unwrap();
    assert_eq!(
        &client.wait_connected(Duration::from_secs(30)).unwrap(),
        alice.user_id()
    );
}
