//! Passing file descriptors over a unix socket (SCM_RIGHTS): the console master, and the
//! cgroup files a container's init writes to join its cgroup.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// A pipe (read end, write end), closed on exec.
pub fn pipe() -> Result<(OwnedFd, OwnedFd), crate::RuntimeError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| crate::RuntimeError::io("pipe", e.into()))
}

/// A connected pair of unix stream sockets, closed on exec: the channel descriptors go over.
pub fn socket_pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// Most descriptors one message carries (one per cgroup v1 hierarchy a container uses).
pub const MAX_FDS: usize = 8;

pub fn send_fd(sock: RawFd, fd: RawFd) -> nix::Result<()> {
    send_fds(sock, &[fd])
}

/// Sends one byte with `fds` attached (none is fine: the byte alone is a signal).
pub fn send_fds(sock: RawFd, fds: &[RawFd]) -> nix::Result<()> {
    let iov = [IoSlice::new(b"c")];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsg: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(sock, &iov, cmsg, MsgFlags::empty(), None).map(|_| ())
}

pub fn recv_fd(sock: RawFd) -> nix::Result<Option<OwnedFd>> {
    Ok(recv_fds(sock)?.and_then(|fds| fds.into_iter().next()))
}

/// Receives one message: `None` at end of stream, else the descriptors it carried.
pub fn recv_fds(sock: RawFd) -> nix::Result<Option<Vec<OwnedFd>>> {
    let mut buf = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut out = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel just gave us these descriptors.
            out.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.bytes == 0 && out.is_empty() {
        return Ok(None);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn several_descriptors_arrive_in_order_and_end_of_stream_is_none() {
        let (a, b) = UnixStream::pair().unwrap();
        let pipes: Vec<(std::fs::File, std::fs::File)> = (0..3)
            .map(|_| {
                let (r, w) = nix::unistd::pipe().unwrap();
                (std::fs::File::from(r), std::fs::File::from(w))
            })
            .collect();
        let writers: Vec<RawFd> = pipes.iter().map(|(_, w)| w.as_raw_fd()).collect();
        send_fds(a.as_raw_fd(), &writers).unwrap();
        // A message without descriptors is a plain signal.
        send_fds(a.as_raw_fd(), &[]).unwrap();
        drop(a);

        let got = recv_fds(b.as_raw_fd()).unwrap().expect("a message");
        assert_eq!(got.len(), 3);
        for (i, (fd, (reader, _))) in got.into_iter().zip(pipes.iter()).enumerate() {
            let mut w = std::fs::File::from(fd);
            w.write_all(&[i as u8]).unwrap();
            let mut byte = [0u8; 1];
            (&*reader).read_exact(&mut byte).unwrap();
            assert_eq!(
                byte[0], i as u8,
                "descriptor {i} is not the pipe sent at {i}"
            );
        }
        assert_eq!(recv_fds(b.as_raw_fd()).unwrap().map(|f| f.len()), Some(0));
        assert!(recv_fds(b.as_raw_fd()).unwrap().is_none());
    }
}
