//! RFC 4571 framing: how ICE-TCP (RFC 6544) carries datagrams (STUN, DTLS, SRTP) on a TCP stream,
//! each preceded by its length as two big-endian bytes (or, for a protocol that delimits its own
//! messages, nothing: [`Framing::Raw`]). [`FrameReader`] rebuilds the datagrams
//! from whatever pieces the stream delivers; [`frame_header`] is what goes before one sent.

/// How datagrams travel on a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Each after its length (RFC 4571): ICE-TCP.
    Rfc4571,
    /// As they are: what is read is handed on as it comes, for a protocol that delimits its own
    /// messages (a TURN client's stream to its server, RFC 8656 §6.2).
    Raw,
}

/// The longest datagram a frame can carry (its length is 16 bits).
pub const MAX_FRAME: usize = u16::MAX as usize;

/// The two bytes that precede `len` bytes of datagram on the stream; `None` if it is longer than
/// [`MAX_FRAME`].
pub fn frame_header(len: usize) -> Option<[u8; 2]> {
    u16::try_from(len).ok().map(u16::to_be_bytes)
}

/// What one read of an unframed stream takes at most.
const RAW_READ: usize = 16 << 10;

/// Rebuilds datagrams from a TCP stream's bytes. Holds at most one frame and its header
/// (64 KiB), whatever the peer sends. For an unframed stream ([`Framing::Raw`]) it hands on each
/// read as it is.
#[derive(Debug, Default)]
pub struct FrameReader {
    raw: bool,
    /// The frame being read, its header included (grown as frames need).
    buffer: Vec<u8>,
    /// How many bytes of it have been read.
    len: usize,
}

impl FrameReader {
    /// A reader of streams framed as `framing` says.
    pub fn new(framing: Framing) -> Self {
        FrameReader {
            raw: framing == Framing::Raw,
            ..FrameReader::default()
        }
    }

    /// Where the next bytes read from the stream go: at most what completes the current header
    /// or frame, so a read never takes bytes of the next frame.
    pub fn space(&mut self) -> &mut [u8] {
        if self.raw {
            self.buffer.resize(RAW_READ, 0);
            return &mut self.buffer;
        }
        if self.complete() {
            self.len = 0;
        }
        let end = self.len + self.wanted();
        if self.buffer.len() < end {
            self.buffer.resize(end, 0);
        }
        &mut self.buffer[self.len..end]
    }

    /// `n` bytes were read into [`FrameReader::space`]; returns the datagram they complete, if
    /// they do. (An empty frame completes nothing: it is skipped.)
    pub fn filled(&mut self, n: usize) -> Option<&[u8]> {
        if self.raw {
            return (n > 0).then(|| &self.buffer[..n.min(self.buffer.len())]);
        }
        self.len += n.min(self.wanted());
        if !self.complete() {
            return None;
        }
        if self.len == 2 {
            self.len = 0;
            return None;
        }
        Some(&self.buffer[2..self.len])
    }

    /// The length the current frame's header declares, once both bytes are in.
    fn declared(&self) -> Option<usize> {
        (self.len >= 2).then(|| usize::from(u16::from_be_bytes([self.buffer[0], self.buffer[1]])))
    }

    /// Whether the current frame is all in (handed out by the last [`FrameReader::filled`]).
    fn complete(&self) -> bool {
        self.declared()
            .is_some_and(|declared| self.len == 2 + declared)
    }

    /// How many more bytes the current header or frame needs.
    fn wanted(&self) -> usize {
        match self.declared() {
            None => 2 - self.len,
            Some(declared) => 2 + declared - self.len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(datagrams: &[&[u8]]) -> Vec<u8> {
        let mut stream = Vec::new();
        for d in datagrams {
            stream.extend(frame_header(d.len()).unwrap());
            stream.extend(*d);
        }
        stream
    }

    /// Feeds `stream` to a reader in reads of at most `piece` bytes; returns the datagrams.
    fn read_in_pieces(stream: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut reader = FrameReader::default();
        let mut out = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let space = reader.space();
            let n = space.len().min(piece).min(stream.len() - at);
            space[..n].copy_from_slice(&stream[at..at + n]);
            at += n;
            if let Some(d) = reader.filled(n) {
                out.push(d.to_vec());
            }
        }
        out
    }

    #[test]
    fn datagrams_come_back_whole_however_the_stream_is_cut() {
        let big = vec![7u8; MAX_FRAME];
        let datagrams: [&[u8]; 4] = [b"stun", &[1, 2, 3], &big, b"x"];
        let stream = framed(&datagrams);
        for piece in [1, 2, 3, 1000, usize::MAX] {
            let got = read_in_pieces(&stream, piece);
            assert_eq!(got.len(), 4, "pieces of {piece}");
            for (got, sent) in got.iter().zip(datagrams) {
                assert_eq!(got.as_slice(), sent, "pieces of {piece}");
            }
        }
    }

    #[test]
    fn a_read_never_takes_bytes_of_the_next_frame() {
        let mut reader = FrameReader::default();
        assert_eq!(reader.space().len(), 2);
        reader.space()[..2].copy_from_slice(&[0, 3]);
        assert!(reader.filled(2).is_none());
        assert_eq!(reader.space().len(), 3);
    }

    #[test]
    fn a_raw_stream_is_handed_on_as_read() {
        let mut reader = FrameReader::new(Framing::Raw);
        let space = reader.space();
        assert_eq!(space.len(), RAW_READ);
        space[..3].copy_from_slice(b"abc");
        assert_eq!(reader.filled(3), Some(&b"abc"[..]));
        reader.space()[..1].copy_from_slice(b"d");
        assert_eq!(reader.filled(1), Some(&b"d"[..]));
        assert_eq!(reader.filled(0), None);
    }

    #[test]
    fn empty_frames_are_skipped_and_too_long_ones_cannot_be_sent() {
        let stream = framed(&[b"", b"ok"]);
        assert_eq!(read_in_pieces(&stream, 64), vec![b"ok".to_vec()]);
        assert_eq!(frame_header(MAX_FRAME + 1), None);
        assert_eq!(frame_header(258), Some([1, 2]));
    }
}
