//! Gathering rows of a contiguous store into one new contiguous array, in parallel.

use rayon::prelude::*;

/// `out[k] = items[index[k]]` for items of `item` bytes in `store` (`n = store.len() / item` items).
/// Every index is checked first; the error names the first bad one.
pub fn gather(store: &[u8], item: usize, index: &[i64]) -> Result<Vec<u8>, String> {
    let n = store.len().checked_div(item).unwrap_or(0);
    if let Some((pos, &bad)) = index
        .iter()
        .enumerate()
        .find(|(_, &i)| i < 0 || i as u64 >= n as u64)
    {
        return Err(format!(
            "index {bad} at position {pos} is out of range for a store of {n} images"
        ));
    }
    let total = index
        .len()
        .checked_mul(item)
        .ok_or_else(|| "the gathered array would be too large".to_string())?;
    if item == 0 {
        return Ok(Vec::new());
    }
    let mut out = vec![0u8; total];
    out.par_chunks_mut(item)
        .zip(index.par_iter())
        .with_min_len(16)
        .for_each(|(dst, &i)| {
            let i = i as usize;
            dst.copy_from_slice(&store[i * item..(i + 1) * item]);
        });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_rows_and_checks_bounds() {
        let store: Vec<u8> = (0..12).collect();
        assert_eq!(
            gather(&store, 3, &[3, 0, 3]).unwrap(),
            vec![9, 10, 11, 0, 1, 2, 9, 10, 11]
        );
        assert!(gather(&store, 3, &[4])
            .unwrap_err()
            .contains("index 4 at position 0"));
        assert!(gather(&store, 3, &[0, -1]).is_err());
        assert_eq!(gather(&store, 3, &[]).unwrap(), Vec::<u8>::new());
    }
}
