//! CIFAR-10 / CIFAR-100, binary version.
//!
//! CIFAR-10 (`data_batch_{1..5}.bin`, `test_batch.bin`): records of 1 label byte (0..9) + 3072 image bytes.
//! CIFAR-100 (`train.bin`, `test.bin`): records of a coarse label byte (0..19), a fine label byte (0..99)
//! and 3072 image bytes. The image bytes are the 32×32 red plane, then green, then blue: already `[C, H, W]`.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::DataError;

pub const IMAGE_BYTES: usize = 3 * 32 * 32;
pub const SHAPE: [usize; 3] = [3, 32, 32];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarKind {
    Cifar10,
    Cifar100,
}

/// Which CIFAR-100 label to keep (CIFAR-10 has only one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    Fine,
    Coarse,
}

impl CifarKind {
    pub fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100 => 2,
        }
    }
    pub fn record_bytes(self) -> usize {
        self.label_bytes() + IMAGE_BYTES
    }
    fn name(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "CIFAR-10",
            CifarKind::Cifar100 => "CIFAR-100",
        }
    }
}

/// Images `[N, 3, 32, 32]` and labels `[N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CifarStore {
    pub n: usize,
    pub images: Vec<u8>,
    pub labels: Vec<i64>,
}

/// How many records a file of `len` bytes holds, or why it is not a CIFAR file.
pub fn record_count(len: u64, name: &str, kind: CifarKind) -> Result<usize, DataError> {
    let rec = kind.record_bytes() as u64;
    if len == 0 {
        return Err(DataError::new(
            name,
            format!("empty file, not a {} binary batch", kind.name()),
        ));
    }
    if !len.is_multiple_of(rec) {
        return Err(DataError::new(
            name,
            format!(
                "truncated or not a {} binary batch: {len} bytes is not a whole number of {rec}-byte records",
                kind.name()
            ),
        ));
    }
    usize::try_from(len / rec).map_err(|_| DataError::new(name, "file too large"))
}

/// Reads `labels.len()` records from `r` into `images` (`labels.len() * 3072` bytes) and `labels`.
fn read_records<R: Read>(
    mut r: R,
    name: &str,
    kind: CifarKind,
    label: LabelKind,
    images: &mut [u8],
    labels: &mut [i64],
) -> Result<(), DataError> {
    let mut lab = [0u8; 2];
    let nl = kind.label_bytes();
    for (i, (img, out)) in images
        .chunks_exact_mut(IMAGE_BYTES)
        .zip(labels.iter_mut())
        .enumerate()
    {
        r.read_exact(&mut lab[..nl])
            .and_then(|_| r.read_exact(img))
            .map_err(|e| DataError::new(name, format!("truncated at record {i} ({e})")))?;
        let (value, limit, what) = match (kind, label) {
            (CifarKind::Cifar10, _) => (lab[0], 10, "label"),
            (CifarKind::Cifar100, LabelKind::Coarse) => (lab[0], 20, "coarse label"),
            (CifarKind::Cifar100, LabelKind::Fine) => (lab[1], 100, "fine label"),
        };
        if kind == CifarKind::Cifar100 && lab[0] >= 20 {
            return Err(DataError::new(
                name,
                format!(
                    "record {i}: coarse label {} out of range 0..19 for CIFAR-100",
                    lab[0]
                ),
            ));
        }
        if kind == CifarKind::Cifar100 && lab[1] >= 100 {
            return Err(DataError::new(
                name,
                format!(
                    "record {i}: fine label {} out of range 0..99 for CIFAR-100",
                    lab[1]
                ),
            ));
        }
        if value >= limit {
            return Err(DataError::new(
                name,
                format!(
                    "record {i}: {what} {value} out of range 0..{} for {}",
                    limit - 1,
                    kind.name()
                ),
            ));
        }
        *out = value as i64;
    }
    Ok(())
}

/// Parses one CIFAR binary batch held in memory.
pub fn parse_cifar(
    bytes: &[u8],
    name: &str,
    kind: CifarKind,
    label: LabelKind,
) -> Result<CifarStore, DataError> {
    let n = record_count(bytes.len() as u64, name, kind)?;
    let mut images = vec![0u8; n * IMAGE_BYTES];
    let mut labels = vec![0i64; n];
    read_records(bytes, name, kind, label, &mut images, &mut labels)?;
    Ok(CifarStore { n, images, labels })
}

/// Reads and concatenates CIFAR binary batches (in the given order), files in parallel, each record
/// written straight into the final array.
pub fn read_cifar(paths: &[PathBuf], kind: CifarKind, label: LabelKind) -> Result<CifarStore, DataError> {
    if paths.is_empty() {
        return Err(DataError::new("<cifar>", "no batch files given"));
    }
    let mut counts = Vec::with_capacity(paths.len());
    for p in paths {
        let name = p.display().to_string();
        let meta = std::fs::metadata(p).map_err(|e| DataError::io(&name, &e))?;
        if meta.is_dir() {
            return Err(DataError::new(&name, "is a directory, not a CIFAR binary batch"));
        }
        counts.push(record_count(meta.len(), &name, kind)?);
    }
    let n: usize = counts.iter().sum();
    let mut images = vec![0u8; n * IMAGE_BYTES];
    let mut labels = vec![0i64; n];
    // Split the outputs into one (images, labels) slice pair per file.
    let mut parts: Vec<(&Path, &mut [u8], &mut [i64])> = Vec::with_capacity(paths.len());
    let (mut img_rest, mut lab_rest) = (&mut images[..], &mut labels[..]);
    for (p, &c) in paths.iter().zip(&counts) {
        let (img, ir) = img_rest.split_at_mut(c * IMAGE_BYTES);
        let (lab, lr) = lab_rest.split_at_mut(c);
        parts.push((p.as_path(), img, lab));
        img_rest = ir;
        lab_rest = lr;
    }
    let results: Vec<Result<(), DataError>> = parts
        .into_par_iter()
        .map(|(p, img, lab)| {
            let name = p.display().to_string();
            let file = File::open(p).map_err(|e| DataError::io(&name, &e))?;
            read_records(
                BufReader::with_capacity(1 << 16, file),
                &name,
                kind,
                label,
                img,
                lab,
            )
        })
        .collect();
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(CifarStore { n, images, labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(kind: CifarKind, labels: &[u8], fill: u8) -> Vec<u8> {
        let mut r = labels[..kind.label_bytes()].to_vec();
        r.extend((0..IMAGE_BYTES).map(|i| fill.wrapping_add(i as u8)));
        r
    }

    #[test]
    fn parses_both_kinds() {
        let bytes: Vec<u8> = [
            record(CifarKind::Cifar10, &[3], 1),
            record(CifarKind::Cifar10, &[9], 2),
        ]
        .concat();
        let s = parse_cifar(&bytes, "b", CifarKind::Cifar10, LabelKind::Fine).unwrap();
        assert_eq!((s.n, s.labels.clone()), (2, vec![3, 9]));
        assert_eq!(&s.images[IMAGE_BYTES..IMAGE_BYTES + 3], &[2, 3, 4]);
        let bytes = [
            record(CifarKind::Cifar100, &[19, 99], 0),
            record(CifarKind::Cifar100, &[4, 40], 0),
        ]
        .concat();
        let fine = parse_cifar(&bytes, "b", CifarKind::Cifar100, LabelKind::Fine).unwrap();
        let coarse = parse_cifar(&bytes, "b", CifarKind::Cifar100, LabelKind::Coarse).unwrap();
        assert_eq!(fine.labels, vec![99, 40]);
        assert_eq!(coarse.labels, vec![19, 4]);
        assert_eq!(fine.images, coarse.images);
    }

    #[test]
    fn rejects_malformed() {
        let e = parse_cifar(&[], "b", CifarKind::Cifar10, LabelKind::Fine).unwrap_err();
        assert!(e.msg.contains("empty file"), "{e}");
        let rec = record(CifarKind::Cifar10, &[1], 0);
        let e = parse_cifar(&rec[..100], "b", CifarKind::Cifar10, LabelKind::Fine).unwrap_err();
        assert!(e.msg.contains("not a whole number of 3073-byte records"), "{e}");
        let e = parse_cifar(
            &record(CifarKind::Cifar10, &[10], 0),
            "b",
            CifarKind::Cifar10,
            LabelKind::Fine,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "b: record 0: label 10 out of range 0..9 for CIFAR-10"
        );
        let bytes = [
            record(CifarKind::Cifar100, &[1, 1], 0),
            record(CifarKind::Cifar100, &[1, 100], 0),
        ]
        .concat();
        let e = parse_cifar(&bytes, "b", CifarKind::Cifar100, LabelKind::Coarse).unwrap_err();
        assert!(e.msg.contains("record 1: fine label 100 out of range"), "{e}");
        let bytes = record(CifarKind::Cifar100, &[20, 1], 0);
        let e = parse_cifar(&bytes, "b", CifarKind::Cifar100, LabelKind::Fine).unwrap_err();
        assert!(e.msg.contains("record 0: coarse label 20 out of range"), "{e}");
    }

    #[test]
    fn reads_files_in_order() {
        let dir = std::env::temp_dir().join(format!("pudnet-cifar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("data_batch_{i}.bin"))).collect();
        for (i, p) in paths.iter().enumerate() {
            let recs: Vec<u8> = (0..=i)
                .flat_map(|j| record(CifarKind::Cifar10, &[(i + j) as u8], j as u8))
                .collect();
            std::fs::write(p, recs).unwrap();
        }
        let s = read_cifar(&paths, CifarKind::Cifar10, LabelKind::Fine).unwrap();
        assert_eq!(s.labels, vec![0, 1, 2, 2, 3, 4]);
        assert_eq!(s.images[5 * IMAGE_BYTES], 2);
        let e = read_cifar(&[dir.join("missing.bin")], CifarKind::Cifar10, LabelKind::Fine).unwrap_err();
        assert!(e.to_string().ends_with("missing.bin: no such file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
