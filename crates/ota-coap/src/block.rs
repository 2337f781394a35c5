//! The Block2 option value of RFC 7959 §2.2: `NUM` (block number), `M` (more blocks follow)
//! and `SZX` (block size `2^(SZX+4)`, 16…1024 bytes).
//!
//! Written here rather than taken from `coap-lite`'s `BlockValue`, which lives behind its
//! `std` feature together with the whole-body caching `BlockHandler` we do not use, and
//! whose errors do not say which value was wrong.

/// Smallest block (SZX 0).
pub const MIN_BLOCK_SIZE: u16 = 16;
/// Largest block (SZX 6); SZX 7 is reserved by RFC 7959.
pub const MAX_BLOCK_SIZE: u16 = 1024;
/// Largest block number: `NUM` has 20 bits.
pub const MAX_BLOCK_NUM: u32 = (1 << 20) - 1;

/// Why a Block option value was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The option value is longer than the 3 bytes RFC 7959 allows.
    #[error("Block option value is {len} bytes, at most 3 allowed")]
    TooLong {
        /// Length of the value.
        len: usize,
    },
    /// SZX 7 is reserved (RFC 7959 §2.2: a request carrying it gets 4.00).
    #[error("Block option SZX 7 is reserved")]
    ReservedSzx,
    /// The block size is not a power of two in 16…1024.
    #[error("block size {size} is not one of 16, 32, 64, 128, 256, 512, 1024")]
    BadSize {
        /// The size asked for.
        size: u32,
    },
    /// The block number does not fit the 20-bit `NUM` field.
    #[error("block number {num} does not fit 20 bits")]
    NumTooLarge {
        /// The number asked for.
        num: u64,
    },
}

/// A decoded Block1/Block2 option value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Block {
    num: u32,
    more: bool,
    szx: u8,
}

impl Block {
    /// Block `num` of `size` bytes (16…1024, a power of two), with the `more` flag.
    pub fn new(num: u32, more: bool, size: u16) -> Result<Self, BlockError> {
        if num > MAX_BLOCK_NUM {
            return Err(BlockError::NumTooLarge {
                num: u64::from(num),
            });
        }
        let szx = match size {
            16 => 0,
            32 => 1,
            64 => 2,
            128 => 3,
            256 => 4,
            512 => 5,
            1024 => 6,
            _ => {
                return Err(BlockError::BadSize {
                    size: u32::from(size),
                });
            }
        };
        Ok(Self { num, more, szx })
    }

    /// Block `num` with exponent `szx`, both clamped to their fields (20 bits, 0…6).
    #[cfg(feature = "server")]
    pub(crate) const fn from_parts(num: u32, more: bool, szx: u8) -> Self {
        let num = if num > MAX_BLOCK_NUM {
            MAX_BLOCK_NUM
        } else {
            num
        };
        let szx = if szx > 6 { 6 } else { szx };
        Self { num, more, szx }
    }

    /// Decodes an option value (0 to 3 bytes, big-endian `NUM << 4 | M << 3 | SZX`).
    pub fn decode(value: &[u8]) -> Result<Self, BlockError> {
        if value.len() > 3 {
            return Err(BlockError::TooLong { len: value.len() });
        }
        let raw = value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        let szx = u8::try_from(raw & 0x7).unwrap_or(7);
        if szx == 7 {
            return Err(BlockError::ReservedSzx);
        }
        Ok(Self {
            num: raw >> 4,
            more: raw & 0x8 != 0,
            szx,
        })
    }

    /// Encodes the value in the fewest bytes (0 bytes for block 0, no more, 16 bytes).
    pub fn encode(self) -> Vec<u8> {
        let raw = (self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx);
        let bytes = raw.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        bytes.get(skip..).unwrap_or_default().to_vec()
    }

    /// Block number.
    pub const fn num(self) -> u32 {
        self.num
    }

    /// Whether more blocks follow.
    pub const fn more(self) -> bool {
        self.more
    }

    /// SZX exponent (0…6).
    pub const fn szx(self) -> u8 {
        self.szx
    }

    /// Block size in bytes: `2^(SZX+4)`.
    pub const fn size(self) -> u16 {
        1 << (self.szx + 4)
    }

    /// Byte offset of the block in the body: `NUM · size`.
    pub const fn offset(self) -> u64 {
        (self.num as u64) << (self.szx + 4)
    }

    /// The same block with `SZX` lowered to at most `max_szx` (a server may answer with a
    /// smaller block than asked; the number is scaled so the offset stays the same).
    #[must_use]
    pub const fn capped(self, max_szx: u8) -> Self {
        if self.szx <= max_szx {
            return self;
        }
        let shift = self.szx - max_szx;
        Self {
            num: self.num << shift,
            more: self.more,
            szx: max_szx,
        }
    }

    /// The same block with another `more` flag.
    #[must_use]
    pub const fn with_more(self, more: bool) -> Self {
        Self {
            num: self.num,
            more,
            szx: self.szx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_rfc_examples() {
        assert_eq!(
            Block::decode(&[]),
            Ok(Block {
                num: 0,
                more: false,
                szx: 0
            })
        );
        assert_eq!(
            Block::decode(&[0x06]),
            Ok(Block {
                num: 0,
                more: false,
                szx: 6
            })
        );
        assert_eq!(
            Block::decode(&[0x1e]),
            Ok(Block {
                num: 1,
                more: true,
                szx: 6
            })
        );
        let b = Block::decode(&[0xff, 0xff, 0xfe]).expect("3 bytes");
        assert_eq!((b.num(), b.more(), b.size()), (MAX_BLOCK_NUM, true, 1024));
    }

    #[test]
    fn refuses_bad_values() {
        assert_eq!(
            Block::decode(&[0, 0, 0, 6]),
            Err(BlockError::TooLong { len: 4 })
        );
        assert_eq!(Block::decode(&[0x07]), Err(BlockError::ReservedSzx));
        assert_eq!(
            Block::new(0, false, 2048),
            Err(BlockError::BadSize { size: 2048 })
        );
        assert_eq!(
            Block::new(0, false, 100),
            Err(BlockError::BadSize { size: 100 })
        );
        assert_eq!(
            Block::new(1 << 20, false, 16),
            Err(BlockError::NumTooLarge { num: 1 << 20 })
        );
    }

    #[test]
    fn capping_keeps_the_offset() {
        let b = Block::new(3, false, 1024).expect("valid");
        let c = b.capped(4);
        assert_eq!((c.num(), c.size(), c.offset()), (12, 256, 3072));
        assert_eq!(b.capped(6), b);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn round_trips(num in 0..=MAX_BLOCK_NUM, more: bool, szx in 0u8..=6) {
            let b = Block::new(num, more, 16 << szx).expect("valid");
            let bytes = b.encode();
            prop_assert!(bytes.len() <= 3);
            prop_assert_eq!(Block::decode(&bytes), Ok(b));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..8)) {
            let _ = Block::decode(&bytes);
        }
    }
}
