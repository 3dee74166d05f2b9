//! A small Matroska (`.mkv`) muxer, written by hand, for what a recording holds: H.264 video as
//! OpenH264 emits it (Annex B access units) and Opus audio packets. It owns the EBML encoding, the
//! H.264 conversions a Matroska file needs (Annex B to 4-byte length prefixes, SPS/PPS to an `avcC`
//! record), the `OpusHead` of the audio track, when clusters start, and the fix-ups done at the end.
//!
//! The file it writes, element by element (IDs in hex):
//!
//! - `EBML` (1A45DFA3): `EBMLVersion` (4286) 1, `EBMLReadVersion` (42F7) 1, `EBMLMaxIDLength` (42F2)
//!   4, `EBMLMaxSizeLength` (42F3) 8, `DocType` (4282) "matroska", `DocTypeVersion` (4287) 4,
//!   `DocTypeReadVersion` (4285) 2.
//! - `Segment` (18538067), written with an unknown size and given its real size in a fixed 8-byte
//!   length by [`MatroskaWriter::finish`]. In it:
//!   - `SeekHead` (114D9B74): one `Seek` (4DBB) {`SeekID` (53AB), `SeekPosition` (53AC)} for `Info`,
//!     `Tracks` and (when written) `Cues`. Its room is reserved as a `Void` (EC) at the start and
//!     filled in by `finish`, the rest of the room staying a `Void`.
//!   - `Info` (1549A966): `TimestampScale` (2AD7B1) 1 000 000 (timestamps are milliseconds),
//!     `MuxingApp` (4D80) and `WritingApp` (5741) "bevy_streams", `Title` (7BA9), `Duration` (4489,
//!     an 8-byte float in milliseconds, written by `finish`; a file without blocks gets a `Void`
//!     there instead, since a Duration must be positive).
//!   - `Tracks` (1654AE6B): one `TrackEntry` (AE) per track with `TrackNumber` (D7), `TrackUID`
//!     (73C5, equal to the number), `TrackType` (83), `FlagLacing` (9C) 0, `CodecID` (86) and
//!     `CodecPrivate` (63A2). Video is track 1: "V_MPEG4/ISO/AVC", the `avcC` record, `Video` (E0)
//!     {`PixelWidth` (B0), `PixelHeight` (BA)}. Audio is track 2 (1 without video): "A_OPUS", a
//!     19-byte `OpusHead` (RFC 7845 §5.1, mapping family 0), `CodecDelay` (56AA, the pre-skip in ns),
//!     `SeekPreRoll` (56BB) 80 ms, `Audio` (E1) {`SamplingFrequency` (B5, float), `Channels` (9F)}.
//!   - `Cluster` (1F43B675)s: `Timestamp` (E7), then `SimpleBlock` (A3)s, each the track number as a
//!     vint, an i16 timestamp relative to the cluster, flags (0x80 for a keyframe; every Opus packet
//!     is one; no lacing) and one frame (video: 4-byte length-prefixed NAL units).
//!   - `Cues` (1C53BB6B), when there is anything to index: one `CuePoint` (BB) {`CueTime` (B3),
//!     `CueTrackPositions` (B7) {`CueTrack` (F7), `CueClusterPosition` (F1), `CueRelativePosition`
//!     (F0)}} per video keyframe or, in a file without video, per cluster (its first audio block).
//!
//! A cluster starts at the first block, at a video keyframe once the cluster is at least 1 s long,
//! whenever a block would land 5 s or more after the cluster's timestamp (so relative timestamps stay
//! far inside i16), and once a cluster holds 32 MiB. Each cluster is buffered in memory until the next
//! one starts.
//!
//! Ordering: timestamps must be non-decreasing across all writes, both tracks together (the exporter
//! merges the tracks by time); a block earlier than the one before is refused with
//! [`MatroskaError::TimeWentBack`] and leaves the file as it was.
use std::io::{Seek, SeekFrom, Write};

// Element IDs, with their marker bits, as they appear in the file.
const EBML: u32 = 0x1A45_DFA3;
const EBML_VERSION: u32 = 0x4286;
const EBML_READ_VERSION: u32 = 0x42F7;
const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
const DOC_TYPE: u32 = 0x4282;
const DOC_TYPE_VERSION: u32 = 0x4287;
const DOC_TYPE_READ_VERSION: u32 = 0x4285;
const VOID: u32 = 0xEC;
const SEGMENT: u32 = 0x1853_8067;
const SEEK_HEAD: u32 = 0x114D_9B74;
const SEEK: u32 = 0x4DBB;
const SEEK_ID: u32 = 0x53AB;
const SEEK_POSITION: u32 = 0x53AC;
const INFO: u32 = 0x1549_A966;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const MUXING_APP: u32 = 0x4D80;
const WRITING_APP: u32 = 0x5741;
const TITLE: u32 = 0x7BA9;
const DURATION: u32 = 0x4489;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_UID: u32 = 0x73C5;
const TRACK_TYPE: u32 = 0x83;
const FLAG_LACING: u32 = 0x9C;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const CODEC_DELAY: u32 = 0x56AA;
const SEEK_PRE_ROLL: u32 = 0x56BB;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const AUDIO: u32 = 0xE1;
const SAMPLING_FREQUENCY: u32 = 0xB5;
const CHANNELS: u32 = 0x9F;
const CLUSTER: u32 = 0x1F43_B675;
const TIMESTAMP: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;
const CUES: u32 = 0x1C53_BB6B;
const CUE_POINT: u32 = 0xBB;
const CUE_TIME: u32 = 0xB3;
const CUE_TRACK_POSITIONS: u32 = 0xB7;
const CUE_TRACK: u32 = 0xF7;
const CUE_CLUSTER_POSITION: u32 = 0xF1;
const CUE_RELATIVE_POSITION: u32 = 0xF0;

const TRACK_TYPE_VIDEO: u64 = 1;
const TRACK_TYPE_AUDIO: u64 = 2;
/// An 8-byte size with all value bits set: "unknown size".
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
/// Bytes reserved after the Segment start for the SeekHead (three entries need at most 68).
const SEEK_HEAD_ROOM: usize = 96;
/// A cluster is closed before a block would land this many ms (or more) after its timestamp.
const CLUSTER_MAX_MS: u64 = 5_000;
/// A video keyframe starts a new cluster once the current one is at least this many ms long.
const KEYFRAME_CLUSTER_MS: u64 = 1_000;
/// A cluster is also closed once it buffers this many bytes (bounds the memory a cluster takes).
const CLUSTER_MAX_BYTES: usize = 32 << 20;
/// The largest frame accepted (far beyond any real picture or packet).
const MAX_FRAME_BYTES: usize = 1 << 30;
/// Opus timestamps and pre-skip are always counted at 48 kHz (RFC 7845 §4).
const OPUS_RATE: u64 = 48_000;
/// Opus needs 80 ms of decoding before a seek target to converge (RFC 7845 §4.6).
const OPUS_SEEK_PRE_ROLL_NS: u64 = 80_000_000;

/// A Matroska file could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MatroskaError {
    /// Writing or seeking the output failed.
    #[error("writing the Matroska file: {0}")]
    Io(#[from] std::io::Error),
    /// The access unit holds no SPS or no PPS, so there is nothing to build an `avcC` record from.
    #[error("no H.264 parameter sets (SPS and PPS) in the access unit")]
    NoParameterSets,
    /// A block came earlier than the block written before it (times must not decrease).
    #[error("{track} block at {time_ms} ms comes after a block at {last_ms} ms")]
    TimeWentBack {
        /// The track of the refused block: "video" or "audio".
        track: &'static str,
        /// Its timestamp, ms.
        time_ms: u64,
        /// The timestamp of the last block written, ms.
        last_ms: u64,
    },
    /// A block for a track the file does not have: "video" or "audio".
    #[error("the file has no {0} track")]
    NoTrack(&'static str),
    /// A block with nothing in it (no NAL unit, or an empty Opus packet): "video" or "audio".
    #[error("empty {0} frame")]
    EmptyFrame(&'static str),
    /// The track descriptions (or a frame) cannot go into a Matroska file.
    #[error("invalid: {0}")]
    Invalid(String),
    /// An earlier write failed, so the output is incomplete; nothing more is written.
    #[error("an earlier write failed; the output is incomplete")]
    Failed,
}

/// The H.264 video track.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoTrack {
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// The `avcC` record (ISO 14496-15 AVCDecoderConfigurationRecord), e.g. from
    /// [`avc_config_from_annexb`].
    pub avc_config: Vec<u8>,
}

/// The Opus audio track. The writer builds its `OpusHead` (mapping family 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioTrack {
    /// The sample rate of the encoder's input, Hz (48 000 in this crate; Opus decodes at 48 kHz).
    pub sample_rate: u32,
    /// 1 or 2.
    pub channels: u8,
    /// Samples (at 48 kHz) a decoder drops at the start: the encoder's look-ahead.
    pub pre_skip: u16,
}

// ---------------------------------------------------------------------------------------------
// EBML encoding.

/// Bytes a vint needs for `value`: `n` bytes carry up to 2^(7n) − 2 (all ones means "unknown").
fn vint_width(value: u64) -> usize {
    (1..8)
        .find(|&width| value < (1u64 << (7 * width)) - 1)
        .unwrap_or(8)
}

/// Writes `value` as a vint of `width` bytes (the caller makes sure it fits: at most 2^56 − 2).
fn put_vint(buf: &mut Vec<u8>, value: u64, width: usize) {
    let marked = value | (1u64 << (7 * width));
    buf.extend_from_slice(&marked.to_be_bytes()[8 - width..]);
}

/// Writes an element size in the fewest bytes.
fn put_size(buf: &mut Vec<u8>, size: usize) {
    let size = size as u64;
    put_vint(buf, size, vint_width(size));
}

/// Writes an element ID (its marker bit included, so it is just its bytes without leading zeros).
fn put_id(buf: &mut Vec<u8>, id: u32) {
    let skip = (id.leading_zeros() / 8).min(3) as usize;
    buf.extend_from_slice(&id.to_be_bytes()[skip..]);
}

/// Writes an element holding `body`; returns where the body starts in `buf`.
fn put_element(buf: &mut Vec<u8>, id: u32, body: &[u8]) -> usize {
    put_id(buf, id);
    put_size(buf, body.len());
    let start = buf.len();
    buf.extend_from_slice(body);
    start
}

/// Writes an unsigned integer element in the fewest bytes (at least one).
fn put_uint(buf: &mut Vec<u8>, id: u32, value: u64) {
    let width = (8 - (value.leading_zeros() / 8) as usize).max(1);
    put_element(buf, id, &value.to_be_bytes()[8 - width..]);
}

/// Writes an 8-byte float element; returns where the float starts in `buf`.
fn put_float(buf: &mut Vec<u8>, id: u32, value: f64) -> usize {
    put_element(buf, id, &value.to_be_bytes())
}

/// Writes a `Void` element of exactly `total` bytes (`total` ≥ 2).
fn put_void(buf: &mut Vec<u8>, total: usize) {
    put_id(buf, VOID);
    // An 8-byte size whenever there is room for one, so every total from 9 up works.
    let (width, fill) = if total >= 9 {
        (8, total - 9)
    } else {
        (1, total.saturating_sub(2))
    };
    put_vint(buf, fill as u64, width);
    buf.resize(buf.len() + fill, 0);
}

// ---------------------------------------------------------------------------------------------
// H.264.

/// The NAL units of an Annex B byte stream, without start codes or trailing zero bytes. Bytes before
/// the first start code are not a NAL unit and are ignored.
fn nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new(); // (where the 00 00 01 starts, where the NAL unit starts)
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .filter_map(|(k, &(_, from))| {
            let to = starts.get(k + 1).map_or(data.len(), |&(next, _)| next);
            let mut nal = &data[from..to];
            // The zero of a 4-byte start code (and any trailing_zero_8bits) is not part of it.
            while let [rest @ .., 0] = nal {
                nal = rest;
            }
            (!nal.is_empty()).then_some(nal)
        })
        .collect()
}

/// Converts an Annex B access unit (start codes `00 00 01` or `00 00 00 01`) to the NAL units
/// each prefixed by its length in 4 big-endian bytes, the form Matroska (and MP4) store. Every NAL
/// unit is kept, parameter sets and delimiters included (in-band SPS/PPS are harmless and let a
/// decoder follow a mid-stream change). Bytes before the first start code are dropped; input
/// without a start code gives an empty result.
pub fn annexb_to_length_prefixed(access_unit: &[u8]) -> Vec<u8> {
    let nals = nal_units(access_unit);
    let mut out = Vec::with_capacity(access_unit.len() + 4 * nals.len());
    for nal in nals {
        // A NAL unit over 4 GiB cannot be described; no encoder makes one.
        let Ok(length) = u32::try_from(nal.len()) else {
            continue;
        };
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

/// Builds the `avcC` record (ISO 14496-15 AVCDecoderConfigurationRecord, 4-byte NAL lengths) from an
/// Annex B access unit that holds the SPS and PPS, such as a keyframe from OpenH264. Profile,
/// compatibility and level come from the first SPS; repeated parameter sets are stored once. For
/// profiles other than Baseline, Main and Extended, the chroma format and bit depths are read from
/// the SPS and appended as the record requires.
///
/// Errors with [`MatroskaError::NoParameterSets`] when there is no usable SPS or no PPS.
pub fn avc_config_from_annexb(access_unit: &[u8]) -> Result<Vec<u8>, MatroskaError> {
    let mut sps: Vec<&[u8]> = Vec::new();
    let mut pps: Vec<&[u8]> = Vec::new();
    for nal in nal_units(access_unit) {
        // The forbidden zero bit set: not H.264.
        if nal[0] & 0x80 != 0 || nal.len() > usize::from(u16::MAX) {
            continue;
        }
        let (list, min_len) = match nal[0] & 0x1F {
            7 => (&mut sps, 4), // header, profile, compatibility, level at least
            8 => (&mut pps, 2),
            _ => continue,
        };
        if nal.len() >= min_len && !list.contains(&nal) {
            list.push(nal);
        }
    }
    // The record counts SPS in 5 bits and PPS in 8.
    sps.truncate(31);
    pps.truncate(255);
    let Some(first) = sps.first().copied() else {
        return Err(MatroskaError::NoParameterSets);
    };
    if pps.is_empty() {
        return Err(MatroskaError::NoParameterSets);
    }
    let mut record = vec![
        1, // configurationVersion
        first[1],
        first[2],
        first[3],
        0xFC | 3, // reserved bits, lengthSizeMinusOne = 3
        0xE0 | sps.len() as u8,
    ];
    for set in &sps {
        record.extend_from_slice(&(set.len() as u16).to_be_bytes());
        record.extend_from_slice(set);
    }
    record.push(pps.len() as u8);
    for set in &pps {
        record.extend_from_slice(&(set.len() as u16).to_be_bytes());
        record.extend_from_slice(set);
    }
    if !matches!(first[1], 66 | 77 | 88) {
        let (chroma_format, luma_depth, chroma_depth) = sps_format(first).unwrap_or((1, 0, 0));
        record.extend_from_slice(&[
            0xFC | (chroma_format & 3) as u8,
            0xF8 | (luma_depth & 7) as u8,
            0xF8 | (chroma_depth & 7) as u8,
            0, // numOfSequenceParameterSetExt
        ]);
    }
    Ok(record)
}

/// Reads bits of an RBSP, most significant first.
struct BitReader {
    data: Vec<u8>,
    position: usize,
}

impl BitReader {
    /// Reads the RBSP of NAL unit bytes (emulation prevention bytes removed).
    fn from_nal_bytes(bytes: &[u8]) -> Self {
        let mut data = Vec::with_capacity(bytes.len());
        let mut zeros = 0;
        for &byte in bytes {
            if zeros >= 2 && byte == 3 {
                zeros = 0;
                continue;
            }
            zeros = if byte == 0 { zeros + 1 } else { 0 };
            data.push(byte);
        }
        BitReader { data, position: 0 }
    }

    fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.position / 8)?;
        let bit = (byte >> (7 - self.position % 8)) & 1;
        self.position += 1;
        Some(u32::from(bit))
    }

    /// An unsigned Exp-Golomb number, ue(v).
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let mut value: u64 = 0;
        for _ in 0..zeros {
            value = (value << 1) | u64::from(self.bit()?);
        }
        u32::try_from((1u64 << zeros) - 1 + value).ok()
    }
}

/// (chroma_format_idc, bit_depth_luma_minus8, bit_depth_chroma_minus8) of an SPS NAL unit: read for
/// the profiles whose SPS carry them, the defaults (4:2:0, 8 bits) for the others.
fn sps_format(sps: &[u8]) -> Option<(u32, u32, u32)> {
    let profile = *sps.get(1)?;
    if !matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        return Some((1, 0, 0));
    }
    let mut bits = BitReader::from_nal_bytes(sps.get(1..)?);
    bits.position = 24; // profile_idc, constraint flags, level_idc
    bits.ue()?; // seq_parameter_set_id
    let chroma_format = bits.ue()?;
    if chroma_format == 3 {
        bits.bit()?; // separate_colour_plane_flag
    }
    let luma_depth = bits.ue()?;
    let chroma_depth = bits.ue()?;
    Some((chroma_format, luma_depth, chroma_depth))
}

// ---------------------------------------------------------------------------------------------
// Opus.

/// The 19-byte identification header of RFC 7845 §5.1, channel mapping family 0, no output gain.
fn opus_head(audio: &AudioTrack) -> Vec<u8> {
    let mut head = Vec::with_capacity(19);
    head.extend_from_slice(b"OpusHead");
    head.push(1); // version
    head.push(audio.channels);
    head.extend_from_slice(&audio.pre_skip.to_le_bytes());
    head.extend_from_slice(&audio.sample_rate.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes()); // output gain
    head.push(0); // channel mapping family
    head
}

/// How much audio an Opus packet holds, µs, from its TOC byte (RFC 6716 §3.1). `None` when the packet
/// is too short to say.
fn opus_packet_duration_us(packet: &[u8]) -> Option<u64> {
    let toc = *packet.first()?;
    let config = usize::from(toc >> 3);
    let frame_us: u64 = match config {
        0..=11 => [10_000, 20_000, 40_000, 60_000][config & 3], // SILK
        12..=15 => [10_000, 20_000][config & 1],                // hybrid
        _ => [2_500, 5_000, 10_000, 20_000][config & 3],        // CELT
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u64::from(*packet.get(1)? & 0x3F),
    };
    Some(frame_us * frames)
}

// ---------------------------------------------------------------------------------------------
// The writer.

/// A cue to write: a block worth seeking to.
#[derive(Clone, Copy, Debug)]
struct Cue {
    time_ms: u64,
    track: u64,
    /// The cluster's position from the start of the Segment's data.
    cluster_position: u64,
    /// The block's position from the start of the cluster's data.
    relative_position: u64,
}

/// The cluster being filled.
struct Cluster {
    timestamp: u64,
    /// Its data so far: the Timestamp element, then the blocks.
    body: Vec<u8>,
    blocks: usize,
    /// Cues for its blocks: (time, track, position in `body`).
    cues: Vec<(u64, u64, u64)>,
}

/// Writes one Matroska file: headers at [`MatroskaWriter::new`], blocks as they come (a cluster at a
/// time), and the sizes, duration, cues and seek head at [`MatroskaWriter::finish`]. A writer dropped
/// without `finish` leaves a file with an unknown-size Segment and without its last cluster.
///
/// Timestamps must be non-decreasing across all calls, both tracks together (see the module docs).
/// The output may already hold data: the file starts at its position when the writer is made.
pub struct MatroskaWriter<W: Write + Seek> {
    out: W,
    /// Position of the output where the file starts.
    base: u64,
    /// Bytes written since `base`.
    written: u64,
    /// Where (from `base`) the Segment's 8-byte size is.
    segment_size_at: u64,
    /// Where (from `base`) the Segment's data starts: positions in the file are counted from here.
    segment_data_at: u64,
    /// Where (from `base`) the room for the SeekHead is.
    seek_head_at: u64,
    /// Where (from `base`) the Duration's float is.
    duration_at: u64,
    /// Info and Tracks, from the start of the Segment's data.
    info_position: u64,
    tracks_position: u64,
    video_track: Option<u64>,
    audio_track: Option<u64>,
    /// Opus pre-skip, ms.
    codec_delay_ms: f64,
    cluster: Option<Cluster>,
    cues: Vec<Cue>,
    /// The time of the last block written.
    last_ms: Option<u64>,
    last_video_ms: Option<u64>,
    /// The shortest gap between two video blocks: taken as the length of the last picture.
    video_period_ms: Option<u64>,
    /// Where the audio written so far ends, ms of presentation time.
    audio_end_ms: f64,
    failed: bool,
}

impl<W: Write + Seek> MatroskaWriter<W> {
    /// Starts a file in `out` (at its current position) with these tracks and writes its headers:
    /// video is track 1, audio track 2 (1 without video). At least one track is needed; the video
    /// size must not be zero, the `avcC` record must look like one (version 1, at least 7 bytes) and
    /// the audio must have 1 or 2 channels and a sample rate.
    pub fn new(
        mut out: W,
        title: &str,
        video: Option<VideoTrack>,
        audio: Option<AudioTrack>,
    ) -> Result<Self, MatroskaError> {
        check_tracks(video.as_ref(), audio.as_ref())?;
        let base = out.stream_position()?;
        let mut head = Vec::with_capacity(256);

        let mut ebml = Vec::new();
        put_uint(&mut ebml, EBML_VERSION, 1);
        put_uint(&mut ebml, EBML_READ_VERSION, 1);
        put_uint(&mut ebml, EBML_MAX_ID_LENGTH, 4);
        put_uint(&mut ebml, EBML_MAX_SIZE_LENGTH, 8);
        put_element(&mut ebml, DOC_TYPE, b"matroska");
        put_uint(&mut ebml, DOC_TYPE_VERSION, 4);
        put_uint(&mut ebml, DOC_TYPE_READ_VERSION, 2);
        put_element(&mut head, EBML, &ebml);

        put_id(&mut head, SEGMENT);
        let segment_size_at = head.len();
        head.extend_from_slice(&UNKNOWN_SIZE);
        let segment_data_at = head.len();

        let seek_head_at = head.len();
        put_void(&mut head, SEEK_HEAD_ROOM);

        let info_position = head.len() - segment_data_at;
        let mut info = Vec::new();
        put_uint(&mut info, TIMESTAMP_SCALE, 1_000_000);
        put_element(&mut info, MUXING_APP, b"bevy_streams");
        put_element(&mut info, WRITING_APP, b"bevy_streams");
        put_element(&mut info, TITLE, title.as_bytes());
        let duration_in_info = put_float(&mut info, DURATION, 0.0);
        let info_body_at = put_element(&mut head, INFO, &info);
        let duration_at = info_body_at + duration_in_info;

        let tracks_position = head.len() - segment_data_at;
        let mut tracks = Vec::new();
        let mut number = 0;
        let video_track = video.as_ref().map(|video| {
            number += 1;
            put_element(&mut tracks, TRACK_ENTRY, &video_entry(number, video));
            number
        });
        let audio_track = audio.as_ref().map(|audio| {
            number += 1;
            put_element(&mut tracks, TRACK_ENTRY, &audio_entry(number, audio));
            number
        });
        put_element(&mut head, TRACKS, &tracks);

        let codec_delay_ms = audio
            .as_ref()
            .map_or(0.0, |a| f64::from(a.pre_skip) * 1000.0 / OPUS_RATE as f64);
        let mut writer = MatroskaWriter {
            out,
            base,
            written: 0,
            segment_size_at: segment_size_at as u64,
            segment_data_at: segment_data_at as u64,
            seek_head_at: seek_head_at as u64,
            duration_at: duration_at as u64,
            info_position: info_position as u64,
            tracks_position: tracks_position as u64,
            video_track,
            audio_track,
            codec_delay_ms,
            cluster: None,
            cues: Vec::new(),
            last_ms: None,
            last_video_ms: None,
            video_period_ms: None,
            audio_end_ms: 0.0,
            failed: false,
        };
        writer.put(&head)?;
        Ok(writer)
    }

    /// Writes one H.264 access unit (Annex B, as the encoder gave it) at `time_ms` from the start of
    /// the file; `keyframe` marks an IDR picture (the first picture should be one: players show
    /// nothing before it). `time_ms` must not be earlier than the last block written, of either track
    /// ([`MatroskaError::TimeWentBack`] otherwise); an access unit without NAL units is
    /// [`MatroskaError::EmptyFrame`]. A refused block leaves the file as it was.
    pub fn write_video(
        &mut self,
        time_ms: u64,
        keyframe: bool,
        annexb_access_unit: &[u8],
    ) -> Result<(), MatroskaError> {
        let track = self.video_track.ok_or(MatroskaError::NoTrack("video"))?;
        self.check_block("video", time_ms, annexb_access_unit.len())?;
        let frame = annexb_to_length_prefixed(annexb_access_unit);
        if frame.is_empty() {
            return Err(MatroskaError::EmptyFrame("video"));
        }
        self.add_block(track, time_ms, keyframe, true, &frame)?;
        if let Some(last) = self.last_video_ms
            && time_ms > last
        {
            let gap = time_ms - last;
            self.video_period_ms = Some(self.video_period_ms.map_or(gap, |p| p.min(gap)));
        }
        self.last_video_ms = Some(time_ms);
        Ok(())
    }

    /// Writes one Opus packet at `time_ms` from the start of the file: the time of the first sample
    /// given to the encoder for it (the track's `CodecDelay` tells players to drop the pre-skip, which
    /// lines the decoded audio up with that time). The same ordering rule as
    /// [`MatroskaWriter::write_video`]; an empty packet is [`MatroskaError::EmptyFrame`].
    pub fn write_audio(&mut self, time_ms: u64, opus_packet: &[u8]) -> Result<(), MatroskaError> {
        let track = self.audio_track.ok_or(MatroskaError::NoTrack("audio"))?;
        self.check_block("audio", time_ms, opus_packet.len())?;
        if opus_packet.is_empty() {
            return Err(MatroskaError::EmptyFrame("audio"));
        }
        self.add_block(track, time_ms, true, false, opus_packet)?;
        let length_ms = opus_packet_duration_us(opus_packet).unwrap_or(0) as f64 / 1000.0;
        let end = time_ms as f64 + length_ms - self.codec_delay_ms;
        self.audio_end_ms = self.audio_end_ms.max(end);
        Ok(())
    }

    /// Ends the file: writes the last cluster and the Cues, then seeks back to write the Duration
    /// (the end of the last picture or of the last audio, whichever is later), the SeekHead and the
    /// Segment's size, and leaves the output at the end of the file, flushed.
    pub fn finish(mut self) -> Result<W, MatroskaError> {
        if self.failed {
            return Err(MatroskaError::Failed);
        }
        self.flush_cluster()?;
        let cues_position = if self.cues.is_empty() {
            None
        } else {
            let position = self.written - self.segment_data_at;
            let cues = self.cues_element();
            self.put(&cues)?;
            Some(position)
        };
        let end = self.written;

        let duration = self.duration_ms();
        if duration > 0.0 {
            self.patch(self.duration_at, &duration.to_be_bytes())?;
        } else {
            // No blocks: a Duration must be positive, so the element becomes a Void.
            let mut void = Vec::new();
            put_void(&mut void, 2 + 1 + 8);
            self.patch(self.duration_at - 3, &void)?;
        }

        let mut seeks = Vec::new();
        let entries = [
            Some((INFO, self.info_position)),
            Some((TRACKS, self.tracks_position)),
            cues_position.map(|p| (CUES, p)),
        ];
        for (id, position) in entries.into_iter().flatten() {
            let mut seek = Vec::new();
            put_element(&mut seek, SEEK_ID, &id.to_be_bytes());
            put_uint(&mut seek, SEEK_POSITION, position);
            put_element(&mut seeks, SEEK, &seek);
        }
        let mut seek_head = Vec::with_capacity(SEEK_HEAD_ROOM);
        put_element(&mut seek_head, SEEK_HEAD, &seeks);
        let left = SEEK_HEAD_ROOM.checked_sub(seek_head.len());
        match left {
            Some(0) => {}
            Some(left) if left >= 2 => put_void(&mut seek_head, left),
            _ => {
                return Err(MatroskaError::Invalid(format!(
                    "a SeekHead of {} bytes does not fit its {SEEK_HEAD_ROOM}",
                    seek_head.len()
                )));
            }
        }
        self.patch(self.seek_head_at, &seek_head)?;

        let mut size = Vec::with_capacity(8);
        put_vint(&mut size, end - self.segment_data_at, 8);
        self.patch(self.segment_size_at, &size)?;

        self.out.seek(SeekFrom::Start(self.base + end))?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Refuses a block before anything is written: after a failure, out of order, or too large.
    fn check_block(
        &self,
        track: &'static str,
        time_ms: u64,
        length: usize,
    ) -> Result<(), MatroskaError> {
        if self.failed {
            return Err(MatroskaError::Failed);
        }
        if let Some(last_ms) = self.last_ms
            && time_ms < last_ms
        {
            return Err(MatroskaError::TimeWentBack {
                track,
                time_ms,
                last_ms,
            });
        }
        if length > MAX_FRAME_BYTES {
            return Err(MatroskaError::Invalid(format!(
                "a {track} frame of {length} bytes"
            )));
        }
        Ok(())
    }

    /// Adds a SimpleBlock, first closing the cluster if the block should start a new one.
    fn add_block(
        &mut self,
        track: u64,
        time_ms: u64,
        keyframe: bool,
        video: bool,
        frame: &[u8],
    ) -> Result<(), MatroskaError> {
        let new_cluster = self.cluster.as_ref().is_none_or(|cluster| {
            let since = time_ms - cluster.timestamp;
            since > i16::MAX as u64
                || since >= CLUSTER_MAX_MS
                || (video && keyframe && since >= KEYFRAME_CLUSTER_MS)
                || cluster.body.len() >= CLUSTER_MAX_BYTES
        });
        if new_cluster {
            self.flush_cluster()?;
        }
        let has_video = self.video_track.is_some();
        let cluster = self.cluster.get_or_insert_with(|| {
            let mut body = Vec::new();
            put_uint(&mut body, TIMESTAMP, time_ms);
            Cluster {
                timestamp: time_ms,
                body,
                blocks: 0,
                cues: Vec::new(),
            }
        });
        let relative = i16::try_from(time_ms - cluster.timestamp).map_err(|_| {
            MatroskaError::Invalid(format!("{time_ms} ms is too far from its cluster"))
        })?;
        let cue = if has_video {
            video && keyframe
        } else {
            cluster.blocks == 0
        };
        if cue {
            cluster
                .cues
                .push((time_ms, track, cluster.body.len() as u64));
        }
        let track_width = vint_width(track);
        put_id(&mut cluster.body, SIMPLE_BLOCK);
        put_size(&mut cluster.body, track_width + 3 + frame.len());
        put_vint(&mut cluster.body, track, track_width);
        cluster.body.extend_from_slice(&relative.to_be_bytes());
        cluster.body.push(if keyframe { 0x80 } else { 0 });
        cluster.body.extend_from_slice(frame);
        cluster.blocks += 1;
        self.last_ms = Some(time_ms);
        Ok(())
    }

    /// Writes the cluster being filled, if any, and keeps its cues.
    fn flush_cluster(&mut self) -> Result<(), MatroskaError> {
        let Some(cluster) = self.cluster.take() else {
            return Ok(());
        };
        let cluster_position = self.written - self.segment_data_at;
        let mut header = Vec::with_capacity(12);
        put_id(&mut header, CLUSTER);
        put_size(&mut header, cluster.body.len());
        self.put(&header)?;
        self.put(&cluster.body)?;
        self.cues.extend(
            cluster
                .cues
                .iter()
                .map(|&(time_ms, track, relative_position)| Cue {
                    time_ms,
                    track,
                    cluster_position,
                    relative_position,
                }),
        );
        Ok(())
    }

    fn cues_element(&self) -> Vec<u8> {
        let mut points = Vec::new();
        for cue in &self.cues {
            let mut positions = Vec::new();
            put_uint(&mut positions, CUE_TRACK, cue.track);
            put_uint(&mut positions, CUE_CLUSTER_POSITION, cue.cluster_position);
            put_uint(&mut positions, CUE_RELATIVE_POSITION, cue.relative_position);
            let mut point = Vec::new();
            put_uint(&mut point, CUE_TIME, cue.time_ms);
            put_element(&mut point, CUE_TRACK_POSITIONS, &positions);
            put_element(&mut points, CUE_POINT, &point);
        }
        let mut cues = Vec::new();
        put_element(&mut cues, CUES, &points);
        cues
    }

    /// The end of the last picture (its start plus the shortest gap between pictures) or of the last
    /// audio, whichever is later, ms.
    fn duration_ms(&self) -> f64 {
        let video_end = self
            .last_video_ms
            .map_or(0.0, |t| (t + self.video_period_ms.unwrap_or(0)) as f64);
        video_end.max(self.audio_end_ms).max(0.0)
    }

    /// Appends to the file.
    fn put(&mut self, bytes: &[u8]) -> Result<(), MatroskaError> {
        if let Err(e) = self.out.write_all(bytes) {
            self.failed = true;
            return Err(e.into());
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Overwrites bytes already written, `at` bytes from the start of the file.
    fn patch(&mut self, at: u64, bytes: &[u8]) -> Result<(), MatroskaError> {
        let result = self
            .out
            .seek(SeekFrom::Start(self.base + at))
            .and_then(|_| self.out.write_all(bytes));
        if let Err(e) = result {
            self.failed = true;
            return Err(e.into());
        }
        Ok(())
    }
}

fn check_tracks(
    video: Option<&VideoTrack>,
    audio: Option<&AudioTrack>,
) -> Result<(), MatroskaError> {
    if video.is_none() && audio.is_none() {
        return Err(MatroskaError::Invalid(
            "a file needs a video or an audio track".into(),
        ));
    }
    if let Some(video) = video {
        if video.width == 0 || video.height == 0 {
            return Err(MatroskaError::Invalid(format!(
                "video of {}x{} pixels",
                video.width, video.height
            )));
        }
        if video.avc_config.len() < 7 || video.avc_config[0] != 1 {
            return Err(MatroskaError::Invalid(
                "the avcC record is not an AVCDecoderConfigurationRecord".into(),
            ));
        }
    }
    if let Some(audio) = audio {
        if !matches!(audio.channels, 1 | 2) {
            return Err(MatroskaError::Invalid(format!(
                "Opus with {} channels (mapping family 0 takes 1 or 2)",
                audio.channels
            )));
        }
        if audio.sample_rate == 0 {
            return Err(MatroskaError::Invalid("audio at 0 Hz".into()));
        }
    }
    Ok(())
}

fn video_entry(number: u64, video: &VideoTrack) -> Vec<u8> {
    let mut entry = Vec::new();
    put_uint(&mut entry, TRACK_NUMBER, number);
    put_uint(&mut entry, TRACK_UID, number);
    put_uint(&mut entry, TRACK_TYPE, TRACK_TYPE_VIDEO);
    put_uint(&mut entry, FLAG_LACING, 0);
    put_element(&mut entry, CODEC_ID, b"V_MPEG4/ISO/AVC");
    put_element(&mut entry, CODEC_PRIVATE, &video.avc_config);
    let mut picture = Vec::new();
    put_uint(&mut picture, PIXEL_WIDTH, u64::from(video.width));
    put_uint(&mut picture, PIXEL_HEIGHT, u64::from(video.height));
    put_element(&mut entry, VIDEO, &picture);
    entry
}

fn audio_entry(number: u64, audio: &AudioTrack) -> Vec<u8> {
    let mut entry = Vec::new();
    put_uint(&mut entry, TRACK_NUMBER, number);
    put_uint(&mut entry, TRACK_UID, number);
    put_uint(&mut entry, TRACK_TYPE, TRACK_TYPE_AUDIO);
    put_uint(&mut entry, FLAG_LACING, 0);
    put_element(&mut entry, CODEC_ID, b"A_OPUS");
    put_element(&mut entry, CODEC_PRIVATE, &opus_head(audio));
    let delay_ns = (u64::from(audio.pre_skip) * 1_000_000_000 + OPUS_RATE / 2) / OPUS_RATE;
    put_uint(&mut entry, CODEC_DELAY, delay_ns);
    put_uint(&mut entry, SEEK_PRE_ROLL, OPUS_SEEK_PRE_ROLL_NS);
    let mut sound = Vec::new();
    put_float(&mut sound, SAMPLING_FREQUENCY, f64::from(audio.sample_rate));
    put_uint(&mut sound, CHANNELS, u64::from(audio.channels));
    put_element(&mut entry, AUDIO, &sound);
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    // --- A minimal EBML reader, to check what the writer wrote. -----------------------------------

    /// (value without the marker, length) of the vint at the start of `data`.
    fn read_vint(data: &[u8]) -> (u64, usize) {
        let width = data[0].leading_zeros() as usize + 1;
        assert!(width <= 8, "no vint marker in {:02x}", data[0]);
        let mut value = u64::from(data[0]) & ((1u64 << (8 - width)) - 1);
        for &byte in &data[1..width] {
            value = (value << 8) | u64::from(byte);
        }
        (value, width)
    }

    /// The elements of `data`: (ID, where it starts in `data`, its body). An unknown size runs to the end.
    fn elements(data: &[u8]) -> Vec<(u32, usize, &[u8])> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let id_width = data[at].leading_zeros() as usize + 1;
            let id = data[at..at + id_width]
                .iter()
                .fold(0u32, |id, &b| (id << 8) | u32::from(b));
            let (size, size_width) = read_vint(&data[at + id_width..]);
            let body_at = at + id_width + size_width;
            let unknown = size == (1u64 << (7 * size_width)) - 1;
            let end = if unknown {
                data.len()
            } else {
                body_at + size as usize
            };
            out.push((id, at, &data[body_at..end]));
            at = end;
        }
        out
    }

    fn children(data: &[u8], id: u32) -> Vec<&[u8]> {
        elements(data)
            .into_iter()
            .filter(|e| e.0 == id)
            .map(|e| e.2)
            .collect()
    }

    fn child(data: &[u8], id: u32) -> &[u8] {
        let found = children(data, id);
        assert_eq!(found.len(), 1, "one element {id:X}");
        found[0]
    }

    fn uint(body: &[u8]) -> u64 {
        body.iter().fold(0, |v, &b| (v << 8) | u64::from(b))
    }

    fn float(body: &[u8]) -> f64 {
        f64::from_be_bytes(body.try_into().expect("an 8-byte float"))
    }

    /// A SimpleBlock's body in a cluster at `timestamp`: (track, absolute time, flags, frame).
    fn parse_block(block: &[u8], timestamp: u64) -> (u64, u64, u8, Vec<u8>) {
        let (track, width) = read_vint(block);
        let relative = i16::from_be_bytes([block[width], block[width + 1]]);
        let time = timestamp.checked_add_signed(i64::from(relative)).unwrap();
        (track, time, block[width + 2], block[width + 3..].to_vec())
    }

    /// The SimpleBlocks of a cluster, parsed.
    fn blocks(cluster: &[u8]) -> Vec<(u64, u64, u8, Vec<u8>)> {
        let timestamp = uint(child(cluster, TIMESTAMP));
        children(cluster, SIMPLE_BLOCK)
            .into_iter()
            .map(|block| parse_block(block, timestamp))
            .collect()
    }

    // --- Encoding. ---------------------------------------------------------------------------------

    fn vint_bytes(value: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        put_size(&mut buf, value as usize);
        buf
    }

    #[test]
    fn vints_take_the_fewest_bytes_and_never_the_unknown_pattern() {
        assert_eq!(vint_bytes(0), [0x80]);
        assert_eq!(vint_bytes(1), [0x81]);
        // 127 in one byte would be 0xFF, "unknown size": it takes two.
        assert_eq!(vint_bytes(126), [0xFE]);
        assert_eq!(vint_bytes(127), [0x40, 0x7F]);
        assert_eq!(vint_bytes(16_382), [0x7F, 0xFE]);
        assert_eq!(vint_bytes(16_383), [0x20, 0x3F, 0xFF]);
        assert_eq!(vint_bytes(2_097_150), [0x3F, 0xFF, 0xFE]);
        assert_eq!(vint_bytes(2_097_151), [0x10, 0x1F, 0xFF, 0xFF]);
        let widths: Vec<usize> = (1..=8)
            .flat_map(|w| {
                let top = (1u64 << (7 * w)) - 2;
                [vint_width(top), vint_width(top + 1)]
            })
            .collect();
        assert_eq!(widths, [1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 8]);
        // Fixed widths: the Segment's 8-byte size, a value padded out.
        let mut buf = Vec::new();
        put_vint(&mut buf, 5, 8);
        assert_eq!(buf, [0x01, 0, 0, 0, 0, 0, 0, 5]);
        for value in [0u64, 1, 126, 127, 16_382, 16_383, (1 << 56) - 2] {
            let mut buf = Vec::new();
            put_vint(&mut buf, value, vint_width(value));
            assert_eq!(read_vint(&buf), (value, vint_width(value)));
        }
    }

    #[test]
    fn element_ids_keep_their_marker_bits_and_numbers_their_fewest_bytes() {
        let id_bytes = |id| {
            let mut buf = Vec::new();
            put_id(&mut buf, id);
            buf
        };
        assert_eq!(id_bytes(SIMPLE_BLOCK), [0xA3]);
        assert_eq!(id_bytes(DURATION), [0x44, 0x89]);
        assert_eq!(id_bytes(TIMESTAMP_SCALE), [0x2A, 0xD7, 0xB1]);
        assert_eq!(id_bytes(EBML), [0x1A, 0x45, 0xDF, 0xA3]);
        let mut buf = Vec::new();
        put_uint(&mut buf, TRACK_NUMBER, 0);
        put_uint(&mut buf, TIMESTAMP, 300);
        put_uint(&mut buf, TIMESTAMP_SCALE, 1_000_000);
        assert_eq!(
            buf,
            [
                0xD7, 0x81, 0, // 0 still takes a byte
                0xE7, 0x82, 0x01, 0x2C, //
                0x2A, 0xD7, 0xB1, 0x83, 0x0F, 0x42, 0x40
            ]
        );
        for total in [2, 3, 8, 9, 10, 200] {
            let mut void = Vec::new();
            put_void(&mut void, total);
            assert_eq!(void.len(), total);
            let parsed = elements(&void);
            assert_eq!((parsed.len(), parsed[0].0), (1, VOID), "{total}");
        }
    }

    #[test]
    fn annexb_start_codes_become_length_prefixes() {
        let annexb = [
            0, 0, 0, 1, 0x09, 0xF0, // AUD after a 4-byte start code
            0, 0, 1, 0x67, 0x42, 0, 0, 3,
            1, // SPS (with an emulation prevention byte), 3-byte code
            0, 0, 0, 1, 0x65, 0x88, 0, 0, // IDR slice, then trailing zero bytes
        ];
        assert_eq!(
            annexb_to_length_prefixed(&annexb),
            [
                0, 0, 0, 2, 0x09, 0xF0, //
                0, 0, 0, 6, 0x67, 0x42, 0, 0, 3, 1, //
                0, 0, 0, 2, 0x65, 0x88,
            ]
        );
        assert!(annexb_to_length_prefixed(&[]).is_empty());
        assert!(annexb_to_length_prefixed(&[0, 0, 1]).is_empty());
        assert!(annexb_to_length_prefixed(&[0x65, 0x88, 0x99]).is_empty());
        // Leading junk before the first start code is dropped.
        assert_eq!(
            annexb_to_length_prefixed(&[7, 7, 0, 0, 1, 0x41, 0x9A]),
            [0, 0, 0, 2, 0x41, 0x9A]
        );
    }

    // --- H.264 and Opus headers. -------------------------------------------------------------------

    /// Pictures of the crate's own encoder (320×240 test pattern at 30 fps): (keyframe, Annex B).
    fn encoded_pattern(frames: u64, keyframes_at: &[u64]) -> Vec<(bool, Vec<u8>)> {
        use crate::video::codec::{VideoEncoder, VideoSettings};
        use crate::video::pattern::PatternSource;
        use crate::video::source::VideoSource;
        let mut source = PatternSource::new(320, 240, 30).unwrap();
        let mut encoder = VideoEncoder::new(VideoSettings::for_picture(320, 240, 30), 30).unwrap();
        let mut out = Vec::new();
        for n in 0..frames {
            if keyframes_at.contains(&n) {
                encoder.request_keyframe();
            }
            let picture = source.next_frame(n * 1_000_000 / 30).unwrap();
            let encoded = encoder
                .encode(&picture)
                .unwrap()
                .expect("the pattern is not skipped");
            out.push((encoded.keyframe, encoded.data));
        }
        out
    }

    #[test]
    fn the_avc_config_of_a_real_keyframe_holds_its_one_sps_and_pps() {
        let pictures = encoded_pattern(2, &[]);
        let (keyframe, access_unit) = &pictures[0];
        assert!(keyframe);
        let nals = nal_units(access_unit);
        let sps = nals.iter().find(|n| n[0] & 0x1F == 7).expect("an SPS");
        let pps = nals.iter().find(|n| n[0] & 0x1F == 8).expect("a PPS");
        let config = avc_config_from_annexb(access_unit).unwrap();
        assert_eq!(config[0], 1, "configurationVersion");
        // OpenH264 here: constrained baseline (profile 66, constraint_set1).
        assert_eq!(config[1], 66, "profile");
        assert_eq!(
            config[1..4],
            sps[1..4],
            "profile, compatibility, level from the SPS"
        );
        assert_eq!(config[2] & 0x40, 0x40, "constrained baseline");
        assert_eq!(config[4], 0xFF, "4-byte NAL lengths");
        assert_eq!(config[5], 0xE1, "one SPS");
        let sps_len = usize::from(u16::from_be_bytes([config[6], config[7]]));
        assert_eq!(&config[8..8 + sps_len], *sps);
        let rest = &config[8 + sps_len..];
        assert_eq!(rest[0], 1, "one PPS");
        let pps_len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        assert_eq!(
            &rest[3..],
            *pps,
            "and nothing after it (baseline has no extension)"
        );
        assert_eq!(pps_len, pps.len());
        // A P picture carries no parameter sets.
        assert!(!pictures[1].0);
        assert!(matches!(
            avc_config_from_annexb(&pictures[1].1),
            Err(MatroskaError::NoParameterSets)
        ));
    }

    #[test]
    fn a_high_profile_sps_gets_the_record_extension() {
        // profile 100, level 3.1; then ue(0) sps id, ue(1) 4:2:0, ue(0), ue(0): 1 010 1 1, stop bit.
        let high = [
            0,
            0,
            0,
            1,
            0x67,
            100,
            0,
            31,
            0b1010_1110,
            0,
            0,
            1,
            0x68,
            0xEB,
        ];
        let config = avc_config_from_annexb(&high).unwrap();
        assert_eq!(config[1..4], [100, 0, 31]);
        assert_eq!(config[config.len() - 4..], [0xFD, 0xF8, 0xF8, 0]);
        // 4:4:4 at 10 bits: ue(0) ue(3)=00100 separate_colour_plane 0, ue(2)=011 ue(2)=011.
        let bits = concat!("1", "00100", "0", "011", "011", "1");
        let mut packed = Vec::new();
        for chunk in bits.as_bytes().chunks(8) {
            let byte = chunk
                .iter()
                .enumerate()
                .fold(0u8, |b, (i, &c)| b | (u8::from(c == b'1') << (7 - i)));
            packed.push(byte);
        }
        let mut annexb = vec![0, 0, 1, 0x67, 244, 0, 40];
        annexb.extend(&packed);
        annexb.extend([0, 0, 1, 0x68, 0xEB]);
        let config = avc_config_from_annexb(&annexb).unwrap();
        assert_eq!(config[config.len() - 4..], [0xFF, 0xFA, 0xFA, 0]);
    }

    #[test]
    fn opus_packet_lengths_come_from_the_toc() {
        let cases: [(&[u8], Option<u64>); 8] = [
            (&[0xF8, 1, 2], Some(20_000)), // CELT FB 20 ms, one frame
            (&[0xE0], Some(2_500)),        // CELT 2.5 ms
            (&[0x08], Some(20_000)),       // SILK NB 20 ms
            (&[0x18], Some(60_000)),       // SILK NB 60 ms
            (&[0x79, 7], Some(40_000)),    // hybrid 20 ms, two frames
            (&[0x63, 0x03], Some(30_000)), // hybrid 10 ms, code 3: three frames
            (&[0x03], None),               // code 3 without its count byte
            (&[], None),
        ];
        for (packet, expected) in cases {
            assert_eq!(opus_packet_duration_us(packet), expected, "{packet:02x?}");
        }
        let head = opus_head(&AudioTrack {
            sample_rate: 48_000,
            channels: 2,
            pre_skip: 312,
        });
        assert_eq!(
            head,
            [
                b'O', b'p', b'u', b's', b'H', b'e', b'a', b'd', 1, 2, 0x38, 0x01, 0x80, 0xBB, 0, 0,
                0, 0, 0
            ]
        );
    }

    // --- The file. ---------------------------------------------------------------------------------

    const FAKE_AVCC_SOURCE: [u8; 16] = [
        0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1E, 0xAB, 0, 0, 0, 1, 0x68, 0xCE, 0x3C,
    ];

    fn fake_video_track() -> VideoTrack {
        VideoTrack {
            width: 320,
            height: 240,
            avc_config: avc_config_from_annexb(&FAKE_AVCC_SOURCE).unwrap(),
        }
    }

    fn voice_track() -> AudioTrack {
        AudioTrack {
            sample_rate: 48_000,
            channels: 1,
            pre_skip: 312,
        }
    }

    /// A 20 ms CELT packet marked with `n`.
    fn opus_packet(n: u64) -> Vec<u8> {
        vec![0xF8, (n >> 8) as u8, n as u8]
    }

    /// An IDR or P slice marked with `n`.
    fn slice(keyframe: bool, n: u64) -> Vec<u8> {
        vec![
            0,
            0,
            0,
            1,
            if keyframe { 0x65 } else { 0x41 },
            0x88,
            n as u8,
            0x80,
        ]
    }

    /// (the Segment's data, checked against its size) of a whole file.
    fn segment_of(file: &[u8]) -> &[u8] {
        let top = elements(file);
        assert_eq!(top.len(), 2, "EBML header and Segment");
        assert_eq!((top[0].0, top[1].0), (EBML, SEGMENT));
        let header = top[0].2;
        assert_eq!(child(header, DOC_TYPE), b"matroska");
        assert_eq!(uint(child(header, DOC_TYPE_VERSION)), 4);
        assert_eq!(uint(child(header, DOC_TYPE_READ_VERSION)), 2);
        let segment_at = top[1].1;
        // The size is a fixed 8 bytes and equals the rest of the file.
        assert_eq!(file[segment_at + 4], 0x01);
        let (size, width) = read_vint(&file[segment_at + 4..]);
        assert_eq!(width, 8);
        assert_eq!(size as usize, file.len() - (segment_at + 12));
        top[1].2
    }

    #[test]
    fn the_file_has_the_documented_structure_clusters_and_cues() {
        // Video every 100 ms to 7 s (keyframes at 0, 0.5 and 1.2 s), audio every 20 ms, then one
        // picture at 40 s; interleaved by time as the exporter does.
        let mut expected: Vec<(u64, u64, u8, Vec<u8>)> = Vec::new();
        for n in 0..=70 {
            let time = n * 100;
            let key = [0, 500, 1200].contains(&time);
            expected.push((1, time, if key { 0x80 } else { 0 }, slice(key, n)));
        }
        for n in 0..=350 {
            expected.push((2, n * 20, 0x80, opus_packet(n)));
        }
        expected.push((1, 40_000, 0, slice(false, 99)));
        expected.sort_by_key(|b| b.1);

        let write = |out: Cursor<Vec<u8>>| {
            let mut writer = MatroskaWriter::new(
                out,
                "structure",
                Some(fake_video_track()),
                Some(voice_track()),
            )
            .unwrap();
            for (track, time, flags, frame) in &expected {
                if *track == 1 {
                    writer.write_video(*time, *flags == 0x80, frame).unwrap();
                } else {
                    writer.write_audio(*time, frame).unwrap();
                }
            }
            writer.finish().unwrap()
        };
        let out = write(Cursor::new(Vec::new()));
        assert_eq!(
            out.position() as usize,
            out.get_ref().len(),
            "left at the end"
        );
        let file = out.into_inner();
        // The same file written after bytes already in the output: positions are its own.
        let mut prefixed = Cursor::new(b"prefix".to_vec());
        prefixed.set_position(6);
        assert_eq!(write(prefixed).into_inner()[6..], file[..]);

        let segment = segment_of(&file);
        let segment_data_at = file.len() - segment.len();
        let top: Vec<u32> = elements(segment).iter().map(|e| e.0).collect();
        let clusters = top.iter().filter(|&&id| id == CLUSTER).count();
        assert_eq!(
            top,
            [
                [SEEK_HEAD, VOID, INFO, TRACKS].as_slice(),
                &vec![CLUSTER; clusters],
                &[CUES]
            ]
            .concat()
        );

        let info = child(segment, INFO);
        assert_eq!(uint(child(info, TIMESTAMP_SCALE)), 1_000_000);
        assert_eq!(child(info, MUXING_APP), b"bevy_streams");
        assert_eq!(child(info, WRITING_APP), b"bevy_streams");
        assert_eq!(child(info, TITLE), b"structure");
        // The last picture (40 s) lasts the shortest gap between pictures (100 ms).
        assert_eq!(float(child(info, DURATION)), 40_100.0);

        let entries = children(child(segment, TRACKS), TRACK_ENTRY);
        assert_eq!(entries.len(), 2);
        let (video, audio) = (entries[0], entries[1]);
        assert_eq!(uint(child(video, TRACK_NUMBER)), 1);
        assert_eq!(uint(child(video, TRACK_TYPE)), 1);
        assert_eq!(child(video, CODEC_ID), b"V_MPEG4/ISO/AVC");
        assert_eq!(child(video, CODEC_PRIVATE), fake_video_track().avc_config);
        let picture = child(video, VIDEO);
        assert_eq!(uint(child(picture, PIXEL_WIDTH)), 320);
        assert_eq!(uint(child(picture, PIXEL_HEIGHT)), 240);
        assert_eq!(uint(child(audio, TRACK_NUMBER)), 2);
        assert_eq!(uint(child(audio, TRACK_TYPE)), 2);
        assert_eq!(child(audio, CODEC_ID), b"A_OPUS");
        assert_eq!(child(audio, CODEC_PRIVATE), opus_head(&voice_track()));
        assert_eq!(uint(child(audio, CODEC_DELAY)), 6_500_000);
        assert_eq!(uint(child(audio, SEEK_PRE_ROLL)), 80_000_000);
        let sound = child(audio, AUDIO);
        assert_eq!(float(child(sound, SAMPLING_FREQUENCY)), 48_000.0);
        assert_eq!(uint(child(sound, CHANNELS)), 1);

        // Clusters: at the start, at the 1.2 s keyframe (0.5 s was too soon), 5 s later without a
        // keyframe, and at the lone picture 33 s after that. Every block comes back as written.
        let cluster_list: Vec<(usize, &[u8])> = elements(segment)
            .into_iter()
            .filter(|e| e.0 == CLUSTER)
            .map(|e| (e.1, e.2))
            .collect();
        let timestamps: Vec<u64> = cluster_list
            .iter()
            .map(|(_, c)| uint(child(c, TIMESTAMP)))
            .collect();
        assert_eq!(timestamps, [0, 1200, 6200, 40_000]);
        let read: Vec<_> = cluster_list.iter().flat_map(|(_, c)| blocks(c)).collect();
        assert_eq!(read.len(), expected.len());
        for (got, (track, time, flags, frame)) in read.iter().zip(&expected) {
            let stored = if *track == 1 {
                annexb_to_length_prefixed(frame)
            } else {
                frame.clone()
            };
            assert_eq!(*got, (*track, *time, *flags, stored));
        }

        // Cues: one per video keyframe, pointing at that very block.
        let points = children(child(segment, CUES), CUE_POINT);
        assert_eq!(points.len(), 3);
        for (point, (time, cluster_index)) in points.iter().zip([(0, 0), (500, 0), (1200, 1)]) {
            assert_eq!(uint(child(point, CUE_TIME)), time);
            let positions = child(point, CUE_TRACK_POSITIONS);
            assert_eq!(uint(child(positions, CUE_TRACK)), 1);
            let cluster_position = uint(child(positions, CUE_CLUSTER_POSITION)) as usize;
            let (cluster_at, cluster) = cluster_list[cluster_index];
            assert_eq!(cluster_position, cluster_at);
            let relative = uint(child(positions, CUE_RELATIVE_POSITION)) as usize;
            let (id, _, body) = elements(&cluster[relative..])[0];
            assert_eq!(id, SIMPLE_BLOCK);
            let (track, block_time, flags, _) = parse_block(body, uint(child(cluster, TIMESTAMP)));
            assert_eq!((track, block_time, flags), (1, time, 0x80));
            // The Segment data starts where positions count from.
            assert_eq!(
                file[segment_data_at + cluster_position..][..4],
                CLUSTER.to_be_bytes()
            );
        }

        // The SeekHead points at Info, Tracks and Cues.
        let seeks = children(child(segment, SEEK_HEAD), SEEK);
        let targets: Vec<(u32, usize)> = seeks
            .iter()
            .map(|s| {
                (
                    uint(child(s, SEEK_ID)) as u32,
                    uint(child(s, SEEK_POSITION)) as usize,
                )
            })
            .collect();
        assert_eq!(targets.len(), 3);
        for (id, position) in targets {
            assert!([INFO, TRACKS, CUES].contains(&id));
            assert_eq!(
                file[segment_data_at + position..][..4],
                id.to_be_bytes(),
                "{id:X}"
            );
        }
    }

    #[test]
    fn an_audio_only_file_has_track_one_and_a_cue_per_cluster() {
        let mut writer =
            MatroskaWriter::new(Cursor::new(Vec::new()), "voice", None, Some(voice_track()))
                .unwrap();
        assert!(matches!(
            writer.write_video(0, true, &slice(true, 0)),
            Err(MatroskaError::NoTrack("video"))
        ));
        for n in 0..600 {
            writer.write_audio(n * 20, &opus_packet(n)).unwrap();
        }
        let file = writer.finish().unwrap().into_inner();
        let segment = segment_of(&file);
        let entries = children(child(segment, TRACKS), TRACK_ENTRY);
        assert_eq!(entries.len(), 1);
        assert_eq!(uint(child(entries[0], TRACK_NUMBER)), 1);
        let clusters = children(segment, CLUSTER);
        let timestamps: Vec<u64> = clusters.iter().map(|c| uint(child(c, TIMESTAMP))).collect();
        assert_eq!(timestamps, [0, 5000, 10_000]);
        assert_eq!(clusters.iter().map(|c| blocks(c).len()).sum::<usize>(), 600);
        let cue_times: Vec<u64> = children(child(segment, CUES), CUE_POINT)
            .iter()
            .map(|p| uint(child(p, CUE_TIME)))
            .collect();
        assert_eq!(cue_times, timestamps);
        // 12 s of audio less the 6.5 ms pre-skip.
        let duration = float(child(child(segment, INFO), DURATION));
        assert!((duration - 11_993.5).abs() < 1e-9, "{duration}");
    }

    #[test]
    fn an_empty_file_is_still_well_formed() {
        let writer = MatroskaWriter::new(
            Cursor::new(Vec::new()),
            "",
            Some(fake_video_track()),
            Some(voice_track()),
        )
        .unwrap();
        let file = writer.finish().unwrap().into_inner();
        let segment = segment_of(&file);
        let info = child(segment, INFO);
        assert!(children(info, DURATION).is_empty(), "no Duration of 0");
        assert!(children(segment, CUES).is_empty() && children(segment, CLUSTER).is_empty());
        assert_eq!(children(child(segment, SEEK_HEAD), SEEK).len(), 2);
    }

    // --- Errors. -----------------------------------------------------------------------------------

    #[test]
    fn time_going_back_is_a_typed_error_that_leaves_the_file_as_it_was() {
        let mut writer = MatroskaWriter::new(
            Cursor::new(Vec::new()),
            "order",
            Some(fake_video_track()),
            Some(voice_track()),
        )
        .unwrap();
        writer.write_video(100, true, &slice(true, 1)).unwrap();
        writer.write_audio(100, &opus_packet(1)).unwrap(); // equal times are fine
        writer.write_audio(120, &opus_packet(2)).unwrap();
        let refused = writer.write_video(110, false, &slice(false, 2));
        assert!(
            matches!(
                refused,
                Err(MatroskaError::TimeWentBack {
                    track: "video",
                    time_ms: 110,
                    last_ms: 120
                })
            ),
            "{refused:?}"
        );
        assert!(matches!(
            writer.write_audio(0, &opus_packet(3)),
            Err(MatroskaError::TimeWentBack { track: "audio", .. })
        ));
        writer.write_video(133, false, &slice(false, 3)).unwrap();
        let file = writer.finish().unwrap().into_inner();
        let segment = segment_of(&file);
        let written: Vec<(u64, u64)> = children(segment, CLUSTER)
            .iter()
            .flat_map(|c| blocks(c))
            .map(|b| (b.0, b.1))
            .collect();
        assert_eq!(written, [(1, 100), (2, 100), (2, 120), (1, 133)]);
    }

    #[test]
    fn garbage_and_empty_input_are_errors_not_panics() {
        for garbage in [
            &[][..],
            &[0],
            &[0, 0, 1],
            &[0, 0, 0, 1],
            &[0xFF; 64],
            &[0, 0, 1, 0x67],            // an SPS too short to hold a profile
            &[0, 0, 1, 0x67, 66, 0, 30], // an SPS without a PPS
            &[0, 0, 1, 0x68, 0xCE],      // a PPS without an SPS
            &[0, 0, 1, 0xE7, 66, 0, 30, 0, 0, 1, 0x68, 0xCE], // forbidden bit set
        ] {
            assert!(
                matches!(
                    avc_config_from_annexb(garbage),
                    Err(MatroskaError::NoParameterSets)
                ),
                "{garbage:02x?}"
            );
            let _ = annexb_to_length_prefixed(garbage);
        }
        let mut writer = MatroskaWriter::new(
            Cursor::new(Vec::new()),
            "empty",
            Some(fake_video_track()),
            Some(voice_track()),
        )
        .unwrap();
        assert!(matches!(
            writer.write_video(0, true, &[]),
            Err(MatroskaError::EmptyFrame("video"))
        ));
        assert!(matches!(
            writer.write_video(0, true, &[1, 2, 3]),
            Err(MatroskaError::EmptyFrame("video"))
        ));
        assert!(matches!(
            writer.write_audio(0, &[]),
            Err(MatroskaError::EmptyFrame("audio"))
        ));
        // Junk that is not Opus is still stored (its length just does not count towards Duration).
        writer.write_audio(0, &[0x03]).unwrap();
        writer.finish().unwrap();
    }

    #[test]
    fn unusable_tracks_are_refused() {
        let new = |video, audio| MatroskaWriter::new(Cursor::new(Vec::new()), "", video, audio);
        assert!(matches!(new(None, None), Err(MatroskaError::Invalid(_))));
        let bad_size = VideoTrack {
            width: 0,
            ..fake_video_track()
        };
        assert!(matches!(
            new(Some(bad_size), None),
            Err(MatroskaError::Invalid(_))
        ));
        let bad_config = VideoTrack {
            avc_config: vec![0x67, 0x42],
            ..fake_video_track()
        };
        assert!(matches!(
            new(Some(bad_config), None),
            Err(MatroskaError::Invalid(_))
        ));
        let surround = AudioTrack {
            channels: 6,
            ..voice_track()
        };
        assert!(matches!(
            new(None, Some(surround)),
            Err(MatroskaError::Invalid(_))
        ));
    }

    /// An output that fails after `budget` bytes.
    struct Failing {
        inner: Cursor<Vec<u8>>,
        budget: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.inner.get_ref().len() + buf.len() > self.budget {
                return Err(std::io::Error::other("disk full"));
            }
            self.inner.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Seek for Failing {
        fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(to)
        }
    }

    #[test]
    fn a_failed_write_is_reported_and_ends_the_file() {
        let out = Failing {
            inner: Cursor::new(Vec::new()),
            budget: 400,
        };
        let mut writer = MatroskaWriter::new(out, "full", None, Some(voice_track())).unwrap();
        let mut failure = None;
        // The first cluster is written when the second starts, at 5 s.
        for n in 0..300 {
            if let Err(e) = writer.write_audio(n * 20, &opus_packet(n)) {
                failure = Some(e);
                break;
            }
        }
        assert!(matches!(failure, Some(MatroskaError::Io(_))), "{failure:?}");
        assert!(matches!(
            writer.write_audio(10_000, &opus_packet(0)),
            Err(MatroskaError::Failed)
        ));
        assert!(matches!(writer.finish(), Err(MatroskaError::Failed)));
    }

    // --- With a real player. -----------------------------------------------------------------------

    /// Runs an FFmpeg tool; fails (never skips) when FFmpeg is not installed.
    fn ffmpeg_tool(name: &str, args: &[&str]) -> std::process::Output {
        match std::process::Command::new(name).args(args).output() {
            Ok(output) => output,
            Err(e) => panic!(
                "cannot run `{name}` ({e}): this test needs FFmpeg's ffprobe and ffmpeg on PATH; \
                 install ffmpeg (e.g. `apt-get install ffmpeg`)"
            ),
        }
    }

    #[test]
    fn ffmpeg_plays_three_seconds_of_h264_and_opus() {
        use crate::audio::SAMPLE_RATE;
        use crate::audio::codec::{VoiceEncoder, VoiceSettings};
        use crate::audio::source::{AudioSource, ToneSource};
        use crate::video::frame::I420Frame;
        use crate::video::pattern::read_stamp;

        // 3 s of 320×240 pattern at 30 fps (a keyframe requested at 1.5 s) and of a 440 Hz tone.
        enum Block {
            Video(bool, Vec<u8>),
            Audio(Vec<u8>),
        }
        let pictures = encoded_pattern(90, &[45]);
        let keyframe = &pictures[0].1;
        let mut blocks: Vec<(u64, Block)> = pictures
            .iter()
            .enumerate()
            .map(|(n, (key, data))| (n as u64 * 1000 / 30, Block::Video(*key, data.clone())))
            .collect();
        let mut encoder = VoiceEncoder::new(VoiceSettings::default()).unwrap();
        let pre_skip = u16::try_from(encoder.lookahead()).unwrap();
        let frame_ms = u64::from(encoder.settings().frame.millis());
        let mut tone = ToneSource::new(440.0, 0.5);
        let mut pcm = vec![0.0; encoder.frame_len()];
        for k in 0..3000 / frame_ms {
            tone.fill(&mut pcm);
            blocks.push((k * frame_ms, Block::Audio(encoder.encode(&pcm).unwrap())));
        }
        blocks.sort_by_key(|b| b.0);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.mkv");
        let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let video = VideoTrack {
            width: 320,
            height: 240,
            avc_config: avc_config_from_annexb(keyframe).unwrap(),
        };
        let audio = AudioTrack {
            sample_rate: SAMPLE_RATE,
            channels: 1,
            pre_skip,
        };
        let mut writer = MatroskaWriter::new(file, "a test", Some(video), Some(audio)).unwrap();
        for (time, block) in &blocks {
            match block {
                Block::Video(key, data) => writer.write_video(*time, *key, data).unwrap(),
                Block::Audio(packet) => writer.write_audio(*time, packet).unwrap(),
            }
        }
        drop(writer.finish().unwrap());
        let path = path.to_str().unwrap();

        let probe = ffmpeg_tool(
            "ffprobe",
            &[
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,codec_type:format=duration",
                "-of",
                "json",
                path,
            ],
        );
        let stderr = String::from_utf8_lossy(&probe.stderr);
        assert!(
            probe.status.success() && stderr.is_empty(),
            "ffprobe: {stderr}"
        );
        let report: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
        eprintln!("ffprobe: {report}");
        let streams: Vec<(&str, &str)> = report["streams"]
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
        assert_eq!(streams, [("video", "h264"), ("audio", "opus")]);
        let duration: f64 = report["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((duration - 3.0).abs() <= 0.2, "duration {duration} s");

        let check = ffmpeg_tool("ffmpeg", &["-v", "error", "-i", path, "-f", "null", "-"]);
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert!(check.status.success(), "ffmpeg failed: {stderr}");
        assert!(stderr.is_empty(), "ffmpeg complained: {stderr}");

        let decoded = ffmpeg_tool(
            "ffmpeg",
            &[
                "-v", "error", "-i", path, "-map", "0:a", "-f", "f32le", "-ac", "1", "-ar",
                "48000", "-",
            ],
        );
        assert!(
            decoded.status.success(),
            "{}",
            String::from_utf8_lossy(&decoded.stderr)
        );
        let samples: Vec<f32> = decoded
            .stdout
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let seconds = samples.len() as f64 / 48_000.0;
        eprintln!("audio: {seconds:.4} s decoded");
        assert!((seconds - 3.0).abs() < 0.1, "{seconds} s of audio");
        let middle = &samples[48_000..96_000];
        let rising = middle
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        assert!(rising.abs_diff(440) <= 5, "{rising} Hz");
        let peak = middle.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.3, "peak {peak}");

        let frames = ffmpeg_tool(
            "ffmpeg",
            &[
                "-v", "error", "-i", path, "-map", "0:v", "-f", "rawvideo", "-pix_fmt", "gray", "-",
            ],
        );
        assert!(
            frames.status.success(),
            "{}",
            String::from_utf8_lossy(&frames.stderr)
        );
        let picture_size = 320 * 240;
        assert_eq!(frames.stdout.len() % picture_size, 0);
        let count = frames.stdout.len() / picture_size;
        eprintln!("video: {count} frames decoded");
        assert!(count.abs_diff(90) <= 3, "{count} frames");
        // The pictures are the pattern's, in order: the stamps read 0 first and 89 last.
        let stamp = |luma: &[u8]| {
            let chroma = vec![128u8; picture_size / 4];
            let picture =
                I420Frame::from_planes(320, 240, [luma, &chroma, &chroma], [320, 160, 160]);
            read_stamp(&picture).map(|s| s.frame)
        };
        let stamps: Vec<Option<u32>> = frames
            .stdout
            .chunks_exact(picture_size)
            .map(stamp)
            .collect();
        assert_eq!(stamps.first(), Some(&Some(0)));
        assert_eq!(stamps.last(), Some(&Some(89)));
        assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
    }
}
