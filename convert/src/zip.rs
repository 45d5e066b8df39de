//! A minimal reader for the uncompressed ("stored") zip archives that
//! `torch.save` writes. Every offset and size is checked against the file;
//! entries are verified against their CRC-32 when read.

use std::collections::HashMap;

use crate::error::ConvertError;

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

#[derive(Debug, Clone)]
struct Entry {
    method: u16,
    crc: u32,
    size: u64,
    compressed: u64,
    local_offset: u64,
}

/// The entry table of an archive; reads take the archive's bytes.
pub struct ZipIndex {
    entries: HashMap<String, Entry>,
    names: Vec<String>,
}

fn bad(msg: impl Into<String>) -> ConvertError {
    ConvertError::BadZip(msg.into())
}

fn rd<const N: usize>(b: &[u8], at: u64) -> Result<[u8; N], ConvertError> {
    let at = usize::try_from(at).map_err(|_| bad("offset out of range"))?;
    b.get(at..at.checked_add(N).ok_or_else(|| bad("offset overflow"))?)
        .map(|s| s.try_into().expect("slice of N bytes"))
        .ok_or_else(|| {
            bad(format!(
                "truncated: {N} bytes needed at offset {at}, file has {}",
                b.len()
            ))
        })
}
fn u16_at(b: &[u8], at: u64) -> Result<u16, ConvertError> {
    Ok(u16::from_le_bytes(rd(b, at)?))
}
fn u32_at(b: &[u8], at: u64) -> Result<u32, ConvertError> {
    Ok(u32::from_le_bytes(rd(b, at)?))
}
fn u64_at(b: &[u8], at: u64) -> Result<u64, ConvertError> {
    Ok(u64::from_le_bytes(rd(b, at)?))
}

impl ZipIndex {
    pub fn new(bytes: &[u8]) -> Result<ZipIndex, ConvertError> {
        let len = bytes.len() as u64;
        if len < 22 {
            return Err(bad("file too short to be a zip archive"));
        }
        // the end-of-central-directory record, searched backwards over a possible comment
        let lowest = len.saturating_sub(22 + 65535);
        let mut eocd = None;
        let mut at = len - 22;
        loop {
            if u32_at(bytes, at)? == EOCD_SIG {
                eocd = Some(at);
                break;
            }
            if at == lowest {
                break;
            }
            at -= 1;
        }
        let eocd = eocd
            .ok_or_else(|| bad("no end-of-central-directory record (not a zip, or truncated)"))?;
        let mut n_entries = u16_at(bytes, eocd + 10)? as u64;
        let mut cd_size = u32_at(bytes, eocd + 12)? as u64;
        let mut cd_offset = u32_at(bytes, eocd + 16)? as u64;
        if n_entries == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
            let loc = eocd
                .checked_sub(20)
                .ok_or_else(|| bad("zip64 locator missing"))?;
            if u32_at(bytes, loc)? != ZIP64_LOCATOR_SIG {
                return Err(bad("zip64 locator missing"));
            }
            let z = u64_at(bytes, loc + 8)?;
            if u32_at(bytes, z)? != ZIP64_EOCD_SIG {
                return Err(bad("zip64 end record missing"));
            }
            n_entries = u64_at(bytes, z + 32)?;
            cd_size = u64_at(bytes, z + 40)?;
            cd_offset = u64_at(bytes, z + 48)?;
        }
        if cd_offset.checked_add(cd_size).is_none_or(|e| e > len)
            || n_entries.saturating_mul(46) > cd_size
        {
            return Err(bad("central directory lies outside the file"));
        }
        let mut entries = HashMap::new();
        let mut names = Vec::new();
        let mut p = cd_offset;
        for _ in 0..n_entries {
            if u32_at(bytes, p)? != CENTRAL_SIG {
                return Err(bad(format!("bad central directory entry at offset {p}")));
            }
            let method = u16_at(bytes, p + 10)?;
            let crc = u32_at(bytes, p + 16)?;
            let mut compressed = u32_at(bytes, p + 20)? as u64;
            let mut size = u32_at(bytes, p + 24)? as u64;
            let name_len = u16_at(bytes, p + 28)? as u64;
            let extra_len = u16_at(bytes, p + 30)? as u64;
            let comment_len = u16_at(bytes, p + 32)? as u64;
            let mut local_offset = u32_at(bytes, p + 42)? as u64;
            let name_at = p + 46;
            let name = bytes
                .get(name_at as usize..(name_at + name_len) as usize)
                .ok_or_else(|| bad("truncated entry name"))?;
            let name =
                String::from_utf8(name.to_vec()).map_err(|_| bad("entry name is not UTF-8"))?;
            // zip64 extra field: the 0xffffffff fields, in order
            let mut e = name_at + name_len;
            let extra_end = e + extra_len;
            while e + 4 <= extra_end {
                let id = u16_at(bytes, e)?;
                let sz = u16_at(bytes, e + 2)? as u64;
                if id == 1 {
                    let mut f = e + 4;
                    for field in [&mut size, &mut compressed, &mut local_offset] {
                        if *field == 0xffff_ffff && f + 8 <= e + 4 + sz {
                            *field = u64_at(bytes, f)?;
                            f += 8;
                        }
                    }
                }
                e += 4 + sz;
            }
            p = extra_end + comment_len;
            names.push(name.clone());
            entries.insert(
                name,
                Entry {
                    method,
                    crc,
                    size,
                    compressed,
                    local_offset,
                },
            );
        }
        Ok(ZipIndex { entries, names })
    }

    /// Entry names in central-directory order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The bytes of entry `name`, borrowed from the archive, CRC-checked.
    pub fn read<'b>(&self, bytes: &'b [u8], name: &str) -> Result<&'b [u8], ConvertError> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| bad(format!("no entry '{name}'")))?;
        if e.method != 0 {
            return Err(bad(format!(
                "entry '{name}' is compressed (method {}); torch.save writes stored entries",
                e.method
            )));
        }
        if e.compressed != e.size {
            return Err(bad(format!("entry '{name}': stored sizes disagree")));
        }
        let b = bytes;
        if u32_at(b, e.local_offset)? != LOCAL_SIG {
            return Err(bad(format!("entry '{name}': bad local header")));
        }
        let n = u16_at(b, e.local_offset + 26)? as u64;
        let x = u16_at(b, e.local_offset + 28)? as u64;
        let start = e.local_offset + 30 + n + x;
        let end = start
            .checked_add(e.size)
            .filter(|&end| end <= b.len() as u64);
        let end = end.ok_or_else(|| {
            bad(format!(
                "entry '{name}' runs past the end of the file (truncated?)"
            ))
        })?;
        let data = &b[start as usize..end as usize];
        // fuzzing skips the check so that mutated entries reach their readers
        if !cfg!(fuzzing) && crc32(data) != e.crc {
            return Err(bad(format!("entry '{name}': CRC mismatch (corrupt file)")));
        }
        Ok(data)
    }
}

/// CRC-32 (IEEE 802.3, reflected), as zip uses.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xcbf4_3926);
    }
}
