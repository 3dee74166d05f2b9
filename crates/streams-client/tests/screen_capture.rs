//! Screen sharing's capture under Xvfb (CI installs it): what is drawn on the display — a window and a
//! filled rectangle, in known colours — is what the screen source returns, for the whole screen and
//! for the one window.
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use streams_client::video::VideoSource;
use streams_client::video::screen::{ScreenSource, ScreenTarget};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    ConnectionExt, CreateGCAux, CreateWindowAux, Rectangle, WindowClass,
};

/// A private X server; killed on drop.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    /// Starts Xvfb on a display it picks itself (`-displayfd`: it writes the number once it accepts
    /// connections, so there is neither a guess that can collide with another server nor a wait), and
    /// without the reset an X server does when its last client leaves (`-noreset`), which would drop a
    /// connection made in that moment.
    fn start() -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-noreset", "-nolisten", "tcp"])
            .args(["-screen", "0", "320x240x24"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (apt-get install xvfb)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("Xvfb's display number");
        let number: u32 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("Xvfb did not start (it printed {line:?})"));
        Xvfb {
            child,
            display: format!(":{number}"),
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn luma_at(frame: &streams_client::video::I420Frame, x: usize, y: usize) -> u8 {
    frame.luma()[y * frame.width() + x]
}

#[test]
fn the_screen_source_returns_what_was_drawn_on_the_display() {
    let xvfb = Xvfb::start();
    let (conn, screen) = x11rb::connect(Some(&xvfb.display)).unwrap();
    let root = conn.setup().roots[screen].root;
    let window = conn.generate_id().unwrap();
    conn.create_window(
        x11rb::COPY_DEPTH_FROM_PARENT,
        window,
        root,
        40,
        40,
        100,
        80,
        0,
        WindowClass::INPUT_OUTPUT,
        0,
        &CreateWindowAux::new()
            .background_pixel(0xff_ffff)
            .override_redirect(1),
    )
    .unwrap();
    conn.map_window(window).unwrap();
    conn.get_input_focus().unwrap().reply().unwrap();
    let gc = conn.generate_id().unwrap();
    conn.create_gc(gc, window, &CreateGCAux::new().foreground(0xff_0000))
        .unwrap();
    conn.poly_fill_rectangle(
        window,
        gc,
        &[Rectangle {
            x: 20,
            y: 20,
            width: 40,
            height: 30,
        }],
    )
    .unwrap();
    conn.get_input_focus().unwrap().reply().unwrap();

    let mut whole = ScreenSource::open(Some(&xvfb.display), ScreenTarget::Screen, 10).unwrap();
    assert_eq!(whole.size(), (320, 240));
    let frame = whole.next_frame(0).unwrap();
    // Black root, white window, red rectangle (BT.601 limited range: 16, 235, 81).
    let near = |v: u8, want: u8| v.abs_diff(want) <= 3;
    assert!(near(luma_at(&frame, 10, 10), 16), "root");
    assert!(near(luma_at(&frame, 45, 45), 235), "window");
    assert!(near(luma_at(&frame, 70, 70), 81), "red rectangle");
    assert!(near(luma_at(&frame, 200, 200), 16), "root again");
    let v_plane = &frame.as_bytes()[320 * 240 + 160 * 120..];
    assert!(v_plane[35 * 160 + 35] > 200, "red has high V");

    let mut one =
        ScreenSource::open(Some(&xvfb.display), ScreenTarget::Window(window), 10).unwrap();
    assert_eq!(one.size(), (100, 80));
    let frame = one.next_frame(0).unwrap();
    assert!(near(luma_at(&frame, 5, 5), 235));
    assert!(near(luma_at(&frame, 30, 30), 81));
    assert!(one.describe().contains(&xvfb.display));

    // When the display goes away (the server has exited once the drop returns), capture fails with an
    // error rather than a panic.
    drop(conn);
    drop(xvfb);
    assert!(whole.next_frame(0).is_err());
}
