//! Reading (plus the whole-file BLAKE2b when asked) and decompression on threads of their own,
//! feeding small recycled buffers through bounded channels, so that they overlap with tar parsing and
//! SHA-256 on the consuming thread.

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::error::{Error, Trailing};
use crate::sign::Prehasher;

/// Small buffers on purpose: measured with 64 KiB-4 MiB, buffers that stay in the CPU caches
/// between producer and consumer cut the CPU time of a verify by a quarter (the kernel's copy out
/// of the page cache and zstd's copies then hit cache instead of memory).
const CHUNK: usize = 128 << 10;
const IN_FLIGHT: usize = 8;

/// A decoded buffer and how many of its bytes are filled: buffers keep their full length so that a
/// recycled one is never zeroed again. An empty buffer marks the start of a further zstd frame.
type Chunk = Result<(Vec<u8>, usize), Error>;

/// Raw (compressed) bytes handed from the reader thread to the decoder thread, with their count
/// (buffers keep their full length, as decoded ones do).
type RawChunk = io::Result<(Vec<u8>, usize)>;
const RAW_CHUNK: usize = 64 << 10;
const RAW_IN_FLIGHT: usize = 16;
/// Joins to (compressed bytes read, BLAKE2b-512 of them when asked).
type ReaderJoin = JoinHandle<(u64, Option<[u8; 64]>)>;

/// The raw file is read on a thread of its own: copying it out of the page cache costs as much as
/// zstd decoding itself (profiled), so on the decoder thread it made that thread the bottleneck.
/// When the whole-file signature must be checked, the same thread computes its BLAKE2b prehash,
/// which costs about as much as SHA-256. Three stages (read [+ BLAKE2b], zstd, tar + SHA-256) then
/// share the cores.
fn spawn_reader(mut file: File, prehash: bool) -> io::Result<(ChannelReader, ReaderJoin)> {
    let (tx, rx) = sync_channel::<RawChunk>(RAW_IN_FLIGHT);
    let (recycle, recycled) = sync_channel::<Vec<u8>>(RAW_IN_FLIGHT + 2);
    let handle = std::thread::Builder::new()
        .name(if prehash { "ilha-blake2b" } else { "ilha-read" }.into())
        .spawn(move || {
            let mut prehasher = prehash.then(Prehasher::new);
            let mut bytes = 0u64;
            loop {
                let mut buf = recycled.try_recv().unwrap_or_else(|_| vec![0u8; RAW_CHUNK]);
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Some(h) = prehasher.as_mut() {
                            h.update(&buf[..n]);
                        }
                        bytes += n as u64;
                        if tx.send(Ok((buf, n))).is_err() {
                            break; // the decoder stopped (error, or the consumer gave up)
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
            (bytes, prehasher.map(|h| h.finish()))
        })?;
    Ok((
        ChannelReader {
            rx,
            recycle,
            current: Vec::new(),
            len: 0,
            pos: 0,
            consumed: 0,
        },
        handle,
    ))
}

/// `BufRead` over the chunks of the reader thread.
struct ChannelReader {
    rx: Receiver<RawChunk>,
    recycle: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    len: usize,
    pos: usize,
    /// Bytes of the file consumed so far: the offset of `current[pos]` in the file.
    consumed: u64,
}

impl ChannelReader {
    /// The next `n` bytes (fewer at the end of the file) without consuming them, joining chunks
    /// when they straddle two.
    fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        while self.len - self.pos < n {
            let Ok(chunk) = self.rx.recv() else { break };
            let (buf, len) = chunk?;
            let mut joined = Vec::with_capacity(self.len - self.pos + len);
            joined.extend_from_slice(&self.current[self.pos..self.len]);
            joined.extend_from_slice(&buf[..len]);
            let _ = self.recycle.try_send(buf);
            // Not recycled: it has no chunk's size.
            self.current = joined;
            self.len = self.current.len();
            self.pos = 0;
        }
        Ok(&self.current[self.pos..self.len.min(self.pos + n)])
    }
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
        if self.pos == self.len {
            match self.rx.recv() {
                Ok(chunk) => {
                    let (buf, len) = chunk?;
                    let old = std::mem::replace(&mut self.current, buf);
                    if old.len() == RAW_CHUNK {
                        let _ = self.recycle.try_send(old);
                    }
                    self.len = len;
                    self.pos = 0;
                }
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.current[self.pos..self.len])
    }
    fn consume(&mut self, n: usize) {
        self.pos += n;
        self.consumed += n as u64;
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
    /// Filled bytes of `current`.
    len: usize,
    pos: usize,
    /// Offset in the decompressed stream of `current[pos]`.
    pub offset: u64,
    /// Offset in the decompressed stream where the last zstd frame seen so far starts.
    pub frame_start: u64,
    worker: Option<JoinHandle<RawSummary>>,
    ended: bool,
}

/// The magic number that starts every (non-skippable) zstd frame, as stored.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Decodes everything into `CHUNK`-sized buffers sent to the checking thread; stops at the first
/// error (sent along) or when the consumer hangs up.
///
/// Frames are decoded one at a time, so that what follows each one is known: the end of the
/// file, or the start of another zstd frame. Anything else (garbage, a skippable frame, a partial
/// frame header) was appended to the file, and is refused from its first bytes without reading
/// the rest: `file_len` gives how much of it there is.
fn decode(
    mut reader: ChannelReader,
    file_len: u64,
    tx: &SyncSender<Chunk>,
    recycled: &Receiver<Vec<u8>>,
) {
    let mut decoded = 0u64;
    let mut frames = 0u64;
    loop {
        let next = match reader.peek(ZSTD_MAGIC.len()) {
            Ok(next) => next.to_vec(),
            Err(e) => {
                let _ = tx.send(Err(classify(e, decoded)));
                return;
            }
        };
        if next.is_empty() {
            return; // the file ends where a frame ends
        }
        if next != ZSTD_MAGIC {
            let offset = reader.consumed;
            let err = if ZSTD_MAGIC.starts_with(&next) {
                Error::Truncated {
                    context: format!("the file ends inside a frame header, at byte {offset}"),
                }
            } else if frames == 0 {
                Error::CorruptStream {
                    context: format!("not a zstd stream (it starts with {next:02x?})"),
                }
            } else {
                Error::TrailingData {
                    offset,
                    found: Trailing::AfterCompressedStream {
                        bytes: file_len.saturating_sub(offset).max(next.len() as u64),
                    },
                }
            };
            let _ = tx.send(Err(err));
            return;
        }
        // Tells the consumer where a further frame starts: none may start after the archive's end.
        if frames > 0 && tx.send(Ok((Vec::new(), 0))).is_err() {
            return;
        }
        let mut decoder = match zstd::stream::read::Decoder::with_buffer(&mut reader) {
            Ok(d) => d.single_frame(),
            Err(e) => {
                let _ = tx.send(Err(Error::CorruptStream {
                    context: e.to_string(),
                }));
                return;
            }
        };
        loop {
            let mut buf = recycled.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
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
            decoded += filled as u64;
            match result {
                Err(e) => {
                    let _ = tx.send(Err(classify(e, decoded)));
                    return;
                }
                Ok(()) if filled == 0 => break, // end of this frame
                Ok(()) => {
                    if tx.send(Ok((buf, filled))).is_err() {
                        return; // the consumer gave up (it found an error)
                    }
                }
            }
        }
        frames += 1;
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
        // Only used to say how many bytes were appended after the compressed stream.
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (tx, rx) = sync_channel::<Chunk>(IN_FLIGHT);
        let (recycle, recycled) = sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
        let worker = std::thread::Builder::new()
            .name("ilha-zstd".into())
            .spawn(move || {
                let (reader, reading) = match spawn_reader(file, prehash) {
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
                // Dropping the reader (inside `decode`) lets the reading thread stop early.
                decode(reader, file_len, &tx, &recycled);
                match reading.join() {
                    Ok((compressed_bytes, prehash)) => RawSummary {
                        compressed_bytes,
                        prehash,
                    },
                    Err(_) => RawSummary {
                        compressed_bytes: 0,
                        prehash: None,
                    },
                }
            })
            .map_err(|e| Error::CorruptStream {
                context: format!("starting the decoder thread: {e}"),
            })?;
        Ok(TarStream {
            rx,
            recycle,
            current: Vec::new(),
            len: 0,
            pos: 0,
            offset: 0,
            frame_start: 0,
            worker: Some(worker),
            ended: false,
        })
    }

    /// Next non-empty slice of at most `max` bytes; empty slice at end of stream.
    pub(crate) fn next_slice(&mut self, max: usize) -> Result<&[u8], Error> {
        while self.pos == self.len {
            if self.ended {
                return Ok(&[]);
            }
            match self.rx.recv() {
                Ok(Ok((_, 0))) => self.frame_start = self.offset,
                Ok(Ok((buf, len))) => {
                    let old = std::mem::replace(&mut self.current, buf);
                    if !old.is_empty() {
                        let _ = self.recycle.try_send(old);
                    }
                    self.len = len;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.ended = true;
                    return Ok(&[]);
                }
            }
        }
        let n = max.min(self.len - self.pos);
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
