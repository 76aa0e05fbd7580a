//! Deterministic random streams. Every random decision in the pipeline is
//! drawn from a stream named by a few integers (seed, epoch, record, view...),
//! never from shared state, so results do not depend on which thread draws
//! them or in which order.

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

pub use rand_xoshiro::Xoshiro256PlusPlus as StreamRng;

/// SplitMix64 finaliser: a bijective 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The stream named by `parts` (order matters).
pub fn stream(parts: &[u64]) -> Xoshiro256PlusPlus {
    let mut h = 0x5851_F42D_4C95_7F2Du64;
    for &p in parts {
        h = mix(h ^ p);
    }
    Xoshiro256PlusPlus::seed_from_u64(h)
}

/// Uniform in [0, 1).
pub fn unit_f64(rng: &mut impl Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Uniform in [lo, hi).
pub fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * unit_f64(rng)
}

/// Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; bias < n / 2^64).
pub fn below(rng: &mut impl Rng, n: u64) -> u64 {
    ((rng.next_u64() as u128 * n as u128) >> 64) as u64
}

/// True with probability `p`.
pub fn chance(rng: &mut impl Rng, p: f64) -> bool {
    unit_f64(rng) < p
}

/// Fisher-Yates shuffle.
pub fn shuffle<T>(rng: &mut impl Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        v.swap(i, j);
    }
}
