//! A plain in-memory storage: no faults, no crash model. For tests and
//! benchmarks that want a database without a file.

use super::Storage;
use crate::Result;
use crate::sync::Mutex;

/// A byte vector behind a mutex. `sync` is a no-op.
#[derive(Default)]
pub struct MemStorage {
    bytes: Mutex<Vec<u8>>,
}

impl MemStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Storage for MemStorage {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bytes = self.bytes.lock();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start.checked_add(buf.len()).and_then(|end| bytes.get(start..end)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
        }
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let mut bytes = self.bytes.lock();
        let start = usize::try_from(offset).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let end = start.checked_add(buf.len()).ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[start..end].copy_from_slice(buf);
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn len(&self) -> Result<u64> {
        Ok(self.bytes.lock().len() as u64)
    }

    fn set_len(&self, len: u64) -> Result<()> {
        let len = usize::try_from(len).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        self.bytes.lock().resize(len, 0);
        Ok(())
    }
}
