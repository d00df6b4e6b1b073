//! promptcam patch (PROMPTCAM.md): `avx2_mmm_i32_16x6` and `avx2_mmm_i32_16x5`, int8 kernels
//! for x86 CPUs with AVX2 but without VNNI, written in Rust with AVX2 intrinsics.
//!
//! The tile is 16 rows by N columns (6 or 5) in 2N ymm accumulators, column-major like
//! `fma_mmm_f32_16x6` (`t[col][half]` holds rows `8 * half .. 8 * half + 8` of one column).
//! Both operands come K-paired i16 (`PackedI16K2`: each lane's two K steps as one 32-bit
//! word), so per K pair the loop loads A's 16 rows as two vectors, broadcasts each of B's N
//! pairs straight from memory and adds 32N products with 2N `vpmaddwd` and 2N `vpaddd`: for
//! N = 6, 8 loads and 24 arithmetic instructions per 192 products, where the 8x8 kernel spends
//! 9 loads, 3 shuffles and 16 arithmetic instructions on 128. Exact: |-128 x -128 x 2| fits an
//! i32 lane. Which of the two runs is the `avx2` tier's choice (`mmm.rs`): on a Zen 4 core the
//! 5-column tile is the faster per column, and it divides CLIP's 50 tokens.
//!
//! B's i16 packing is written by the matmul's own packer (`OptMatMulPack`); tract-core's
//! convolution writes its activations straight into `PackedFormat` or `PackedI8K4`, so the
//! `avx2` tier keeps convolutions on the 8x8 kernel (`avx2_preferred` in `mmm.rs`).
//!
//! The epilogues work on the 2N accumulators with AVX2, except the quantization ones
//! (`QScale`, `RoundingShiftRight`, `ShiftLeft`), strided and i8 stores and `AddUnicast`, which
//! go through the generic kernel's scalar arithmetic on a copy of the tile: the same numbers by
//! construction, at a cost only where a graph asks for them.

use crate::frame::mmm::*;

/// Rows of the tile.
pub const MR: usize = 16;

/// The kernel entry tract calls with a tile's fused ops. Non-zero when an op is not supported.
///
/// # Safety
/// `pnl` points at a `Done`-terminated list of ops whose pointers are valid for a 16xN tile, on
/// a CPU with AVX2 (the kernels declare `isa(X86_64Avx2)`, so dispatch only offers them there).
pub unsafe fn kernel<const N: usize>(pnl: *const FusedKerSpec<i32>) -> isize {
    #[cfg(target_arch = "x86_64")]
    unsafe {
        avx2::kernel::<N>(pnl)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = pnl;
        1
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::MR;
    use crate::frame::mmm::*;
    use crate::generic::{ScaleShiftAndRound, Scaler};
    use std::arch::x86_64::*;

    /// The tile: `[col][half]` holds rows `8 * half .. 8 * half + 8` of column `col`.
    type Tile<const N: usize> = [[__m256i; 2]; N];
    /// The tile as plain values, column-major: `[col][row]`.
    type Plain<const N: usize> = [[i32; MR]; N];

    /// Applies `$op(operand, tile value)` to every accumulator, the operand for column `col`
    /// and half `half` being `$operand(col, half)` (the generic kernel's argument order:
    /// operand first).
    macro_rules! apply {
        ($t: expr, $operand: expr, $op: ident) => {
            for col in 0..$t.len() {
                for half in 0..2 {
                    $t[col][half] = $op($operand(col, half), $t[col][half]);
                }
            }
        };
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn add(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }
    #[target_feature(enable = "avx2")]
    #[inline]
    fn mul(a: __m256i, b: __m256i) -> __m256i {
        _mm256_mullo_epi32(a, b)
    }
    #[target_feature(enable = "avx2")]
    #[inline]
    fn min(a: __m256i, b: __m256i) -> __m256i {
        _mm256_min_epi32(a, b)
    }
    #[target_feature(enable = "avx2")]
    #[inline]
    fn max(a: __m256i, b: __m256i) -> __m256i {
        _mm256_max_epi32(a, b)
    }
    #[target_feature(enable = "avx2")]
    #[inline]
    fn sub(a: __m256i, b: __m256i) -> __m256i {
        _mm256_sub_epi32(a, b)
    }
    #[target_feature(enable = "avx2")]
    #[inline]
    fn sub_flipped(a: __m256i, b: __m256i) -> __m256i {
        _mm256_sub_epi32(b, a)
    }
    /// `b` where it is positive, else `a * b`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn leaky(a: __m256i, b: __m256i) -> __m256i {
        let positive = _mm256_cmpgt_epi32(b, _mm256_setzero_si256());
        _mm256_blendv_epi8(_mm256_mullo_epi32(a, b), b, positive)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn plain<const N: usize>(t: &Tile<N>) -> Plain<N> {
        let mut p: Plain<N> = [[0; MR]; N];
        for (values, acc) in p.iter_mut().zip(t) {
            for (half, v) in acc.iter().enumerate() {
                unsafe {
                    _mm256_storeu_si256(values.as_mut_ptr().add(8 * half) as _, *v);
                }
            }
        }
        p
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn tile<const N: usize>(p: &Plain<N>) -> Tile<N> {
        let mut t: Tile<N> = [[_mm256_setzero_si256(); 2]; N];
        for (values, acc) in p.iter().zip(t.iter_mut()) {
            for (half, v) in acc.iter_mut().enumerate() {
                *v = unsafe { _mm256_loadu_si256(values.as_ptr().add(8 * half) as _) };
            }
        }
        t
    }

    /// Every value of the tile through `f`, on a plain copy.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn each<const N: usize>(t: &mut Tile<N>, f: impl Fn(i32) -> i32) {
        unsafe {
            let mut p = plain(t);
            p.iter_mut().flatten().for_each(|v| *v = f(*v));
            *t = tile(&p);
        }
    }

    /// The address of element (`row`, `col`) of a kernel output store.
    #[inline]
    unsafe fn at(store: &OutputStoreKer, row: usize, col: usize) -> *mut u8 {
        unsafe {
            store
                .ptr
                .offset(store.row_byte_stride * row as isize + store.col_byte_stride * col as isize)
        }
    }

    /// `t += a * b` over `k` K steps, both operands K-paired i16 (`PackedI16K2`).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn add_mat_mul_i16<const N: usize>(
        t: &mut Tile<N>,
        pa: *const u8,
        pb: *const u8,
        k: usize,
    ) {
        let mut pa = pa as *const __m256i;
        let mut pb = pb as *const i32;
        let mut acc = *t;
        for _ in 0..k.div_ceil(2) {
            unsafe {
                let a0 = _mm256_loadu_si256(pa);
                let a1 = _mm256_loadu_si256(pa.add(1));
                for (col, c) in acc.iter_mut().enumerate() {
                    let b = _mm256_set1_epi32(pb.add(col).read_unaligned());
                    c[0] = _mm256_add_epi32(c[0], _mm256_madd_epi16(a0, b));
                    c[1] = _mm256_add_epi32(c[1], _mm256_madd_epi16(a1, b));
                }
                pa = pa.add(2);
                pb = pb.add(N);
            }
        }
        *t = acc;
    }

    /// `t += a * b` over `k` K steps of i32 operands (the kernels' default packing; int8
    /// products use the i16 one).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn add_mat_mul_i32<const N: usize>(
        t: &mut Tile<N>,
        pa: *const u8,
        pb: *const u8,
        k: usize,
    ) {
        let pa = pa as *const i32;
        let pb = pb as *const i32;
        for ik in 0..k {
            unsafe {
                let a0 = _mm256_loadu_si256(pa.add(MR * ik) as _);
                let a1 = _mm256_loadu_si256(pa.add(MR * ik + 8) as _);
                for (col, c) in t.iter_mut().enumerate() {
                    let b = _mm256_set1_epi32(pb.add(N * ik + col).read_unaligned());
                    c[0] = _mm256_add_epi32(c[0], _mm256_mullo_epi32(a0, b));
                    c[1] = _mm256_add_epi32(c[1], _mm256_mullo_epi32(a1, b));
                }
            }
        }
    }

    /// Stores the tile as i32 or as i8 (each value's low byte, as tract's kernels store i8).
    /// Non-zero for another item size.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn store<const N: usize>(t: &Tile<N>, store: &OutputStoreKer) -> isize {
        unsafe {
            match store.item_size {
                4 if store.row_byte_stride == 4 => {
                    for (col, acc) in t.iter().enumerate() {
                        let dst = at(store, 0, col);
                        _mm256_storeu_si256(dst as _, acc[0]);
                        _mm256_storeu_si256(dst.add(32) as _, acc[1]);
                    }
                }
                4 => {
                    for (col, values) in plain(t).iter().enumerate() {
                        for (row, v) in values.iter().enumerate() {
                            (at(store, row, col) as *mut i32).write_unaligned(*v);
                        }
                    }
                }
                1 => {
                    for (col, values) in plain(t).iter().enumerate() {
                        for (row, v) in values.iter().enumerate() {
                            *at(store, row, col) = *v as u8;
                        }
                    }
                }
                _ => return 1,
            }
        }
        0
    }

    /// Adds a tile of i32 or i8 values. Non-zero for another item size.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn add_unicast<const N: usize>(t: &mut Tile<N>, other: &OutputStoreKer) -> isize {
        if other.item_size != 4 && other.item_size != 1 {
            return 1;
        }
        unsafe {
            let mut p = plain(t);
            for (col, values) in p.iter_mut().enumerate() {
                for (row, v) in values.iter_mut().enumerate() {
                    let src = at(other, row, col);
                    let x = if other.item_size == 4 {
                        (src as *const i32).read_unaligned()
                    } else {
                        *(src as *const i8) as i32
                    };
                    *v = v.wrapping_add(x);
                }
            }
            *t = tile(&p);
        }
        0
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn kernel<const N: usize>(mut pnl: *const FusedKerSpec<i32>) -> isize {
        let mut t: Tile<N> = [[_mm256_setzero_si256(); 2]; N];
        // The operand of a per-row op for a half of any column: its 8 rows.
        let row = |m: *const i32| {
            move |_: usize, half: usize| unsafe { _mm256_loadu_si256(m.add(8 * half) as _) }
        };
        // The operand of a per-column op for a column: its value, broadcast.
        let col =
            |m: *const i32| move |col: usize, _: usize| unsafe { _mm256_set1_epi32(*m.add(col)) };
        let scalar = |s: i32| move |_: usize, _: usize| _mm256_set1_epi32(s);
        unsafe {
            while !pnl.is_null() {
                match *pnl {
                    FusedKerSpec::Done => break,
                    FusedKerSpec::Clear => t = [[_mm256_setzero_si256(); 2]; N],
                    FusedKerSpec::LoadTile(col_major, _row_major) => {
                        for (c, acc) in t.iter_mut().enumerate() {
                            acc[0] = _mm256_loadu_si256(col_major.add(MR * c) as _);
                            acc[1] = _mm256_loadu_si256(col_major.add(MR * c + 8) as _);
                        }
                    }
                    FusedKerSpec::ScalarAdd(s) => apply!(t, scalar(s), add),
                    FusedKerSpec::ScalarMul(s) => apply!(t, scalar(s), mul),
                    FusedKerSpec::ScalarMin(s) => apply!(t, scalar(s), min),
                    FusedKerSpec::ScalarMax(s) => apply!(t, scalar(s), max),
                    FusedKerSpec::ScalarSub(s) => apply!(t, scalar(s), sub),
                    FusedKerSpec::ScalarSubF(s) => apply!(t, scalar(s), sub_flipped),
                    FusedKerSpec::LeakyRelu(s) => apply!(t, scalar(s), leaky),
                    FusedKerSpec::PerRowMin(m) => apply!(t, row(m), min),
                    FusedKerSpec::PerRowMax(m) => apply!(t, row(m), max),
                    FusedKerSpec::PerRowAdd(m) => apply!(t, row(m), add),
                    FusedKerSpec::PerRowMul(m) => apply!(t, row(m), mul),
                    FusedKerSpec::PerRowSub(m) => apply!(t, row(m), sub),
                    FusedKerSpec::PerRowSubF(m) => apply!(t, row(m), sub_flipped),
                    FusedKerSpec::PerColMin(m) => apply!(t, col(m), min),
                    FusedKerSpec::PerColMax(m) => apply!(t, col(m), max),
                    FusedKerSpec::PerColAdd(m) => apply!(t, col(m), add),
                    FusedKerSpec::PerColMul(m) => apply!(t, col(m), mul),
                    FusedKerSpec::PerColSub(m) => apply!(t, col(m), sub),
                    FusedKerSpec::PerColSubF(m) => apply!(t, col(m), sub_flipped),
                    FusedKerSpec::AddRowColProducts(rows, cols) => {
                        let product = |c: usize, h: usize| mul(row(rows)(c, h), col(cols)(c, h));
                        apply!(t, product, add)
                    }
                    FusedKerSpec::AddUnicast(other) => {
                        if add_unicast(&mut t, &other) != 0 {
                            return 1;
                        }
                    }
                    FusedKerSpec::ShiftLeft(shift) => each(&mut t, |v| v.q_shl(shift)),
                    FusedKerSpec::RoundingShiftRight(shift, rp) => {
                        each(&mut t, |v| v.q_shr(shift, rp))
                    }
                    FusedKerSpec::QScale(shift, rp, mult) => {
                        let scaler = Scaler::from_fuse_params(shift, rp, mult);
                        each(&mut t, |v| v.q_scale(scaler))
                    }
                    FusedKerSpec::AddMatMul { k, pa, pb, packing } => match packing {
                        0 => add_mat_mul_i32(&mut t, pa, pb, k),
                        1 => add_mat_mul_i16(&mut t, pa, pb, k),
                        _ => return 1,
                    },
                    FusedKerSpec::Store(tile) => {
                        if store(&t, &tile) != 0 {
                            return 1;
                        }
                    }
                }
                pnl = pnl.add(1);
            }
        }
        0
    }
}
