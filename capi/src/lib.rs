//! libsubllm: the C ABI of the subllm engine, a thin shell over
//! [`subllm::Session`]. The header `include/subllm.h` is generated from this
//! file by cbindgen (see `capi/cbindgen.toml`).
//!
//! Shape, after llama.h:
//! - Opaque handles (`subllm_model *`, `subllm_session *`). A handle is a
//!   number registered in a table, never a pointer we dereference: a NULL,
//!   freed, foreign or made-up handle is looked up, not found, and answered
//!   with `SUBLLM_ERR_INVALID_HANDLE` (or `SUBLLM_ERR_NULL`).
//! - `*_default_params()` structs, integer status codes, a thread-local
//!   last-error message (`subllm_last_error`), explicit frees.
//! - No panic crosses the boundary: each call runs under `catch_unwind` and a
//!   panic becomes `SUBLLM_ERR_INTERNAL`.
//! - A session holds a shared reference to its model, so models and sessions
//!   may be freed in any order. Each session is locked while a call uses it:
//!   sessions may be used from different threads, one call at a time each.
//! - A call that fails leaves its session as it was before the call.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use subllm::generate::{self, GenerateParams, StopReason};
use subllm::sampler::{Sampler, SamplerParams};
use subllm::session::effective_threads;
use subllm::{Error, KvType, LoadParams, Logits, Model, Session, SessionParams};

/// Status codes. Every function that can fail returns one; on anything but
/// `SUBLLM_OK`, `subllm_last_error()` says what went wrong in one line.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // C names: SUBLLM_OK, SUBLLM_ERR_*
pub enum SubllmStatus {
    SubllmOk = 0,
    /// A required pointer argument is NULL.
    SubllmErrNull = 1,
    /// A handle that is not (or no longer) a live model or session.
    SubllmErrInvalidHandle = 2,
    /// An argument out of range (a parameter, a count, a length, UTF-8).
    SubllmErrInvalidArgument = 3,
    /// The file could not be opened or read.
    SubllmErrIo = 4,
    /// The file is not a model subllm can run (format, architecture, shapes, types).
    SubllmErrModel = 5,
    /// The tokens do not fit in the context that is left.
    SubllmErrContextFull = 6,
    /// A token id outside the vocabulary.
    SubllmErrInvalidToken = 7,
    /// The model carries no tokenizer (text in or out needs one).
    SubllmErrNoTokenizer = 8,
    /// The output buffer is too small; the size it needs was written.
    SubllmErrBufferTooSmall = 9,
    /// The chat template failed or went past its bounds.
    SubllmErrTemplate = 10,
    /// Nothing to return yet (logits before any eval).
    SubllmErrNoData = 11,
    /// An internal error (a bug); the session is unusable and should be freed.
    SubllmErrInternal = 12,
}

use SubllmStatus::*;

/// KV cache element type.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
pub enum SubllmKvType {
    SubllmKvF16 = 0,
    SubllmKvF32 = 1,
    SubllmKvQ8_0 = 2,
}

/// Why `subllm_generate` stopped.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)]
pub enum SubllmStopReason {
    /// An end-of-generation token (not added to the cache).
    SubllmStopEog = 0,
    /// One of the stop strings appeared (the text before it was passed on).
    SubllmStopString = 1,
    /// `n_predict` tokens were generated.
    SubllmStopLength = 2,
    /// The context is full.
    SubllmStopContextFull = 3,
    /// The callback returned false.
    SubllmStopCallback = 4,
}

/// An opaque model handle.
pub struct SubllmModel {
    _private: [u8; 0],
}

/// An opaque session handle: one sequence's caches and position.
pub struct SubllmSession {
    _private: [u8; 0],
}

/// Parameters of `subllm_model_load`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SubllmModelParams {
    /// Re-lay quantized matrices for the packed SIMD kernels (faster). Off:
    /// every matrix product follows ggml's order bit for bit.
    pub repack: bool,
}

/// Parameters of `subllm_session_new`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SubllmSessionParams {
    /// Context size in tokens; 0: the model's training context.
    pub n_ctx: u32,
    /// Prompt tokens per graph run (at least 1).
    pub n_batch: u32,
    /// Worker threads; 0: one per hardware thread (more are clamped to that).
    pub n_threads: u32,
    /// A `subllm_kv_type` (an int here, so that any value a caller stores
    /// is checked, not undefined behaviour).
    pub kv_type: i32,
    /// SUBLLM: a token is kept at a level iff its score is above this; 0 is
    /// the trained behaviour. Must be finite. No effect on Llama models.
    pub subsample_threshold: f32,
}

/// Sampling parameters (as llama.cpp's: temperature 0 is greedy).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SubllmSamplerParams {
    /// >= 0; 0: always the most likely token.
    pub temperature: f32,
    /// 0: off.
    pub top_k: u32,
    /// In [0, 1]; 1: off.
    pub top_p: f32,
    /// In [0, 1]; 0: off.
    pub min_p: f32,
    /// > 0; 1: off.
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Tokens the penalties look back over.
    pub penalty_last_n: u32,
    pub seed: u64,
}

/// Parameters of `subllm_generate`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SubllmGenerateParams {
    /// Tokens to generate at most; -1: until the context is full.
    pub n_predict: i32,
    pub sampler: SubllmSamplerParams,
    /// Never sample end-of-generation tokens.
    pub ignore_eos: bool,
    /// `n_stop` NUL-terminated UTF-8 strings; generation stops when the text
    /// contains one (it is not passed on). May be NULL when `n_stop` is 0.
    pub stop: *const *const c_char,
    pub n_stop: usize,
    /// When the context fills, forget half of what follows the first
    /// `n_keep` tokens of the session and go on (what stays is evaluated
    /// again at its new positions) instead of stopping.
    pub context_shift: bool,
    pub n_keep: u32,
}

/// What a model is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SubllmModelInfo {
    pub n_vocab: u32,
    /// The context the model was trained with.
    pub n_ctx_train: u32,
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    /// SUBLLM nesting depth (0 for a Llama).
    pub n_levels: u32,
    pub has_tokenizer: bool,
    pub has_chat_template: bool,
}

/// The most levels `subllm_get_stats` reports.
pub const SUBLLM_MAX_LEVELS: usize = 8;

/// A session's counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SubllmStats {
    /// Tokens in the session (the outermost level's count).
    pub n_past: u64,
    /// Levels in use in `tokens_per_level` (depth + 1).
    pub n_levels: u32,
    /// Tokens held by the KV cache of each level (level 0 first).
    pub tokens_per_level: [u64; SUBLLM_MAX_LEVELS],
    /// Bytes of KV cache in use, and what a full-length cache at every
    /// block would use for the same tokens.
    pub kv_bytes: u64,
    pub kv_bytes_full: u64,
    pub prefill_tokens: u64,
    pub prefill_ms: f64,
    pub decode_tokens: u64,
    pub decode_ms: f64,
}

/// Called with each piece of generated text as it becomes final (UTF-8,
/// `len` bytes, NUL-terminated as well). Return false to stop generation.
pub type SubllmTextCallback =
    Option<unsafe extern "C" fn(text: *const c_char, len: usize, user_data: *mut c_void) -> bool>;

// ---------------------------------------------------------------------------
// errors and the call wrapper

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

struct Fail(SubllmStatus, String);

type Res<T> = Result<T, Fail>;

fn fail<T>(code: SubllmStatus, msg: impl Into<String>) -> Res<T> {
    Err(Fail(code, msg.into()))
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        let code = match &e {
            Error::Io(_) => SubllmErrIo,
            Error::Gguf(subllm::gguf::GgufError::Io { .. }) => SubllmErrIo,
            Error::ContextFull { .. } => SubllmErrContextFull,
            Error::InvalidToken { .. } => SubllmErrInvalidToken,
            Error::Params(_) => SubllmErrInvalidArgument,
            Error::Tokenizer(_) | Error::Perplexity(_) => SubllmErrInvalidArgument,
            Error::Template(_) => SubllmErrTemplate,
            _ => SubllmErrModel,
        };
        Fail(code, e.to_string())
    }
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Runs `f`, turning its error or panic into a status and the last error.
fn call(f: impl FnOnce() -> Res<()>) -> SubllmStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => SubllmOk,
        Ok(Err(Fail(code, msg))) => {
            set_error(&msg);
            code
        }
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            set_error(&format!("internal error (a bug in subllm): {msg}"));
            SubllmErrInternal
        }
    }
}

/// The message of the last failed call on this thread ("" if none). The
/// string stays valid until the next failing call on the same thread.
#[no_mangle]
pub extern "C" fn subllm_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// A status code's name, e.g. "SUBLLM_ERR_CONTEXT_FULL" (static storage);
/// "unknown" for a number that is not a `subllm_status`.
#[no_mangle]
pub extern "C" fn subllm_status_name(status: i32) -> *const c_char {
    // every code once, with its C name
    const NAMES: [(SubllmStatus, &CStr); 13] = [
        (SubllmOk, c"SUBLLM_OK"),
        (SubllmErrNull, c"SUBLLM_ERR_NULL"),
        (SubllmErrInvalidHandle, c"SUBLLM_ERR_INVALID_HANDLE"),
        (SubllmErrInvalidArgument, c"SUBLLM_ERR_INVALID_ARGUMENT"),
        (SubllmErrIo, c"SUBLLM_ERR_IO"),
        (SubllmErrModel, c"SUBLLM_ERR_MODEL"),
        (SubllmErrContextFull, c"SUBLLM_ERR_CONTEXT_FULL"),
        (SubllmErrInvalidToken, c"SUBLLM_ERR_INVALID_TOKEN"),
        (SubllmErrNoTokenizer, c"SUBLLM_ERR_NO_TOKENIZER"),
        (SubllmErrBufferTooSmall, c"SUBLLM_ERR_BUFFER_TOO_SMALL"),
        (SubllmErrTemplate, c"SUBLLM_ERR_TEMPLATE"),
        (SubllmErrNoData, c"SUBLLM_ERR_NO_DATA"),
        (SubllmErrInternal, c"SUBLLM_ERR_INTERNAL"),
    ];
    NAMES
        .iter()
        .find(|(s, _)| *s as i32 == status)
        .map_or(c"unknown", |(_, n)| n)
        .as_ptr()
}

// ---------------------------------------------------------------------------
// handle tables

struct ModelEntry {
    model: Arc<Model>,
    arch: CString,
    template: Option<CString>,
}

struct SessionEntry {
    // declared before `_model`, so dropped before the model it borrows
    session: Session<'static>,
    sampler: Option<(SubllmSamplerParams, Sampler)>,
    /// The last eval's logits (`n_vocab` values), if any.
    logits: Option<Vec<f32>>,
    _model: Arc<Model>,
}

type SessionCell = Mutex<SessionEntry>;

/// Live handles of one kind. Handles are numbers with a tag in the top byte
/// (so a model handle is never a live session handle), never reused.
struct Table<T> {
    tag: usize,
    next: usize,
    live: BTreeMap<usize, Arc<T>>,
}

impl<T> Table<T> {
    const fn new(tag: usize) -> Table<T> {
        Table {
            tag,
            next: 1,
            live: BTreeMap::new(),
        }
    }
}

static MODELS: Mutex<Table<ModelEntry>> = Mutex::new(Table::new(0x4d));
static SESSIONS: Mutex<Table<SessionCell>> = Mutex::new(Table::new(0x53));

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // the tables hold no invariant a panic could break mid-update
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn insert<T>(table: &Mutex<Table<T>>, v: T) -> usize {
    let mut t = lock(table);
    let id = (t.tag << (usize::BITS - 8)) | t.next;
    t.next += 1;
    t.live.insert(id, Arc::new(v));
    id
}

fn get<T>(table: &Mutex<Table<T>>, handle: usize, what: &str) -> Res<Arc<T>> {
    if handle == 0 {
        return fail(SubllmErrNull, format!("the {what} handle is NULL"));
    }
    match lock(table).live.get(&handle) {
        Some(v) => Ok(v.clone()),
        None => fail(
            SubllmErrInvalidHandle,
            format!("not a live {what} handle (freed, or never returned by subllm)"),
        ),
    }
}

/// Takes a handle out of its table (NULL: nothing to do).
fn remove<T>(table: &Mutex<Table<T>>, handle: usize, what: &str) -> Res<()> {
    if handle == 0 {
        return Ok(());
    }
    match lock(table).live.remove(&handle) {
        Some(_) => Ok(()),
        None => fail(
            SubllmErrInvalidHandle,
            format!("not a live {what} handle (freed, or never returned by subllm)"),
        ),
    }
}

fn model_of(m: *const SubllmModel) -> Res<Arc<ModelEntry>> {
    get(&MODELS, m as usize, "model")
}

/// Runs `f` on a locked session.
fn with_session<T>(s: *mut SubllmSession, f: impl FnOnce(&mut SessionEntry) -> Res<T>) -> Res<T> {
    let cell = get(&SESSIONS, s as usize, "session")?;
    let mut guard = match cell.lock() {
        Ok(g) => g,
        Err(_) => {
            return fail(
                SubllmErrInternal,
                "the session was left inconsistent by an internal error; free it",
            )
        }
    };
    f(&mut guard)
}

// ---------------------------------------------------------------------------
// argument helpers (the only unsafe code: reading the caller's memory)

fn out<'a, T>(p: *mut T, what: &str) -> Res<&'a mut T> {
    // SAFETY: a non-NULL out-pointer must point to a writable T, as each
    // function's documentation requires of the caller.
    unsafe { p.as_mut() }.map_or_else(|| fail(SubllmErrNull, format!("{what} is NULL")), Ok)
}

fn arg<'a, T>(p: *const T, what: &str) -> Res<&'a T> {
    // SAFETY: a non-NULL pointer argument must point to a readable T.
    unsafe { p.as_ref() }.map_or_else(|| fail(SubllmErrNull, format!("{what} is NULL")), Ok)
}

fn slice<'a, T>(p: *const T, n: usize, what: &str) -> Res<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return fail(SubllmErrNull, format!("{what} is NULL"));
    }
    if n > isize::MAX as usize / std::mem::size_of::<T>().max(1) {
        return fail(SubllmErrInvalidArgument, format!("{what}: {n} elements"));
    }
    // SAFETY: the caller passes `n` readable elements at `p` (documented).
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

fn c_str<'a>(p: *const c_char, what: &str) -> Res<&'a str> {
    if p.is_null() {
        return fail(SubllmErrNull, format!("{what} is NULL"));
    }
    // SAFETY: the caller passes a NUL-terminated string (documented).
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| Fail(SubllmErrInvalidArgument, format!("{what} is not UTF-8")))
}

/// Copies `src` to a caller buffer of `cap` elements; `*n_out` gets the
/// count, written even when the buffer is too small.
fn copy_out<T: Copy>(src: &[T], buf: *mut T, cap: usize, n_out: *mut usize) -> Res<()> {
    let n_out = out(n_out, "the count pointer")?;
    *n_out = src.len();
    if src.len() > cap {
        return fail(
            SubllmErrBufferTooSmall,
            format!("the buffer holds {cap}, {} are needed", src.len()),
        );
    }
    if src.is_empty() {
        return Ok(());
    }
    if buf.is_null() {
        return fail(SubllmErrNull, "the buffer is NULL");
    }
    // SAFETY: `buf` has room for `cap` >= src.len() elements (documented)
    // and cannot overlap `src`, which is ours.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), buf, src.len()) };
    Ok(())
}

fn tokens_in(p: *const i32, n: usize, n_vocab: usize) -> Res<Vec<u32>> {
    slice(p, n, "tokens")?
        .iter()
        .map(|&t| {
            if t >= 0 && (t as usize) < n_vocab {
                Ok(t as u32)
            } else {
                fail(
                    SubllmErrInvalidToken,
                    format!("token id {t} is outside the vocabulary of {n_vocab}"),
                )
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// models

/// Default model parameters.
#[no_mangle]
pub extern "C" fn subllm_model_default_params() -> SubllmModelParams {
    SubllmModelParams {
        repack: LoadParams::default().repack,
    }
}

/// Loads a GGUF model (a llama or subllm file). On success `*model` is a new
/// handle, to be released with `subllm_model_free`. `params` may be NULL
/// (defaults).
///
/// # Safety
/// `path` is a NUL-terminated string; `params` is NULL or points to a
/// `subllm_model_params`; `model` points to writable storage for a handle.
#[no_mangle]
pub unsafe extern "C" fn subllm_model_load(
    path: *const c_char,
    params: *const SubllmModelParams,
    model: *mut *mut SubllmModel,
) -> SubllmStatus {
    call(|| {
        let model = out(model, "the model out-pointer")?;
        *model = std::ptr::null_mut();
        let path = c_str(path, "path")?;
        let p = if params.is_null() {
            subllm_model_default_params()
        } else {
            *arg(params, "params")?
        };
        let m = Model::load_with(path, &LoadParams { repack: p.repack })?;
        let entry = ModelEntry {
            arch: CString::new(m.arch.clone()).unwrap_or_default(),
            template: m.chat_template().and_then(|t| CString::new(t).ok()),
            model: Arc::new(m),
        };
        *model = insert(&MODELS, entry) as *mut SubllmModel;
        Ok(())
    })
}

/// Releases a model handle. Sessions made from it keep working (each holds
/// the model until it is freed). NULL is a no-op; a handle that is not live
/// gives `SUBLLM_ERR_INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn subllm_model_free(model: *mut SubllmModel) -> SubllmStatus {
    call(|| remove(&MODELS, model as usize, "model"))
}

/// Fills `*info` with the model's sizes.
///
/// # Safety
/// `info` points to a writable `subllm_model_info`.
#[no_mangle]
pub unsafe extern "C" fn subllm_model_get_info(
    model: *const SubllmModel,
    info: *mut SubllmModelInfo,
) -> SubllmStatus {
    call(|| {
        let e = model_of(model)?;
        let info = out(info, "info")?;
        let hp = &e.model.hparams;
        let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        *info = SubllmModelInfo {
            n_vocab: n(hp.n_vocab),
            n_ctx_train: n(hp.n_ctx_train),
            n_embd: n(hp.n_embd),
            n_layer: n(hp.n_layer()),
            n_head: n(hp.n_head),
            n_head_kv: n(hp.n_head_kv),
            n_levels: n(hp.structure.depth),
            has_tokenizer: e.model.tokenizer().is_some(),
            has_chat_template: e.template.is_some(),
        };
        Ok(())
    })
}

/// The model's architecture ("llama" or "subllm"), valid while the handle
/// is live; NULL for a handle that is not.
#[no_mangle]
pub extern "C" fn subllm_model_architecture(model: *const SubllmModel) -> *const c_char {
    // the string lives in the table entry: valid until subllm_model_free
    let mut p = std::ptr::null();
    let s = call(|| {
        p = model_of(model)?.arch.as_ptr();
        Ok(())
    });
    if s == SubllmOk {
        p
    } else {
        std::ptr::null()
    }
}

/// The model's chat template (`tokenizer.chat_template`), valid while the
/// handle is live; NULL when it has none or the handle is not live.
#[no_mangle]
pub extern "C" fn subllm_model_chat_template(model: *const SubllmModel) -> *const c_char {
    let mut p = std::ptr::null();
    let _ = call(|| {
        p = model_of(model)?
            .template
            .as_ref()
            .map_or(std::ptr::null(), |t| t.as_ptr());
        Ok(())
    });
    p
}

/// Tokenizes `len` bytes of UTF-8 `text` into `tokens` (room for `cap`).
/// `add_special`: add BOS where the vocabulary asks for it; `parse_special`:
/// special tokens written in the text (`<|im_start|>`) become their ids.
/// `*n_tokens` gets the count; if it exceeds `cap` the status is
/// `SUBLLM_ERR_BUFFER_TOO_SMALL` and nothing was written: call again.
///
/// # Safety
/// `text` points to `len` readable bytes; `tokens` to `cap` writable
/// `int32_t` (may be NULL when `cap` is 0); `n_tokens` is writable.
#[no_mangle]
pub unsafe extern "C" fn subllm_tokenize(
    model: *const SubllmModel,
    text: *const c_char,
    len: usize,
    add_special: bool,
    parse_special: bool,
    tokens: *mut i32,
    cap: usize,
    n_tokens: *mut usize,
) -> SubllmStatus {
    call(|| {
        let e = model_of(model)?;
        let tok = e.model.tokenizer().ok_or_else(|| {
            Fail(
                SubllmErrNoTokenizer,
                "the model carries no tokenizer".into(),
            )
        })?;
        let bytes = slice(text.cast::<u8>(), len, "text")?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Fail(SubllmErrInvalidArgument, "text is not UTF-8".into()))?;
        let ids = tok.encode(text, add_special, parse_special)?;
        let ids: Vec<i32> = ids.into_iter().map(|t| t as i32).collect();
        copy_out(&ids, tokens, cap, n_tokens)
    })
}

/// Turns `n` tokens into UTF-8 text in `buf` (room for `cap` bytes, no NUL
/// added). `special`: render special tokens as their text. `*n_bytes` gets
/// the length; if it exceeds `cap`, `SUBLLM_ERR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `tokens` points to `n` readable `int32_t`; `buf` to `cap` writable bytes
/// (may be NULL when `cap` is 0); `n_bytes` is writable.
#[no_mangle]
pub unsafe extern "C" fn subllm_detokenize(
    model: *const SubllmModel,
    tokens: *const i32,
    n: usize,
    special: bool,
    buf: *mut c_char,
    cap: usize,
    n_bytes: *mut usize,
) -> SubllmStatus {
    call(|| {
        let e = model_of(model)?;
        let tok = e.model.tokenizer().ok_or_else(|| {
            Fail(
                SubllmErrNoTokenizer,
                "the model carries no tokenizer".into(),
            )
        })?;
        let ids = tokens_in(tokens, n, tok.n_tokens())?;
        let text = tok.decode(&ids, special);
        copy_out(text.as_bytes(), buf.cast::<u8>(), cap, n_bytes)
    })
}

// ---------------------------------------------------------------------------
// sessions

/// Default session parameters.
#[no_mangle]
pub extern "C" fn subllm_session_default_params() -> SubllmSessionParams {
    let d = SessionParams::default();
    SubllmSessionParams {
        n_ctx: 0,
        n_batch: d.n_batch as u32,
        n_threads: 0,
        kv_type: SubllmKvType::SubllmKvF16 as i32,
        subsample_threshold: d.subsample_threshold,
    }
}

/// Makes a new, empty session over `model`. `params` may be NULL.
///
/// # Safety
/// `params` is NULL or points to a `subllm_session_params`; `session` points
/// to writable storage for a handle.
#[no_mangle]
pub unsafe extern "C" fn subllm_session_new(
    model: *const SubllmModel,
    params: *const SubllmSessionParams,
    session: *mut *mut SubllmSession,
) -> SubllmStatus {
    call(|| {
        let session = out(session, "the session out-pointer")?;
        *session = std::ptr::null_mut();
        let e = model_of(model)?;
        let p = if params.is_null() {
            subllm_session_default_params()
        } else {
            *arg(params, "params")?
        };
        let sp = SessionParams {
            n_ctx: p.n_ctx as usize,
            n_batch: p.n_batch as usize,
            kv_type: match p.kv_type {
                0 => KvType::F16,
                1 => KvType::F32,
                2 => KvType::Q8_0,
                k => {
                    return fail(
                        SubllmErrInvalidArgument,
                        format!("kv_type {k} is not a subllm_kv_type (0, 1 or 2)"),
                    )
                }
            },
            upstream_nested_positions: false,
            n_threads: effective_threads(p.n_threads as usize),
            subsample_threshold: p.subsample_threshold,
        };
        let model = e.model.clone();
        // SAFETY: the session borrows the model behind this Arc. The Arc is
        // stored in the same entry, declared after the session, so the model
        // outlives it; the Arc's pointee never moves.
        let m: &'static Model = unsafe { &*Arc::as_ptr(&model) };
        let s = Session::new(m, sp)?;
        let entry = SessionEntry {
            session: s,
            sampler: None,
            logits: None,
            _model: model,
        };
        *session = insert(&SESSIONS, Mutex::new(entry)) as *mut SubllmSession;
        Ok(())
    })
}

/// Releases a session (and, if it was the last user of a freed model, the
/// model). NULL is a no-op; a handle that is not live gives
/// `SUBLLM_ERR_INVALID_HANDLE`. A call still using the session on another
/// thread finishes normally; the session is released after it.
#[no_mangle]
pub extern "C" fn subllm_session_free(session: *mut SubllmSession) -> SubllmStatus {
    call(|| remove(&SESSIONS, session as usize, "session"))
}

/// Evaluates `n` tokens after those already in the session and keeps the
/// last one's logits (`subllm_get_logits`). On failure (a token outside the
/// vocabulary, a full context) the session is unchanged.
///
/// # Safety
/// `tokens` points to `n` readable `int32_t`.
#[no_mangle]
pub unsafe extern "C" fn subllm_eval(
    session: *mut SubllmSession,
    tokens: *const i32,
    n: usize,
) -> SubllmStatus {
    call(|| {
        with_session(session, |e| {
            let ids = tokens_in(tokens, n, e._model.hparams.n_vocab)?;
            if ids.is_empty() {
                return Ok(());
            }
            let logits = e.session.eval(&ids, Logits::Last)?;
            if let Some((_, s)) = &mut e.sampler {
                for &t in &ids {
                    s.accept(t);
                }
            }
            e.logits = Some(logits);
            Ok(())
        })
    })
}

/// Copies the logits of the last evaluated token (`n_vocab` floats) to
/// `logits` (room for `cap`); `*n_logits` gets `n_vocab`.
/// `SUBLLM_ERR_NO_DATA` before any eval (or after a reset or truncation).
///
/// # Safety
/// `logits` points to `cap` writable floats; `n_logits` is writable.
#[no_mangle]
pub unsafe extern "C" fn subllm_get_logits(
    session: *mut SubllmSession,
    logits: *mut f32,
    cap: usize,
    n_logits: *mut usize,
) -> SubllmStatus {
    call(|| {
        with_session(session, |e| match &e.logits {
            Some(l) => copy_out(l, logits, cap, n_logits),
            None => fail(SubllmErrNoData, "no logits: nothing was evaluated yet"),
        })
    })
}

/// Default sampling parameters (llama.cpp's defaults; seed fixed).
#[no_mangle]
pub extern "C" fn subllm_sampler_default_params() -> SubllmSamplerParams {
    let d = SamplerParams::default();
    SubllmSamplerParams {
        temperature: d.temperature,
        top_k: d.top_k as u32,
        top_p: d.top_p,
        min_p: d.min_p,
        repeat_penalty: d.repeat_penalty,
        presence_penalty: d.presence_penalty,
        frequency_penalty: d.frequency_penalty,
        penalty_last_n: d.penalty_last_n as u32,
        seed: d.seed,
    }
}

fn sampler_params(p: &SubllmSamplerParams) -> Res<SamplerParams> {
    let s = SamplerParams {
        temperature: p.temperature,
        top_k: p.top_k as usize,
        top_p: p.top_p,
        min_p: p.min_p,
        repeat_penalty: p.repeat_penalty,
        presence_penalty: p.presence_penalty,
        frequency_penalty: p.frequency_penalty,
        penalty_last_n: p.penalty_last_n as usize,
        seed: p.seed,
    };
    s.validate()
        .map_err(|m| Fail(SubllmErrInvalidArgument, m))?;
    Ok(s)
}

/// Samples the next token from the last logits. The session keeps one
/// sampler (its random stream and the penalties' history of evaluated
/// tokens); it starts afresh when `params` differ from the last call's.
/// The token is not evaluated: pass it to `subllm_eval` to continue.
///
/// # Safety
/// `params` is NULL (defaults) or points to a `subllm_sampler_params`;
/// `token` is writable.
#[no_mangle]
pub unsafe extern "C" fn subllm_sample(
    session: *mut SubllmSession,
    params: *const SubllmSamplerParams,
    token: *mut i32,
) -> SubllmStatus {
    call(|| {
        let token = out(token, "the token out-pointer")?;
        let p = if params.is_null() {
            subllm_sampler_default_params()
        } else {
            *arg(params, "params")?
        };
        let sp = sampler_params(&p)?;
        with_session(session, |e| {
            let Some(logits) = &e.logits else {
                return fail(SubllmErrNoData, "no logits: nothing was evaluated yet");
            };
            if e.sampler.as_ref().is_none_or(|(q, _)| *q != p) {
                let mut s = Sampler::new(sp);
                for &t in e.session.tokens() {
                    s.accept(t);
                }
                e.sampler = Some((p, s));
            }
            let (_, s) = e.sampler.as_mut().expect("set above");
            let mut l = logits.clone();
            *token = s.sample(&mut l) as i32;
            Ok(())
        })
    })
}

/// Default generation parameters: 256 tokens, default sampling, no stops.
#[no_mangle]
pub extern "C" fn subllm_generate_default_params() -> SubllmGenerateParams {
    SubllmGenerateParams {
        n_predict: 256,
        sampler: subllm_sampler_default_params(),
        ignore_eos: false,
        stop: std::ptr::null(),
        n_stop: 0,
        context_shift: false,
        n_keep: 0,
    }
}

/// Evaluates `n_prompt` tokens (at least one) after the session's tokens,
/// then generates, calling `callback` with each piece of text as it becomes
/// final (UTF-8 safe across tokens; stop strings held back). Ends at an
/// end-of-generation token, a stop string, `n_predict` tokens, a full
/// context, or when the callback returns false; `*stop` (may be NULL) says
/// which, `*n_generated` (may be NULL) how many tokens were sampled. The
/// session then holds the prompt and every generated token but the last
/// (which was never evaluated); when the callback stopped generation, it
/// holds the prompt only, as if nothing had been generated. If the prompt
/// cannot be evaluated, the session is unchanged. The logits and the
/// sampler of `subllm_sample` start afresh after this call.
///
/// # Safety
/// `prompt` points to `n_prompt` readable `int32_t`; `params` is NULL or
/// points to a `subllm_generate_params` whose `stop` holds `n_stop` valid
/// strings; `stop` and `n_generated` are NULL or writable. The callback is
/// called on this thread and must not free this session.
#[no_mangle]
pub unsafe extern "C" fn subllm_generate(
    session: *mut SubllmSession,
    prompt: *const i32,
    n_prompt: usize,
    params: *const SubllmGenerateParams,
    callback: SubllmTextCallback,
    user_data: *mut c_void,
    stop: *mut SubllmStopReason,
    n_generated: *mut usize,
) -> SubllmStatus {
    call(|| {
        let p = if params.is_null() {
            subllm_generate_default_params()
        } else {
            *arg(params, "params")?
        };
        let stops: Vec<String> = slice(p.stop, p.n_stop, "stop")?
            .iter()
            .map(|&s| c_str(s, "a stop string").map(str::to_string))
            .collect::<Res<_>>()?;
        let gp = GenerateParams {
            n_predict: if p.n_predict < 0 {
                usize::MAX
            } else {
                p.n_predict as usize
            },
            sampler: sampler_params(&p.sampler)?,
            stop: stops,
            ignore_eos: p.ignore_eos,
            context_shift: p.context_shift.then_some(p.n_keep as usize),
        };
        with_session(session, |e| {
            let ids = tokens_in(prompt, n_prompt, e._model.hparams.n_vocab)?;
            if ids.is_empty() {
                return fail(SubllmErrInvalidArgument, "the prompt has no tokens");
            }
            let model = e._model.clone();
            let tok = model.tokenizer().ok_or_else(|| {
                Fail(
                    SubllmErrNoTokenizer,
                    "the model carries no tokenizer".into(),
                )
            })?;
            let mut on_text = |piece: &str| -> std::io::Result<()> {
                let Some(cb) = callback else { return Ok(()) };
                let c = CString::new(piece.replace('\0', "")).unwrap_or_default();
                // SAFETY: a C function pointer the caller gave us, called
                // with a valid NUL-terminated string and its length.
                let go_on = unsafe { cb(c.as_ptr(), c.as_bytes().len(), user_data) };
                if go_on {
                    Ok(())
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        "stopped by the callback",
                    ))
                }
            };
            let mut expect = e.session.tokens().to_vec();
            expect.extend_from_slice(&ids);
            // only the prompt's eval can fail, before anything changed
            let g = generate::generate(&mut e.session, Some(tok), &ids, &gp, &mut on_text)?;
            let reason = match g.stop {
                StopReason::EndOfGeneration => SubllmStopReason::SubllmStopEog,
                StopReason::StopString => SubllmStopReason::SubllmStopString,
                StopReason::Length => SubllmStopReason::SubllmStopLength,
                StopReason::ContextFull => SubllmStopReason::SubllmStopContextFull,
                StopReason::Interrupted => {
                    // as the CLI's Ctrl-C: the reply is dropped, the prompt stays
                    let same = e
                        .session
                        .tokens()
                        .iter()
                        .zip(&expect)
                        .take_while(|(a, b)| a == b)
                        .count();
                    e.session.truncate(same);
                    SubllmStopReason::SubllmStopCallback
                }
            };
            let n = g.tokens.len();
            e.sampler = None;
            e.logits = None;
            if let Some(s) = out_opt(stop) {
                *s = reason;
            }
            if let Some(c) = out_opt(n_generated) {
                *c = n;
            }
            Ok(())
        })
    })
}

fn out_opt<'a, T>(p: *mut T) -> Option<&'a mut T> {
    // SAFETY: NULL or a writable T, as the function documents.
    unsafe { p.as_mut() }
}

/// Forgets every token (caches emptied).
#[no_mangle]
pub extern "C" fn subllm_kv_reset(session: *mut SubllmSession) -> SubllmStatus {
    call(|| {
        with_session(session, |e| {
            e.session.reset();
            e.sampler = None;
            e.logits = None;
            Ok(())
        })
    })
}

/// Keeps the first `n` tokens and forgets the rest, at every level;
/// `n` >= the session's tokens is a no-op.
#[no_mangle]
pub extern "C" fn subllm_kv_truncate(session: *mut SubllmSession, n: usize) -> SubllmStatus {
    call(|| {
        with_session(session, |e| {
            if n < e.session.n_past() {
                e.session.truncate(n);
                e.sampler = None;
                e.logits = None;
            }
            Ok(())
        })
    })
}

/// Tokens in the session.
///
/// # Safety
/// `n_past` is writable.
#[no_mangle]
pub unsafe extern "C" fn subllm_n_past(
    session: *mut SubllmSession,
    n_past: *mut usize,
) -> SubllmStatus {
    call(|| {
        let n_past = out(n_past, "n_past")?;
        with_session(session, |e| {
            *n_past = e.session.n_past();
            Ok(())
        })
    })
}

/// Fills `*stats`: tokens per level (what SUBLLM keeps), KV bytes against a
/// full cache, prompt and generation timings.
///
/// # Safety
/// `stats` points to a writable `subllm_stats`.
#[no_mangle]
pub unsafe extern "C" fn subllm_get_stats(
    session: *mut SubllmSession,
    stats: *mut SubllmStats,
) -> SubllmStatus {
    call(|| {
        let stats = out(stats, "stats")?;
        with_session(session, |e| {
            let s = e.session.stats();
            let mut o = SubllmStats {
                n_past: s.n_past as u64,
                n_levels: s.tokens_per_level.len().min(SUBLLM_MAX_LEVELS) as u32,
                kv_bytes: s.kv_bytes as u64,
                kv_bytes_full: s.kv_bytes_full as u64,
                prefill_tokens: s.prefill_tokens as u64,
                prefill_ms: s.prefill_time.as_secs_f64() * 1e3,
                decode_tokens: s.decode_tokens as u64,
                decode_ms: s.decode_time.as_secs_f64() * 1e3,
                ..Default::default()
            };
            for (d, &t) in o.tokens_per_level.iter_mut().zip(&s.tokens_per_level) {
                *d = t as u64;
            }
            *stats = o;
            Ok(())
        })
    })
}
