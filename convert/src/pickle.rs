//! A restricted unpickler for PyTorch state dicts.
//!
//! Only the opcodes a `torch.save`d dict of tensors uses are implemented,
//! and only these callables are recognised: `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`
//! (and `_with_state`) and the typed storage classes. Nothing is imported
//! or executed; anything else is an error.

use crate::error::ConvertError;

/// Element type of a torch storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    F32,
    F16,
    BF16,
    F64,
}

impl StorageType {
    pub fn size(self) -> usize {
        match self {
            StorageType::F32 => 4,
            StorageType::F16 | StorageType::BF16 => 2,
            StorageType::F64 => 8,
        }
    }
}

/// A tensor as the pickle describes it: a view into a storage entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage_key: String,
    pub dtype: StorageType,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq)]
enum Val {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Val>),
    List(Vec<Val>),
    Dict(Vec<(Val, Val)>),
    Global(String),
    StorageClass(StorageType),
    Storage { key: String, dtype: StorageType },
    Tensor(TensorRef),
}

fn bad(msg: impl Into<String>) -> ConvertError {
    ConvertError::BadPickle(msg.into())
}

/// Longest string or byte run accepted in a pickle.
const MAX_STR: usize = 1 << 20;

struct Vm<'a> {
    b: &'a [u8],
    p: usize,
    stack: Vec<Val>,
    marks: Vec<usize>,
    memo: std::collections::HashMap<u32, Val>,
    /// Values the memo has copied so far (see [`MAX_COPIED`]).
    copied: usize,
}

/// Deepest nesting of containers accepted. A state dict nests about five
/// deep; values are cloned and dropped recursively, so an unbounded
/// nesting (200 000 one-element tuples) would overflow the stack.
const MAX_DEPTH: usize = 256;
/// Values the memo may copy in all. Memoized values are copied on every
/// reference, so a few bytes referencing a big value again and again
/// (the "billion laughs") would otherwise grow memory exponentially.
const MAX_COPIED: usize = 1 << 22;

/// The values in `v` (itself included) and whether its nesting is deeper
/// than `max_depth`, walked without recursion.
fn measure(v: &Val, max_depth: usize) -> (usize, bool) {
    let (mut n, mut deep) = (0usize, false);
    let mut work = vec![(v, 1usize)];
    while let Some((x, d)) = work.pop() {
        n += 1;
        if d > max_depth {
            deep = true;
            continue;
        }
        match x {
            Val::Tuple(t) | Val::List(t) => work.extend(t.iter().map(|c| (c, d + 1))),
            Val::Dict(kv) => {
                for (k, v) in kv {
                    work.push((k, d + 1));
                    work.push((v, d + 1));
                }
            }
            _ => {}
        }
    }
    (n, deep)
}

/// Fails if `v` going into a container would nest deeper than [`MAX_DEPTH`].
fn nestable(v: &Val) -> Result<(), ConvertError> {
    if measure(v, MAX_DEPTH - 1).1 {
        return Err(bad(format!("values nest deeper than {MAX_DEPTH} levels")));
    }
    Ok(())
}

impl<'a> Vm<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ConvertError> {
        if n > self.b.len() - self.p {
            return Err(bad(format!("truncated at byte {}", self.p)));
        }
        let s = &self.b[self.p..self.p + n];
        self.p += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ConvertError> {
        Ok(self.take(1)?[0])
    }
    fn le<const N: usize>(&mut self) -> Result<[u8; N], ConvertError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn pop(&mut self) -> Result<Val, ConvertError> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(bad("stack underflow past a mark"));
        }
        self.stack.pop().ok_or_else(|| bad("stack underflow"))
    }
    fn pop_mark(&mut self) -> Result<Vec<Val>, ConvertError> {
        let m = self.marks.pop().ok_or_else(|| bad("no mark"))?;
        Ok(self.stack.split_off(m))
    }
    fn top(&mut self) -> Result<&mut Val, ConvertError> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(bad("stack underflow past a mark"));
        }
        self.stack.last_mut().ok_or_else(|| bad("stack underflow"))
    }
    fn string(&mut self, n: usize) -> Result<String, ConvertError> {
        if n > MAX_STR {
            return Err(bad(format!("string of {n} bytes")));
        }
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| bad("string is not UTF-8"))
    }
    /// Counts `n` copied values against [`MAX_COPIED`].
    fn charge(&mut self, n: usize) -> Result<(), ConvertError> {
        self.copied = self.copied.saturating_add(n);
        if self.copied > MAX_COPIED {
            return Err(bad(format!(
                "the memo copies more than {MAX_COPIED} values (repeated references)"
            )));
        }
        Ok(())
    }
    fn memo_get(&mut self, i: u32) -> Result<Val, ConvertError> {
        let n = self
            .memo
            .get(&i)
            .map(|v| measure(v, usize::MAX).0)
            .ok_or_else(|| bad(format!("memo slot {i} is empty")))?;
        self.charge(n)?;
        Ok(self.memo[&i].clone())
    }
    /// A copy of the top of the stack, for the memo.
    fn top_copy(&mut self) -> Result<Val, ConvertError> {
        let n = measure(self.top()?, usize::MAX).0;
        self.charge(n)?;
        Ok(self.top()?.clone())
    }
    fn global(module: &str, name: &str) -> Result<Val, ConvertError> {
        Ok(match (module, name) {
            ("torch", "FloatStorage") => Val::StorageClass(StorageType::F32),
            ("torch", "HalfStorage") => Val::StorageClass(StorageType::F16),
            ("torch", "BFloat16Storage") => Val::StorageClass(StorageType::BF16),
            ("torch", "DoubleStorage") => Val::StorageClass(StorageType::F64),
            ("collections", "OrderedDict")
            | ("torch._utils", "_rebuild_tensor_v2")
            | ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => Val::Global(format!("{module}.{name}")),
            _ => {
                return Err(bad(format!(
                    "the pickle refers to {module}.{name}, which a state dict of float tensors does not need"
                )))
            }
        })
    }
}

fn as_u64(v: &Val, what: &str) -> Result<u64, ConvertError> {
    match v {
        Val::Int(i) if *i >= 0 => Ok(*i as u64),
        _ => Err(bad(format!("{what} is not a non-negative integer"))),
    }
}

fn as_u64s(v: &Val, what: &str) -> Result<Vec<u64>, ConvertError> {
    match v {
        Val::Tuple(t) | Val::List(t) => t.iter().map(|x| as_u64(x, what)).collect(),
        _ => Err(bad(format!("{what} is not a tuple"))),
    }
}

fn call(f: &str, args: Vec<Val>) -> Result<Val, ConvertError> {
    match f {
        "collections.OrderedDict" if args.is_empty() => Ok(Val::Dict(Vec::new())),
        "torch._utils._rebuild_tensor_v2" => {
            if args.len() < 4 {
                return Err(bad("_rebuild_tensor_v2 needs at least 4 arguments"));
            }
            let Val::Storage { key, dtype } = &args[0] else {
                return Err(bad("_rebuild_tensor_v2: first argument is not a storage"));
            };
            let shape = as_u64s(&args[2], "tensor size")?;
            let stride = as_u64s(&args[3], "tensor stride")?;
            if shape.len() != stride.len() || shape.len() > 8 {
                return Err(bad("tensor size and stride disagree"));
            }
            Ok(Val::Tensor(TensorRef {
                storage_key: key.clone(),
                dtype: *dtype,
                offset: as_u64(&args[1], "storage offset")?,
                shape,
                stride,
            }))
        }
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
            match args.into_iter().next() {
                Some(t @ Val::Tensor(_)) => Ok(t),
                _ => Err(bad("_rebuild_parameter: first argument is not a tensor")),
            }
        }
        _ => Err(bad(format!(
            "call of {f} with these arguments is not supported"
        ))),
    }
}

/// Parses `data.pkl` into (name, tensor) pairs in file order. A dict holding
/// a dict under "model" (the official wrapped format) is unwrapped.
pub fn load_state_dict(b: &[u8]) -> Result<Vec<(String, TensorRef)>, ConvertError> {
    let mut vm = Vm {
        b,
        p: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Default::default(),
        copied: 0,
    };
    let result = loop {
        let at = vm.p;
        let op = vm.u8()?;
        match op {
            0x80 => {
                let proto = vm.u8()?;
                if proto > 5 {
                    return Err(bad(format!("pickle protocol {proto}")));
                }
            }
            0x95 => {
                vm.le::<8>()?; // FRAME: a length hint
            }
            b'}' => vm.stack.push(Val::Dict(Vec::new())),
            b']' => vm.stack.push(Val::List(Vec::new())),
            b')' => vm.stack.push(Val::Tuple(Vec::new())),
            b'N' => vm.stack.push(Val::None),
            0x88 => vm.stack.push(Val::Bool(true)),
            0x89 => vm.stack.push(Val::Bool(false)),
            b'(' => vm.marks.push(vm.stack.len()),
            b'q' => {
                let i = vm.u8()? as u32;
                let v = vm.top_copy()?;
                vm.memo.insert(i, v);
            }
            b'r' => {
                let i = u32::from_le_bytes(vm.le()?);
                let v = vm.top_copy()?;
                vm.memo.insert(i, v);
            }
            0x94 => {
                let i = vm.memo.len() as u32;
                let v = vm.top_copy()?;
                vm.memo.insert(i, v);
            }
            b'h' => {
                let i = vm.u8()? as u32;
                let v = vm.memo_get(i)?;
                vm.stack.push(v);
            }
            b'j' => {
                let i = u32::from_le_bytes(vm.le()?);
                let v = vm.memo_get(i)?;
                vm.stack.push(v);
            }
            b'X' => {
                let n = u32::from_le_bytes(vm.le()?) as usize;
                let s = vm.string(n)?;
                vm.stack.push(Val::Str(s));
            }
            0x8c => {
                let n = vm.u8()? as usize;
                let s = vm.string(n)?;
                vm.stack.push(Val::Str(s));
            }
            0x8d => {
                let n = u64::from_le_bytes(vm.le()?);
                let s = vm.string(usize::try_from(n).unwrap_or(usize::MAX))?;
                vm.stack.push(Val::Str(s));
            }
            b'C' | b'B' => {
                let n = if op == b'C' {
                    vm.u8()? as usize
                } else {
                    u32::from_le_bytes(vm.le()?) as usize
                };
                if n > MAX_STR {
                    return Err(bad("bytes too long"));
                }
                let s = vm.take(n)?.to_vec();
                vm.stack.push(Val::Bytes(s));
            }
            b'K' => {
                let v = vm.u8()? as i64;
                vm.stack.push(Val::Int(v));
            }
            b'M' => {
                let v = u16::from_le_bytes(vm.le()?) as i64;
                vm.stack.push(Val::Int(v));
            }
            b'J' => {
                let v = i32::from_le_bytes(vm.le()?) as i64;
                vm.stack.push(Val::Int(v));
            }
            0x8a => {
                let n = vm.u8()? as usize;
                if n > 8 {
                    return Err(bad("integer wider than 64 bits"));
                }
                let bytes = vm.take(n)?;
                let mut v: i64 = 0;
                for (i, &x) in bytes.iter().enumerate() {
                    v |= (x as i64) << (8 * i);
                }
                if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                vm.stack.push(Val::Int(v));
            }
            b'G' => {
                let v = f64::from_be_bytes(vm.le()?);
                vm.stack.push(Val::Float(v));
            }
            b'c' => {
                let mut line = || -> Result<String, ConvertError> {
                    let rest = &vm.b[vm.p..];
                    let n = rest
                        .iter()
                        .take(256)
                        .position(|&c| c == b'\n')
                        .ok_or_else(|| bad("bad GLOBAL"))?;
                    let s = vm.string(n)?;
                    vm.p += 1;
                    Ok(s)
                };
                let module = line()?;
                let name = line()?;
                vm.stack.push(Vm::global(&module, &name)?);
            }
            0x93 => {
                let name = vm.pop()?;
                let module = vm.pop()?;
                match (module, name) {
                    (Val::Str(m), Val::Str(n)) => vm.stack.push(Vm::global(&m, &n)?),
                    _ => return Err(bad("STACK_GLOBAL needs two strings")),
                }
            }
            b't' => {
                let items = vm.pop_mark()?;
                items.iter().try_for_each(nestable)?;
                vm.stack.push(Val::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(vm.pop()?);
                }
                items.reverse();
                items.iter().try_for_each(nestable)?;
                vm.stack.push(Val::Tuple(items));
            }
            b'Q' => {
                let pid = vm.pop()?;
                let Val::Tuple(t) = pid else {
                    return Err(bad("persistent id is not a tuple"));
                };
                match t.as_slice() {
                    [Val::Str(tag), Val::StorageClass(dtype), Val::Str(key), _location, _numel]
                        if tag == "storage" =>
                    {
                        if key.is_empty()
                            || key.len() > 64
                            || !key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
                        {
                            return Err(bad(format!("storage key {key:?}")));
                        }
                        vm.stack.push(Val::Storage {
                            key: key.clone(),
                            dtype: *dtype,
                        })
                    }
                    _ => return Err(bad("persistent id is not a float storage")),
                }
            }
            b'R' => {
                let args = vm.pop()?;
                let f = vm.pop()?;
                let (Val::Global(f), Val::Tuple(args)) = (f, args) else {
                    return Err(bad("REDUCE needs a known callable and an argument tuple"));
                };
                vm.stack.push(call(&f, args)?);
            }
            b'b' => {
                // BUILD: only the state of an OrderedDict (its _metadata) or a tensor, ignored
                let _state = vm.pop()?;
                match vm.top()? {
                    Val::Dict(_) | Val::Tensor(_) => {}
                    _ => return Err(bad("BUILD on an object that is not a dict or tensor")),
                }
            }
            b's' => {
                let v = vm.pop()?;
                let k = vm.pop()?;
                nestable(&k)?;
                nestable(&v)?;
                match vm.top()? {
                    Val::Dict(d) => d.push((k, v)),
                    _ => return Err(bad("SETITEM on a non-dict")),
                }
            }
            b'u' => {
                let items = vm.pop_mark()?;
                items.iter().try_for_each(nestable)?;
                if items.len() % 2 != 0 {
                    return Err(bad("SETITEMS with an odd number of items"));
                }
                let mut it = items.into_iter();
                let Val::Dict(d) = vm.top()? else {
                    return Err(bad("SETITEMS on a non-dict"));
                };
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            b'a' => {
                let v = vm.pop()?;
                nestable(&v)?;
                match vm.top()? {
                    Val::List(l) => l.push(v),
                    _ => return Err(bad("APPEND on a non-list")),
                }
            }
            b'e' => {
                let items = vm.pop_mark()?;
                items.iter().try_for_each(nestable)?;
                match vm.top()? {
                    Val::List(l) => l.extend(items),
                    _ => return Err(bad("APPENDS on a non-list")),
                }
            }
            b'.' => break vm.pop()?,
            _ => {
                return Err(bad(format!(
                    "unsupported pickle opcode 0x{op:02x} at byte {at}"
                )))
            }
        }
    };
    let dict = match result {
        Val::Dict(d) => d,
        _ => return Err(bad("the pickle does not hold a dict")),
    };
    // the official evaluation loader unwraps {"model": state_dict}
    let dict = match dict.as_slice() {
        [(Val::Str(k), Val::Dict(inner))] if k == "model" => inner.clone(),
        _ => dict,
    };
    let mut out = Vec::with_capacity(dict.len());
    for (k, v) in dict {
        match (k, v) {
            (Val::Str(k), Val::Tensor(t)) => out.push((k, t)),
            (Val::Str(k), _) => return Err(bad(format!("entry '{k}' is not a tensor"))),
            _ => return Err(bad("a state dict key is not a string")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(b: &[u8]) -> String {
        match load_state_dict(b) {
            Err(ConvertError::BadPickle(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // 200 000 one-element tuples, each wrapping the last (TUPLE1)
        let mut b = b"\x80\x02)".to_vec();
        b.extend(std::iter::repeat_n(0x85u8, 200_000));
        b.push(b'.');
        assert!(err(&b).contains("nest deeper"));
        // the same through in-place list appends (EMPTY_LIST ..., APPEND ...)
        let mut b = b"\x80\x02".to_vec();
        b.extend(std::iter::repeat_n(b']', 100_000));
        b.extend(std::iter::repeat_n(b'a', 99_999));
        b.push(b'.');
        assert!(err(&b).contains("nest deeper"));
    }

    #[test]
    fn repeated_memo_references_are_bounded() {
        // (t, t) memoized and referenced again, 64 times: 2^64 values
        let mut b = b"\x80\x02)".to_vec();
        for _ in 0..64 {
            b.extend(b"q\x00h\x00\x86");
        }
        b.push(b'.');
        assert!(err(&b).contains("copies more than"));
    }
}
