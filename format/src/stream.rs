//! Decompression on its own thread, feeding big buffers through a bounded channel, so zstd (and the
//! whole-file BLAKE2b when asked) overlap with tar parsing and SHA-256 on the consuming thread.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::error::Error;
use crate::sign::Prehasher;

const CHUNK: usize = 4 << 20;
const IN_FLIGHT: usize = 4;

type Chunk = Result<Vec<u8>, Error>;

/// Raw (compressed) bytes handed from the reader thread to the decoder thread.
type RawChunk = io::Result<Vec<u8>>;
const RAW_CHUNK: usize = 1 << 20;
/// Joins to (compressed bytes read, BLAKE2b-512 of them).
type PrehashJoin = JoinHandle<(u64, [u8; 64])>;

/// When the whole-file signature must be checked, the raw file is read and BLAKE2b-hashed on a
/// thread of its own: BLAKE2b costs about as much as SHA-256, and keeping it off the decoder thread
/// lets the three stages (prehash, zstd, tar+SHA-256) overlap.
fn spawn_prehashing_reader(mut file: File) -> io::Result<(ChannelReader, PrehashJoin)> {
    let (tx, rx) = sync_channel::<RawChunk>(IN_FLIGHT * 4);
    let handle = std::thread::Builder::new()
        .name("ilha-blake2b".into())
        .spawn(move || {
            let mut prehash = Prehasher::new();
            let mut bytes = 0u64;
            loop {
                let mut buf = vec![0u8; RAW_CHUNK];
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        prehash.update(&buf);
                        bytes += n as u64;
                        if tx.send(Ok(buf)).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
            (bytes, prehash.finish())
        })?;
    Ok((
        ChannelReader {
            rx,
            current: Vec::new(),
            pos: 0,
        },
        handle,
    ))
}

/// `BufRead` over the chunks of the prehashing reader.
struct ChannelReader {
    rx: Receiver<RawChunk>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.current = chunk?;
                    self.pos = 0;
                }
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.current[self.pos..])
    }
    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// Counts compressed bytes read directly from the file (no whole-file signature to check).
struct CountingFile {
    file: File,
    bytes: u64,
}

impl Read for CountingFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// What the decoder thread learnt about the compressed file once it reached its end.
pub(crate) struct RawSummary {
    pub compressed_bytes: u64,
    pub prehash: Option<[u8; 64]>,
}

/// The decompressed tar stream, delivered in large chunks.
pub(crate) struct TarStream {
    rx: Receiver<Chunk>,
    recycle: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    /// Offset in the decompressed stream of `current[pos]`.
    pub offset: u64,
    worker: Option<JoinHandle<RawSummary>>,
    ended: bool,
}

/// Decodes everything into `CHUNK`-sized buffers sent to the checking thread; stops at the first
/// error (sent along) or when the consumer hangs up.
fn decode(reader: impl BufRead, tx: &SyncSender<Chunk>, recycled: &Receiver<Vec<u8>>) {
    let mut decoder = match zstd::stream::read::Decoder::with_buffer(reader) {
        Ok(d) => d,
        Err(e) => {
            let _ = tx.send(Err(Error::CorruptStream {
                context: e.to_string(),
            }));
            return;
        }
    };
    let mut decoded = 0u64;
    loop {
        let mut buf = recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        buf.resize(CHUNK, 0);
        let mut filled = 0;
        let result = loop {
            match decoder.read(&mut buf[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == CHUNK {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        buf.truncate(filled);
        decoded += filled as u64;
        match result {
            Err(e) => {
                let _ = tx.send(Err(classify(e, decoded)));
                return;
            }
            Ok(()) if filled == 0 => return,
            Ok(()) => {
                if tx.send(Ok(buf)).is_err() {
                    return; // the consumer gave up (it found an error)
                }
            }
        }
    }
}

fn classify(e: io::Error, decoded_at: u64) -> Error {
    let msg = e.to_string();
    if e.kind() == io::ErrorKind::UnexpectedEof
        || msg.contains("incomplete")
        || msg.contains("truncated")
    {
        Error::Truncated {
            context: format!("the compressed stream stops mid-frame ({msg})"),
        }
    } else {
        Error::CorruptStream {
            context: format!("{msg} (after {decoded_at} decompressed bytes)"),
        }
    }
}

impl TarStream {
    pub(crate) fn open(file: File, prehash: bool) -> Result<TarStream, Error> {
        let (tx, rx) = sync_channel::<Chunk>(IN_FLIGHT);
        let (recycle, recycled) = sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
        let worker = std::thread::Builder::new()
            .name("ilha-zstd".into())
            .spawn(move || {
                if prehash {
                    let (reader, hashing) = match spawn_prehashing_reader(file) {
                        Ok(v) => v,
                        Err(e) => {
                            let _ = tx.send(Err(Error::CorruptStream {
                                context: format!("starting the reader thread: {e}"),
                            }));
                            return RawSummary {
                                compressed_bytes: 0,
                                prehash: None,
                            };
                        }
                    };
                    decode(reader, &tx, &recycled);
                    match hashing.join() {
                        Ok((bytes, digest)) => RawSummary {
                            compressed_bytes: bytes,
                            prehash: Some(digest),
                        },
                        Err(_) => RawSummary {
                            compressed_bytes: 0,
                            prehash: None,
                        },
                    }
                } else {
                    let mut reader =
                        BufReader::with_capacity(RAW_CHUNK, CountingFile { file, bytes: 0 });
                    decode(&mut reader, &tx, &recycled);
                    RawSummary {
                        compressed_bytes: reader.get_ref().bytes,
                        prehash: None,
                    }
                }
            })
            .map_err(|e| Error::CorruptStream {
                context: format!("starting the decoder thread: {e}"),
            })?;
        Ok(TarStream {
            rx,
            recycle,
            current: Vec::new(),
            pos: 0,
            offset: 0,
            worker: Some(worker),
            ended: false,
        })
    }

    /// Next non-empty slice of at most `max` bytes; empty slice at end of stream.
    pub(crate) fn next_slice(&mut self, max: usize) -> Result<&[u8], Error> {
        if self.pos == self.current.len() {
            if self.ended {
                return Ok(&[]);
            }
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    let old = std::mem::replace(&mut self.current, buf);
                    let _ = self.recycle.try_send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.ended = true;
                    return Ok(&[]);
                }
            }
        }
        let n = max.min(self.current.len() - self.pos);
        let s = &self.current[self.pos..self.pos + n];
        self.pos += n;
        self.offset += n as u64;
        Ok(s)
    }

    /// Fills `out` completely, or fails with [`Error::Truncated`] naming `what`.
    pub(crate) fn read_exact(
        &mut self,
        out: &mut [u8],
        what: &dyn Fn() -> String,
    ) -> Result<(), Error> {
        let mut filled = 0;
        while filled < out.len() {
            let s = self.next_slice(out.len() - filled)?;
            if s.is_empty() {
                return Err(Error::Truncated {
                    context: format!("{} ends early", what()),
                });
            }
            out[filled..filled + s.len()].copy_from_slice(s);
            filled += s.len();
        }
        Ok(())
    }

    /// Waits for the decoder thread (only meaningful after the stream ended).
    pub(crate) fn finish(mut self) -> Result<RawSummary, Error> {
        let worker = self.worker.take().expect("finish called once");
        // Drain so the worker is never blocked on a full channel.
        while let Ok(chunk) = self.rx.recv() {
            chunk?;
        }
        worker.join().map_err(|_| Error::CorruptStream {
            context: "the decoder thread panicked".into(),
        })
    }
}
