//! Int8 kernels: checks every int8 matrix-product kernel that tract-linalg can run on this CPU
//! (the AVX2 one of x86 without VNNI, VNNI, NEON with or without dot product under qemu) against
//! a plain product, bit for bit. The vendored AVX2 kernel (`vendor/tract-linalg/PROMPTCAM.md`)
//! packs A in its own layout and transposes its tile, so the shapes cover partial tiles, odd K
//! and an accumulator that is not zero when the product starts.

use tract_linalg::mmm::{AsInputValue, FusedSpec, MatMatMul};
use tract_linalg::{MmmDispatch, WeightType};
use tract_onnx::prelude::*;

/// A reproducible i8 matrix over the whole range, -128 and 127 included.
fn matrix(rows: usize, cols: usize, seed: u64) -> Tensor {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<i8> = (0..rows * cols)
        .map(|i| match i % 17 {
            0 => i8::MIN,
            1 => i8::MAX,
            _ => {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                (state >> 56) as u8 as i8
            }
        })
        .collect();
    tensor1(&v)
        .into_shape(&[rows, cols])
        .expect("shape matches the data")
}

/// Runs `start + a * b` through one kernel and packing; returns the i32 product, row-major.
/// With `b_rows` b is packed from its transpose, K contiguous, as a model's activations are
/// (`[tokens, k]`); otherwise from `[k, n]`, the packers' strided path.
fn run(
    mmm: &dyn MatMatMul,
    packing: usize,
    a: &Tensor,
    b: &Tensor,
    b_rows: bool,
    start: &Tensor,
) -> Vec<i32> {
    let (m, n) = (a.shape()[0], b.shape()[1]);
    let (pack_a, pack_b) = &mmm.packings()[packing];
    let pa = pack_a.prepare_one(a, 1, 0).expect("pack a");
    let pb = if b_rows {
        let bt = b.clone().permute_axes(&[1, 0]).expect("transpose b");
        pack_b.prepare_one(&bt, 1, 0).expect("pack b")
    } else {
        pack_b.prepare_one(b, 0, 1).expect("pack b")
    };
    let mut c = Tensor::zero::<i32>(&[m, n]).expect("c");
    unsafe {
        let view = mmm.c_view(Some(0), Some(1));
        let ops = [
            FusedSpec::AddUnicast(view.wrap(&start.view())),
            FusedSpec::AddMatMul {
                a: AsInputValue::Borrowed(&*pa),
                b: AsInputValue::Borrowed(&*pb),
                packing,
            },
            FusedSpec::Store(view.wrap(&c.view_mut())),
        ];
        mmm.run(m, n, &ops).expect("run");
    }
    c.try_as_plain_ram()
        .expect("plain")
        .as_slice::<i32>()
        .expect("i32")
        .to_vec()
}

#[test]
fn every_runnable_int8_kernel_matches_a_plain_product() {
    let i8_plain = WeightType::Plain(DatumType::I8);
    let mut checked = vec![];
    for mmm in MmmDispatch::native().runnable() {
        if mmm.internal_type() != DatumType::I32 {
            continue;
        }
        for (packing, (pa, pb)) in mmm.packings().iter().enumerate() {
            if pa.precursor() != i8_plain || pb.precursor() != i8_plain {
                continue;
            }
            for (m, k, n) in [
                (8, 1, 8),
                (8, 2, 8),
                (8, 3, 8),
                (1, 5, 1),
                (7, 33, 5),
                (9, 64, 17),
                (17, 65, 9),
                (24, 768, 16),
                (13, 127, 11),
            ] {
                let seed = (m * 1_000_000 + k * 1000 + n) as u64;
                let a = matrix(m, k, seed);
                let b = matrix(k, n, seed + 1);
                let start = {
                    let s: Vec<i32> = (0..m * n).map(|i| i as i32 * 7 - 50).collect();
                    tensor1(&s).into_shape(&[m, n]).expect("shape")
                };
                // start + a * b, row-major, once for both packings of b
                let want: Vec<i32> = {
                    let plain = |t: &Tensor| {
                        t.try_as_plain_ram()
                            .unwrap()
                            .as_slice::<i8>()
                            .unwrap()
                            .to_vec()
                    };
                    let (av, bv) = (plain(&a), plain(&b));
                    (0..m * n)
                        .map(|rc| {
                            let (r, c) = (rc / n, rc % n);
                            rc as i32 * 7 - 50
                                + (0..k)
                                    .map(|i| av[r * k + i] as i32 * bv[i * n + c] as i32)
                                    .sum::<i32>()
                        })
                        .collect()
                };
                for b_rows in [false, true] {
                    let found = run(&**mmm, packing, &a, &b, b_rows, &start);
                    assert_eq!(found.len(), want.len(), "{}: C's size", mmm.name());
                    for (rc, (found, want)) in found.iter().zip(&want).enumerate() {
                        assert_eq!(
                            found,
                            want,
                            "{} packing {packing} ({pa} x {pb}), m={m} k={k} n={n}, b packed \
                             from {}: C[{},{}]",
                            mmm.name(),
                            if b_rows { "[n, k]" } else { "[k, n]" },
                            rc / n,
                            rc % n
                        );
                    }
                }
            }
            checked.push(format!("{}#{packing}", mmm.name()));
        }
    }
    eprintln!("int8 kernels checked: {checked:?}");
    assert!(
        !checked.is_empty(),
        "tract-linalg offers no int8 kernel on this CPU"
    );
}
