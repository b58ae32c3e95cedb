//! Pictures for people: an RGB canvas onto which volume slices, labels, lines and text are
//! drawn, saved as PNG (atomically). Montages of augmentations, prediction overlays and
//! loss curves are built on it.

use std::path::Path;

use ndarray::ArrayView2;

use crate::atomic::AtomicFile;
use crate::{IoError, Result};

/// An RGB colour.
pub type Rgb = [u8; 3];

/// An 8-bit RGB image in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    /// A `width × height` canvas filled with `background`.
    pub fn new(width: usize, height: usize, background: Rgb) -> Self {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            pixels.extend_from_slice(&background);
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The colour at `(x, y)` (`None` outside).
    pub fn get(&self, x: usize, y: usize) -> Option<Rgb> {
        (x < self.width && y < self.height).then(|| {
            let i = (y * self.width + x) * 3;
            [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
        })
    }

    /// Sets `(x, y)`; points outside are ignored, so shapes may run off the edge.
    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Draws a 2-D array as grey levels at `(x0, y0)`, `lo` black and `hi` white, each
    /// element `scale × scale` pixels; NaN is drawn red.
    pub fn gray(
        &mut self,
        x0: usize,
        y0: usize,
        a: ArrayView2<'_, f32>,
        lo: f32,
        hi: f32,
        scale: usize,
    ) {
        let span = if hi > lo { hi - lo } else { 1.0 };
        for ((r, c), &v) in a.indexed_iter() {
            let col = if v.is_nan() {
                [220, 30, 30]
            } else {
                let g = (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8;
                [g, g, g]
            };
            self.block(x0 + c * scale, y0 + r * scale, scale, col);
        }
    }

    /// Draws a label slice with a distinct colour per id (0 black) at `(x0, y0)`.
    pub fn labels(&mut self, x0: usize, y0: usize, a: ArrayView2<'_, u32>, scale: usize) {
        for ((r, c), &v) in a.indexed_iter() {
            self.block(x0 + c * scale, y0 + r * scale, scale, label_colour(v));
        }
    }

    fn block(&mut self, x: usize, y: usize, scale: usize, c: Rgb) {
        for dy in 0..scale {
            for dx in 0..scale {
                self.set((x + dx) as i64, (y + dy) as i64, c);
            }
        }
    }

    /// A straight line (Bresenham).
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// ASCII text in an 8×8 bitmap font, `scale` pixels per font pixel, top-left at
    /// `(x, y)`; returns the width drawn.
    pub fn text(&mut self, x: usize, y: usize, s: &str, c: Rgb, scale: usize) -> usize {
        let mut cx = x;
        for ch in s.chars() {
            let glyph = font8x8::legacy::BASIC_LEGACY
                .get(ch as usize)
                .copied()
                .unwrap_or(font8x8::legacy::BASIC_LEGACY[b'?' as usize]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.block(cx + col * scale, y + row * scale, scale, c);
                    }
                }
            }
            cx += 8 * scale;
        }
        cx - x
    }

    /// Writes the canvas as an RGB PNG; the file appears only once complete.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut file = AtomicFile::create(path)?;
        {
            let corrupt = |e: png::EncodingError| IoError::Corrupt {
                path: path.to_path_buf(),
                format: "PNG",
                reason: e.to_string(),
            };
            let mut enc = png::Encoder::new(&mut file, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(corrupt)?;
            w.write_image_data(&self.pixels).map_err(corrupt)?;
            w.finish().map_err(corrupt)?;
        }
        file.commit()
    }
}

/// A stable, well-spread colour for a label id (0 is black).
pub fn label_colour(id: u32) -> Rgb {
    if id == 0 {
        return [0, 0, 0];
    }
    let h = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    [
        64 + (h >> 56) as u8 % 192,
        64 + (h >> 40) as u8 % 192,
        64 + (h >> 24) as u8 % 192,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawing_and_png_round_trip() {
        let mut c = Canvas::new(40, 20, [255, 255, 255]);
        let a = ndarray::arr2(&[[0.0f32, 1.0], [0.5, f32::NAN]]);
        c.gray(0, 0, a.view(), 0.0, 1.0, 2);
        assert_eq!(c.get(0, 0), Some([0, 0, 0]));
        assert_eq!(c.get(2, 0), Some([255, 255, 255]));
        assert_eq!(c.get(0, 2), Some([128, 128, 128]));
        assert_eq!(c.get(3, 3), Some([220, 30, 30]));
        assert_eq!(c.text(10, 0, "A", [255, 0, 0], 1), 8);
        assert!((10..18).any(|x| (0..8).any(|y| c.get(x, y) == Some([255, 0, 0]))));
        c.line((0, 19), (39, 19), [0, 0, 255]);
        assert_eq!(c.get(39, 19), Some([0, 0, 255]));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.png");
        c.save_png(&p).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (40, 20));
        assert_eq!(&buf[..info.buffer_size()], &c.pixels[..]);
        // A directory that does not exist: an error naming it, and nothing left behind.
        let bad = dir.path().join("missing/c.png");
        assert!(c
            .save_png(&bad)
            .unwrap_err()
            .to_string()
            .contains("missing"));
    }
}

/// A line chart of `values` (x = 1, 2, …) with a title, min/max labels and the last value:
/// loss curves and metric histories at a glance. Non-finite values are skipped.
pub fn line_chart(title: &str, values: &[f64], width: usize, height: usize) -> Canvas {
    let mut c = Canvas::new(width, height, [255, 255, 255]);
    let (left, right, top, bottom) = (70usize, 16usize, 30usize, 24usize);
    c.text(8, 8, title, [20, 20, 20], 1);
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let (pw, ph) = (
        width.saturating_sub(left + right).max(1),
        height.saturating_sub(top + bottom).max(1),
    );
    let axis = [120, 120, 120];
    c.line(
        (left as i64, top as i64),
        (left as i64, (top + ph) as i64),
        axis,
    );
    c.line(
        (left as i64, (top + ph) as i64),
        ((left + pw) as i64, (top + ph) as i64),
        axis,
    );
    if finite.is_empty() {
        c.text(left + 8, top + ph / 2, "no finite values", [200, 30, 30], 1);
        return c;
    }
    let span = if hi > lo { hi - lo } else { 1.0 };
    c.text(4, top, &format!("{hi:.4}"), axis, 1);
    c.text(4, top + ph - 8, &format!("{lo:.4}"), axis, 1);
    c.text(left, top + ph + 8, "1", axis, 1);
    let n = values.len().max(1);
    let label = format!("{n}");
    c.text(
        (left + pw).saturating_sub(8 * label.len()),
        top + ph + 8,
        &label,
        axis,
        1,
    );
    let point = |i: usize, v: f64| -> (i64, i64) {
        let x = left as f64
            + if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.5
            } * pw as f64;
        let y = top as f64 + (1.0 - (v - lo) / span) * ph as f64;
        (x.round() as i64, y.round() as i64)
    };
    let mut prev = None;
    for (i, &v) in values.iter().enumerate() {
        if !v.is_finite() {
            prev = None;
            continue;
        }
        let p = point(i, v);
        if let Some(q) = prev {
            c.line(q, p, [30, 90, 200]);
        } else {
            c.set(p.0, p.1, [30, 90, 200]);
        }
        prev = Some(p);
    }
    if let Some(last) = finite.last() {
        let s = format!("last {last:.4}");
        c.text(
            (width.saturating_sub(8 * s.len() + 8)).max(left),
            8,
            &s,
            [30, 90, 200],
            1,
        );
    }
    c
}

#[cfg(test)]
mod chart_tests {
    use super::*;

    #[test]
    fn a_falling_curve_is_drawn_from_top_left_to_bottom_right() {
        let c = line_chart("loss", &[1.0, 0.5, 0.25, f64::NAN, 0.1], 200, 120);
        let blue = |x: usize, y: usize| c.get(x, y) == Some([30, 90, 200]);
        // First point at the top of the plot area, last at the bottom.
        assert!(blue(70, 30));
        assert!(blue(184, 96));
        let empty = line_chart("nothing", &[f64::NAN], 200, 120);
        assert!((0..200).all(|x| (0..120).all(|y| empty.get(x, y) != Some([30, 90, 200]))));
    }
}
