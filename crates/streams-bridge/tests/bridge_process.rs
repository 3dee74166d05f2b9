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
use streams_proto::{ContextId, Identity};

const BIN: &str = env!("CARGO_BIN_EXE_streams-bridge");

struct Running {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // A bridge left running would outlive the test (and hold its stdout open).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the binary and waits for its "listening" log line.
fn start(data_dir: &Path, port: u16) -> Running {
    let mut child = Command::new(BIN)
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--media-listen", "127.0.0.1:0"])
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
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = ready_tx.send(());
            }
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("bridge did not start listening");
    Running { child, log }
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
    client.wait_connected(Duration::from_secs(5)).unwrap();
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
    let port = free_port();
    let mut bridge = start(data.path(), port);
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
    let port = free_port();
    let mut bridge = start(data.path(), port);
    let b = client(port, &bob);
    b.subscribe(EventScope::Context(ContextId::default()))
        .unwrap();

    bridge.child.kill().unwrap();
    let _ = bridge.child.wait();
    let mut saw_disconnect = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
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
    b.wait_connected(Duration::from_secs(10)).unwrap();
    let a = client(port, &alice);
    let room = create_room(&a, "after restart", &[bob.user_id()]);
    // Bob's context subscription was renewed on reconnect, so the event reaches him.
    let event = wait_event(
        &b,
        Duration::from_secs(5),
        |ev| matches!(ev, RoomEvent::Created(r) if r.id == room.id),
    );
    assert!(event.is_some());
}
