//! `attach`: this terminal joined to a running container's stdio through its monitor's
//! socket (see `strata_runtime::attach`), until the container exits (its code is ours) or the
//! detach keys are typed (the container runs on; Docker's "read escape sequence" and 1).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use anyhow::{anyhow, bail, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use strata_cache::Store;
use strata_runtime::attach::{self, Frame};
use strata_runtime::container::{Containers, Status};

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
    let tty = rec.config.tty;
    let with_stdin = rec.config.open_stdin && !a.no_stdin;
    let stdin_tty = nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    if tty && with_stdin && !stdin_tty {
        bail!("the input device is not a TTY");
    }
    let mut sock = attach::connect(&containers.dir(&rec.id).path).map_err(|e| {
        anyhow!(
            "container {} has no attach socket ({e}): a foreground run without a TTY writes \
             straight to its own terminal",
            a.container
        )
    })?;
    let hello = Frame::Hello {
        stdin: with_stdin,
        stdout: true,
        stderr: true,
    };
    sock.write_all(&hello.encode())?;
    let proxied: &[Signal] = if a.sig_proxy && !tty {
        &strata_runtime::monitor::FORWARDED
    } else {
        &[]
    };
    let signals = block_signals(proxied)?;
    let saved = (tty && with_stdin && stdin_tty).then(make_raw).flatten();
    if tty {
        send_size(&mut sock);
    }
    strata_runtime::events::record(store, &rec, "attach", &[]);
    let session = Session {
        sock,
        signals,
        with_stdin,
        keys: EscapeMatcher::new(keys),
    };
    let end = session.run();
    if let Some(t) = saved {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &t);
    }
    match end {
        End::Exited(code) => std::process::exit(code),
        End::Detached => {
            strata_runtime::events::record(store, &rec, "detach", &[]);
            let _ = std::io::stdout().flush();
            eprintln!("read escape sequence");
            std::process::exit(1)
        }
        // The monitor went without a word (killed): the container's recorded state has the
        // code when it got that far.
        End::Lost => {
            let st = containers.state(&rec.id).ok();
            match st.filter(|s| !s.is_running()) {
                Some(s) => std::process::exit(s.exit_code),
                None => bail!("lost the connection to the monitor of {}", a.container),
            }
        }
    }
}

enum End {
    Exited(i32),
    Detached,
    Lost,
}

/// The attached session's poll loop.
struct Session {
    sock: UnixStream,
    signals: SignalFd,
    with_stdin: bool,
    keys: EscapeMatcher,
}

impl Session {
    fn run(mut self) -> End {
        let mut stdin_open = self.with_stdin;
        let mut inbuf = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let stdin = std::io::stdin();
            let mut pfds = vec![
                PollFd::new(self.sock.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
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
        let Ok(Some(si)) = self.signals.read_signal() else {
            return;
        };
        let frame = match si.ssi_signo as i32 {
            libc::SIGWINCH => {
                send_size(&mut self.sock);
                return;
            }
            sig => Frame::Signal(sig),
        };
        let _ = self.sock.write_all(&frame.encode());
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

/// Tells the monitor this terminal's size (stdin's, else stdout's), if it is a terminal.
fn send_size(sock: &mut UnixStream) {
    for fd in [0, 1] {
        // SAFETY: TIOCGWINSZ into a winsize we own.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            let _ = sock.write_all(&Frame::Resize(ws.ws_row, ws.ws_col).encode());
            return;
        }
    }
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

fn make_raw() -> Option<Termios> {
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(&stdin).ok()?;
    let mut raw = saved.clone();
    termios::cfmakeraw(&mut raw);
    termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
    Some(saved)
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
