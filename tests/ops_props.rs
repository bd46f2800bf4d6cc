//! Properties over random shapes (ranks 1-4, dims 1-5), broadcasting pairs and
//! non-contiguous views: every op's forward values equal a naive f64 reference computed
//! from `to_vec_f64` (see `mamba_tests`), and gradients pass finite-difference checks
//! on small random shapes. Plain tests at the end cover sizes above the kernels'
//! parallel threshold (fused ops against their composition from primitive ops, forward
//! and backward) and zero-sized tensors.

use mamba_engine::{
    gradcheck::{check, Tolerance},
    ops::scan::selective_scan,
    DType, Device, Result, Rng, Tensor,
};
use mamba_tests::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

type Check = std::result::Result<(), TestCaseError>;

// ---------------------------------------------------------------- strategies

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=5, 1..=4)
}

fn view() -> impl Strategy<Value = View> {
    prop::sample::select(VIEWS.to_vec())
}

/// Two shapes that broadcast together: each is a full shape with some axes set to 1
/// and some leading axes dropped, so either side (or both) may stretch.
fn broadcast_pair(max_rank: usize, max_dim: usize) -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    let full = prop::collection::vec(1usize..=max_dim, 1..=max_rank);
    let masks = (prop::collection::vec(any::<bool>(), max_rank), prop::collection::vec(any::<bool>(), max_rank));
    (full, masks, 0usize..=max_rank, 0usize..=max_rank).prop_map(|(full, (ma, mb), da, db)| {
        let side = |mask: &[bool], drop: usize| -> Vec<usize> {
            let s: Vec<usize> = full.iter().zip(mask).map(|(&d, &one)| if one { 1 } else { d }).collect();
            s[drop.min(s.len() - 1)..].to_vec()
        };
        (side(&ma, da), side(&mb, db))
    })
}

/// A shape and a random permutation of its axes.
fn shape_and_perm() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    shape().prop_flat_map(|s| {
        let perm: Vec<usize> = (0..s.len()).collect();
        (Just(s), Just(perm).prop_shuffle())
    })
}

/// Axes as the caller may write them: a random subset, some spelled negatively.
fn axes_for(rank: usize, pick: &[bool], negative: &[bool]) -> (Vec<isize>, Vec<usize>) {
    let chosen: Vec<usize> = (0..rank).filter(|&i| pick[i]).collect();
    let spelled = chosen.iter().map(|&i| if negative[i] { i as isize - rank as isize } else { i as isize }).collect();
    (spelled, chosen)
}

// ---------------------------------------------------------------- helpers

/// `cases` random cases per property (more with `PROPTEST_CASES`), fresh inputs on every
/// run; a failure prints its shrunk input. Nothing is written to disk.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn close(what: &str, got: &Tensor, want: &[f64], want_shape: &[usize], atol: f64, rtol: f64) -> Check {
    prop_assert_eq!(got.shape(), want_shape, "{}: shape", what);
    let g = vals(got);
    let worst = worst_ratio(&g, want, atol, rtol);
    prop_assert!(
        worst <= 1.0,
        "{}: worst error ratio {} (atol {}, rtol {})\n got  {:?}\n want {:?}",
        what,
        worst,
        atol,
        rtol,
        g,
        want
    );
    Ok(())
}

/// A view of positive values in [0.1, 3).
fn positive_view(shape: &[usize], v: View, rng: &mut Rng) -> Tensor {
    make_view_with(shape, v, &mut |s| Tensor::rand_uniform(s, 0.1, 3.0, DType::F64, rng))
}

/// A view onto an f32 buffer (so the f32 kernels see the strides).
fn f32_view(shape: &[usize], v: View, rng: &mut Rng) -> Tensor {
    make_view_with(shape, v, &mut |s| randn_rng(s, rng).to_dtype(DType::F32).unwrap())
}

fn gradcheck_ok(what: &str, f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor]) -> Check {
    match check(f, inputs, Tolerance::default()) {
        Ok(r) => {
            prop_assert_eq!(r.checked, inputs.iter().map(Tensor::numel).sum::<usize>());
            Ok(())
        }
        Err(e) => Err(TestCaseError::fail(format!("{what}: {e}"))),
    }
}

/// (name, op, reference)
type BinaryCase = (&'static str, fn(&Tensor, &Tensor) -> Result<Tensor>, fn(f64, f64) -> f64);
const BINARY: [BinaryCase; 4] = [
    ("add", Tensor::add, |x, y| x + y),
    ("sub", Tensor::sub, |x, y| x - y),
    ("mul", Tensor::mul, |x, y| x * y),
    ("div", Tensor::div, |x, y| x / y),
];

/// (name, op, reference, needs positive input)
type UnaryCase = (&'static str, fn(&Tensor) -> Result<Tensor>, fn(f64) -> f64, bool);
const UNARY: [UnaryCase; 14] = [
    ("neg", Tensor::neg, |x| -x, false),
    ("exp", Tensor::exp, f64::exp, false),
    ("tanh", Tensor::tanh, f64::tanh, false),
    ("sigmoid", Tensor::sigmoid, |x| 1.0 / (1.0 + (-x).exp()), false),
    ("silu", Tensor::silu, |x| x / (1.0 + (-x).exp()), false),
    ("softplus", Tensor::softplus, |x| x.exp().ln_1p(), false),
    ("affine", |t| t.affine(1.5, -0.25), |x| 1.5 * x - 0.25, false),
    ("add_scalar", |t| t.add_scalar(2.0), |x| x + 2.0, false),
    ("powf 3", |t| t.powf(3.0), |x| x * x * x, false),
    ("sqr", Tensor::sqr, |x| x * x, false),
    ("log", Tensor::log, f64::ln, true),
    ("sqrt", Tensor::sqrt, f64::sqrt, true),
    ("rsqrt", Tensor::rsqrt, |x| 1.0 / x.sqrt(), true),
    ("powf 2.5", |t| t.powf(2.5), |x| x.powf(2.5), true),
];

// ---------------------------------------------------------------- forward values

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn binary_ops_broadcast_like_numpy((sa, sb) in broadcast_pair(4, 5), va in view(), vb in view(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let (a, b) = (make_view(&sa, va, &mut rng), make_view(&sb, vb, &mut rng));
        let (av, bv) = (vals(&a), vals(&b));
        for (name, op, f) in BINARY {
            let (want, shape) = naive_binary(&av, &sa, &bv, &sb, f);
            // one rounding in each: the results agree to the last bit or so
            close(name, &op(&a, &b).unwrap(), &want, &shape, 0.0, 1e-15)?;
        }
    }

    #[test]
    fn unary_ops_match_formulas(s in shape(), v in view(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let (x, xp) = (make_view(&s, v, &mut rng), positive_view(&s, v, &mut rng));
        for (name, op, f, positive) in UNARY {
            let input = if positive { &xp } else { &x };
            let want: Vec<f64> = vals(input).into_iter().map(f).collect();
            close(name, &op(input).unwrap(), &want, &s, 1e-14, 1e-12)?;
        }
    }

    #[test]
    fn matmul_matches_the_triple_loop(
        (ba, bb) in broadcast_pair(2, 3), mkn in (1usize..=5, 1usize..=5, 1usize..=5),
        va in view(), vb in view(), with_batch in (any::<bool>(), any::<bool>()), seed in any::<u64>()
    ) {
        let (m, k, n) = mkn;
        let mut sa = if with_batch.0 { ba } else { vec![] };
        let mut sb = if with_batch.1 { bb } else { vec![] };
        sa.extend([m, k]);
        sb.extend([k, n]);
        let mut rng = Rng::new(seed);
        let (a, b) = (make_view(&sa, va, &mut rng), make_view(&sb, vb, &mut rng));
        let (want, shape) = naive_matmul(&vals(&a), &sa, &vals(&b), &sb);
        close("matmul", &a.matmul(&b).unwrap(), &want, &shape, 1e-13, 1e-12)?;
    }

    #[test]
    fn reductions_match_naive_folds(
        s in shape(), v in view(), pick in prop::collection::vec(any::<bool>(), 4),
        negative in prop::collection::vec(any::<bool>(), 4), keepdim in any::<bool>(), seed in any::<u64>()
    ) {
        let x = make_view(&s, v, &mut Rng::new(seed));
        let xv = vals(&x);
        let (axes, chosen) = axes_for(s.len(), &pick, &negative);
        let (sum, shape) = naive_reduce(&xv, &s, &chosen, keepdim, 0.0, |a, b| a + b);
        close("sum", &x.sum(&axes, keepdim).unwrap(), &sum, &shape, 1e-13, 1e-12)?;
        let count = chosen.iter().map(|&a| s[a]).product::<usize>() as f64;
        let mean: Vec<f64> = sum.iter().map(|v| v / count).collect();
        close("mean", &x.mean(&axes, keepdim).unwrap(), &mean, &shape, 1e-13, 1e-12)?;
        let (max, _) = naive_reduce(&xv, &s, &chosen, keepdim, f64::NEG_INFINITY, f64::max);
        close("max", &x.max(&axes, keepdim).unwrap(), &max, &shape, 0.0, 0.0)?;
    }

    #[test]
    fn permute_then_contiguous_moves_every_element((s, perm) in shape_and_perm(), v in view(), seed in any::<u64>()) {
        let x = make_view(&s, v, &mut Rng::new(seed));
        let xv = vals(&x);
        let y = x.permute(&perm).unwrap().contiguous().unwrap();
        prop_assert!(y.is_contiguous());
        let out_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
        // out[j0, j1, ..] = in[i] with i[perm[a]] = j[a]
        let want: Vec<f64> = (0..xv.len())
            .map(|o| {
                let j = unravel(o, &out_shape);
                let mut i = vec![0; s.len()];
                for (a, &p) in perm.iter().enumerate() {
                    i[p] = j[a];
                }
                xv[ravel(&i, &s)]
            })
            .collect();
        close("permute", &y, &want, &out_shape, 0.0, 0.0)?;
    }

    #[test]
    fn split_then_concat_round_trips(s in shape(), v in view(), axis_pick in any::<usize>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = make_view(&s, v, &mut rng);
        let xv = vals(&x);
        let d = axis_pick % s.len();
        // a random composition of s[d] into pieces
        let mut sizes = vec![];
        let mut left = s[d];
        while left > 0 {
            let n = 1 + rng.below(left);
            sizes.push(n);
            left -= n;
        }
        let parts = x.split(&sizes, d as isize).unwrap();
        let mut start = 0;
        for (p, &n) in parts.iter().zip(&sizes) {
            let mut ps = s.clone();
            ps[d] = n;
            let want: Vec<f64> = (0..p.numel()).map(|o| { let mut i = unravel(o, &ps); i[d] += start; xv[ravel(&i, &s)] }).collect();
            close("narrow", p, &want, &ps, 0.0, 0.0)?;
            start += n;
        }
        let refs: Vec<&Tensor> = parts.iter().rev().collect(); // reversed order: a real permutation of blocks
        let back = Tensor::concat(&refs, d as isize).unwrap();
        let mut reversed = vec![];
        for p in parts.iter().rev() {
            reversed.push(vals(p));
        }
        // concat of reversed pieces, checked element by element against the pieces
        let mut offsets = vec![0];
        for p in parts.iter().rev() {
            offsets.push(offsets.last().unwrap() + p.shape()[d]);
        }
        let want: Vec<f64> = (0..back.numel()).map(|o| {
            let mut i = unravel(o, &s);
            let piece = offsets.iter().rposition(|&off| off <= i[d]).unwrap().min(parts.len() - 1);
            i[d] -= offsets[piece];
            let ps = refs[piece].shape();
            reversed[piece][ravel(&i, ps)]
        }).collect();
        close("concat", &back, &want, &s, 0.0, 0.0)?;
        let forward: Vec<&Tensor> = parts.iter().collect();
        close("concat of split", &Tensor::concat(&forward, d as isize).unwrap(), &xv, &s, 0.0, 0.0)?;
    }

    #[test]
    fn reshape_keeps_row_major_order(s in shape(), v in view(), seed in any::<u64>()) {
        let x = make_view(&s, v, &mut Rng::new(seed));
        let xv = vals(&x);
        let n = x.numel();
        close("flatten", &x.reshape(&[n]).unwrap(), &xv, &[n], 0.0, 0.0)?;
        let rev: Vec<usize> = s.iter().rev().copied().collect();
        close("reshape", &x.reshape(&rev).unwrap(), &xv, &rev, 0.0, 0.0)?;
        close("unsqueeze", &x.unsqueeze(1).unwrap(), &xv, &[&s[..1], &[1], &s[1..]].concat(), 0.0, 0.0)?;
    }

    #[test]
    fn broadcast_as_repeats_values((small, big) in broadcast_pair(4, 5), v in view(), seed in any::<u64>()) {
        let full = naive_broadcast_shape(&small, &big).unwrap();
        let x = make_view(&small, v, &mut Rng::new(seed));
        let xv = vals(&x);
        let want: Vec<f64> = (0..full.iter().product()).map(|o| xv[broadcast_source(&unravel(o, &full), &small)]).collect();
        close("broadcast_as", &x.broadcast_as(&full).unwrap(), &want, &full, 0.0, 0.0)?;
    }

    #[test]
    fn f32_kernels_match_the_f64_reference(
        (sa, sb) in broadcast_pair(3, 5), va in view(), vb in view(), k in 1usize..=5, seed in any::<u64>()
    ) {
        let mut rng = Rng::new(seed);
        let (a, b) = (f32_view(&sa, va, &mut rng), f32_view(&sb, vb, &mut rng));
        prop_assert_eq!(a.dtype(), DType::F32);
        let (av, bv) = (vals(&a), vals(&b));
        for (name, op, f) in &BINARY[..3] {
            let (want, shape) = naive_binary(&av, &sa, &bv, &sb, f);
            let got = op(&a, &b).unwrap();
            prop_assert_eq!(got.dtype(), DType::F32);
            close(name, &got, &want, &shape, 1e-6, 1e-6)?;
        }
        for (name, op, f, _) in &UNARY[..6] {
            let want: Vec<f64> = av.iter().map(|&x| f(x)).collect();
            close(name, &op(&a).unwrap(), &want, &sa, 1e-6, 1e-5)?;
        }
        let (want, shape) = naive_reduce(&av, &sa, &[sa.len() - 1], false, 0.0, |x, y| x + y);
        close("sum", &a.sum(&[-1], false).unwrap(), &want, &shape, 1e-5, 1e-5)?;
        let c = f32_view(&[*sa.last().unwrap(), k], va, &mut rng);
        if sa.len() >= 2 {
            let (want, shape) = naive_matmul(&av, &sa, &vals(&c), c.shape());
            close("matmul", &a.matmul(&c).unwrap(), &want, &shape, 1e-5, 1e-5)?;
        }
        // to_dtype widens exactly and narrows to the nearest f32
        close("to f64", &a.to_dtype(DType::F64).unwrap(), &av, &sa, 0.0, 0.0)?;
        let wide = make_view(&sa, va, &mut rng);
        let narrowed: Vec<f64> = vals(&wide).iter().map(|&x| x as f32 as f64).collect();
        close("to f32", &wide.to_dtype(DType::F32).unwrap(), &narrowed, &sa, 0.0, 0.0)?;
    }
}

// ---------------------------------------------------------------- fused layers

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn log_softmax_matches_reference(s in shape(), v in view(), scale in 0.1f64..20.0, seed in any::<u64>()) {
        let x = make_view(&s, v, &mut Rng::new(seed)).mul_scalar(scale).unwrap();
        let want = naive_log_softmax(&vals(&x), *s.last().unwrap());
        close("log_softmax", &x.log_softmax().unwrap(), &want, &s, 1e-12, 1e-12)?;
    }

    #[test]
    fn cross_entropy_matches_reference(
        lead in prop::collection::vec(1usize..=4, 1..=2), c in 1usize..=6, v in view(),
        ignore_some in prop::collection::vec(any::<bool>(), 16), seed in any::<u64>()
    ) {
        let mut rng = Rng::new(seed);
        let mut s = lead.clone();
        s.push(c);
        let x = make_view(&s, v, &mut rng);
        let rows: usize = lead.iter().product();
        let ignore = -100;
        let mut targets: Vec<i64> = (0..rows).map(|r| if ignore_some[r % 16] { ignore } else { rng.below(c) as i64 }).collect();
        targets[rng.below(rows)] = rng.below(c) as i64; // at least one row counts
        let want = naive_cross_entropy(&vals(&x), c, &targets, ignore);
        close("cross_entropy", &x.cross_entropy(&targets, ignore).unwrap(), &[want], &[], 1e-12, 1e-12)?;
    }

    #[test]
    fn rms_norm_matches_reference(s in shape(), v in view(), eps in prop::sample::select(vec![1e-5, 1e-2, 1.0]), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = make_view(&s, v, &mut rng);
        let w = make_view(&s[s.len() - 1..], v, &mut rng);
        let want = naive_rms_norm(&vals(&x), &vals(&w), eps);
        close("rms_norm", &x.rms_norm(&w, eps).unwrap(), &want, &s, 1e-12, 1e-12)?;
    }

    #[test]
    fn embedding_gathers_rows(
        vocab in 1usize..=6, d in 1usize..=5, ids_shape in prop::collection::vec(1usize..=4, 1..=3), v in view(), seed in any::<u64>()
    ) {
        let mut rng = Rng::new(seed);
        let w = make_view(&[vocab, d], v, &mut rng);
        let n: usize = ids_shape.iter().product();
        let ids: Vec<usize> = (0..n).map(|_| rng.below(vocab)).collect();
        let want = naive_embedding(&vals(&w), d, &ids);
        let out_shape = [&ids_shape[..], &[d]].concat();
        close("embedding", &w.embedding(&ids, &ids_shape).unwrap(), &want, &out_shape, 0.0, 0.0)?;
    }

    #[test]
    fn conv1d_causal_matches_reference(
        (b, c, l, k) in (1usize..=3, 1usize..=4, 1usize..=7, 1usize..=5), with_bias in any::<bool>(),
        vx in view(), vw in view(), seed in any::<u64>()
    ) {
        let mut rng = Rng::new(seed);
        let x = make_view(&[b, c, l], vx, &mut rng);
        let w = make_view(&[c, k], vw, &mut rng);
        let bias = randn_rng(&[c], &mut rng);
        let bv = vals(&bias);
        let want = naive_conv1d_causal(&vals(&x), (b, c, l), &vals(&w), k, with_bias.then_some(&bv[..]));
        let got = x.conv1d_causal(&w, with_bias.then_some(&bias)).unwrap();
        close("conv1d_causal", &got, &want, &[b, c, l], 1e-13, 1e-12)?;
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn selective_scan_matches_the_scalar_recurrence(
        dims in (1usize..=2, 1usize..=3, 1usize..=9, 1usize..=4), chunk in 1usize..=10,
        options in (any::<bool>(), any::<bool>(), any::<bool>()), f32 in any::<bool>(), seed in any::<u64>()
    ) {
        let dtype = if f32 { DType::F32 } else { DType::F64 };
        let x = scan_inputs(dims, options.2, dtype, &mut Rng::new(seed));
        let v: Vec<Vec<f64>> = x.iter().map(vals).collect();
        let (out, last) = naive_selective_scan(&NaiveScan {
            dims,
            u: &v[0], delta: &v[1], a: &v[2], b: &v[3], c: &v[4], d: &v[5],
            z: options.0.then(|| &v[6][..]),
            delta_bias: options.1.then(|| &v[7][..]),
            softplus: options.2,
        });
        let got = selective_scan(&scan_args(&x, options, chunk)).unwrap();
        let (b, d, l, n) = dims;
        let tol = if f32 { 1e-5 } else { 1e-12 };
        prop_assert_eq!(got.out.dtype(), dtype);
        close("scan out", &got.out, &out, &[b, d, l], tol, tol)?;
        close("scan last state", &got.last_state, &last, &[b, d, n], tol, tol)?;
    }
}

// ---------------------------------------------------------------- gradients on random shapes

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn broadcast_binary_gradients((sa, sb) in broadcast_pair(3, 3), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let (a, b) = (randn_rng(&sa, &mut rng), Tensor::rand_uniform(&sb, 0.5, 2.0, DType::F64, &mut rng));
        gradcheck_ok("a*b + a/b - b", |x| x[0].mul(&x[1])?.add(&x[0].div(&x[1])?)?.sub(&x[1]), &[a, b])?;
    }

    #[test]
    fn matmul_gradients((ba, bb) in broadcast_pair(2, 2), mkn in (1usize..=3, 1usize..=3, 1usize..=3), transpose in any::<bool>(), seed in any::<u64>()) {
        let (m, k, n) = mkn;
        let mut rng = Rng::new(seed);
        let a = randn_rng(&[&ba[..], &[m, k]].concat(), &mut rng);
        let b = randn_rng(&[&bb[..], &[n, k]].concat(), &mut rng); // used transposed
        let bt = |t: &Tensor| if transpose { t.transpose(-1, -2) } else { t.transpose(-1, -2)?.contiguous() };
        gradcheck_ok("matmul", |x| x[0].matmul(&bt(&x[1])?), &[a, b])?;
    }

    #[test]
    fn reduction_gradients(s in prop::collection::vec(1usize..=3, 1..=3), pick in prop::collection::vec(any::<bool>(), 3), keepdim in any::<bool>(), seed in any::<u64>()) {
        let x = randn(&s, seed);
        let (axes, _) = axes_for(s.len(), &pick, &[false; 3]);
        gradcheck_ok("sum", |x| x[0].sum(&axes, keepdim), std::slice::from_ref(&x))?;
        gradcheck_ok("mean", |x| x[0].mean(&axes, keepdim), std::slice::from_ref(&x))?;
        gradcheck_ok("max", |x| x[0].max(&axes, keepdim), &[x])?;
    }

    #[test]
    fn fused_layer_gradients(rows in 1usize..=3, d in 1usize..=4, l in 1usize..=5, k in 1usize..=4, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn_rng(&[rows, d], &mut rng).mul_scalar(2.0).unwrap();
        gradcheck_ok("log_softmax", |x| x[0].log_softmax(), std::slice::from_ref(&x))?;
        let targets: Vec<i64> = (0..rows).map(|_| rng.below(d) as i64).collect();
        gradcheck_ok("cross_entropy", |x| x[0].cross_entropy(&targets, -1), std::slice::from_ref(&x))?;
        let w = randn_rng(&[d], &mut rng);
        gradcheck_ok("rms_norm", |x| x[0].rms_norm(&x[1], 1e-5), &[x, w])?;
        let (cx, cw, cb) = (randn_rng(&[rows, d, l], &mut rng), randn_rng(&[d, k], &mut rng), randn_rng(&[d], &mut rng));
        gradcheck_ok("conv1d_causal", |x| x[0].conv1d_causal(&x[1], Some(&x[2])), &[cx, cw, cb])?;
        let ids: Vec<usize> = (0..l).map(|_| rng.below(rows)).collect();
        gradcheck_ok("embedding", |x| x[0].embedding(&ids, &[l]), &[randn_rng(&[rows, d], &mut rng)])?;
    }

    #[test]
    fn selective_scan_gradients(
        dims in (1usize..=2, 1usize..=2, 1usize..=6, 1usize..=3), chunk in 1usize..=7,
        options in (any::<bool>(), any::<bool>(), any::<bool>()), seed in any::<u64>()
    ) {
        let x = scan_inputs(dims, options.2, DType::F64, &mut Rng::new(seed));
        gradcheck_ok("selective_scan", |x| Ok(selective_scan(&scan_args(x, options, chunk))?.out), &x)?;
    }
}

// ---------------------------------------------------------------- parallel sizes

/// `loss = sum(out * w)` and the gradients of `inputs` (cleared first).
fn grads_of(out: &Tensor, inputs: &[&Tensor], seed: u64) -> Vec<Vec<f64>> {
    inputs.iter().for_each(|t| t.zero_grad());
    let w = randn(out.shape(), seed);
    out.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    inputs.iter().map(|t| vals(&t.grad().expect("gradient"))).collect()
}

/// Fused and composed versions of one computation agree in value and in every gradient.
fn assert_same(what: &str, fused: &Tensor, composed: &Tensor, inputs: &[&Tensor]) {
    assert_eq!(fused.shape(), composed.shape(), "{what}");
    assert_close(what, &vals(fused), &vals(composed), 1e-12, 1e-10);
    let (gf, gc) = (grads_of(fused, inputs, 5), grads_of(composed, inputs, 5));
    for (i, (a, b)) in gf.iter().zip(&gc).enumerate() {
        assert_close(&format!("{what}: gradient of input {i}"), a, b, 1e-12, 1e-10);
    }
}

#[test]
fn fused_ops_match_their_composition_above_the_parallel_threshold() {
    // every size here exceeds the kernels' PAR_MIN (2^15 elements)
    let x = randn(&[64, 1024], 1).requires_grad();
    let m = x.max(&[-1], true).unwrap().detach();
    let shifted = x.sub(&m).unwrap();
    let composed = shifted.sub(&shifted.exp().unwrap().sum(&[-1], true).unwrap().log().unwrap()).unwrap();
    assert_same("log_softmax", &x.log_softmax().unwrap(), &composed, &[&x]);

    // cross entropy with every fourth row ignored: -sum(onehot * log_softmax) / valid rows
    let targets: Vec<i64> = (0..64).map(|r| if r % 4 == 3 { -100 } else { (r * 37 % 1024) as i64 }).collect();
    let mut onehot = vec![0.0; 64 * 1024];
    for (r, &t) in targets.iter().enumerate().filter(|(_, &t)| t >= 0) {
        onehot[r * 1024 + t as usize] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, &[64, 1024]).unwrap();
    let composed = composed.mul(&onehot).unwrap().sum_all().unwrap().mul_scalar(-1.0 / 48.0).unwrap();
    assert_same("cross_entropy", &x.cross_entropy(&targets, -100).unwrap(), &composed, &[&x]);

    let x = randn(&[128, 512], 2).requires_grad();
    let w = randn(&[512], 3).requires_grad();
    let composed = x
        .mul(&x.sqr().unwrap().mean(&[-1], true).unwrap().add_scalar(1e-5).unwrap().rsqrt().unwrap())
        .unwrap()
        .mul(&w)
        .unwrap();
    assert_same("rms_norm", &x.rms_norm(&w, 1e-5).unwrap(), &composed, &[&x, &w]);

    // conv: left-pad with K-1 zeros, then sum_k w[:, k] * x_padded[.., k..k+L]
    let (b, c, l, k) = (4, 64, 256, 4);
    let x = randn(&[b, c, l], 4).requires_grad();
    let w = randn(&[c, k], 5).requires_grad();
    let bias = randn(&[c], 6).requires_grad();
    let padded = Tensor::concat(&[&Tensor::zeros(&[b, c, k - 1], DType::F64, Device::Cpu).unwrap(), &x], 2).unwrap();
    let mut composed = bias.reshape(&[c, 1]).unwrap().broadcast_as(&[b, c, l]).unwrap();
    for j in 0..k {
        let term = padded.narrow(2, j, l).unwrap().mul(&w.narrow(1, j, 1).unwrap()).unwrap();
        composed = composed.add(&term).unwrap();
    }
    assert_same("conv1d_causal", &x.conv1d_causal(&w, Some(&bias)).unwrap(), &composed, &[&x, &w, &bias]);

    // embedding = one-hot rows times the table
    let (vocab, d, n) = (50, 64, 1500);
    let table = randn(&[vocab, d], 7).requires_grad();
    let ids: Vec<usize> = (0..n).map(|i| (i * 7 + i / 3) % vocab).collect();
    let mut onehot = vec![0.0; n * vocab];
    for (i, &id) in ids.iter().enumerate() {
        onehot[i * vocab + id] = 1.0;
    }
    let composed =
        Tensor::from_vec(onehot, &[n, vocab]).unwrap().matmul(&table).unwrap().reshape(&[30, 50, d]).unwrap();
    assert_same("embedding", &table.embedding(&ids, &[30, 50]).unwrap(), &composed, &[&table]);
}

#[test]
fn primitive_kernels_match_references_above_the_parallel_threshold() {
    let mut rng = Rng::new(8);
    let a = make_view(&[64, 1024], View::Transposed, &mut rng);
    let b = make_view(&[1024], View::Contiguous, &mut rng);
    let (av, bv) = (vals(&a), vals(&b));
    let (want, _) = naive_binary(&av, &[64, 1024], &bv, &[1024], |x, y| x * y);
    assert_close("mul", &vals(&a.mul(&b).unwrap()), &want, 0.0, 0.0);
    let want: Vec<f64> = av.iter().map(|x| x.tanh()).collect();
    assert_close("tanh", &vals(&a.tanh().unwrap()), &want, 1e-15, 1e-14);
    let (want, _) = naive_reduce(&av, &[64, 1024], &[0], false, 0.0, |x, y| x + y);
    assert_close("sum", &vals(&a.sum(&[0], false).unwrap()), &want, 1e-12, 1e-12);
    let narrowed: Vec<f64> = av.iter().map(|&x| x as f32 as f64).collect();
    assert_close("to_dtype", &vals(&a.to_dtype(DType::F32).unwrap()), &narrowed, 0.0, 0.0);
    let c = make_view(&[1024, 40], View::Transposed, &mut rng);
    let (want, _) = naive_matmul(&av, &[64, 1024], &vals(&c), &[1024, 40]);
    assert_close("matmul", &vals(&a.matmul(&c).unwrap()), &want, 1e-11, 1e-11);
}

#[test]
fn zero_sized_tensors_flow_through() {
    let e = Tensor::zeros(&[0, 3], DType::F64, Device::Cpu).unwrap();
    let row = randn(&[3], 9);
    assert_eq!(e.add(&row).unwrap().shape(), &[0, 3]);
    assert_eq!(e.exp().unwrap().numel(), 0);
    assert_eq!(vals(&e.sum(&[0], false).unwrap()), vec![0.0; 3], "an empty sum is 0");
    let m = randn(&[2, 0], 10).matmul(&Tensor::zeros(&[0, 3], DType::F64, Device::Cpu).unwrap()).unwrap();
    assert_eq!(vals(&m), vec![0.0; 6], "an empty inner product is 0");
    assert_eq!(Tensor::concat(&[&e, &row.reshape(&[1, 3]).unwrap()], 0).unwrap().shape(), &[1, 3]);
    assert_eq!(e.transpose(0, 1).unwrap().contiguous().unwrap().shape(), &[3, 0]);
    assert!(e.mean(&[0], false).is_err(), "the mean of nothing is undefined");
    assert!(e.max(&[0], false).is_err(), "the max of nothing is undefined");
}
