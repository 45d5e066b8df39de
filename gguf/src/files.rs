//! Input files opened safely: only regular files (a FIFO or device would
//! block in `open` or never end), and small files read with a size bound.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

fn not_regular() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")
}

/// Opens `path` for reading if it is a regular file (a symlink to one is
/// fine), checked before opening and again on the handle.
pub fn open_regular(path: &Path) -> io::Result<File> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let f = File::open(path)?;
    if !f.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(f)
}

/// Reads a regular file of at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut b = Vec::new();
    open_regular(path)?
        .take(max.saturating_add(1))
        .read_to_end(&mut b)?;
    if b.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(b)
}
