//! A small seeded pseudo-random generator (xorshift64*), for jitter and nonces.
//!
//! The core never reaches for an entropy source: the runtime passes a seed in (the chip
//! from its hardware RNG, the host and simulator from the run's seed), so a simulated run
//! replays exactly.

/// Seeded xorshift64* generator.
#[derive(Clone, Debug)]
pub struct Rand {
    state: u64,
}

impl Rand {
    /// A generator from `seed`; a zero seed is replaced by a fixed non-zero one.
    pub fn new(seed: u64) -> Self {
        Rand {
            state: if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            },
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = Rand::new(7);
        let mut b = Rand::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert!(Rand::new(0).below(10) < 10);
    }
}
