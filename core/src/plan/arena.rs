//! Packing buffers with lifetimes into one arena: greedy by size, first fit. Two buffers may
//! share bytes only when their lifetimes (inclusive step ranges) do not overlap.

/// A request: `bytes` live from step `first` to step `last` inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    /// Bytes needed.
    pub bytes: usize,
    /// First step the buffer is live.
    pub first: usize,
    /// Last step the buffer is live.
    pub last: usize,
}

/// Rounds `n` up to a multiple of `align` (a power of two).
pub fn align_up(n: usize, align: usize) -> usize {
    (n + align - 1) & !(align - 1)
}

/// Places each interval at an offset (multiple of `align`) so that live-at-once buffers never
/// overlap. Returns the offsets (same order as `items`) and the arena size.
pub fn pack(items: &[Interval], align: usize) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    // Largest first; ties by earlier start, then index, so the packing is deterministic.
    order.sort_by(|&a, &b| {
        items[b]
            .bytes
            .cmp(&items[a].bytes)
            .then(items[a].first.cmp(&items[b].first))
            .then(a.cmp(&b))
    });
    let mut offsets = vec![0usize; items.len()];
    let mut placed: Vec<(usize, usize, usize)> = Vec::new(); // (offset, end, item)
    let mut total = 0;
    for &i in &order {
        let it = items[i];
        let size = align_up(it.bytes, align);
        if size == 0 {
            continue;
        }
        // Address ranges taken by buffers whose lifetime overlaps this one, by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&(_, _, j)| items[j].first <= it.last && it.first <= items[j].last)
            .map(|&(o, e, _)| (o, e))
            .collect();
        busy.sort_unstable();
        let mut at = 0;
        for (o, e) in busy {
            if o >= at + size {
                break;
            }
            at = at.max(e);
        }
        offsets[i] = at;
        placed.push((at, at + size, i));
        total = total.max(at + size);
    }
    (offsets, total)
}

/// The largest sum of bytes live at any one step: a lower bound for any packing.
pub fn live_peak(items: &[Interval]) -> usize {
    let steps = items.iter().map(|i| i.last + 1).max().unwrap_or(0);
    let mut delta = vec![0isize; steps + 1];
    for it in items {
        delta[it.first] += it.bytes as isize;
        delta[it.last + 1] -= it.bytes as isize;
    }
    let mut cur = 0isize;
    let mut best = 0isize;
    for d in delta {
        cur += d;
        best = best.max(cur);
    }
    best as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(a: &Interval, oa: usize, b: &Interval, ob: usize) -> bool {
        let live = a.first <= b.last && b.first <= a.last;
        let mem = oa < ob + b.bytes && ob < oa + a.bytes;
        live && mem
    }

    #[test]
    fn disjoint_lifetimes_share_memory() {
        let items = [
            Interval { bytes: 100, first: 0, last: 1 },
            Interval { bytes: 100, first: 2, last: 3 },
        ];
        let (off, total) = pack(&items, 1);
        assert_eq!(total, 100);
        assert_eq!(off, vec![0, 0]);
    }

    #[test]
    fn packing_never_overlaps_live_buffers() {
        // A deterministic pseudo-random set of intervals.
        let mut s = 12345u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as usize
        };
        let items: Vec<Interval> = (0..200)
            .map(|_| {
                let first = next() % 50;
                Interval { bytes: 1 + next() % 1000, first, last: first + next() % 10 }
            })
            .collect();
        let (off, total) = pack(&items, 64);
        for i in 0..items.len() {
            assert!(off[i] % 64 == 0);
            assert!(off[i] + items[i].bytes <= total);
            for j in 0..i {
                assert!(!overlaps(&items[i], off[i], &items[j], off[j]), "{i} and {j} overlap");
            }
        }
        assert!(total >= live_peak(&items));
    }
}
