//! Times every int8 kernel tract-linalg runs on this CPU through `MatMatMul::run`, operands packed
//! once, on one thread: `int8-kernels M K N REPS`. Each kernel's best of five rounds (the rounds
//! interleave the kernels), as ms a product and GMAC/s. The kernels' own loops, without the
//! model's other ops or its activation packing: what a tier's choice between tiles rests on.

use std::time::Instant;
use tract_data::prelude::*;
use tract_linalg::mmm::{AsInputValue, FusedSpec, MatMatMul};
use tract_linalg::{MmmDispatch, WeightType};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: int8-kernels M K N REPS"))
        .collect();
    let [m, k, n, reps] = args[..] else {
        panic!("usage: int8-kernels M K N REPS");
    };
    let values =
        |len: usize, step: usize| (0..len).map(|i| (i * step % 251) as i8).collect::<Vec<_>>();
    let a = Tensor::from_shape(&[m, k], &values(m * k, 7)).expect("a");
    // the activations as a model has them: [n, k], K contiguous
    let b = Tensor::from_shape(&[n, k], &values(n * k, 13)).expect("b");
    let i8_plain = WeightType::Plain(DatumType::I8);
    let kernels: Vec<(Box<dyn MatMatMul>, usize)> = MmmDispatch::native()
        .runnable()
        .iter()
        .filter(|mmm| mmm.internal_type() == DatumType::I32 && mmm.arch().is_some())
        .filter_map(|mmm| {
            let packing = mmm
                .packings()
                .iter()
                .position(|(pa, pb)| pa.precursor() == i8_plain && pb.precursor() == i8_plain)?;
            Some((mmm.clone(), packing))
        })
        .collect();
    let mut best = vec![f64::MAX; kernels.len()];
    for _round in 0..5 {
        for ((mmm, packing), best) in kernels.iter().zip(best.iter_mut()) {
            let (pack_a, pack_b) = &mmm.packings()[*packing];
            let pa = pack_a.prepare_one(&a, 1, 0).expect("pack a");
            let pb = pack_b.prepare_one(&b, 1, 0).expect("pack b");
            let mut c = Tensor::zero::<i32>(&[m, n]).expect("c");
            let start = Instant::now();
            for _ in 0..reps {
                unsafe {
                    let view = mmm.c_view(Some(0), Some(1));
                    let ops = [
                        FusedSpec::AddMatMul {
                            a: AsInputValue::Borrowed(&*pa),
                            b: AsInputValue::Borrowed(&*pb),
                            packing: *packing,
                        },
                        FusedSpec::Store(view.wrap(&c.view_mut())),
                    ];
                    mmm.run(m, n, &ops).expect("run");
                }
            }
            *best = best.min(start.elapsed().as_secs_f64() / reps as f64);
        }
    }
    for ((mmm, _), s) in kernels.iter().zip(best) {
        let gmacs = (m * k * n) as f64 / s / 1e9;
        println!(
            "{:<26} m={m} k={k} n={n}: {:8.3} ms  {gmacs:6.1} GMAC/s",
            mmm.name(),
            s * 1e3
        );
    }
}
