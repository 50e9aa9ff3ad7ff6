//! Length-prefixed framing over a byte stream, shared by `pipe`, `uds` and `tcp`.
//!
//! Wire format: each frame is a little-endian `u32` length, then that many bytes. Before
//! the first frame each side sends a 16-byte hello (`IPCBENCH`, protocol version, maximum
//! frame length) and checks the peer's, so a stray peer or a mismatched spec fails setup
//! instead of producing garbage.
//!
//! Receiving reads into a 64 KiB buffer, so one `read` can bring in many small frames; a
//! large frame's payload (over 32 KiB) is read straight into the caller's buffer, and
//! after one only the next header is read ahead, so large frames are copied once, by the
//! kernel, as with a bare `read`. Blocking sends use a
//! blocking descriptor, so a full pipe or socket sleeps in the kernel rather than in a
//! `poll` loop; `try_send` uses a non-blocking write (a second open of the FIFO, or
//! `MSG_DONTWAIT` on a socket) and keeps the unsent tail of a partly written frame, which
//! counts as accepted and goes out before the next frame.

use std::io::{IoSlice, IoSliceMut};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{sendmsg, shutdown, MsgFlags, Shutdown};
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;

use crate::{
    Corruption, Endpoint, RecvError, RecvTimeoutError, SendError, SetupError, Transport,
    TransportKind, TryRecvError, TrySendError,
};

const HEADER: usize = 4;

/// The most slices one write of ours hands the kernel (Linux takes up to 1024).
const SLICES: usize = 64;

/// Frames shorter than this are copied into one buffer when sent in a batch.
const COALESCE: usize = 512;

/// A piece of a batch: bytes `a..b` of the staging buffer, or frame `i` with its header.
enum Segment {
    Staged(usize, usize),
    Frame(usize),
}
const RX_BUF: usize = 64 * 1024;
const HELLO_MAGIC: &[u8; 8] = b"IPCBENCH";
const PROTOCOL_VERSION: u32 = 1;
const HELLO_LEN: usize = 16;

fn send_errno(e: Errno) -> SendError {
    match e {
        Errno::EPIPE | Errno::ECONNRESET | Errno::ENOTCONN | Errno::ESHUTDOWN => {
            SendError::Disconnected
        }
        e => SendError::Io(e),
    }
}

fn recv_errno(e: Errno) -> RecvError {
    match e {
        Errno::ECONNRESET | Errno::ENOTCONN => RecvError::Disconnected,
        e => RecvError::Io(e),
    }
}

/// Waits until `fd` has `events` or `deadline` passes; `None` means do not wait at all.
/// Returns whether it is ready (an error or hang-up counts as ready: the next call reports it).
fn wait_for(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Option<Instant>,
) -> Result<bool, Errno> {
    loop {
        let timeout = match deadline {
            None => TimeSpec::new(0, 0),
            Some(d) => TimeSpec::from_duration(d.saturating_duration_since(Instant::now())),
        };
        let mut fds = [PollFd::new(fd, events)];
        match nix::poll::ppoll(&mut fds, Some(timeout), None) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The sending half of a framed stream (`pipe`, `uds`, `tcp`).
#[derive(Debug)]
pub struct StreamTx {
    fd: OwnedFd,
    /// For a FIFO: a second, non-blocking open of the same FIFO, used by `try_send`.
    nonblocking: Option<OwnedFd>,
    socket: bool,
    max_frame: usize,
    /// Unsent tail of a frame that `try_send` accepted but could not write whole.
    pending: Vec<u8>,
    pending_off: usize,
    /// Where `send_batch` copies small frames (reused).
    stage: Vec<u8>,
}

impl StreamTx {
    fn new_socket(fd: OwnedFd, max_frame: usize) -> Self {
        StreamTx {
            fd,
            nonblocking: None,
            socket: true,
            max_frame,
            pending: Vec::new(),
            pending_off: 0,
            stage: Vec::new(),
        }
    }

    fn new_fifo(fd: OwnedFd, nonblocking: OwnedFd, max_frame: usize) -> Self {
        StreamTx {
            fd,
            nonblocking: Some(nonblocking),
            socket: false,
            max_frame,
            pending: Vec::new(),
            pending_off: 0,
            stage: Vec::new(),
        }
    }

    /// The blocking descriptor, for the bare baselines in [`crate::baseline`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Writes with the same system call `send` uses (`sendmsg` on a socket, `writev` on a
    /// FIFO), blocking; returns the bytes written.
    pub(crate) fn write_blocking(&self, iov: &[IoSlice<'_>]) -> Result<usize, Errno> {
        if self.socket {
            sendmsg::<()>(self.fd.as_raw_fd(), iov, &[], MsgFlags::MSG_NOSIGNAL, None)
        } else {
            nix::sys::uio::writev(&self.fd, iov)
        }
    }

    fn write_nonblocking(&self, iov: &[IoSlice<'_>]) -> Result<usize, Errno> {
        match &self.nonblocking {
            Some(fd) => nix::sys::uio::writev(fd, iov),
            None => sendmsg::<()>(
                self.fd.as_raw_fd(),
                iov,
                &[],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                None,
            ),
        }
    }

    fn write_all_blocking(&self, head: &[u8], body: &[u8]) -> Result<(), SendError> {
        self.write_all_parts(&[head, body])
    }

    /// Writes all of `parts`, in order, blocking, at most [`SLICES`] slices per system
    /// call, resuming a part the kernel took only some of. Allocates nothing: a `send` is
    /// this with two parts.
    fn write_all_parts(&self, parts: &[&[u8]]) -> Result<(), SendError> {
        let (mut i, mut off) = (0usize, 0usize);
        let mut iov = [IoSlice::new(&[]); SLICES];
        while i < parts.len() {
            let k = (parts.len() - i).min(SLICES);
            iov[0] = IoSlice::new(&parts[i][off..]);
            for (slot, part) in iov[1..k].iter_mut().zip(&parts[i + 1..i + k]) {
                *slot = IoSlice::new(part);
            }
            match self.write_blocking(&iov[..k]) {
                Ok(mut n) => {
                    // Past the parts written whole, into the one written in part.
                    while i < parts.len() && n >= parts[i].len() - off {
                        n -= parts[i].len() - off;
                        i += 1;
                        off = 0;
                    }
                    off += n;
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    wait_for(
                        self.fd.as_fd(),
                        PollFlags::POLLOUT,
                        Some(Instant::now() + Duration::from_secs(1)),
                    )
                    .map_err(SendError::Io)?;
                }
                Err(e) => return Err(send_errno(e)),
            }
        }
        Ok(())
    }

    fn check_len(&self, frame: &[u8]) -> Result<[u8; HEADER], SendError> {
        if frame.len() > self.max_frame {
            return Err(SendError::FrameTooLarge {
                len: frame.len(),
                max: self.max_frame,
            });
        }
        // The maximum is at most u32::MAX - 8 (checked in `Endpoint::prepare`), so this fits.
        Ok((frame.len() as u32).to_le_bytes())
    }

    fn has_pending(&self) -> bool {
        self.pending_off < self.pending.len()
    }

    /// Pushes out the unsent tail of an earlier `try_send`; `Ok(false)` if some is left.
    fn flush_nonblocking(&mut self) -> Result<bool, SendError> {
        while self.has_pending() {
            match self.write_nonblocking(&[IoSlice::new(&self.pending[self.pending_off..])]) {
                Ok(n) => self.pending_off += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(false),
                Err(e) => return Err(send_errno(e)),
            }
        }
        self.pending.clear();
        self.pending_off = 0;
        Ok(true)
    }

    fn send_raw(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.flush_pending()?;
        self.write_all_blocking(bytes, &[])
    }

    /// Blocks until every byte accepted by earlier `try_send` calls is written.
    fn flush_pending(&mut self) -> Result<(), SendError> {
        if self.has_pending() {
            let (off, pending) = (self.pending_off, std::mem::take(&mut self.pending));
            let res = self.write_all_blocking(&pending[off..], &[]);
            self.pending = pending;
            self.pending.clear();
            self.pending_off = 0;
            res?;
        }
        Ok(())
    }
}

impl crate::Tx for StreamTx {
    fn send(&mut self, frame: &[u8]) -> Result<(), SendError> {
        let header = self.check_len(frame)?;
        self.flush_pending()?;
        self.write_all_blocking(&header, frame)
    }

    fn send_batch(&mut self, frames: &[&[u8]]) -> Result<(), SendError> {
        let headers = frames
            .iter()
            .map(|f| self.check_len(f))
            .collect::<Result<Vec<_>, _>>()?;
        self.flush_pending()?;
        // Small frames are copied, with their headers, into one staging buffer (a slice
        // per frame costs the kernel more than the copy); a large one goes as its own
        // two slices.
        let mut stage = std::mem::take(&mut self.stage);
        stage.clear();
        let mut segments: Vec<Segment> = Vec::new();
        for (i, (h, f)) in headers.iter().zip(frames).enumerate() {
            if f.len() < COALESCE {
                let start = stage.len();
                stage.extend_from_slice(h);
                stage.extend_from_slice(f);
                match segments.last_mut() {
                    Some(Segment::Staged(_, end)) if *end == start => *end = stage.len(),
                    _ => segments.push(Segment::Staged(start, stage.len())),
                }
            } else {
                segments.push(Segment::Frame(i));
            }
        }
        let parts: Vec<&[u8]> = segments
            .iter()
            .flat_map(|s| match *s {
                Segment::Staged(a, b) => [&stage[a..b], &[][..]],
                Segment::Frame(i) => [&headers[i][..], frames[i]],
            })
            .filter(|p| !p.is_empty())
            .collect();
        let sent = self.write_all_parts(&parts);
        drop(parts);
        self.stage = stage;
        sent
    }

    fn flush(&mut self) -> Result<(), SendError> {
        self.flush_pending()
    }

    fn try_send(&mut self, frame: &[u8]) -> Result<(), TrySendError> {
        let header = self.check_len(frame)?;
        if !self.flush_nonblocking()? {
            return Err(TrySendError::Full);
        }
        let total = HEADER + frame.len();
        let written = loop {
            match self.write_nonblocking(&[IoSlice::new(&header), IoSlice::new(frame)]) {
                Ok(n) => break n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Err(TrySendError::Full),
                Err(e) => return Err(send_errno(e).into()),
            }
        };
        if written < total {
            // Part of the frame is in the kernel already: the frame is accepted and its
            // tail goes out before anything else. The buffer grows to the largest tail
            // seen and is then reused.
            self.pending.clear();
            if written < HEADER {
                self.pending.extend_from_slice(&header[written..]);
                self.pending.extend_from_slice(frame);
            } else {
                self.pending.extend_from_slice(&frame[written - HEADER..]);
            }
            self.pending_off = 0;
        }
        Ok(())
    }

    fn max_frame_len(&self) -> usize {
        self.max_frame
    }
}

impl Drop for StreamTx {
    fn drop(&mut self) {
        if self.socket {
            // The receiving half holds a duplicate of this socket; shutting down the write
            // direction tells the peer we are done even while that half lives on.
            let _ = shutdown(self.fd.as_raw_fd(), Shutdown::Write);
        }
    }
}

/// The receiving half of a framed stream (`pipe`, `uds`, `tcp`).
#[derive(Debug)]
pub struct StreamRx {
    fd: OwnedFd,
    /// Received bytes not yet handed out live in `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Length of the frame whose header has been consumed but whose payload has not.
    frame_len: Option<usize>,
    max_frame: usize,
    broken: bool,
    /// Read as much as the buffer takes while frames are small; after a large frame read
    /// only the next header, so a large payload goes from the kernel straight to the
    /// caller's buffer instead of through this one.
    read_ahead: bool,
    /// Length of the last frame received: the guess for the next one in large mode.
    last_len: usize,
}

/// Outcome of a bounded receive that found no whole frame in time.
enum NotYet {
    Waiting,
    Failed(RecvError),
}

impl From<RecvError> for NotYet {
    fn from(e: RecvError) -> Self {
        NotYet::Failed(e)
    }
}

impl StreamRx {
    fn new(fd: OwnedFd, max_frame: usize) -> Self {
        StreamRx {
            fd,
            buf: vec![0; RX_BUF],
            start: 0,
            end: 0,
            frame_len: None,
            max_frame,
            broken: false,
            read_ahead: true,
            last_len: 0,
        }
    }

    /// The descriptor, for the bare baselines in [`crate::baseline`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn avail(&self) -> usize {
        self.end - self.start
    }

    /// Makes room for `need` bytes from `start` on, moving or growing the buffer.
    fn make_room(&mut self, need: usize) {
        if self.start + need <= self.buf.len() {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if need > self.buf.len() {
            // Only a frame larger than 64 KiB received with try_recv/recv_timeout gets here;
            // `need` is bounded by the checked maximum frame length.
            self.buf.resize(need, 0);
        }
    }

    /// One `read` into the free part of the buffer. `Ok(0)` never comes back: end of
    /// stream is `Disconnected`.
    fn read_some(&mut self) -> Result<usize, RecvError> {
        self.read_at_most(usize::MAX)
    }

    /// One `read` of at most `limit` bytes into the free part of the buffer.
    fn read_at_most(&mut self, limit: usize) -> Result<usize, RecvError> {
        let stop = self.buf.len().min(self.end.saturating_add(limit));
        loop {
            match nix::unistd::read(&self.fd, &mut self.buf[self.end..stop]) {
                Ok(0) => return Err(RecvError::Disconnected),
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(Errno::EINTR) => {}
                Err(e) => return Err(recv_errno(e)),
            }
        }
    }

    /// Parses the next header if enough bytes are there.
    fn header(&mut self) -> Result<Option<usize>, RecvError> {
        if self.broken {
            return Err(RecvError::Corrupt(Corruption::Broken));
        }
        if let Some(len) = self.frame_len {
            return Ok(Some(len));
        }
        if self.avail() < HEADER {
            return Ok(None);
        }
        let mut h = [0u8; HEADER];
        h.copy_from_slice(&self.buf[self.start..self.start + HEADER]);
        let len = u32::from_le_bytes(h) as usize;
        if len > self.max_frame {
            self.broken = true;
            return Err(RecvError::Corrupt(Corruption::LengthTooLarge {
                len: len as u64,
                max: self.max_frame,
            }));
        }
        self.start += HEADER;
        self.frame_len = Some(len);
        Ok(Some(len))
    }

    fn take(&mut self, out: &mut [u8], len: usize) -> usize {
        out[..len].copy_from_slice(&self.buf[self.start..self.start + len]);
        self.start += len;
        self.frame_len = None;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        len
    }

    /// Receives a frame, waiting until `deadline` (`None`: not at all).
    fn recv_until(&mut self, out: &mut [u8], deadline: Option<Instant>) -> Result<usize, NotYet> {
        loop {
            let need = match self.header()? {
                Some(len) if out.len() < len => {
                    return Err(RecvError::Truncated { needed: len }.into())
                }
                Some(len) if self.avail() >= len => return Ok(self.take(out, len)),
                Some(len) => len,
                None => HEADER,
            };
            self.make_room(need);
            if !wait_for(self.fd.as_fd(), PollFlags::POLLIN, deadline).map_err(RecvError::Io)? {
                return Err(NotYet::Waiting);
            }
            self.read_some()?;
        }
    }

    /// Reads exactly `n` raw bytes (no framing), waiting until `deadline`. It never reads
    /// past them, so whatever the peer sends next stays in the kernel: after the
    /// handshake the buffer is empty and the bare baselines may read the descriptor.
    fn read_raw(&mut self, n: usize, deadline: Instant) -> Result<&[u8], NotYet> {
        self.make_room(n);
        while self.avail() < n {
            if !wait_for(self.fd.as_fd(), PollFlags::POLLIN, Some(deadline))
                .map_err(RecvError::Io)?
            {
                return Err(NotYet::Waiting);
            }
            self.read_at_most(n - self.avail())?;
        }
        let s = self.start;
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(&self.buf[s..s + n])
    }

    /// After a large frame, with nothing buffered: one `readv` fills the next header and,
    /// straight into `out`, as much payload as the last frame had, so a stream of
    /// equal large frames makes the same system calls as a bare `read`. Bytes read past
    /// the frame go back into the buffer; so does the payload of a frame too large for
    /// `out`, which stays queued (`Truncated`). `None`: not even a header came, the
    /// ordinary path goes on from what was read.
    fn recv_large(&mut self, out: &mut [u8]) -> Result<Option<usize>, RecvError> {
        let guess = self.last_len.min(out.len());
        self.start = 0;
        self.end = 0;
        let n = loop {
            let mut iov = [
                IoSliceMut::new(&mut self.buf[..HEADER]),
                IoSliceMut::new(&mut out[..guess]),
            ];
            match nix::sys::uio::readv(&self.fd, &mut iov) {
                Ok(0) => return Err(RecvError::Disconnected),
                Ok(n) => break n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(recv_errno(e)),
            }
        };
        if n < HEADER {
            self.end = n;
            return Ok(None);
        }
        self.end = HEADER;
        let Some(len) = self.header()? else {
            return Ok(None);
        };
        let got = n - HEADER;
        if len > out.len() || got > len {
            // Keep what does not belong to this call: the whole payload read so far when
            // the frame does not fit `out`, else the start of the next frame.
            let keep_from = if len > out.len() { 0 } else { len };
            self.make_room(got - keep_from);
            self.buf[self.end..self.end + got - keep_from].copy_from_slice(&out[keep_from..got]);
            self.end += got - keep_from;
            if len > out.len() {
                return Err(RecvError::Truncated { needed: len });
            }
            self.frame_len = None;
        } else {
            self.read_payload(&mut out[..len], got)?;
            self.frame_len = None;
        }
        self.read_ahead = len <= RX_BUF / 2;
        self.last_len = len;
        Ok(Some(len))
    }

    /// Reads the rest of a frame, `payload[got..]`, straight from the descriptor. A
    /// failure part-way leaves the stream out of step, so it is marked broken.
    fn read_payload(&mut self, payload: &mut [u8], mut got: usize) -> Result<(), RecvError> {
        while got < payload.len() {
            match nix::unistd::read(&self.fd, &mut payload[got..]) {
                Ok(0) => {
                    self.broken = true;
                    return Err(RecvError::Disconnected);
                }
                Ok(n) => got += n,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(recv_errno(e));
                }
            }
        }
        Ok(())
    }

    /// Bytes received from the kernel but not yet handed out (0 right after setup).
    pub fn buffered(&self) -> usize {
        self.avail()
    }
}

impl crate::Rx for StreamRx {
    fn recv(&mut self, out: &mut [u8]) -> Result<usize, RecvError> {
        if !self.read_ahead && self.avail() == 0 && self.frame_len.is_none() && !self.broken {
            if let Some(len) = self.recv_large(out)? {
                return Ok(len);
            }
        }
        let len = loop {
            if let Some(len) = self.header()? {
                break len;
            }
            self.make_room(HEADER);
            if self.read_ahead {
                self.read_some()?;
            } else {
                self.read_at_most(HEADER - self.avail())?;
            }
        };
        if out.len() < len {
            return Err(RecvError::Truncated { needed: len });
        }
        self.read_ahead = len <= RX_BUF / 2;
        self.last_len = len;
        if self.read_ahead {
            // A small frame: read into the buffer, which may bring the next frames too.
            self.make_room(len);
            while self.avail() < len {
                self.read_some()?;
            }
            return Ok(self.take(out, len));
        }
        // A large frame: what is buffered already is copied, the rest is read straight
        // into the caller's buffer.
        let have = self.avail().min(len);
        let got = self.take(out, have);
        self.frame_len = Some(len);
        self.read_payload(&mut out[..len], got)?;
        self.frame_len = None;
        Ok(len)
    }

    fn try_recv(&mut self, out: &mut [u8]) -> Result<usize, TryRecvError> {
        self.recv_until(out, None).map_err(|e| match e {
            NotYet::Waiting => TryRecvError::Empty,
            NotYet::Failed(e) => TryRecvError::Recv(e),
        })
    }

    fn recv_timeout(
        &mut self,
        out: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, RecvTimeoutError> {
        self.recv_until(out, Some(Instant::now() + timeout))
            .map_err(|e| match e {
                NotYet::Waiting => RecvTimeoutError::Timeout,
                NotYet::Failed(e) => RecvTimeoutError::Recv(e),
            })
    }

    fn max_frame_len(&self) -> usize {
        self.max_frame
    }
}

/// Both sides send a hello and check the peer's before any frame.
fn handshake(
    mut tx: StreamTx,
    mut rx: StreamRx,
    target: &str,
    deadline: Instant,
) -> Result<(StreamTx, StreamRx), SetupError> {
    let mut hello = [0u8; HELLO_LEN];
    hello[..8].copy_from_slice(HELLO_MAGIC);
    hello[8..12].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    hello[12..16].copy_from_slice(&(tx.max_frame as u32).to_le_bytes());
    let fail = |reason: String| SetupError::Handshake {
        target: target.to_string(),
        reason,
    };
    tx.send_raw(&hello)
        .map_err(|e| fail(format!("sending hello: {e}")))?;
    let got = match rx.read_raw(HELLO_LEN, deadline) {
        Ok(b) => b,
        Err(NotYet::Waiting) => return Err(fail("no hello from the peer in time".into())),
        Err(NotYet::Failed(e)) => return Err(fail(format!("reading hello: {e}"))),
    };
    if &got[..8] != HELLO_MAGIC {
        return Err(fail("the peer is not an ipcbench endpoint".into()));
    }
    let mut word = [0u8; 4];
    word.copy_from_slice(&got[8..12]);
    let version = u32::from_le_bytes(word);
    word.copy_from_slice(&got[12..16]);
    let peer_max = u32::from_le_bytes(word) as usize;
    if version != PROTOCOL_VERSION {
        return Err(fail(format!(
            "protocol version {version}, expected {PROTOCOL_VERSION}"
        )));
    }
    if peer_max != rx.max_frame {
        return Err(fail(format!(
            "peer's max frame {peer_max}, ours {}",
            rx.max_frame
        )));
    }
    Ok((tx, rx))
}

fn wrong_kind(expected: TransportKind, found: &Endpoint) -> SetupError {
    SetupError::WrongKind {
        expected,
        found: found.kind(),
    }
}

fn timeout_error(
    what: &'static str,
    target: impl std::fmt::Display,
    timeout: Duration,
) -> SetupError {
    SetupError::Timeout {
        what,
        target: target.to_string(),
        timeout_ms: timeout.as_millis(),
    }
}

// ---------------------------------------------------------------------------------------
// pipe

/// Transport over two named FIFOs, one per direction.
#[derive(Debug, Clone, Copy)]
pub struct Pipe;

/// Opens our read FIFO and our write FIFO. Opening a FIFO's write end without a reader
/// fails with ENXIO when non-blocking, so we open our read end first (which never
/// blocks non-blocking) and retry the write end until the peer has opened its read end.
fn open_fifos(
    read: &Path,
    write: &Path,
    max_frame: usize,
    timeout: Duration,
) -> Result<(StreamTx, StreamRx), SetupError> {
    let deadline = Instant::now() + timeout;
    let cloexec = OFlag::O_CLOEXEC;
    let rfd = open(
        read,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | cloexec,
        Mode::empty(),
    )
    .map_err(|e| SetupError::io("open FIFO", read.display(), e))?;
    let nb_wfd = loop {
        match open(
            write,
            OFlag::O_WRONLY | OFlag::O_NONBLOCK | cloexec,
            Mode::empty(),
        ) {
            Ok(fd) => break fd,
            Err(Errno::ENXIO) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(Errno::ENXIO) => return Err(timeout_error("open FIFO", write.display(), timeout)),
            Err(e) => return Err(SetupError::io("open FIFO", write.display(), e)),
        }
    };
    // A second, blocking open of the write end: `send` sleeps in the kernel on a full pipe.
    let wfd = open(
        write,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | cloexec,
        Mode::empty(),
    )
    .map_err(|e| SetupError::io("open FIFO", write.display(), e))?;
    fcntl(&wfd, FcntlArg::F_SETFL(OFlag::empty()))
        .map_err(|e| SetupError::io("fcntl", write.display(), e))?;
    fcntl(&rfd, FcntlArg::F_SETFL(OFlag::empty()))
        .map_err(|e| SetupError::io("fcntl", read.display(), e))?;
    let tx = StreamTx::new_fifo(wfd, nb_wfd, max_frame);
    let rx = StreamRx::new(rfd, max_frame);
    handshake(tx, rx, &read.display().to_string(), deadline)
}

impl Transport for Pipe {
    const KIND: TransportKind = TransportKind::Pipe;
    type Tx = StreamTx;
    type Rx = StreamRx;
    type Listener = Endpoint;

    fn listen(endpoint: &Endpoint) -> Result<Endpoint, SetupError> {
        match endpoint {
            Endpoint::Pipe { .. } => Ok(endpoint.clone()),
            other => Err(wrong_kind(Self::KIND, other)),
        }
    }

    fn resolved(listener: &Endpoint) -> Endpoint {
        listener.clone()
    }

    fn accept(listener: Endpoint, timeout: Duration) -> Result<(StreamTx, StreamRx), SetupError> {
        match &listener {
            Endpoint::Pipe {
                a_to_b,
                b_to_a,
                max_frame,
            } => open_fifos(b_to_a, a_to_b, *max_frame as usize, timeout),
            other => Err(wrong_kind(Self::KIND, other)),
        }
    }

    fn try_accept(
        listener: Endpoint,
        timeout: Duration,
    ) -> Result<Result<(StreamTx, StreamRx), Endpoint>, SetupError> {
        let Endpoint::Pipe { a_to_b, .. } = &listener else {
            return Err(wrong_kind(Self::KIND, &listener));
        };
        // The peer opens its read end (our write FIFO) first: until then a non-blocking
        // open for writing fails with ENXIO.
        match open(
            a_to_b,
            OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(probe) => {
                drop(probe);
                Self::accept(listener, timeout).map(Ok)
            }
            Err(Errno::ENXIO) => Ok(Err(listener)),
            Err(e) => Err(SetupError::io("open FIFO", a_to_b.display(), e)),
        }
    }

    fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<(StreamTx, StreamRx), SetupError> {
        match endpoint {
            Endpoint::Pipe {
                a_to_b,
                b_to_a,
                max_frame,
            } => open_fifos(a_to_b, b_to_a, *max_frame as usize, timeout),
            other => Err(wrong_kind(Self::KIND, other)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// sockets

fn socket_halves(
    fd: OwnedFd,
    max_frame: usize,
    target: &str,
    deadline: Instant,
) -> Result<(StreamTx, StreamRx), SetupError> {
    let dup = fd
        .try_clone()
        .map_err(|e| SetupError::io("dup socket", target, e))?;
    handshake(
        StreamTx::new_socket(fd, max_frame),
        StreamRx::new(dup, max_frame),
        target,
        deadline,
    )
}

/// Waits for a connection on a non-blocking listener.
fn accept_within<L: AsFd, S>(
    listener: &L,
    accept: impl Fn(&L) -> std::io::Result<S>,
    target: &str,
    timeout: Duration,
) -> Result<S, SetupError> {
    let deadline = Instant::now() + timeout;
    loop {
        let ready = wait_for(listener.as_fd(), PollFlags::POLLIN, Some(deadline))
            .map_err(|e| SetupError::io("poll", target, e))?;
        if !ready {
            return Err(timeout_error("accept on", target, timeout));
        }
        match accept(listener) {
            Ok(s) => return Ok(s),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SetupError::io("accept on", target, e)),
        }
    }
}

/// A non-blocking accept's result: `None` if no peer is waiting.
fn waiting_peer<S>(
    accepted: std::io::Result<S>,
    target: &dyn std::fmt::Display,
) -> Result<Option<S>, SetupError> {
    match accepted {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::Interrupted =>
        {
            Ok(None)
        }
        Err(e) => Err(SetupError::io("accept on", target, e)),
    }
}

/// A connection taken from a listener whose peer has not sent its hello yet.
#[derive(Debug)]
struct Pending<S> {
    stream: S,
    since: Instant,
}

/// `try_accept`'s step on a socket listener: takes a waiting connection if there is one
/// (kept in `pending`) and hands it over only once the peer's whole hello has arrived, so
/// the handshake that follows never waits for a peer that is slow to be scheduled (32
/// workers starting at once on two cores: a blocking handshake held the gateway for
/// milliseconds per worker). A peer that closes before its hello is forgotten; one whose
/// hello takes longer than `timeout` from its connection is an error.
fn hello_arrived<S: AsFd, A>(
    pending: &mut Option<Pending<S>>,
    accept: impl FnOnce() -> std::io::Result<(S, A)>,
    target: &dyn std::fmt::Display,
    timeout: Duration,
) -> Result<Option<S>, SetupError> {
    let p = match pending.take() {
        Some(p) => p,
        None => match waiting_peer(accept(), target)? {
            Some((stream, _)) => Pending {
                stream,
                since: Instant::now(),
            },
            None => return Ok(None),
        },
    };
    let mut peek = [0u8; HELLO_LEN];
    let fd = p.stream.as_fd().as_raw_fd();
    match nix::sys::socket::recv(fd, &mut peek, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
        Ok(n) if n >= HELLO_LEN => return Ok(Some(p.stream)),
        // The peer left before saying hello: the slot waits for another.
        Ok(0) => return Ok(None),
        Ok(_) | Err(Errno::EAGAIN | Errno::EINTR) => {}
        Err(e) => return Err(SetupError::io("peek at the hello from", target, e)),
    }
    if p.since.elapsed() >= timeout {
        return Err(SetupError::Handshake {
            target: target.to_string(),
            reason: "no hello from the peer in time".into(),
        });
    }
    *pending = Some(p);
    Ok(None)
}

/// The descriptor `try_accept` waits on: the held peer's (for its hello) if there is one,
/// else the listener's (for a connection).
fn watched<'a, S: AsFd>(
    pending: &'a Option<Pending<S>>,
    listener: &'a impl AsFd,
) -> BorrowedFd<'a> {
    match pending {
        Some(p) => p.stream.as_fd(),
        None => listener.as_fd(),
    }
}

/// A blocking accept's connection: the peer `try_accept` already holds, if any, else the
/// next to connect within `timeout`.
fn held_or_next<L: AsFd, S, A>(
    pending: Option<Pending<S>>,
    listener: &L,
    accept: impl Fn(&L) -> std::io::Result<(S, A)>,
    target: &str,
    timeout: Duration,
) -> Result<S, SetupError> {
    match pending {
        Some(p) => Ok(p.stream),
        None => Ok(accept_within(listener, accept, target, timeout)?.0),
    }
}

/// Retries `connect` while the peer is not listening yet.
fn connect_within<S>(
    connect: impl Fn(Duration) -> std::io::Result<S>,
    target: &str,
    timeout: Duration,
) -> Result<S, SetupError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match connect(left.max(Duration::from_millis(1))) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::Interrupted
                ) && !left.is_zero() =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) if left.is_zero() => {
                return Err(SetupError::Timeout {
                    what: "connect to",
                    target: format!("{target} ({e})"),
                    timeout_ms: timeout.as_millis(),
                })
            }
            Err(e) => return Err(SetupError::io("connect to", target, e)),
        }
    }
}

/// Transport over a Unix domain stream socket.
#[derive(Debug, Clone, Copy)]
pub struct Uds;

/// A bound Unix socket waiting for its peer.
#[derive(Debug)]
pub struct UdsListener {
    listener: UnixListener,
    endpoint: Endpoint,
    /// A peer `try_accept` took whose hello has not arrived yet.
    pending: Option<Pending<UnixStream>>,
}

impl Transport for Uds {
    const KIND: TransportKind = TransportKind::Uds;
    type Tx = StreamTx;
    type Rx = StreamRx;
    type Listener = UdsListener;

    fn listen(endpoint: &Endpoint) -> Result<UdsListener, SetupError> {
        let Endpoint::Uds { path, .. } = endpoint else {
            return Err(wrong_kind(Self::KIND, endpoint));
        };
        let listener =
            UnixListener::bind(path).map_err(|e| SetupError::io("bind", path.display(), e))?;
        // The socket file is the owner's alone, whatever the umask (its directory is
        // private too).
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| SetupError::io("chmod 0600", path.display(), e))?;
        }
        listener
            .set_nonblocking(true)
            .map_err(|e| SetupError::io("set non-blocking", path.display(), e))?;
        Ok(UdsListener {
            listener,
            endpoint: endpoint.clone(),
            pending: None,
        })
    }

    fn resolved(listener: &UdsListener) -> Endpoint {
        listener.endpoint.clone()
    }

    fn accept(
        listener: UdsListener,
        timeout: Duration,
    ) -> Result<(StreamTx, StreamRx), SetupError> {
        let Endpoint::Uds { path, max_frame } = &listener.endpoint else {
            return Err(wrong_kind(Self::KIND, &listener.endpoint));
        };
        let target = path.display().to_string();
        let deadline = Instant::now() + timeout;
        let stream = held_or_next(
            listener.pending,
            &listener.listener,
            |l| l.accept(),
            &target,
            timeout,
        )?;
        uds_accepted(stream, path, *max_frame, deadline)
    }

    fn accept_fd(listener: &UdsListener) -> Option<BorrowedFd<'_>> {
        Some(watched(&listener.pending, &listener.listener))
    }

    fn try_accept(
        mut listener: UdsListener,
        timeout: Duration,
    ) -> Result<Result<(StreamTx, StreamRx), UdsListener>, SetupError> {
        let Endpoint::Uds { path, max_frame } = &listener.endpoint else {
            return Err(wrong_kind(Self::KIND, &listener.endpoint));
        };
        let got = hello_arrived(
            &mut listener.pending,
            || listener.listener.accept(),
            &path.display(),
            timeout,
        )?;
        match got {
            Some(stream) => {
                uds_accepted(stream, path, *max_frame, Instant::now() + timeout).map(Ok)
            }
            None => Ok(Err(listener)),
        }
    }

    fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<(StreamTx, StreamRx), SetupError> {
        let Endpoint::Uds { path, max_frame } = endpoint else {
            return Err(wrong_kind(Self::KIND, endpoint));
        };
        let target = path.display().to_string();
        let deadline = Instant::now() + timeout;
        let stream = connect_within(|_| UnixStream::connect(path), &target, timeout)?;
        socket_halves(stream.into(), *max_frame as usize, &target, deadline)
    }
}

/// An accepted Unix socket: its file is removed (the connection lives on without it), then
/// the handshake.
fn uds_accepted(
    stream: UnixStream,
    path: &Path,
    max_frame: u32,
    deadline: Instant,
) -> Result<(StreamTx, StreamRx), SetupError> {
    let target = path.display().to_string();
    let _ = std::fs::remove_file(path);
    stream
        .set_nonblocking(false)
        .map_err(|e| SetupError::io("set blocking", &target, e))?;
    socket_halves(stream.into(), max_frame as usize, &target, deadline)
}

/// An accepted TCP connection: blocking, `TCP_NODELAY`, then the handshake.
fn tcp_accepted(
    stream: TcpStream,
    target: &str,
    max_frame: u32,
    deadline: Instant,
) -> Result<(StreamTx, StreamRx), SetupError> {
    stream
        .set_nonblocking(false)
        .map_err(|e| SetupError::io("set blocking", target, e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| SetupError::io("set TCP_NODELAY", target, e))?;
    socket_halves(stream.into(), max_frame as usize, target, deadline)
}

/// Transport over TCP (loopback unless configured otherwise), with `TCP_NODELAY`.
#[derive(Debug, Clone, Copy)]
pub struct Tcp;

/// A bound TCP socket waiting for its peer.
#[derive(Debug)]
pub struct TcpListenerHalf {
    listener: TcpListener,
    endpoint: Endpoint,
    /// A peer `try_accept` took whose hello has not arrived yet.
    pending: Option<Pending<TcpStream>>,
}

impl Transport for Tcp {
    const KIND: TransportKind = TransportKind::Tcp;
    type Tx = StreamTx;
    type Rx = StreamRx;
    type Listener = TcpListenerHalf;

    fn listen(endpoint: &Endpoint) -> Result<TcpListenerHalf, SetupError> {
        let Endpoint::Tcp { addr, max_frame } = endpoint else {
            return Err(wrong_kind(Self::KIND, endpoint));
        };
        let listener = TcpListener::bind(addr).map_err(|e| SetupError::io("bind", addr, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| SetupError::io("set non-blocking", addr, e))?;
        let local = listener
            .local_addr()
            .map_err(|e| SetupError::io("getsockname", addr, e))?;
        Ok(TcpListenerHalf {
            listener,
            endpoint: Endpoint::Tcp {
                addr: local,
                max_frame: *max_frame,
            },
            pending: None,
        })
    }

    fn resolved(listener: &TcpListenerHalf) -> Endpoint {
        listener.endpoint.clone()
    }

    fn accept(
        listener: TcpListenerHalf,
        timeout: Duration,
    ) -> Result<(StreamTx, StreamRx), SetupError> {
        let Endpoint::Tcp { addr, max_frame } = &listener.endpoint else {
            return Err(wrong_kind(Self::KIND, &listener.endpoint));
        };
        let target = addr.to_string();
        let deadline = Instant::now() + timeout;
        let stream = held_or_next(
            listener.pending,
            &listener.listener,
            |l| l.accept(),
            &target,
            timeout,
        )?;
        tcp_accepted(stream, &target, *max_frame, deadline)
    }

    fn accept_fd(listener: &TcpListenerHalf) -> Option<BorrowedFd<'_>> {
        Some(watched(&listener.pending, &listener.listener))
    }

    fn try_accept(
        mut listener: TcpListenerHalf,
        timeout: Duration,
    ) -> Result<Result<(StreamTx, StreamRx), TcpListenerHalf>, SetupError> {
        let Endpoint::Tcp { addr, max_frame } = &listener.endpoint else {
            return Err(wrong_kind(Self::KIND, &listener.endpoint));
        };
        let got = hello_arrived(
            &mut listener.pending,
            || listener.listener.accept(),
            addr,
            timeout,
        )?;
        match got {
            Some(stream) => tcp_accepted(
                stream,
                &addr.to_string(),
                *max_frame,
                Instant::now() + timeout,
            )
            .map(Ok),
            None => Ok(Err(listener)),
        }
    }

    fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<(StreamTx, StreamRx), SetupError> {
        let Endpoint::Tcp { addr, max_frame } = endpoint else {
            return Err(wrong_kind(Self::KIND, endpoint));
        };
        if addr.port() == 0 {
            return Err(SetupError::Invalid(format!(
                "tcp endpoint {addr} has no port yet: connect to the resolved endpoint"
            )));
        }
        let target = addr.to_string();
        let deadline = Instant::now() + timeout;
        let stream = connect_within(
            |left| TcpStream::connect_timeout(addr, left),
            &target,
            timeout,
        )?;
        stream
            .set_nodelay(true)
            .map_err(|e| SetupError::io("set TCP_NODELAY", &target, e))?;
        socket_halves(stream.into(), *max_frame as usize, &target, deadline)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Rx, Tx};
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    fn pair(max: usize) -> (StreamTx, StreamRx) {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        (StreamTx::new_socket(a, max), StreamRx::new(b, max))
    }

    #[test]
    fn a_batch_arrives_whole_and_in_order_even_past_the_socket_buffer() {
        let (mut tx, mut rx) = pair(4096);
        // 3000 frames of 1-3000 bytes (4.5 MB): far past one socket buffer and past
        // one write's slices, so the writes stop in the middle of slices.
        let frames: Vec<Vec<u8>> = (1..=3000u32)
            .map(|i| (0..i).map(|k| (k ^ i) as u8).collect())
            .collect();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            for _ in 0..3000 {
                let n = rx.recv(&mut buf).unwrap();
                got.push(buf[..n].to_vec());
            }
            got
        });
        let parts: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        tx.send_batch(&parts).unwrap();
        assert_eq!(reader.join().unwrap(), frames);
    }

    #[test]
    fn a_batch_with_a_frame_over_the_maximum_sends_nothing() {
        let (mut tx, mut rx) = pair(64);
        let big = [0u8; 65];
        let err = tx.send_batch(&[b"one", &big, b"three"]).unwrap_err();
        assert!(matches!(err, SendError::FrameTooLarge { len: 65, max: 64 }));
        tx.send(b"after").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after");
    }
}
