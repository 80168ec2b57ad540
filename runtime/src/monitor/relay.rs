//! The running container as its monitor relays it: signals forwarded, output to the log and
//! the terminal, the terminal's input to the console.

use super::*;
use crate::attach::{Hub, Request};

/// What the monitor polls, by key.
pub(super) const SIGNALS: usize = 0;
pub(super) const OUT: usize = 1;
pub(super) const ERR: usize = 2;
pub(super) const CONSOLE: usize = 3;
pub(super) const STDIN: usize = 4;

/// A running container as its monitor relays it: signals in, output out (to the log and the
/// terminal), the terminal's input to the console, until it exits and its output is drained.
pub(super) struct Supervisor {
    pub(super) child: Pid,
    pub(super) io: Io,
    pub(super) log: Option<LogWriter>,
    /// Whether stdout and stderr go to the terminal.
    pub(super) attached: [bool; 2],
    pub(super) stdin_open: bool,
    pub(super) buf: Vec<u8>,
    pub(super) exit: Option<i32>,
    /// Output streams not at EOF yet.
    pub(super) open_streams: BTreeSet<usize>,
    /// `attach` clients (not for an exec's relay).
    pub(super) hub: Option<Hub>,
}

impl Supervisor {
    pub(super) fn relay_until_exit(&mut self) {
        loop {
            if self.exit.is_some() && self.open_streams.is_empty() {
                break;
            }
            let Some(ready) = self.wait() else { break };
            for (key, revents) in ready {
                match key {
                    SIGNALS => self.on_signal(),
                    OUT | ERR | CONSOLE => self.on_output(key, revents),
                    STDIN => self.on_stdin(),
                    Hub::LISTENER => {
                        let asked = self.hub.as_mut().expect("polled").accept();
                        self.serve(asked);
                    }
                    Hub::INPUT => self.hub.as_mut().expect("polled").write_input(),
                    k if k >= Hub::CLIENT => self.on_client(k - Hub::CLIENT, revents),
                    _ => {}
                }
            }
            if self.exit.is_none() {
                self.exit = reap(self.child);
            }
        }
    }

    /// Polls what is open; the keys with events, or None to stop. After the exit, what is
    /// left is drained without blocking forever on a leaked writer.
    fn wait(&mut self) -> Option<Vec<(usize, PollFlags)>> {
        if let Some(h) = &mut self.hub {
            h.sweep();
        }
        let stdin = std::io::stdin();
        let mut keys: Vec<usize> = vec![SIGNALS];
        let mut pfds: Vec<PollFd> = vec![PollFd::new(self.io.signals.as_fd(), PollFlags::POLLIN)];
        for key in [OUT, ERR, CONSOLE] {
            if let Some(fd) = self.stream(key) {
                if self.open_streams.contains(&key) {
                    keys.push(key);
                    pfds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                }
            }
        }
        let input_full = self.hub.as_ref().is_some_and(Hub::input_full);
        if self.stdin_open && !input_full {
            keys.push(STDIN);
            pfds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        if let Some(h) = &self.hub {
            for (key, fd, events) in h.poll_set() {
                keys.push(key);
                pfds.push(PollFd::new(fd, events));
            }
        }
        let timeout = if self.exit.is_some() {
            PollTimeout::from(200u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut pfds, timeout) {
            Ok(0) if self.exit.is_some() => return None,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Some(Vec::new()),
            Err(_) => return None,
        }
        Some(
            keys.iter()
                .zip(pfds.iter())
                .map(|(k, p)| (*k, p.revents().unwrap_or(PollFlags::empty())))
                .filter(|(_, r)| !r.is_empty())
                .collect(),
        )
    }

    fn stream(&self, key: usize) -> Option<&OwnedFd> {
        match key {
            OUT => self.io.out.as_ref(),
            ERR => self.io.err.as_ref(),
            _ => self.io.console.as_ref(),
        }
    }

    fn on_signal(&mut self) {
        let Ok(Some(si)) = self.io.signals.read_signal() else {
            return;
        };
        match si.ssi_signo as i32 {
            // Only a wake-up: the one wait is at the end of the loop (a second one would say
            // ECHILD and turn the real code into 255).
            libc::SIGCHLD => {}
            libc::SIGWINCH => {
                if let Some(c) = &self.io.console {
                    copy_winsize(0, c.as_raw_fd());
                }
            }
            // SAFETY: forwarding a signal to the container's init.
            sig => unsafe {
                libc::kill(self.child.as_raw(), sig);
            },
        }
    }

    fn on_output(&mut self, key: usize, revents: PollFlags) {
        let fd = self.stream(key).expect("polled").as_raw_fd();
        // SAFETY: reading from a pipe/pty we own into our buffer.
        let n = unsafe { libc::read(fd, self.buf.as_mut_ptr().cast(), self.buf.len()) };
        if n <= 0 {
            if n == 0 || !revents.contains(PollFlags::POLLIN) || self.exit.is_some() {
                self.open_streams.remove(&key);
            }
            return;
        }
        let data = &self.buf[..n as usize];
        // The console carries both streams: the terminal and the log get it as stdout, as
        // Docker's do.
        let stream = usize::from(key == ERR);
        if let Some(l) = &mut self.log {
            l.write(stream, data);
        }
        if let Some(h) = &mut self.hub {
            h.broadcast(stream, data);
        }
        if self.attached[stream] {
            if stream == 0 {
                let _ = std::io::stdout().write_all(data);
                let _ = std::io::stdout().flush();
            } else {
                let _ = std::io::stderr().write_all(data);
            }
        }
    }

    fn on_stdin(&mut self) {
        // SAFETY: reading the user's stdin into our buffer.
        let n = unsafe { libc::read(0, self.buf.as_mut_ptr().cast(), self.buf.len()) };
        if n <= 0 {
            self.stdin_open = false;
            return;
        }
        let data = &self.buf[..n as usize];
        match (&mut self.hub, &self.io.console) {
            (Some(h), _) => h.add_input(data),
            (None, Some(c)) => {
                let _ = nix::unistd::write(c, data);
            }
            (None, None) => {}
        }
    }

    /// An attached client's traffic: its input queued for the container, the rest served.
    fn on_client(&mut self, index: usize, revents: PollFlags) {
        let readable =
            revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR);
        let Some(h) = &mut self.hub else { return };
        let asked = h.on_client(index, readable);
        self.serve(asked);
    }

    /// Clients' requests: a terminal size for the console, signals for the container
    /// (`--sig-proxy`).
    fn serve(&mut self, asked: Vec<Request>) {
        for request in asked {
            match request {
                Request::Resize(rows, cols) => {
                    if let Some(c) = &self.io.console {
                        set_winsize(c.as_raw_fd(), rows, cols);
                    }
                }
                // SAFETY: forwarding a client's signal to the container's init.
                Request::Signal(sig) => unsafe {
                    libc::kill(self.child.as_raw(), sig);
                },
            }
        }
    }
}
