//! A 256-bit unsigned integer: the Python engine's day bitmaps (arbitrary-precision ints) at a fixed width.
//!
//! The batch core takes only states whose bitmaps fit in 128 bits; the widest value the engagement and
//! retention math derives from such a bitmap reaches 90 bits further (the 30-day churn base shifted by 30,
//! the retention presence window shifted by 30), so 256 bits hold every intermediate value exactly, and
//! `a & !b` gives what Python's `a & ~b` gives for the non-negative `a` of the math.

use std::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign, BitXor, Not};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct U256(pub [u64; 4]);

impl U256 {
    pub const ZERO: U256 = U256([0; 4]);

    pub fn from_u128(value: u128) -> U256 {
        U256([value as u64, (value >> 64) as u64, 0, 0])
    }

    /// The value as u128, when it fits.
    pub fn to_u128(self) -> Option<u128> {
        if self.0[2] != 0 || self.0[3] != 0 {
            return None;
        }
        Some(self.0[0] as u128 | (self.0[1] as u128) << 64)
    }

    pub fn is_zero(self) -> bool {
        self.0 == [0; 4]
    }

    /// 1 << i (zero when i >= 256).
    pub fn bit(i: u32) -> U256 {
        if i >= 256 {
            return U256::ZERO;
        }
        let mut out = [0u64; 4];
        out[(i / 64) as usize] = 1u64 << (i % 64);
        U256(out)
    }

    /// (1 << n) - 1 (all ones when n >= 256).
    pub fn mask(n: u32) -> U256 {
        if n >= 256 {
            return !U256::ZERO;
        }
        let mut out = [0u64; 4];
        for (i, word) in out.iter_mut().enumerate() {
            let low = i as u32 * 64;
            if n >= low + 64 {
                *word = u64::MAX;
            } else if n > low {
                *word = (1u64 << (n - low)) - 1;
            }
        }
        U256(out)
    }

    pub fn test(self, i: u32) -> bool {
        i < 256 && self.0[(i / 64) as usize] >> (i % 64) & 1 == 1
    }

    pub fn shl(self, n: u32) -> U256 {
        if n >= 256 {
            return U256::ZERO;
        }
        let words = (n / 64) as usize;
        let bits = n % 64;
        let mut out = [0u64; 4];
        for (i, word) in out.iter_mut().enumerate().skip(words) {
            let src = i - words;
            let mut v = self.0[src] << bits;
            if bits > 0 && src > 0 {
                v |= self.0[src - 1] >> (64 - bits);
            }
            *word = v;
        }
        U256(out)
    }

    pub fn shr(self, n: u32) -> U256 {
        if n >= 256 {
            return U256::ZERO;
        }
        let words = (n / 64) as usize;
        let bits = n % 64;
        let mut out = [0u64; 4];
        for (i, word) in out.iter_mut().enumerate().take(4 - words) {
            let src = i + words;
            let mut v = self.0[src] >> bits;
            if bits > 0 && src + 1 < 4 {
                v |= self.0[src + 1] << (64 - bits);
            }
            *word = v;
        }
        U256(out)
    }

    /// Index of the lowest set bit (256 for zero).
    pub fn trailing_zeros(self) -> u32 {
        for (i, word) in self.0.iter().enumerate() {
            if *word != 0 {
                return i as u32 * 64 + word.trailing_zeros();
            }
        }
        256
    }

    /// Python's int.bit_length().
    pub fn bit_length(self) -> u32 {
        for i in (0..4).rev() {
            if self.0[i] != 0 {
                return i as u32 * 64 + 64 - self.0[i].leading_zeros();
            }
        }
        0
    }

    pub fn count_ones(self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
}

impl BitAnd for U256 {
    type Output = U256;
    fn bitand(self, o: U256) -> U256 {
        U256([
            self.0[0] & o.0[0],
            self.0[1] & o.0[1],
            self.0[2] & o.0[2],
            self.0[3] & o.0[3],
        ])
    }
}

impl BitOr for U256 {
    type Output = U256;
    fn bitor(self, o: U256) -> U256 {
        U256([
            self.0[0] | o.0[0],
            self.0[1] | o.0[1],
            self.0[2] | o.0[2],
            self.0[3] | o.0[3],
        ])
    }
}

impl BitXor for U256 {
    type Output = U256;
    fn bitxor(self, o: U256) -> U256 {
        U256([
            self.0[0] ^ o.0[0],
            self.0[1] ^ o.0[1],
            self.0[2] ^ o.0[2],
            self.0[3] ^ o.0[3],
        ])
    }
}

impl Not for U256 {
    type Output = U256;
    fn not(self) -> U256 {
        U256([!self.0[0], !self.0[1], !self.0[2], !self.0[3]])
    }
}

impl BitOrAssign for U256 {
    fn bitor_assign(&mut self, o: U256) {
        *self = *self | o;
    }
}

impl BitAndAssign for U256 {
    fn bitand_assign(&mut self, o: U256) {
        *self = *self & o;
    }
}

/// streams.activity.spread: days whose trailing window of `width` days holds a set day.
pub fn spread(bits: U256, width: u32) -> U256 {
    let mut covered = 1;
    let mut out = bits;
    while covered * 2 <= width {
        out |= out.shl(covered);
        covered *= 2;
    }
    if covered < width {
        out |= out.shl(width - covered);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_cross_words() {
        let one = U256::from_u128(1);
        assert_eq!(one.shl(130).trailing_zeros(), 130);
        assert_eq!(one.shl(130).shr(129), U256::from_u128(2));
        assert_eq!(U256::mask(70).count_ones(), 70);
        assert_eq!(U256::mask(70).bit_length(), 70);
        assert_eq!(spread(one, 30), U256::mask(30));
        assert_eq!(spread(one.shl(100), 60), U256::mask(60).shl(100));
    }
}
