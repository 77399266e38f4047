//! SHA-256 digests: a 32-byte value type and hashing adaptors for `Read`/`Write`.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

/// A SHA-256 digest. `Display`/`FromStr`/serde use 64 lowercase hex characters (no `sha256:` prefix).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Digest of a byte slice.
    pub fn of(data: &[u8]) -> Self {
        let mut h = Sha256Hasher::new();
        h.update(data);
        h.finish()
    }

    /// The OCI form `sha256:<hex>`.
    pub fn to_oci(&self) -> String {
        format!("sha256:{self}")
    }

    /// Parses the OCI form `sha256:<hex>`.
    pub fn from_oci(s: &str) -> Result<Self, ParseSha256Error> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| ParseSha256Error(s.to_owned()))?;
        hex.parse()
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

/// The text was not 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a sha256 digest (64 lowercase hex characters expected): {0:?}")]
pub struct ParseSha256Error(pub String);

impl FromStr for Sha256 {
    type Err = ParseSha256Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Uppercase is refused so that one digest has exactly one spelling in paths and indexes.
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ParseSha256Error(s.to_owned()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseSha256Error(s.to_owned()))?;
        Ok(Sha256(out))
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256 that also counts bytes.
#[derive(Clone, Default)]
pub struct Sha256Hasher {
    inner: sha2::Sha256,
    size: u64,
}

impl Sha256Hasher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.size += data.len() as u64;
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn finish(self) -> Sha256 {
        Sha256(self.inner.finalize().into())
    }
    /// Digest and byte count.
    pub fn finish_with_size(self) -> (Sha256, u64) {
        let size = self.size;
        (self.finish(), size)
    }
}

/// A `Write` adaptor hashing everything written through it.
pub struct Sha256Writer<W> {
    inner: W,
    hasher: Sha256Hasher,
}

impl<W: Write> Sha256Writer<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256Hasher::new(),
        }
    }
    /// Returns the inner writer, the digest and the number of bytes written.
    pub fn finish(self) -> (W, Sha256, u64) {
        let (digest, size) = self.hasher.finish_with_size();
        (self.inner, digest, size)
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A `Read` adaptor hashing everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256Hasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256Hasher::new(),
        }
    }
    /// Returns the inner reader, the digest and the number of bytes read.
    pub fn finish(self) -> (R, Sha256, u64) {
        let (digest, size) = self.hasher.finish_with_size();
        (self.inner, digest, size)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Hashes a whole file with a large buffer. Returns digest and size.
pub fn sha256_file(path: &std::path::Path) -> io::Result<(Sha256, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish_with_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_and_round_trip() {
        let d = Sha256::of(b"abc");
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Sha256>().unwrap(), d);
        assert_eq!(Sha256::from_oci(&d.to_oci()).unwrap(), d);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Sha256>(&json).unwrap(), d);
    }

    #[test]
    fn rejects_bad_hex() {
        assert!("ABC".parse::<Sha256>().is_err());
        let upper = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        assert!(upper.parse::<Sha256>().is_err());
        assert!(Sha256::from_oci("md5:00").is_err());
    }

    #[test]
    fn writer_and_reader_agree() {
        let mut w = Sha256Writer::new(Vec::new());
        w.write_all(b"hello world").unwrap();
        let (bytes, d1, n1) = w.finish();
        let mut r = HashingReader::new(&bytes[..]);
        std::io::copy(&mut r, &mut std::io::sink()).unwrap();
        let (_, d2, n2) = r.finish();
        assert_eq!((d1, n1), (d2, n2));
        assert_eq!(d1, Sha256::of(b"hello world"));
    }
}
