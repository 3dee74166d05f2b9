//! The Opus voice codec: 48 kHz, mono by default (stereo on request), 10 or 20 ms frames, voice signal
//! mode with in-band FEC (SILK/hybrid LBRR) and optional DTX; decoding with FEC recovery and packet-loss
//! concealment.
use opus::{Application, Bitrate, Channels, Signal};

use super::SAMPLE_RATE;

/// Frame durations the pipeline supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FrameDuration {
    /// 10 ms (480 samples per channel).
    Ms10,
    /// 20 ms (960 samples per channel).
    Ms20,
}

impl FrameDuration {
    /// The duration of `millis` milliseconds, if supported (10 or 20).
    pub fn from_millis(millis: u32) -> Option<Self> {
        match millis {
            10 => Some(FrameDuration::Ms10),
            20 => Some(FrameDuration::Ms20),
            _ => None,
        }
    }

    /// Milliseconds.
    pub fn millis(self) -> u32 {
        match self {
            FrameDuration::Ms10 => 10,
            FrameDuration::Ms20 => 20,
        }
    }

    /// Samples per channel.
    pub fn samples(self) -> usize {
        (SAMPLE_RATE / 1000 * self.millis()) as usize
    }
}

/// Encoder settings.
#[derive(Clone, Debug, PartialEq)]
pub struct VoiceSettings {
    /// Frame duration.
    pub frame: FrameDuration,
    /// Two channels instead of one.
    pub stereo: bool,
    /// Target bitrate in bits per second.
    pub bitrate: i32,
    /// Expected loss in percent: sizes the in-band FEC (0 disables it).
    pub expected_loss_percent: i32,
    /// Discontinuous transmission (send almost nothing during silence). Off by default: it saves
    /// bandwidth but shows the bridge, by packet timing, when someone is silent.
    pub dtx: bool,
}

impl Default for VoiceSettings {
    fn default() -> Self {
        VoiceSettings {
            frame: FrameDuration::Ms20,
            stereo: false,
            bitrate: 32_000,
            expected_loss_percent: 10,
            dtx: false,
        }
    }
}

/// A codec operation failed. Building one never allocates (decoding runs on the audio thread).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// libopus refused.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    /// A frame to encode had the wrong number of samples.
    #[error("frame of {got} samples, expected {expected}")]
    FrameLength {
        /// Samples given.
        got: usize,
        /// Samples one frame holds.
        expected: usize,
    },
    /// An empty packet was given to decode (concealment is asked for explicitly).
    #[error("empty packet")]
    EmptyPacket,
}

/// Encodes PCM frames to Opus packets.
pub struct VoiceEncoder {
    encoder: opus::Encoder,
    settings: VoiceSettings,
    buffer: Vec<u8>,
}

impl VoiceEncoder {
    /// An encoder with these settings.
    pub fn new(settings: VoiceSettings) -> Result<Self, CodecError> {
        let channels = if settings.stereo {
            Channels::Stereo
        } else {
            Channels::Mono
        };
        let mut encoder = opus::Encoder::new(SAMPLE_RATE, channels, Application::Voip)?;
        encoder.set_signal(Signal::Voice)?;
        // Constant bitrate: SFrame keeps sizes, so variable sizes would tell the bridge who speaks.
        encoder.set_vbr(false)?;
        encoder.set_bitrate(Bitrate::Bits(settings.bitrate))?;
        encoder.set_inband_fec(settings.expected_loss_percent > 0)?;
        encoder.set_packet_loss_perc(settings.expected_loss_percent.clamp(0, 100))?;
        encoder.set_dtx(settings.dtx)?;
        Ok(VoiceEncoder {
            encoder,
            settings,
            buffer: vec![0; 1500],
        })
    }

    /// The settings.
    pub fn settings(&self) -> &VoiceSettings {
        &self.settings
    }

    /// Samples (all channels, interleaved) one frame must hold.
    pub fn frame_len(&self) -> usize {
        self.settings.frame.samples() * if self.settings.stereo { 2 } else { 1 }
    }

    /// The encoder's look-ahead in samples (adds to latency).
    pub fn lookahead(&mut self) -> usize {
        self.encoder
            .get_lookahead()
            .map_or(0, |l| l.max(0) as usize)
    }

    /// Encodes one frame of exactly [`VoiceEncoder::frame_len`] samples.
    pub fn encode(&mut self, pcm: &[f32]) -> Result<Vec<u8>, CodecError> {
        if pcm.len() != self.frame_len() {
            return Err(CodecError::FrameLength {
                got: pcm.len(),
                expected: self.frame_len(),
            });
        }
        let n = self.encoder.encode_float(pcm, &mut self.buffer)?;
        Ok(self.buffer[..n].to_vec())
    }
}

/// Decodes Opus packets, recovering lost frames from FEC or concealing them. Decoding writes into a
/// buffer allocated once, so it may run on an audio thread; each call's samples are borrowed until
/// the next.
pub struct VoiceDecoder {
    decoder: opus::Decoder,
    frame: FrameDuration,
    channels: usize,
    buffer: Vec<f32>,
    /// Samples (all channels) the last call produced.
    last_len: usize,
}

/// Samples per channel of the longest Opus packet (120 ms), so a sender's other frame size decodes.
const MAX_PACKET_SAMPLES: usize = 5760;

impl VoiceDecoder {
    /// A decoder for frames of this duration.
    pub fn new(frame: FrameDuration, stereo: bool) -> Result<Self, CodecError> {
        let channels = if stereo {
            Channels::Stereo
        } else {
            Channels::Mono
        };
        let channel_count = if stereo { 2 } else { 1 };
        Ok(VoiceDecoder {
            decoder: opus::Decoder::new(SAMPLE_RATE, channels)?,
            frame,
            channels: channel_count,
            buffer: vec![0.0; MAX_PACKET_SAMPLES * channel_count],
            last_len: 0,
        })
    }

    /// Runs the decoder into at most `samples` per channel of the buffer.
    fn run(&mut self, packet: &[u8], fec: bool, samples: usize) -> Result<&[f32], CodecError> {
        let len = samples.min(MAX_PACKET_SAMPLES) * self.channels;
        let n = self
            .decoder
            .decode_float(packet, &mut self.buffer[..len], fec)?;
        self.last_len = n * self.channels;
        Ok(self.last())
    }

    /// The samples of the last successful call (empty before the first).
    pub fn last(&self) -> &[f32] {
        &self.buffer[..self.last_len]
    }

    /// Decodes a received packet.
    pub fn decode(&mut self, packet: &[u8]) -> Result<&[f32], CodecError> {
        if packet.is_empty() {
            return Err(CodecError::EmptyPacket);
        }
        self.run(packet, false, MAX_PACKET_SAMPLES)
    }

    /// Recovers the frame *before* `next` from `next`'s in-band FEC (concealment if it carries none).
    pub fn recover_from(&mut self, next: &[u8]) -> Result<&[f32], CodecError> {
        self.run(next, true, self.frame.samples())
    }

    /// Conceals one lost frame (packet-loss concealment).
    pub fn conceal(&mut self) -> Result<&[f32], CodecError> {
        self.conceal_samples(self.frame.samples())
    }

    /// Conceals `samples` per channel (a multiple of 2.5 ms; e.g. one 10 ms output period).
    pub fn conceal_samples(&mut self, samples: usize) -> Result<&[f32], CodecError> {
        self.run(&[], false, samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::analysis::{dominant_frequency, level_dbfs};
    use crate::audio::source::{AudioSource, ToneSource};

    #[test]
    fn a_tone_survives_encoding() {
        for frame in [FrameDuration::Ms10, FrameDuration::Ms20] {
            let mut enc = VoiceEncoder::new(VoiceSettings {
                frame,
                ..Default::default()
            })
            .unwrap();
            let mut dec = VoiceDecoder::new(frame, false).unwrap();
            let mut tone = ToneSource::new(440.0, 0.5);
            let mut decoded = Vec::new();
            let mut pcm = vec![0.0; enc.frame_len()];
            for _ in 0..(1000 / frame.millis()) {
                tone.fill(&mut pcm);
                let packet = enc.encode(&pcm).unwrap();
                assert!(packet.len() < 200, "{} bytes", packet.len());
                decoded.extend(dec.decode(&packet).unwrap());
            }
            assert_eq!(decoded.len(), 48_000);
            let tail = &decoded[4800..];
            assert!((dominant_frequency(tail, SAMPLE_RATE) - 440.0).abs() < 2.0);
            assert!((level_dbfs(tail) - level_dbfs(&pcm)).abs() < 3.0);
        }
    }

    #[test]
    fn fec_recovers_what_concealment_cannot() {
        // Alternating 300 Hz and 900 Hz frames: concealment extrapolates the last frame (300 Hz);
        // the FEC copy in the next packet carries the lost one (900 Hz).
        let frame = FrameDuration::Ms20;
        let mut enc = VoiceEncoder::new(VoiceSettings {
            expected_loss_percent: 20,
            ..Default::default()
        })
        .unwrap();
        let (mut low, mut high) = (ToneSource::new(300.0, 0.5), ToneSource::new(900.0, 0.5));
        let mut packets = Vec::new();
        let mut pcm = vec![0.0; enc.frame_len()];
        for i in 0..60 {
            if (i / 5) % 2 == 0 {
                low.fill(&mut pcm);
            } else {
                high.fill(&mut pcm);
            }
            packets.push(enc.encode(&pcm).unwrap());
        }
        // Frame 45 is the first of a 900 Hz run; it is lost.
        let lost = 45;
        let mut with_fec = VoiceDecoder::new(frame, false).unwrap();
        let mut with_plc = VoiceDecoder::new(frame, false).unwrap();
        for p in &packets[..lost] {
            with_fec.decode(p).unwrap();
            with_plc.decode(p).unwrap();
        }
        let recovered = with_fec.recover_from(&packets[lost + 1]).unwrap().to_vec();
        let concealed = with_plc.conceal().unwrap().to_vec();
        assert_eq!(recovered.len(), frame.samples());
        let f_rec = dominant_frequency(&recovered, SAMPLE_RATE);
        let f_plc = dominant_frequency(&concealed, SAMPLE_RATE);
        assert!((f_rec - 900.0).abs() < 60.0, "FEC gave {f_rec} Hz");
        assert!((f_plc - 900.0).abs() > 200.0, "PLC gave {f_plc} Hz");
    }
}
