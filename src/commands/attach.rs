//! `attach`: this terminal joined to a running container's stdio through its monitor's
//! socket (see `strata_runtime::attach`), until the container exits (its code is ours) or the
//! detach keys are typed (the container runs on; Docker's "read escape sequence" and 1).

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use anyhow::{anyhow, bail, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use strata_cache::Store;
use strata_runtime::attach::{self, Frame};
use strata_runtime::container::{ContainerRecord, Containers, Status};

use crate::cli::AttachArgs;

/// Docker's default detach keys.
const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

pub fn attach(store: &Store, a: &AttachArgs) -> Result<()> {
    let keys = detach_keys(a.detach_keys.as_deref().unwrap_or(DEFAULT_DETACH_KEYS))?;
    let containers = Containers::new(store);
    let rec = containers.resolve(&a.container)?;
    let state = containers.state(&rec.id)?;
    match state.status {
        Status::Paused => bail!("You cannot attach to a paused container, unpause it first"),
        _ if !state.is_running() => {
            bail!("You cannot attach to a stopped container, start it first")
        }
        _ => {}
    }
    let with_stdin = rec.config.open_stdin && !a.no_stdin;
    if rec.config.tty && with_stdin && !stdin_is_a_terminal() {
        bail!("the input device is not a TTY");
    }
    let mut sock = attach::connect(&containers.dir(&rec.id).path).map_err(|e| {
        anyhow!(
            "container {} has no attach socket ({e}): a foreground run without a TTY writes \
             straight to its own terminal",
            a.container
        )
    })?;
    let mut first = vec![hello(with_stdin)];
    first.extend(terminal_size().filter(|_| rec.config.tty));
    for frame in first {
        sock.write_all(&frame.encode())?;
    }
    let end = relay(
        store,
        &rec,
        Terminal::take(&rec, with_stdin, a.sig_proxy)?,
        sock,
        keys,
    );
    match end {
        End::Exited(code) => std::process::exit(code),
        End::Detached => {
            let _ = std::io::stdout().flush();
            eprintln!("read escape sequence");
            std::process::exit(1)
        }
        End::Lost => exit_as_recorded(&containers, &rec),
    }
}

/// Whether `run -it`/`start -ai` go through [`start_attached`]: a terminal to attach
/// (otherwise the client becomes the monitor, as for every other foreground run).
pub fn attaches_a_terminal(rec: &ContainerRecord) -> bool {
    rec.config.tty && rec.config.open_stdin && stdin_is_a_terminal()
}

/// `run -it` and `start -ai` on a terminal, as Docker's: attached before the start (nothing
/// the container writes is missed), started by `start(listener)`, which hands the monitor
/// the attach socket; the detach keys leave it running (quietly, exit 0, as `docker run`
/// does), else the container's exit code is the command's.
pub fn start_attached(
    store: &Store,
    rec: &ContainerRecord,
    start: impl FnOnce(OwnedFd) -> Result<()>,
) -> Result<()> {
    let containers = Containers::new(store);
    let mut first = vec![hello(true)];
    first.extend(terminal_size());
    let (listener, sock) = attach::preconnect(&containers.dir(&rec.id).path, &first)?;
    // Taken before the start: the terminal is raw before the first prompt arrives.
    let terminal = Terminal::take(rec, true, true)?;
    if let Err(e) = start(listener) {
        drop(terminal);
        return Err(e);
    }
    match relay(
        store,
        rec,
        terminal,
        sock,
        detach_keys(DEFAULT_DETACH_KEYS)?,
    ) {
        End::Exited(code) => std::process::exit(code),
        End::Detached => Ok(()),
        End::Lost => exit_as_recorded(&containers, rec),
    }
}

/// The monitor went without a word (killed): the container's recorded state has the code
/// when it got that far.
fn exit_as_recorded(containers: &Containers, rec: &ContainerRecord) -> Result<()> {
    match containers.state(&rec.id).ok().filter(|s| !s.is_running()) {
        Some(s) => std::process::exit(s.exit_code),
        None => bail!("lost the connection to the monitor of {}", rec.name),
    }
}

fn hello(stdin: bool) -> Frame {
    Frame::Hello {
        stdin,
        stdout: true,
        stderr: true,
    }
}

pub fn stdin_is_a_terminal() -> bool {
    nix::unistd::isatty(std::io::stdin()).unwrap_or(false)
}

/// This side's terminal while attached: raw when the container has a TTY and gets our
/// input, the signals we pass on (SIGWINCH, and `--sig-proxy`'s without a TTY); restored
/// when dropped.
struct Terminal {
    signals: SignalFd,
    saved: Option<Termios>,
    with_stdin: bool,
}

impl Terminal {
    fn take(rec: &ContainerRecord, with_stdin: bool, sig_proxy: bool) -> Result<Terminal> {
        let tty = rec.config.tty;
        let proxied: &[Signal] = if sig_proxy && !tty {
            &strata_runtime::monitor::FORWARDED
        } else {
            &[]
        };
        Ok(Terminal {
            signals: block_signals(proxied)?,
            saved: (tty && with_stdin && stdin_is_a_terminal())
                .then(strata_runtime::monitor::make_raw)
                .flatten(),
            with_stdin,
        })
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, t);
        }
    }
}

/// The attached session, with its events (`attach`, and `detach` when the keys end it).
fn relay(
    store: &Store,
    rec: &ContainerRecord,
    terminal: Terminal,
    sock: UnixStream,
    keys: Vec<u8>,
) -> End {
    strata_runtime::events::record(store, rec, "attach", &[]);
    let session = Session {
        sock,
        terminal,
        keys: EscapeMatcher::new(keys),
    };
    // The terminal is restored as the session ends.
    let end = session.run();
    if let End::Detached = end {
        strata_runtime::events::record(store, rec, "detach", &[]);
    }
    end
}

enum End {
    Exited(i32),
    Detached,
    Lost,
}

/// The attached session's poll loop.
struct Session {
    sock: UnixStream,
    terminal: Terminal,
    keys: EscapeMatcher,
}

impl Session {
    fn run(mut self) -> End {
        let mut stdin_open = self.terminal.with_stdin;
        let mut inbuf = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let stdin = std::io::stdin();
            let mut pfds = vec![
                PollFd::new(self.sock.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.terminal.signals.as_fd(), PollFlags::POLLIN),
            ];
            if stdin_open {
                pfds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut pfds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return End::Lost,
            }
            let ready = |i: usize| {
                pfds.get(i)
                    .and_then(|p| p.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            let (sock_ready, signal_ready, stdin_ready) = (ready(0), ready(1), ready(2));
            drop(pfds);
            if signal_ready {
                self.on_signal();
            }
            if stdin_ready {
                match read_some(0, &mut buf) {
                    0 => stdin_open = false,
                    n => {
                        let (input, detach) = self.keys.feed(&buf[..n]);
                        if !input.is_empty() {
                            let _ = self.sock.write_all(&Frame::Stdin(input).encode());
                        }
                        if detach {
                            return End::Detached;
                        }
                    }
                }
            }
            if sock_ready {
                let n = match self.sock.read(&mut buf) {
                    Ok(0) | Err(_) => return End::Lost,
                    Ok(n) => n,
                };
                inbuf.extend_from_slice(&buf[..n]);
                while let Ok(Some(frame)) = Frame::take(&mut inbuf) {
                    match frame {
                        Frame::Stdout(d) => {
                            let mut out = std::io::stdout().lock();
                            let _ = out.write_all(&d);
                            let _ = out.flush();
                        }
                        Frame::Stderr(d) => {
                            let _ = std::io::stderr().write_all(&d);
                        }
                        Frame::Exit(code) => return End::Exited(code),
                        _ => {}
                    }
                }
            }
        }
    }

    fn on_signal(&mut self) {
        let Ok(Some(si)) = self.terminal.signals.read_signal() else {
            return;
        };
        let frame = match si.ssi_signo as i32 {
            libc::SIGWINCH => terminal_size(),
            sig => Some(Frame::Signal(sig)),
        };
        if let Some(f) = frame {
            let _ = self.sock.write_all(&f.encode());
        }
    }
}

/// Reads what stdin has (0 at its end or on an error).
fn read_some(fd: i32, buf: &mut [u8]) -> usize {
    loop {
        // SAFETY: reading into a buffer we own.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return n as usize;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return 0;
        }
    }
}

/// This terminal's size (stdin's, else stdout's) for the monitor, if it is a terminal.
fn terminal_size() -> Option<Frame> {
    [0, 1]
        .into_iter()
        .find_map(strata_runtime::monitor::terminal_size)
        .map(|(rows, cols)| Frame::Resize(rows, cols))
}

/// Blocks SIGWINCH and the `proxied` signals, to be read from the returned signalfd.
fn block_signals(proxied: &[Signal]) -> Result<SignalFd> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGWINCH);
    for s in proxied {
        set.add(*s);
    }
    set.thread_block()?;
    Ok(SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC)?)
}

/// Docker's detach key syntax: comma-separated keys, each one character or `ctrl-X` (X a
/// letter or one of `@[\]^_`).
fn detach_keys(spec: &str) -> Result<Vec<u8>> {
    let bad = || anyhow!("Invalid detach keys ({spec}) provided");
    let mut keys = Vec::new();
    for key in spec.split(',') {
        let b = key.as_bytes();
        match b {
            [c] => keys.push(*c),
            _ if b.len() == 6 && key[..5].eq_ignore_ascii_case("ctrl-") => {
                let c = b[5].to_ascii_lowercase();
                keys.push(match c {
                    b'a'..=b'z' => c - b'a' + 1,
                    b'@' => 0,
                    b'[' => 27,
                    b'\\' => 28,
                    b']' => 29,
                    b'^' => 30,
                    b'_' => 31,
                    _ => return Err(bad()),
                });
            }
            _ => return Err(bad()),
        }
    }
    Ok(keys)
}

/// Watches the input for the detach keys: bytes that may begin them are held back until the
/// sequence is complete (detach) or broken (they go on, as typed).
struct EscapeMatcher {
    keys: Vec<u8>,
    held: usize,
}

impl EscapeMatcher {
    fn new(keys: Vec<u8>) -> EscapeMatcher {
        EscapeMatcher { keys, held: 0 }
    }

    /// The input to pass on, and whether the keys were typed (input after them is dropped).
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if b == self.keys[self.held] {
                self.held += 1;
                if self.held == self.keys.len() {
                    return (out, true);
                }
                continue;
            }
            out.extend_from_slice(&self.keys[..self.held]);
            self.held = 0;
            if b == self.keys[0] {
                self.held = 1;
                if self.keys.len() == 1 {
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_docker_spells_them() {
        assert_eq!(detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(detach_keys("ctrl-@,a,ctrl-_").unwrap(), vec![0, b'a', 31]);
        assert_eq!(
            detach_keys("ctrl-pp").unwrap_err().to_string(),
            "Invalid detach keys (ctrl-pp) provided"
        );
        assert!(detach_keys("").is_err());
    }

    #[test]
    fn input_passes_through_until_the_whole_sequence_is_typed() {
        let mut m = EscapeMatcher::new(vec![16, 17]);
        assert_eq!(m.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        // A held ctrl-p goes on when the next byte breaks the sequence.
        assert_eq!(m.feed(&[16]), (vec![], false));
        assert_eq!(m.feed(b"x"), (vec![16, b'x'], false));
        // ctrl-p ctrl-p ctrl-q: the first one goes on, the last two detach.
        assert_eq!(m.feed(&[b'a', 16, 16, 17, b'z']), (vec![b'a', 16], true));
    }
}
