//! The synthetic camera: a moving test pattern that carries its own frame number and capture time in
//! its pixels, so a receiver can check what arrived with nothing but the decoded picture.
//!
//! The top band is a stamp of 96 black/white blocks (4 rows × 24): the frame number (32 bits), the low
//! 48 bits of the capture time in µs, and a 16-bit check. Big blocks survive lossy coding; the check
//! rejects a misread. Below it a diagonal luma gradient scrolls and a coloured box moves, both fixed
//! functions of the frame number, so [`PatternSource::expected`] redraws exactly what was sent and
//! a receiver can measure PSNR against it.
use crate::video::VideoError;
use crate::video::frame::I420Frame;
use crate::video::source::VideoSource;

const STAMP_ROWS: usize = 4;
const STAMP_COLUMNS: usize = 24;
const STAMP_BITS: usize = STAMP_ROWS * STAMP_COLUMNS;
const BLOCK_HEIGHT: usize = 16;
const BLACK: u8 = 16;
const WHITE: u8 = 235;
/// 2^48: the stamp carries the capture time modulo this.
const TIME_MODULUS: u64 = 1 << 48;

/// What the stamp of a pattern frame says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The frame number (0 for the first frame).
    pub frame: u32,
    /// The capture time in µs since the Unix epoch, modulo 2^48 (see [`Stamp::capture_us_near`]).
    pub capture_low: u64,
}

impl Stamp {
    /// The full capture time: the value with these low bits closest to `reference_us` (a receiver's
    /// clock; 2^48 µs is almost nine years, so any clock within years of the sender's picks right).
    pub fn capture_us_near(&self, reference_us: u64) -> u64 {
        let base = reference_us - reference_us % TIME_MODULUS;
        [
            base.wrapping_sub(TIME_MODULUS),
            base,
            base.wrapping_add(TIME_MODULUS),
        ]
        .into_iter()
        .map(|b| b.wrapping_add(self.capture_low))
        .min_by_key(|t| t.abs_diff(reference_us))
        .unwrap_or(self.capture_low)
    }

    fn bits(&self) -> [bool; STAMP_BITS] {
        let check = check_bits(self.frame, self.capture_low);
        let word: u128 = (u128::from(self.frame) << 64)
            | (u128::from(self.capture_low) << 16)
            | u128::from(check);
        std::array::from_fn(|i| (word >> (STAMP_BITS - 1 - i)) & 1 == 1)
    }
}

fn check_bits(frame: u32, capture_low: u64) -> u16 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ (u64::from(frame) << 20) ^ capture_low;
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 32;
    (h & 0xffff) as u16
}

/// Block geometry of the stamp for a picture size: (block width, stamp height).
fn stamp_geometry(width: usize) -> (usize, usize) {
    (width / STAMP_COLUMNS, STAMP_ROWS * BLOCK_HEIGHT)
}

/// Smallest picture the pattern supports.
pub const MIN_SIZE: (usize, usize) = (96, 96);

/// A moving test pattern at a fixed size and frame rate.
pub struct PatternSource {
    width: usize,
    height: usize,
    fps: u32,
    next: u32,
}

impl PatternSource {
    /// A pattern of `width` × `height` (even, at least [`MIN_SIZE`]) at `fps` frames per second.
    pub fn new(width: usize, height: usize, fps: u32) -> Result<Self, VideoError> {
        if width < MIN_SIZE.0 || height < MIN_SIZE.1 || fps == 0 || fps > 120 {
            return Err(VideoError::Invalid(format!(
                "pattern {width}x{height} at {fps} fps: need at least {}x{} and 1–120 fps",
                MIN_SIZE.0, MIN_SIZE.1
            )));
        }
        Ok(PatternSource {
            width: width & !1,
            height: height & !1,
            fps,
            next: 0,
        })
    }

    /// Draws frame `frame` captured at `capture_us`, exactly as the source sends it.
    pub fn expected(width: usize, height: usize, frame: u32, capture_us: u64) -> I420Frame {
        let mut picture = I420Frame::black(width, height);
        draw(&mut picture, frame, capture_us % TIME_MODULUS);
        picture
    }
}

impl VideoSource for PatternSource {
    fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn frame_rate(&self) -> u32 {
        self.fps
    }

    fn next_frame(&mut self, capture_us: u64) -> Result<I420Frame, VideoError> {
        let picture = PatternSource::expected(self.width, self.height, self.next, capture_us);
        self.next = self.next.wrapping_add(1);
        Ok(picture)
    }

    fn describe(&self) -> String {
        format!(
            "test pattern {}x{} at {} fps",
            self.width, self.height, self.fps
        )
    }
}

/// A triangle wave over 0..period mapped to `low..=high`.
fn triangle(period: usize, low: u8, high: u8) -> Vec<u8> {
    let half = period / 2;
    (0..period)
        .map(|t| {
            let v = if t < half { t } else { period - 1 - t };
            low + (v * usize::from(high - low) / (half - 1)) as u8
        })
        .collect()
}

fn draw(picture: &mut I420Frame, frame: u32, capture_low: u64) {
    let (width, height) = (picture.width(), picture.height());
    let n = frame as usize;
    let (block_width, stamp_height) = stamp_geometry(width);
    let luma_wave = triangle(512, BLACK, WHITE);
    let chroma_wave = triangle(128, 88, 168);
    let box_size = (height / 4) & !1;
    let box_x = ((n * 8) % (width - box_size)) & !1;
    let box_y = (stamp_height + (n * 3) % (height - stamp_height - box_size)) & !1;
    let bits = Stamp { frame, capture_low }.bits();
    let (y_plane, u_plane, v_plane) = picture.planes_mut();
    for (y, row) in y_plane.chunks_exact_mut(width).enumerate() {
        if y < stamp_height {
            let bit_row = y / BLOCK_HEIGHT;
            for (x, px) in row.iter_mut().enumerate() {
                let column = x / block_width.max(1);
                *px = match bits.get(bit_row * STAMP_COLUMNS + column) {
                    Some(true) if column < STAMP_COLUMNS => WHITE,
                    _ => BLACK,
                };
            }
            continue;
        }
        let base = 2 * y + 6 * n;
        for (x, px) in row.iter_mut().enumerate() {
            *px = luma_wave[(x + base) & 511];
        }
        if (box_y..box_y + box_size).contains(&y) {
            row[box_x..box_x + box_size].fill(WHITE);
        }
    }
    let chroma_width = width / 2;
    for (cy, (u_row, v_row)) in u_plane
        .chunks_exact_mut(chroma_width)
        .zip(v_plane.chunks_exact_mut(chroma_width))
        .enumerate()
    {
        let y = cy * 2;
        if y < stamp_height {
            u_row.fill(128);
            v_row.fill(128);
            continue;
        }
        let v_value = chroma_wave[(cy + 2 * n) & 127];
        for (cx, (u, v)) in u_row.iter_mut().zip(v_row.iter_mut()).enumerate() {
            *u = chroma_wave[(cx + n) & 127];
            *v = v_value;
        }
        if (box_y..box_y + box_size).contains(&y) {
            u_row[box_x / 2..(box_x + box_size) / 2].fill(90);
            v_row[box_x / 2..(box_x + box_size) / 2].fill(240);
        }
    }
}

/// Reads the stamp of a (decoded) pattern picture; `None` if there is none or it does not check.
pub fn read_stamp(picture: &I420Frame) -> Option<Stamp> {
    let (width, height) = (picture.width(), picture.height());
    let (block_width, stamp_height) = stamp_geometry(width);
    if block_width < 2 || height < stamp_height {
        return None;
    }
    let luma = picture.luma();
    let mut word: u128 = 0;
    for bit in 0..STAMP_BITS {
        let (row, column) = (bit / STAMP_COLUMNS, bit % STAMP_COLUMNS);
        // The middle half of the block: coding noise at block edges does not matter.
        let x0 = column * block_width + block_width / 4;
        let x1 = (column * block_width + 3 * block_width / 4).max(x0 + 1);
        let y0 = row * BLOCK_HEIGHT + BLOCK_HEIGHT / 4;
        let y1 = row * BLOCK_HEIGHT + 3 * BLOCK_HEIGHT / 4;
        let mut sum = 0u32;
        for y in y0..y1 {
            sum += luma[y * width + x0..y * width + x1]
                .iter()
                .map(|&p| u32::from(p))
                .sum::<u32>();
        }
        let mean = sum / ((x1 - x0) * (y1 - y0)) as u32;
        word = (word << 1) | u128::from(mean > u32::from(BLACK / 2 + WHITE / 2));
    }
    let frame = (word >> 64) as u32;
    let capture_low = ((word >> 16) as u64) & (TIME_MODULUS - 1);
    let check = (word & 0xffff) as u16;
    (check == check_bits(frame, capture_low)).then_some(Stamp { frame, capture_low })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::frame::luma_psnr;

    #[test]
    fn the_stamp_reads_back_and_rejects_a_flipped_block() {
        let mut source = PatternSource::new(320, 240, 30).unwrap();
        let t0 = 1_790_000_000_123_456u64;
        let first = source.next_frame(t0).unwrap();
        let second = source.next_frame(t0 + 33_333).unwrap();
        let a = read_stamp(&first).unwrap();
        let b = read_stamp(&second).unwrap();
        assert_eq!((a.frame, b.frame), (0, 1));
        assert_eq!(a.capture_us_near(t0 + 50_000), t0);
        assert_eq!(b.capture_us_near(t0 - 1_000_000), t0 + 33_333);
        // The picture moves between frames, and `expected` redraws each exactly.
        assert!(luma_psnr(&first, &second).unwrap() < 30.0);
        assert_eq!(PatternSource::expected(320, 240, 1, t0 + 33_333), second);
        // A misread block fails the check rather than giving a wrong number.
        let mut damaged = second.clone();
        let width = damaged.width();
        for y in 0..BLOCK_HEIGHT {
            for x in 0..width / STAMP_COLUMNS {
                let px = &mut damaged.planes_mut().0[y * width + x];
                *px = if *px == WHITE { BLACK } else { WHITE };
            }
        }
        assert_eq!(read_stamp(&damaged), None);
    }

    #[test]
    fn the_stamp_survives_coding_noise() {
        let mut source = PatternSource::new(640, 360, 30).unwrap();
        let mut picture = source.next_frame(42).unwrap();
        // ±30 of noise everywhere (far worse than a 30 dB encode) still reads.
        for (i, px) in picture.planes_mut().0.iter_mut().enumerate() {
            let noise = ((i * 7919) % 61) as i16 - 30;
            *px = (i16::from(*px) + noise).clamp(0, 255) as u8;
        }
        assert_eq!(read_stamp(&picture).map(|s| s.capture_low), Some(42));
    }

    #[test]
    fn sizes_below_the_minimum_are_refused() {
        assert!(PatternSource::new(64, 64, 30).is_err());
        assert!(PatternSource::new(320, 240, 0).is_err());
    }
}
