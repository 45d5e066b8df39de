//! Read speed of the one-column (decode) packed kernel over a matrix of a
//! chosen size: small enough for L2 or L3 it shows what the kernel's
//! arithmetic allows, far larger than the caches what its order of reading
//! memory allows (local tuning aid; speed claims come from subllm-bench and
//! bench/compare.py).
//! `cargo run --release -p subllm-kernels --example decode_probe -- TYPE N_IN KIB`
use std::time::Instant;
use subllm_kernels::{kernels_for, repack, GgmlType};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ty = GgmlType::from_name(args.get(1).map_or("q4_k", |s| s)).expect("type");
    let n_in: usize = args.get(2).map_or(2048, |s| s.parse().expect("n_in"));
    let kib: usize = args.get(3).map_or(1 << 19, |s| s.parse().expect("KiB"));
    let mut s = 1u64;
    let mut rnd = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 2.0
    };
    // one group of 16 rows, quantized and repacked, copied to fill the
    // matrix: the bytes' values do not change the kernel's speed
    let rows = repack::ROWS;
    let w: Vec<f32> = (0..rows * n_in).map(|_| rnd()).collect();
    let k = kernels_for(ty).expect("a type with kernels");
    let rb = ty.row_bytes(n_in as u64).expect("n_in fits the type") as usize;
    let mut wq = vec![0u8; rows * rb];
    for r in 0..rows {
        k.quantize(&w[r * n_in..][..n_in], &mut wq[r * rb..][..rb])
            .expect("row sizes");
    }
    let group = repack::repack(ty, &wq, n_in, rows).expect("packable");
    let gb = group.len();
    let ng = (kib * 1024 / gb).max(1);
    let matrix: Vec<u8> = group.iter().copied().cycle().take(ng * gb).collect();
    let xt = k.vec_dot_type;
    let xb = xt.row_bytes(n_in as u64).expect("n_in fits") as usize;
    let x: Vec<f32> = (0..n_in).map(|_| rnd()).collect();
    let mut xq = vec![0u8; xb];
    kernels_for(xt)
        .expect("the dot type")
        .quantize_act(&x, &mut xq)
        .expect("row sizes");
    let mut sums = vec![0i32; n_in / 32];
    if xt == GgmlType::Q8_0 {
        repack::act_sums(&xq, &mut sums);
    }
    let ys: &[i32] = if xt == GgmlType::Q8_0 { &sums } else { &[] };
    let (k1, _) = repack::kernels(subllm_kernels::cpu::level());
    // enough passes for a second of work, at least three
    let passes = (1usize << 30).div_ceil(ng * gb).clamp(3, 4000);
    let mut best = f64::MAX;
    let mut sink = 0.0f32;
    for _ in 0..passes {
        let t = Instant::now();
        for g in matrix.chunks_exact(gb) {
            let mut o = [[0.0f32; 1]; 16];
            k1(ty, g, &[&xq], &[ys], &mut o);
            sink += o[3][0];
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{ty:?} n_in {n_in}, {} KiB: {:.2} GB/s (best of {passes} passes) {sink}",
        ng * gb / 1024,
        (ng * gb) as f64 / best / 1e9
    );
}
