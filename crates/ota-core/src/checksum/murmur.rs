//! Streaming MurmurHash3 exactly as ThingsBoard computes it with Guava
//! (`Hashing.murmur3_32_fixed()` / `Hashing.murmur3_128()`, seed 0).
//!
//! Written here rather than taken from a crate because none fits a `no_std`, heap-free,
//! streaming device: `murmur3` 0.5 hashes a `std::io::Read` in one call, `fastmurmur3` 0.2
//! hashes one slice (x64_128 only), and `mur3` 0.1 (no_std, streaming) has had a single
//! release (2021) and reads blocks through raw pointers. Each hasher keeps the partial block
//! of the previous `update` so that any split of the input yields the same digest.
//!
//! Guava detail kept on purpose: the length mixed into the result is a Java `int` (wrapping,
//! and for the 128-bit variant sign-extended to 64 bits), so images of 2 GiB or more hash as
//! on a ThingsBoard server, not as the reference C code would.

/// Feeds `data` to `block` in whole `N`-byte blocks, carrying a partial block in `pending`.
#[inline]
fn feed_blocks<const N: usize>(
    pending: &mut [u8; N],
    pending_len: &mut usize,
    mut data: &[u8],
    mut block: impl FnMut(&[u8; N]),
) {
    if *pending_len > 0 {
        let take = (N - *pending_len).min(data.len());
        let Some((head, rest)) = data.split_at_checked(take) else {
            return;
        };
        if let Some(dst) = pending.get_mut(*pending_len..*pending_len + take) {
            dst.copy_from_slice(head);
        }
        *pending_len += take;
        data = rest;
        if *pending_len < N {
            return;
        }
        block(pending);
        *pending_len = 0;
    }
    let (blocks, tail) = data.as_chunks::<N>();
    for b in blocks {
        block(b);
    }
    if let Some(dst) = pending.get_mut(..tail.len()) {
        dst.copy_from_slice(tail);
    }
    *pending_len = tail.len();
}

/// Little-endian value of the first bytes of `bytes` (missing bytes read as zero).
#[inline]
fn le_u64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take(8)
        .enumerate()
        .fold(0, |acc, (i, &b)| acc | (u64::from(b) << (8 * i)))
}

/// Truncates a byte count to the low 32 bits, as Guava's `int length` counter does.
#[inline]
#[allow(clippy::cast_possible_truncation)] // wrapping is the point: Guava counts in an `int`
const fn low32(n: usize) -> u32 {
    n as u32
}

const C1_32: u32 = 0xcc9e_2d51;
const C2_32: u32 = 0x1b87_3593;

#[inline]
const fn mix_k1_32(k: u32) -> u32 {
    k.wrapping_mul(C1_32).rotate_left(15).wrapping_mul(C2_32)
}

#[inline]
const fn mix_h1_32(h: u32, k: u32) -> u32 {
    (h ^ mix_k1_32(k))
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// Streaming MurmurHash3 x86_32, seed 0 (Guava `murmur3_32_fixed`).
#[derive(Clone, Debug, Default)]
pub struct Murmur3_32 {
    h1: u32,
    pending: [u8; 4],
    pending_len: usize,
    length: u32,
}

impl Murmur3_32 {
    /// A hasher with seed 0.
    pub const fn new() -> Self {
        Self {
            h1: 0,
            pending: [0; 4],
            pending_len: 0,
            length: 0,
        }
    }

    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.length = self.length.wrapping_add(low32(data.len()));
        let h1 = &mut self.h1;
        feed_blocks(&mut self.pending, &mut self.pending_len, data, |b| {
            *h1 = mix_h1_32(*h1, u32::from_le_bytes(*b));
        });
    }

    /// The 32-bit hash (ThingsBoard's hex is its little-endian bytes).
    pub fn finish(&self) -> u32 {
        let mut h1 = self.h1;
        let tail = self.pending.get(..self.pending_len).unwrap_or_default();
        if !tail.is_empty() {
            // `tail` holds at most 3 bytes, so the value fits in 32 bits.
            h1 ^= mix_k1_32(low32_of_u64(le_u64(tail)));
        }
        h1 ^= self.length;
        h1 ^= h1 >> 16;
        h1 = h1.wrapping_mul(0x85eb_ca6b);
        h1 ^= h1 >> 13;
        h1 = h1.wrapping_mul(0xc2b2_ae35);
        h1 ^ (h1 >> 16)
    }
}

#[inline]
#[allow(clippy::cast_possible_truncation)] // callers pass values below 2^32
const fn low32_of_u64(v: u64) -> u32 {
    v as u32
}

#[inline]
#[allow(clippy::cast_possible_truncation)] // takes the low half on purpose
const fn low64(v: u128) -> u64 {
    v as u64
}

const C1_64: u64 = 0x87c3_7b91_1142_53d5;
const C2_64: u64 = 0x4cf5_ad43_2745_937f;

#[inline]
const fn mix_k1_64(k: u64) -> u64 {
    k.wrapping_mul(C1_64).rotate_left(31).wrapping_mul(C2_64)
}

#[inline]
const fn mix_k2_64(k: u64) -> u64 {
    k.wrapping_mul(C2_64).rotate_left(33).wrapping_mul(C1_64)
}

#[inline]
const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// Streaming MurmurHash3 x64_128, seed 0 (Guava `murmur3_128`).
#[derive(Clone, Debug, Default)]
pub struct Murmur3_128 {
    h1: u64,
    h2: u64,
    pending: [u8; 16],
    pending_len: usize,
    length: u32,
}

impl Murmur3_128 {
    /// A hasher with seed 0.
    pub const fn new() -> Self {
        Self {
            h1: 0,
            h2: 0,
            pending: [0; 16],
            pending_len: 0,
            length: 0,
        }
    }

    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.length = self.length.wrapping_add(low32(data.len()));
        let (h1, h2) = (&mut self.h1, &mut self.h2);
        feed_blocks(&mut self.pending, &mut self.pending_len, data, |b| {
            let block = u128::from_le_bytes(*b);
            let k1 = low64(block);
            let k2 = low64(block >> 64);
            *h1 ^= mix_k1_64(k1);
            *h1 = h1
                .rotate_left(27)
                .wrapping_add(*h2)
                .wrapping_mul(5)
                .wrapping_add(0x52dc_e729);
            *h2 ^= mix_k2_64(k2);
            *h2 = h2
                .rotate_left(31)
                .wrapping_add(*h1)
                .wrapping_mul(5)
                .wrapping_add(0x3849_5ab5);
        });
    }

    /// The two 64-bit halves `(h1, h2)`; ThingsBoard's hex is `h1` then `h2`, each
    /// little-endian.
    pub fn finish(&self) -> (u64, u64) {
        let (mut h1, mut h2) = (self.h1, self.h2);
        let tail = self.pending.get(..self.pending_len).unwrap_or_default();
        let (lo, hi) = tail.split_at(tail.len().min(8));
        h1 ^= mix_k1_64(le_u64(lo));
        h2 ^= mix_k2_64(le_u64(hi));
        // Guava: `h1 ^= length` with an `int` length, sign-extended to `long`.
        #[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
        let length = i64::from(self.length as i32) as u64;
        h1 ^= length;
        h2 ^= length;
        h1 = h1.wrapping_add(h2);
        h2 = h2.wrapping_add(h1);
        h1 = fmix64(h1);
        h2 = fmix64(h2);
        h1 = h1.wrapping_add(h2);
        h2 = h2.wrapping_add(h1);
        (h1, h2)
    }
}
