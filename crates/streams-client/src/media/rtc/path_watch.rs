//! [`PathWatch`]: whether the media path of a connection that was up still works, from what
//! arrives on it. Two failures are told apart:
//! - nothing at all arrives (a cut, a dead Wi-Fi): [`PeerEvent::PathLost`] after
//!   [`DEAD_PATH_AFTER`], [`PeerEvent::PathBack`] when anything is heard again;
//! - the bridge answers the connection's checks but the media it was receiving stopped coming
//!   ([`PeerEvent::MediaSilent`]): what a NAT rebinding looks like from inside it. The checks
//!   reach the bridge from the new mapping and are answered there, but the bridge (ICE lite, which
//!   keeps its pair while a new one ranks the same) still sends media to the old mapping.
//!
//! Only a connection that receives media is watched for the second (a publisher hears only
//! reports, seconds apart). Media that stops for a reason of its own (the last remote track gone,
//! a muted sender that sends nothing) is reported once too, and not again until media comes back:
//! the engine answers it with a fresh UDP socket (a move like any other, a round trip's gap at
//! most), and only when its media goes straight over UDP (not over TCP or a relay).
use std::time::{Duration, Instant};

use super::PeerEvent;

/// Nothing heard from the bridge for this long on a connection that was up: the path is taken for
/// dead ([`PeerEvent::PathLost`]); two or more consent checks went unanswered.
pub const DEAD_PATH_AFTER: Duration = Duration::from_secs(1);

/// Checks answered but no media for this long: [`PeerEvent::MediaSilent`].
pub const MEDIA_SILENT_AFTER: Duration = Duration::from_secs(1);

/// What arrived on a connection, and what has been reported of it.
#[derive(Debug, Default)]
pub(super) struct PathWatch {
    /// When the bridge was last heard (an accepted datagram).
    last_heard: Option<Instant>,
    /// When a media frame last arrived.
    last_media: Option<Instant>,
    /// [`PeerEvent::PathLost`] was reported and nothing has been heard since.
    path_lost: bool,
    /// [`PeerEvent::MediaSilent`] was reported and no media has arrived since.
    media_silent: bool,
}

impl PathWatch {
    /// A datagram of the connection arrived; the event it ends a silence with, if it does.
    pub(super) fn heard(&mut self, now: Instant) -> Option<PeerEvent> {
        let back = self.path_lost.then(|| {
            let after = self.last_heard.map_or(Duration::ZERO, |at| now - at);
            tracing::info!("the media path is back after {after:?}");
            // Media gets its second from now to follow.
            if self.last_media.is_some() {
                self.last_media = Some(now);
            }
            PeerEvent::PathBack { after }
        });
        self.path_lost = false;
        self.last_heard = Some(now);
        back
    }

    /// A media frame arrived.
    pub(super) fn media(&mut self, now: Instant) {
        self.last_media = Some(now);
        self.media_silent = false;
    }

    /// Time passed on a connection that is up (`watched`); what has gone silent since.
    pub(super) fn check(&mut self, now: Instant, watched: bool) -> Option<PeerEvent> {
        if !watched {
            return None;
        }
        if let Some(dead) = self.dead_at().filter(|at| now >= *at) {
            self.path_lost = true;
            let quiet = now - (dead - DEAD_PATH_AFTER);
            tracing::warn!("nothing from the bridge for {quiet:?}: the media path seems dead");
            return Some(PeerEvent::PathLost);
        }
        if let Some(silent) = self.media_silent_at().filter(|at| now >= *at) {
            self.media_silent = true;
            let quiet = now - (silent - MEDIA_SILENT_AFTER);
            tracing::warn!("the bridge answers but sent no media for {quiet:?}");
            return Some(PeerEvent::MediaSilent);
        }
        None
    }

    /// When [`PathWatch::check`] has something to look at next.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        match (self.dead_at(), self.media_silent_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn dead_at(&self) -> Option<Instant> {
        self.last_heard
            .filter(|_| !self.path_lost)
            .map(|at| at + DEAD_PATH_AFTER)
    }

    fn media_silent_at(&self) -> Option<Instant> {
        self.last_media
            .filter(|_| !self.media_silent && !self.path_lost)
            .map(|at| at + MEDIA_SILENT_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silence_is_reported_once_and_its_end_once() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut watch = PathWatch::default();
        assert!(watch.heard(at(0)).is_none());
        watch.media(at(0));
        assert!(watch.check(at(999), true).is_none());
        assert!(matches!(
            watch.check(at(1000), true),
            Some(PeerEvent::PathLost)
        ));
        assert!(watch.check(at(5000), true).is_none(), "once");
        assert_eq!(watch.next_timeout(), None);
        match watch.heard(at(3000)) {
            Some(PeerEvent::PathBack { after }) => assert_eq!(after, Duration::from_secs(3)),
            other => panic!("{other:?}"),
        }
        // Checks answered, media not (a second from the path's return): silent once.
        assert!(watch.heard(at(3400)).is_none());
        assert!(watch.check(at(3999), true).is_none());
        assert!(matches!(
            watch.check(at(4000), true),
            Some(PeerEvent::MediaSilent)
        ));
        assert!(watch.heard(at(4300)).is_none());
        assert!(watch.check(at(4800), true).is_none(), "not again");
        watch.media(at(4600));
        assert!(watch.heard(at(5200)).is_none());
        assert!(matches!(
            watch.check(at(5600), true),
            Some(PeerEvent::MediaSilent)
        ));
    }

    #[test]
    fn nothing_is_watched_before_media_or_while_down() {
        let t0 = Instant::now();
        let mut watch = PathWatch::default();
        assert_eq!(watch.next_timeout(), None);
        watch.heard(t0);
        assert!(watch.check(t0 + Duration::from_secs(5), false).is_none());
        assert!(matches!(
            watch.check(t0 + Duration::from_secs(5), true),
            Some(PeerEvent::PathLost)
        ));
    }
}
