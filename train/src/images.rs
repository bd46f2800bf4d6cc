//! Image sets for Vision Mamba (`model/src/vision.rs`), read from the formats users have:
//!
//! - MNIST / Fashion-MNIST IDX files: `*-images-idx3-ubyte` (magic 0x00000803, count, rows,
//!   columns, then one byte a pixel) beside `*-labels-idx1-ubyte` (magic 0x00000801, count,
//!   then one byte a label);
//! - CIFAR-10 binary batches (`data_batch_1.bin` ..): records of one label byte and 3072
//!   pixel bytes, 1024 per channel (red, green, blue), each 32 x 32 row-major;
//! - CSV: one image a line, its pixels (whole numbers) then its label, as the 8 x 8 digits
//!   scikit-learn ships (`digits.csv`, pixels 0 to 16); square single-channel images.
//!
//! Pixels become f32 in [0, 1] (divided by the largest pixel value of the format: 255, or
//! the largest in a CSV file). Nothing is downloaded.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Images of one shape, and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// N · C · H · W pixels in [0, 1], image after image, each (C, H, W) row-major.
    pub pixels: Vec<f32>,
    pub labels: Vec<usize>,
    /// 1 + the largest label.
    pub classes: usize,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of one image.
    pub fn image(&self, i: usize) -> &[f32] {
        let size = self.channels * self.height * self.width;
        &self.pixels[i * size..][..size]
    }
}

fn bad(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Settings(format!("{}: {what}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(Error::io(format!("cannot read {}", path.display())))
}

/// An image set from `path`, by its name: an IDX images file (its labels file beside it,
/// `images` in the name replaced by `labels` and `idx3` by `idx1`), a CIFAR-10 `.bin` batch,
/// or a `.csv` file.
pub fn read_images(path: &Path) -> Result<ImageSet> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name.contains("idx3") {
        let labels = path.with_file_name(name.replace("images", "labels").replace("idx3", "idx1"));
        return read_idx(path, &labels);
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("bin") => read_cifar10(&[path.to_path_buf()]),
        Some("csv") => read_csv(path),
        _ => Err(bad(path, "not an image set this project reads: an IDX images file (*-images-idx3-ubyte), a CIFAR-10 batch (*.bin) or a CSV file (*.csv)")),
    }
}

/// MNIST-style IDX: `images` (u8, N x rows x columns) and `labels` (u8, N).
pub fn read_idx(images: &Path, labels: &Path) -> Result<ImageSet> {
    let (img, lab) = (read(images)?, read(labels)?);
    let word =
        |b: &[u8], i: usize| b.get(4 * i..4 * i + 4).map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as usize);
    if word(&img, 0) != Some(0x803) {
        return Err(bad(images, "not an IDX images file (its first 4 bytes must be 0x00000803)"));
    }
    if word(&lab, 0) != Some(0x801) {
        return Err(bad(labels, "not an IDX labels file (its first 4 bytes must be 0x00000801)"));
    }
    let (Some(n), Some(rows), Some(cols), Some(m)) = (word(&img, 1), word(&img, 2), word(&img, 3), word(&lab, 1))
    else {
        return Err(bad(images, "the IDX header is cut short"));
    };
    if n != m {
        return Err(bad(labels, format!("{m} labels for the {n} images of {}", images.display())));
    }
    let size = rows.checked_mul(cols).and_then(|s| s.checked_mul(n));
    let (Some(pixels), Some(labels_bytes)) = (size.and_then(|s| img.get(16..16 + s)), lab.get(8..8 + n)) else {
        return Err(bad(images, format!("shorter than its header says ({n} images of {rows} x {cols})")));
    };
    let labels = labels_bytes.iter().map(|&l| l as usize).collect();
    set(1, rows, cols, pixels.iter().map(|&p| p as f32 / 255.0).collect(), labels, images)
}

/// CIFAR-10 binary batches, concatenated: 32 x 32 RGB images with labels 0 to 9.
pub fn read_cifar10(batches: &[PathBuf]) -> Result<ImageSet> {
    const RECORD: usize = 1 + 3 * 32 * 32;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for path in batches {
        let bytes = read(path)?;
        if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
            return Err(bad(
                path,
                format!("{} bytes is not a whole number of CIFAR-10 records of {RECORD}", bytes.len()),
            ));
        }
        for record in bytes.chunks(RECORD) {
            labels.push(record[0] as usize);
            pixels.extend(record[1..].iter().map(|&p| p as f32 / 255.0));
        }
    }
    let first = batches.first().map(PathBuf::as_path).unwrap_or(Path::new("(no batch)"));
    set(3, 32, 32, pixels, labels, first)
}

/// A CSV file of square one-channel images: each line its pixels, then its label.
pub fn read_csv(path: &Path) -> Result<ImageSet> {
    let text = String::from_utf8(read(path)?).map_err(|_| bad(path, "not UTF-8 text"))?;
    let (mut pixels, mut labels, mut width) = (Vec::new(), Vec::new(), None);
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let values: Vec<u32> = line
            .split(',')
            .map(|v| v.trim().parse::<u32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad(path, format!("line {}: expected whole numbers separated by commas", i + 1)))?;
        let Some((&label, row)) = values.split_last() else { continue };
        if *width.get_or_insert(row.len()) != row.len() {
            return Err(bad(path, format!("line {}: {} pixels where the first line has {width:?}", i + 1, row.len())));
        }
        labels.push(label as usize);
        pixels.extend(row.iter().map(|&p| p as f32));
    }
    let n = width.unwrap_or(0);
    let side = (n as f64).sqrt().round() as usize;
    if n == 0 || side * side != n {
        return Err(bad(path, format!("{n} pixels a line is not a square image")));
    }
    let top = pixels.iter().fold(0f32, |a, &p| a.max(p)).max(1.0);
    pixels.iter_mut().for_each(|p| *p /= top);
    set(1, side, side, pixels, labels, path)
}

fn set(
    channels: usize,
    height: usize,
    width: usize,
    pixels: Vec<f32>,
    labels: Vec<usize>,
    path: &Path,
) -> Result<ImageSet> {
    if labels.is_empty() {
        return Err(bad(path, "holds no image"));
    }
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    if classes < 2 {
        return Err(bad(path, "every image has the same label: a classifier needs two classes or more"));
    }
    Ok(ImageSet { channels, height, width, pixels, labels, classes })
}

/// A small image set for tests and demos, made here (nothing shipped or downloaded): 8 x 8
/// one-channel images of a bright bar on a noisy background, label 0 for a horizontal bar,
/// 1 for a vertical one, 2 for a diagonal, at a random place.
pub fn bars(count: usize, seed: u64) -> ImageSet {
    let mut rng = mamba_engine::Rng::new(seed);
    let (mut pixels, mut labels) = (Vec::with_capacity(count * 64), Vec::with_capacity(count));
    for _ in 0..count {
        let (label, at) = (rng.below(3), rng.below(8));
        let on = |y: usize, x: usize| match label {
            0 => y == at,
            1 => x == at,
            _ => (x + 8 - y) % 8 == at,
        };
        for y in 0..8 {
            for x in 0..8 {
                let noise = 0.3 * rng.uniform() as f32;
                pixels.push(if on(y, x) { 0.7 + noise } else { noise });
            }
        }
        labels.push(label);
    }
    ImageSet { channels: 1, height: 8, width: 8, pixels, labels, classes: 3 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mamba-images-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn idx_files_read_with_their_labels() {
        let d = dir("idx");
        let mut img = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        img.extend([0, 51, 102, 153, 204, 255, 255, 0, 0, 0, 0, 0]);
        std::fs::write(d.join("t10k-images-idx3-ubyte"), &img).unwrap();
        std::fs::write(d.join("t10k-labels-idx1-ubyte"), [0, 0, 8, 1, 0, 0, 0, 2, 7, 1]).unwrap();
        let set = read_images(&d.join("t10k-images-idx3-ubyte")).unwrap();
        assert_eq!((set.channels, set.height, set.width, set.classes), (1, 2, 3, 8));
        assert_eq!(set.labels, [7, 1]);
        assert_eq!(set.image(0), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        std::fs::write(d.join("t10k-labels-idx1-ubyte"), [0, 0, 8, 1, 0, 0, 0, 3, 7, 1, 2]).unwrap();
        let err = read_images(&d.join("t10k-images-idx3-ubyte")).unwrap_err().to_string();
        assert!(err.contains("3 labels for the 2 images"), "{err}");
        std::fs::write(d.join("t10k-images-idx3-ubyte"), &img[..20]).unwrap();
        std::fs::write(d.join("t10k-labels-idx1-ubyte"), [0, 0, 8, 1, 0, 0, 0, 2, 7, 1]).unwrap();
        let err = read_images(&d.join("t10k-images-idx3-ubyte")).unwrap_err().to_string();
        assert!(err.contains("shorter than its header says"), "{err}");
    }

    #[test]
    fn cifar_batches_read_channel_planes() {
        let d = dir("cifar");
        let mut record = vec![3u8];
        record.extend((0..3072).map(|i| (i / 1024) as u8 * 100)); // red 0, green 100, blue 200
        let mut other = record.clone();
        other[0] = 9;
        std::fs::write(d.join("data_batch_1.bin"), [record, other].concat()).unwrap();
        let set = read_images(&d.join("data_batch_1.bin")).unwrap();
        assert_eq!((set.len(), set.channels, set.classes, &set.labels[..]), (2, 3, 10, &[3, 9][..]));
        assert_eq!((set.image(1)[0], set.image(1)[1024], set.image(1)[3071]), (0.0, 100.0 / 255.0, 200.0 / 255.0));
        std::fs::write(d.join("cut.bin"), [1u8; 100]).unwrap();
        assert!(read_images(&d.join("cut.bin")).unwrap_err().to_string().contains("not a whole number"));
    }

    #[test]
    fn csv_lines_are_square_images_and_a_label() {
        let d = dir("csv");
        std::fs::write(d.join("digits.csv"), "0,8,16,4,1\n16,0,0,0,0\n\n").unwrap();
        let set = read_images(&d.join("digits.csv")).unwrap();
        assert_eq!((set.height, set.width, &set.labels[..]), (2, 2, &[1, 0][..]));
        assert_eq!(set.image(0), [0.0, 0.5, 1.0, 0.25]);
        std::fs::write(d.join("bad.csv"), "0,8,16,1\n").unwrap();
        assert!(read_images(&d.join("bad.csv")).unwrap_err().to_string().contains("not a square image"));
        std::fs::write(d.join("ragged.csv"), "0,8,16,4,1\n1,2,0\n").unwrap();
        assert!(read_images(&d.join("ragged.csv")).unwrap_err().to_string().contains("line 2"));
        assert!(read_images(&d.join("x.png")).unwrap_err().to_string().contains("not an image set"));
    }

    #[test]
    fn bars_are_balanced_and_labelled_by_their_orientation() {
        let set = bars(300, 1);
        let count = |c: usize| set.labels.iter().filter(|&&l| l == c).count();
        assert!((0..3).all(|c| count(c) > 70), "{:?}", (0..3).map(count).collect::<Vec<_>>());
        // a horizontal bar: one row much brighter than the rest
        let i = set.labels.iter().position(|&l| l == 0).unwrap();
        let rows: Vec<f32> = set.image(i).chunks(8).map(|r| r.iter().sum()).collect();
        assert_eq!(rows.iter().filter(|&&r| r > 5.0).count(), 1, "{rows:?}");
    }
}
