//! Unit tests of `grid`: regridding shapes, the box bias and bicubic interpolation against torch.

use super::rewrites::regrid;
use super::*;

#[test]
fn regrid_rewrites_the_pair_and_the_counts_only() {
    let (n, g) = (Grid::square(24), Grid { rows: 12, cols: 15 });
    assert_eq!(
        regrid(&[None, Some(24), Some(24), None], n, g),
        vec![None, Some(12), Some(15), None]
    );
    assert_eq!(
        regrid(&[Some(1), Some(577), Some(12), Some(64)], n, g),
        vec![Some(1), Some(181), Some(12), Some(64)]
    );
    assert_eq!(
        regrid(&[Some(-1), Some(576), Some(24)], n, g),
        vec![Some(-1), Some(180), Some(24)]
    );
}

#[test]
fn box_bias_matches_transformers_at_the_corners() {
    // transformers: compute_box_bias(24, 24)[0] and [-1] (float32)
    let b = box_bias(Grid::square(24));
    assert_eq!(b.len(), 576 * 4);
    let logit = |v: f64| (v + 1e-4).ln() - (1.0 - v + 1e-4).ln();
    for (got, want) in b[..4].iter().zip([
        logit(1.0 / 24.0),
        logit(1.0 / 24.0),
        logit(1.0 / 24.0),
        logit(1.0 / 24.0),
    ]) {
        assert!((*got as f64 - want).abs() < 1e-4, "{got} vs {want}");
    }
    // the last patch's corner is (1, 1): log(1.0001) - log(1e-4)
    assert!((b[576 * 4 - 4] as f64 - logit(1.0)).abs() < 1e-3);
    // row-major: patch 1 is the next column, same row
    assert!(b[4] > b[0] && b[5] == b[1]);
    // a non-square grid: x by columns, y by rows
    let r = box_bias(Grid { rows: 2, cols: 3 });
    assert_eq!(r.len(), 6 * 4);
    assert!((r[2] as f64 - logit(1.0 / 3.0)).abs() < 1e-5);
    assert!((r[3] as f64 - logit(1.0 / 2.0)).abs() < 1e-5);
}

#[test]
fn bicubic_keeps_a_same_size_table_and_linear_ramps() {
    let from = Grid::square(4);
    let table: Vec<f32> = (0..16 * 2).map(|v| v as f32 * 0.5 - 3.0).collect();
    assert_eq!(interpolate_bicubic(&table, 2, from, from), table);
    // a constant stays constant (the weights sum to 1), also when shrinking
    let ones = vec![1.5f32; 16];
    for v in interpolate_bicubic(&ones, 1, from, Grid { rows: 3, cols: 2 }) {
        assert!((v - 1.5).abs() < 1e-6);
    }
}

#[test]
fn bicubic_matches_torch_on_a_small_grid() {
    // torch.nn.functional.interpolate(torch.arange(16.).reshape(1, 1, 4, 4) ** 2,
    //     size=(3, 3), mode="bicubic", align_corners=False)
    let table: Vec<f32> = (0..16).map(|v| (v * v) as f32).collect();
    let got = interpolate_bicubic(&table, 1, Grid::square(4), Grid::square(3));
    let want: [f64; 9] = [
        1.6817210, 5.1018486, 12.697905, 35.605331, 54.125, 76.820610, 136.34377, 169.96298,
        207.75819,
    ];
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-4, "{got:?}");
    }
    // upsampling to a non-square grid (6 rows, 5 columns): the first row and the last value
    let got = interpolate_bicubic(&table, 1, Grid::square(4), Grid { rows: 6, cols: 5 });
    let want: [f64; 5] = [-1.4074521, -1.4227707, -0.30555585, 2.6776583, 5.7893400];
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-4, "{got:?}");
    }
    assert!((got[29] - 235.83173).abs() < 1e-3);
}
