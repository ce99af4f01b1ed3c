//! IDX files (MNIST, Fashion-MNIST): raw or gzip-compressed, unsigned-byte data only.
//!
//! Matches the pure-Python reference reader `pudnet.data.idx.read_idx`: the same checks (magic, element
//! type, header length, data length) in the same order, plus an explicit check that the dimensions'
//! product does not overflow. The data is read straight into the vector that becomes the numpy array.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::error::DataError;

/// Element type code of unsigned bytes, the only one supported (as in the reference).
pub const UBYTE: u8 = 0x08;

/// An n-dimensional uint8 array in C order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file from disk (gzip detected from its first two bytes, like the reference).
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| DataError::io(&name, &e))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(DataError::new(&name, "is a directory, not an IDX file"));
    }
    let len = file.metadata().map_err(|e| DataError::io(&name, &e))?.len();
    parse_reader(BufReader::with_capacity(1 << 16, file), &name, Some(len))
}

/// Parses IDX bytes held in memory (raw or gzip). `name` is used in error messages.
pub fn parse_idx(bytes: &[u8], name: &str) -> Result<IdxArray, DataError> {
    parse_reader(bytes, name, Some(bytes.len() as u64))
}

/// Dispatches on the gzip magic, then parses the (decompressed) stream.
fn parse_reader<R: BufRead>(mut r: R, name: &str, raw_len: Option<u64>) -> Result<IdxArray, DataError> {
    let head = r.fill_buf().map_err(|e| DataError::io(name, &e))?;
    if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        let gz = flate2::bufread::MultiGzDecoder::new(r);
        parse_stream(gz, name, None, true)
    } else {
        parse_stream(r, name, raw_len, false)
    }
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn stream_error(name: &str, gz: bool, e: &io::Error) -> DataError {
    if gz {
        DataError::new(name, format!("corrupt gzip stream ({e})"))
    } else {
        DataError::io(name, e)
    }
}

/// Largest expansion factor of DEFLATE (used only to bound the initial allocation of gzip data).
const MAX_INFLATE_RATIO: u64 = 1032;

fn parse_stream<R: Read>(
    mut r: R,
    name: &str,
    raw_len: Option<u64>,
    gz: bool,
) -> Result<IdxArray, DataError> {
    let mut magic = [0u8; 4];
    let got = read_full(&mut r, &mut magic).map_err(|e| stream_error(name, gz, &e))?;
    if got < 4 || magic[0] != 0 || magic[1] != 0 {
        let hex: String = magic[..got].iter().map(|b| format!("{b:02x}")).collect();
        return Err(DataError::new(name, format!("not an IDX file (bad magic {hex})")));
    }
    if magic[2] != UBYTE {
        return Err(DataError::new(
            name,
            format!(
                "unsupported IDX element type 0x{:02x} (only unsigned byte)",
                magic[2]
            ),
        ));
    }
    let ndim = magic[3] as usize;
    let header = 4 + 4 * ndim as u64;
    let mut dim_bytes = vec![0u8; 4 * ndim];
    let got = read_full(&mut r, &mut dim_bytes).map_err(|e| stream_error(name, gz, &e))?;
    if ndim == 0 || got < dim_bytes.len() {
        return Err(DataError::new(name, "truncated IDX header"));
    }
    let dims: Vec<u64> = dim_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64)
        .collect();
    let count = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&c| c <= isize::MAX as u64)
        .ok_or_else(|| {
            DataError::new(
                name,
                format!("IDX dimensions {dims:?} overflow (their product is too large)"),
            )
        })?;
    let mismatch = |held: u64| {
        DataError::new(
            name,
            format!(
                "truncated or oversized IDX data: dimensions {dims:?} need {count} bytes, the file holds {held}"
            ),
        )
    };
    if let Some(len) = raw_len {
        if len - header != count {
            return Err(mismatch(len - header));
        }
    }
    let mut data = Vec::new();
    let reserve = match raw_len {
        Some(_) => count,
        None => count.min(4096 + MAX_INFLATE_RATIO.saturating_mul(1 << 20)),
    };
    data.try_reserve_exact(reserve as usize)
        .map_err(|_| DataError::new(name, format!("cannot allocate {count} bytes for the IDX data")))?;
    (&mut r)
        .take(count + 1)
        .read_to_end(&mut data)
        .map_err(|e| stream_error(name, gz, &e))?;
    if data.len() as u64 != count {
        let mut held = data.len() as u64;
        if held > count {
            held += io::copy(&mut r, &mut io::sink()).map_err(|e| stream_error(name, gz, &e))?;
        }
        return Err(mismatch(held));
    }
    Ok(IdxArray {
        dims: dims.iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// An image store read from an IDX image file `[N, H, W]` or `[N, C, H, W]` and an IDX label file `[N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxStore {
    /// `[N, C, H, W]`
    pub shape: [usize; 4],
    pub images: Vec<u8>,
    pub labels: Vec<i64>,
}

/// Reads an image IDX file and its label IDX file into one store, with the checks of `datasets.idx()`.
pub fn load_idx_pair(images_path: &Path, labels_path: &Path) -> Result<IdxStore, DataError> {
    let (images, labels) = rayon::join(|| read_idx(images_path), || read_idx(labels_path));
    let (images, labels) = (images?, labels?);
    let shape = match images.dims[..] {
        [n, h, w] => [n, 1, h, w],
        [n, c, h, w] => [n, c, h, w],
        _ => {
            return Err(DataError::new(
                images_path.display().to_string(),
                format!(
                    "expected IDX images of 3 or 4 dimensions, got {}",
                    images.dims.len()
                ),
            ))
        }
    };
    if labels.dims.len() != 1 || labels.dims[0] != shape[0] {
        return Err(DataError::new(
            labels_path.display().to_string(),
            format!(
                "{:?} labels do not match {} images in {}",
                labels.dims,
                shape[0],
                images_path.display()
            ),
        ));
    }
    let labels = labels.data.iter().map(|&l| l as i64).collect();
    Ok(IdxStore {
        shape,
        images: images.data,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, UBYTE, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn parses_raw_and_gzip() {
        let data: Vec<u8> = (0..24).collect();
        let raw = idx_bytes(&[2, 3, 4], &data);
        for bytes in [raw.clone(), gzip(&raw)] {
            let a = parse_idx(&bytes, "x").unwrap();
            assert_eq!(a.dims, vec![2, 3, 4]);
            assert_eq!(a.data, data);
        }
    }

    #[test]
    fn rejects_bad_magic_and_types() {
        let e = parse_idx(&[1, 2, 3, 4, 5], "f.idx").unwrap_err();
        assert_eq!(e.to_string(), "f.idx: not an IDX file (bad magic 01020304)");
        let e = parse_idx(&[0, 0], "f").unwrap_err();
        assert!(e.msg.contains("bad magic 0000"), "{e}");
        let e = parse_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 0], "f").unwrap_err();
        assert!(e.msg.contains("unsupported IDX element type 0x0d"), "{e}");
        let e = parse_idx(&[0, 0, 8, 0], "f").unwrap_err();
        assert!(e.msg.contains("truncated IDX header"), "{e}");
        let e = parse_idx(&[0, 0, 8, 2, 0, 0, 0, 1, 0], "f").unwrap_err();
        assert!(e.msg.contains("truncated IDX header"), "{e}");
    }

    #[test]
    fn rejects_truncated_oversized_and_overflowing() {
        let raw = idx_bytes(&[2, 3], &[0; 5]);
        let e = parse_idx(&raw, "f").unwrap_err();
        assert!(e.msg.contains("need 6 bytes, the file holds 5"), "{e}");
        let e = parse_idx(&gzip(&raw), "f").unwrap_err();
        assert!(e.msg.contains("need 6 bytes, the file holds 5"), "{e}");
        let raw = idx_bytes(&[2, 3], &[0; 9]);
        let e = parse_idx(&gzip(&raw), "f").unwrap_err();
        assert!(e.msg.contains("need 6 bytes, the file holds 9"), "{e}");
        let raw = idx_bytes(&[u32::MAX, u32::MAX, u32::MAX], &[]);
        let e = parse_idx(&raw, "f").unwrap_err();
        assert!(e.msg.contains("overflow"), "{e}");
        let e = parse_idx(&gzip(&raw), "f").unwrap_err();
        assert!(e.msg.contains("overflow"), "{e}");
        // A huge but representable size: rejected before allocating (raw) / by the stream's end (gzip).
        let raw = idx_bytes(&[1 << 20, 1 << 20], &[1, 2, 3]);
        assert!(parse_idx(&raw, "f").unwrap_err().msg.contains("the file holds 3"));
        assert!(parse_idx(&gzip(&raw), "f")
            .unwrap_err()
            .msg
            .contains("the file holds 3"));
    }

    #[test]
    fn rejects_corrupt_gzip() {
        let gz = gzip(&idx_bytes(&[100], &[7; 100]));
        let e = parse_idx(&gz[..gz.len() - 6], "f.gz").unwrap_err();
        assert!(e.msg.contains("gzip") || e.msg.contains("truncated"), "{e}");
        let mut bad = gz.clone();
        let n = bad.len();
        bad[n - 8] ^= 0xff; // CRC
        let e = parse_idx(&bad, "f.gz").unwrap_err();
        assert!(e.msg.contains("corrupt gzip stream"), "{e}");
    }

    #[test]
    fn missing_file_and_pair_checks() {
        let e = read_idx(Path::new("/nonexistent/x.idx")).unwrap_err();
        assert_eq!(e.to_string(), "/nonexistent/x.idx: no such file");
        let dir = std::env::temp_dir().join(format!("pudnet-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (img, lab, lab_bad) = (dir.join("img"), dir.join("lab"), dir.join("lab2"));
        std::fs::write(&img, idx_bytes(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
        std::fs::write(&lab, gzip(&idx_bytes(&[2], &[3, 9]))).unwrap();
        std::fs::write(&lab_bad, idx_bytes(&[3], &[3, 9, 1])).unwrap();
        let s = load_idx_pair(&img, &lab).unwrap();
        assert_eq!(s.shape, [2, 1, 2, 2]);
        assert_eq!(s.labels, vec![3, 9]);
        let e = load_idx_pair(&img, &lab_bad).unwrap_err();
        assert!(e.msg.contains("labels do not match 2 images"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
