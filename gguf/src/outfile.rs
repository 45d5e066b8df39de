//! Output files written safely, for every tool that writes one (the
//! converter, the quantizer, tensor and logits dumps).
//!
//! - An existing output is replaced only if it is a regular file: a
//!   symlink, device, FIFO or directory given as the output is refused,
//!   never written through or renamed over.
//! - Data goes to a new temporary file beside the output, created
//!   exclusively (`create_new`: never an existing file or a planted
//!   symlink) under a random name, synced to disk, then renamed over the
//!   output, so a reader never sees half a file.
//! - On any error, and on a panic unwinding, the temporary is removed.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Fails unless `out` is absent or a regular file (not followed if it is a
/// symlink).
pub fn check_replaceable(out: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) => {
            let ft = m.file_type();
            let what = if ft.is_symlink() {
                "a symbolic link"
            } else if ft.is_dir() {
                "a directory"
            } else {
                "a device, FIFO or socket"
            };
            Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "refusing to replace {}: it is {what}, not a regular file",
                    out.display()
                ),
            ))
        }
    }
}

/// A random number from the OS-seeded keys of std's `RandomState`.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// A temporary file beside an output path: [`TempOut::commit`] syncs it and
/// renames it over the output; dropped uncommitted, it is removed.
pub struct TempOut {
    tmp: PathBuf,
    out: PathBuf,
    armed: bool,
}

impl TempOut {
    /// Checks that `out` may be replaced and creates the temporary.
    pub fn create(out: &Path) -> io::Result<(TempOut, File)> {
        check_replaceable(out)?;
        let name = out.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no file", out.display()),
            )
        })?;
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // names no other process can predict from the output's name: std's
        // per-process random hash keys (seeded by the OS), a fresh state per try
        for _ in 0..16 {
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(".tmp-{:016x}", random_u64()));
            let tmp = dir.join(tmp_name);
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(f) => {
                    return Ok((
                        TempOut {
                            tmp,
                            out: out.to_path_buf(),
                            armed: true,
                        },
                        f,
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("no free temporary name beside {}", out.display()),
        ))
    }

    /// The temporary's path (for messages and for reading it back).
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Syncs `file` (the temporary, fully written) and renames it over the
    /// output, checking again that the output may be replaced.
    pub fn commit(mut self, file: File) -> io::Result<()> {
        file.sync_all()?;
        drop(file);
        check_replaceable(&self.out)?;
        std::fs::rename(&self.tmp, &self.out)?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `out` through `body`, which gets the temporary file and returns
/// it when done (see the module docs).
pub fn write_atomically<E: From<io::Error>>(
    out: &Path,
    body: impl FnOnce(File) -> Result<File, E>,
) -> Result<(), E> {
    let (guard, file) = TempOut::create(out)?;
    let file = body(file)?;
    guard.commit(file)?;
    Ok(())
}

/// [`write_atomically`] with a check of the finished temporary (by path)
/// before the rename: the converter and subllm-quantize load every file they
/// write with the engine here, so a file the engine would refuse is never
/// put in place. `io_err` maps the temporary's own I/O errors.
pub fn write_checked<E>(
    out: &Path,
    body: impl FnOnce(File) -> Result<File, E>,
    check: impl FnOnce(&Path) -> Result<(), E>,
    io_err: impl Fn(io::Error) -> E,
) -> Result<(), E> {
    let (guard, file) = TempOut::create(out).map_err(&io_err)?;
    let file = body(file)?;
    check(guard.path())?;
    guard.commit(file).map_err(&io_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("subllm-outfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entries(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_replace_regular_files_and_leave_no_temporary() {
        let d = dir("ok");
        let out = d.join("a.bin");
        std::fs::write(&out, b"old").unwrap();
        write_atomically::<io::Error>(&out, |mut f| {
            f.write_all(b"new")?;
            Ok(f)
        })
        .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        assert_eq!(entries(&d), vec!["a.bin"]);
        // a failing body leaves the old output and no temporary
        let r = write_atomically::<io::Error>(&out, |mut f| {
            f.write_all(b"half")?;
            Err(io::Error::other("boom"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        assert_eq!(entries(&d), vec!["a.bin"]);
        // a panicking body too
        let r = std::panic::catch_unwind(|| {
            let _ = write_atomically::<io::Error>(&out, |_| panic!("inside"));
        });
        assert!(r.is_err());
        assert_eq!(entries(&d), vec!["a.bin"]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_directories_and_devices_are_refused_untouched() {
        let d = dir("refuse");
        let target = d.join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for out in [link.as_path(), d.as_path(), Path::new("/dev/null")] {
            let e = write_atomically::<io::Error>(out, Ok).unwrap_err();
            assert!(e.to_string().contains("refusing"), "{e}");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(entries(&d), vec!["link", "target"]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
