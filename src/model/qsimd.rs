//! Qsimd: the per-element loops of dynamic int8 quantization, in explicit SIMD: an
//! activation's min and max in one pass, and its quantized levels with their sum in another.
//! AVX2 on x86_64 (chosen at run time: builds stay for the baseline CPU), NEON on aarch64 (part
//! of its baseline), a portable loop elsewhere; all give the same bytes.
//!
//! The portable loop cannot turn a float into an integer in SIMD (Rust's `as` saturates, so
//! it compiles to scalar code) and rounds with a magic number instead; extracting each level's
//! byte then took most of its time. The SIMD copies round with the CPU's own conversion
//! (`cvtps2dq` in the default round-to-nearest-even mode, NEON's `fcvtns`, ties to even by
//! definition), saturate with the integer packs, and sum the levels from the packed bytes. In
//! `bench --profile` of int8 CLIP at 2 threads on a Zen 4, the quantize step with its row sums
//! (`fused::QuantizeI8Sums`) went from 1.13 to 0.34 ms a frame, and the scale and zero point
//! (`quantize::QuantParams`, one min/max pass) take 0.21 ms where tract's two reductions and
//! eleven scalar nodes took about 0.9 (BENCHMARKS.md, issue 21).

/// `1.5 * 2^23`: adding and subtracting it rounds an f32 of magnitude below 2^22 to the nearest
/// integer, ties to even (the default rounding mode), in plain SSE2/NEON arithmetic — where
/// `round_ties_even` would be a library call per element without SSE4.1.
const ROUND: f32 = 12_582_912.0;

/// `2^23`: for an integer-valued `r` in 0..=255, `r + 2^23` holds `r` in its low mantissa bits.
const MANTISSA: f32 = 8_388_608.0;

/// The smallest and the largest value of `x` (`(inf, -inf)` when empty). With a NaN in `x`
/// the result is unspecified, as with tract's own reducers.
pub fn min_max(x: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above
        return unsafe { x86::min_max(x) };
    }
    #[cfg(target_arch = "aarch64")]
    return neon::min_max(x);
    #[allow(unreachable_code)]
    min_max_portable(x)
}

fn min_max_portable(x: &[f32]) -> (f32, f32) {
    x.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

/// Writes each value's level, `clamp(round_half_even(x / scale) + zp, 0, 255)`, xor `flip`
/// (0x80 makes the level minus 128 an i8 code), into `y`; returns the sum of the levels (before
/// the xor). A zero or non-finite scale (an all-zero input; an infinite one) gives every value
/// the zero point, as onnxruntime does.
pub fn levels(x: &[f32], scale: f32, zp: u8, y: &mut [u8], flip: u8) -> u64 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    if scale == 0.0 || !scale.is_finite() {
        y.fill(zp ^ flip);
        return zp as u64 * n as u64;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above; x and y have the same length
        return unsafe { x86::levels(x, scale, zp, y, flip) };
    }
    #[cfg(target_arch = "aarch64")]
    return neon::levels(x, scale, zp, y, flip);
    #[allow(unreachable_code)]
    levels_portable(x, scale, zp, y, flip)
}

/// The portable loop, also the SIMD copies' tail.
fn levels_portable(x: &[f32], scale: f32, zp: u8, y: &mut [u8], flip: u8) -> u64 {
    let zp = zp as f32;
    let mut sum = 0u64;
    for (o, v) in y.iter_mut().zip(x) {
        let level = byte(level(*v, scale, zp));
        sum += level as u64;
        *o = level ^ flip;
    }
    sum
}

/// The quantized level of `v`, `clamp(round_half_even(v / scale) + zp, 0, 255)`, as an
/// integer-valued f32. Compares and selects, no float-to-int `as`.
#[inline(always)]
fn level(v: f32, scale: f32, zp: f32) -> f32 {
    let q = v / scale;
    // keep the magic-number rounding in range; beyond +-512 the result saturates anyway
    let q = q.clamp(-512.0, 512.0);
    let r = ((q + ROUND) - ROUND) + zp;
    r.clamp(0.0, 255.0)
}

/// An integer-valued `r` in 0..=255 as a byte, read from the low mantissa bits of `r + 2^23`.
#[inline(always)]
fn byte(r: f32) -> u8 {
    ((r + MANTISSA).to_bits() & 0xff) as u8
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// [`super::min_max`], 32 values a step in four pairs of accumulators.
    #[target_feature(enable = "avx2")]
    pub unsafe fn min_max(x: &[f32]) -> (f32, f32) {
        let body = x.len() / 32 * 32;
        let mut lo = [_mm256_set1_ps(f32::INFINITY); 4];
        let mut hi = [_mm256_set1_ps(f32::NEG_INFINITY); 4];
        for i in (0..body).step_by(32) {
            let p = x.as_ptr().add(i);
            for j in 0..4 {
                let v = _mm256_loadu_ps(p.add(8 * j));
                lo[j] = _mm256_min_ps(lo[j], v);
                hi[j] = _mm256_max_ps(hi[j], v);
            }
        }
        let lo = _mm256_min_ps(_mm256_min_ps(lo[0], lo[1]), _mm256_min_ps(lo[2], lo[3]));
        let hi = _mm256_max_ps(_mm256_max_ps(hi[0], hi[1]), _mm256_max_ps(hi[2], hi[3]));
        let (mut l, mut h) = ([0f32; 8], [0f32; 8]);
        _mm256_storeu_ps(l.as_mut_ptr(), lo);
        _mm256_storeu_ps(h.as_mut_ptr(), hi);
        let (tl, th) = super::min_max_portable(&x[body..]);
        (
            l.iter().fold(tl, |a, v| a.min(*v)),
            h.iter().fold(th, |a, v| a.max(*v)),
        )
    }

    /// [`super::levels`], 32 values a step: divide, clamp to +-512, convert rounding to nearest
    /// even (MXCSR's default, which Rust code never changes), add the zero point, saturate to
    /// 0..=255 through the signed 16-bit and unsigned 8-bit packs, put the bytes back in order
    /// (the packs interleave the two 128-bit halves), sum them, xor and store.
    #[target_feature(enable = "avx2")]
    pub unsafe fn levels(x: &[f32], scale: f32, zp: u8, y: &mut [u8], flip: u8) -> u64 {
        let body = x.len() / 32 * 32;
        let s = _mm256_set1_ps(scale);
        let (lo, hi) = (_mm256_set1_ps(-512.0), _mm256_set1_ps(512.0));
        let z = _mm256_set1_epi32(zp as i32);
        let f = _mm256_set1_epi8(flip as i8);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut sum = _mm256_setzero_si256();
        for i in (0..body).step_by(32) {
            let p = x.as_ptr().add(i);
            let level = |j: usize| {
                let q = _mm256_div_ps(_mm256_loadu_ps(p.add(8 * j)), s);
                let q = _mm256_min_ps(_mm256_max_ps(q, lo), hi);
                _mm256_add_epi32(_mm256_cvtps_epi32(q), z)
            };
            let a = _mm256_packs_epi32(level(0), level(1));
            let b = _mm256_packs_epi32(level(2), level(3));
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b), order);
            sum = _mm256_add_epi64(sum, _mm256_sad_epu8(bytes, _mm256_setzero_si256()));
            _mm256_storeu_si256(
                y.as_mut_ptr().add(i) as *mut __m256i,
                _mm256_xor_si256(bytes, f),
            );
        }
        let mut lanes = [0u64; 4];
        _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, sum);
        lanes.iter().sum::<u64>()
            + super::levels_portable(&x[body..], scale, zp, &mut y[body..], flip)
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    /// [`super::min_max`], 16 values a step in four pairs of accumulators.
    pub fn min_max(x: &[f32]) -> (f32, f32) {
        let body = x.len() / 16 * 16;
        // SAFETY: NEON is part of aarch64's baseline; every load is within x[..body]
        let (l, h) = unsafe {
            let mut lo = [vdupq_n_f32(f32::INFINITY); 4];
            let mut hi = [vdupq_n_f32(f32::NEG_INFINITY); 4];
            for i in (0..body).step_by(16) {
                let p = x.as_ptr().add(i);
                for j in 0..4 {
                    let v = vld1q_f32(p.add(4 * j));
                    lo[j] = vminq_f32(lo[j], v);
                    hi[j] = vmaxq_f32(hi[j], v);
                }
            }
            let lo = vminq_f32(vminq_f32(lo[0], lo[1]), vminq_f32(lo[2], lo[3]));
            let hi = vmaxq_f32(vmaxq_f32(hi[0], hi[1]), vmaxq_f32(hi[2], hi[3]));
            (vminvq_f32(lo), vmaxvq_f32(hi))
        };
        let (tl, th) = super::min_max_portable(&x[body..]);
        (l.min(tl), h.max(th))
    }

    /// [`super::levels`], 16 values a step: divide, clamp to +-512, convert rounding to nearest
    /// even (`fcvtns`), add the zero point, saturate to 0..=255 through the narrowing moves, sum
    /// the bytes pairwise into 64-bit lanes, xor and store.
    pub fn levels(x: &[f32], scale: f32, zp: u8, y: &mut [u8], flip: u8) -> u64 {
        let body = x.len() / 16 * 16;
        // SAFETY: NEON is part of aarch64's baseline; loads and stores are within x[..body] and
        // y[..body] (the caller gives both the same length)
        let sum = unsafe {
            let s = vdupq_n_f32(scale);
            let (lo, hi) = (vdupq_n_f32(-512.0), vdupq_n_f32(512.0));
            let z = vdupq_n_s32(zp as i32);
            let f = vdupq_n_u8(flip);
            let mut sum = vdupq_n_u64(0);
            for i in (0..body).step_by(16) {
                let p = x.as_ptr().add(i);
                let level = |j: usize| {
                    let q = vdivq_f32(vld1q_f32(p.add(4 * j)), s);
                    let q = vminq_f32(vmaxq_f32(q, lo), hi);
                    vqmovn_s32(vaddq_s32(vcvtnq_s32_f32(q), z))
                };
                let a = vqmovun_s16(vcombine_s16(level(0), level(1)));
                let b = vqmovun_s16(vcombine_s16(level(2), level(3)));
                let bytes = vcombine_u8(a, b);
                sum = vpadalq_u32(sum, vpaddlq_u16(vpaddlq_u8(bytes)));
                vst1q_u8(y.as_mut_ptr().add(i), veorq_u8(bytes, f));
            }
            vaddvq_u64(sum)
        };
        sum + super::levels_portable(&x[body..], scale, zp, &mut y[body..], flip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ONNX definition, written the obvious way.
    fn reference(x: f32, scale: f32, zp: u8) -> u8 {
        ((x / scale).round_ties_even() + zp as f32).clamp(0.0, 255.0) as u8
    }

    fn noise(n: usize, seed: u32, span: f32) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state as f32 / u32::MAX as f32 - 0.5) * span
            })
            .collect()
    }

    /// Ties (x / scale exactly n + 0.5, both parities and signs), saturation both ways, zero,
    /// then noise; lengths around the SIMD steps so that both the body and the tail run.
    #[test]
    fn levels_match_the_onnx_definition_and_the_portable_loop() {
        let scale = 0.5f32;
        let mut x: Vec<f32> = vec![0.25, 0.75, -0.25, -0.75, 1.25, 1000.0, -1000.0, 0.0, -0.0];
        x.extend((0..40).map(|i| i as f32 * 0.5 - 10.25));
        x.extend(noise(10_000, 12345, 300.0));
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 100, x.len()] {
            let x = &x[..len];
            for zp in [0u8, 17, 128, 255] {
                for flip in [0u8, 0x80] {
                    let mut fast = vec![0u8; len];
                    let sum = levels(x, scale, zp, &mut fast, flip);
                    let mut slow = vec![0u8; len];
                    let slow_sum = levels_portable(x, scale, zp, &mut slow, flip);
                    assert_eq!(fast, slow, "len {len} zp {zp} flip {flip}");
                    assert_eq!(sum, slow_sum, "len {len} zp {zp} flip {flip}");
                    let want: Vec<u8> = x.iter().map(|v| reference(*v, scale, zp) ^ flip).collect();
                    assert_eq!(fast, want, "len {len} zp {zp} flip {flip}");
                    let want_sum: u64 = x.iter().map(|v| reference(*v, scale, zp) as u64).sum();
                    assert_eq!(sum, want_sum, "len {len} zp {zp}");
                }
            }
        }
    }

    #[test]
    fn levels_of_an_awkward_scale_match_the_definition() {
        // a scale whose quotients round differently from a multiply by its reciprocal
        let scale = 0.037f32;
        let x = noise(4099, 99, 9.0);
        let mut y = vec![0u8; x.len()];
        levels(&x, scale, 131, &mut y, 0);
        for (v, got) in x.iter().zip(&y) {
            assert_eq!(*got, reference(*v, scale, 131), "x {v}");
        }
    }

    #[test]
    fn min_max_finds_the_extremes_wherever_they_are() {
        assert_eq!(min_max(&[]), (f32::INFINITY, f32::NEG_INFINITY));
        for len in [2usize, 7, 31, 32, 33, 64, 1000, 38_400] {
            let base = noise(len, len as u32, 10.0);
            for at in [0, len / 3, len - 1] {
                let mut x = base.clone();
                x[at] = -77.0;
                x[len - 1 - at] = 55.0;
                assert_eq!(min_max(&x), (-77.0, 55.0), "len {len} at {at}");
                assert_eq!(min_max(&x), min_max_portable(&x));
            }
        }
    }
}
