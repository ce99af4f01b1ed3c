//! The episodic sampler: a bit-for-bit port of the Python reference `pudnet.data.sampler`.
//!
//! An episode is a pure function of `(seed, index)` (see the reference module's docstring for the
//! specification). `Sampler` precomputes each pool class's members once; `episode` draws one episode and
//! `episodes` many in parallel — each episode is drawn independently, so the result does not depend on
//! the number of threads.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::error::SampleError;

pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline]
fn finalise(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64 seeded with `mix(seed) ^ index` (the reference's generator).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    pub state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64, index: u64) -> Self {
        SplitMix64 {
            state: finalise(seed.wrapping_add(GOLDEN_GAMMA)) ^ index,
        }
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        finalise(self.state)
    }

    /// Uniform in `[0, n)` by rejection; `n` must be positive.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        loop {
            let x = self.next_u64();
            // threshold = (2**64 - n) % n < n, so x >= n accepts without computing it (same result).
            if x >= n || x >= n.wrapping_neg() % n {
                return x % n;
            }
        }
    }

    /// `choose(items, k)` of the reference (partial Fisher–Yates on a copy), emitting the chosen items
    /// in order. Long lists are shuffled sparsely (only touched positions are stored), which gives the
    /// same result without copying the list. Requires `k <= items.len()`.
    pub fn choose_with(
        &mut self,
        items: &[i64],
        k: usize,
        scratch: &mut Scratch,
        mut emit: impl FnMut(usize, i64),
    ) {
        let len = items.len();
        debug_assert!(k <= len);
        if len <= 4 * k + 32 {
            let v = &mut scratch.dense;
            v.clear();
            v.extend_from_slice(items);
            for i in 0..k {
                let j = i + self.below((len - i) as u64) as usize;
                v.swap(i, j);
                emit(i, v[i]);
            }
        } else {
            let m = &mut scratch.sparse;
            m.reset(k);
            for i in 0..k {
                let j = i + self.below((len - i) as u64) as usize;
                let vi = m.get(i).unwrap_or(items[i]);
                let vj = m.get(j).unwrap_or(items[j]);
                m.insert(j, vi);
                emit(i, vj);
            }
        }
    }

    /// The chosen items as a vector.
    pub fn choose(&mut self, items: &[i64], k: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(k);
        self.choose_with(items, k, &mut Scratch::default(), |_, v| out.push(v));
        out
    }
}

/// The positions a sparse shuffle has overwritten: a small open-addressing map position -> value.
#[derive(Default)]
pub struct SparseMap {
    slots: Vec<(usize, i64)>,
    shift: u32,
}

impl SparseMap {
    const EMPTY: usize = usize::MAX;

    /// Empties the map, sized for `k` insertions (load factor <= 1/2).
    fn reset(&mut self, k: usize) {
        let cap = (2 * k.max(4)).next_power_of_two();
        self.slots.clear();
        self.slots.resize(cap, (Self::EMPTY, 0));
        self.shift = 64 - cap.trailing_zeros();
    }

    #[inline]
    fn slot(&self, key: usize) -> usize {
        ((key as u64).wrapping_mul(GOLDEN_GAMMA) >> self.shift) as usize
    }

    #[inline]
    fn get(&self, key: usize) -> Option<i64> {
        let mask = self.slots.len() - 1;
        let mut s = self.slot(key);
        loop {
            let (k, v) = self.slots[s];
            if k == key {
                return Some(v);
            }
            if k == Self::EMPTY {
                return None;
            }
            s = (s + 1) & mask;
        }
    }

    #[inline]
    fn insert(&mut self, key: usize, value: i64) {
        let mask = self.slots.len() - 1;
        let mut s = self.slot(key);
        loop {
            let k = self.slots[s].0;
            if k == key || k == Self::EMPTY {
                self.slots[s] = (key, value);
                return;
            }
            s = (s + 1) & mask;
        }
    }
}

/// Reusable buffers of `choose_with`.
#[derive(Default)]
pub struct Scratch {
    dense: Vec<i64>,
    sparse: SparseMap,
}

/// Classes per episode and images per class of each role (the reference's `EpisodeSpec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub ways: usize,
    pub sketch: usize,
    pub support: usize,
    pub query: usize,
}

impl Spec {
    pub fn validate(&self) -> Result<(), SampleError> {
        if self.ways < 1 || self.sketch < 1 {
            return Err(SampleError::Invalid(format!("invalid episode spec {self:?}")));
        }
        if !(1..=self.sketch).contains(&self.support) {
            return Err(SampleError::Invalid(format!(
                "support ({}) must be between 1 and sketch ({})",
                self.support, self.sketch
            )));
        }
        Ok(())
    }
}

/// Index arrays of one episode, grouped by class in episode-label order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Episode {
    pub classes: Vec<i64>,
    pub sketch: Vec<i64>,
    pub support: Vec<i64>,
    pub query: Vec<i64>,
}

/// Many episodes as row-major `[B, ...]` arrays.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EpisodeBatch {
    pub count: usize,
    pub classes: Vec<i64>,
    pub sketch: Vec<i64>,
    pub support: Vec<i64>,
    pub query: Vec<i64>,
}

/// Ascending indices of each class.
pub fn class_members(labels: &[i64]) -> HashMap<i64, Vec<i64>> {
    let mut m: HashMap<i64, Vec<i64>> = HashMap::new();
    for (i, &l) in labels.iter().enumerate() {
        m.entry(l).or_default().push(i as i64);
    }
    m
}

/// A sampler over fixed labels, class pool and spec; draws episodes of any `(seed, index)`.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub spec: Spec,
    /// The class pool, sorted (duplicates kept, as in the reference).
    pub pool: Vec<i64>,
    /// Members of `pool[p]` in the sketch store.
    members: Vec<Vec<i64>>,
    /// Members of `pool[p]` in the separate query store, if any.
    query_members: Option<Vec<Vec<i64>>>,
}

impl Sampler {
    pub fn new(
        labels: &[i64],
        class_pool: &[i64],
        spec: Spec,
        query_labels: Option<&[i64]>,
    ) -> Result<Self, SampleError> {
        spec.validate()?;
        let mut pool = class_pool.to_vec();
        pool.sort_unstable();
        if pool.len() < spec.ways {
            return Err(SampleError::PoolTooSmall {
                have: pool.len(),
                ways: spec.ways,
            });
        }
        let per_pool = |labels: &[i64]| {
            let mut all = class_members(labels);
            pool.iter()
                .map(|c| all.get_mut(c).map(std::mem::take).unwrap_or_default())
                .collect::<Vec<_>>()
        };
        // A class repeated in the pool gets its members once per occurrence.
        let fix_dups = |mut v: Vec<Vec<i64>>| {
            for p in 1..pool.len() {
                if pool[p] == pool[p - 1] && v[p].is_empty() {
                    v[p] = v[p - 1].clone();
                }
            }
            v
        };
        let members = fix_dups(per_pool(labels));
        let query_members = query_labels.map(|q| fix_dups(per_pool(q)));
        Ok(Sampler {
            spec,
            pool,
            members,
            query_members,
        })
    }

    /// Whether the queries come from a separate store.
    pub fn has_query_store(&self) -> bool {
        self.query_members.is_some()
    }

    /// Sizes of one episode's arrays: (classes, sketch, support, query).
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        let s = self.spec;
        (s.ways, s.ways * s.sketch, s.ways * s.support, s.ways * s.query)
    }

    /// Draws episode `index` of the stream `seed` into the given slices (of the sizes of `sizes()`).
    #[allow(clippy::too_many_arguments)]
    pub fn episode_into(
        &self,
        seed: u64,
        index: u64,
        scratch: &mut Scratch,
        classes: &mut [i64],
        sketch: &mut [i64],
        support: &mut [i64],
        query: &mut [i64],
    ) -> Result<(), SampleError> {
        let s = self.spec;
        let mut rng = SplitMix64::new(seed, index);
        let positions: Vec<i64> = (0..self.pool.len() as i64).collect();
        let mut chosen = [0usize; 64];
        let mut chosen_vec = Vec::new();
        let chosen: &mut [usize] = if s.ways <= 64 {
            &mut chosen[..s.ways]
        } else {
            chosen_vec.resize(s.ways, 0);
            &mut chosen_vec
        };
        rng.choose_with(&positions, s.ways, scratch, |i, p| chosen[i] = p as usize);
        for (t, &p) in chosen.iter().enumerate() {
            classes[t] = self.pool[p];
        }
        let separate = self.query_members.is_some();
        let per_class = s.sketch + if separate { 0 } else { s.query };
        for (t, &p) in chosen.iter().enumerate() {
            let members = &self.members[p];
            if members.len() < per_class {
                return Err(SampleError::TooFewImages {
                    class: self.pool[p],
                    have: members.len(),
                    role: "sketch",
                    needed: per_class,
                });
            }
            let (sk, sp, qu) = (
                &mut sketch[t * s.sketch..(t + 1) * s.sketch],
                &mut support[t * s.support..(t + 1) * s.support],
                &mut query[t * s.query..(t + 1) * s.query],
            );
            rng.choose_with(members, per_class, scratch, |i, v| {
                if i < s.sketch {
                    sk[i] = v;
                    if i < s.support {
                        sp[i] = v;
                    }
                } else {
                    qu[i - s.sketch] = v;
                }
            });
        }
        if let Some(qm) = &self.query_members {
            for (t, &p) in chosen.iter().enumerate() {
                let members = &qm[p];
                if members.len() < s.query {
                    return Err(SampleError::TooFewImages {
                        class: self.pool[p],
                        have: members.len(),
                        role: "query",
                        needed: s.query,
                    });
                }
                let qu = &mut query[t * s.query..(t + 1) * s.query];
                rng.choose_with(members, s.query, scratch, |i, v| qu[i] = v);
            }
        }
        Ok(())
    }

    /// Episode `index` of the stream `seed`.
    pub fn episode(&self, seed: u64, index: u64) -> Result<Episode, SampleError> {
        let (nc, ns, np, nq) = self.sizes();
        let mut e = Episode {
            classes: vec![0; nc],
            sketch: vec![0; ns],
            support: vec![0; np],
            query: vec![0; nq],
        };
        self.episode_into(
            seed,
            index,
            &mut Scratch::default(),
            &mut e.classes,
            &mut e.sketch,
            &mut e.support,
            &mut e.query,
        )?;
        Ok(e)
    }

    /// Episodes `indices` of the stream `seed` as `[B, ...]` arrays, drawn in parallel in the current
    /// rayon pool. On failure, the error of the first failing episode (in `indices` order) and its
    /// position.
    pub fn episodes(&self, seed: u64, indices: &[u64]) -> Result<EpisodeBatch, (usize, SampleError)> {
        let (nc, ns, np, nq) = self.sizes();
        let b = indices.len();
        let mut out = EpisodeBatch {
            count: b,
            classes: vec![0; b * nc],
            sketch: vec![0; b * ns],
            support: vec![0; b * np],
            query: vec![0; b * nq],
        };
        // Split the four outputs into per-episode rows (a zero-width role gives empty rows).
        fn rows(v: &mut [i64], width: usize, b: usize) -> Vec<&mut [i64]> {
            if width == 0 {
                (0..b).map(|_| <&mut [i64]>::default()).collect()
            } else {
                v.chunks_mut(width).collect()
            }
        }
        let work: Vec<_> = rows(&mut out.classes, nc, b)
            .into_iter()
            .zip(rows(&mut out.sketch, ns, b))
            .zip(rows(&mut out.support, np, b))
            .zip(rows(&mut out.query, nq, b))
            .zip(indices.iter().copied())
            .enumerate()
            .collect();
        let first_error = work
            .into_par_iter()
            .with_min_len(16)
            .map_init(Scratch::default, |scratch, (pos, ((((c, sk), sp), q), index))| {
                self.episode_into(seed, index, scratch, c, sk, sp, q)
                    .err()
                    .map(|e| (pos, e))
            })
            .flatten()
            .min_by_key(|(pos, _)| *pos);
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_known_values() {
        // Standard SplitMix64 from state 0: first output 0xE220A8397B1DCDAF.
        let mut r = SplitMix64 { state: 0 };
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn below_is_in_range_and_choose_is_a_permutation_prefix() {
        let mut r = SplitMix64::new(1, 2);
        for n in 1..200u64 {
            assert!(r.below(n) < n);
        }
        let items: Vec<i64> = (0..1000).collect();
        let mut a = SplitMix64::new(7, 3);
        let mut b = SplitMix64::new(7, 3);
        // Sparse and dense paths agree with a plain copy-and-swap.
        for k in [0, 1, 5, 100, 400, 1000] {
            let fast = a.choose(&items, k);
            let mut copy = items.clone();
            for i in 0..k {
                let j = i + b.below((copy.len() - i) as u64) as usize;
                copy.swap(i, j);
            }
            assert_eq!(fast, copy[..k].to_vec(), "k={k}");
            let mut sorted = fast.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), k);
        }
    }

    fn labels() -> Vec<i64> {
        (0..600).map(|i| (i * 7 % 6) as i64).collect()
    }

    #[test]
    fn episodes_are_pure_and_thread_count_independent() {
        let l = labels();
        let spec = Spec {
            ways: 3,
            sketch: 20,
            support: 5,
            query: 7,
        };
        let s = Sampler::new(&l, &[0, 1, 2, 3, 4, 5], spec, None).unwrap();
        let idx: Vec<u64> = (0..200).collect();
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let four = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        let a = one.install(|| s.episodes(9, &idx)).unwrap();
        let b = four.install(|| s.episodes(9, &idx)).unwrap();
        assert_eq!(a, b);
        for (row, &i) in idx.iter().enumerate().step_by(17) {
            let e = s.episode(9, i).unwrap();
            assert_eq!(e.classes, a.classes[row * 3..(row + 1) * 3]);
            assert_eq!(e.sketch, a.sketch[row * 60..(row + 1) * 60]);
            assert_eq!(e.query, a.query[row * 21..(row + 1) * 21]);
            assert_eq!(e.support[..5], e.sketch[..5]);
            for (t, &c) in e.classes.iter().enumerate() {
                for &x in e.sketch[t * 20..(t + 1) * 20]
                    .iter()
                    .chain(&e.query[t * 7..(t + 1) * 7])
                {
                    assert_eq!(l[x as usize], c);
                }
            }
        }
    }

    #[test]
    fn errors_match_the_reference_wording() {
        let l = labels();
        let spec = Spec {
            ways: 4,
            sketch: 90,
            support: 5,
            query: 20,
        };
        let e = Sampler::new(&l, &[0, 1, 2], spec, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the class pool holds 3 classes, an episode needs 4"
        );
        let s = Sampler::new(&l, &[0, 1, 2, 3, 4, 5], spec, None).unwrap();
        let e = s.episode(0, 0).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("has 100 images for the sketch, the episode needs 110"),
            "{e}"
        );
        let q: Vec<i64> = vec![0; 50];
        let s = Sampler::new(&l, &[0, 1, 2, 3, 4, 5], spec, Some(&q)).unwrap();
        let (pos, e) = s.episodes(0, &[3, 4]).unwrap_err();
        assert_eq!(pos, 0);
        assert!(
            matches!(e, SampleError::TooFewImages { role: "query", .. }),
            "{e}"
        );
        let bad = Spec {
            ways: 2,
            sketch: 3,
            support: 4,
            query: 0,
        };
        assert!(Sampler::new(&l, &[0, 1], bad, None).is_err());
    }

    #[test]
    fn zero_queries_and_duplicate_pool_entries() {
        let l = labels();
        let spec = Spec {
            ways: 2,
            sketch: 3,
            support: 1,
            query: 0,
        };
        let s = Sampler::new(&l, &[4, 4], spec, None).unwrap();
        let b = s.episodes(1, &[0, 1, 2]).unwrap();
        assert_eq!(b.classes, vec![4; 6]);
        assert!(b.query.is_empty());
    }
}
