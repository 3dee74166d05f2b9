//! [`I420Frame`]: a raw picture in planar YUV 4:2:0 (BT.601, limited range), tightly packed, the
//! format every video source produces and the encoder takes; and the luma PSNR that tests and the
//! listener use to judge a decoded picture against what was sent.
use openh264::formats::YUVSource;

/// A picture: the Y plane (width × height), then U and V (each width/2 × height/2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct I420Frame {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl I420Frame {
    /// A black picture. Width and height are rounded down to even numbers (4:2:0 needs them even).
    pub fn black(width: usize, height: usize) -> Self {
        let (width, height) = (width & !1, height & !1);
        let luma = width * height;
        let mut data = vec![16u8; luma + luma / 2];
        data[luma..].fill(128);
        I420Frame {
            width,
            height,
            data,
        }
    }

    /// Copies planes with arbitrary strides (a decoder's output) into a packed frame.
    pub fn from_planes(
        width: usize,
        height: usize,
        planes: [&[u8]; 3],
        strides: [usize; 3],
    ) -> Self {
        let mut frame = I420Frame::black(width, height);
        let (width, height) = (frame.width, frame.height);
        let (y, u, v) = frame.planes_mut();
        copy_plane(y, width, height, planes[0], strides[0]);
        copy_plane(u, width / 2, height / 2, planes[1], strides[1]);
        copy_plane(v, width / 2, height / 2, planes[2], strides[2]);
        frame
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The luma plane.
    pub fn luma(&self) -> &[u8] {
        &self.data[..self.width * self.height]
    }

    /// The three planes, writable.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let luma = self.width * self.height;
        let (y, chroma) = self.data.split_at_mut(luma);
        let (u, v) = chroma.split_at_mut(luma / 4);
        (y, u, v)
    }

    /// All bytes (Y, U, V).
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The picture as RGBA (BT.601, limited range, fixed point), written into `rgba` (resized to
    /// width × height × 4).
    pub fn write_rgba(&self, rgba: &mut Vec<u8>) {
        let (width, height) = (self.width, self.height);
        rgba.resize(width * height * 4, 0);
        let (y_plane, u_plane, v_plane) = (self.y(), self.u(), self.v());
        for row in 0..height {
            let luma = &y_plane[row * width..(row + 1) * width];
            let chroma = (row / 2) * (width / 2);
            let out = &mut rgba[row * width * 4..(row + 1) * width * 4];
            for (col, (pixel, &y)) in out.chunks_exact_mut(4).zip(luma).enumerate() {
                let c = 298 * (i32::from(y) - 16);
                let d = i32::from(u_plane[chroma + col / 2]) - 128;
                let e = i32::from(v_plane[chroma + col / 2]) - 128;
                let clamp = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
                pixel[0] = clamp(c + 409 * e);
                pixel[1] = clamp(c - 100 * d - 208 * e);
                pixel[2] = clamp(c + 516 * d);
                pixel[3] = 255;
            }
        }
    }
}

fn copy_plane(dst: &mut [u8], width: usize, height: usize, src: &[u8], stride: usize) {
    for row in 0..height {
        let Some(line) = src.get(row * stride..row * stride + width) else {
            return;
        };
        dst[row * width..(row + 1) * width].copy_from_slice(line);
    }
}

impl YUVSource for I420Frame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }

    fn y(&self) -> &[u8] {
        self.luma()
    }

    fn u(&self) -> &[u8] {
        let luma = self.width * self.height;
        &self.data[luma..luma + luma / 4]
    }

    fn v(&self) -> &[u8] {
        let luma = self.width * self.height;
        &self.data[luma + luma / 4..]
    }
}

/// Peak signal-to-noise ratio of the luma planes, dB (`f64::INFINITY` when identical). `None` when
/// the sizes differ.
pub fn luma_psnr(reference: &I420Frame, picture: &I420Frame) -> Option<f64> {
    if (reference.width, reference.height) != (picture.width, picture.height) {
        return None;
    }
    let squared: u64 = reference
        .luma()
        .iter()
        .zip(picture.luma())
        .map(|(a, b)| {
            let d = u64::from(a.abs_diff(*b));
            d * d
        })
        .sum();
    if squared == 0 {
        return Some(f64::INFINITY);
    }
    let mse = squared as f64 / reference.luma().len() as f64;
    Some(10.0 * (255.0f64 * 255.0 / mse).log10())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planes_are_packed_and_psnr_measures_the_difference() {
        let mut a = I420Frame::black(8, 4);
        assert_eq!(a.as_bytes().len(), 8 * 4 * 3 / 2);
        assert_eq!((a.u().len(), a.v().len()), (8, 8));
        let b = a.clone();
        assert_eq!(luma_psnr(&a, &b), Some(f64::INFINITY));
        // One luma sample off by 16 over 32 samples: MSE 8, PSNR 10·log10(65025/8) ≈ 39.1 dB.
        a.planes_mut().0[5] += 16;
        let psnr = luma_psnr(&a, &b).unwrap();
        assert!((psnr - 39.1).abs() < 0.1, "{psnr}");
        assert_eq!(luma_psnr(&a, &I420Frame::black(4, 4)), None);
    }

    #[test]
    fn rgba_conversion_gives_black_white_and_red() {
        let mut f = I420Frame::black(4, 2);
        let (y, u, v) = f.planes_mut();
        y[1] = 235; // white: full luma, neutral chroma (U, V of the left pair stay 128)
        y[2] = 81; // BT.601 red: Y 81, U 90, V 240 (right pair)
        y[3] = 81;
        u[1] = 90;
        v[1] = 240;
        let mut rgba = Vec::new();
        f.write_rgba(&mut rgba);
        assert_eq!(rgba.len(), 4 * 2 * 4);
        assert_eq!(&rgba[0..4], &[0, 0, 0, 255]);
        assert_eq!(&rgba[4..8], &[255, 255, 255, 255]);
        let red = &rgba[8..12];
        assert!(red[0] > 245 && red[1] < 10 && red[2] < 10, "{red:?}");
    }

    #[test]
    fn strided_planes_are_copied_without_their_padding() {
        let y: Vec<u8> = (0..4 * 6).map(|i| i as u8).collect(); // 4 rows, stride 6, width 4
        let u = [1u8, 2, 9, 3, 4, 9];
        let v = [5u8, 6, 9, 7, 8, 9];
        let f = I420Frame::from_planes(4, 4, [&y, &u, &v], [6, 3, 3]);
        assert_eq!(&f.luma()[..8], &[0, 1, 2, 3, 6, 7, 8, 9]);
        assert_eq!(f.u(), &[1, 2, 3, 4]);
        assert_eq!(f.v(), &[5, 6, 7, 8]);
    }
}
