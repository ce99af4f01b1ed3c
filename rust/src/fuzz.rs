//! Property-based fuzzing of the parsers (proptest): random and mutated inputs to the IDX and CIFAR
//! parsers and the image decode path must give `Ok` or a `DataError`, never a panic. Run more cases
//! with `PUDNET_FUZZ_CASES=100000 cargo test --release fuzz -- --nocapture` (each target prints its
//! case count).

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::ImageEncoder;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::cifar::{self, CifarKind, LabelKind};
use crate::{folder, idx};

fn cases() -> u32 {
    std::env::var("PUDNET_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

/// A mutation: (position, byte, kind) — kind 0 overwrite, 1 insert, 2 delete, 3 xor.
type Mutations = Vec<(usize, u8, u8)>;

fn mutate(seed: &[u8], muts: &Mutations, truncate: Option<usize>) -> Vec<u8> {
    let mut v = seed.to_vec();
    for &(pos, byte, kind) in muts {
        if v.is_empty() {
            v.push(byte);
            continue;
        }
        let p = pos % v.len();
        match kind % 4 {
            0 => v[p] = byte,
            1 => v.insert(p, byte),
            2 => {
                v.remove(p);
            }
            _ => v[p] ^= byte,
        }
    }
    if let Some(t) = truncate {
        if !v.is_empty() {
            v.truncate(t % (v.len() + 1));
        }
    }
    v
}

/// Recomputes the CRC of every complete PNG chunk, so mutations reach the decoder past the CRC checks.
fn fix_png_crcs(mut v: Vec<u8>) -> Vec<u8> {
    let mut p = 8;
    while p + 12 <= v.len() {
        let len = u32::from_be_bytes([v[p], v[p + 1], v[p + 2], v[p + 3]]) as usize;
        let end = match (p + 8).checked_add(len) {
            Some(e) if e + 4 <= v.len() => e,
            _ => break,
        };
        let mut crc = flate2::Crc::new();
        crc.update(&v[p + 4..end]);
        v[end..end + 4].copy_from_slice(&crc.sum().to_be_bytes());
        p = end + 4;
    }
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn idx_seed() -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5];
    v.extend((0..60).map(|i| i as u8));
    v
}

fn png_seed(color: image::ExtendedColorType, c: u32) -> Vec<u8> {
    let (w, h) = (9u32, 7u32);
    let px: Vec<u8> = (0..w * h * c).map(|i| (i * 37 % 251) as u8).collect();
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&px, w, h, color)
        .unwrap();
    out
}

fn jpeg_seed(color: image::ExtendedColorType, c: u32) -> Vec<u8> {
    let (w, h) = (17u32, 11u32);
    let px: Vec<u8> = (0..w * h * c).map(|i| (i * 13 % 251) as u8).collect();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .write_image(&px, w, h, color)
        .unwrap();
    out
}

fn mutations() -> impl Strategy<Value = (Mutations, Option<usize>)> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..8),
        prop::option::of(any::<usize>()),
    )
}

/// Runs `check` on `cases()` generated inputs; fails on any panic; returns the case count.
/// `check` returns whether the input parsed (`Ok`), to report how deep the cases went.
fn run<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value) -> bool) -> usize
where
    S::Value: std::fmt::Debug + Clone,
{
    let n = AtomicUsize::new(0);
    let parsed = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |input| {
        n.fetch_add(1, Ordering::Relaxed);
        let r = catch_unwind(AssertUnwindSafe(|| check(input)));
        prop_assert!(r.is_ok(), "panic");
        if matches!(r, Ok(true)) {
            parsed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    let count = n.load(Ordering::Relaxed);
    eprintln!(
        "fuzz {name}: {count} cases ({} parsed, the rest rejected with an error), {}",
        parsed.load(Ordering::Relaxed),
        if result.is_ok() { "0 crashes" } else { "CRASH" }
    );
    result.unwrap();
    count
}

#[test]
fn fuzz_idx() {
    let raw = idx_seed();
    let gz = gzip(&raw);
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300).prop_map(|v| (v, false, (Vec::new(), None))),
        (any::<bool>(), mutations()).prop_map(|(g, m)| (Vec::new(), g, m)),
    ];
    run("idx", strategy, |(random, use_gz, (muts, trunc))| {
        let input = if !random.is_empty() {
            random
        } else {
            mutate(if use_gz { &gz } else { &raw }, &muts, trunc)
        };
        let r = idx::parse_idx(&input, "fuzz");
        if let Ok(a) = &r {
            assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
        }
        r.is_ok()
    });
}

#[test]
fn fuzz_cifar() {
    let rec10: Vec<u8> = (0..2)
        .flat_map(|i| {
            let mut r = vec![i as u8 * 3];
            r.extend((0..3072).map(|j| j as u8));
            r
        })
        .collect();
    let rec100: Vec<u8> = (0..2)
        .flat_map(|i| {
            let mut r = vec![i as u8 * 7, i as u8 * 33];
            r.extend((0..3072).map(|j| j as u8));
            r
        })
        .collect();
    let strategy = (
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..40),
        mutations(),
    );
    run("cifar", strategy, |(c100, fine, random, (muts, trunc))| {
        let kind = if c100 {
            CifarKind::Cifar100
        } else {
            CifarKind::Cifar10
        };
        let label = if fine { LabelKind::Fine } else { LabelKind::Coarse };
        let seed = if c100 { &rec100 } else { &rec10 };
        let input = if random.len() > 30 {
            random
        } else {
            mutate(seed, &muts, trunc)
        };
        let r = cifar::parse_cifar(&input, "fuzz", kind, label);
        if let Ok(s) = &r {
            assert_eq!(s.images.len(), s.n * cifar::IMAGE_BYTES);
            assert!(s.labels.iter().all(|&l| (0..100).contains(&l)));
        }
        r.is_ok()
    });
}

#[test]
fn fuzz_image_decode() {
    use image::ExtendedColorType as T;
    let seeds = [
        png_seed(T::L8, 1),
        png_seed(T::Rgb8, 3),
        png_seed(T::Rgba8, 4),
        png_seed(T::La8, 2),
        jpeg_seed(T::L8, 1),
        jpeg_seed(T::Rgb8, 3),
    ];
    let strategy = (
        0..seeds.len(),
        mutations(),
        0usize..4,
        prop::option::of((1u32..40, 1u32..40)),
        any::<bool>(),
    );
    run("image", strategy, |(which, (muts, trunc), ch, size, fix_crc)| {
        let mut input = mutate(&seeds[which], &muts, trunc);
        if fix_crc && which < 4 {
            input = fix_png_crcs(input);
        }
        let channels = [None, Some(1), Some(3), Some(1)][ch];
        let r = folder::decode(&input, "fuzz", size, channels);
        if let Ok(p) = &r {
            assert_eq!(p.data.len(), p.channels * p.height * p.width);
            if let Some((h, w)) = size {
                assert_eq!((p.height, p.width), (h as usize, w as usize));
            }
        }
        r.is_ok()
    });
}
