//! Throughput of the packed 16-row kernels on one row group (local tuning
//! aid; speed claims come from subllm-bench and bench/compare.py).
//! `cargo run --release -p subllm-kernels --example packed_bench -- TYPE N_IN`
use std::time::Instant;
use subllm_kernels::{kernels_for, repack, GgmlType};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ty = GgmlType::from_name(args.get(1).map_or("q4_k", |s| s)).expect("type");
    let n_in: usize = args.get(2).map_or(2048, |s| s.parse().expect("n_in"));
    let (rows, cols) = (16 * 8, 64);
    let mut s = 1u64;
    let mut rnd = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 2.0
    };
    let w: Vec<f32> = (0..rows * n_in).map(|_| rnd()).collect();
    let k = kernels_for(ty).unwrap();
    let rb = ty.row_bytes(n_in as u64).unwrap() as usize;
    let mut wq = vec![0u8; rows * rb];
    for r in 0..rows {
        k.quantize(&w[r * n_in..][..n_in], &mut wq[r * rb..][..rb])
            .unwrap();
    }
    let packed = repack::repack(ty, &wq, n_in, rows).expect("packable");
    let xt = k.vec_dot_type;
    let xk = kernels_for(xt).unwrap();
    let xb = xt.row_bytes(n_in as u64).unwrap() as usize;
    let mut xq = vec![0u8; cols * xb];
    let x: Vec<f32> = (0..cols * n_in).map(|_| rnd()).collect();
    for c in 0..cols {
        xk.quantize_act(&x[c * n_in..][..n_in], &mut xq[c * xb..][..xb])
            .unwrap();
    }
    let nb = n_in / 32;
    let mut sums = vec![0i32; cols * nb];
    if xt == GgmlType::Q8_0 {
        for c in 0..cols {
            repack::act_sums(&xq[c * xb..][..xb], &mut sums[c * nb..][..nb]);
        }
    }
    let (_, k4) = repack::kernels(subllm_kernels::cpu::level());
    let gb = packed.len() / (rows / 16);
    let xr = |c: usize| &xq[c * xb..(c + 1) * xb];
    let yr = |c: usize| -> &[i32] {
        if xt == GgmlType::Q8_0 {
            &sums[c * nb..(c + 1) * nb]
        } else {
            &[]
        }
    };
    let mut best = f64::MAX;
    let mut sink = 0.0f32;
    for _ in 0..300 {
        let t = Instant::now();
        for g in 0..rows / 16 {
            let wg = &packed[g * gb..(g + 1) * gb];
            for c in (0..cols).step_by(4) {
                let mut o = [[0.0f32; 4]; 16];
                k4(
                    ty,
                    wg,
                    &[xr(c), xr(c + 1), xr(c + 2), xr(c + 3)],
                    &[yr(c), yr(c + 1), yr(c + 2), yr(c + 3)],
                    &mut o,
                );
                sink += o[3][2];
            }
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let macs = (rows * cols * n_in) as f64;
    println!(
        "{ty:?} n_in {n_in}: {:.2} GMAC/s ({:.1} us) {sink}",
        macs / best / 1e9,
        best * 1e6
    );
}
