//! `attach`: clients joining a running container's stdio through its monitor.
//!
//! Main types: [`Frame`] (the wire format, `strata.attach.v1`), [`Hub`] (the monitor's side: a
//! unix socket in the container's directory, the clients attached to it, and the input they
//! send on its way to the container).
//!
//! Key design decision: there is no daemon to hold a container's stdio, so its monitor does.
//! It already reads every byte the container writes (for the log); it listens on
//! `attach.sock` and copies each chunk to every attached client as a frame. Clients send their
//! stdin, terminal size and signals as frames. Nothing the container does waits on a client:
//! output to a client that does not read is queued up to a bound, then the client is dropped;
//! input is queued and written as the container reads it, and clients are not read meanwhile
//! (backpressure instead of loss). Detach keys are the client's business: it just leaves.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::RuntimeError;

/// The protocol's name, sent first by every client.
pub const VERSION: &str = "strata.attach.v1";

/// The socket's file name in the container's directory.
pub const SOCKET: &str = "attach.sock";

/// Output queued for one client beyond which it is dropped (it stopped reading).
const CLIENT_QUEUE_LIMIT: usize = 8 << 20;

/// Input queued for the container beyond which clients are not read until it drains.
const INPUT_QUEUE_LIMIT: usize = 1 << 20;

/// One message between a client and the monitor: `[kind: u8][length: u32 BE][payload]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → monitor, first: the protocol version and which streams it wants.
    Hello {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    /// Client → monitor: bytes for the container's stdin.
    Stdin(Vec<u8>),
    /// Client → monitor: the client's terminal size (rows, columns).
    Resize(u16, u16),
    /// Client → monitor: a signal for the container's main process (`--sig-proxy`).
    Signal(i32),
    /// Monitor → client: the container's output (with a TTY, everything is stdout).
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Monitor → client, last: the container exited with this code (its state is recorded).
    Exit(i32),
}

const HELLO: u8 = b'H';
const STDIN: u8 = b'I';
const RESIZE: u8 = b'R';
const SIGNAL: u8 = b'S';
const STDOUT: u8 = b'1';
const STDERR: u8 = b'2';
const EXIT: u8 = b'X';

impl Frame {
    /// Appends the frame's bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let (kind, payload): (u8, std::borrow::Cow<[u8]>) = match self {
            Frame::Hello {
                stdin,
                stdout,
                stderr,
            } => {
                let mut text = VERSION.to_string();
                for (on, name) in [(stdin, " stdin"), (stdout, " stdout"), (stderr, " stderr")] {
                    if *on {
                        text.push_str(name);
                    }
                }
                (HELLO, text.into_bytes().into())
            }
            Frame::Stdin(d) => (STDIN, d.as_slice().into()),
            Frame::Resize(rows, cols) => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend_from_slice(&cols.to_be_bytes());
                (RESIZE, p.into())
            }
            Frame::Signal(n) => (SIGNAL, n.to_be_bytes().to_vec().into()),
            Frame::Stdout(d) => (STDOUT, d.as_slice().into()),
            Frame::Stderr(d) => (STDERR, d.as_slice().into()),
            Frame::Exit(code) => (EXIT, code.to_be_bytes().to_vec().into()),
        };
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Takes the first whole frame off the front of `buf`: `Ok(None)` until one has arrived,
    /// an error for bytes that are no frame of this protocol.
    pub fn take(buf: &mut Vec<u8>) -> Result<Option<Frame>, String> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > 16 << 20 {
            return Err(format!("attach frame of {len} bytes"));
        }
        if buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = buf[0];
        let payload: Vec<u8> = buf[5..5 + len].to_vec();
        buf.drain(..5 + len);
        let int = |p: &[u8]| -> Result<i32, String> {
            p.try_into()
                .map(i32::from_be_bytes)
                .map_err(|_| format!("attach frame {}: bad length {len}", kind as char))
        };
        Ok(Some(match kind {
            HELLO => {
                let text = String::from_utf8_lossy(&payload);
                let mut words = text.split(' ');
                if words.next() != Some(VERSION) {
                    return Err(format!("attach protocol {text:?}, want {VERSION}"));
                }
                let names: Vec<&str> = words.collect();
                Frame::Hello {
                    stdin: names.contains(&"stdin"),
                    stdout: names.contains(&"stdout"),
                    stderr: names.contains(&"stderr"),
                }
            }
            STDIN => Frame::Stdin(payload),
            RESIZE if len == 4 => Frame::Resize(
                u16::from_be_bytes([payload[0], payload[1]]),
                u16::from_be_bytes([payload[2], payload[3]]),
            ),
            SIGNAL => Frame::Signal(int(&payload)?),
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            EXIT => Frame::Exit(int(&payload)?),
            other => return Err(format!("attach frame of unknown kind {other:#x}")),
        }))
    }
}

/// The socket's address for a container directory: through an `O_PATH` descriptor of the
/// directory, so a long store path never meets the 108-byte limit of socket addresses.
struct ShortPath {
    _dir: OwnedFd,
    path: PathBuf,
}

fn short_path(dir: &Path) -> Result<ShortPath, RuntimeError> {
    let fd: OwnedFd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| RuntimeError::io(dir, e.into()))?;
    let path = PathBuf::from(format!("/proc/self/fd/{}/{SOCKET}", fd.as_raw_fd()));
    Ok(ShortPath { _dir: fd, path })
}

/// Binds `attach.sock` in `dir`, replacing a stale one; the listener and the socket's path.
fn bind(dir: &Path) -> Result<(UnixListener, PathBuf), RuntimeError> {
    let short = short_path(dir)?;
    let socket_path = dir.join(SOCKET);
    let _ = std::fs::remove_file(&short.path);
    let listener =
        UnixListener::bind(&short.path).map_err(|e| RuntimeError::io(&socket_path, e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| RuntimeError::io(&socket_path, e))?;
    Ok((listener, socket_path))
}

/// For a client about to start the container's monitor: the attach socket, bound, with this
/// client connected and `first` (its hello, its terminal size) sent. The monitor inherits the
/// listener ([`Hub::adopt`]).
pub fn preconnect(dir: &Path, first: &[Frame]) -> Result<(OwnedFd, UnixStream), RuntimeError> {
    let (listener, socket_path) = bind(dir)?;
    let mut client = connect(dir).map_err(|e| RuntimeError::io(&socket_path, e))?;
    let mut bytes = Vec::new();
    for f in first {
        f.encode_into(&mut bytes);
    }
    client
        .write_all(&bytes)
        .map_err(|e| RuntimeError::io(&socket_path, e))?;
    Ok((listener.into(), client))
}

/// Connects to the monitor of the container whose directory is `dir`.
pub fn connect(dir: &Path) -> Result<UnixStream, std::io::Error> {
    let short = short_path(dir).map_err(|e| std::io::Error::other(e.to_string()))?;
    UnixStream::connect(&short.path)
}

/// One attached client, as the monitor sees it.
struct Client {
    sock: UnixStream,
    /// Bytes received and not yet a whole frame.
    inbuf: Vec<u8>,
    /// Frames not yet sent (the socket was full).
    queued: Vec<u8>,
    /// stdin, stdout, stderr; nothing until its hello.
    wants: [bool; 3],
    greeted: bool,
    /// Left or dropped: removed by [`Hub::sweep`], so indices stay valid while events are
    /// handled.
    gone: bool,
}

impl Client {
    /// Sends what is queued as far as the socket takes it; false when the client is gone.
    fn flush(&mut self) -> bool {
        while !self.queued.is_empty() {
            match self.sock.write(&self.queued) {
                Ok(0) => return false,
                Ok(n) => {
                    self.queued.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// What a client asked the monitor to do for it.
pub enum Request {
    Resize(u16, u16),
    Signal(i32),
}

/// The monitor's side of `attach`: the listening socket, the clients, and input on its way to
/// the container (its console, or its stdin pipe).
pub struct Hub {
    listener: UnixListener,
    socket_path: PathBuf,
    clients: Vec<Client>,
    /// Where input goes: the console master or the write end of the stdin pipe.
    input: Option<RawFd>,
    queued_input: Vec<u8>,
}

impl Hub {
    /// Listens on `attach.sock` in the container directory `dir` (a stale one from an earlier
    /// start is replaced).
    pub fn listen(dir: &Path) -> Result<Hub, RuntimeError> {
        let (listener, socket_path) = bind(dir)?;
        Ok(Hub::with(listener, socket_path))
    }

    /// The socket a client made and connected to before it started the monitor (inherited as
    /// `fd`), its first client waiting with its hello and terminal size.
    pub fn adopt(dir: &Path, fd: RawFd) -> Hub {
        // SAFETY: the listener's descriptor, handed to the monitor alone across its exec.
        let listener = unsafe { UnixListener::from_raw_fd(fd) };
        let _ = listener.set_nonblocking(true);
        Hub::with(listener, dir.join(SOCKET))
    }

    fn with(listener: UnixListener, socket_path: PathBuf) -> Hub {
        Hub {
            listener,
            socket_path,
            clients: Vec::new(),
            input: None,
            queued_input: Vec::new(),
        }
    }

    /// Where clients' stdin goes (the console master or the stdin pipe's write end, which
    /// outlive the hub's relaying); made non-blocking.
    pub fn set_input(&mut self, input: Option<BorrowedFd>) {
        self.input = input.map(|fd| {
            let _ = set_nonblocking(fd.as_raw_fd());
            fd.as_raw_fd()
        });
    }

    /// Forgets the clients that left or were dropped (between polls: keys are indices).
    pub fn sweep(&mut self) {
        self.clients.retain(|c| !c.gone);
    }

    /// The descriptors to poll and what for, each with its key: `(key, fd, events)`. Keys
    /// are [`Hub::LISTENER`], [`Hub::INPUT`] and [`Hub::CLIENT`] + the client's index.
    pub fn poll_set(&self) -> Vec<(usize, BorrowedFd<'_>, nix::poll::PollFlags)> {
        use nix::poll::PollFlags;
        let mut set = vec![(Self::LISTENER, self.listener.as_fd(), PollFlags::POLLIN)];
        if let (Some(fd), false) = (self.input, self.queued_input.is_empty()) {
            // SAFETY: the input fd outlives the hub (the monitor's console or pipe).
            set.push((
                Self::INPUT,
                unsafe { BorrowedFd::borrow_raw(fd) },
                PollFlags::POLLOUT,
            ));
        }
        let reading = self.queued_input.len() < INPUT_QUEUE_LIMIT;
        for (i, c) in self.clients.iter().enumerate() {
            let mut ev = PollFlags::empty();
            if reading {
                ev |= PollFlags::POLLIN;
            }
            if !c.queued.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            set.push((Self::CLIENT + i, c.sock.as_fd(), ev));
        }
        set
    }

    pub const LISTENER: usize = 100;
    pub const INPUT: usize = 101;
    pub const CLIENT: usize = 102;

    /// Whether input is queued past the point where the monitor's own stdin should wait too.
    pub fn input_full(&self) -> bool {
        self.queued_input.len() >= INPUT_QUEUE_LIMIT
    }

    /// Accepts the clients waiting and reads what they sent already (a hello, a terminal
    /// size); returns what they asked.
    pub fn accept(&mut self) -> Vec<Request> {
        let mut asked = Vec::new();
        while let Ok((sock, _)) = self.listener.accept() {
            if sock.set_nonblocking(true).is_ok() {
                self.clients.push(Client {
                    sock,
                    inbuf: Vec::new(),
                    queued: Vec::new(),
                    wants: [false; 3],
                    greeted: false,
                    gone: false,
                });
                asked.extend(self.on_client(self.clients.len() - 1, true));
            }
        }
        asked
    }

    /// Handles the events polled for client `i` (its key less [`Hub::CLIENT`]); returns what
    /// it asked of the monitor. A client that leaves or speaks nonsense is dropped.
    pub fn on_client(&mut self, i: usize, readable: bool) -> Vec<Request> {
        let mut asked = Vec::new();
        let Some(c) = self.clients.get_mut(i).filter(|c| !c.gone) else {
            return asked;
        };
        let mut alive = c.flush();
        if alive && readable {
            let mut buf = [0u8; 16 << 10];
            match c.sock.read(&mut buf) {
                Ok(0) => alive = false,
                Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                Err(e) => alive = e.kind() == std::io::ErrorKind::WouldBlock,
            }
        }
        while alive {
            match Frame::take(&mut c.inbuf) {
                Ok(None) => break,
                Ok(Some(Frame::Hello {
                    stdin,
                    stdout,
                    stderr,
                })) if !c.greeted => {
                    c.wants = [stdin, stdout, stderr];
                    c.greeted = true;
                }
                Ok(Some(_)) if !c.greeted => alive = false,
                Ok(Some(Frame::Stdin(data))) if c.wants[0] => {
                    self.queued_input.extend_from_slice(&data)
                }
                Ok(Some(Frame::Resize(rows, cols))) => asked.push(Request::Resize(rows, cols)),
                Ok(Some(Frame::Signal(n))) => asked.push(Request::Signal(n)),
                Ok(Some(_)) => {}
                Err(_) => alive = false,
            }
        }
        c.gone = !alive;
        asked
    }

    /// Queues input from the monitor's own stdin (a foreground run's terminal).
    pub fn add_input(&mut self, data: &[u8]) {
        self.queued_input.extend_from_slice(data);
        self.write_input();
    }

    /// Writes queued input as far as the container takes it.
    pub fn write_input(&mut self) {
        let Some(fd) = self.input else {
            self.queued_input.clear();
            return;
        };
        while !self.queued_input.is_empty() {
            // SAFETY: writing our buffer to the container's console or stdin pipe.
            let n = unsafe {
                libc::write(
                    fd,
                    self.queued_input.as_ptr().cast(),
                    self.queued_input.len(),
                )
            };
            if n > 0 {
                self.queued_input.drain(..n as usize);
                continue;
            }
            let e = std::io::Error::last_os_error();
            if n < 0 && e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n < 0 && e.kind() == std::io::ErrorKind::WouldBlock {
                return;
            }
            // The container closed its stdin: what is queued has nowhere to go.
            self.queued_input.clear();
            self.input = None;
            return;
        }
    }

    /// Copies the container's output (`stream` 0 stdout, 1 stderr) to every client that
    /// wants it; a client that has stopped reading for too long is dropped.
    pub fn broadcast(&mut self, stream: usize, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let frame = if stream == 0 {
            Frame::Stdout(data.to_vec())
        } else {
            Frame::Stderr(data.to_vec())
        };
        for c in self
            .clients
            .iter_mut()
            .filter(|c| !c.gone && c.wants[1 + stream])
        {
            frame.encode_into(&mut c.queued);
            c.gone = !c.flush() || c.queued.len() > CLIENT_QUEUE_LIMIT;
        }
    }

    /// The container has exited and its state is recorded: every client gets the exit code
    /// (waiting a little for slow ones), and the socket goes.
    pub fn finish(mut self, code: i32) {
        let _ = std::fs::remove_file(&self.socket_path);
        for c in self.clients.iter_mut().filter(|c| !c.gone) {
            Frame::Exit(code).encode_into(&mut c.queued);
            let _ = c.sock.set_nonblocking(false);
            let _ = c
                .sock
                .set_write_timeout(Some(std::time::Duration::from_secs(2)));
            let _ = c.sock.write_all(&c.queued);
            let _ = c.sock.shutdown(std::net::Shutdown::Both);
        }
        self.clients.clear();
    }
}

fn set_nonblocking(fd: RawFd) -> nix::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    // SAFETY: fcntl on a descriptor the caller owns.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_their_last_byte() {
        let frames = [
            Frame::Hello {
                stdin: true,
                stdout: true,
                stderr: false,
            },
            Frame::Stdin(b"ls\r".to_vec()),
            Frame::Resize(40, 120),
            Frame::Signal(15),
            Frame::Stdout(b"out".to_vec()),
            Frame::Stderr(Vec::new()),
            Frame::Exit(-1),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            f.encode_into(&mut wire);
        }
        let last = wire.pop().unwrap();
        let mut got = Vec::new();
        while let Some(f) = Frame::take(&mut wire).unwrap() {
            got.push(f);
        }
        assert_eq!(got, frames[..6]);
        wire.push(last);
        assert_eq!(Frame::take(&mut wire).unwrap(), Some(Frame::Exit(-1)));
        assert!(wire.is_empty());
    }

    #[test]
    fn a_hello_of_another_protocol_is_refused() {
        let mut wire = Vec::new();
        wire.push(HELLO);
        wire.extend_from_slice(&11u32.to_be_bytes());
        wire.extend_from_slice(b"strata.v0 x");
        assert_eq!(
            Frame::take(&mut wire).unwrap_err(),
            "attach protocol \"strata.v0 x\", want strata.attach.v1"
        );
    }
}
