//! How typed values become bytes: a small trait, with bincode 2 as the default.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::BoxError;

/// Turns values of `T` into bytes and back. Implement it to store another format.
pub trait Codec<T>: Send + Sync + fmt::Debug {
    /// Encodes a value.
    fn encode(&self, value: &T) -> Result<Vec<u8>, BoxError>;
    /// Decodes bytes that [`Codec::encode`] produced; any other bytes are an error,
    /// never a panic.
    fn decode(&self, bytes: &[u8]) -> Result<T, BoxError>;
}

/// bincode 2 with its standard configuration (variable-length integers, little
/// endian), through serde.
///
/// ```
/// use nautilus_core::{Bincode, Codec};
///
/// let bytes = Codec::<(u32, String)>::encode(&Bincode, &(7, "seven".to_string()))?;
/// let back: (u32, String) = Bincode.decode(&bytes)?;
/// assert_eq!(back, (7, "seven".to_string()));
/// assert!(Codec::<(u32, String)>::decode(&Bincode, &[0xff, 0xff]).is_err());
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

impl<T: Serialize + DeserializeOwned> Codec<T> for Bincode {
    fn encode(&self, value: &T) -> Result<Vec<u8>, BoxError> {
        Ok(bincode::serde::encode_to_vec(
            value,
            bincode::config::standard(),
        )?)
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, BoxError> {
        let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())?;
        if read != bytes.len() {
            return Err(format!("{} trailing bytes after the value", bytes.len() - read).into());
        }
        Ok(value)
    }
}
