//! A decode step allocates nothing: after a prefill and one warm-up step,
//! `Session::eval_last` of one token asks the global allocator for no
//! memory (every value, cache row and scratch buffer is reused), counted by
//! an allocator that wraps the system's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

mod common;

use subllm::{KvType, Logits, Model, Session, SessionParams};

struct Counting;

/// Counts one allocation while counting is on.
fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; the
// counter is only an atomic add.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `n` greedy decode steps after a prefill of `prompt`
/// and one warm-up step.
fn decode_allocs(path: &std::path::Path, prompt: &[u32], kv: KvType, threads: usize) -> usize {
    let model = Model::load(path).unwrap();
    let mut s = Session::new(
        &model,
        SessionParams {
            kv_type: kv,
            n_threads: threads,
            n_ctx: 256,
            ..Default::default()
        },
    )
    .unwrap();
    let argmax = |l: &[f32]| (0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap() as u32;
    let mut tok = argmax(&s.eval(prompt, Logits::Last).unwrap());
    tok = argmax(s.eval_last(&[tok]).unwrap());
    let before = s.n_past();
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..16 {
        tok = argmax(s.eval_last(&[tok]).unwrap());
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(s.n_past(), before + 16);
    ALLOCS.load(Ordering::SeqCst)
}

// One test function: the counter is global, so the cases must not overlap.
#[test]
fn decode_steps_allocate_nothing() {
    let trained = common::repo_root().join("trained");
    let prompt: Vec<u32> = (3..40).collect();
    for (file, kv) in [
        ("subllm-austen-9m.q8_0.gguf", KvType::F16),
        ("subllm-austen-9m.q8_0.gguf", KvType::Q8_0),
        ("subllm-austen-9m.f16.gguf", KvType::F32),
        ("llama-austen-9m.q8_0.gguf", KvType::F16),
    ] {
        for threads in [1, 2] {
            let n = decode_allocs(&trained.join(file), &prompt, kv, threads);
            assert_eq!(
                n, 0,
                "{file}, {kv:?} cache, {threads} threads: {n} allocations in 16 decode steps"
            );
        }
    }
    let smol = common::smollm2_path();
    let n = decode_allocs(&smol, &[1, 2, 3, 4, 5, 6, 7, 8], KvType::F16, 2);
    assert_eq!(n, 0, "SmolLM2: {n} allocations in 16 decode steps");
}
