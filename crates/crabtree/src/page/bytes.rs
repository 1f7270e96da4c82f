//! Byte access to one page, the same code over a private copy or a shared
//! frame.
//!
//! A frame in the buffer pool can be read by optimistic readers while its
//! exclusive holder writes it. Rust's memory model makes a plain `&[u8]` read
//! racing a write undefined behaviour, so frames are arrays of `AtomicU64`
//! and every access goes through relaxed atomic loads and stores
//! ([`AtomicPage`]). The latch's version check (acquire fence, see
//! `buffer::latch`) orders them; a torn read is caught by validation and can
//! only cause a restart.
//!
//! Decoders are generic over [`PageBuf`] so the same, bounds-checked code runs
//! on a `[u8]` copy (tests, I/O buffers, fuzzing) and on a live frame.
//!
//! Invariants:
//! * byte `i` of a frame is byte `i % 8` of `words[i / 8].to_ne_bytes()`, the
//!   same layout a plain byte copy of the frame has;
//! * every method is total: an out-of-range offset is a programmer error
//!   (debug assertion); in release builds reads of such ranges yield zeros
//!   and writes are dropped, never a panic or an out-of-bounds access.

use crate::sync::{AtomicU64, Ordering};
use std::cmp::Ordering as CmpOrdering;

/// Read access to a page's bytes.
pub trait PageBuf {
    /// Size of the page in bytes.
    fn size(&self) -> usize;

    /// Copies `out.len()` bytes starting at `offset` into `out`.
    fn read_into(&self, offset: usize, out: &mut [u8]);

    /// Compares the `len` page bytes at `offset` with `key` (memcmp order,
    /// shorter prefix first).
    fn compare(&self, offset: usize, len: usize, key: &[u8]) -> CmpOrdering;

    /// Reads `N` bytes at `offset`.
    fn read_array<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut out = [0u8; N];
        self.read_into(offset, &mut out);
        out
    }

    /// Reads one byte.
    fn read_u8(&self, offset: usize) -> u8 {
        self.read_array::<1>(offset)[0]
    }

    /// Reads a little-endian `u16`.
    fn read_u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes(self.read_array(offset))
    }

    /// Reads a little-endian `u32`.
    fn read_u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.read_array(offset))
    }

    /// Reads a little-endian `u64`.
    fn read_u64(&self, offset: usize) -> u64 {
        u64::from_le_bytes(self.read_array(offset))
    }

    /// Copies `len` bytes at `offset` into a new vector.
    fn read_vec(&self, offset: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.read_into(offset, &mut out);
        out
    }

    /// Hints that the `len` bytes at `offset` will be read soon (a frame
    /// starts fetching their cache lines; other pages ignore it). Out of
    /// range bytes are ignored.
    #[inline]
    fn prefetch(&self, offset: usize, len: usize) {
        let _ = (offset, len);
    }
}

impl<T: PageBuf + ?Sized> PageBuf for &T {
    fn size(&self) -> usize {
        (**self).size()
    }

    fn read_into(&self, offset: usize, out: &mut [u8]) {
        (**self).read_into(offset, out)
    }

    fn compare(&self, offset: usize, len: usize, key: &[u8]) -> CmpOrdering {
        (**self).compare(offset, len, key)
    }

    // The fixed-width reads are forwarded too, so a `&AtomicPage` keeps the
    // word-wise fast paths instead of falling back to the byte-wise defaults.
    #[inline]
    fn read_u8(&self, offset: usize) -> u8 {
        (**self).read_u8(offset)
    }

    #[inline]
    fn read_u16(&self, offset: usize) -> u16 {
        (**self).read_u16(offset)
    }

    #[inline]
    fn read_u32(&self, offset: usize) -> u32 {
        (**self).read_u32(offset)
    }

    #[inline]
    fn read_u64(&self, offset: usize) -> u64 {
        (**self).read_u64(offset)
    }

    fn read_vec(&self, offset: usize, len: usize) -> Vec<u8> {
        (**self).read_vec(offset, len)
    }

    #[inline]
    fn prefetch(&self, offset: usize, len: usize) {
        (**self).prefetch(offset, len)
    }
}

/// Write access to a page's bytes (only the exclusive latch holder has it).
pub trait PageBufMut: PageBuf {
    /// Writes `data` at `offset`.
    fn write(&mut self, offset: usize, data: &[u8]);

    /// Moves `len` bytes from `src` to `dst` (ranges may overlap).
    fn copy_within(&mut self, src: usize, dst: usize, len: usize);

    /// Writes one byte.
    fn write_u8(&mut self, offset: usize, value: u8) {
        self.write(offset, &[value]);
    }

    /// Writes a little-endian `u16`.
    fn write_u16(&mut self, offset: usize, value: u16) {
        self.write(offset, &value.to_le_bytes());
    }

    /// Writes a little-endian `u32`.
    fn write_u32(&mut self, offset: usize, value: u32) {
        self.write(offset, &value.to_le_bytes());
    }

    /// Writes a little-endian `u64`.
    fn write_u64(&mut self, offset: usize, value: u64) {
        self.write(offset, &value.to_le_bytes());
    }

    /// Sets `len` bytes at `offset` to zero.
    fn zero(&mut self, offset: usize, len: usize) {
        const ZEROS: [u8; 256] = [0; 256];
        let mut done = 0;
        while done < len {
            let step = (len - done).min(ZEROS.len());
            self.write(offset + done, &ZEROS[..step]);
            done += step;
        }
    }
}

/// Clamps `offset..offset + len` to `0..size`; `None` when any part is out.
fn range_checked(size: usize, offset: usize, len: usize) -> Option<std::ops::Range<usize>> {
    let end = offset.checked_add(len)?;
    debug_assert!(end <= size, "page access {offset}+{len} past {size}");
    (end <= size).then_some(offset..end)
}

impl PageBuf for [u8] {
    fn size(&self) -> usize {
        self.len()
    }

    fn read_into(&self, offset: usize, out: &mut [u8]) {
        match range_checked(self.len(), offset, out.len()) {
            Some(range) => out.copy_from_slice(&self[range]),
            None => out.fill(0),
        }
    }

    fn compare(&self, offset: usize, len: usize, key: &[u8]) -> CmpOrdering {
        match range_checked(self.len(), offset, len) {
            Some(range) => self[range].cmp(key),
            None => [].as_slice().cmp(key),
        }
    }
}

impl PageBufMut for [u8] {
    fn write(&mut self, offset: usize, data: &[u8]) {
        if let Some(range) = range_checked(self.len(), offset, data.len()) {
            self[range].copy_from_slice(data);
        }
    }

    fn copy_within(&mut self, src: usize, dst: usize, len: usize) {
        let size = self.len();
        if range_checked(size, src, len).is_some() && range_checked(size, dst, len).is_some() {
            <[u8]>::copy_within(self, src..src + len, dst);
        }
    }
}

/// A page frame shared between threads: `size / 8` atomic words.
///
/// Cheap to copy; it borrows the frame. Reads are relaxed atomic loads and
/// may observe a concurrent writer's partial update: callers validate the
/// latch version before acting on anything read (see `buffer::latch`).
#[derive(Clone, Copy)]
pub struct AtomicPage<'a> {
    words: &'a [AtomicU64],
}

/// Mutable access to a frame, handed out only to the exclusive latch holder.
pub struct AtomicPageMut<'a> {
    words: &'a [AtomicU64],
}

impl<'a> AtomicPage<'a> {
    /// Wraps a frame of `words.len() * 8` bytes.
    pub fn new(words: &'a [AtomicU64]) -> Self {
        AtomicPage { words }
    }

    /// Copies the whole frame into `out` (which must be the page size).
    pub fn copy_to(&self, out: &mut [u8]) {
        self.read_into(0, out);
    }
}

impl<'a> AtomicPageMut<'a> {
    /// Wraps a frame for writing. The caller must hold the frame's exclusive
    /// latch: concurrent writers would interleave.
    pub fn new(words: &'a [AtomicU64]) -> Self {
        AtomicPageMut { words }
    }

    /// A read view of the same frame.
    pub fn as_ref(&self) -> AtomicPage<'_> {
        AtomicPage { words: self.words }
    }

    /// Overwrites the whole frame with `data` (the page size).
    pub fn copy_from(&mut self, data: &[u8]) {
        self.write(0, data);
    }
}

#[inline]
fn load(words: &[AtomicU64], index: usize) -> [u8; 8] {
    // Relaxed: ordering comes from the latch protocol (acquire on the
    // version load, acquire fence before validation).
    words[index].load(Ordering::Relaxed).to_ne_bytes()
}

/// Word `index` as a little-endian number: its byte `k` (`value >> 8k`) is
/// page byte `index * 8 + k`, on any host byte order.
#[inline]
fn load_le(words: &[AtomicU64], index: usize) -> u64 {
    u64::from_le_bytes(load(words, index))
}

/// The `len` (1..=8) page bytes at `pos` as a little-endian number (the
/// bytes above `len` are zero), from one or two word loads whatever the
/// alignment. `None` if the range is outside the page.
#[inline]
fn load_le_at(words: &[AtomicU64], pos: usize, len: usize) -> Option<u64> {
    debug_assert!((1..=8).contains(&len));
    let range = range_checked(words.len() * 8, pos, len)?;
    let (index, skew) = (range.start / 8, range.start % 8);
    let mut value = load_le(words, index) >> (skew * 8);
    if skew + len > 8 {
        // The range ends in the next word (inside the page: checked above).
        value |= load_le(words, index + 1) << ((8 - skew) * 8);
    }
    Some(if len == 8 { value } else { value & ((1u64 << (len * 8)) - 1) })
}

/// Up to 8 bytes of `bytes` as a little-endian number, zero above.
#[inline]
fn le_from_slice(bytes: &[u8]) -> u64 {
    // A whole chunk (the common case in key comparisons): one fixed-size
    // read, no copy call.
    if let Some(chunk) = bytes.first_chunk::<8>() {
        return u64::from_le_bytes(*chunk);
    }
    let mut buf = [0u8; 8];
    for (to, from) in buf.iter_mut().zip(bytes) {
        *to = *from;
    }
    u64::from_le_bytes(buf)
}

/// memcmp order of two little-endian chunks holding the same number of
/// bytes (zero above): the first differing byte is the lowest one, so
/// compare the byte-swapped (big-endian) values.
#[inline]
fn cmp_le_chunks(ours: u64, theirs: u64) -> CmpOrdering {
    ours.swap_bytes().cmp(&theirs.swap_bytes())
}

/// `len` bytes at `offset` in a new vector; zeros when out of range, as
/// `atomic_read_into`. The vector is allocated, zeroed and then filled:
/// 38 instructions a get fewer than pushing word by word (callgrind), and
/// not `vec![0; len]`, whose `calloc` skips glibc's per-thread cache
/// (`get_probe memory 1000`: 203-205 ns a get against 184-188 ns).
#[allow(clippy::slow_vector_initialization, reason = "calloc is the slow one here (see above)")]
fn atomic_read_vec(words: &[AtomicU64], offset: usize, len: usize) -> Vec<u8> {
    let Some(range) = range_checked(words.len() * 8, offset, len) else {
        return vec![0; len];
    };
    let mut out = Vec::with_capacity(len);
    out.resize(len, 0);
    atomic_read_into(words, range.start, &mut out);
    out
}

fn atomic_read_into(words: &[AtomicU64], offset: usize, out: &mut [u8]) {
    let Some(range) = range_checked(words.len() * 8, offset, out.len()) else {
        out.fill(0);
        return;
    };
    let mut pos = range.start;
    let mut rest = out;
    // Head: up to the next word boundary.
    if pos % 8 != 0 {
        let word = load(words, pos / 8);
        let start = pos % 8;
        let take = (8 - start).min(rest.len());
        let (head, tail) = rest.split_at_mut(take);
        head.copy_from_slice(&word[start..start + take]);
        rest = tail;
        pos += take;
    }
    // Body: whole words; `pos` is aligned here whenever `rest` is non-empty.
    let mut chunks = rest.chunks_exact_mut(8);
    let mut index = pos / 8;
    for chunk in chunks.by_ref() {
        chunk.copy_from_slice(&load(words, index));
        index += 1;
    }
    // Tail: the first bytes of one more word.
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let word = load(words, index);
        tail.copy_from_slice(&word[..tail.len()]);
    }
}

fn atomic_compare(words: &[AtomicU64], offset: usize, len: usize, key: &[u8]) -> CmpOrdering {
    if range_checked(words.len() * 8, offset, len).is_none() {
        return [].as_slice().cmp(key);
    }
    // Compare the common prefix 8 bytes at a time, then the lengths.
    let common = len.min(key.len());
    let mut done = 0;
    while done < common {
        let take = (common - done).min(8);
        let ours = load_le_at(words, offset + done, take).unwrap_or(0);
        let theirs = le_from_slice(&key[done..done + take]);
        if ours != theirs {
            return cmp_le_chunks(ours, theirs);
        }
        done += take;
    }
    len.cmp(&key.len())
}

/// The fixed-width reads of a frame: one or two word loads each, the same
/// result as the byte-wise defaults (zero when out of range).
macro_rules! atomic_fixed_reads {
    () => {
        #[inline]
        fn read_u8(&self, offset: usize) -> u8 {
            load_le_at(self.words, offset, 1).unwrap_or(0) as u8
        }

        #[inline]
        fn read_u16(&self, offset: usize) -> u16 {
            load_le_at(self.words, offset, 2).unwrap_or(0) as u16
        }

        #[inline]
        fn read_u32(&self, offset: usize) -> u32 {
            load_le_at(self.words, offset, 4).unwrap_or(0) as u32
        }

        #[inline]
        fn read_u64(&self, offset: usize) -> u64 {
            load_le_at(self.words, offset, 8).unwrap_or(0)
        }
    };
}

impl PageBuf for AtomicPage<'_> {
    #[inline]
    fn size(&self) -> usize {
        self.words.len() * 8
    }

    #[inline]
    fn read_into(&self, offset: usize, out: &mut [u8]) {
        atomic_read_into(self.words, offset, out);
    }

    #[inline]
    fn read_vec(&self, offset: usize, len: usize) -> Vec<u8> {
        atomic_read_vec(self.words, offset, len)
    }

    #[inline]
    fn compare(&self, offset: usize, len: usize, key: &[u8]) -> CmpOrdering {
        atomic_compare(self.words, offset, len, key)
    }

    #[inline]
    fn prefetch(&self, offset: usize, len: usize) {
        const LINE_WORDS: usize = 8;
        let end = offset.saturating_add(len).div_ceil(8).min(self.words.len());
        // A counted loop: 16 instructions a descent step fewer than
        // `step_by` (callgrind).
        let mut index = offset / 8 / LINE_WORDS * LINE_WORDS;
        while index < end {
            crate::sync::prefetch(&self.words[index]);
            index += LINE_WORDS;
        }
    }

    atomic_fixed_reads!();
}

impl PageBuf for AtomicPageMut<'_> {
    #[inline]
    fn size(&self) -> usize {
        self.words.len() * 8
    }

    #[inline]
    fn read_into(&self, offset: usize, out: &mut [u8]) {
        atomic_read_into(self.words, offset, out);
    }

    #[inline]
    fn read_vec(&self, offset: usize, len: usize) -> Vec<u8> {
        atomic_read_vec(self.words, offset, len)
    }

    #[inline]
    fn compare(&self, offset: usize, len: usize, key: &[u8]) -> CmpOrdering {
        atomic_compare(self.words, offset, len, key)
    }

    atomic_fixed_reads!();
}

impl PageBufMut for AtomicPageMut<'_> {
    fn write(&mut self, offset: usize, data: &[u8]) {
        let Some(range) = range_checked(self.words.len() * 8, offset, data.len()) else {
            return;
        };
        // Relaxed stores: the exclusive holder is the only writer; readers
        // validate through the latch version (release on unlock).
        let mut pos = range.start;
        let mut rest = data;
        // Head: the bytes before the next word boundary, merged into the word.
        if pos % 8 != 0 {
            let (index, start) = (pos / 8, pos % 8);
            let take = (8 - start).min(rest.len());
            let mut word = load(self.words, index);
            word[start..start + take].copy_from_slice(&rest[..take]);
            self.words[index].store(u64::from_ne_bytes(word), Ordering::Relaxed);
            rest = &rest[take..];
            pos += take;
        }
        // Body: whole words; `pos` is aligned here whenever `rest` is non-empty.
        let mut chunks = rest.chunks_exact(8);
        let mut index = pos / 8;
        for chunk in chunks.by_ref() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.words[index].store(u64::from_ne_bytes(word), Ordering::Relaxed);
            index += 1;
        }
        // Tail: the first bytes of one more word.
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut word = load(self.words, index);
            word[..tail.len()].copy_from_slice(tail);
            self.words[index].store(u64::from_ne_bytes(word), Ordering::Relaxed);
        }
    }

    fn copy_within(&mut self, src: usize, dst: usize, len: usize) {
        let size = self.words.len() * 8;
        if range_checked(size, src, len).is_none() || range_checked(size, dst, len).is_none() {
            return;
        }
        // Move through a bounce buffer in chunks, in the direction that never
        // reads a byte this move already overwrote.
        const CHUNK: usize = 512;
        let mut buf = [0u8; CHUNK];
        if dst <= src {
            let mut done = 0;
            while done < len {
                let step = (len - done).min(CHUNK);
                atomic_read_into(self.words, src + done, &mut buf[..step]);
                self.write(dst + done, &buf[..step]);
                done += step;
            }
        } else {
            let mut left = len;
            while left > 0 {
                let step = left.min(CHUNK);
                left -= step;
                atomic_read_into(self.words, src + left, &mut buf[..step]);
                self.write(dst + left, &buf[..step]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(size: usize) -> Vec<AtomicU64> {
        (0..size / 8).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn a_prefetch_of_any_range_changes_nothing_and_never_panics() {
        let words = frame(4096);
        AtomicPageMut::new(&words).write(100, b"kept");
        let page = AtomicPage::new(&words);
        for (offset, len) in [(0, 0), (0, 1024), (4090, 100), (4096, 8), (9000, 1), (usize::MAX, usize::MAX), (7, 4089)]
        {
            page.prefetch(offset, len);
            <&AtomicPage as PageBuf>::prefetch(&&page, offset, len);
            [0u8; 16].as_slice().prefetch(offset, len);
        }
        assert_eq!(page.read_vec(100, 4), b"kept");
    }

    #[test]
    fn atomic_and_plain_pages_agree() {
        let words = frame(256);
        let mut plain = vec![0u8; 256];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let offset = rng.usize(0..250);
            let len = rng.usize(0..(256 - offset).min(40));
            let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            match rng.u8(0..3) {
                0 => {
                    AtomicPageMut::new(&words).write(offset, &data);
                    plain.as_mut_slice().write(offset, &data);
                }
                1 => {
                    let src = rng.usize(0..256 - len);
                    AtomicPageMut::new(&words).copy_within(src, offset, len);
                    PageBufMut::copy_within(plain.as_mut_slice(), src, offset, len);
                }
                _ => {
                    let page = AtomicPage::new(&words);
                    let ours = page.read_vec(offset, len);
                    assert_eq!(ours, plain.as_slice().read_vec(offset, len));
                    assert_eq!(page.compare(offset, len, &data), plain[offset..offset + len].cmp(&data));
                }
            }
        }
        let mut copy = vec![0u8; 256];
        AtomicPage::new(&words).copy_to(&mut copy);
        assert_eq!(copy, plain);
    }

    fn frame_from(bytes: &[u8]) -> Vec<AtomicU64> {
        let words = frame(bytes.len());
        AtomicPageMut::new(&words).copy_from(bytes);
        words
    }

    /// The keys a lookup may compare with `stored`: itself, a prefix, an
    /// extension and a copy with one byte changed.
    fn probe_keys(stored: &[u8], flip: (usize, u8)) -> Vec<Vec<u8>> {
        let mut keys = vec![stored.to_vec()];
        if let Some((_, prefix)) = stored.split_last() {
            keys.push(prefix.to_vec());
            let mut changed = stored.to_vec();
            changed[flip.0 % stored.len()] = flip.1;
            keys.push(changed);
        }
        let mut longer = stored.to_vec();
        longer.push(flip.1);
        keys.push(longer);
        keys
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// The word-wise fast paths of a frame (fixed-width reads, copies,
        /// compares), directly and through a reference, agree with the plain
        /// slice implementation at every offset.
        #[test]
        fn fast_paths_match_plain_slices(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 96),
            flip in (0usize..64, proptest::prelude::any::<u8>()),
        ) {
            let words = frame_from(&bytes);
            let page = AtomicPage::new(&words);
            let by_ref = &page;
            let plain = bytes.as_slice();
            for offset in 0..=plain.len() {
                let room = plain.len() - offset;
                if room >= 1 {
                    proptest::prop_assert_eq!(page.read_u8(offset), plain.read_u8(offset));
                    proptest::prop_assert_eq!(by_ref.read_u8(offset), plain.read_u8(offset));
                }
                if room >= 2 {
                    proptest::prop_assert_eq!(page.read_u16(offset), plain.read_u16(offset));
                    proptest::prop_assert_eq!(by_ref.read_u16(offset), plain.read_u16(offset));
                }
                if room >= 4 {
                    proptest::prop_assert_eq!(page.read_u32(offset), plain.read_u32(offset));
                    proptest::prop_assert_eq!(by_ref.read_u32(offset), plain.read_u32(offset));
                }
                if room >= 8 {
                    proptest::prop_assert_eq!(page.read_u64(offset), plain.read_u64(offset));
                    proptest::prop_assert_eq!(by_ref.read_u64(offset), plain.read_u64(offset));
                }
                for len in 0..=room.min(40) {
                    proptest::prop_assert_eq!(page.read_vec(offset, len), plain.read_vec(offset, len));
                    proptest::prop_assert_eq!(by_ref.read_vec(offset, len), plain.read_vec(offset, len));
                    for key in probe_keys(&plain[offset..offset + len], flip) {
                        let expected = plain.compare(offset, len, &key);
                        proptest::prop_assert_eq!(page.compare(offset, len, &key), expected);
                        proptest::prop_assert_eq!(by_ref.compare(offset, len, &key), expected);
                    }
                }
            }
        }
    }

    #[test]
    fn compare_orders_prefixes_first() {
        let words = frame(64);
        AtomicPageMut::new(&words).write(3, b"abc");
        let page = AtomicPage::new(&words);
        assert_eq!(page.compare(3, 3, b"abc"), CmpOrdering::Equal);
        assert_eq!(page.compare(3, 3, b"abcd"), CmpOrdering::Less);
        assert_eq!(page.compare(3, 3, b"ab"), CmpOrdering::Greater);
        assert_eq!(page.compare(3, 2, b"abc"), CmpOrdering::Less);
        assert_eq!(page.compare(3, 3, b"abd"), CmpOrdering::Less);
        assert_eq!(page.compare(3, 0, b""), CmpOrdering::Equal);
    }
}
