//! Media ids: [`StreamId`] (one publisher's media session on the bridge), [`MediaId`] (an m-line's
//! SDP `a=mid`) and [`TrackId`] (a published track: the two together, `"stream:mid"` on the wire).
//! All three are `Copy` and checked when parsed, so a malformed id from the network is refused at
//! the edge and no code matches ids as strings.
use serde::{Deserialize, Serialize};

/// The id of a published stream: the publisher's media session on the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(pub u64);

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A media id (SDP `a=mid`): 1 to [`MediaId::MAX_LEN`] characters of `[A-Za-z0-9_]`, kept inline
/// (what str0m keeps of a mid: it turns any other character into `_`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MediaId {
    len: u8,
    bytes: [u8; MediaId::MAX_LEN],
}

/// An id that does not parse (a media id or a track id).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {text:?}")]
pub struct InvalidMediaId {
    /// Which id it was to be.
    pub kind: &'static str,
    /// What was given.
    pub text: String,
}

impl MediaId {
    /// The longest media id (what WebRTC stacks, str0m among them, accept).
    pub const MAX_LEN: usize = 16;

    /// Parses a media id.
    pub fn parse(text: &str) -> Result<Self, InvalidMediaId> {
        let valid = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(InvalidMediaId {
                kind: "media id",
                text: text.to_string(),
            });
        }
        let mut bytes = [0; Self::MAX_LEN];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Ok(MediaId {
            len: text.len() as u8,
            bytes,
        })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (see `parse`).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// Ordered as text (`"aa" < "b"`).
impl Ord for MediaId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for MediaId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl TryFrom<String> for MediaId {
    type Error = InvalidMediaId;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        MediaId::parse(&text)
    }
}

impl TryFrom<&str> for MediaId {
    type Error = InvalidMediaId;
    fn try_from(text: &str) -> Result<Self, Self::Error> {
        MediaId::parse(text)
    }
}

impl From<MediaId> for String {
    fn from(id: MediaId) -> String {
        id.as_str().to_string()
    }
}

impl std::fmt::Display for MediaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for MediaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MediaId({:?})", self.as_str())
    }
}

/// A published track: the stream that publishes it and its m-line in the publisher's session.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrackId {
    /// The publishing stream.
    pub stream: StreamId,
    /// The m-line it is sent on.
    pub mid: MediaId,
}

impl TrackId {
    /// The track `mid` of `stream`.
    pub fn new(stream: StreamId, mid: MediaId) -> Self {
        TrackId { stream, mid }
    }

    /// Parses the printed form, `"stream:mid"`.
    pub fn parse(text: &str) -> Result<Self, InvalidMediaId> {
        let invalid = || InvalidMediaId {
            kind: "track id",
            text: text.to_string(),
        };
        let (stream, mid) = text.split_once(':').ok_or_else(invalid)?;
        // Digits only (`u64::from_str` would also take a leading '+'), and no leading zero: one
        // track has one printed form.
        if stream.is_empty()
            || !stream.bytes().all(|b| b.is_ascii_digit())
            || (stream.len() > 1 && stream.starts_with('0'))
        {
            return Err(invalid());
        }
        let stream = stream.parse().map_err(|_| invalid())?;
        let mid = MediaId::parse(mid).map_err(|_| invalid())?;
        Ok(TrackId::new(StreamId(stream), mid))
    }
}

impl TryFrom<String> for TrackId {
    type Error = InvalidMediaId;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        TrackId::parse(&text)
    }
}

impl From<TrackId> for String {
    fn from(id: TrackId) -> String {
        id.to_string()
    }
}

impl std::fmt::Display for TrackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.stream, self.mid)
    }
}

impl std::fmt::Debug for TrackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrackId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_track_id_round_trips_through_its_printed_form() {
        let id = TrackId::parse("42:a_1").unwrap();
        assert_eq!(id.stream, StreamId(42));
        assert_eq!(id.mid.as_str(), "a_1");
        assert_eq!(id.to_string(), "42:a_1");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"42:a_1\"");
        assert_eq!(serde_json::from_str::<TrackId>(&json).unwrap(), id);
    }

    #[test]
    fn malformed_ids_are_refused() {
        for text in [
            "",
            "1",
            ":a",
            "1:",
            "x:a",
            "+1:a",
            "-1:a",
            "1:a b",
            "1:a:b",
            "99999999999999999999:a",
            "1:abcdefghijklmnopq",
            "1:a-1",
            "007:a",
        ] {
            assert!(TrackId::parse(text).is_err(), "{text:?} was accepted");
        }
        assert!(MediaId::parse("abcdefghijklmnop").is_ok());
        assert!(TrackId::parse("0:a").is_ok());
        assert!(MediaId::parse("aa").unwrap() < MediaId::parse("b").unwrap());
        assert!(MediaId::parse("é").is_err());
        assert!(serde_json::from_str::<MediaId>("\"a/b\"").is_err());
    }
}
