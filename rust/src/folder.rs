//! Image folders: one subfolder per class (class ids = subfolder names in sorted order), PNG and JPEG
//! files inside (found recursively, in sorted path order), decoded and resized in parallel.
//!
//! Colour is explicit: `channels = 1` gives grayscale (RGB converted with the ITU-R 601-2 weights that
//! PIL's `convert("L")` uses, `L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16`), `channels = 3` gives RGB
//! (grayscale replicated); alpha is dropped; 16-bit images are scaled to 8 bits. `channels = None` keeps
//! the files' own channel count, which must then be the same for every file. Resizing uses a
//! triangle (bilinear) filter whose support widens when downscaling, like PIL's `BILINEAR`; `size =
//! None` keeps the files' own size, which must then be the same for every file.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, ImageReader, Luma, Rgb};
use rayon::prelude::*;

use crate::error::DataError;

pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// A decoded image in planar `[C, H, W]` layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planar {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

/// Images `[N, C, H, W]`, labels, class names (index = label) and the files in store order.
#[derive(Debug, Clone)]
pub struct Folder {
    pub shape: [usize; 4],
    pub images: Vec<u8>,
    pub labels: Vec<i64>,
    pub classes: Vec<String>,
    pub files: Vec<PathBuf>,
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .map(|n| n.to_string_lossy().starts_with('.'))
        .unwrap_or(false)
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .map(|e| EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let name = dir.display().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(&name, &e))? {
        let entry = entry.map_err(|e| DataError::io(&name, &e))?;
        let p = entry.path();
        if !is_hidden(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), DataError> {
    if depth > 32 {
        return Err(DataError::new(
            dir.display().to_string(),
            "folders nested too deeply",
        ));
    }
    for p in sorted_entries(dir)? {
        if p.is_dir() {
            collect_images(&p, out, depth + 1)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Class names, and every image file with its class id.
pub type Scan = (Vec<String>, Vec<(PathBuf, i64)>);

/// The class names (sorted subfolder names) and every image file with its class id.
pub fn scan(root: &Path) -> Result<Scan, DataError> {
    let name = root.display().to_string();
    match std::fs::metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DataError::new(&name, "no such folder"))
        }
        Err(e) => return Err(DataError::io(&name, &e)),
        Ok(m) if !m.is_dir() => return Err(DataError::new(&name, "not a folder")),
        Ok(_) => {}
    }
    let class_dirs: Vec<PathBuf> = sorted_entries(root)?.into_iter().filter(|p| p.is_dir()).collect();
    if class_dirs.is_empty() {
        return Err(DataError::new(
            &name,
            "no class subfolders (expected one subfolder of images per class)",
        ));
    }
    let mut classes = Vec::with_capacity(class_dirs.len());
    let mut files = Vec::new();
    for (label, dir) in class_dirs.iter().enumerate() {
        let mut found = Vec::new();
        collect_images(dir, &mut found, 0)?;
        if found.is_empty() {
            return Err(DataError::new(
                dir.display().to_string(),
                "empty class folder (no .png, .jpg or .jpeg images)",
            ));
        }
        classes.push(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        files.extend(found.into_iter().map(|p| (p, label as i64)));
    }
    Ok((classes, files))
}

/// Decodes PNG/JPEG bytes (format sniffed from the content) to 8-bit grayscale or RGB, resizes to
/// `size = (height, width)` if given, and returns planar data. `channels`: 1, 3 or None (keep).
pub fn decode(
    bytes: &[u8],
    name: &str,
    size: Option<(u32, u32)>,
    channels: Option<usize>,
) -> Result<Planar, DataError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::new(name, format!("cannot read image ({e})")))?;
    match reader.format() {
        Some(image::ImageFormat::Png) | Some(image::ImageFormat::Jpeg) => {}
        Some(f) => {
            return Err(DataError::new(
                name,
                format!("unsupported image format {f:?} (PNG or JPEG only)"),
            ))
        }
        None => return Err(DataError::new(name, "undecodable image (not a PNG or JPEG file)")),
    }
    let img: DynamicImage = reader
        .decode()
        .map_err(|e| DataError::new(name, format!("undecodable image ({e})")))?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(DataError::new(name, "image has zero width or height"));
    }
    let own = if img.color().channel_count() <= 2 { 1 } else { 3 };
    let c = channels.unwrap_or(own);
    if c != 1 && c != 3 {
        return Err(DataError::new(name, format!("channels must be 1 or 3, got {c}")));
    }
    let (th, tw) = size.unwrap_or((h, w));
    if th == 0 || tw == 0 {
        return Err(DataError::new(name, "the target size must be positive"));
    }
    let resize_luma = |g: ImageBuffer<Luma<u8>, Vec<u8>>| {
        if (th, tw) == (h, w) {
            g.into_raw()
        } else {
            image::imageops::resize(&g, tw, th, FilterType::Triangle).into_raw()
        }
    };
    let plane = (th as usize) * (tw as usize);
    let data = if own == 1 || c == 1 {
        let gray = if own == 1 {
            img.into_luma8()
        } else {
            let rgb = img.into_rgb8();
            let l: Vec<u8> = rgb
                .as_raw()
                .chunks_exact(3)
                .map(|p| {
                    ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
                })
                .collect();
            ImageBuffer::from_raw(w, h, l).expect("luma buffer size")
        };
        let g = resize_luma(gray);
        if c == 1 {
            g
        } else {
            let mut out = Vec::with_capacity(3 * plane);
            for _ in 0..3 {
                out.extend_from_slice(&g);
            }
            out
        }
    } else {
        let rgb: ImageBuffer<Rgb<u8>, Vec<u8>> = img.into_rgb8();
        let rgb = if (th, tw) == (h, w) {
            rgb
        } else {
            image::imageops::resize(&rgb, tw, th, FilterType::Triangle)
        };
        let raw = rgb.as_raw();
        let mut out = vec![0u8; 3 * plane];
        for (k, px) in raw.chunks_exact(3).enumerate() {
            out[k] = px[0];
            out[plane + k] = px[1];
            out[2 * plane + k] = px[2];
        }
        out
    };
    Ok(Planar {
        channels: c,
        height: th as usize,
        width: tw as usize,
        data,
    })
}

/// Reads a file and decodes it (see [`decode`]).
pub fn decode_file(
    path: &Path,
    size: Option<(u32, u32)>,
    channels: Option<usize>,
) -> Result<Planar, DataError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| DataError::io(&name, &e))?;
    decode(&bytes, &name, size, channels)
}

/// When to draw a progress bar (on stderr, only if it is a terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Never,
    Always,
    /// Only for loads of at least this many files.
    Auto(usize),
}

/// Loads an image folder into one `[N, C, H, W]` store (see the module docs). Files are decoded in
/// parallel in the current rayon pool, each written straight into its slot of the store. On failure,
/// the error of the first bad file in store order.
pub fn load_folder(
    root: &Path,
    size: Option<(u32, u32)>,
    channels: Option<usize>,
    progress: Progress,
) -> Result<Folder, DataError> {
    if let Some(c) = channels {
        if c != 1 && c != 3 {
            return Err(DataError::new(
                root.display().to_string(),
                format!("channels must be 1 or 3, got {c}"),
            ));
        }
    }
    let (classes, files) = scan(root)?;
    // The shape comes from the arguments, or from the first file where they leave it open.
    let (c, h, w) = match (size, channels) {
        (Some((h, w)), Some(c)) => (c, h as usize, w as usize),
        _ => {
            let first = decode_file(&files[0].0, size, channels)?;
            (first.channels, first.height, first.width)
        }
    };
    let item = c
        .checked_mul(h)
        .and_then(|x| x.checked_mul(w))
        .ok_or_else(|| DataError::new(root.display().to_string(), "image size overflows"))?;
    let total = item
        .checked_mul(files.len())
        .ok_or_else(|| DataError::new(root.display().to_string(), "the store would be too large"))?;
    let mut images = Vec::new();
    images.try_reserve_exact(total).map_err(|_| {
        DataError::new(
            root.display().to_string(),
            format!("cannot allocate {total} bytes"),
        )
    })?;
    images.resize(total, 0);
    let bar = match progress {
        Progress::Always => true,
        Progress::Never => false,
        Progress::Auto(min) => files.len() >= min,
    }
    .then(|| {
        let pb = indicatif::ProgressBar::with_draw_target(
            Some(files.len() as u64),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {pos}/{len} images [{elapsed_precise}<{eta_precise}, {per_sec}]",
        ) {
            pb.set_style(style);
        }
        pb.set_message(format!("decoding {}", root.display()));
        pb
    });
    let first_bad = AtomicUsize::new(usize::MAX);
    let error = images
        .par_chunks_mut(item.max(1))
        .zip(files.par_iter())
        .enumerate()
        .with_min_len(8)
        .filter_map(|(i, (slot, (path, _)))| {
            if i > first_bad.load(Ordering::Relaxed) {
                return None; // an earlier file already failed; that error is the one reported
            }
            let result = decode_file(path, size, channels).and_then(|p| {
                if (p.height, p.width) != (h, w) {
                    Err(DataError::new(
                        path.display().to_string(),
                        format!(
                            "mixed image sizes: this image is {}x{}, {} is {h}x{w} (pass size= to resize)",
                            p.height,
                            p.width,
                            files[0].0.display()
                        ),
                    ))
                } else if p.channels != c {
                    Err(DataError::new(
                        path.display().to_string(),
                        format!(
                            "mixed channel counts: this image has {} channel(s), {} has {c} (pass channels=1 or 3 to convert)",
                            p.channels,
                            files[0].0.display()
                        ),
                    ))
                } else {
                    slot.copy_from_slice(&p.data);
                    Ok(())
                }
            });
            if let Some(pb) = &bar {
                pb.inc(1);
            }
            result.err().map(|e| {
                first_bad.fetch_min(i, Ordering::Relaxed);
                (i, e)
            })
        })
        .min_by_key(|(i, _)| *i);
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    if let Some((_, e)) = error {
        return Err(e);
    }
    let labels = files.iter().map(|(_, l)| *l).collect();
    Ok(Folder {
        shape: [files.len(), c, h, w],
        images,
        labels,
        classes,
        files: files.into_iter().map(|(p, _)| p).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageEncoder;

    pub(crate) fn png_gray(w: u32, h: u32, seed: u8) -> Vec<u8> {
        let px: Vec<u8> = (0..w * h)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect();
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(&px, w, h, image::ExtendedColorType::L8)
            .unwrap();
        out
    }

    fn png_rgb(w: u32, h: u32) -> Vec<u8> {
        let px: Vec<u8> = (0..w * h * 3).map(|i| (i * 5) as u8).collect();
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(&px, w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        out
    }

    fn jpeg_gray(w: u32, h: u32) -> Vec<u8> {
        let px: Vec<u8> = (0..w * h).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .write_image(&px, w, h, image::ExtendedColorType::L8)
            .unwrap();
        out
    }

    #[test]
    fn decodes_converts_and_resizes() {
        let g = decode(&png_gray(5, 4, 0), "a.png", None, None).unwrap();
        assert_eq!((g.channels, g.height, g.width), (1, 4, 5));
        assert_eq!(g.data[..3], [0, 7, 14]);
        let g3 = decode(&png_gray(5, 4, 0), "a.png", None, Some(3)).unwrap();
        assert_eq!(g3.data.len(), 60);
        assert_eq!(g3.data[20..23], [0, 7, 14]);
        let rgb = decode(&png_rgb(2, 1), "b.png", None, None).unwrap();
        assert_eq!(rgb.channels, 3);
        assert_eq!(rgb.data, vec![0, 15, 5, 20, 10, 25]); // planar R, G, B
        let l = decode(&png_rgb(2, 1), "b.png", None, Some(1)).unwrap();
        let pil = |r: u32, g: u32, b: u32| ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8;
        assert_eq!(l.data, vec![pil(0, 5, 10), pil(15, 20, 25)]);
        let r = decode(&jpeg_gray(40, 30), "c.jpg", Some((10, 12)), Some(1)).unwrap();
        assert_eq!((r.height, r.width, r.data.len()), (10, 12, 120));
    }

    #[test]
    fn rejects_undecodable() {
        let e = decode(b"hello", "x.png", None, None).unwrap_err();
        assert_eq!(e.to_string(), "x.png: undecodable image (not a PNG or JPEG file)");
        let mut png = png_gray(8, 8, 1);
        png.truncate(png.len() / 2);
        let e = decode(&png, "t.png", None, None).unwrap_err();
        assert!(e.msg.starts_with("undecodable image"), "{e}");
        assert!(decode(&png_gray(4, 4, 0), "a.png", None, Some(2)).is_err());
    }

    #[test]
    fn folder_errors_and_load() {
        let root = std::env::temp_dir().join(format!("pudnet-folder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        let e = load_folder(&root, Some((4, 4)), Some(1), Progress::Never).unwrap_err();
        assert!(e.msg.contains("empty class folder"), "{e}");
        std::fs::write(root.join("a/1.png"), png_gray(6, 6, 1)).unwrap();
        std::fs::write(root.join("a/2.jpg"), jpeg_gray(6, 6)).unwrap();
        std::fs::write(root.join("b/1.png"), png_gray(6, 6, 2)).unwrap();
        std::fs::write(root.join("b/notes.txt"), b"ignored").unwrap();
        let f = load_folder(&root, Some((4, 4)), Some(1), Progress::Never).unwrap();
        assert_eq!(f.shape, [3, 1, 4, 4]);
        assert_eq!(f.labels, vec![0, 0, 1]);
        assert_eq!(f.classes, vec!["a", "b"]);
        let f = load_folder(&root, None, None, Progress::Never).unwrap();
        assert_eq!(f.shape, [3, 1, 6, 6]);
        std::fs::write(root.join("b/2.png"), png_rgb(6, 6)).unwrap();
        let e = load_folder(&root, None, None, Progress::Never).unwrap_err();
        assert!(
            e.msg.contains("mixed channel counts") && e.path.ends_with("2.png"),
            "{e}"
        );
        std::fs::write(root.join("b/2.png"), png_gray(7, 6, 0)).unwrap();
        let e = load_folder(&root, None, None, Progress::Never).unwrap_err();
        assert!(
            e.msg.contains("mixed image sizes") && e.path.ends_with("2.png"),
            "{e}"
        );
        std::fs::write(root.join("b/2.png"), b"garbage").unwrap();
        let e = load_folder(&root, Some((4, 4)), Some(1), Progress::Never).unwrap_err();
        assert!(
            e.msg.contains("undecodable") && e.path.ends_with("b/2.png"),
            "{e}"
        );
        let e = load_folder(&root.join("nope"), None, None, Progress::Never).unwrap_err();
        assert!(e.msg.contains("no such folder"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
